//! Monotonic time in nanoseconds, on the same clock (CLOCK_MONOTONIC) that
//! io_uring absolute timeouts use, plus conversion to io_uring timespecs.

use io_uring::types::Timespec;
use nix::time::{clock_gettime, ClockId};

/// Nanoseconds since an arbitrary fixed point (CLOCK_MONOTONIC).
#[inline]
pub fn now_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; fall back to 0 only if it somehow does.
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// An io_uring timespec for an absolute CLOCK_MONOTONIC instant (or a relative span).
#[inline]
pub fn timespec(ns: u64) -> Timespec {
    Timespec::new()
        .sec(ns / 1_000_000_000)
        .nsec((ns % 1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_advances() {
        let a = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = now_ns();
        assert!(b >= a + 2_000_000, "{a} -> {b}");
    }
}
