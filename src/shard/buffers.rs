//! The shard's provided-buffer ring (`IORING_REGISTER_PBUF_RING`).
//!
//! A receive names the group instead of a buffer; the kernel picks a buffer
//! only when data arrives, so an idle connection holds none. A buffer goes
//! back to the ring once its bytes have been sent on.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id of every shard's ring (one group per ring).
pub const GROUP: u16 = 0;

pub struct BufferRing {
    entries: NonNull<BufRingEntry>,
    entries_len: usize,
    memory: NonNull<u8>,
    memory_len: usize,
    count: u16,
    size: usize,
    tail: u16,
    /// Buffers currently lent to the kernel or to a send.
    in_use: usize,
}

fn map(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping touches no existing memory; the
    // result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(p.cast()).expect("mmap returned null"))
}

impl BufferRing {
    /// Maps `count` buffers of `size` bytes (pages are only backed once
    /// used) and registers them with `ring` as group [`GROUP`].
    pub fn register(ring: &IoUring, count: usize, size: usize) -> io::Result<BufferRing> {
        assert!(count.is_power_of_two() && count <= 32768);
        let entries_len = count * std::mem::size_of::<BufRingEntry>();
        let entries = map(entries_len)?.cast::<BufRingEntry>();
        let memory_len = count * size;
        let memory = match map(memory_len) {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: `entries` was mapped above with this length and is unused.
                unsafe { libc::munmap(entries.as_ptr().cast(), entries_len) };
                return Err(e);
            }
        };
        let mut br = BufferRing {
            entries,
            entries_len,
            memory,
            memory_len,
            count: count as u16,
            size,
            tail: 0,
            in_use: count,
        };
        // SAFETY: the entries array stays mapped until `Drop`, which runs
        // after the ring it is registered with is gone (the shard drops its
        // ring first), so the kernel never reads unmapped memory.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                count as u16,
                GROUP,
                0,
            )?;
        }
        for bid in 0..count as u16 {
            br.give_back(bid);
        }
        Ok(br)
    }

    pub fn buffer_size(&self) -> usize {
        self.size
    }

    pub fn count(&self) -> usize {
        usize::from(self.count)
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Marks buffer `bid` as taken by a completed receive.
    pub fn taken(&mut self) {
        self.in_use += 1;
    }

    /// Start of buffer `bid`.
    pub fn ptr(&self, bid: u16) -> *mut u8 {
        debug_assert!(bid < self.count);
        // SAFETY: bid < count, so the offset stays inside the mapping.
        unsafe { self.memory.as_ptr().add(usize::from(bid) * self.size) }
    }

    /// Returns buffer `bid` to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        let mask = self.count - 1;
        // SAFETY: the index is masked into the entries array, which is mapped
        // and which the kernel only reads up to the published tail.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(usize::from(self.tail & mask));
            entry.set_addr(self.ptr(bid) as u64);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lives in the first entry of the mapped
        // array; the kernel reads it with acquire semantics.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
        self.in_use -= 1;
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: both regions were mapped by `register` with these lengths
        // and the ring that used them has been dropped.
        unsafe {
            libc::munmap(self.memory.as_ptr().cast(), self.memory_len);
            libc::munmap(self.entries.as_ptr().cast(), self.entries_len);
        }
    }
}
