//! Creating an io_uring: the best flags this kernel takes, falling back with
//! a log line on older kernels, and an error that names the usual causes
//! when io_uring is not permitted at all.

use std::io;

use io_uring::IoUring;

/// io_uring could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error(
        "io_uring is not permitted for this process ({0}): check the sysctl \
         kernel.io_uring_disabled (0 allows it) and any seccomp profile of the \
         container (Docker's default profile blocks io_uring_setup)"
    )]
    NotPermitted(io::Error),
    #[error("this kernel has no io_uring ({0}); Linux 6.1 or later is needed")]
    NotSupported(io::Error),
    #[error("io_uring set-up failed: {0}")]
    Other(io::Error),
}

impl RingError {
    /// Classifies an error from `io_uring_setup(2)`.
    pub fn from_setup(e: io::Error) -> RingError {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => RingError::NotPermitted(e),
            Some(libc::ENOSYS) => RingError::NotSupported(e),
            _ => RingError::Other(e),
        }
    }
}

/// The flags a ring was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingFlags {
    /// SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN | SUBMIT_ALL
    SingleIssuerDeferTaskrun,
    /// COOP_TASKRUN | SUBMIT_ALL
    CoopTaskrun,
    Plain,
}

/// The most submission slots a ring gets: its completion queue is four
/// times larger, and the kernel refuses more than 65,536 completion slots.
pub const MAX_ENTRIES: u32 = 16384;

/// Builds a ring for the calling thread with `entries` submission slots
/// (rounded up to a power of two, at most [`MAX_ENTRIES`]) and a completion
/// queue four times larger, falling back to fewer flags on kernels that lack
/// them. With `SINGLE_ISSUER`, only the calling thread may submit to it.
pub fn build(entries: u32) -> Result<(IoUring, RingFlags), RingError> {
    // Out-of-range sizes would fail with EINVAL, which below means "flag
    // not supported" and would send us down the fallbacks for nothing.
    let entries = entries.clamp(1, MAX_ENTRIES).next_power_of_two();
    let cq = entries * 4;
    let mut best = IoUring::builder();
    best.setup_cqsize(cq)
        .setup_submit_all()
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    match best.build(entries) {
        Ok(ring) => return Ok((ring, RingFlags::SingleIssuerDeferTaskrun)),
        Err(e) if e.raw_os_error() != Some(libc::EINVAL) => return Err(RingError::from_setup(e)),
        Err(_) => {}
    }
    let mut coop = IoUring::builder();
    coop.setup_cqsize(cq)
        .setup_submit_all()
        .setup_coop_taskrun();
    match coop.build(entries) {
        Ok(ring) => {
            tracing::warn!("io_uring: SINGLE_ISSUER/DEFER_TASKRUN unavailable, using COOP_TASKRUN");
            return Ok((ring, RingFlags::CoopTaskrun));
        }
        Err(e) if e.raw_os_error() != Some(libc::EINVAL) => return Err(RingError::from_setup(e)),
        Err(_) => {}
    }
    tracing::warn!("io_uring: no task-run flags on this kernel, using a plain ring");
    let ring = IoUring::builder()
        .setup_cqsize(cq)
        .build(entries)
        .map_err(RingError::from_setup)?;
    Ok((ring, RingFlags::Plain))
}

/// Checks, before any thread starts, that this process may use io_uring.
pub fn probe() -> Result<(), RingError> {
    IoUring::new(8).map(drop).map_err(RingError::from_setup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_the_kernels_limit_are_clamped_not_refused() {
        let (ring, flags) = build(1 << 20).unwrap();
        assert_eq!(ring.params().sq_entries(), MAX_ENTRIES);
        assert_eq!(flags, RingFlags::SingleIssuerDeferTaskrun);
        let (ring, _) = build(1000).unwrap();
        assert_eq!(ring.params().sq_entries(), 1024);
    }
}
