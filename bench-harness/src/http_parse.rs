//! Incremental HTTP/1.1 response parser: the head with `httparse`, the body by
//! `Content-Length`, chunked encoding ([`crate::chunked`]) or read-until-close.
//! Bytes are never counted to guess where a response ends.

use thiserror::Error;

use crate::chunked::{ChunkedDecoder, ChunkedError};

/// Maximum response headers understood.
const MAX_HEADERS: usize = 64;

/// A response that is not valid HTTP/1.x.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("bad response head: {0}")]
    Head(String),
    #[error("bad Content-Length")]
    ContentLength,
    #[error("chunked body: {0}")]
    Chunked(#[from] ChunkedError),
    #[error("connection closed before the response was complete")]
    Truncated,
}

/// What is known of a complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseInfo {
    pub status: u16,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
    /// Payload bytes (after de-chunking).
    pub body_bytes: u64,
}

/// Result of feeding bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed. `consumed` leading bytes may be dropped; the rest
    /// must be presented again, followed by new bytes.
    Partial { consumed: usize },
    /// The response is complete after `consumed` bytes.
    Complete { consumed: usize, info: ResponseInfo },
}

#[derive(Debug, Clone)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

#[derive(Debug, Clone)]
enum State {
    Head,
    Body {
        body: Body,
        status: u16,
        keep_alive: bool,
        seen: u64,
    },
}

/// Parser for one response at a time; [`ResponseParser::reset`] between responses.
#[derive(Debug, Clone)]
pub struct ResponseParser {
    state: State,
    head_request: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new(false)
    }
}

impl ResponseParser {
    /// `head_request`: the request was `HEAD`, so the response has no body.
    pub fn new(head_request: bool) -> Self {
        ResponseParser {
            state: State::Head,
            head_request,
        }
    }

    pub fn reset(&mut self) {
        self.state = State::Head;
    }

    /// True until the head of the response has been parsed.
    pub fn in_head(&self) -> bool {
        matches!(self.state, State::Head)
    }

    /// Feeds the unconsumed bytes `buf` (see [`Progress::Partial`]).
    pub fn feed(&mut self, buf: &[u8]) -> Result<Progress, ParseError> {
        let mut pos = 0;
        loop {
            match &mut self.state {
                State::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut resp = httparse::Response::new(&mut headers);
                    let n = match resp.parse(&buf[pos..]) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) => {
                            return Ok(Progress::Partial { consumed: pos })
                        }
                        Err(e) => return Err(ParseError::Head(e.to_string())),
                    };
                    let status = resp.code.unwrap_or(0);
                    let version = resp.version.unwrap_or(1);
                    pos += n;
                    if (100..200).contains(&status) && status != 101 {
                        // Interim response: the real one follows.
                        continue;
                    }
                    let mut content_length: Option<u64> = None;
                    let mut chunked = false;
                    let mut conn_close = version == 0;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let v = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|s| s.trim().parse::<u64>().ok())
                                .ok_or(ParseError::ContentLength)?;
                            if content_length.is_some_and(|c| c != v) {
                                return Err(ParseError::ContentLength);
                            }
                            content_length = Some(v);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            let v = String::from_utf8_lossy(h.value);
                            chunked = v
                                .rsplit(',')
                                .next()
                                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let v = String::from_utf8_lossy(h.value);
                            for tok in v.split(',') {
                                let tok = tok.trim();
                                if tok.eq_ignore_ascii_case("close") {
                                    conn_close = true;
                                } else if tok.eq_ignore_ascii_case("keep-alive") && version == 0 {
                                    conn_close = false;
                                }
                            }
                        }
                    }
                    let no_body =
                        self.head_request || status == 204 || status == 304 || status == 101;
                    let body = if no_body {
                        Body::Length(0)
                    } else if chunked {
                        Body::Chunked(ChunkedDecoder::new())
                    } else if let Some(n) = content_length {
                        Body::Length(n)
                    } else {
                        conn_close = true;
                        Body::UntilClose
                    };
                    self.state = State::Body {
                        body,
                        status,
                        keep_alive: !conn_close,
                        seen: 0,
                    };
                }
                State::Body {
                    body,
                    status,
                    keep_alive,
                    seen,
                } => {
                    let avail = &buf[pos..];
                    let done = match body {
                        Body::Length(left) => {
                            let take = (*left).min(avail.len() as u64);
                            *left -= take;
                            *seen += take;
                            pos += take as usize;
                            *left == 0
                        }
                        Body::Chunked(dec) => {
                            let n = dec.feed(avail)?;
                            pos += n;
                            *seen = dec.data_bytes();
                            dec.is_done()
                        }
                        Body::UntilClose => {
                            *seen += avail.len() as u64;
                            pos += avail.len();
                            false
                        }
                    };
                    if done {
                        let info = ResponseInfo {
                            status: *status,
                            keep_alive: *keep_alive,
                            body_bytes: *seen,
                        };
                        self.state = State::Head;
                        return Ok(Progress::Complete {
                            consumed: pos,
                            info,
                        });
                    }
                    return Ok(Progress::Partial { consumed: pos });
                }
            }
        }
    }

    /// The peer closed the connection: completes a read-until-close body,
    /// anything else is a truncated response.
    pub fn finish_eof(&mut self) -> Result<ResponseInfo, ParseError> {
        match &self.state {
            State::Body {
                body: Body::UntilClose,
                status,
                seen,
                ..
            } => {
                let info = ResponseInfo {
                    status: *status,
                    keep_alive: false,
                    body_bytes: *seen,
                };
                self.state = State::Head;
                Ok(info)
            }
            _ => Err(ParseError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in `piece`-sized reads the way the engine does (keeping
    /// unconsumed bytes) and returns the first complete response.
    fn run(input: &[u8], piece: usize) -> (ResponseInfo, usize) {
        let mut p = ResponseParser::new(false);
        let mut pending: Vec<u8> = Vec::new();
        let mut total = 0;
        for part in input.chunks(piece) {
            pending.extend_from_slice(part);
            match p.feed(&pending).unwrap() {
                Progress::Partial { consumed } => {
                    total += consumed;
                    pending.drain(..consumed);
                }
                Progress::Complete { consumed, info } => return (info, total + consumed),
            }
        }
        panic!("incomplete");
    }

    #[test]
    fn content_length_any_split() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        for piece in 1..r.len() {
            let (info, used) = run(r, piece);
            assert_eq!(used, r.len() - 5);
            assert_eq!(info.status, 200);
            assert!(info.keep_alive);
            assert_eq!(info.body_bytes, 5);
        }
    }

    #[test]
    fn chunked_any_split() {
        let r = b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for piece in 1..=r.len() {
            let (info, used) = run(r, piece);
            assert_eq!(used, r.len());
            assert_eq!(info.status, 503);
            assert!(!info.keep_alive);
            assert_eq!(info.body_bytes, 3);
        }
    }

    #[test]
    fn interim_and_no_body_statuses() {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let (info, used) = run(r, r.len());
        assert_eq!((info.status, used, info.body_bytes), (204, r.len(), 0));
        let mut p = ResponseParser::new(true);
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        assert!(matches!(
            p.feed(r).unwrap(),
            Progress::Complete { consumed, .. } if consumed == r.len()
        ));
    }

    #[test]
    fn until_close_and_truncation() {
        let mut p = ResponseParser::new(false);
        let r = b"HTTP/1.0 200 OK\r\n\r\nsome body";
        assert_eq!(p.feed(r).unwrap(), Progress::Partial { consumed: r.len() });
        let info = p.finish_eof().unwrap();
        assert_eq!(
            (info.status, info.keep_alive, info.body_bytes),
            (200, false, 9)
        );

        let mut p = ResponseParser::new(false);
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        assert_eq!(p.finish_eof(), Err(ParseError::Truncated));
        let mut p = ResponseParser::new(false);
        assert_eq!(p.finish_eof(), Err(ParseError::Truncated));
    }

    #[test]
    fn rejects_garbage() {
        let mut p = ResponseParser::new(false);
        assert!(matches!(
            p.feed(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ParseError::Head(_))
        ));
        let mut p = ResponseParser::new(false);
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(ParseError::ContentLength)
        );
    }
}
