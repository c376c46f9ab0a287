//! What goes over a connection, apart from how the connection lives: the
//! [`Protocol`] trait each workload implements (what to send, how big the
//! receive buffer is, where received bytes land and what they mean), and
//! the answers it gives the worker ([`Step`], [`Received`]). One file per
//! workload: `http.rs` (keep-alive or a connection per request), `echo.rs`
//! (tcp-echo), `stream.rs` (tcp-stream upload and download). Connecting,
//! timeouts, draining, the open-loop schedule, counting and intervals are
//! the worker's (`engine/worker.rs`), the same for every workload.

mod echo;
mod http;
mod stream;

pub(crate) use echo::Echo;
pub(crate) use http::Http;
pub(crate) use stream::{Download, Upload};

use socket2::Socket;

/// What a free, connected connection does next.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step<'a> {
    /// Send all of these bytes, then receive until [`Protocol::received`]
    /// says the response is complete. A request is scheduled (open loop),
    /// timed out, and counted (issued, completed, latency).
    Request(&'a [u8]),
    /// Send these bytes once; what the kernel takes counts as throughput,
    /// then the connection takes its next step.
    Send(&'a [u8]),
    /// Receive once; [`Protocol::received`] says what the bytes mean
    /// ([`Received::Counted`]: throughput, then the next step).
    Receive,
}

/// What the bytes just received mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// The response goes on: receive again.
    Partial,
    /// The response is complete. `status` is counted by class (and as an
    /// error from 400 up); without `keep_alive` the connection is closed
    /// and the next request connects anew.
    Complete {
        status: Option<u16>,
        keep_alive: bool,
    },
    /// Throughput: the bytes are counted and the connection takes its next
    /// step (only for [`Step::Receive`]).
    Counted,
    /// Not what was asked for (a malformed response, bytes past its end, a
    /// wrong echo): a protocol error.
    Invalid,
    /// The peer closed before the response was complete: a read error.
    Truncated,
}

/// One workload's side of a connection. The worker holds the buffer and a
/// [`Protocol::State`] per connection and calls these as operations
/// complete; a protocol never submits anything itself.
pub(crate) trait Protocol: Send + Sync + 'static {
    /// Per-connection state (a response parser, the bytes echoed so far).
    type State: Send;

    fn new_state(&self) -> Self::State;

    /// Bytes of receive buffer each connection holds (0: never receives).
    fn recv_buffer_size(&self) -> usize;

    /// Socket options for a new connection, before it connects.
    fn configure(&self, _sock: &Socket) {}

    /// What a free, connected connection does next. The bytes must stay
    /// the same for the whole run: the kernel reads them in place.
    fn step(&self) -> Step<'_>;

    /// A request is about to be sent: forget the previous response.
    fn begin(&self, _st: &mut Self::State) {}

    /// Where in `buf` (the connection's buffer) the next receive lands.
    fn room<'b>(&self, _st: &Self::State, buf: &'b mut [u8]) -> &'b mut [u8] {
        buf
    }

    /// `n` bytes were received into the start of the last [`Protocol::room`]
    /// of `buf`.
    fn received(&self, st: &mut Self::State, buf: &mut [u8], n: usize) -> Received;

    /// The peer closed the connection (a receive returned 0).
    fn closed(&self, _st: &mut Self::State) -> Received {
        Received::Truncated
    }
}
