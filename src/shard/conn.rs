//! A proxied connection pair: client fd, server fd and the state of each
//! direction. The transitions are driven from `connect.rs`, `forward.rs` and
//! `close.rs`; `LIFECYCLE.md` beside this file draws them.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::Instant;

use super::pipes::Pipe;

/// Client → server.
pub const UP: usize = 0;
/// Server → client.
pub const DOWN: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// The slot is on the free list.
    Free,
    /// A connect to `server` is in flight.
    Connecting,
    /// Both directions are moving bytes (or one has finished).
    Forwarding,
    /// Closing: waiting for the operations still in flight to complete
    /// before the fds are closed and the slot freed.
    Closing,
}

/// How one direction moves its bytes right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirMode {
    Copy,
    Splice,
    SpliceRing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    /// Not started (connect in flight).
    Idle,
    /// Moving bytes: in copy mode a multishot receive and at most one send
    /// may be in flight; in splice modes a readiness poll or a splice into
    /// the pipe is.
    Reading,
    /// Splice modes: bytes sit in the pipe; a writability poll or a splice
    /// out of the pipe is in flight.
    Writing,
    /// Copy mode: the receive ended on an empty buffer ring; waiting for a
    /// buffer to come back.
    WaitBuffer,
    /// FIN forwarded; nothing more will move this way.
    Done,
}

#[derive(Debug)]
pub struct Dir {
    pub state: DirState,
    pub mode: DirMode,
    /// Copy mode: a multishot receive is in flight.
    pub recv_armed: bool,
    /// Copy mode: the multishot receive was cancelled to push back on a
    /// source that outruns its sink.
    pub recv_paused: bool,
    /// Copy mode: a send is in flight for `buf`, `sent` of `len` bytes done.
    pub sending: bool,
    pub buf: u16,
    pub sent: u32,
    pub len: u32,
    /// Copy mode: received buffers waiting for the send in flight, in order.
    pub queue: VecDeque<(u16, u32)>,
    /// The source sent FIN; forward it once every byte before it is out.
    pub fin: bool,
    /// Auto mode: move to splice once the copy path is quiet.
    pub to_splice: bool,
    /// Splice modes: the pipe lent to this direction and the bytes in it.
    pub pipe: Option<Pipe>,
    pub pipe_bytes: usize,
    /// Consecutive receives that filled a whole buffer (auto mode's hint
    /// that this direction carries bulk data).
    pub full_reads: u8,
}

impl Dir {
    fn new(mode: DirMode) -> Dir {
        Dir {
            state: DirState::Idle,
            mode,
            recv_armed: false,
            recv_paused: false,
            sending: false,
            buf: 0,
            sent: 0,
            len: 0,
            queue: VecDeque::new(),
            fin: false,
            to_splice: false,
            pipe: None,
            pipe_bytes: 0,
            full_reads: 0,
        }
    }
}

#[derive(Debug)]
pub struct Conn {
    pub generation: u32,
    pub state: ConnState,
    pub client: RawFd,
    /// -1 until a server socket exists.
    pub server: RawFd,
    pub pool: usize,
    /// The server of the current connect or pair.
    pub server_index: Option<usize>,
    /// Servers already tried, a bit per index (redispatch).
    pub tried: u64,
    /// Connect attempts made so far.
    pub attempts: u32,
    /// Submissions whose completion has not arrived yet.
    pub inflight: u32,
    pub dirs: [Dir; 2],
    /// Last time bytes were read from or written to each side.
    pub client_seen: Instant,
    pub server_seen: Instant,
    /// Close with RST rather than FIN (the pair was aborted).
    pub reset: bool,
}

impl Conn {
    pub fn free(generation: u32, now: Instant) -> Conn {
        Conn {
            generation,
            state: ConnState::Free,
            client: -1,
            server: -1,
            pool: 0,
            server_index: None,
            tried: 0,
            attempts: 0,
            inflight: 0,
            dirs: [Dir::new(DirMode::Copy), Dir::new(DirMode::Copy)],
            client_seen: now,
            server_seen: now,
            reset: false,
        }
    }

    /// The fd bytes of direction `d` are read from.
    pub fn source(&self, d: usize) -> RawFd {
        if d == UP {
            self.client
        } else {
            self.server
        }
    }

    /// The fd bytes of direction `d` are written to.
    pub fn sink(&self, d: usize) -> RawFd {
        if d == UP {
            self.server
        } else {
            self.client
        }
    }

    /// Records activity on the side that `fd` is.
    pub fn seen(&mut self, fd: RawFd, now: Instant) {
        if fd == self.client {
            self.client_seen = now;
        } else {
            self.server_seen = now;
        }
    }
}
