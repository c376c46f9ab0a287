//! Smooth weighted round robin, as nginx does it.
//!
//! Each pick adds every eligible server's weight to its running score, picks
//! the highest score and takes the total weight off the winner. Over any
//! window of `sum(weights)` picks each server is chosen exactly `weight`
//! times, and picks of a heavy server are spread out: weights 5,1,1 give
//! `a a b a c a a`, not `a a a a a b c`. Ties go to the lowest index.
//! With equal weights this is plain round robin.

use super::{Balancer, PickCtx};
use crate::pool::Pool;

pub struct SmoothWeighted {
    current: Vec<i64>,
}

impl SmoothWeighted {
    pub fn new(servers: usize) -> Self {
        SmoothWeighted {
            current: vec![0; servers],
        }
    }
}

impl Balancer for SmoothWeighted {
    fn pick(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
    ) -> Option<usize> {
        let n = pool.servers.len();
        if self.current.len() != n {
            self.current = vec![0; n];
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in 0..n {
            let w = pool.weight(i, ctx.now_ms) as i64;
            if w == 0 || !eligible(i) {
                continue;
            }
            self.current[i] += w;
            total += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::{assert_fits, pool, shares, CTX};
    use crate::config::BalanceKind;

    fn sequence(weights: &[u32], n: usize) -> String {
        let p = pool(BalanceKind::RoundRobin, weights);
        let mut rr = SmoothWeighted::new(p.servers.len());
        (0..n)
            .map(|_| (b'a' + rr.pick(&p, &|_| true, &CTX).unwrap() as u8) as char)
            .collect()
    }

    #[test]
    fn weights_5_1_1_interleave_like_nginx() {
        assert_eq!(sequence(&[5, 1, 1], 14), "aabacaaaabacaa");
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        assert_eq!(sequence(&[1, 1, 1], 7), "abcabca");
    }

    #[test]
    fn each_window_honours_weights_exactly() {
        let w = [3, 1, 2, 0, 4];
        let seq = sequence(&w, 10 * 100);
        for window in seq.as_bytes().chunks(10) {
            for (i, &wi) in w.iter().enumerate() {
                let n = window.iter().filter(|&&c| c == b'a' + i as u8).count();
                assert_eq!(n, wi as usize, "server {i} in window {window:?}");
            }
        }
    }

    #[test]
    fn picks_follow_weight_shares() {
        let w = [1, 2, 3, 4];
        let p = pool(BalanceKind::RoundRobin, &w);
        let mut rr = SmoothWeighted::new(p.servers.len());
        let mut counts = [0u64; 4];
        for _ in 0..10_001 {
            counts[rr.pick(&p, &|_| true, &CTX).unwrap()] += 1;
        }
        assert_fits(&counts, &shares(&w));
    }

    #[test]
    fn ineligible_servers_are_skipped() {
        let p = pool(BalanceKind::RoundRobin, &[1, 1, 1]);
        let mut rr = SmoothWeighted::new(3);
        let picks: Vec<_> = (0..4)
            .map(|_| rr.pick(&p, &|i| i != 1, &CTX).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
        assert_eq!(rr.pick(&p, &|_| false, &CTX), None);
    }
}
