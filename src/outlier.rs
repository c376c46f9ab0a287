//! Passive outlier ejection and slow start for one server, shared by every
//! shard through atomics (no lock).
//!
//! States: `Serving` → (N connect failures in a row) → `Ejected` until a
//! deadline → the first pick after it claims the one `Trial` connection →
//! success returns the server to `Serving` (and starts its slow start);
//! failure ejects it again for twice as long, up to the maximum. A server
//! that stays in service for the maximum ejection time starts again from
//! the first ejection time. The caller decides whether ejecting is allowed
//! (never the last usable server of a pool); when it is not, the failures
//! are still counted and the server stays in service.
//!
//! Times are `crate::clock` milliseconds.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::config::OutlierConfig;

const SERVING: u8 = 0;
const EJECTED: u8 = 1;
const TRIAL: u8 = 2;

/// Whether a server may be picked, as far as ejection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Serving,
    /// Its ejection is over: the next pick may claim the trial connection.
    TrialDue,
    /// Ejected, or its trial connection is in flight.
    Out,
}

/// What a connect result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// Ejected for this many milliseconds (the `nth` ejection in a row).
    Ejected {
        for_ms: u64,
        nth: u32,
    },
    /// Back in service after a successful trial.
    Returned,
    /// Would have been ejected, but it is the last usable server.
    Kept,
}

#[derive(Debug, Default)]
pub struct Outlier {
    state: AtomicU8,
    failures: AtomicU32,
    until_ms: AtomicU64,
    /// Ejections in a row (sets the next ejection's length).
    level: AtomicU32,
    /// When the server last came back into service (slow start; 0: never).
    returned_ms: AtomicU64,
    /// Ejections over the process's life.
    ejections: AtomicU64,
}

impl Outlier {
    pub fn standing(&self, now_ms: u64) -> Standing {
        match self.state.load(Ordering::Acquire) {
            SERVING => Standing::Serving,
            EJECTED if self.until_ms.load(Ordering::Acquire) <= now_ms => Standing::TrialDue,
            _ => Standing::Out,
        }
    }

    /// Takes the one trial connection after an ejection; false when another
    /// pick (on any shard) took it first, or the server is serving.
    pub fn claim_trial(&self, now_ms: u64) -> bool {
        self.standing(now_ms) == Standing::TrialDue
            && self
                .state
                .compare_exchange(EJECTED, TRIAL, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Gives back a trial claimed by a pick that could not use it.
    pub fn unclaim_trial(&self) {
        let _ = self
            .state
            .compare_exchange(TRIAL, EJECTED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether the server is serving (not ejected, no trial pending).
    pub fn serving(&self) -> bool {
        self.state.load(Ordering::Acquire) == SERVING
    }

    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub fn returned_ms(&self) -> u64 {
        self.returned_ms.load(Ordering::Relaxed)
    }

    /// Marks the server as back in service now (slow start begins).
    pub fn mark_returned(&self, now_ms: u64) {
        self.returned_ms.store(now_ms, Ordering::Relaxed);
    }

    /// A connect succeeded; `trial` when it was the trial connection this
    /// pick claimed (only that one decides a trial).
    pub fn on_success(&self, now_ms: u64, trial: bool) -> Change {
        self.failures.store(0, Ordering::Relaxed);
        if trial
            && self
                .state
                .compare_exchange(TRIAL, SERVING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.mark_returned(now_ms);
            return Change::Returned;
        }
        Change::None
    }

    /// A connect failed; `trial` as for [`Outlier::on_success`].
    /// `may_eject` is false when the server is the last usable one of its
    /// pool. A result of a connect made before the server was ejected (or
    /// while another pick holds its trial) is counted and changes nothing.
    pub fn on_failure(
        &self,
        now_ms: u64,
        cfg: &OutlierConfig,
        may_eject: bool,
        trial: bool,
    ) -> Change {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let from = if trial {
            TRIAL
        } else {
            if self.state.load(Ordering::Acquire) != SERVING || failures < cfg.consecutive_failures
            {
                return Change::None;
            }
            SERVING
        };
        if !may_eject {
            if trial {
                let _ = self.state.compare_exchange(
                    TRIAL,
                    SERVING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            return Change::Kept;
        }
        let max = crate::clock::ms(cfg.max_ejection);
        // Long enough in service since it last came back: start over.
        let back = self.returned_ms.load(Ordering::Relaxed);
        let level = if !trial && back > 0 && now_ms.saturating_sub(back) >= max {
            0
        } else {
            self.level.load(Ordering::Relaxed)
        };
        let nth = level + 1;
        let base = crate::clock::ms(cfg.ejection);
        let for_ms = base.saturating_mul(1 << (nth - 1).min(32)).min(max);
        // The deadline is in place before the state says ejected, so no
        // pick sees an ejection with a stale deadline (and takes its trial
        // at once).
        self.until_ms.store(now_ms + for_ms, Ordering::Release);
        if self
            .state
            .compare_exchange(from, EJECTED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another shard ejected it meanwhile (its deadline is as good).
            return Change::None;
        }
        self.level.store(nth, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        Change::Ejected { for_ms, nth }
    }
}

/// The share of its weight a server returning at `returned_ms` carries at
/// `now_ms`, in thousandths: from 100 (10%) rising linearly to 1000 over
/// `slowstart_ms`.
pub fn ramp_permille(returned_ms: u64, now_ms: u64, slowstart_ms: u64) -> u64 {
    if returned_ms == 0 || slowstart_ms == 0 {
        return 1000;
    }
    let elapsed = now_ms.saturating_sub(returned_ms);
    if elapsed >= slowstart_ms {
        return 1000;
    }
    100 + 900 * elapsed / slowstart_ms
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(12),
        }
    }

    fn fail_n(o: &Outlier, n: u32, now: u64) -> Change {
        let mut last = Change::None;
        for _ in 0..n {
            last = o.on_failure(now, &cfg(), true, false);
        }
        last
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let o = Outlier::default();
        assert_eq!(fail_n(&o, 2, 1000), Change::None);
        assert_eq!(o.on_success(1000, false), Change::None);
        assert_eq!(fail_n(&o, 2, 1000), Change::None);
        assert_eq!(o.standing(1000), Standing::Serving);
        assert_eq!(
            o.on_failure(1000, &cfg(), true, false),
            Change::Ejected {
                for_ms: 5000,
                nth: 1
            }
        );
        assert_eq!(o.standing(5999), Standing::Out);
        assert_eq!(o.standing(6000), Standing::TrialDue);
    }

    #[test]
    fn one_trial_decides_and_repeats_double_up_to_the_maximum() {
        let o = Outlier::default();
        fail_n(&o, 3, 0);
        assert!(!o.claim_trial(4999));
        assert!(o.claim_trial(5000));
        assert!(!o.claim_trial(5000), "only one trial");
        assert_eq!(o.standing(5000), Standing::Out);
        // The trial fails: twice as long.
        // A connect made before the ejection fails late: it changes nothing.
        assert_eq!(o.on_failure(5000, &cfg(), true, false), Change::None);
        assert_eq!(o.on_success(5000, false), Change::None);
        assert_eq!(o.standing(5000), Standing::Out);
        assert_eq!(
            o.on_failure(5000, &cfg(), true, true),
            Change::Ejected {
                for_ms: 10_000,
                nth: 2
            }
        );
        assert!(o.claim_trial(15_000));
        assert_eq!(
            o.on_failure(15_000, &cfg(), true, true),
            Change::Ejected {
                for_ms: 12_000,
                nth: 3
            }
        );
        assert!(o.claim_trial(27_000));
        assert_eq!(o.on_success(27_000, true), Change::Returned);
        assert_eq!(o.standing(27_000), Standing::Serving);
        assert_eq!(o.returned_ms(), 27_000);
        assert_eq!(o.ejections(), 3);
        // Soon after: the doubling goes on.
        assert!(matches!(
            fail_n(&o, 3, 28_000),
            Change::Ejected { nth: 4, .. }
        ));
    }

    #[test]
    fn a_long_healthy_spell_starts_over() {
        let o = Outlier::default();
        fail_n(&o, 3, 0);
        assert!(o.claim_trial(5000));
        o.on_success(5000, true);
        assert_eq!(
            fail_n(&o, 3, 5000 + 12_000),
            Change::Ejected {
                for_ms: 5000,
                nth: 1
            }
        );
    }

    #[test]
    fn the_last_server_is_kept() {
        let o = Outlier::default();
        for _ in 0..2 {
            o.on_failure(0, &cfg(), false, false);
        }
        assert_eq!(o.on_failure(0, &cfg(), false, false), Change::Kept);
        assert_eq!(o.standing(0), Standing::Serving);
        // A failed trial of a server that became the last one: back in service.
        let o = Outlier::default();
        fail_n(&o, 3, 0);
        assert!(o.claim_trial(5000));
        assert_eq!(o.on_failure(5000, &cfg(), false, true), Change::Kept);
        assert_eq!(o.standing(5000), Standing::Serving);
    }

    #[test]
    fn an_unused_trial_is_given_back() {
        let o = Outlier::default();
        fail_n(&o, 3, 0);
        assert!(o.claim_trial(5000));
        assert_eq!(o.standing(5000), Standing::Out);
        o.unclaim_trial();
        assert_eq!(o.standing(5000), Standing::TrialDue);
        assert!(o.claim_trial(5001));
    }

    #[test]
    fn slow_start_ramps_linearly_from_a_tenth() {
        assert_eq!(ramp_permille(0, 10, 30_000), 1000);
        assert_eq!(ramp_permille(1000, 1000, 30_000), 100);
        assert_eq!(ramp_permille(1000, 16_000, 30_000), 550);
        assert_eq!(ramp_permille(1000, 31_000, 30_000), 1000);
        assert_eq!(ramp_permille(1000, 5000, 0), 1000);
    }
}
