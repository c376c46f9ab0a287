//! One client connection slot: its socket, receive buffer, protocol state,
//! current request and where it is in its life (see `LIFECYCLE.md` beside
//! this file). The buffer and the schedule timespec are boxed so their
//! addresses stay fixed while the kernel holds them.

use io_uring::types::Timespec;
use socket2::Socket;

use crate::schedule::Schedule;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet.
    Idle,
    /// A connect is in flight.
    Connecting,
    /// Open loop: waiting for the intended send time of the next request.
    Waiting,
    /// A request (send + receive) or a throughput send or receive is in flight.
    Busy,
    /// Waiting for in-flight operations to complete before going on.
    Draining,
    /// Finished for this run.
    Done,
}

/// The request currently being served by a connection.
#[derive(Debug, Clone, Copy)]
pub struct Req {
    /// When it should have been sent (schedule time in open loop).
    pub intended: u64,
    /// When it was sent (0 until then).
    pub sent_at: u64,
    /// When the first response byte arrived (0 until then).
    pub first_byte: u64,
    /// Counted in the results (started after warm-up).
    pub recording: bool,
}

/// One connection slot; `S` is the workload's per-connection state.
pub struct Conn<S> {
    pub sock: Option<Socket>,
    /// Changed whenever the socket is replaced; part of every `user_data`.
    pub gen: u32,
    /// Operations submitted and not yet completed.
    pub inflight: u32,
    pub phase: Phase,
    /// Receive buffer (the protocol says where each receive lands).
    pub buf: Box<[u8]>,
    /// Bytes of the current request sent.
    pub sent: usize,
    /// The protocol's state (response parser, bytes echoed so far…).
    pub state: S,
    /// The request in progress; never one between requests or on a stream.
    pub req: Option<Req>,
    pub sched: Option<Schedule>,
    /// Timespec of the pending schedule timer.
    pub timer: Box<Timespec>,
    pub connect_start: u64,
    /// Deadline of the pending connect or request (0 = none).
    pub deadline: u64,
    /// When draining ends: close the socket (else keep it for the next request).
    pub drain_close: bool,
}

impl<S> Conn<S> {
    pub fn new(buf_size: usize, state: S, sched: Option<Schedule>) -> Self {
        Conn {
            sock: None,
            gen: 0,
            inflight: 0,
            phase: Phase::Idle,
            buf: vec![0u8; buf_size].into_boxed_slice(),
            sent: 0,
            state,
            req: None,
            sched,
            timer: Box::new(Timespec::new()),
            connect_start: 0,
            deadline: 0,
            drain_close: false,
        }
    }
}
