//! Least time: the eligible server with the lowest
//! `(active + 1) × latency / weight`.
//!
//! `latency` is the server's peak-EWMA latency (connect time or time to
//! first byte, per `leasttime_observe`) read at the pick's time through
//! `live.latency.micros(now_ms, pool.policy.ewma_window)`: it jumps up at once on
//! a slow sample and decays toward zero while the server gets no samples,
//! so a server avoided for being slow is tried again after a few windows,
//! and its next sample says whether it still is. `active` is the open
//! connections over every shard, `weight` the effective weight
//! ([`Pool::weight`], slow start included). Latencies below
//! [`FLOOR_MICROS`] count as that floor, so that servers whose averages
//! decayed to nothing are still told apart by load and weight.
//!
//! A server with no sample yet is tried before any sampled one (its latency
//! is unknown, and a sample is how to learn it); among unsampled servers the
//! fewest `(active + 1) / weight` wins. Ties, sampled or not, are broken
//! round robin: the scan starts one past the previous winner.
//!
//! When connections are held, each server's load settles where the scores
//! are equal: in proportion to `weight / latency`.

use super::{Balancer, PickCtx};
use crate::pool::Pool;

/// The least latency a score uses, in microseconds.
pub const FLOOR_MICROS: f64 = 1.0;

pub struct LeastTime {
    next: usize,
}

impl LeastTime {
    pub fn new() -> Self {
        LeastTime { next: 0 }
    }
}

impl Default for LeastTime {
    fn default() -> Self {
        Self::new()
    }
}

/// A server's standing: unsampled before sampled, then `cost / weight`.
#[derive(Clone, Copy)]
struct Score {
    sampled: bool,
    cost: f64,
    weight: f64,
}

impl Score {
    fn better_than(&self, other: &Score) -> bool {
        if self.sampled != other.sampled {
            return !self.sampled;
        }
        // cost/weight < other.cost/other.weight
        self.cost * other.weight < other.cost * self.weight
    }
}

impl Balancer for LeastTime {
    fn pick(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
    ) -> Option<usize> {
        let n = pool.servers.len();
        let mut best: Option<(usize, Score)> = None;
        for k in 0..n {
            let i = (self.next + k) % n;
            let weight = pool.weight(i, ctx.now_ms);
            if weight == 0 || !eligible(i) {
                continue;
            }
            let live = &pool.servers[i].live;
            let load = (live.active() + 1) as f64;
            let latency = live.latency.micros(ctx.now_ms, pool.policy.ewma_window);
            let score = Score {
                sampled: latency.is_some(),
                cost: load * latency.map_or(1.0, |l| l.max(FLOOR_MICROS)),
                weight: weight as f64,
            };
            if best.is_none_or(|(_, b)| score.better_than(&b)) {
                best = Some((i, score));
            }
        }
        let (i, _) = best?;
        self.next = (i + 1) % n;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::balance::test_support::{assert_fits, pool};
    use crate::config::BalanceKind;

    fn ctx(now_ms: u64) -> PickCtx {
        PickCtx {
            now_ms,
            key: 0,
            backup: false,
        }
    }

    /// A pool whose servers have these weights and latency samples
    /// (microseconds; `None`: no sample), taken at 1 ms.
    fn sampled(weights: &[u32], micros: &[Option<u64>]) -> Pool {
        let p = pool(BalanceKind::LeastTime, weights);
        for (s, &us) in p.servers.iter().zip(micros) {
            if let Some(us) = us {
                s.live
                    .latency
                    .observe(Duration::from_micros(us), 1, p.policy.ewma_window);
            }
        }
        p
    }

    fn open(p: &Pool, lt: &mut LeastTime, now_ms: u64) -> usize {
        let i = lt.pick(p, &|_| true, &ctx(now_ms)).unwrap();
        p.servers[i].live.active.fetch_add(1, Ordering::Relaxed);
        i
    }

    #[test]
    fn steers_away_from_a_slow_server() {
        let p = sampled(&[1, 1, 1], &[Some(200), Some(20_000), Some(200)]);
        let mut lt = LeastTime::new();
        // Idle servers: the fast ones take turns.
        let picks: Vec<_> = (0..6)
            .map(|_| lt.pick(&p, &|_| true, &ctx(1)).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 2, 0, 2, 0, 2]);
        // Held connections: the slow one gets its first when each fast one
        // holds about 100, and 1 in 201 overall (weight / latency).
        let mut counts = [0u64; 3];
        for _ in 0..2_010 {
            counts[open(&p, &mut lt, 1)] += 1;
        }
        assert!((1..=20).contains(&counts[1]), "{counts:?}");
        assert!(counts[0].abs_diff(counts[2]) <= 1, "{counts:?}");
        assert_fits(&counts, &[100.0, 1.0, 100.0]);
    }

    #[test]
    fn held_connections_follow_weight_over_latency() {
        // weight / latency: 1/100, 2/200, 3/100, 4/200 = 1 : 1 : 3 : 2.
        let p = sampled(&[1, 2, 3, 4], &[Some(100), Some(200), Some(100), Some(200)]);
        let mut lt = LeastTime::new();
        let mut counts = [0u64; 4];
        for _ in 0..10_000 {
            counts[open(&p, &mut lt, 1)] += 1;
        }
        assert_fits(&counts, &[1.0, 1.0, 3.0, 2.0]);
    }

    #[test]
    fn equal_latencies_fill_like_least_connections() {
        let w = [1, 2, 3, 4];
        let p = sampled(&w, &[Some(300); 4]);
        let mut lt = LeastTime::new();
        let mut counts = [0u64; 4];
        for _ in 0..10_000 {
            counts[open(&p, &mut lt, 1)] += 1;
        }
        assert_fits(&counts, &crate::balance::test_support::shares(&w));
        assert_eq!(counts, [1_000, 2_000, 3_000, 4_000]);
    }

    #[test]
    fn an_unsampled_server_is_tried_first() {
        let p = sampled(&[1, 1, 1], &[Some(50), Some(50), None]);
        let mut lt = LeastTime::new();
        assert_eq!(lt.pick(&p, &|_| true, &ctx(1)), Some(2));
        // Even when busier than the sampled ones.
        p.servers[2].live.active.store(50, Ordering::Relaxed);
        assert_eq!(lt.pick(&p, &|_| true, &ctx(1)), Some(2));
        // Unsampled servers take turns.
        let p = sampled(&[1, 1, 1, 1], &[Some(50), None, Some(50), None]);
        let mut lt = LeastTime::new();
        let picks: Vec<_> = (0..4)
            .map(|_| lt.pick(&p, &|_| true, &ctx(1)).unwrap())
            .collect();
        assert_eq!(picks, vec![1, 3, 1, 3]);
        // Ineligible, it is not.
        assert_eq!(lt.pick(&p, &|i| i != 1 && i != 3, &ctx(1)), Some(0));
    }

    #[test]
    fn a_slow_server_is_tried_again_once_its_average_decays() {
        let mut p = pool(BalanceKind::LeastTime, &[1, 1, 1]);
        p.policy.ewma_window = Duration::from_secs(1);
        let w = p.policy.ewma_window;
        let l = |i: usize| &p.servers[i].live.latency;
        l(0).observe(Duration::from_micros(200), 1, w);
        l(1).observe(Duration::from_millis(20), 1, w);
        l(2).observe(Duration::from_micros(200), 1, w);
        let mut lt = LeastTime::new();
        // The fast servers keep being sampled at 200 µs; the slow one is
        // not, and its 20 ms decays below 200 µs after ln(100) windows
        // (4.6 s).
        let mut first_try = None;
        for now in (101..10_000).step_by(100) {
            l(0).observe(Duration::from_micros(200), now, w);
            l(2).observe(Duration::from_micros(200), now, w);
            if lt.pick(&p, &|_| true, &ctx(now)) == Some(1) {
                first_try = Some(now);
                break;
            }
        }
        let at = first_try.expect("the slow server was never tried again");
        assert!((4_600..=4_800).contains(&at), "tried again at {at} ms");
    }
}
