//! Server selection: one file per algorithm behind the [`Balancer`] trait,
//! and [`choose`], which applies what every algorithm shares: tiers
//! (primaries, then backups), redispatch, `maxconn` slots, outlier
//! ejection and its trial connection, and stickiness.
//!
//! A balancer lives in one shard and is called only from that shard's
//! thread, so it keeps its own state without locks. What it may read across
//! shards is the servers' live state ([`crate::pool::ServerLive`]).

mod first;
pub mod key;
mod leastconn;
mod leasttime;
mod maglev;
mod p2c;
mod random;
mod roundrobin;

pub use first::First;
pub use key::client_key;
pub use leastconn::LeastConn;
pub use leasttime::LeastTime;
pub use maglev::Maglev;
pub use p2c::P2c;
pub use random::WeightedRandom;
pub use roundrobin::SmoothWeighted;

use crate::config::BalanceKind;
use crate::pool::Pool;

/// What a pick may look at besides the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickCtx {
    /// `crate::clock` milliseconds (slow start, ejections, latency decay).
    pub now_ms: u64,
    /// The client's key (`balance::client_key`), for `source` and `hash`;
    /// 0 when the pool does not need it.
    pub key: u64,
    /// The tier being picked from: backups (true) or primaries.
    pub backup: bool,
}

/// Picks a server for a new connection.
pub trait Balancer: Send {
    /// Returns the index of the chosen server among `pool.servers`,
    /// considering only those for which `eligible` answers true (it checks
    /// the tier, that the server is usable and has a free slot); `None`
    /// when there is none. Weights are read through [`Pool::weight`], which
    /// applies slow start.
    fn pick(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
    ) -> Option<usize>;
}

/// Builds the balancer a pool asks for.
pub fn for_pool(pool: &Pool) -> Box<dyn Balancer> {
    match pool.policy.balance {
        BalanceKind::RoundRobin => Box::new(SmoothWeighted::new(pool.servers.len())),
        BalanceKind::LeastConn => Box::new(LeastConn::new()),
        BalanceKind::Random => Box::new(WeightedRandom::new(pool)),
        BalanceKind::P2c => Box::new(P2c::new(pool)),
        BalanceKind::Source | BalanceKind::Hash => Box::new(Maglev::new(pool)),
        BalanceKind::First => Box::new(First),
        BalanceKind::LeastTime => Box::new(LeastTime::new()),
    }
}

/// A server picked, its slot reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub server: usize,
    /// The pick claimed the server's trial connection after an ejection:
    /// this connect's result decides it, and a pick that ends without a
    /// result must give it back (`Outlier::unclaim_trial`).
    pub trial: bool,
}

/// What [`choose`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// This server, with a slot reserved for the connection.
    Server(Pick),
    /// Every server that could take the client is at its `maxconn`: the
    /// client may wait in the pool's queue.
    Full,
    /// No server is usable at all.
    Nothing,
}

/// Whether server `i` is marked in `tried` (bit `i % 64`: in pools of more
/// than 64 servers, servers 64 apart share a bit, which can make a
/// redispatch skip a server it could have tried, never repeat one).
fn untried(tried: u64, i: usize) -> bool {
    tried & (1 << (i % 64)) == 0
}

/// Chooses a server of `pool` for a connection that has already tried the
/// servers marked in `tried`, and reserves its slot.
///
/// - A sticky client (the pool has `stick`) keeps its server while that
///   server is usable and has a slot; otherwise it is balanced as usual and
///   the entry points to the new server.
/// - Primaries come first; backups only when no usable primary remains
///   untried (the first usable backup, or all of them with `allbackups`).
///   A primary that is only full keeps its clients (they queue): backups
///   stand in for servers that are gone, not for capacity. When every
///   server was tried, any usable server may be picked again.
/// - An ejected server is skipped; one whose ejection is over is picked
///   only by the pick that claims its trial connection. When every server
///   that is up is ejected, ejection is ignored (never leave a pool empty).
/// - A server at its `maxconn` is skipped; when that leaves no server but
///   some usable one is only full, the answer is [`Choice::Full`].
pub fn choose(
    balancer: &mut dyn Balancer,
    pool: &Pool,
    tried: u64,
    now_ms: u64,
    key: u64,
) -> Choice {
    if let Some(si) = sticky(pool, tried, now_ms, key) {
        return Choice::Server(Pick {
            server: si,
            trial: false,
        });
    }
    let n = pool.servers.len();
    let (usable, panic) = pool.in_service(now_ms);
    // Backups stand in for primaries that are gone, not for primaries that
    // are full: while a primary is usable, its clients queue for it.
    let primary = |i: usize, fresh: bool| {
        !pool.servers[i].backup && usable(i) && (!fresh || untried(tried, i))
    };
    let primaries_left = |fresh: bool| (0..n).any(|i| primary(i, fresh));
    for (backup, fresh) in [(false, true), (true, true), (false, false), (true, false)] {
        if backup && primaries_left(fresh) {
            continue;
        }
        let candidate = |i: usize| {
            let s = &pool.servers[i];
            s.backup == backup && usable(i) && (!fresh || untried(tried, i)) && s.has_room()
        };
        // Without `allbackups`, only the first backup that can take it.
        let only = (backup && !pool.policy.allbackups).then(|| (0..n).find(|&i| candidate(i)));
        let eligible = |i: usize| match only {
            Some(first) => first == Some(i) && candidate(i),
            None => candidate(i),
        };
        let ctx = PickCtx {
            now_ms,
            key,
            backup,
        };
        // Each failed step (a trial or the last slot taken by another
        // shard) makes the server ineligible, so this ends.
        while let Some(i) = balancer.pick(pool, &eligible, &ctx) {
            if let Some(trial) = take(pool, i, now_ms, panic) {
                stick(pool, key, i, now_ms);
                return Choice::Server(Pick { server: i, trial });
            }
        }
    }
    let full = (0..n).any(|i| usable(i) && !pool.servers[i].has_room());
    if full {
        Choice::Full
    } else {
        Choice::Nothing
    }
}

/// Claims server `i`'s trial connection if it is due one, and reserves a
/// slot. `Some(whether the trial was claimed)`, or `None` when another
/// pick took the trial or the last slot first.
fn take(pool: &Pool, i: usize, now_ms: u64, panic: bool) -> Option<bool> {
    let s = &pool.servers[i];
    let trial = pool.policy.outlier.is_some()
        && !panic
        && s.live.outlier.standing(now_ms) == crate::outlier::Standing::TrialDue;
    if trial && !s.live.outlier.claim_trial(now_ms) {
        return None;
    }
    if s.try_reserve() {
        return Some(trial);
    }
    if trial {
        // Full: the trial is due again for the next pick.
        s.live.outlier.unclaim_trial();
    }
    None
}

/// The client's sticky server, with a slot reserved, if it has one that is
/// usable, untried and not full.
fn sticky(pool: &Pool, tried: u64, now_ms: u64, key: u64) -> Option<usize> {
    let table = pool.stick.as_ref()?;
    let si = table.get(key, now_ms)? as usize;
    let s = pool.servers.get(si)?;
    let ok = pool.usable(si, now_ms)
        && (pool.policy.outlier.is_none() || s.live.outlier.serving())
        && untried(tried, si)
        && s.try_reserve();
    ok.then(|| {
        table.put(key, si as u32, now_ms);
        si
    })
}

fn stick(pool: &Pool, key: u64, si: usize, now_ms: u64) {
    if let Some(table) = &pool.stick {
        table.put(key, si as u32, now_ms);
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::PickCtx;
    use crate::config::BalanceKind;
    use crate::pool::{Pool, Server};

    /// A pick's context at a fixed time, primaries, no client key.
    pub const CTX: PickCtx = PickCtx {
        now_ms: 1,
        key: 0,
        backup: false,
    };

    pub fn servers(weights: &[u32]) -> Vec<Server> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16));
                Server::new(&format!("s{i}"), addr, w, false, 0)
            })
            .collect()
    }

    pub fn pool(balance: BalanceKind, weights: &[u32]) -> Pool {
        Pool::with_servers(balance, servers(weights))
    }

    /// Shares proportional to `weights`.
    pub fn shares(weights: &[u32]) -> Vec<f64> {
        let total: u32 = weights.iter().sum();
        weights
            .iter()
            .map(|&w| f64::from(w) / f64::from(total))
            .collect()
    }

    /// The p-value of Pearson's chi-square goodness-of-fit test of
    /// `observed` counts against `expected` shares (normalized here).
    /// Categories expected never must be observed never (p = 0 if not);
    /// the others give the degrees of freedom (their number minus one).
    pub fn chi_square_p(observed: &[u64], expected: &[f64]) -> f64 {
        assert_eq!(observed.len(), expected.len());
        let n: u64 = observed.iter().sum();
        let total: f64 = expected.iter().sum();
        let mut stat = 0.0;
        let mut categories = 0;
        for (&o, &share) in observed.iter().zip(expected) {
            if share == 0.0 {
                if o > 0 {
                    return 0.0;
                }
                continue;
            }
            let e = n as f64 * share / total;
            stat += (o as f64 - e).powi(2) / e;
            categories += 1;
        }
        if categories < 2 {
            return 1.0;
        }
        gamma_q(f64::from(categories - 1) / 2.0, stat / 2.0)
    }

    /// The significance every distribution test uses.
    pub const ALPHA: f64 = 0.001;

    /// Fails unless `observed` fits `expected` shares at [`ALPHA`].
    pub fn assert_fits(observed: &[u64], expected: &[f64]) {
        let p = chi_square_p(observed, expected);
        assert!(
            p > ALPHA,
            "p = {p:.2e}: counts {observed:?} do not fit shares {expected:?}"
        );
    }

    /// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: ~15 digits).
    fn ln_gamma(x: f64) -> f64 {
        const G: [f64; 9] = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        if x < 0.5 {
            // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
            let pi = std::f64::consts::PI;
            return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
        }
        let x = x - 1.0;
        let t = x + 7.5;
        let sum = G[1..]
            .iter()
            .enumerate()
            .fold(G[0], |acc, (i, &g)| acc + g / (x + i as f64 + 1.0));
        0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
    }

    /// The regularized upper incomplete gamma function Q(a, x) = 1 - P(a, x):
    /// its series for x < a + 1, its continued fraction (modified Lentz)
    /// beyond, as in Numerical Recipes' `gammq`.
    pub fn gamma_q(a: f64, x: f64) -> f64 {
        assert!(a > 0.0 && x >= 0.0);
        if x == 0.0 {
            return 1.0;
        }
        let front = (-x + a * x.ln() - ln_gamma(a)).exp();
        if x < a + 1.0 {
            let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
            for _ in 0..10_000 {
                ap += 1.0;
                term *= x / ap;
                sum += term;
                if term.abs() < sum.abs() * 1e-15 {
                    break;
                }
            }
            return (1.0 - sum * front).max(0.0);
        }
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let step = d * c;
            h *= step;
            if (step - 1.0).abs() < 1e-15 {
                break;
            }
        }
        front * h
    }

    #[test]
    fn chi_square_matches_published_quantiles() {
        // (degrees of freedom, statistic, upper-tail p) from standard tables.
        for (df, x, p) in [
            (1.0, 3.841_459, 0.05),
            (3.0, 7.814_728, 0.05),
            (3.0, 16.266_236, 0.001),
            (9.0, 21.665_994, 0.01),
            (15.0, 37.697_298, 0.001),
            (99.0, 148.230_455, 0.001),
            (2.0, 0.0, 1.0),
        ] {
            let q = gamma_q(df / 2.0, x / 2.0);
            assert!((q - p).abs() < 1e-4 * p, "df {df} x {x}: {q} != {p}");
        }
        // Exact fit, and a clear misfit.
        assert_eq!(chi_square_p(&[100, 200], &[1.0, 2.0]), 1.0);
        assert!(chi_square_p(&[150, 150], &[1.0, 2.0]) < 1e-6);
        assert_eq!(chi_square_p(&[1, 299], &[0.0, 1.0]), 0.0);
    }
}

#[cfg(test)]
mod choose_tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::test_support::servers;
    use crate::config::OutlierConfig;

    const NOW: u64 = 10_000;

    /// A round-robin pool: weights as given, `backups` marked, each server
    /// with `maxconn`.
    fn pool(n: usize, backups: &[usize], maxconn: u32) -> Pool {
        let mut s = servers(&vec![1; n]);
        for &b in backups {
            s[b].backup = true;
        }
        for srv in &mut s {
            srv.maxconn = maxconn;
        }
        Pool::with_servers(BalanceKind::RoundRobin, s)
    }

    fn pick(p: &Pool, b: &mut dyn Balancer, tried: u64) -> Choice {
        choose(b, p, tried, NOW, 0)
    }

    fn server(c: Choice) -> usize {
        match c {
            Choice::Server(p) => p.server,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_primaries_make_clients_wait_rather_than_use_backups() {
        let p = pool(2, &[1], 1);
        let mut b = for_pool(&p);
        assert_eq!(server(pick(&p, b.as_mut(), 0)), 0);
        // The primary is full: Full (queue), not the backup.
        assert_eq!(pick(&p, b.as_mut(), 0), Choice::Full);
        assert!(!p.has_free_slot(NOW), "a free backup slot is not a slot");
        // The primary goes down: the backup stands in.
        p.servers[0].live.set_flag(crate::pool::HEALTH_DOWN, true);
        assert_eq!(server(pick(&p, b.as_mut(), 0)), 1);
        // Everything down: nothing.
        p.servers[1].live.set_flag(crate::pool::HEALTH_DOWN, true);
        assert_eq!(pick(&p, b.as_mut(), 0), Choice::Nothing);
        assert!(!p.any_up());
    }

    #[test]
    fn a_redispatch_tries_untried_servers_then_any() {
        let p = pool(3, &[2], 0);
        let mut b = for_pool(&p);
        // 0 tried: 1; both primaries tried: the backup; everything tried:
        // a primary again.
        assert_eq!(server(pick(&p, b.as_mut(), 0b001)), 1);
        p.servers[1].release();
        assert_eq!(server(pick(&p, b.as_mut(), 0b011)), 2);
        p.servers[2].release();
        assert!(server(pick(&p, b.as_mut(), 0b111)) < 2);
    }

    #[test]
    fn one_pick_claims_the_trial_and_a_full_server_gives_it_back() {
        let mut p = pool(2, &[], 1);
        p.policy.outlier = Some(OutlierConfig {
            consecutive_failures: 1,
            ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(4),
        });
        let cfg = p.policy.outlier.unwrap();
        let mut b = for_pool(&p);
        let o = &p.servers[0].live.outlier;
        assert!(matches!(
            o.on_failure(NOW - 2000, &cfg, true, false),
            crate::outlier::Change::Ejected { .. }
        ));
        // Its ejection is over: the pick that lands on it takes the trial.
        let picks: Vec<Choice> = (0..2).map(|_| pick(&p, b.as_mut(), 0)).collect();
        let trial = picks
            .iter()
            .find_map(|c| match c {
                Choice::Server(pk) if pk.server == 0 => Some(pk.trial),
                _ => None,
            })
            .expect("server 0 picked");
        assert!(trial);
        assert_eq!(o.standing(NOW), crate::outlier::Standing::Out);
        // A second client cannot get it while the trial is out.
        p.servers[1].release();
        assert_eq!(server(pick(&p, b.as_mut(), 0)), 1);
        // The trial connection never got a result (socket error): given
        // back, it is due again.
        o.unclaim_trial();
        p.servers[0].release();
        let again = pick(&p, b.as_mut(), 0);
        assert_eq!(
            again,
            Choice::Server(Pick {
                server: 0,
                trial: true
            })
        );
    }

    #[test]
    fn every_server_ejected_means_none_is() {
        let mut p = pool(2, &[], 0);
        p.policy.outlier = Some(OutlierConfig {
            consecutive_failures: 1,
            ejection: Duration::from_secs(60),
            max_ejection: Duration::from_secs(60),
        });
        let cfg = p.policy.outlier.unwrap();
        for s in &p.servers {
            s.live.outlier.on_failure(NOW, &cfg, true, false);
        }
        let mut b = for_pool(&p);
        // Panic mode: both still take clients, and no trial is claimed.
        let got: Vec<Choice> = (0..2).map(|_| pick(&p, b.as_mut(), 0)).collect();
        assert_eq!(
            got,
            [0, 1].map(|server| Choice::Server(Pick {
                server,
                trial: false
            }))
        );
        assert!(p.has_free_slot(NOW));
    }
}
