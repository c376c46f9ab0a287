//! A server's health as its checks see it: `rise` successes in a row bring
//! a down server up, `fall` failures in a row take an up server down. Pure
//! state, no I/O; the checker (`checker.rs`) feeds it results.

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    up: bool,
    /// Results in a row that disagree with `up`.
    streak: u32,
}

impl Default for RiseFall {
    /// A server starts up (as in HAProxy): `fall` failures take it down.
    fn default() -> Self {
        RiseFall {
            up: true,
            streak: 0,
        }
    }
}

impl RiseFall {
    /// A state carried over from an earlier checker (a reload): up or
    /// down, and the results in a row that disagree with it so far.
    pub fn resume(up: bool, streak: u32) -> RiseFall {
        RiseFall { up, streak }
    }

    /// Results in a row that disagree with the state so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one check's result; the transition it completes, if any.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Transition> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(if ok { Transition::Up } else { Transition::Down })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_failures_in_a_row_take_it_down_and_rise_successes_bring_it_up() {
        let mut h = RiseFall::default();
        assert!(h.is_up());
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        // A success in between starts the count again.
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), Some(Transition::Down));
        assert!(!h.is_up());
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), Some(Transition::Up));
        assert!(h.is_up());
    }
}
