//! Weighted least connections.
//!
//! Picks the eligible server with the fewest `(active + 1) / weight`, where
//! `active` is the server's open connections summed over every shard (the
//! live atomic each shard updates on connect and close). Comparisons are made
//! by cross-multiplication, so no division and no rounding. Ties are broken
//! round robin: the scan starts one past the previous winner.

use super::{Balancer, PickCtx};
use crate::pool::Pool;

pub struct LeastConn {
    next: usize,
}

impl LeastConn {
    pub fn new() -> Self {
        LeastConn { next: 0 }
    }
}

impl Default for LeastConn {
    fn default() -> Self {
        Self::new()
    }
}

impl Balancer for LeastConn {
    fn pick(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
    ) -> Option<usize> {
        let n = pool.servers.len();
        let mut best: Option<(usize, u128, u128)> = None;
        for k in 0..n {
            let i = (self.next + k) % n;
            let weight = u128::from(pool.weight(i, ctx.now_ms));
            if weight == 0 || !eligible(i) {
                continue;
            }
            let load = u128::from(pool.servers[i].live.active()) + 1;
            // load/weight < best_load/best_weight
            if best.is_none_or(|(_, bl, bw)| load * bw < bl * weight) {
                best = Some((i, load, weight));
            }
        }
        let (i, _, _) = best?;
        self.next = (i + 1) % n;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::balance::test_support::{assert_fits, pool, shares, CTX};
    use crate::config::BalanceKind;

    fn open(s: &Pool, lc: &mut LeastConn) -> usize {
        let i = lc.pick(s, &|_| true, &CTX).unwrap();
        s.servers[i].live.active.fetch_add(1, Ordering::Relaxed);
        i
    }

    #[test]
    fn ties_rotate() {
        let s = pool(BalanceKind::LeastConn, &[1, 1, 1]);
        let mut lc = LeastConn::new();
        let picks: Vec<_> = (0..3)
            .map(|_| lc.pick(&s, &|_| true, &CTX).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2]);
    }

    #[test]
    fn fills_by_weight() {
        let s = pool(BalanceKind::LeastConn, &[3, 1, 1, 1]);
        let mut lc = LeastConn::new();
        let mut counts = [0; 4];
        for _ in 0..600 {
            counts[open(&s, &mut lc)] += 1;
        }
        assert_eq!(counts, [300, 100, 100, 100]);
    }

    #[test]
    fn held_connections_follow_weight_shares() {
        let w = [1, 2, 3, 4];
        let s = pool(BalanceKind::LeastConn, &w);
        let mut lc = LeastConn::new();
        let mut counts = [0u64; 4];
        for _ in 0..10_000 {
            counts[open(&s, &mut lc)] += 1;
        }
        assert_fits(&counts, &shares(&w));
        assert_eq!(counts, [1_000, 2_000, 3_000, 4_000]);
    }

    #[test]
    fn prefers_the_least_loaded() {
        let s = pool(BalanceKind::LeastConn, &[1, 1]);
        s.servers[0].live.active.store(5, Ordering::Relaxed);
        let mut lc = LeastConn::new();
        for _ in 0..5 {
            assert_eq!(open(&s, &mut lc), 1);
        }
    }
}
