//! What each connection does: HTTP request/response (keep-alive or a new
//! connection per request), TCP echo of fixed-size messages, or bulk TCP
//! streaming. Each workload provides the bytes it sends; the engine drives them.

pub mod echo;
pub mod http;
pub mod stream;

pub use echo::EchoWorkload;
pub use http::HttpWorkload;
pub use stream::{Direction, StreamWorkload};

/// The workload of a run.
#[derive(Debug, Clone)]
pub enum Workload {
    Http(HttpWorkload),
    Echo(EchoWorkload),
    Stream(StreamWorkload),
}

impl Workload {
    /// Short name used in reports: `http`, `http-close`, `tcp-echo`, `tcp-stream`.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Http(h) if h.close => "http-close",
            Workload::Http(_) => "http",
            Workload::Echo(_) => "tcp-echo",
            Workload::Stream(_) => "tcp-stream",
        }
    }

    /// Whether the workload has per-request latency (streams do not).
    pub fn has_requests(&self) -> bool {
        !matches!(self, Workload::Stream(_))
    }
}
