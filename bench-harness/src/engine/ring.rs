//! A thin owner of one io_uring: creation with the best flags the kernel
//! accepts (falling back on older kernels), pushing entries (submitting when
//! the queue is full) and draining completions into a plain vector.

use std::io;

use io_uring::{squeue, IoUring};

/// One completion: the `user_data` it was submitted with and its result.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
}

/// One ring, owned and driven by one thread.
pub struct Ring {
    ring: IoUring,
}

/// Says clearly when io_uring itself is unavailable.
pub fn explain(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) => io::Error::new(
            e.kind(),
            format!(
                "io_uring is unavailable on this system ({e}); check \
                 kernel.io_uring_disabled and the container's seccomp profile"
            ),
        ),
        _ => e,
    }
}

impl Ring {
    /// A ring with room for `entries` submissions (rounded up to a power of
    /// two). Must be created on the thread that drives it.
    pub fn new(entries: u32) -> io::Result<Ring> {
        let entries = entries.clamp(64, 32768).next_power_of_two();
        let cq = entries * 4;
        let attempts: [fn(&mut io_uring::Builder); 3] = [
            |b| {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_coop_taskrun();
            },
            |b| {
                b.setup_coop_taskrun();
            },
            |_| {},
        ];
        let mut last = None;
        for set in attempts {
            let mut b = IoUring::builder();
            b.setup_cqsize(cq);
            set(&mut b);
            match b.build(entries) {
                Ok(ring) => return Ok(Ring { ring }),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(explain(e)),
            }
        }
        Err(explain(last.unwrap_or_else(|| {
            io::Error::other("io_uring setup failed")
        })))
    }

    /// Queues one entry, submitting first if the submission queue is full.
    ///
    /// # Safety
    /// Every buffer, address or timespec the entry points to must stay valid
    /// and unmoved until its completion has been reaped.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller guarantees what the entry points to outlives
            // the operation (this function's contract).
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.submit()?;
        }
    }

    /// Submits queued entries without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits queued entries and waits for at least one completion.
    /// An interrupted wait (EINTR) or a full completion queue (EBUSY)
    /// returns normally: the caller drains completions and calls again.
    pub fn submit_and_wait(&mut self) -> io::Result<()> {
        match self.ring.submit_and_wait(1) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves all available completions into `out`.
    pub fn drain(&mut self, out: &mut Vec<Completion>) {
        out.extend(self.ring.completion().map(|c| Completion {
            user_data: c.user_data(),
            result: c.result(),
        }));
    }
}
