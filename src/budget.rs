//! The process's connection budget, derived from its open-file limit as
//! HAProxy derives `maxconn`, and shared by every shard.
//!
//! A proxied pair holds two fds (client and server) and may borrow a pipe
//! (two more) while splicing. Before the first pair, the process holds a few
//! fds of its own: stdio, each shard's ring, eventfd and spare fd, each
//! shard's listening sockets, and a reserve for logs and the control side. The plan
//! ([`plan`]) splits what `RLIMIT_NOFILE` leaves between pairs and pipes, so
//! that a shard at its budget stops accepting (the kernel's backlog holds
//! the rest) instead of failing `socket()` for a server and blaming the
//! server for a local shortage.
//!
//! The budget itself ([`ConnBudget`]) is one atomic counter: a shard takes a
//! unit before it opens a server connection and gives it back when the pair
//! is finished. `try_acquire` never grants past the limit, even when shards
//! race (an increment that overshoots is undone at once).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Fds kept free for everything that is not a pair, a pipe or a health
/// check (counted apart, `control_fds`): log files, the control side, name
/// lookups.
pub const RESERVED_FDS: u64 = 32;

/// How the open-file limit is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlan {
    /// `RLIMIT_NOFILE` (the soft limit, after raising it to the hard one).
    pub nofile: u64,
    /// Fds held before the first pair (stdio, rings, eventfds, listeners,
    /// the reserve).
    pub fixed: u64,
    /// Most pairs open at once, over all shards.
    pub maxconn: usize,
    /// Most pipes each shard keeps for splicing.
    pub pipes_per_shard: usize,
}

/// The open-file limit cannot hold what the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "runtime.maxconn = {maxconn} needs at least {need} open files (2 per connection \
         plus {fixed} for stdio, rings, listeners and a reserve), but RLIMIT_NOFILE is \
         {nofile}: raise the limit (ulimit -n, or LimitNOFILE= in the systemd unit) or \
         lower runtime.maxconn"
    )]
    MaxconnTooHigh {
        maxconn: usize,
        need: u64,
        fixed: u64,
        nofile: u64,
    },
    #[error(
        "RLIMIT_NOFILE is {nofile}, which leaves no room for a connection ({fixed} fds are \
         needed before the first): raise the limit (ulimit -n, or LimitNOFILE=)"
    )]
    NoRoom { nofile: u64, fixed: u64 },
}

/// Raises the soft open-file limit to the hard one and returns it.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

/// Splits `nofile` between pairs and pipes for `shards` shards with
/// `listeners` listeners each. With `maxconn` given, pairs come first and
/// pipes get what is left (up to `pipes_per_shard`); without it, pipes get
/// at most a quarter of the room and pairs the rest.
pub fn plan(
    nofile: u64,
    shards: usize,
    listeners: usize,
    pipes_per_shard: usize,
    maxconn: Option<usize>,
    control_fds: u64,
) -> Result<FdPlan, BudgetError> {
    let shards_u = shards.max(1) as u64;
    // Per shard: its ring, eventfd and spare fd, and a socket per listener
    // (plus the runtime's copy of each, kept for a binary upgrade).
    let fixed = 3 + shards_u * (3 + 2 * listeners as u64) + RESERVED_FDS + control_fds;
    let room = nofile.saturating_sub(fixed);
    let wanted_pipe_fds = 2 * shards_u * pipes_per_shard as u64;
    let (maxconn, pipe_fds) = match maxconn {
        Some(m) => {
            let pair_fds = 2 * m as u64;
            if pair_fds > room {
                return Err(BudgetError::MaxconnTooHigh {
                    maxconn: m,
                    need: fixed + pair_fds,
                    fixed,
                    nofile,
                });
            }
            (m, wanted_pipe_fds.min(room - pair_fds))
        }
        None => {
            let pipe_fds = wanted_pipe_fds.min(room / 4);
            let maxconn = ((room - pipe_fds) / 2) as usize;
            if maxconn == 0 {
                return Err(BudgetError::NoRoom { nofile, fixed });
            }
            (maxconn, pipe_fds)
        }
    };
    Ok(FdPlan {
        nofile,
        fixed,
        maxconn,
        pipes_per_shard: (pipe_fds / 2 / shards_u) as usize,
    })
}

/// Pairs open now against the most allowed, shared by every shard.
#[derive(Debug)]
pub struct ConnBudget {
    limit: usize,
    used: CachePadded<AtomicUsize>,
}

impl ConnBudget {
    pub fn new(limit: usize) -> ConnBudget {
        ConnBudget {
            limit,
            used: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Takes one unit; false when the budget is used up.
    pub fn try_acquire(&self) -> bool {
        if self.used.fetch_add(1, Ordering::AcqRel) < self.limit {
            true
        } else {
            self.used.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }

    /// Gives back a unit taken by [`ConnBudget::try_acquire`].
    pub fn release(&self) {
        let before = self.used.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "connection budget released more than taken");
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed).min(self.limit)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_limit_is_split_between_pairs_and_pipes() {
        let p = plan(256, 1, 1, 256, None, 0).unwrap();
        // stdio; ring, eventfd, spare fd, a listening socket and its copy.
        assert_eq!(p.fixed, 3 + 5 + RESERVED_FDS);
        let room = 256 - p.fixed;
        assert!(2 * p.maxconn as u64 + 2 * p.pipes_per_shard as u64 <= room);
        assert!(p.pipes_per_shard as u64 * 2 <= room / 4);
        assert!(p.maxconn >= 80, "{p:?}");
    }

    #[test]
    fn a_large_limit_keeps_every_configured_pipe() {
        let p = plan(20_000, 2, 2, 256, None, 0).unwrap();
        assert_eq!(p.pipes_per_shard, 256);
        assert_eq!(
            p.maxconn as u64,
            (20_000 - p.fixed - 2 * 2 * 256) / 2,
            "{p:?}"
        );
    }

    #[test]
    fn an_explicit_maxconn_comes_before_pipes_or_is_refused() {
        let p = plan(1000, 1, 1, 256, Some(400), 0).unwrap();
        assert_eq!(p.maxconn, 400);
        assert_eq!(p.pipes_per_shard as u64, (1000 - p.fixed - 800) / 2);
        let e = plan(1000, 1, 1, 256, Some(490), 0).unwrap_err();
        assert!(matches!(
            e,
            BudgetError::MaxconnTooHigh { maxconn: 490, .. }
        ));
        assert!(e.to_string().contains("runtime.maxconn = 490"), "{e}");
        assert!(matches!(
            plan(40, 4, 2, 0, None, 0),
            Err(BudgetError::NoRoom { .. })
        ));
    }

    #[test]
    fn the_budget_never_grants_past_its_limit_under_contention() {
        let b = std::sync::Arc::new(ConnBudget::new(1000));
        let granted: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let b = b.clone();
                    s.spawn(move || (0..5000).filter(|_| b.try_acquire()).count())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, 1000);
        assert_eq!(b.used(), 1000);
        for _ in 0..1000 {
            b.release();
        }
        assert_eq!(b.used(), 0);
        assert!(b.try_acquire());
    }
}
