//! The tcp-stream workload on the wire: [`Upload`] sends its buffer again
//! and again and never receives; [`Download`] receives into its buffer again
//! and again. Every byte counts as throughput; there are no requests, so no
//! schedule, latency or request count. The peer closing is a read error.

use super::{Protocol, Received, Step};
use crate::workload::StreamWorkload;

pub(crate) struct Upload {
    chunk: Vec<u8>,
}

impl Upload {
    pub fn new(w: &StreamWorkload) -> Upload {
        Upload { chunk: w.buffer() }
    }
}

impl Protocol for Upload {
    type State = ();

    fn new_state(&self) {}

    fn recv_buffer_size(&self) -> usize {
        0
    }

    fn step(&self) -> Step<'_> {
        Step::Send(&self.chunk)
    }

    /// Never called: an upload does not receive.
    fn received(&self, _st: &mut (), _buf: &mut [u8], _n: usize) -> Received {
        Received::Invalid
    }
}

pub(crate) struct Download {
    chunk: usize,
}

impl Download {
    pub fn new(w: &StreamWorkload) -> Download {
        Download {
            chunk: w.chunk.max(1),
        }
    }
}

impl Protocol for Download {
    type State = ();

    fn new_state(&self) {}

    fn recv_buffer_size(&self) -> usize {
        self.chunk
    }

    fn step(&self) -> Step<'_> {
        Step::Receive
    }

    fn received(&self, _st: &mut (), _buf: &mut [u8], _n: usize) -> Received {
        Received::Counted
    }
}
