//! Weighted random: each pick draws an eligible server with probability
//! proportional to its effective weight ([`Pool::weight`]: the configured
//! weight, scaled down during slow start) among the eligible servers of the
//! tier asked for.
//!
//! Each shard's balancer owns a small fast generator seeded from the OS,
//! so shards draw independently and never share a cache line.
//!
//! A draw is O(1) expected, O(log n) worst: rejection sampling over a
//! cumulative table of configured weights, built once per tier (a server
//! drawn that is ineligible is rejected; one in slow start is kept with
//! probability effective/configured weight). After [`TRIES`] rejections, one
//! exact linear draw over the eligible servers. Both ways give exactly the
//! target distribution: an accepted rejection sample is distributed as the
//! target, and so is the fallback, so their mixture is too. `p2c` draws its
//! two servers through the same [`Draw`].

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Balancer, PickCtx};
use crate::pool::Pool;

/// Rejection-sampling attempts before the exact linear draw.
const TRIES: usize = 8;

/// One tier's servers and the running sum of their configured weights.
#[derive(Default)]
struct Tier {
    index: Vec<usize>,
    cumulative: Vec<u64>,
    total: u64,
}

/// Draws servers of one pool by effective weight.
pub(super) struct Draw {
    rng: SmallRng,
    servers: usize,
    /// Primaries, then backups.
    tiers: [Tier; 2],
    /// The exact draw's running sums (kept to avoid an allocation a pick).
    scratch: Vec<(usize, u64)>,
}

impl Draw {
    pub(super) fn new(pool: &Pool, rng: SmallRng) -> Draw {
        let mut d = Draw {
            rng,
            servers: 0,
            tiers: Default::default(),
            scratch: Vec::new(),
        };
        d.build(pool);
        d
    }

    fn build(&mut self, pool: &Pool) {
        self.servers = pool.servers.len();
        for (t, backup) in [false, true].into_iter().enumerate() {
            let tier = &mut self.tiers[t];
            *tier = Tier::default();
            for (i, s) in pool.servers.iter().enumerate() {
                if s.backup == backup && s.weight > 0 {
                    tier.total += u64::from(s.weight);
                    tier.index.push(i);
                    tier.cumulative.push(tier.total);
                }
            }
        }
    }

    /// An eligible server of the tier `ctx` asks for, other than `except`,
    /// drawn with probability proportional to its effective weight.
    pub(super) fn draw(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
        except: Option<usize>,
    ) -> Option<usize> {
        if self.servers != pool.servers.len() {
            self.build(pool);
        }
        let tier = &self.tiers[usize::from(ctx.backup)];
        if tier.total == 0 {
            return None;
        }
        for _ in 0..TRIES {
            let r = self.rng.random_range(0..tier.total);
            let i = tier.index[tier.cumulative.partition_point(|&c| c <= r)];
            if Some(i) == except || !eligible(i) {
                continue;
            }
            let full = u64::from(pool.servers[i].weight) * 1000;
            let w = pool.weight(i, ctx.now_ms);
            if w < full && self.rng.random_range(0..full) >= w {
                continue;
            }
            return Some(i);
        }
        self.scratch.clear();
        let mut total = 0;
        for &i in &tier.index {
            let w = pool.weight(i, ctx.now_ms);
            if w == 0 || Some(i) == except || !eligible(i) {
                continue;
            }
            total += w;
            self.scratch.push((i, total));
        }
        if total == 0 {
            return None;
        }
        let r = self.rng.random_range(0..total);
        let k = self.scratch.partition_point(|&(_, c)| c <= r);
        Some(self.scratch[k].0)
    }
}

pub struct WeightedRandom {
    draw: Draw,
}

impl WeightedRandom {
    /// A balancer for `pool` seeded from the OS.
    pub fn new(pool: &Pool) -> Self {
        WeightedRandom {
            draw: Draw::new(pool, SmallRng::from_os_rng()),
        }
    }

    /// A balancer whose draws repeat from run to run (tests, benchmarks).
    pub fn seeded(pool: &Pool, seed: u64) -> Self {
        WeightedRandom {
            draw: Draw::new(pool, SmallRng::seed_from_u64(seed)),
        }
    }
}

impl Balancer for WeightedRandom {
    fn pick(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
    ) -> Option<usize> {
        self.draw.draw(pool, eligible, ctx, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::{assert_fits, pool, servers, shares, CTX};
    use crate::config::BalanceKind;
    use crate::pool::Server;

    fn counts(
        p: &Pool,
        r: &mut WeightedRandom,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
        picks: usize,
    ) -> Vec<u64> {
        let mut c = vec![0; p.servers.len()];
        for _ in 0..picks {
            c[r.pick(p, eligible, ctx).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn draws_in_proportion_to_weight() {
        let w = [1, 2, 3, 4];
        let p = pool(BalanceKind::Random, &w);
        let mut r = WeightedRandom::seeded(&p, 1);
        assert_fits(&counts(&p, &mut r, &|_| true, &CTX, 20_000), &shares(&w));
    }

    #[test]
    fn ineligible_and_weightless_servers_are_never_drawn() {
        let w = [3, 0, 1, 2, 5];
        let p = pool(BalanceKind::Random, &w);
        let mut r = WeightedRandom::seeded(&p, 2);
        // Server 4 (the heaviest) is out: the exact draw is needed often.
        let c = counts(&p, &mut r, &|i| i != 4, &CTX, 20_000);
        assert_eq!((c[1], c[4]), (0, 0));
        assert_fits(&c, &shares(&[3, 0, 1, 2, 0]));
        assert_eq!(r.pick(&p, &|_| false, &CTX), None);
    }

    #[test]
    fn slow_start_scales_the_share() {
        let w = [1, 1, 1];
        let mut p = pool(BalanceKind::Random, &w);
        p.slowstart_ms = 10_000;
        // Server 0 came back 5 s ago: 100 + 900 / 2 = 550 thousandths.
        p.servers[0].live.outlier.mark_returned(1_000);
        let ctx = PickCtx {
            now_ms: 6_000,
            ..CTX
        };
        assert_eq!(p.weight(0, ctx.now_ms), 550);
        let mut r = WeightedRandom::seeded(&p, 3);
        assert_fits(
            &counts(&p, &mut r, &|_| true, &ctx, 20_000),
            &[550.0, 1000.0, 1000.0],
        );
    }

    #[test]
    fn draws_from_the_tier_asked_for() {
        let mut list = servers(&[1, 1, 1, 1]);
        for s in &mut list[2..] {
            *s = Server::new(&s.name, s.addr, s.weight, true, 0);
        }
        let p = Pool::with_servers(BalanceKind::Random, list);
        let mut r = WeightedRandom::seeded(&p, 4);
        let backup = PickCtx {
            backup: true,
            ..CTX
        };
        let c = counts(&p, &mut r, &|i| p.servers[i].backup, &backup, 10_000);
        assert_eq!((c[0], c[1]), (0, 0));
        assert_fits(&c, &[0.0, 0.0, 1.0, 1.0]);
    }
}
