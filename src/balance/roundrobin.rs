//! Smooth weighted round robin, as nginx does it.
//!
//! Each pick adds every eligible server's weight to its running score, picks
//! the highest score and takes the total weight off the winner. Over any
//! window of `sum(weights)` picks each server is chosen exactly `weight`
//! times, and picks of a heavy server are spread out: weights 5,1,1 give
//! `a a b a c a a`, not `a a a a a b c`. Ties go to the lowest index.
//! With equal weights this is plain round robin.

use super::Balancer;
use crate::pool::Server;

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
    fn pick(&mut self, servers: &[Server], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.current.len() != servers.len() {
            self.current = vec![0; servers.len()];
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, s) in servers.iter().enumerate() {
            if s.weight == 0 || !eligible(i) {
                continue;
            }
            self.current[i] += i64::from(s.weight);
            total += i64::from(s.weight);
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
    use crate::balance::test_support::servers;

    fn sequence(weights: &[u32], n: usize) -> String {
        let s = servers(weights);
        let mut rr = SmoothWeighted::new(s.len());
        (0..n)
            .map(|_| (b'a' + rr.pick(&s, &|_| true).unwrap() as u8) as char)
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
    fn ineligible_servers_are_skipped() {
        let s = servers(&[1, 1, 1]);
        let mut rr = SmoothWeighted::new(3);
        let picks: Vec<_> = (0..4).map(|_| rr.pick(&s, &|i| i != 1).unwrap()).collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
        assert_eq!(rr.pick(&s, &|_| false), None);
    }
}
