//! One direction of a pair (client → server or server → client) as an
//! explicit state machine, without I/O: [`Dir::on`] takes an [`Event`] (a
//! completion, or the answer to an action that the shard performed at once)
//! and returns the [`Action`]s the shard must perform, in order. The shard
//! (`forward.rs`) does the I/O and feeds results back. Nothing here touches
//! a kernel, so every path has a unit test below.
//!
//! Three ways to move bytes:
//! - **copy**: a multishot receive into provided buffers (the kernel picks a
//!   buffer when data arrives), each buffer sent on in order, one send in
//!   flight at a time. A direction holds at most [`MAX_HELD`] buffers: the
//!   receive is armed with a byte limit that stops it at the cap, and
//!   cancelled if small reads reach the cap first; it is re-armed when the
//!   sink has taken a buffer. When the ring is empty (`ENOBUFS`) the
//!   direction waits for a buffer to come back.
//! - **splice** (polled): readiness polled through the ring, then
//!   non-blocking `splice(2)` socket → pipe → socket, done by the shard. The
//!   pipe is lent only while bytes sit in it.
//! - **ring splice**: `IORING_OP_SPLICE` both ways; the pipe is held for the
//!   direction's life.
//!
//! In `auto`, a direction starts in copy and moves to polled splice after
//! [`AUTO_SPLICE_AFTER`] receives in a row fill a whole buffer; with no pipe
//! to be had it stays in copy for good.
//!
//! Invariants:
//! - Bytes leave in the order they arrived: a copy direction sends only the
//!   front of its outbox, and moves to splice only once the outbox is empty
//!   and no receive is in flight.
//! - In copy mode a send is in flight exactly when the outbox is not empty.
//! - FIN is forwarded ([`Action::ForwardFin`]) only once every byte before
//!   it has been written.
//! - A resource this direction holds (buffers in its outbox, a pipe) stays
//!   in its state until given back by an action or drained by
//!   [`Dir::release`] when the pair is finished.

use std::os::fd::RawFd;

use smallvec::SmallVec;

use super::buffers::BufId;
use super::pipes::Pipe;
use super::token::Op;
use crate::config::ForwardMode;

/// Most provided buffers one copy direction holds (one being sent, the
/// rest waiting behind it), so that stalled sinks cannot drain the ring.
/// Three, not two: while one message's send is in flight there must be
/// room for two more, or the receive could only be
/// armed for one completion at a time, a re-arm per message (measured: 18%
/// more CPU per keep-alive request than a multishot that lives on).
pub const MAX_HELD: usize = 3;

/// Full-buffer receives in a row after which `auto` moves a direction to
/// splice.
pub const AUTO_SPLICE_AFTER: u8 = 4;

/// Pipe-fulls moved in one go by polled splice before the shard goes back
/// to its other work (fairness between pairs).
pub const PUMP_ROUNDS: u8 = 8;

/// Received bytes waiting in a provided buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk {
    pub buf: BufId,
    /// Bytes of `len` already written to the sink.
    pub sent: u32,
    pub len: u32,
}

/// Why a copy direction's receive is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The direction holds [`MAX_HELD`] buffers: wait for the sink.
    Full,
    /// The buffer ring was empty: wait for a buffer to come back.
    Starved,
    /// `auto`: the direction carries bulk data; move to splice once the
    /// outbox is empty.
    ToSplice,
    /// The source sent FIN: forward it once the outbox is empty.
    Eof,
}

/// A copy direction's receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// A multishot receive is in flight.
    Armed,
    /// We cancelled it for this reason; its last completion is still due.
    Cancelling(Stop),
    /// Nothing in flight.
    Stopped(Stop),
}

#[derive(Debug)]
pub struct Copy {
    pub recv: Recv,
    /// Received and not yet fully sent, in order. A send is in flight for
    /// the front chunk exactly when this is not empty.
    pub outbox: SmallVec<[Chunk; MAX_HELD]>,
    /// Consecutive receives that filled a whole buffer.
    pub full_reads: u8,
    /// `auto` found no pipe once: stay in copy.
    pub no_splice: bool,
}

/// Polled splice.
#[derive(Debug, PartialEq, Eq)]
pub enum Splice {
    /// A readability poll on the source is in flight; no pipe held.
    AwaitReadable,
    /// Asked the pool for a pipe (answered at once by [`Event::PipeLent`]).
    Lending,
    /// Moving bytes now; `bytes` sit in the pipe. `drained`: the last read
    /// from the source took less than a pipe-full.
    Pumping {
        pipe: Pipe,
        bytes: usize,
        rounds: u8,
        drained: bool,
    },
    /// `bytes` in the pipe wait for the sink: a writability poll is in flight.
    AwaitWritable { pipe: Pipe, bytes: usize },
}

/// `IORING_OP_SPLICE` both ways.
#[derive(Debug, PartialEq, Eq)]
pub enum RingSplice {
    /// Asked the pool for a pipe.
    Lending,
    /// A splice source → pipe is in flight.
    Filling { pipe: Pipe },
    /// A splice pipe → sink is in flight; `bytes` are in the pipe.
    Draining { pipe: Pipe, bytes: usize },
}

/// One direction of a pair.
#[derive(Debug)]
pub enum Dir {
    /// The pair is still connecting.
    Pending,
    Copy(Copy),
    Splice(Splice),
    RingSplice(RingSplice),
    /// The source's FIN was passed on; nothing more moves this way.
    Done,
}

/// What a non-blocking `splice(2)` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spliced {
    Moved(usize),
    Eof,
    WouldBlock,
    Failed(i32),
}

/// Something that happened to a direction.
#[derive(Debug)]
pub enum Event {
    /// The pair is connected: start moving bytes.
    Start,
    /// A receive completion with data; `more`: the multishot goes on.
    Received {
        buf: BufId,
        len: u32,
        more: bool,
    },
    /// The multishot receive ended without data: 0 (FIN) or `-errno`.
    RecvEnded(i32),
    /// A send completed: bytes written, or `-errno`.
    Sent(i32),
    /// A buffer came back to the ring while this direction was starved.
    BufferFree,
    /// A poll completed: the source is readable, the sink writable, or
    /// `-errno`.
    Readable(i32),
    Writable(i32),
    /// The pool's answer to [`Action::LendPipe`].
    PipeLent(Option<Pipe>),
    /// What [`Action::SpliceIn`] / [`Action::SpliceOut`] did.
    SplicedIn(Spliced),
    SplicedOut(Spliced),
    /// A ring splice completed: bytes moved (0 from the source: FIN) or `-errno`.
    RingIn(i32),
    RingOut(i32),
}

/// Something the shard must do for a direction.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Arm a multishot receive on the source that ends after `limit` bytes.
    ArmRecv {
        limit: u32,
    },
    /// Cancel the multishot receive.
    CancelRecv,
    /// Send bytes `from..len` of buffer `buf` to the sink.
    Send {
        buf: u16,
        from: u32,
        len: u32,
    },
    /// The buffer goes back to the ring.
    GiveBack(BufId),
    /// The ring is empty: wake this direction with [`Event::BufferFree`].
    AwaitBuffer,
    /// Poll the source for readability / the sink for writability.
    PollIn,
    PollOut,
    /// Ask the pool for a pipe; answer with [`Event::PipeLent`].
    LendPipe,
    /// Give the pipe back (`bytes` still in it: the pool closes it if any).
    ReturnPipe {
        pipe: Pipe,
        bytes: usize,
    },
    /// `splice(2)` up to `len` bytes source → pipe / pipe → sink now;
    /// answer with [`Event::SplicedIn`] / [`Event::SplicedOut`].
    SpliceIn {
        pipe_write: RawFd,
        len: usize,
    },
    SpliceOut {
        pipe_read: RawFd,
        len: usize,
    },
    /// Submit `IORING_OP_SPLICE` source → pipe / pipe → sink.
    RingSpliceIn {
        pipe_write: RawFd,
        len: usize,
    },
    RingSpliceOut {
        pipe_read: RawFd,
        len: usize,
    },
    /// Every byte before the source's FIN is out: pass the FIN on.
    ForwardFin,
    /// The direction failed: end the pair with a reset, blaming its
    /// source or sink (or ringlb, for an event a state did not expect).
    Abort(Fault),
}

/// Which end of a direction an [`Action::Abort`] blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reading the source failed (or it reset).
    Source,
    /// Writing to the sink failed (or it reset).
    Sink,
    /// An event the direction's state did not expect.
    Internal,
}

pub type Actions = SmallVec<[Action; 4]>;

/// What a direction needs to know of its shard.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub mode: ForwardMode,
    pub buffer_size: u32,
    /// Buffers in the ring right now.
    pub buffers_free: usize,
    pub pipe_size: usize,
}

impl Copy {
    fn new() -> Copy {
        Copy {
            recv: Recv::Stopped(Stop::Full),
            outbox: SmallVec::new(),
            full_reads: 0,
            no_splice: false,
        }
    }

    /// Arms the receive with a byte limit that ends it by the time the
    /// direction holds [`MAX_HELD`] buffers: with room for one more buffer,
    /// a limit of one byte ends it after its first completion; with room
    /// for `n`, `(n - 1) * size + 1` bytes end it after `n` completions when
    /// the reads fill their buffers (bulk data, where bursts are long). Reads
    /// that come in small pieces may go one or two past the cap before the
    /// cancel that the cap triggers lands.
    fn arm(&mut self, ctx: &Ctx, out: &mut Actions) {
        let room = MAX_HELD.saturating_sub(self.outbox.len()).max(1) as u32;
        self.recv = Recv::Armed;
        out.push(Action::ArmRecv {
            limit: recv_limit(room, ctx.buffer_size),
        });
    }

    fn send_front(&self, out: &mut Actions) {
        if let Some(c) = self.outbox.first() {
            out.push(Action::Send {
                buf: c.buf.index(),
                from: c.sent,
                len: c.len,
            });
        }
    }

    /// Whether the receive should stop (or stay stopped), and why.
    fn stop_reason(&self) -> Option<Stop> {
        if self.full_reads >= AUTO_SPLICE_AFTER && !self.no_splice {
            Some(Stop::ToSplice)
        } else if self.outbox.len() >= MAX_HELD {
            Some(Stop::Full)
        } else {
            None
        }
    }
}

/// The byte limit for a receive with room for `room` more buffers.
pub fn recv_limit(room: u32, buffer_size: u32) -> u32 {
    if room <= 1 {
        1
    } else {
        (room - 1) * buffer_size + 1
    }
}

impl Dir {
    /// The state a direction starts in once its pair is connected.
    pub fn new() -> Dir {
        Dir::Pending
    }

    /// Applies `event`; returns what the shard must do, in order.
    pub fn on(&mut self, event: Event, ctx: &Ctx) -> Actions {
        let mut out = Actions::new();
        match event {
            Event::Start => self.start(ctx, &mut out),
            Event::PipeLent(pipe) => self.pipe_lent(pipe, ctx, &mut out),
            other => match self {
                Dir::Copy(c) => {
                    if let Some(next) = copy_on(c, other, ctx, &mut out) {
                        *self = next;
                        if let Dir::Splice(Splice::Lending) = self {
                            out.push(Action::LendPipe);
                        }
                    }
                }
                Dir::Splice(_) => self.splice_on(other, ctx, &mut out),
                Dir::RingSplice(_) => self.ring_on(other, ctx, &mut out),
                Dir::Pending | Dir::Done => {
                    debug_assert!(false, "{other:?} for a direction that is {self:?}");
                }
            },
        }
        out
    }

    fn start(&mut self, ctx: &Ctx, out: &mut Actions) {
        debug_assert!(matches!(self, Dir::Pending));
        match ctx.mode {
            ForwardMode::Copy | ForwardMode::Auto => {
                let mut c = Copy::new();
                c.arm(ctx, out);
                *self = Dir::Copy(c);
            }
            ForwardMode::Splice => {
                *self = Dir::Splice(Splice::Lending);
                out.push(Action::LendPipe);
            }
            ForwardMode::SpliceRing => {
                *self = Dir::RingSplice(RingSplice::Lending);
                out.push(Action::LendPipe);
            }
        }
    }

    fn pipe_lent(&mut self, pipe: Option<Pipe>, ctx: &Ctx, out: &mut Actions) {
        match (std::mem::replace(self, Dir::Pending), pipe) {
            (Dir::Splice(Splice::Lending), Some(pipe)) => {
                out.push(Action::SpliceIn {
                    pipe_write: pipe.write,
                    len: ctx.pipe_size,
                });
                *self = Dir::Splice(Splice::Pumping {
                    pipe,
                    bytes: 0,
                    rounds: 0,
                    drained: false,
                });
            }
            (Dir::RingSplice(RingSplice::Lending), Some(pipe)) => {
                out.push(Action::RingSpliceIn {
                    pipe_write: pipe.write,
                    len: ctx.pipe_size,
                });
                *self = Dir::RingSplice(RingSplice::Filling { pipe });
            }
            // No pipe to be had: copy instead, for good.
            (Dir::Splice(Splice::Lending) | Dir::RingSplice(RingSplice::Lending), None) => {
                let mut c = Copy::new();
                c.no_splice = true;
                c.arm(ctx, out);
                *self = Dir::Copy(c);
            }
            (state, pipe) => {
                debug_assert!(false, "a pipe lent to a direction that is {state:?}");
                *self = state;
                if let Some(pipe) = pipe {
                    out.push(Action::ReturnPipe { pipe, bytes: 0 });
                }
            }
        }
    }

    fn splice_on(&mut self, event: Event, ctx: &Ctx, out: &mut Actions) {
        let Dir::Splice(state) = std::mem::replace(self, Dir::Pending) else {
            unreachable!()
        };
        *self = match (state, event) {
            (Splice::AwaitReadable, Event::Readable(r)) if r >= 0 => {
                out.push(Action::LendPipe);
                Dir::Splice(Splice::Lending)
            }
            (Splice::AwaitWritable { pipe, bytes }, Event::Writable(r)) if r >= 0 => {
                out.push(Action::SpliceOut {
                    pipe_read: pipe.read,
                    len: bytes,
                });
                Dir::Splice(Splice::Pumping {
                    pipe,
                    bytes,
                    rounds: 0,
                    drained: false,
                })
            }
            (s, Event::Readable(_)) => {
                out.push(Action::Abort(Fault::Source));
                Dir::Splice(s)
            }
            (s, Event::Writable(_)) => {
                out.push(Action::Abort(Fault::Sink));
                Dir::Splice(s)
            }
            (
                Splice::Pumping {
                    pipe,
                    bytes: 0,
                    rounds,
                    ..
                },
                Event::SplicedIn(r),
            ) => match r {
                Spliced::Moved(n) => {
                    out.push(Action::SpliceOut {
                        pipe_read: pipe.read,
                        len: n,
                    });
                    Dir::Splice(Splice::Pumping {
                        pipe,
                        bytes: n,
                        rounds,
                        drained: n < ctx.pipe_size,
                    })
                }
                Spliced::Eof => {
                    out.push(Action::ReturnPipe { pipe, bytes: 0 });
                    out.push(Action::ForwardFin);
                    Dir::Done
                }
                Spliced::WouldBlock => {
                    out.push(Action::ReturnPipe { pipe, bytes: 0 });
                    out.push(Action::PollIn);
                    Dir::Splice(Splice::AwaitReadable)
                }
                Spliced::Failed(_) => {
                    out.push(Action::ReturnPipe { pipe, bytes: 0 });
                    out.push(Action::Abort(Fault::Source));
                    Dir::Splice(Splice::AwaitReadable)
                }
            },
            (
                Splice::Pumping {
                    pipe,
                    bytes,
                    rounds,
                    drained,
                },
                Event::SplicedOut(r),
            ) => match r {
                Spliced::Moved(n) if n < bytes => {
                    out.push(Action::PollOut);
                    Dir::Splice(Splice::AwaitWritable {
                        pipe,
                        bytes: bytes - n,
                    })
                }
                Spliced::Moved(_) if drained || rounds + 1 >= PUMP_ROUNDS => {
                    out.push(Action::ReturnPipe { pipe, bytes: 0 });
                    out.push(Action::PollIn);
                    Dir::Splice(Splice::AwaitReadable)
                }
                Spliced::Moved(_) => {
                    out.push(Action::SpliceIn {
                        pipe_write: pipe.write,
                        len: ctx.pipe_size,
                    });
                    Dir::Splice(Splice::Pumping {
                        pipe,
                        bytes: 0,
                        rounds: rounds + 1,
                        drained: false,
                    })
                }
                Spliced::WouldBlock | Spliced::Eof => {
                    out.push(Action::PollOut);
                    Dir::Splice(Splice::AwaitWritable { pipe, bytes })
                }
                Spliced::Failed(_) => {
                    out.push(Action::Abort(Fault::Sink));
                    Dir::Splice(Splice::AwaitWritable { pipe, bytes })
                }
            },
            (s, e) => {
                debug_assert!(false, "{e:?} for a splice direction that is {s:?}");
                out.push(Action::Abort(Fault::Internal));
                Dir::Splice(s)
            }
        };
    }

    fn ring_on(&mut self, event: Event, ctx: &Ctx, out: &mut Actions) {
        let Dir::RingSplice(state) = std::mem::replace(self, Dir::Pending) else {
            unreachable!()
        };
        *self = match (state, event) {
            (RingSplice::Filling { pipe }, Event::RingIn(n)) if n > 0 => {
                out.push(Action::RingSpliceOut {
                    pipe_read: pipe.read,
                    len: n as usize,
                });
                Dir::RingSplice(RingSplice::Draining {
                    pipe,
                    bytes: n as usize,
                })
            }
            (RingSplice::Filling { pipe }, Event::RingIn(0)) => {
                out.push(Action::ReturnPipe { pipe, bytes: 0 });
                out.push(Action::ForwardFin);
                Dir::Done
            }
            (RingSplice::Draining { pipe, bytes }, Event::RingOut(n))
                if n > 0 && (n as usize) < bytes =>
            {
                let bytes = bytes - n as usize;
                out.push(Action::RingSpliceOut {
                    pipe_read: pipe.read,
                    len: bytes,
                });
                Dir::RingSplice(RingSplice::Draining { pipe, bytes })
            }
            (RingSplice::Draining { pipe, .. }, Event::RingOut(n)) if n > 0 => {
                out.push(Action::RingSpliceIn {
                    pipe_write: pipe.write,
                    len: ctx.pipe_size,
                });
                Dir::RingSplice(RingSplice::Filling { pipe })
            }
            (s, event) => {
                // An error, or an event this state does not expect.
                out.push(Action::Abort(match event {
                    Event::RingIn(_) => Fault::Source,
                    Event::RingOut(_) => Fault::Sink,
                    _ => Fault::Internal,
                }));
                Dir::RingSplice(s)
            }
        };
    }

    /// Whether this direction is reading its source now (a receive, a
    /// readability poll or a ring splice into its pipe is in flight): then
    /// the source could make progress by sending.
    pub fn reading(&self) -> bool {
        match self {
            Dir::Copy(c) => c.recv == Recv::Armed,
            Dir::Splice(s) => matches!(s, Splice::AwaitReadable | Splice::Lending),
            Dir::RingSplice(s) => matches!(s, RingSplice::Filling { .. } | RingSplice::Lending),
            Dir::Pending | Dir::Done => false,
        }
    }

    /// The operations this direction may have in flight now (each at most
    /// once): what closing its pair cancels, by `user_data`.
    pub fn in_flight(&self) -> SmallVec<[Op; 2]> {
        let mut ops = SmallVec::new();
        match self {
            Dir::Copy(c) => {
                // A receive being cancelled already ends on its own.
                if c.recv == Recv::Armed {
                    ops.push(Op::Recv);
                }
                if !c.outbox.is_empty() {
                    ops.push(Op::Send);
                }
            }
            Dir::Splice(Splice::AwaitReadable) => ops.push(Op::PollIn),
            Dir::Splice(Splice::AwaitWritable { .. }) => ops.push(Op::PollOut),
            Dir::RingSplice(RingSplice::Filling { .. }) => ops.push(Op::SpliceIn),
            Dir::RingSplice(RingSplice::Draining { .. }) => ops.push(Op::SpliceOut),
            _ => {}
        }
        ops
    }

    /// Whether this direction waits for the shard's buffer ring.
    pub fn starved(&self) -> bool {
        matches!(
            self,
            Dir::Copy(Copy {
                recv: Recv::Stopped(Stop::Starved),
                ..
            })
        )
    }

    /// Bytes this direction took from its source and has not delivered.
    pub fn undelivered(&self) -> usize {
        match self {
            Dir::Copy(c) => c.outbox.iter().map(|c| (c.len - c.sent) as usize).sum(),
            Dir::Splice(Splice::Pumping { bytes, .. } | Splice::AwaitWritable { bytes, .. }) => {
                *bytes
            }
            Dir::RingSplice(RingSplice::Draining { bytes, .. }) => *bytes,
            _ => 0,
        }
    }

    /// While the pair is closing: a send completed (`result` bytes or
    /// `-errno`). Keeps the outbox's count of delivered bytes exact, so a
    /// close that delivered everything stays a clean FIN.
    pub fn sent_while_closing(&mut self, result: i32) {
        if let (Dir::Copy(c), Ok(n)) = (self, u32::try_from(result)) {
            if let Some(front) = c.outbox.first_mut() {
                front.sent = (front.sent + n).min(front.len);
                if front.sent == front.len {
                    // Keep the chunk: its buffer goes back in `release`.
                    front.len = 0;
                    front.sent = 0;
                }
            }
        }
    }

    /// While the pair is closing: a ring splice completed. Keeps the count
    /// of bytes in the pipe exact.
    pub fn ring_spliced_while_closing(&mut self, into_pipe: bool, result: i32) {
        let Ok(n) = usize::try_from(result) else {
            return;
        };
        *self = match std::mem::replace(self, Dir::Pending) {
            Dir::RingSplice(RingSplice::Filling { pipe }) if into_pipe && n > 0 => {
                Dir::RingSplice(RingSplice::Draining { pipe, bytes: n })
            }
            Dir::RingSplice(RingSplice::Draining { pipe, bytes }) if !into_pipe => {
                Dir::RingSplice(RingSplice::Draining {
                    pipe,
                    bytes: bytes.saturating_sub(n),
                })
            }
            other => other,
        };
    }

    /// Takes every resource the direction still holds, once nothing is in
    /// flight for it any more: its buffers and its pipe (with the bytes left
    /// in it).
    pub fn release(&mut self) -> (SmallVec<[BufId; MAX_HELD]>, Option<(Pipe, usize)>) {
        match std::mem::replace(self, Dir::Done) {
            Dir::Copy(c) => (c.outbox.into_iter().map(|c| c.buf).collect(), None),
            Dir::Splice(Splice::Pumping { pipe, bytes, .. })
            | Dir::Splice(Splice::AwaitWritable { pipe, bytes })
            | Dir::RingSplice(RingSplice::Draining { pipe, bytes }) => {
                (SmallVec::new(), Some((pipe, bytes)))
            }
            Dir::RingSplice(RingSplice::Filling { pipe }) => (SmallVec::new(), Some((pipe, 0))),
            _ => (SmallVec::new(), None),
        }
    }
}

impl Default for Dir {
    fn default() -> Self {
        Dir::new()
    }
}

/// A copy direction's transitions. Returns the direction's next state when
/// it leaves copy (FIN forwarded, or on to splice).
fn copy_on(c: &mut Copy, event: Event, ctx: &Ctx, out: &mut Actions) -> Option<Dir> {
    match event {
        Event::Received { buf, len, more } => {
            let full = len == ctx.buffer_size;
            c.full_reads = if full {
                c.full_reads.saturating_add(1)
            } else {
                0
            };
            if ctx.mode != ForwardMode::Auto {
                c.full_reads = 0;
            }
            c.outbox.push(Chunk { buf, sent: 0, len });
            if c.outbox.len() == 1 {
                c.send_front(out);
            }
            match (c.recv, more) {
                (Recv::Armed, true) => {
                    if let Some(why) = c.stop_reason() {
                        c.recv = Recv::Cancelling(why);
                        out.push(Action::CancelRecv);
                    }
                }
                (Recv::Cancelling(why), true) => {
                    // Splicing wins over waiting for room.
                    if c.stop_reason() == Some(Stop::ToSplice) {
                        c.recv = Recv::Cancelling(Stop::ToSplice);
                    } else {
                        c.recv = Recv::Cancelling(why);
                    }
                }
                // The multishot ended with this completion (its byte limit).
                (Recv::Armed | Recv::Cancelling(_), false) => {
                    c.recv = Recv::Stopped(c.stop_reason().unwrap_or(Stop::Full));
                }
                (Recv::Stopped(_), _) => debug_assert!(false, "data from a stopped receive"),
            }
            settle(c, ctx, out)
        }
        Event::RecvEnded(result) => {
            let why = match c.recv {
                Recv::Cancelling(why) => why,
                _ => Stop::Full,
            };
            c.recv = match result {
                0 => Recv::Stopped(Stop::Eof),
                r if r == -libc::ECANCELED => Recv::Stopped(c.stop_reason().unwrap_or(why)),
                r if r == -libc::ENOBUFS => {
                    if ctx.buffers_free == 0 {
                        out.push(Action::AwaitBuffer);
                        Recv::Stopped(Stop::Starved)
                    } else {
                        // Buffers came back in the same batch: go on.
                        Recv::Stopped(Stop::Full)
                    }
                }
                _ => {
                    out.push(Action::Abort(Fault::Source));
                    return None;
                }
            };
            settle(c, ctx, out)
        }
        Event::Sent(result) => {
            let Some(front) = c.outbox.first_mut() else {
                debug_assert!(false, "a send completed with an empty outbox");
                out.push(Action::Abort(Fault::Internal));
                return None;
            };
            let Ok(n) = u32::try_from(result) else {
                out.push(Action::Abort(Fault::Sink));
                return None;
            };
            if n == 0 {
                out.push(Action::Abort(Fault::Sink));
                return None;
            }
            front.sent += n;
            if front.sent < front.len {
                c.send_front(out);
                return None;
            }
            let done = c.outbox.remove(0);
            out.push(Action::GiveBack(done.buf));
            c.send_front(out);
            settle(c, ctx, out)
        }
        Event::BufferFree => {
            if c.recv == Recv::Stopped(Stop::Starved) {
                c.recv = Recv::Stopped(Stop::Full);
                settle(c, ctx, out)
            } else {
                None
            }
        }
        e => {
            debug_assert!(false, "{e:?} for a copy direction");
            out.push(Action::Abort(Fault::Internal));
            None
        }
    }
}

/// Once a copy direction's receive has stopped: forward FIN, re-arm, or
/// move to splice, whichever its state allows now.
fn settle(c: &mut Copy, ctx: &Ctx, out: &mut Actions) -> Option<Dir> {
    let Recv::Stopped(why) = c.recv else {
        return None;
    };
    match why {
        Stop::Eof if c.outbox.is_empty() => {
            out.push(Action::ForwardFin);
            Some(Dir::Done)
        }
        Stop::ToSplice if c.outbox.is_empty() => Some(Dir::Splice(Splice::Lending)),
        Stop::Full if c.outbox.len() < MAX_HELD => {
            c.arm(ctx, out);
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u32 = 4096;

    fn ctx(mode: ForwardMode) -> Ctx {
        Ctx {
            mode,
            buffer_size: SIZE,
            buffers_free: 10,
            pipe_size: 65536,
        }
    }

    fn started(mode: ForwardMode) -> Dir {
        let mut d = Dir::new();
        let a = d.on(Event::Start, &ctx(mode));
        assert_eq!(a.as_slice(), [arm(MAX_HELD)]);
        d
    }

    fn arm(room: usize) -> Action {
        Action::ArmRecv {
            limit: recv_limit(room as u32, SIZE),
        }
    }

    fn recv(d: &mut Dir, bid: u16, len: u32, more: bool, mode: ForwardMode) -> Actions {
        d.on(
            Event::Received {
                buf: BufId::for_test(bid),
                len,
                more,
            },
            &ctx(mode),
        )
    }

    fn send(bid: u16, from: u32, len: u32) -> Action {
        Action::Send {
            buf: bid,
            from,
            len,
        }
    }

    fn pipe() -> Pipe {
        Pipe { read: 7, write: 8 }
    }

    /// An empty pipe goes back, then the FIN goes on.
    fn return_pipe_and_fin() -> [Action; 2] {
        [
            Action::ReturnPipe {
                pipe: pipe(),
                bytes: 0,
            },
            Action::ForwardFin,
        ]
    }

    #[test]
    fn copy_sends_in_order_one_at_a_time() {
        let m = ForwardMode::Copy;
        let mut d = started(m);
        assert_eq!(recv(&mut d, 1, 10, true, m).as_slice(), [send(1, 0, 10)]);
        // Later chunks wait behind the send in flight; the one that fills
        // the cap cancels the receive.
        assert!(recv(&mut d, 2, 20, true, m).is_empty());
        assert_eq!(
            recv(&mut d, 3, 30, true, m).as_slice(),
            [Action::CancelRecv]
        );
        assert!(!d.reading());
        // A short send: the rest of the same buffer goes next.
        assert_eq!(d.on(Event::Sent(4), &ctx(m)).as_slice(), [send(1, 4, 10)]);
        // The cancel lands.
        assert!(d.on(Event::RecvEnded(-libc::ECANCELED), &ctx(m)).is_empty());
        // Buffer 1 done: back to the ring, buffer 2 sent, receive re-armed
        // for the one buffer of room left.
        assert_eq!(
            d.on(Event::Sent(6), &ctx(m)).as_slice(),
            [Action::GiveBack(BufId::for_test(1)), send(2, 0, 20), arm(1)]
        );
        assert!(d.reading());
        // Then 2 and 3 go out in order.
        assert_eq!(
            d.on(Event::Sent(20), &ctx(m)).as_slice(),
            [Action::GiveBack(BufId::for_test(2)), send(3, 0, 30)]
        );
    }

    /// Request and reply: while one message is being sent there is room
    /// for two, so the multishot receive is never armed for a single
    /// completion and lives on from message to message.
    #[test]
    fn messages_keep_one_multishot_receive() {
        let m = ForwardMode::Copy;
        let mut d = started(m);
        for bid in 0..100 {
            assert_eq!(
                recv(&mut d, bid, 40, true, m).as_slice(),
                [send(bid, 0, 40)]
            );
            assert_eq!(
                d.on(Event::Sent(40), &ctx(m)).as_slice(),
                [Action::GiveBack(BufId::for_test(bid))]
            );
        }
        // The receive ends on its byte limit while a send is in flight:
        // it is re-armed at once, for more than one completion.
        let a = recv(&mut d, 100, 40, false, m);
        assert_eq!(a.as_slice(), [send(100, 0, 40), arm(2)]);
        assert!(recv_limit(2, SIZE) > 1);
    }

    #[test]
    fn the_byte_limit_ends_the_receive_at_the_cap() {
        let m = ForwardMode::Copy;
        let mut d = started(m);
        recv(&mut d, 1, SIZE, true, m);
        recv(&mut d, 2, SIZE, true, m);
        // The kernel ends the multishot on the limit: no cancel needed.
        assert!(recv(&mut d, 3, SIZE, false, m).is_empty());
        assert!(matches!(&d, Dir::Copy(c) if c.recv == Recv::Stopped(Stop::Full)));
        // Room again after a send: armed for exactly one more buffer.
        let a = d.on(Event::Sent(SIZE as i32), &ctx(m));
        assert_eq!(
            a.as_slice(),
            [
                Action::GiveBack(BufId::for_test(1)),
                send(2, 0, SIZE),
                arm(1)
            ]
        );
        assert_eq!(recv_limit(1, SIZE), 1);
    }

    #[test]
    fn no_more_than_the_cap_is_asked_for_even_after_an_overshoot() {
        let m = ForwardMode::Copy;
        let mut d = started(m);
        recv(&mut d, 1, 10, true, m);
        recv(&mut d, 2, 10, true, m);
        recv(&mut d, 3, 10, true, m); // cancel asked
                                      // A completion already posted before the cancel landed.
        assert!(recv(&mut d, 4, 10, true, m).is_empty());
        assert!(d.on(Event::RecvEnded(-libc::ECANCELED), &ctx(m)).is_empty());
        // Two sends later the outbox is under the cap again.
        let a = d.on(Event::Sent(10), &ctx(m));
        assert_eq!(
            a.as_slice(),
            [Action::GiveBack(BufId::for_test(1)), send(2, 0, 10)]
        );
        let a = d.on(Event::Sent(10), &ctx(m));
        assert_eq!(
            a.as_slice(),
            [Action::GiveBack(BufId::for_test(2)), send(3, 0, 10), arm(1)]
        );
    }

    #[test]
    fn fin_waits_for_every_byte_before_it() {
        let m = ForwardMode::Copy;
        let mut d = started(m);
        recv(&mut d, 1, 10, true, m);
        // FIN arrives while the send is in flight: nothing yet.
        assert!(d.on(Event::RecvEnded(0), &ctx(m)).is_empty());
        assert_eq!(d.undelivered(), 10);
        let a = d.on(Event::Sent(10), &ctx(m));
        assert_eq!(
            a.as_slice(),
            [Action::GiveBack(BufId::for_test(1)), Action::ForwardFin]
        );
        assert!(matches!(d, Dir::Done));
    }

    #[test]
    fn fin_on_an_idle_direction_goes_at_once() {
        let m = ForwardMode::Copy;
        let mut d = started(m);
        assert_eq!(
            d.on(Event::RecvEnded(0), &ctx(m)).as_slice(),
            [Action::ForwardFin]
        );
    }

    #[test]
    fn an_empty_ring_waits_for_a_buffer_a_refilled_one_does_not() {
        let m = ForwardMode::Copy;
        let mut d = started(m);
        let mut empty = ctx(m);
        empty.buffers_free = 0;
        assert_eq!(
            d.on(Event::RecvEnded(-libc::ENOBUFS), &empty).as_slice(),
            [Action::AwaitBuffer]
        );
        assert!(d.starved() && !d.reading());
        assert_eq!(d.on(Event::BufferFree, &ctx(m)).as_slice(), [arm(MAX_HELD)]);
        // Buffers came back in the same batch: re-arm at once.
        assert_eq!(
            d.on(Event::RecvEnded(-libc::ENOBUFS), &ctx(m)).as_slice(),
            [arm(MAX_HELD)]
        );
    }

    #[test]
    fn a_receive_or_send_error_aborts() {
        let m = ForwardMode::Copy;
        let mut d = started(m);
        assert_eq!(
            d.on(Event::RecvEnded(-libc::ECONNRESET), &ctx(m))
                .as_slice(),
            [Action::Abort(Fault::Source)]
        );
        let mut d = started(m);
        recv(&mut d, 1, 10, true, m);
        assert_eq!(
            d.on(Event::Sent(-libc::EPIPE), &ctx(m)).as_slice(),
            [Action::Abort(Fault::Sink)]
        );
        // The buffer stays with the direction until the pair is finished.
        let (bufs, pipe) = d.release();
        assert_eq!(bufs.as_slice(), [BufId::for_test(1)]);
        assert!(pipe.is_none());
    }

    /// The reordering the old code allowed: with bulk data queued in auto
    /// mode, a completed send must send the next queued buffer, never start
    /// splicing fresh bytes first.
    #[test]
    fn auto_moves_to_splice_only_once_the_outbox_is_empty() {
        let m = ForwardMode::Auto;
        let mut d = started(m);
        for bid in 0..AUTO_SPLICE_AFTER as u16 - 1 {
            assert_eq!(
                recv(&mut d, bid, SIZE, true, m).as_slice(),
                [send(bid, 0, SIZE)]
            );
            let a = d.on(Event::Sent(SIZE as i32), &ctx(m));
            assert_eq!(a.as_slice(), [Action::GiveBack(BufId::for_test(bid))]);
        }
        // The fourth full read asks to move to splice, with one buffer
        // being sent and one queued behind it.
        let a = recv(&mut d, 10, SIZE, true, m);
        assert_eq!(a.as_slice(), [send(10, 0, SIZE), Action::CancelRecv]);
        assert!(recv(&mut d, 11, SIZE, true, m).is_empty());
        assert!(d.on(Event::RecvEnded(-libc::ECANCELED), &ctx(m)).is_empty());
        // Sending buffer 10 completes: buffer 11 goes next, no splice yet.
        let a = d.on(Event::Sent(SIZE as i32), &ctx(m));
        assert_eq!(
            a.as_slice(),
            [Action::GiveBack(BufId::for_test(10)), send(11, 0, SIZE)]
        );
        assert!(matches!(d, Dir::Copy(_)));
        // Only now, with nothing left to send, does it ask for a pipe.
        let a = d.on(Event::Sent(SIZE as i32), &ctx(m));
        assert_eq!(
            a.as_slice(),
            [Action::GiveBack(BufId::for_test(11)), Action::LendPipe]
        );
        assert!(matches!(d, Dir::Splice(Splice::Lending)));
        let a = d.on(Event::PipeLent(Some(pipe())), &ctx(m));
        assert_eq!(
            a.as_slice(),
            [Action::SpliceIn {
                pipe_write: 8,
                len: 65536
            }]
        );
    }

    #[test]
    fn auto_without_a_pipe_stays_in_copy() {
        let m = ForwardMode::Auto;
        let mut d = Dir::Splice(Splice::Lending);
        let a = d.on(Event::PipeLent(None), &ctx(m));
        assert_eq!(a.as_slice(), [arm(MAX_HELD)]);
        for bid in 0..2 * AUTO_SPLICE_AFTER as u16 {
            let a = recv(&mut d, bid, SIZE, false, m);
            assert!(!a.contains(&Action::CancelRecv));
            d.on(Event::Sent(SIZE as i32), &ctx(m));
        }
        assert!(matches!(d, Dir::Copy(_)));
    }

    #[test]
    fn polled_splice_pumps_and_waits() {
        let m = ForwardMode::Splice;
        let c = ctx(m);
        let mut d = Dir::new();
        assert_eq!(d.on(Event::Start, &c).as_slice(), [Action::LendPipe]);
        d.on(Event::PipeLent(Some(pipe())), &c);
        // A full pipe, written out in two goes: the sink is slow.
        let a = d.on(Event::SplicedIn(Spliced::Moved(65536)), &c);
        assert_eq!(
            a.as_slice(),
            [Action::SpliceOut {
                pipe_read: 7,
                len: 65536
            }]
        );
        let a = d.on(Event::SplicedOut(Spliced::Moved(1000)), &c);
        assert_eq!(a.as_slice(), [Action::PollOut]);
        assert_eq!(d.undelivered(), 64536);
        assert!(!d.reading());
        let a = d.on(Event::Writable(1), &c);
        assert_eq!(
            a.as_slice(),
            [Action::SpliceOut {
                pipe_read: 7,
                len: 64536
            }]
        );
        // Written out; the last read took a full pipe, so read again.
        let a = d.on(Event::SplicedOut(Spliced::Moved(64536)), &c);
        assert_eq!(
            a.as_slice(),
            [Action::SpliceIn {
                pipe_write: 8,
                len: 65536
            }]
        );
        // Nothing more for now: the pipe goes back, a readability poll waits.
        let a = d.on(Event::SplicedIn(Spliced::WouldBlock), &c);
        assert_eq!(
            a.as_slice(),
            [
                Action::ReturnPipe {
                    pipe: pipe(),
                    bytes: 0
                },
                Action::PollIn
            ]
        );
        assert!(d.reading());
        assert_eq!(d.on(Event::Readable(1), &c).as_slice(), [Action::LendPipe]);
        d.on(Event::PipeLent(Some(pipe())), &c);
        let a = d.on(Event::SplicedIn(Spliced::Eof), &c);
        assert_eq!(a.as_slice(), return_pipe_and_fin());
        assert!(matches!(d, Dir::Done));
    }

    #[test]
    fn polled_splice_yields_after_a_short_read_or_enough_rounds() {
        let c = ctx(ForwardMode::Splice);
        let mut d = Dir::Splice(Splice::Lending);
        d.on(Event::PipeLent(Some(pipe())), &c);
        d.on(Event::SplicedIn(Spliced::Moved(100)), &c);
        let a = d.on(Event::SplicedOut(Spliced::Moved(100)), &c);
        assert_eq!(a.last(), Some(&Action::PollIn));
        let mut d = Dir::Splice(Splice::Lending);
        d.on(Event::PipeLent(Some(pipe())), &c);
        let mut rounds = 0;
        loop {
            d.on(Event::SplicedIn(Spliced::Moved(65536)), &c);
            rounds += 1;
            let a = d.on(Event::SplicedOut(Spliced::Moved(65536)), &c);
            if a.last() == Some(&Action::PollIn) {
                break;
            }
        }
        assert_eq!(rounds, PUMP_ROUNDS);
    }

    #[test]
    fn splice_errors_abort() {
        let c = ctx(ForwardMode::Splice);
        let mut d = Dir::Splice(Splice::AwaitReadable);
        assert_eq!(
            d.on(Event::Readable(-libc::ECONNRESET), &c).as_slice(),
            [Action::Abort(Fault::Source)]
        );
        let mut d = Dir::Splice(Splice::Lending);
        d.on(Event::PipeLent(Some(pipe())), &c);
        d.on(Event::SplicedIn(Spliced::Moved(10)), &c);
        let a = d.on(Event::SplicedOut(Spliced::Failed(libc::EPIPE)), &c);
        assert_eq!(a.as_slice(), [Action::Abort(Fault::Sink)]);
        assert_eq!(d.undelivered(), 10);
        assert_eq!(d.release().1, Some((pipe(), 10)));
    }

    #[test]
    fn ring_splice_fills_and_drains() {
        let c = ctx(ForwardMode::SpliceRing);
        let mut d = Dir::new();
        assert_eq!(d.on(Event::Start, &c).as_slice(), [Action::LendPipe]);
        let a = d.on(Event::PipeLent(Some(pipe())), &c);
        assert_eq!(
            a.as_slice(),
            [Action::RingSpliceIn {
                pipe_write: 8,
                len: 65536
            }]
        );
        let a = d.on(Event::RingIn(300), &c);
        assert_eq!(
            a.as_slice(),
            [Action::RingSpliceOut {
                pipe_read: 7,
                len: 300
            }]
        );
        let a = d.on(Event::RingOut(100), &c);
        assert_eq!(
            a.as_slice(),
            [Action::RingSpliceOut {
                pipe_read: 7,
                len: 200
            }]
        );
        let a = d.on(Event::RingOut(200), &c);
        assert_eq!(
            a.as_slice(),
            [Action::RingSpliceIn {
                pipe_write: 8,
                len: 65536
            }]
        );
        let a = d.on(Event::RingIn(0), &c);
        assert_eq!(a.as_slice(), return_pipe_and_fin());
    }

    #[test]
    fn without_a_pipe_splice_modes_copy() {
        for m in [ForwardMode::Splice, ForwardMode::SpliceRing] {
            let mut d = Dir::new();
            d.on(Event::Start, &ctx(m));
            let a = d.on(Event::PipeLent(None), &ctx(m));
            assert_eq!(a.as_slice(), [arm(MAX_HELD)]);
            assert!(matches!(d, Dir::Copy(_)));
        }
    }

    #[test]
    fn closing_keeps_the_count_of_undelivered_bytes_exact() {
        let m = ForwardMode::Copy;
        let mut d = started(m);
        recv(&mut d, 1, 10, true, m);
        assert_eq!(d.undelivered(), 10);
        d.sent_while_closing(10);
        assert_eq!(d.undelivered(), 0);
        let (bufs, _) = d.release();
        assert_eq!(bufs.as_slice(), [BufId::for_test(1)]);

        let mut d = Dir::RingSplice(RingSplice::Filling { pipe: pipe() });
        d.ring_spliced_while_closing(true, 50);
        assert_eq!(d.undelivered(), 50);
        d.ring_spliced_while_closing(false, 50);
        assert_eq!(d.undelivered(), 0);
    }
}
