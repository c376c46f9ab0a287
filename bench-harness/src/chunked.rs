//! Incremental decoder for HTTP/1.1 chunked bodies (RFC 9112 §7.1): fed any
//! slicing of the bytes, it says how many belong to the body and when the
//! body (including trailers and the final CRLF) is complete.

use thiserror::Error;

/// A malformed chunked body.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkedError {
    #[error("bad chunk size line")]
    BadSize,
    #[error("chunk size overflows")]
    SizeOverflow,
    #[error("missing CRLF after chunk data")]
    MissingCrlf,
    #[error("bad trailer section")]
    BadTrailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` seen so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// Skipping a chunk extension (after `;`) or whitespace up to CR.
    Ext {
        value: u64,
    },
    /// Expecting LF after the size line's CR.
    SizeLf {
        value: u64,
    },
    /// Inside chunk data, this many bytes left.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line, skipping to LF.
    TrailerLine,
    /// Saw CR of the final empty line.
    FinalLf,
    Done,
}

/// Chunked-body decoder; feed bytes until [`ChunkedDecoder::is_done`].
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    data_bytes: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            data_bytes: 0,
        }
    }

    /// True once the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes (without framing) seen so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Consumes from `buf`; returns how many bytes belong to the body. Stops
    /// right after the body ends, so any remainder belongs to what follows.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data { left } => {
                    let take = left.min((buf.len() - i) as u64);
                    i += take as usize;
                    self.data_bytes += take;
                    self.state = if take == left {
                        State::DataCr
                    } else {
                        State::Data { left: left - take }
                    };
                    continue;
                }
                _ => {}
            }
            let b = buf[i];
            i += 1;
            self.state = match self.state {
                State::Size { value, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        if digits >= 15 {
                            return Err(ChunkedError::SizeOverflow);
                        }
                        State::Size {
                            value: value * 16 + d,
                            digits: digits + 1,
                        }
                    }
                    _ if digits == 0 => return Err(ChunkedError::BadSize),
                    b';' | b' ' | b'\t' => State::Ext { value },
                    b'\r' => State::SizeLf { value },
                    _ => return Err(ChunkedError::BadSize),
                },
                State::Ext { value } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => return Err(ChunkedError::BadSize),
                    _ => State::Ext { value },
                },
                State::SizeLf { value } => match b {
                    b'\n' if value == 0 => State::TrailerStart,
                    b'\n' => State::Data { left: value },
                    _ => return Err(ChunkedError::BadSize),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(ChunkedError::MissingCrlf),
                },
                State::DataLf => match b {
                    b'\n' => State::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err(ChunkedError::MissingCrlf),
                },
                State::TrailerStart => match b {
                    b'\r' => State::FinalLf,
                    b'\n' => return Err(ChunkedError::BadTrailer),
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\n' => State::TrailerStart,
                    _ => State::TrailerLine,
                },
                State::FinalLf => match b {
                    b'\n' => State::Done,
                    _ => return Err(ChunkedError::BadTrailer),
                },
                State::Data { .. } | State::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"4\r\nWiki\r\n5;name=v\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    fn decode_in_pieces(input: &[u8], piece: usize) -> (usize, u64) {
        let mut d = ChunkedDecoder::new();
        let mut used = 0;
        for part in input.chunks(piece) {
            let n = d.feed(part).unwrap();
            used += n;
            if d.is_done() {
                return (used, d.data_bytes());
            }
            assert_eq!(n, part.len());
        }
        panic!("not done after {used} bytes");
    }

    #[test]
    fn whole_and_split_at_every_size() {
        let body_len = BODY.len() - 4;
        for piece in 1..=BODY.len() {
            let (used, data) = decode_in_pieces(BODY, piece);
            assert_eq!(used, body_len, "piece {piece}");
            assert_eq!(data, 4 + 5 + 14, "piece {piece}");
        }
    }

    #[test]
    fn stops_at_end_of_body() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"0\r\n\r\nHTTP/1.1").unwrap(), 5);
        assert!(d.is_done());
        assert_eq!(d.data_bytes(), 0);
    }

    #[test]
    fn incomplete_is_not_done() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"3\r\nab").unwrap(), 5);
        assert!(!d.is_done());
        d.feed(b"c\r\n0\r\n").unwrap();
        assert!(!d.is_done());
        d.feed(b"\r\n").unwrap();
        assert!(d.is_done());
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            ChunkedDecoder::new().feed(b"zz\r\n"),
            Err(ChunkedError::BadSize)
        );
        assert_eq!(
            ChunkedDecoder::new().feed(b"\r\n"),
            Err(ChunkedError::BadSize)
        );
        assert_eq!(
            ChunkedDecoder::new().feed(b"2\r\nabX"),
            Err(ChunkedError::MissingCrlf)
        );
        assert_eq!(
            ChunkedDecoder::new().feed(b"ffffffffffffffffff\r\n"),
            Err(ChunkedError::SizeOverflow)
        );
        assert_eq!(
            ChunkedDecoder::new().feed(b"0\r\n\rx"),
            Err(ChunkedError::BadTrailer)
        );
    }
}
