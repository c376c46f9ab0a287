//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with bounded
//! loads, for `balance = "source"` and `"hash"`.
//!
//! **The table.** `M = pool.policy.table_size` entries (a prime), each naming a
//! server. Each server with a weight above zero has a permutation of the
//! entries given by two fixed hashes of its identity (`name`, a zero byte,
//! `addr` as text) under two different prefixes: `offset = h1 % M`,
//! `skip = h2 % (M - 1) + 1`, its k-th preference `(offset + k·skip) % M`.
//! Servers take turns; on its turn a server claims its next preferred entry
//! that is still empty, until the table is full. Weights (the configured
//! ones: the table never changes while the process runs) set the turns: in
//! round `r` (from 0) server `i` takes a turn while its count of entries
//! `c_i` satisfies `⌊c_i · w_max / w_i⌋ ≤ r`, within a round in declared
//! order. So the heaviest servers take a turn every round, every server has
//! between `r · w_i / w_max` and one more than `(r + 1) · w_i / w_max`
//! entries after round `r`, and each ends within two entries of
//! `M · w_i / Σw`; with equal weights this is the paper's round robin. The turns are ordered by a heap, so a build is
//! O(M log n) plus the paper's O(M log M) probes, whatever the weights.
//! Primaries and backups have one table each.
//!
//! **Invariants.** The table depends only on the servers' identities,
//! weights and order and on `M`: every shard and every ringlb process with
//! the same server list builds the same table (the hashes are
//! [`stable_hash`], fixed forever; a test pins a digest of a table). Server
//! `i` holds `M · w_i / Σw` entries within two. Removing or adding one of
//! `n` servers moves few keys besides its own share (the paper's minimal
//! disruption; tests bound it by `1/n + 2%`).
//!
//! **A pick** reads the entry at `key % M`. If its server is not eligible
//! (down, ejected, at its `maxconn`, already tried) the walk goes on to the
//! next entries, `key % M + 1, + 2, …` (wrapping), and takes the first
//! eligible server met: the same key and the same eligibility give the same
//! server on every shard and process, the keys of eligible servers never
//! move, and the clients of a full server spill over the servers that
//! follow its entries (consistent hashing with bounded loads). Each server
//! is judged once per walk, and the walk stops when every server of the
//! table has been judged, so it takes at most `M` steps and, when nothing
//! is eligible, about `n ln n` on average.
//!
//! **Slow start.** While the server met ramps up (`pool.ramp(i) < 1000`),
//! it is taken only for keys whose `fmix64(key ^ RAMP_SALT) % 1000` is
//! below its ramp; other keys walk on. So, deterministically, a growing
//! share of its own keys comes back to it as it ramps (and each key that
//! came back stays). When every eligible server met was passed over this
//! way, the first of them is taken rather than none.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::key::{fmix64, stable_hash};
use super::{Balancer, PickCtx};
use crate::pool::{Pool, Server};

/// An entry that no server claimed (only when `M` is not a prime and some
/// permutations do not cover the table).
pub const EMPTY: u32 = u32::MAX;
const OFFSET_PREFIX: &[u8] = b"ringlb maglev offset\0";
const SKIP_PREFIX: &[u8] = b"ringlb maglev skip\0";
/// Mixed into the key for the slow-start test (so it does not follow the
/// entry the key lands on).
const RAMP_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// One tier's lookup table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Table {
    /// Server index per entry, or [`EMPTY`].
    entries: Vec<u32>,
    /// How many servers hold at least one entry.
    members: usize,
}

/// A server's permutation: where its next preference is, and its stride.
struct Cursor {
    index: u32,
    weight: u64,
    next: u64,
    skip: u64,
    probes: u64,
    count: u64,
}

/// The two hashes of a server's identity.
fn hashes(s: &Server) -> (u64, u64) {
    let id = format!("{}\0{}", s.name, s.addr);
    let with = |prefix: &[u8]| {
        let mut bytes = Vec::with_capacity(prefix.len() + id.len());
        bytes.extend_from_slice(prefix);
        bytes.extend_from_slice(id.as_bytes());
        stable_hash(&bytes)
    };
    (with(OFFSET_PREFIX), with(SKIP_PREFIX))
}

impl Table {
    /// The table of `pool`'s servers of one tier, of `m` entries.
    fn build(pool: &Pool, backup: bool, m: usize) -> Table {
        let m64 = m as u64;
        let mut cursors: Vec<Cursor> = pool
            .servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.backup == backup && s.weight > 0)
            .map(|(i, s)| {
                let (h1, h2) = hashes(s);
                Cursor {
                    index: i as u32,
                    weight: u64::from(s.weight),
                    next: if m > 0 { h1 % m64 } else { 0 },
                    skip: if m > 1 { h2 % (m64 - 1) + 1 } else { 1 },
                    probes: 0,
                    count: 0,
                }
            })
            .collect();
        if cursors.is_empty() {
            // A tier without servers (most pools have no backups).
            return Table::default();
        }
        let mut entries = vec![EMPTY; m];
        let w_max = cursors.iter().map(|c| c.weight).max().unwrap_or(1);
        // (round of the server's next turn, its place in declared order).
        let mut turns: BinaryHeap<Reverse<(u64, usize)>> =
            (0..cursors.len()).map(|j| Reverse((0, j))).collect();
        let mut empty = m;
        while empty > 0 {
            let Some(Reverse((_, j))) = turns.pop() else {
                break;
            };
            let c = &mut cursors[j];
            // Its next preference still empty (a prime M guarantees one).
            while c.probes < m64 {
                let at = c.next as usize;
                c.next += c.skip;
                if c.next >= m64 {
                    c.next -= m64;
                }
                c.probes += 1;
                if entries[at] == EMPTY {
                    entries[at] = c.index;
                    c.count += 1;
                    empty -= 1;
                    turns.push(Reverse((c.count * w_max / c.weight, j)));
                    break;
                }
            }
        }
        let members = cursors.iter().filter(|c| c.count > 0).count();
        Table { entries, members }
    }
}

pub struct Maglev {
    servers: usize,
    table_size: usize,
    /// Primaries, then backups.
    tables: [Table; 2],
    /// `judged[i] == round`: server `i` was judged in this walk.
    judged: Vec<u32>,
    round: u32,
}

impl Maglev {
    /// The tables of `pool` (`pool.policy.table_size` entries each).
    pub fn new(pool: &Pool) -> Self {
        let m = pool.policy.table_size as usize;
        Maglev {
            servers: pool.servers.len(),
            table_size: m,
            tables: [Table::build(pool, false, m), Table::build(pool, true, m)],
            judged: vec![0; pool.servers.len()],
            round: 0,
        }
    }

    /// The table of one tier: a server index per entry ([`EMPTY`] for an
    /// entry no server claimed); empty when the tier has no server of
    /// weight above zero.
    pub fn table(&self, backup: bool) -> &[u32] {
        &self.tables[usize::from(backup)].entries
    }
}

impl Balancer for Maglev {
    fn pick(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
    ) -> Option<usize> {
        if self.servers != pool.servers.len() || self.table_size != pool.policy.table_size as usize
        {
            *self = Maglev::new(pool);
        }
        let table = &self.tables[usize::from(ctx.backup)];
        if table.members == 0 {
            return None;
        }
        let m = table.entries.len();
        self.round = self.round.wrapping_add(1);
        if self.round == 0 {
            self.judged.fill(0);
            self.round = 1;
        }
        let gate = fmix64(ctx.key ^ RAMP_SALT) % 1000;
        let mut judged = 0;
        let mut passed_over = None;
        let mut at = (ctx.key % m as u64) as usize;
        for _ in 0..m {
            let s = table.entries[at];
            if s != EMPTY && self.judged[s as usize] != self.round {
                let i = s as usize;
                self.judged[i] = self.round;
                if eligible(i) {
                    if gate < pool.ramp(i, ctx.now_ms) {
                        return Some(i);
                    }
                    passed_over.get_or_insert(i);
                }
                judged += 1;
                if judged == table.members {
                    break;
                }
            }
            at += 1;
            if at == m {
                at = 0;
            }
        }
        passed_over
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::balance::test_support::{assert_fits, shares};
    use crate::config::BalanceKind;

    const M: u32 = 65_537;

    fn ctx(key: u64) -> PickCtx {
        PickCtx {
            now_ms: 1,
            key,
            backup: false,
        }
    }

    fn server(name: &str, weight: u32) -> Server {
        let n: u32 = name[1..].parse().unwrap();
        let addr = SocketAddr::from(([10, (n >> 8) as u8, n as u8, 1], 80));
        Server::new(name, addr, weight, false, 0)
    }

    fn pool_of(servers: Vec<Server>, table_size: u32) -> Pool {
        let mut p = Pool::with_servers(BalanceKind::Source, servers);
        p.policy.table_size = table_size;
        p
    }

    /// Servers `s0..sN` of these weights.
    fn weighted(weights: &[u32]) -> Pool {
        let list = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| server(&format!("s{i}"), w))
            .collect();
        pool_of(list, M)
    }

    fn counts(table: &[u32], n: usize) -> Vec<u64> {
        let mut c = vec![0u64; n];
        for &s in table {
            c[s as usize] += 1;
        }
        c
    }

    /// Uniform keys, the same every run.
    fn keys(n: usize, seed: u64) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random()).collect()
    }

    fn picks(p: &Pool, mg: &mut Maglev, keys: &[u64]) -> Vec<u64> {
        let mut c = vec![0u64; p.servers.len()];
        for &k in keys {
            c[mg.pick(p, &|_| true, &ctx(k)).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn equal_weights_fill_the_table_evenly() {
        for n in [2, 16, 100] {
            let p = weighted(&vec![1; n]);
            let mut mg = Maglev::new(&p);
            let c = counts(mg.table(false), n);
            let share = f64::from(M) / n as f64;
            let max = *c.iter().max().unwrap() as f64;
            assert!(max / share <= 1.01, "n = {n}: {max} entries, share {share}");
            assert!(c.iter().all(|&k| k > 0));
            let got = picks(&p, &mut mg, &keys(20_000, n as u64));
            assert_fits(&got, &vec![1.0; n]);
        }
    }

    #[test]
    fn weights_set_the_shares() {
        for w in [
            vec![1, 2, 3, 4],
            vec![5, 1, 1, 10, 3, 7, 2, 2],
            vec![1, 100, 7],
        ] {
            let p = weighted(&w);
            let mut mg = Maglev::new(&p);
            let c = counts(mg.table(false), w.len());
            for (i, share) in shares(&w).into_iter().enumerate() {
                let got = c[i] as f64 / f64::from(M);
                assert!(
                    (got - share).abs() <= 0.01 * share,
                    "weights {w:?}: server {i} holds {got}, share {share}"
                );
                // Within two entries, in fact.
                assert!((c[i] as f64 - share * f64::from(M)).abs() < 2.0);
            }
            let got = picks(&p, &mut mg, &keys(20_000, 7));
            assert_fits(&got, &shares(&w));
        }
    }

    #[test]
    fn weightless_servers_get_no_entries_and_tiers_have_their_own_table() {
        let mut list: Vec<Server> = (0..6).map(|i| server(&format!("s{i}"), 1)).collect();
        list[1] = server("s1", 0);
        for s in &mut list[4..] {
            *s = Server::new(&s.name, s.addr, s.weight, true, 0);
        }
        let p = pool_of(list, M);
        let mut mg = Maglev::new(&p);
        assert_eq!(
            counts(mg.table(false), 6)[..],
            [21_846, 0, 21_846, 21_845, 0, 0]
        );
        assert_eq!(counts(mg.table(true), 6)[4..], [32_769, 32_768]);
        let backup = PickCtx {
            backup: true,
            ..ctx(12_345)
        };
        assert!(mg.pick(&p, &|_| true, &backup).unwrap() >= 4);
        // No backups: no table, no pick.
        let p = weighted(&[1, 1]);
        let mut mg = Maglev::new(&p);
        assert!(mg.table(true).is_empty());
        assert_eq!(mg.pick(&p, &|_| true, &backup), None);
    }

    /// The share of keys (table entries) whose server changes between two
    /// tables, servers compared by name.
    fn moved(a: &Pool, b: &Pool) -> f64 {
        let (ta, tb) = (Maglev::new(a), Maglev::new(b));
        let (ta, tb) = (ta.table(false), tb.table(false));
        let name = |p: &Pool, s: u32| p.servers[s as usize].name.clone();
        let changed = ta
            .iter()
            .zip(tb)
            .filter(|(&x, &y)| name(a, x) != name(b, y))
            .count();
        changed as f64 / ta.len() as f64
    }

    #[test]
    fn removing_or_adding_a_server_moves_few_other_keys() {
        for n in [10, 50, 100] {
            let list = |names: &mut dyn Iterator<Item = usize>| {
                pool_of(names.map(|i| server(&format!("s{i}"), 1)).collect(), M)
            };
            let all = list(&mut (0..n));
            let bound = 1.0 / n as f64 + 0.02;
            for gone in [0, n / 2, n - 1] {
                let fewer = list(&mut (0..n).filter(|&i| i != gone));
                let m = moved(&all, &fewer);
                assert!(m <= bound, "n = {n}, without s{gone}: {m:.4} moved");
                assert!(m >= 1.0 / n as f64 - 0.001, "its own keys move");
            }
            let more = list(&mut (0..=n));
            let m = moved(&all, &more);
            assert!(m <= bound, "n = {n}, with s{n}: {m:.4} moved");
        }
    }

    #[test]
    fn tables_are_deterministic_and_pinned() {
        let list = || {
            [("s0", 1), ("s1", 1), ("s2", 2), ("s3", 1), ("s4", 3)]
                .iter()
                .map(|&(n, w)| server(n, w))
                .collect::<Vec<_>>()
        };
        let a = Maglev::new(&pool_of(list(), M));
        let b = Maglev::new(&pool_of(list(), M));
        assert_eq!(a.table(false), b.table(false));
        // Every ringlb version and process must build this very table:
        // change the hash or the fill order and clients move.
        let bytes: Vec<u8> = a
            .table(false)
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(stable_hash(&bytes), GOLDEN, "{:#x}", stable_hash(&bytes));
        assert_eq!(&a.table(false)[..8], GOLDEN_HEAD);
    }

    const GOLDEN: u64 = 0xa4f1_5b30_3c32_1ea2;
    const GOLDEN_HEAD: &[u32] = &[4, 2, 4, 4, 4, 0, 1, 4];

    #[test]
    fn the_walk_goes_to_the_next_eligible_entry() {
        let p = weighted(&[1; 8]);
        let mut mg = Maglev::new(&p);
        let table = mg.table(false).to_vec();
        let m = table.len() as u64;
        let all = keys(10_000, 3);
        let before: Vec<usize> = all
            .iter()
            .map(|&k| mg.pick(&p, &|_| true, &ctx(k)).unwrap())
            .collect();
        for (&k, &s) in all.iter().zip(&before) {
            assert_eq!(table[(k % m) as usize] as usize, s);
        }
        // Server 3 out (down, full, tried): its keys go to the next entry
        // of another server; no other key moves.
        let out = 3;
        let mut spilled = vec![0u64; 8];
        for (&k, &s) in all.iter().zip(&before) {
            let now = mg.pick(&p, &|i| i != out, &ctx(k)).unwrap();
            if s != out {
                assert_eq!(now, s, "key {k} moved");
                continue;
            }
            let mut at = (k % m) as usize;
            while table[at] as usize == out {
                at = (at + 1) % m as usize;
            }
            assert_eq!(now, table[at] as usize, "key {k}");
            spilled[now] += 1;
        }
        // Spread over the others, not dumped on one.
        assert_eq!(spilled[out], 0);
        assert!(
            spilled.iter().filter(|&&c| c > 0).count() >= 6,
            "{spilled:?}"
        );
        // Only server 5 eligible: every key goes there; none: nothing.
        for &k in &all[..100] {
            assert_eq!(mg.pick(&p, &|i| i == 5, &ctx(k)), Some(5));
            assert_eq!(mg.pick(&p, &|_| false, &ctx(k)), None);
        }
    }

    #[test]
    fn a_server_in_slow_start_gets_back_a_growing_share_of_its_keys() {
        let mut p = weighted(&[1; 4]);
        p.slowstart_ms = 10_000;
        p.servers[2].live.outlier.mark_returned(1_000);
        let mut mg = Maglev::new(&p);
        let table = mg.table(false).to_vec();
        let entry = |k: u64| (k % u64::from(M)) as usize;
        // The keys whose entry is server 2's.
        let own: Vec<u64> = keys(40_000, 5)
            .into_iter()
            .filter(|&k| table[entry(k)] == 2)
            .collect();
        assert!(own.len() > 9_000);
        let at = |now_ms: u64, key: u64| PickCtx {
            now_ms,
            key,
            backup: false,
        };
        let mut back: HashMap<u64, bool> = HashMap::new();
        let mut prev = 0;
        for now in [1_000, 3_000, 6_000, 9_000, 11_000] {
            let ramp = p.ramp(2, now);
            let mut kept = 0u64;
            for &k in &own {
                let got = mg.pick(&p, &|_| true, &at(now, k)).unwrap();
                let is_back = got == 2;
                // Once back, a key stays back as the ramp grows.
                if back.get(&k) == Some(&true) {
                    assert!(is_back, "key {k} left again at {now} ms");
                }
                // Passed over, it walks on like any spilled key.
                if !is_back {
                    let mut i = entry(k);
                    while table[i] == 2 {
                        i = (i + 1) % table.len();
                    }
                    assert_eq!(got, table[i] as usize);
                }
                back.insert(k, is_back);
                kept += u64::from(is_back);
            }
            assert_fits(
                &[kept, own.len() as u64 - kept],
                &[ramp as f64, (1000 - ramp) as f64],
            );
            assert!(kept >= prev);
            prev = kept;
        }
        assert_eq!(prev, own.len() as u64);
        // Alone, it is taken whatever the key.
        for &k in &own[..100] {
            assert_eq!(mg.pick(&p, &|i| i == 2, &at(1_000, k)), Some(2));
        }
    }
}
