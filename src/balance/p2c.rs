//! Power of two choices (Mitzenmacher): draw two distinct eligible servers
//! by effective weight, keep the one with fewer `(active + 1) / weight`.
//!
//! The draws are those of `random` ([`Draw`]): the first by weight among the
//! eligible servers of the tier, the second by weight among the others
//! (without replacement, so the two always differ). With one eligible server
//! it is taken; with none, `None`. `active` is the server's open
//! connections over every shard and `weight` its effective weight
//! ([`Pool::weight`], slow start included); the comparison is
//! cross-multiplied as in least connections (no division, no rounding), and
//! a tie keeps the first draw (random already).
//!
//! It needs no scan of the pool, so a pick costs the same with 2 servers or
//! 1,000, and shards picking at once with the same slightly stale counts do
//! not all pile onto the one least loaded server as least connections
//! would. When connections are held, each server's load settles at its
//! weight share.

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::random::Draw;
use super::{Balancer, PickCtx};
use crate::pool::Pool;

pub struct P2c {
    draw: Draw,
}

impl P2c {
    /// A balancer for `pool` seeded from the OS.
    pub fn new(pool: &Pool) -> Self {
        P2c {
            draw: Draw::new(pool, SmallRng::from_os_rng()),
        }
    }

    /// A balancer whose draws repeat from run to run (tests, benchmarks).
    pub fn seeded(pool: &Pool, seed: u64) -> Self {
        P2c {
            draw: Draw::new(pool, SmallRng::seed_from_u64(seed)),
        }
    }

    /// The two candidates: the second is `None` when only one server is
    /// eligible.
    fn candidates(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
    ) -> Option<(usize, Option<usize>)> {
        let a = self.draw.draw(pool, eligible, ctx, None)?;
        Some((a, self.draw.draw(pool, eligible, ctx, Some(a))))
    }
}

impl Balancer for P2c {
    fn pick(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
    ) -> Option<usize> {
        let (a, b) = self.candidates(pool, eligible, ctx)?;
        let Some(b) = b else {
            return Some(a);
        };
        let load = |i: usize| {
            (
                u128::from(pool.servers[i].live.active()) + 1,
                u128::from(pool.weight(i, ctx.now_ms)),
            )
        };
        let ((la, wa), (lb, wb)) = (load(a), load(b));
        // lb/wb < la/wa
        Some(if lb * wa < la * wb { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::balance::test_support::{assert_fits, pool, shares, CTX};
    use crate::config::BalanceKind;

    #[test]
    fn candidates_are_two_distinct_eligible_servers() {
        let w = [1, 2, 3, 4, 0, 5];
        let p = pool(BalanceKind::P2c, &w);
        let mut p2c = P2c::seeded(&p, 1);
        let eligible = |i: usize| i != 2 && i != 5;
        let mut seen = [0u64; 6];
        for _ in 0..10_000 {
            let (a, b) = p2c.candidates(&p, &eligible, &CTX).unwrap();
            let b = b.unwrap();
            assert_ne!(a, b);
            for i in [a, b] {
                assert!(eligible(i) && w[i] > 0, "drew {i}");
                seen[i] += 1;
            }
        }
        assert!(seen[0] > 0 && seen[1] > 0 && seen[3] > 0);
    }

    #[test]
    fn one_eligible_server_is_taken_and_none_gives_none() {
        let p = pool(BalanceKind::P2c, &[1, 1, 1]);
        let mut p2c = P2c::seeded(&p, 2);
        for _ in 0..100 {
            assert_eq!(p2c.candidates(&p, &|i| i == 1, &CTX), Some((1, None)));
            assert_eq!(p2c.pick(&p, &|i| i == 1, &CTX), Some(1));
        }
        assert_eq!(p2c.pick(&p, &|_| false, &CTX), None);
    }

    #[test]
    fn prefers_the_less_loaded() {
        // Weights 1 and 3 with 1 and 5 connections: 2/1 against 6/3, a tie;
        // one more connection on the first tips every pick to the second.
        let p = pool(BalanceKind::P2c, &[1, 3]);
        p.servers[0].live.active.store(2, Ordering::Relaxed);
        p.servers[1].live.active.store(5, Ordering::Relaxed);
        let mut p2c = P2c::seeded(&p, 3);
        for _ in 0..1_000 {
            assert_eq!(p2c.pick(&p, &|_| true, &CTX), Some(1));
        }
        // Three servers, the first idle: it wins every pair it is in.
        let p = pool(BalanceKind::P2c, &[1, 1, 1]);
        p.servers[1].live.active.store(10, Ordering::Relaxed);
        p.servers[2].live.active.store(10, Ordering::Relaxed);
        let mut p2c = P2c::seeded(&p, 4);
        let wins = (0..3_000)
            .filter(|_| p2c.pick(&p, &|_| true, &CTX) == Some(0))
            .count();
        // Server 0 is in 2 of the 3 possible pairs.
        assert_fits(&[wins as u64, 3_000 - wins as u64], &[2.0, 1.0]);
    }

    #[test]
    fn never_picks_an_ineligible_server() {
        let p = pool(BalanceKind::P2c, &[4, 1, 1, 1]);
        // The eligible ones are the busiest, the idle one is out.
        for i in 1..4 {
            p.servers[i].live.active.store(100, Ordering::Relaxed);
        }
        let mut p2c = P2c::seeded(&p, 5);
        for _ in 0..10_000 {
            assert_ne!(p2c.pick(&p, &|i| i != 0, &CTX), Some(0));
        }
    }

    #[test]
    fn held_connections_follow_weights() {
        let w = [1, 2, 3, 4];
        let p = pool(BalanceKind::P2c, &w);
        let mut p2c = P2c::seeded(&p, 6);
        let mut counts = [0u64; 4];
        for _ in 0..10_000 {
            let i = p2c.pick(&p, &|_| true, &CTX).unwrap();
            p.servers[i].live.active.fetch_add(1, Ordering::Relaxed);
            counts[i] += 1;
        }
        assert_fits(&counts, &shares(&w));
    }
}
