//! The http workload on the wire: the same request every time, the response
//! parsed by [`ResponseParser`] in a 16 KiB buffer, complete when the parser
//! says so (Content-Length, chunked, or the close). Keep-alive unless the
//! response or `--close` says otherwise.

use socket2::Socket;

use super::{Protocol, Received, Step};
use crate::http_parse::{Progress, ResponseParser};
use crate::target::Target;
use crate::workload::HttpWorkload;

/// Receive buffer: the largest response head understood.
const BUFFER: usize = 16 * 1024;

pub(crate) struct Http {
    request: Vec<u8>,
    /// `--close`: a new connection for every request.
    close: bool,
    /// HEAD: responses have no body whatever their headers say.
    head: bool,
}

impl Http {
    pub fn new(w: &HttpWorkload, target: &Target) -> Http {
        Http {
            request: w.request_bytes(target),
            close: w.close,
            head: w.is_head(),
        }
    }
}

pub(crate) struct HttpState {
    parser: ResponseParser,
    /// Bytes at the start of the buffer not yet consumed by the parser.
    filled: usize,
}

impl Protocol for Http {
    type State = HttpState;

    fn new_state(&self) -> HttpState {
        HttpState {
            parser: ResponseParser::new(self.head),
            filled: 0,
        }
    }

    fn recv_buffer_size(&self) -> usize {
        BUFFER
    }

    fn configure(&self, sock: &Socket) {
        let _ = sock.set_tcp_nodelay(true);
    }

    fn step(&self) -> Step<'_> {
        Step::Request(&self.request)
    }

    fn begin(&self, st: &mut HttpState) {
        st.parser.reset();
        st.filled = 0;
    }

    fn room<'b>(&self, st: &HttpState, buf: &'b mut [u8]) -> &'b mut [u8] {
        &mut buf[st.filled..]
    }

    fn received(&self, st: &mut HttpState, buf: &mut [u8], n: usize) -> Received {
        st.filled += n;
        match st.parser.feed(&buf[..st.filled]) {
            Err(_) => Received::Invalid,
            Ok(Progress::Partial { consumed }) => {
                if consumed > 0 {
                    buf.copy_within(consumed..st.filled, 0);
                    st.filled -= consumed;
                }
                if st.filled == buf.len() {
                    // A response head larger than the buffer.
                    return Received::Invalid;
                }
                Received::Partial
            }
            // Bytes beyond the response we asked for.
            Ok(Progress::Complete { consumed, .. }) if consumed != st.filled => Received::Invalid,
            Ok(Progress::Complete { info, .. }) => Received::Complete {
                status: Some(info.status),
                keep_alive: info.keep_alive && !self.close,
            },
        }
    }

    fn closed(&self, st: &mut HttpState) -> Received {
        match st.parser.finish_eof() {
            Ok(info) => Received::Complete {
                status: Some(info.status),
                keep_alive: false,
            },
            Err(_) => Received::Truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(close: bool) -> Http {
        let t = Target::parse_http("http://127.0.0.1:1/").unwrap();
        let w = HttpWorkload {
            close,
            ..HttpWorkload::default()
        };
        Http::new(&w, &t)
    }

    /// Receives `chunks` one after another the way the worker does.
    fn receive(p: &Http, chunks: &[&[u8]]) -> Vec<Received> {
        let mut buf = vec![0u8; p.recv_buffer_size()];
        let mut st = p.new_state();
        p.begin(&mut st);
        chunks
            .iter()
            .map(|c| {
                let room = p.room(&st, &mut buf);
                room[..c.len()].copy_from_slice(c);
                p.received(&mut st, &mut buf, c.len())
            })
            .collect()
    }

    #[test]
    fn a_response_in_pieces_completes_once() {
        let r = receive(
            &http(false),
            &[b"HTTP/1.1 200 OK\r\nContent-", b"Length: 2\r\n\r\nh", b"i"],
        );
        assert_eq!(
            r,
            [
                Received::Partial,
                Received::Partial,
                Received::Complete {
                    status: Some(200),
                    keep_alive: true
                }
            ]
        );
    }

    #[test]
    fn close_mode_never_keeps_the_connection() {
        let r = receive(
            &http(true),
            &[b"HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n"],
        );
        assert_eq!(
            r,
            [Received::Complete {
                status: Some(503),
                keep_alive: false
            }]
        );
    }

    #[test]
    fn extra_bytes_and_garbage_are_invalid() {
        let extra = receive(
            &http(false),
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nX"],
        );
        assert_eq!(extra, [Received::Invalid]);
        let garbage = receive(&http(false), &[b"SSH-2.0-OpenSSH_9.2\r\n\r\n"]);
        assert_eq!(garbage, [Received::Invalid]);
    }

    #[test]
    fn a_close_ends_only_a_read_until_close_body() {
        let p = http(false);
        let mut st = p.new_state();
        assert_eq!(p.closed(&mut st), Received::Truncated);
        let mut buf = vec![0u8; p.recv_buffer_size()];
        let head = b"HTTP/1.1 200 OK\r\n\r\nbody";
        buf[..head.len()].copy_from_slice(head);
        assert_eq!(p.received(&mut st, &mut buf, head.len()), Received::Partial);
        assert_eq!(
            p.closed(&mut st),
            Received::Complete {
                status: Some(200),
                keep_alive: false
            }
        );
    }
}
