//! A hierarchical hashed timing wheel: every timer of a shard (idle and
//! connect timeouts, paused accepts, health-check intervals, ...) on one
//! structure with O(1) arm, O(1) cancel, and a cost per tick that does not
//! grow with the number of pending timers.
//!
//! # Time
//!
//! Time is counted in ticks of a fixed resolution (`tick`; the shard uses
//! 1 ms) from the wheel's time zero. A deadline is rounded *up* to a whole
//! tick; the instant given to [`TimerWheel::advance`] is rounded *down*; a
//! timer is due when its tick is at or before the wheel's tick. So a timer
//! never fires before its deadline, and it fires on the first `advance` whose
//! instant is at or after its deadline rounded up to the tick: less than one
//! tick after its deadline, plus however late `advance` is called.
//!
//! # Layout
//!
//! Six levels of 64 slots. A slot of level L spans 64^L ticks, so level L
//! spans 64^(L+1) ticks: level 0 covers 64 ticks one tick per slot, level 1
//! 4,096 ticks 64 per slot, ..., level 5 2^36 ticks (2.2 years at 1 ms). Read
//! a tick count in base 64: its digit L (bits 6L..6L+6) names a slot of
//! level L.
//!
//! A timer due at tick `when`, armed while the wheel is at tick `now`, goes to
//! the level of the highest base-64 digit in which `when` and `now` differ,
//! in the slot named by `when`'s digit at that level. (This is Varghese and
//! Lauck's hierarchical wheel, cascading like Linux's wheel before 4.8; the
//! level is chosen by the highest differing digit, as tokio's wheel does,
//! rather than by distance, so that slots never wrap around.) Timers with
//! `when <= now` go to the `due` list; timers in a later 2^36-tick block than
//! `now` (beyond the top level) go to the `overflow` list.
//!
//! Every slot, `due` and `overflow` is the head of an intrusive doubly linked
//! list threaded by `u32` index through one slab of entries; unused entries
//! form a free list. An entry holds the payload, its exact tick, its links and
//! the list it is on, so cancelling unlinks it in O(1). Each level has a `u64`
//! bitmap of its non-empty slots. The slab grows to the largest number of
//! timers pending at once and is then reused: arm, cancel and advance do not
//! allocate in steady state (pushing to the caller's `expired` may).
//!
//! # Invariants
//!
//! 1. A timer on level L, slot s has `when` in the same 64^(L+1)-tick block as
//!    the wheel's `now`, and `s`, its digit L, is greater than `now`'s digit
//!    L. So an occupied slot always lies ahead of `now` within its level
//!    (slots never wrap around), and the lowest set bit of a level's bitmap
//!    is that level's next slot.
//! 2. Hence every timer on level L is due before every timer on level L+1
//!    (those lie in a later 64^(L+1)-tick block), and the earliest occupied
//!    slot is the lowest set bit of the lowest non-empty level. Overflow
//!    timers come after all of them.
//! 3. Timers on `due` have `when <= now`; every other timer has `when > now`.
//! 4. `overflow_min` is at most the least `when` on `overflow` (a cancel may
//!    leave it lower, which costs at most one pass over the overflow list
//!    that moves nothing down).
//!
//! # Advancing
//!
//! `advance` to tick `target` first expires the `due` list. Then, while the
//! earliest occupied slot starts at or before `target`: move `now` to the
//! slot's start and empty the slot. A timer whose tick is `now` expires; any
//! other is inserted again relative to the new `now`, where it differs from
//! `now` only in lower digits, so it lands on a lower level (a cascade). The
//! exact tick travels with the timer, so cascading never moves a deadline.
//! The overflow list is handled the same way, starting at the later of the
//! next 2^36-tick block and the block of `overflow_min`. Finally
//! `now = target`, which keeps invariant 1 since every slot left starts after
//! `target`. Empty slots are never visited: the next slot comes from the
//! bitmaps, so a jump of any length costs only the occupied slots it passes.
//!
//! # Costs
//!
//! - `arm`: O(1) (a division to convert the instant, one link, one bit set).
//! - `cancel`: O(1) (one unlink, one bit clear if the slot empties).
//! - `advance`: O(levels) to find each occupied slot passed, plus O(1) per
//!   timer expired or cascaded. A timer cascades at most once per level it
//!   descends: an idle timeout of 30-60 s at 1 ms ticks is armed on level 2
//!   (level 3 when it crosses a multiple of 262,144 ticks) and cascades two
//!   or three times. With nothing due, a tick costs one division and a scan
//!   of six bitmaps, whatever the number of pending timers.
//! - `next_wake`: O(levels) bitmap scans.
//!
//! # Order and limits
//!
//! Within one `advance`, payloads are appended in non-decreasing order of
//! their rounded deadline, except that timers armed already due (deadline at
//! or before the wheel's time when armed) come first, in no particular order
//! among themselves. Timers due on the same tick come out in no particular
//! order. Time is kept in `u64` nanoseconds from time zero: deadlines and
//! instants more than 2^63 ns (292 years) after it are clamped to that. A
//! [`TimerKey`] carries a 32-bit generation; a stale key could be taken for a
//! live one only after its entry was reused 2^32 times. At most
//! `u32::MAX - 1` timers can be pending at once.

use std::time::{Duration, Instant};

/// Bits of a tick count per level: 64 slots per level.
const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
const LEVELS: usize = 6;
/// Ticks covered by the levels: 2^36.
const HORIZON_BITS: u32 = BITS * LEVELS as u32;
const HORIZON_MASK: u64 = (1 << HORIZON_BITS) - 1;
/// Lists: 64 slots per level, then `DUE` and `OVERFLOW`.
const DUE: usize = SLOTS * LEVELS;
const OVERFLOW: usize = DUE + 1;
const LISTS: usize = OVERFLOW + 1;
/// The end of a list (and of the free list).
const NIL: u32 = u32::MAX;

/// Identifies one armed timer; stale keys (fired or cancelled, entry reused)
/// are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

struct Entry<T> {
    /// `None` while the entry is on the free list.
    value: Option<T>,
    /// The deadline in ticks from time zero, rounded up.
    when: u64,
    prev: u32,
    /// The next entry on its list, or on the free list.
    next: u32,
    /// Bumped each time the entry is freed, so older keys no longer match.
    generation: u32,
    /// The list the entry is on (a slot, `DUE` or `OVERFLOW`).
    list: u16,
}

/// A hierarchical timing wheel holding payloads of type `T`.
pub struct TimerWheel<T> {
    origin: Instant,
    tick_ns: u64,
    /// Deadlines and times beyond this many ticks are clamped to it.
    max_ticks: u64,
    /// The wheel's time in ticks from `origin`.
    now: u64,
    entries: Vec<Entry<T>>,
    free: u32,
    len: usize,
    heads: [u32; LISTS],
    /// Per level, a bit per non-empty slot.
    occupied: [u64; LEVELS],
    /// At most the least `when` on the overflow list (`u64::MAX` when empty).
    overflow_min: u64,
}

impl<T> TimerWheel<T> {
    /// `tick` is the resolution (the shard uses 1 ms); `now` is the wheel's
    /// time zero.
    ///
    /// # Panics
    ///
    /// If `tick` is zero or longer than `u64::MAX` nanoseconds.
    pub fn new(tick: Duration, now: Instant) -> Self {
        let tick_ns = u64::try_from(tick.as_nanos())
            .ok()
            .filter(|&t| t > 0)
            .expect("timer wheel tick must be between 1 ns and u64::MAX ns");
        // Keep tick arithmetic (and the start of the block after the last
        // tick) within u64, and every tick representable as an Instant.
        let mut max_ticks = (u64::MAX >> 1) / tick_ns;
        while now
            .checked_add(Duration::from_nanos(max_ticks * tick_ns))
            .is_none()
        {
            max_ticks /= 2;
        }
        TimerWheel {
            origin: now,
            tick_ns,
            max_ticks,
            now: 0,
            entries: Vec::new(),
            free: NIL,
            len: 0,
            heads: [NIL; LISTS],
            occupied: [0; LEVELS],
            overflow_min: u64::MAX,
        }
    }

    /// Arms a timer for `deadline` (rounded UP to the tick, so it never fires
    /// early; a deadline at or before the wheel's current time fires on the
    /// next `advance`). O(1).
    pub fn arm(&mut self, deadline: Instant, value: T) -> TimerKey {
        let when = self.ticks_ceil(deadline);
        let index = if self.free != NIL {
            let index = self.free;
            let e = &mut self.entries[index as usize];
            self.free = e.next;
            e.value = Some(value);
            e.when = when;
            index
        } else {
            let index = u32::try_from(self.entries.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("at most u32::MAX - 1 pending timers");
            self.entries.push(Entry {
                value: Some(value),
                when,
                prev: NIL,
                next: NIL,
                generation: 0,
                list: 0,
            });
            index
        };
        self.len += 1;
        self.insert(index, when);
        TimerKey {
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Disarms; returns the payload if the timer was still armed, None for a
    /// stale key. O(1).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        self.live(key)?;
        let list = self.entries[key.index as usize].list as usize;
        self.unlink(key.index);
        if list == OVERFLOW && self.heads[OVERFLOW] == NIL {
            self.overflow_min = u64::MAX;
        }
        Some(self.release(key.index))
    }

    /// Moves the wheel's time to `now` and appends to `expired` the payload of
    /// every timer whose deadline, rounded up to the tick, is <= now (never
    /// one whose deadline is later). An instant before the wheel's time
    /// leaves the time where it is (only timers armed already due fire).
    ///
    /// Order: see the module documentation (non-decreasing deadlines, timers
    /// armed already due first). Cost: O(levels) per occupied slot passed +
    /// O(1) per timer expired or cascaded; empty slots are skipped through
    /// the occupancy bitmaps, so a jump of any length is not walked tick by
    /// tick.
    pub fn advance(&mut self, now: Instant, expired: &mut Vec<T>) {
        let target = self.ticks_floor(now).max(self.now);
        let mut index = std::mem::replace(&mut self.heads[DUE], NIL);
        while index != NIL {
            let next = self.entries[index as usize].next;
            expired.push(self.release(index));
            index = next;
        }
        while let Some((list, start)) = self.next_list() {
            if start > target {
                break;
            }
            self.now = start;
            let mut index = std::mem::replace(&mut self.heads[list], NIL);
            if list == OVERFLOW {
                self.overflow_min = u64::MAX;
            } else {
                self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
            }
            while index != NIL {
                let e = &self.entries[index as usize];
                let (next, when) = (e.next, e.when);
                if when <= start {
                    expired.push(self.release(index));
                } else {
                    self.insert(index, when);
                }
                index = next;
            }
        }
        self.now = target;
    }

    /// The earliest instant at which `advance` can have work to do (the next
    /// occupied slot's time; for a far timer that may be a cascade point
    /// before its deadline; the wheel's current time if a timer was armed
    /// already due), or None when nothing is armed. O(levels) bitmap scans.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.heads[DUE] != NIL {
            return Some(self.instant_at(self.now));
        }
        self.next_list().map(|(_, start)| self.instant_at(start))
    }

    /// The number of armed timers.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The deadline a key was armed for, rounded up to the tick (the instant
    /// from which `advance` fires it), if still armed (for tests and
    /// debugging).
    pub fn deadline(&self, key: TimerKey) -> Option<Instant> {
        self.live(key).map(|e| self.instant_at(e.when))
    }

    fn live(&self, key: TimerKey) -> Option<&Entry<T>> {
        self.entries
            .get(key.index as usize)
            .filter(|e| e.generation == key.generation && e.value.is_some())
    }

    fn ticks_ceil(&self, t: Instant) -> u64 {
        let ns = t.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(ns)
            .map_or(self.max_ticks, |ns| ns.div_ceil(self.tick_ns))
            .min(self.max_ticks)
    }

    fn ticks_floor(&self, t: Instant) -> u64 {
        let ns = t.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(ns)
            .map_or(self.max_ticks, |ns| ns / self.tick_ns)
            .min(self.max_ticks)
    }

    fn instant_at(&self, ticks: u64) -> Instant {
        // ticks <= max_ticks: no overflow, and new() checked the addition.
        self.origin + Duration::from_nanos(ticks * self.tick_ns)
    }

    /// The list for a timer due at tick `when`, relative to the wheel's time.
    fn list_for(&self, when: u64) -> usize {
        if when <= self.now {
            return DUE;
        }
        let level = ((63 - (when ^ self.now).leading_zeros()) / BITS) as usize;
        if level >= LEVELS {
            return OVERFLOW;
        }
        level * SLOTS + ((when >> (level as u32 * BITS)) as usize & (SLOTS - 1))
    }

    /// The earliest non-empty slot (or the overflow list) and the tick at
    /// which it starts. The due list is not considered.
    fn next_list(&self) -> Option<(usize, u64)> {
        for (level, &bits) in self.occupied.iter().enumerate() {
            if bits != 0 {
                let slot = u64::from(bits.trailing_zeros());
                let shift = level as u32 * BITS;
                debug_assert!(slot > (self.now >> shift) & (SLOTS as u64 - 1));
                let block = self.now & !((1 << (shift + BITS)) - 1);
                return Some((level * SLOTS + slot as usize, block | (slot << shift)));
            }
        }
        if self.heads[OVERFLOW] != NIL {
            let next_block = (self.now | HORIZON_MASK) + 1;
            let min_block = self.overflow_min & !HORIZON_MASK;
            return Some((OVERFLOW, next_block.max(min_block)));
        }
        None
    }

    fn insert(&mut self, index: u32, when: u64) {
        let list = self.list_for(when);
        if list == OVERFLOW {
            self.overflow_min = self.overflow_min.min(when);
        }
        let head = self.heads[list];
        let e = &mut self.entries[index as usize];
        e.prev = NIL;
        e.next = head;
        e.list = list as u16;
        if head != NIL {
            self.entries[head as usize].prev = index;
        } else if list < DUE {
            self.occupied[list / SLOTS] |= 1 << (list % SLOTS);
        }
        self.heads[list] = index;
    }

    fn unlink(&mut self, index: u32) {
        let e = &self.entries[index as usize];
        let (prev, next, list) = (e.prev, e.next, e.list as usize);
        if prev != NIL {
            self.entries[prev as usize].next = next;
        } else {
            self.heads[list] = next;
            if next == NIL && list < DUE {
                self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
            }
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    /// Frees an entry already off its list; returns its payload.
    fn release(&mut self, index: u32) -> T {
        let e = &mut self.entries[index as usize];
        e.generation = e.generation.wrapping_add(1);
        e.next = self.free;
        self.free = index;
        self.len -= 1;
        e.value.take().expect("an armed timer has a payload")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fire<T>(w: &mut TimerWheel<T>, at: Instant) -> Vec<T> {
        let mut out = Vec::new();
        w.advance(at, &mut out);
        out
    }

    /// A seeded generator: the same timers every run.
    struct Rng(rand::rngs::StdRng);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(rand::SeedableRng::seed_from_u64(seed))
        }

        fn below(&mut self, n: u64) -> u64 {
            rand::Rng::random_range(&mut self.0, 0..n)
        }
    }

    #[test]
    fn empty_wheel() {
        let t0 = Instant::now();
        let mut w = TimerWheel::<u32>::new(MS, t0);
        assert!(w.is_empty());
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_wake(), None);
        assert!(fire(&mut w, t0 + ms(1_000_000)).is_empty());
        assert_eq!(w.next_wake(), None);
    }

    #[test]
    fn deadline_in_the_past_fires_on_next_advance() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(MS, t0);
        let now = t0 + ms(500);
        assert!(fire(&mut w, now).is_empty());
        let before_origin = t0.checked_sub(ms(10)).unwrap_or(t0);
        let k1 = w.arm(before_origin, 1);
        w.arm(now - ms(100), 2);
        w.arm(now, 3);
        assert_eq!(w.len(), 3);
        assert_eq!(w.deadline(k1), Some(t0));
        assert_eq!(w.next_wake(), Some(now));
        // No time has to pass; not even an earlier instant stops them.
        let mut got = fire(&mut w, now - ms(200));
        got.sort();
        assert_eq!(got, [1, 2, 3]);
        assert!(w.is_empty());
        assert_eq!(w.next_wake(), None);
        // The wheel's time did not go back: a timer at `now` is still due.
        w.arm(now, 4);
        assert_eq!(fire(&mut w, now), [4]);
    }

    #[test]
    fn deadlines_round_up_to_the_tick() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(MS, t0);
        let on_tick = w.arm(t0 + ms(5), "on");
        let after_tick = w.arm(t0 + ms(5) + Duration::from_nanos(1), "after");
        assert_eq!(w.deadline(on_tick), Some(t0 + ms(5)));
        assert_eq!(w.deadline(after_tick), Some(t0 + ms(6)));
        assert_eq!(w.next_wake(), Some(t0 + ms(5)));
        assert!(fire(&mut w, t0 + ms(5) - Duration::from_nanos(1)).is_empty());
        assert_eq!(fire(&mut w, t0 + ms(5)), ["on"]);
        // Its deadline has passed, but not its deadline rounded up.
        assert!(fire(&mut w, t0 + ms(5) + Duration::from_nanos(999_999)).is_empty());
        assert_eq!(fire(&mut w, t0 + ms(6)), ["after"]);
    }

    #[test]
    fn level_boundaries() {
        // Around each level's span, armed from time zero and from a time
        // that sits just below the boundary (where one tick crosses levels).
        for start in [0u64, 1, 63, 4095, 262_143, 100_000] {
            for b in [64u64, 4096, 262_144, 1 << 24, 1 << 30, 1 << 36] {
                let t0 = Instant::now();
                let mut w = TimerWheel::new(MS, t0);
                let mut t = t0 + ms(start);
                fire(&mut w, t);
                // One tick before, on and after the next multiple of b (the
                // first may be the wheel's time: armed already due).
                let next = (start / b + 1) * b;
                let at = |d: u64| t0 + ms(next + d - 1);
                for d in 0..3 {
                    w.arm(at(d), d);
                }
                let mut got = Vec::new();
                // Hop from wake to wake: each hop is a cascade or a firing.
                let mut hops = 0;
                while let Some(wake) = w.next_wake() {
                    assert!(wake >= t, "wake {wake:?} before {t:?}");
                    hops += 1;
                    assert!(
                        hops <= 3 * (LEVELS + 2),
                        "start {start} boundary {b}: no progress"
                    );
                    t = wake;
                    let out = fire(&mut w, t);
                    for &d in &out {
                        assert_eq!(t, at(d), "start {start} boundary {b} timer {d}");
                    }
                    got.extend(out);
                }
                assert_eq!(got, [0, 1, 2], "start {start} boundary {b}");
            }
        }
    }

    #[test]
    fn one_jump_over_every_level_fires_in_order() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(MS, t0);
        let offsets = [
            3u64,
            64,
            65,
            4_096,
            4_097,
            262_144,
            262_145,
            1 << 24,
            1 << 30,
            (1 << 36) - 1,
            1 << 36,
            (1 << 36) + 1,
            3 << 36,
            1 << 40,
        ];
        for (i, &o) in offsets.iter().enumerate().rev() {
            w.arm(t0 + ms(o), i);
        }
        // Just short of the last one.
        let got = fire(&mut w, t0 + ms((1 << 40) - 1));
        assert_eq!(got, (0..offsets.len() - 1).collect::<Vec<_>>());
        assert_eq!(w.len(), 1);
        assert_eq!(fire(&mut w, t0 + ms(1 << 40)), [offsets.len() - 1]);
    }

    #[test]
    fn huge_jumps_skip_empty_slots() {
        // At 1 ns ticks the levels cover 68.7 s, and a jump of a century
        // passes 3e18 ticks: walked tick by tick this test would never end.
        let t0 = Instant::now();
        let mut w = TimerWheel::new(Duration::from_nanos(1), t0);
        let year = Duration::from_secs(365 * 86_400);
        w.arm(t0 + year * 10, 2);
        w.arm(t0 + Duration::from_secs(1), 1);
        w.arm(t0 + year * 100, 3);
        assert_eq!(fire(&mut w, t0 + year * 5), [1]);
        assert!(w.next_wake().unwrap() <= t0 + year * 10);
        assert_eq!(fire(&mut w, t0 + year * 50), [2]);
        let k = w.arm(t0 + year * 60, 4);
        assert_eq!(w.deadline(k), Some(t0 + year * 60));
        assert_eq!(fire(&mut w, t0 + year * 200), [4, 3]);
        assert!(w.is_empty());
        // Beyond the representable range: clamped, fires at the far end.
        w.arm(t0 + year * 400, 5);
        assert_eq!(fire(&mut w, t0 + year * 500), [5]);
    }

    #[test]
    fn stale_keys_never_cancel_the_new_occupant() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(MS, t0);
        let fired = w.arm(t0 + ms(10), 1);
        assert_eq!(fire(&mut w, t0 + ms(10)), [1]);
        assert_eq!(w.cancel(fired), None);
        assert_eq!(w.deadline(fired), None);

        // The freed entry is reused by the next timer.
        let reused = w.arm(t0 + ms(50), 2);
        assert_eq!(reused.index, fired.index);
        assert_ne!(reused, fired);
        assert_eq!(w.cancel(fired), None);
        assert_eq!(w.len(), 1);
        assert_eq!(w.deadline(reused), Some(t0 + ms(50)));

        assert_eq!(w.cancel(reused), Some(2));
        assert_eq!(w.cancel(reused), None);
        assert!(w.is_empty());
        assert_eq!(w.next_wake(), None);

        let again = w.arm(t0 + ms(60), 3);
        assert_eq!(again.index, fired.index);
        assert_eq!(w.cancel(reused), None);
        assert_eq!(w.cancel(fired), None);
        assert_eq!(fire(&mut w, t0 + ms(60)), [3]);
        assert_eq!(w.cancel(again), None);
    }

    #[test]
    fn cancel_keeps_lists_and_bitmaps_consistent() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(MS, t0);
        // Head, middle and tail of one slot's list, then the whole slot.
        let keys: Vec<_> = (0..4).map(|i| w.arm(t0 + ms(7), i)).collect();
        let other = w.arm(t0 + ms(9), 9);
        assert_eq!(w.cancel(keys[3]), Some(3)); // head (inserted last)
        assert_eq!(w.cancel(keys[1]), Some(1)); // middle
        assert_eq!(w.cancel(keys[0]), Some(0)); // tail
        assert_eq!(w.next_wake(), Some(t0 + ms(7)));
        assert_eq!(w.cancel(keys[2]), Some(2));
        assert_eq!(w.next_wake(), Some(t0 + ms(9)));
        assert_eq!(w.cancel(other), Some(9));
        assert_eq!(w.next_wake(), None);
        // Overflow list and the armed-already-due list.
        let far = w.arm(t0 + ms(1 << 37), 10);
        let due = w.arm(t0, 11);
        assert_eq!(w.next_wake(), Some(t0));
        assert_eq!(w.cancel(due), Some(11));
        assert!(w.next_wake().unwrap() <= t0 + ms(1 << 37));
        assert_eq!(w.cancel(far), Some(10));
        assert_eq!(w.next_wake(), None);
        assert!(fire(&mut w, t0 + ms(1 << 38)).is_empty());
    }

    #[test]
    fn rearm_from_expired_payloads() {
        // Periodic timers: each payload re-arms itself from `expired`.
        let t0 = Instant::now();
        let mut w = TimerWheel::new(MS, t0);
        let periods = [1u64, 3, 64, 100, 4096, 5000];
        for (i, _) in periods.iter().enumerate() {
            w.arm(t0 + ms(periods[i]), i);
        }
        let mut counts = [0u64; 6];
        let mut expired = Vec::new();
        // Advanced every 7 ms: a 1 ms timer re-armed from its due time is
        // already due again and fires on the next advance at the same time.
        let end = 7 * 2_858;
        for t in (0..=end).step_by(7) {
            let now = t0 + ms(t);
            loop {
                w.advance(now, &mut expired);
                if expired.is_empty() {
                    break;
                }
                for i in expired.drain(..) {
                    counts[i] += 1;
                    // From the tick it came due, so the period holds exactly.
                    let due = counts[i] * periods[i];
                    assert!(due <= t && t < due + 7, "timer {i} due {due} fired at {t}");
                    w.arm(t0 + ms(due + periods[i]), i);
                }
            }
        }
        for (i, p) in periods.iter().enumerate() {
            assert_eq!(counts[i], end / p, "timer {i}");
        }
        assert_eq!(w.len(), periods.len());
    }

    /// Random arms, cancels (live and stale) and advances (tiny, to the
    /// next wake, huge) against a model that knows every timer's deadline.
    fn differential(tick: Duration, seed: u64, steps: usize) {
        let tick_ns = tick.as_nanos() as u64;
        let mut rng = Rng::new(seed);
        let t0 = Instant::now();
        let mut w = TimerWheel::new(tick, t0);
        // id -> (key, exact deadline offset from t0 in ns, tick, armed due)
        let mut model: BTreeMap<u64, (TimerKey, i128, u64, bool)> = BTreeMap::new();
        let mut dead: Vec<TimerKey> = Vec::new();
        let mut now_ns: u64 = 0;
        let mut cur: u64 = 0;
        let mut next_id = 0u64;
        let mut expired = Vec::new();
        let at = |ns: i128| -> Option<Instant> {
            if ns >= 0 {
                t0.checked_add(Duration::from_nanos(ns as u64))
            } else {
                t0.checked_sub(Duration::from_nanos((-ns) as u64))
            }
        };
        let horizon_ticks = 1u64 << 36;
        let limit_ns = 20 * 365 * 86_400 * 1_000_000_000u64;
        for step in 0..steps {
            // Alternate phases that fill the wheel and phases that drain it.
            let (arm, cancel, stale) = if (step / 2_000) % 2 == 1 {
                (85, 90, 92)
            } else {
                (50, 62, 65)
            };
            let r = rng.below(100);
            if r < arm || model.is_empty() {
                // Arm.
                let ticks = match rng.below(10) {
                    0 => -(rng.below(1000) as i128),
                    1 => 0,
                    2..=4 => rng.below(130) as i128,
                    5 | 6 => rng.below(300_000) as i128,
                    7 => {
                        // Just around a level boundary of the absolute time.
                        let span = 64u64.pow(1 + rng.below(5) as u32);
                        let b = (cur / span + 1) * span;
                        (b - cur) as i128 + rng.below(3) as i128 - 1
                    }
                    8 => rng.below(4 * horizon_ticks) as i128,
                    _ => rng.below(20_000) as i128,
                };
                let sub = rng.below(tick_ns) as i128 * (rng.below(2) as i128);
                let ns = now_ns as i128 + ticks * tick_ns as i128 + sub;
                let ns = ns.min(limit_ns as i128);
                let Some(deadline) = at(ns) else { continue };
                let when = if ns <= 0 {
                    0
                } else {
                    (ns as u64).div_ceil(tick_ns)
                };
                let key = w.arm(deadline, next_id);
                assert_eq!(
                    w.deadline(key),
                    Some(t0 + Duration::from_nanos(when * tick_ns))
                );
                model.insert(next_id, (key, ns, when, when <= cur));
                next_id += 1;
            } else if r < cancel {
                // Cancel a live timer.
                let id = *model
                    .keys()
                    .nth(rng.below(model.len() as u64) as usize)
                    .unwrap();
                let (key, ..) = model.remove(&id).unwrap();
                assert_eq!(w.cancel(key), Some(id), "step {step}");
                dead.push(key);
            } else if r < stale {
                // Cancel a stale key: nothing happens, whoever holds the entry now.
                if !dead.is_empty() {
                    let key = dead[rng.below(dead.len() as u64) as usize];
                    assert_eq!(w.cancel(key), None, "step {step}");
                    assert_eq!(w.deadline(key), None);
                }
            } else {
                // Advance.
                let wake_ns = w
                    .next_wake()
                    .map(|t| t.saturating_duration_since(t0).as_nanos() as u64);
                let to = match rng.below(10) {
                    0 => now_ns,
                    1 => now_ns + rng.below(tick_ns),
                    2 => now_ns + tick_ns,
                    3 | 4 => now_ns + rng.below(20 * tick_ns),
                    5 => wake_ns.unwrap_or(now_ns),
                    6 => wake_ns.map_or(now_ns, |t| t.saturating_sub(1)),
                    7 => now_ns + rng.below(2_000) * tick_ns,
                    8 if rng.below(50) == 0 => now_ns + rng.below(8 * horizon_ticks) * tick_ns,
                    _ => now_ns + rng.below(20_000) * tick_ns,
                }
                .min(limit_ns);
                // Before the wheel's time: allowed, and time stays put.
                let to = if rng.below(20) == 0 {
                    now_ns.saturating_sub(rng.below(10 * tick_ns))
                } else {
                    to.max(now_ns)
                };
                let next = w.next_wake();
                expired.clear();
                w.advance(t0 + Duration::from_nanos(to), &mut expired);
                now_ns = now_ns.max(to);
                cur = cur.max(to / tick_ns);
                // Exactly the due ones, and not one early.
                let want: BTreeSet<u64> = model
                    .iter()
                    .filter(|(_, v)| v.2 <= cur)
                    .map(|(&id, _)| id)
                    .collect();
                let got: BTreeSet<u64> = expired.iter().copied().collect();
                assert_eq!(got.len(), expired.len(), "step {step}: duplicates");
                assert_eq!(got, want, "step {step}: advance to {to} ns");
                if !got.is_empty() {
                    // Nothing fires before the announced wake.
                    assert!(
                        next.unwrap() <= t0 + Duration::from_nanos(now_ns),
                        "step {step}"
                    );
                }
                // Order: armed-already-due first, then non-decreasing ticks.
                let mut last = 0;
                let mut in_due_prefix = true;
                for id in &expired {
                    let (key, ns, when, armed_due) = model.remove(id).unwrap();
                    assert!(ns <= now_ns as i128, "step {step}: timer {id} early");
                    if armed_due {
                        assert!(in_due_prefix, "step {step}: order");
                    } else {
                        in_due_prefix = false;
                        assert!(when >= last, "step {step}: order");
                        last = when;
                    }
                    dead.push(key);
                }
                if dead.len() > 4096 {
                    dead.drain(..2048);
                }
            }
            assert_eq!(w.len(), model.len(), "step {step}");
            assert_eq!(w.is_empty(), model.is_empty());
            match (w.next_wake(), model.values().map(|v| v.2).min()) {
                (None, None) => {}
                (Some(wake), Some(min)) => {
                    // Never later than the earliest deadline.
                    assert!(
                        wake <= t0 + Duration::from_nanos(min.max(cur) * tick_ns),
                        "step {step}"
                    );
                }
                (wake, min) => panic!("step {step}: next_wake {wake:?}, earliest {min:?}"),
            }
        }
    }

    #[test]
    fn differential_1ms() {
        for seed in 0..4 {
            differential(MS, seed, 20_000);
        }
    }

    #[test]
    fn differential_1ns_ticks_exercise_overflow() {
        // The levels cover only 68.7 s: huge offsets go through overflow.
        for seed in 10..14 {
            differential(Duration::from_nanos(1), seed, 20_000);
        }
    }

    #[test]
    fn differential_odd_tick() {
        differential(Duration::from_micros(7), 99, 20_000);
    }
}
