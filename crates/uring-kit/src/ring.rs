//! One thread's io_uring: pushing submissions and draining completions.
//!
//! The one rule here: a completion is never lost and never handled out of
//! order. When the submission queue is full, queued entries are submitted to
//! make room; when the kernel refuses a submit because the completion queue
//! is full (`EBUSY`), the completions waiting there are moved aside
//! (*deferred*) and handed out first by the next [`Ring::reap`], before any
//! newer one. Nothing spins without making progress, and every other error
//! goes back to the caller: what to do when a ring cannot go on is the
//! caller's policy, not a panic here.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{squeue, IoUring};

use crate::setup::{build, RingError, RingFlags};

/// One completion: the `user_data` it was submitted with, its result and
/// its flags (`IORING_CQE_F_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
    pub flags: u32,
}

/// How many times in a row a submit may be refused with `EBUSY` after the
/// completion queue was emptied before it counts as a failure.
const MAX_BUSY_RETRIES: u32 = 1000;

pub struct Ring {
    ring: IoUring,
    /// Completions moved out of a full completion queue to let a submit
    /// through: older than any still in the queue.
    deferred: VecDeque<Completion>,
}

impl Ring {
    /// A ring with `entries` submission slots (see [`build`]) for the
    /// calling thread.
    pub fn new(entries: u32) -> Result<(Ring, RingFlags), RingError> {
        let (ring, flags) = build(entries)?;
        Ok((
            Ring {
                ring,
                deferred: VecDeque::new(),
            },
            flags,
        ))
    }

    /// The underlying ring, for registrations and synchronous cancels.
    pub fn io_uring(&self) -> &IoUring {
        &self.ring
    }

    /// Queues one entry, submitting queued ones first when the submission
    /// queue is full.
    ///
    /// # Safety
    /// Every buffer, address, timespec or fd the entry refers to must stay
    /// valid and in place until its completion has been reaped.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.push_all(std::slice::from_ref(entry)) }
    }

    /// Queues entries together: a linked chain is never split across two
    /// submissions.
    ///
    /// # Safety
    /// As [`Ring::push`], for every entry.
    pub unsafe fn push_all(&mut self, entries: &[squeue::Entry]) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from the caller's contract.
            if unsafe { self.ring.submission().push_multiple(entries) }.is_ok() {
                return Ok(());
            }
            if self.ring.submission().is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "more linked entries than the submission queue holds",
                ));
            }
            self.submit()?;
        }
    }

    /// Hands every queued entry to the kernel without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.enter(0, None).map(drop)
    }

    /// Submits what is queued and waits until `want` completions are ready
    /// or `timeout` has passed (`None`: no time limit). Returns false when
    /// the wait ended on the timeout. Never blocks while deferred
    /// completions wait to be reaped.
    pub fn submit_and_wait(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<bool> {
        let want = if self.deferred.is_empty() { want } else { 0 };
        self.enter(want, timeout)
    }

    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<bool> {
        let mut busy = 0;
        loop {
            let r = match timeout {
                None => self.ring.submit_and_wait(want),
                Some(t) => {
                    let ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                    let args = SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(want, &args)
                }
            };
            match r {
                Ok(_) => return Ok(true),
                Err(e) => match e.raw_os_error() {
                    Some(libc::ETIME) => return Ok(false),
                    // A signal: nothing was lost, go on (a wait returns early).
                    Some(libc::EINTR) if want == 0 => continue,
                    Some(libc::EINTR) => return Ok(true),
                    Some(libc::EBUSY) if busy < MAX_BUSY_RETRIES => {
                        busy += 1;
                        self.defer_completions();
                        if want > 0 {
                            // What was deferred is what the caller waits for.
                            return Ok(true);
                        }
                    }
                    _ => return Err(e),
                },
            }
        }
    }

    /// Moves the completion queue's entries aside, to be handed out first.
    fn defer_completions(&mut self) {
        for cqe in self.ring.completion() {
            self.deferred.push_back(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
    }

    /// Appends every completion available now to `out`, oldest first.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        out.extend(self.deferred.drain(..));
        out.extend(self.ring.completion().map(|cqe| Completion {
            user_data: cqe.user_data(),
            result: cqe.result(),
            flags: cqe.flags(),
        }));
    }

    /// Completions waiting to be reaped (deferred or in the queue).
    pub fn pending(&mut self) -> usize {
        self.deferred.len() + self.ring.completion().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    fn nop(ud: u64) -> squeue::Entry {
        opcode::Nop::new().build().user_data(ud)
    }

    /// Far more submissions than the completion queue holds, never reaped
    /// in between: every completion still arrives, once, in order.
    #[test]
    fn a_full_completion_queue_loses_nothing() {
        let (mut ring, _) = Ring::new(8).unwrap();
        let total = 8 * 4 * 10;
        for ud in 0..total {
            // SAFETY: a nop refers to no memory.
            unsafe { ring.push(&nop(ud)).unwrap() };
        }
        ring.submit().unwrap();
        let mut seen = Vec::new();
        while seen.len() < total as usize {
            ring.submit_and_wait(1, Some(Duration::from_secs(5)))
                .unwrap();
            let before = seen.len();
            ring.reap(&mut seen);
            assert!(
                seen.len() > before,
                "no progress after {before} completions"
            );
        }
        let uds: Vec<u64> = seen.iter().map(|c| c.user_data).collect();
        assert_eq!(uds, (0..total).collect::<Vec<_>>());
    }

    #[test]
    fn a_wait_ends_on_its_timeout() {
        let (mut ring, _) = Ring::new(8).unwrap();
        let t = std::time::Instant::now();
        let woke = ring
            .submit_and_wait(1, Some(Duration::from_millis(30)))
            .unwrap();
        assert!(!woke);
        assert!(t.elapsed() >= Duration::from_millis(25));
    }

    #[test]
    fn a_chain_longer_than_the_queue_is_an_error() {
        let (mut ring, _) = Ring::new(4).unwrap();
        let chain: Vec<_> = (0..5).map(nop).collect();
        // SAFETY: nops refer to no memory.
        let e = unsafe { ring.push_all(&chain) }.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
