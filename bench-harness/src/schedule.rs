//! Constant-rate (open-loop) schedule: the intended send time of every request
//! of one connection. The total rate is split evenly over all connections and
//! their phases are staggered, so the union of all schedules is one request
//! every `1/rate` seconds. Times are nanoseconds; nothing is rounded to
//! milliseconds.

/// The fixed schedule of one connection.
#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: u64,
    offset_ns: f64,
    interval_ns: f64,
    k: u64,
}

impl Schedule {
    /// Schedule for connection `conn` (0-based, global) of `connections`
    /// sharing `rate` requests per second, starting at `start_ns`.
    pub fn new(start_ns: u64, rate: f64, connections: usize, conn: usize) -> Self {
        let global_interval = 1e9 / rate;
        Schedule {
            start_ns,
            offset_ns: global_interval * conn as f64,
            interval_ns: global_interval * connections as f64,
            k: 0,
        }
    }

    /// Intended time of the next request without consuming it.
    pub fn peek(&self) -> u64 {
        self.start_ns + (self.offset_ns + self.interval_ns * self.k as f64).round() as u64
    }

    /// Intended time of the next request; advances the schedule.
    pub fn next_ns(&mut self) -> u64 {
        let t = self.peek();
        self.k += 1;
        t
    }

    /// Spacing between this connection's requests.
    pub fn interval_ns(&self) -> f64 {
        self.interval_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_millisecond_spacing_is_exact() {
        // 20k/s on one connection: 50 µs apart, no drift after 100k requests.
        let mut s = Schedule::new(1_000, 20_000.0, 1, 0);
        let first = s.next_ns();
        assert_eq!(first, 1_000);
        assert_eq!(s.next_ns() - first, 50_000);
        for _ in 0..99_998 {
            s.next_ns();
        }
        assert_eq!(s.peek(), 1_000 + 100_000 * 50_000);
    }

    #[test]
    fn connections_interleave_into_one_stream() {
        let (rate, conns) = (3_000.0, 7);
        let mut all: Vec<u64> = (0..conns)
            .flat_map(|c| {
                let mut s = Schedule::new(0, rate, conns, c);
                (0..500).map(move |_| s.next_ns())
            })
            .collect();
        all.sort_unstable();
        // Requests intended within the first second: exactly the rate.
        let first_second = all.iter().filter(|&&t| t < 1_000_000_000).count();
        assert_eq!(first_second, 3_000);
        for w in all.windows(2).take(2000) {
            let gap = w[1] - w[0];
            assert!((333_332..=333_334).contains(&gap), "gap {gap}");
        }
    }
}
