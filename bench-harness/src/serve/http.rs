//! The HTTP/1.1 side of `serve http`: parses pipelined requests (skipping
//! request bodies sent with Content-Length or chunked encoding) and appends a
//! fixed response per request, honouring keep-alive and `Connection: close`.

use crate::chunked::ChunkedDecoder;

/// Canned responses.
#[derive(Debug, Clone)]
pub struct Responses {
    head_keep: Vec<u8>,
    head_close: Vec<u8>,
    body: Vec<u8>,
    bad_request: Vec<u8>,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

impl Responses {
    /// Responses with `status` and a body of `body_size` bytes.
    pub fn new(status: u16, body_size: usize) -> Self {
        let head = |close: bool| {
            format!(
                "HTTP/1.1 {status} {}\r\nServer: ringlb-bench\r\nContent-Type: text/plain\r\nContent-Length: {body_size}\r\n{}\r\n",
                reason(status),
                if close { "Connection: close\r\n" } else { "" }
            )
            .into_bytes()
        };
        let body = (0..body_size).map(|i| b'a' + (i % 26) as u8).collect();
        Responses {
            head_keep: head(false),
            head_close: head(true),
            body,
            bad_request:
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
enum Skip {
    Len(u64),
    Chunked(ChunkedDecoder),
}

/// Per-connection request parsing state (a request body being skipped).
#[derive(Debug, Clone, Default)]
pub struct RequestState {
    skip: Option<Skip>,
}

/// What [`process`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    /// Leading bytes of the input that are done with.
    pub consumed: usize,
    /// Complete requests answered.
    pub requests: u64,
    /// Close the connection once `out` is sent.
    pub close: bool,
}

/// Handles every complete request in `buf`, appending responses to `out`.
pub fn process(
    buf: &[u8],
    st: &mut RequestState,
    resp: &Responses,
    out: &mut Vec<u8>,
) -> Processed {
    let mut pos = 0;
    let mut requests = 0;
    loop {
        if let Some(skip) = &mut st.skip {
            let avail = &buf[pos..];
            let done = match skip {
                Skip::Len(left) => {
                    let take = (*left).min(avail.len() as u64);
                    *left -= take;
                    pos += take as usize;
                    *left == 0
                }
                Skip::Chunked(d) => match d.feed(avail) {
                    Ok(n) => {
                        pos += n;
                        d.is_done()
                    }
                    Err(_) => {
                        out.extend_from_slice(&resp.bad_request);
                        return Processed {
                            consumed: buf.len(),
                            requests,
                            close: true,
                        };
                    }
                },
            };
            if !done {
                return Processed {
                    consumed: pos,
                    requests,
                    close: false,
                };
            }
            st.skip = None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[pos..]) {
            Ok(httparse::Status::Partial) => {
                return Processed {
                    consumed: pos,
                    requests,
                    close: false,
                }
            }
            Err(_) => {
                out.extend_from_slice(&resp.bad_request);
                return Processed {
                    consumed: buf.len(),
                    requests,
                    close: true,
                };
            }
            Ok(httparse::Status::Complete(n)) => {
                pos += n;
                let http10 = req.version == Some(0);
                let mut close = http10;
                let mut len: Option<u64> = None;
                let mut chunked = false;
                let mut bad = false;
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("connection") {
                        let v = String::from_utf8_lossy(h.value);
                        for t in v.split(',').map(str::trim) {
                            if t.eq_ignore_ascii_case("close") {
                                close = true;
                            } else if t.eq_ignore_ascii_case("keep-alive") && http10 {
                                close = false;
                            }
                        }
                    } else if h.name.eq_ignore_ascii_case("content-length") {
                        match std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                        {
                            Some(v) => len = Some(v),
                            None => bad = true,
                        }
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = String::from_utf8_lossy(h.value)
                            .to_ascii_lowercase()
                            .contains("chunked");
                    }
                }
                if bad {
                    out.extend_from_slice(&resp.bad_request);
                    return Processed {
                        consumed: buf.len(),
                        requests,
                        close: true,
                    };
                }
                if chunked {
                    st.skip = Some(Skip::Chunked(ChunkedDecoder::new()));
                } else if let Some(l) = len.filter(|&l| l > 0) {
                    st.skip = Some(Skip::Len(l));
                }
                out.extend_from_slice(if close {
                    &resp.head_close
                } else {
                    &resp.head_keep
                });
                if req.method != Some("HEAD") {
                    out.extend_from_slice(&resp.body);
                }
                requests += 1;
                if close {
                    return Processed {
                        consumed: buf.len(),
                        requests,
                        close: true,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_parse::{Progress, ResponseParser};

    #[test]
    fn pipelined_requests_with_bodies() {
        let r = Responses::new(200, 3);
        let mut st = RequestState::default();
        let mut out = Vec::new();
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /";
        let p = process(input, &mut st, &r, &mut out);
        assert_eq!(p.requests, 3);
        assert!(!p.close);
        assert_eq!(&input[p.consumed..], b"GET /");
        // Three well-formed responses, readable by the client parser.
        let mut parser = ResponseParser::new(false);
        let mut at = 0;
        for _ in 0..3 {
            match parser.feed(&out[at..]).unwrap() {
                Progress::Complete { consumed, info } => {
                    assert_eq!(
                        (info.status, info.body_bytes, info.keep_alive),
                        (200, 3, true)
                    );
                    at += consumed;
                }
                p => panic!("{p:?}"),
            }
        }
        assert_eq!(at, out.len());
    }

    #[test]
    fn body_split_across_reads_and_close() {
        let r = Responses::new(503, 0);
        let mut st = RequestState::default();
        let mut out = Vec::new();
        let p = process(
            b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nab",
            &mut st,
            &r,
            &mut out,
        );
        assert_eq!((p.requests, p.close), (1, false));
        let p = process(
            b"cdefGET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            &mut st,
            &r,
            &mut out,
        );
        assert_eq!((p.requests, p.close), (1, true));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("HTTP/1.1 503").count(), 2);
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn garbage_gets_400_and_close() {
        let r = Responses::new(200, 1);
        let mut out = Vec::new();
        let p = process(
            b"\x16\x03\x01 hello\r\n\r\n",
            &mut RequestState::default(),
            &r,
            &mut out,
        );
        assert!(p.close);
        assert!(out.starts_with(b"HTTP/1.1 400"));
    }
}
