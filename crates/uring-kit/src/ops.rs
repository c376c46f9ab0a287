//! Submissions the `io-uring` crate cannot express yet, and probes for the
//! kernel features they need.

use std::os::fd::RawFd;

use io_uring::types::Fd;
use io_uring::{cqueue, opcode, squeue, IoUring};

/// Byte offset of `optlen` (a union with `file_index`) in an SQE.
const SQE_OPTLEN: usize = 44;

/// A multishot receive from `fd` into buffers of `group` that ends (a
/// completion without `IORING_CQE_F_MORE`) once it has received at least
/// `limit` bytes; `limit == 0` means no limit. The kernel checks the limit
/// after each receive, so with reads that fill whole buffers of `size`, a
/// limit of `n * size` takes exactly `n` buffers. Kernels before 6.15 reject
/// a non-zero limit with `EINVAL`: ask [`recv_multishot_limit_supported`].
pub fn recv_multi_limited(fd: RawFd, group: u16, limit: u32) -> squeue::Entry {
    let entry = opcode::RecvMulti::new(Fd(fd), group).build();
    if limit == 0 {
        return entry;
    }
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte
    // `io_uring_sqe`, so its bytes can be read and written as an array of
    // the same size; every byte pattern is a valid SQE value.
    let mut raw = unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(entry) };
    raw[SQE_OPTLEN..SQE_OPTLEN + 4].copy_from_slice(&limit.to_ne_bytes());
    // SAFETY: as above, back to the same type.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// Whether this kernel ends a multishot receive at a byte limit
/// ([`recv_multi_limited`]). Tries it once on a private ring and socket pair.
pub fn recv_multishot_limit_supported() -> bool {
    probe_limit().unwrap_or(false)
}

fn probe_limit() -> std::io::Result<bool> {
    let mut ring = IoUring::new(4)?;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds socketpair writes.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    let close = |fds: [RawFd; 2]| {
        // SAFETY: closing the two fds made above, used by nothing else.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    };
    let mut memory = vec![0u8; 64];
    // The entries must be page-aligned: a private anonymous page.
    // SAFETY: a fresh anonymous mapping; the result is checked.
    let entries = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if entries == libc::MAP_FAILED {
        close(fds);
        return Err(std::io::Error::last_os_error());
    }
    let entries = entries.cast::<io_uring::types::BufRingEntry>();
    let result = (|| {
        // SAFETY: the mapped page and `memory` outlive the ring, which is
        // dropped before either (below); the entry is inside the page.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, 1, 0, 0)?;
            let e = &mut *entries;
            e.set_addr(memory.as_mut_ptr() as u64);
            e.set_len(64);
            e.set_bid(0);
            let tail =
                io_uring::types::BufRingEntry::tail(entries) as *const std::sync::atomic::AtomicU16;
            (*tail).store(1, std::sync::atomic::Ordering::Release);
        }
        // SAFETY: writes 2 bytes from a live array to our socket.
        if unsafe { libc::write(fds[1], b"ok".as_ptr().cast(), 2) } != 2 {
            return Err(std::io::Error::last_os_error());
        }
        let entry = recv_multi_limited(fds[0], 0, 1).user_data(1);
        // SAFETY: the buffer ring and its memory outlive the ring (below).
        unsafe { ring.submission().push(&entry) }
            .map_err(|_| std::io::Error::other("submission queue full"))?;
        ring.submit_and_wait(1)?;
        let cqe = ring
            .completion()
            .next()
            .ok_or_else(|| std::io::Error::other("no completion"))?;
        let ended = !cqueue::more(cqe.flags());
        if !ended {
            // The limit was ignored: stop the multishot before the memory goes.
            let _ = ring
                .submitter()
                .register_sync_cancel(None, io_uring::types::CancelBuilder::any());
        }
        Ok(cqe.result() > 0 && ended)
    })();
    drop(ring);
    // SAFETY: the page mapped above; the ring that used it is gone.
    unsafe { libc::munmap(entries.cast(), 4096) };
    drop(memory);
    close(fds);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_lands_in_optlen_and_nothing_else_changes() {
        let plain = opcode::RecvMulti::new(Fd(5), 3).build();
        let limited = recv_multi_limited(5, 3, 0x0102_0304);
        // SAFETY: as in `recv_multi_limited`.
        let (a, b): ([u8; 64], [u8; 64]) = unsafe {
            (
                std::mem::transmute::<squeue::Entry, [u8; 64]>(plain),
                std::mem::transmute::<squeue::Entry, [u8; 64]>(limited),
            )
        };
        for i in 0..64 {
            if (SQE_OPTLEN..SQE_OPTLEN + 4).contains(&i) {
                continue;
            }
            assert_eq!(a[i], b[i], "byte {i}");
        }
        assert_eq!(
            u32::from_ne_bytes(b[SQE_OPTLEN..SQE_OPTLEN + 4].try_into().unwrap()),
            0x0102_0304
        );
    }

    #[test]
    fn the_probe_answers() {
        // Either answer is valid; it must not hang or crash.
        let supported = recv_multishot_limit_supported();
        eprintln!("multishot receive limit supported: {supported}");
    }
}
