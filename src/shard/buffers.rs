//! The shard's provided-buffer ring (`IORING_REGISTER_PBUF_RING`).
//!
//! A receive names the group instead of a buffer; the kernel picks a buffer
//! only when data arrives, so an idle connection holds none. The kernel's
//! choice reaches us as a buffer id in the completion, which
//! [`BufferRing::take`] turns into a [`BufId`]: an owned, non-copyable
//! handle. Giving a buffer back consumes its handle, so a buffer cannot be
//! returned twice through safe code (a double give-back would let the kernel
//! hand the same memory to two receives). Debug builds also check, with one
//! bit per buffer, that the kernel never hands out a buffer that was not in
//! the ring.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id of every shard's ring (one group per ring).
pub const GROUP: u16 = 0;

/// One provided buffer lent out of the ring. Not `Clone`: whoever holds it
/// owns the buffer until [`BufferRing::give_back`] consumes it.
#[derive(Debug, PartialEq, Eq)]
pub struct BufId(u16);

impl BufId {
    /// The buffer's index in the ring.
    pub fn index(&self) -> u16 {
        self.0
    }

    /// A handle for unit tests of code that only moves handles around.
    #[cfg(test)]
    pub fn for_test(bid: u16) -> BufId {
        BufId(bid)
    }
}

pub struct BufferRing {
    entries: NonNull<BufRingEntry>,
    entries_len: usize,
    memory: NonNull<u8>,
    memory_len: usize,
    count: u16,
    size: usize,
    tail: u16,
    /// Buffers lent out of the ring now.
    in_use: usize,
    /// Debug builds: which buffers are in the ring (bit set) or lent out.
    #[cfg(debug_assertions)]
    in_ring: Vec<u64>,
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
            #[cfg(debug_assertions)]
            in_ring: vec![0; count.div_ceil(64)],
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
            br.give_back(BufId(bid));
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

    /// Buffers in the ring now, free for the kernel to pick.
    pub fn free(&self) -> usize {
        self.count() - self.in_use
    }

    /// Takes ownership of buffer `bid`, which a completion says the kernel
    /// filled.
    pub fn take(&mut self, bid: u16) -> BufId {
        debug_assert!(bid < self.count, "buffer id {bid} out of range");
        #[cfg(debug_assertions)]
        {
            let (w, b) = (usize::from(bid) / 64, bid % 64);
            assert!(
                self.in_ring[w] & (1 << b) != 0,
                "the kernel handed out buffer {bid}, which was not in the ring"
            );
            self.in_ring[w] &= !(1 << b);
        }
        self.in_use += 1;
        BufId(bid)
    }

    /// Start of buffer `buf`.
    pub fn ptr(&self, buf: &BufId) -> *mut u8 {
        // SAFETY: a `BufId` only exists for an index below `count`, so the
        // offset stays inside the mapping.
        unsafe { self.memory.as_ptr().add(usize::from(buf.0) * self.size) }
    }

    /// Start of the buffer with index `bid` (for a send of a buffer that a
    /// direction holds by its [`BufId`]).
    pub fn ptr_at(&self, bid: u16) -> *mut u8 {
        assert!(bid < self.count, "buffer id {bid} out of range");
        // SAFETY: bid < count, so the offset stays inside the mapping.
        unsafe { self.memory.as_ptr().add(usize::from(bid) * self.size) }
    }

    /// Returns a buffer to the kernel. The caller must be done with its
    /// bytes and no operation may still be using it.
    pub fn give_back(&mut self, buf: BufId) {
        let bid = buf.0;
        #[cfg(debug_assertions)]
        {
            let (w, b) = (usize::from(bid) / 64, bid % 64);
            assert!(
                self.in_ring[w] & (1 << b) == 0,
                "buffer {bid} given back twice"
            );
            self.in_ring[w] |= 1 << b;
        }
        let mask = self.count - 1;
        let addr = self.ptr(&buf) as u64;
        // SAFETY: the index is masked into the entries array, which is mapped
        // and which the kernel only reads up to the published tail.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(usize::from(self.tail & mask));
            entry.set_addr(addr);
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

    /// Leaves the mappings in place forever: for a shard that stops while the
    /// kernel may still use them (its ring could not be drained).
    pub fn leak(self) {
        std::mem::forget(self);
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
