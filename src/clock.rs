//! One clock for state that every shard reads and writes (ejections, slow
//! start, latency averages, stick entries): milliseconds since the process
//! first asked, as a `u64` that fits an atomic. 0 means "never", so the
//! first reading is 1.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// `now` as milliseconds since the process epoch (at least 1).
pub fn millis(now: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(|| now - Duration::from_millis(1));
    now.saturating_duration_since(epoch).as_millis() as u64 + 1
}

/// `now` as microseconds since the process epoch (at least 1000).
pub fn micros(now: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(|| now - Duration::from_millis(1));
    now.saturating_duration_since(epoch).as_micros() as u64 + 1_000
}

/// A duration in whole milliseconds.
pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one_and_moves_with_time() {
        let t = Instant::now();
        let a = millis(t);
        assert!(a >= 1);
        assert_eq!(millis(t + Duration::from_millis(250)), a + 250);
    }
}
