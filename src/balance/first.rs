//! First available: the lowest-index eligible server whose weight is above
//! zero.
//!
//! Eligibility already excludes a server at its `maxconn`, so servers fill
//! in declared order: the second one takes connections only once the first
//! is full (or down, ejected, already tried), and so on. Nothing is kept
//! between picks; weights matter only in that a server of weight 0 (or
//! scaled to 0) is never picked. Without `maxconn` on the first server,
//! everything goes to it, which is the point: the others can be powered
//! down until needed.

use super::{Balancer, PickCtx};
use crate::pool::Pool;

pub struct First;

impl Balancer for First {
    fn pick(
        &mut self,
        pool: &Pool,
        eligible: &dyn Fn(usize) -> bool,
        ctx: &PickCtx,
    ) -> Option<usize> {
        (0..pool.servers.len()).find(|&i| pool.weight(i, ctx.now_ms) > 0 && eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::{assert_fits, servers, CTX};
    use crate::config::BalanceKind;
    use crate::pool::Server;

    /// Servers of weight 1 with these `maxconn`.
    fn limited(maxconn: &[u32]) -> Pool {
        let list = servers(&vec![1; maxconn.len()])
            .into_iter()
            .zip(maxconn)
            .map(|(s, &m)| Server::new(&s.name, s.addr, s.weight, false, m))
            .collect();
        Pool::with_servers(BalanceKind::First, list)
    }

    /// Picks as `choose` would offer them: only servers with room; each pick
    /// opens a connection.
    fn open(p: &Pool, first: &mut First) -> Option<usize> {
        let i = first.pick(p, &|i| p.servers[i].has_room(), &CTX)?;
        assert!(p.servers[i].try_reserve());
        Some(i)
    }

    #[test]
    fn fills_in_declared_order() {
        let p = limited(&[3, 2, 4]);
        let mut first = First;
        let picks: Vec<_> = (0..9).map(|_| open(&p, &mut first).unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 0, 1, 1, 2, 2, 2, 2]);
        assert_eq!(open(&p, &mut first), None);
        // A slot freed on the first server is taken again before any other.
        p.servers[1].release();
        p.servers[0].release();
        assert_eq!(open(&p, &mut first), Some(0));
        assert_eq!(open(&p, &mut first), Some(1));
    }

    #[test]
    fn skips_ineligible_and_weightless_servers() {
        let p = Pool::with_servers(BalanceKind::First, servers(&[0, 1, 1]));
        let mut first = First;
        assert_eq!(first.pick(&p, &|_| true, &CTX), Some(1));
        assert_eq!(first.pick(&p, &|i| i != 1, &CTX), Some(2));
        assert_eq!(first.pick(&p, &|_| false, &CTX), None);
    }

    #[test]
    fn connections_follow_maxconn_shares() {
        // Every pick holds its connection: 10,000 picks fill the four
        // servers exactly, each with its maxconn.
        let maxconn = [1000, 2000, 3000, 4000];
        let p = limited(&maxconn);
        let mut first = First;
        let mut counts = [0u64; 4];
        for _ in 0..10_000 {
            counts[open(&p, &mut first).unwrap()] += 1;
        }
        let shares: Vec<f64> = maxconn.iter().map(|&m| f64::from(m)).collect();
        assert_fits(&counts, &shares);
        assert_eq!(counts, [1000, 2000, 3000, 4000]);
    }
}
