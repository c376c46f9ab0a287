//! What the access log says about one connection: a fixed-size [`Record`]
//! a shard fills when a pair ends and hands to the writer without
//! allocating, and the two-letter termination code ([`Cause`], [`Phase`])
//! in the style of HAProxy's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The longest name a record carries; longer ones are cut (on a character
/// boundary) and end with `~`.
pub const NAME_MAX: usize = 63;

/// A listener, pool or server name copied inline, so a record holds no
/// pointer into a snapshot that a reload may retire.
#[derive(Clone, Copy)]
pub struct Name {
    len: u8,
    bytes: [u8; NAME_MAX],
}

impl Name {
    pub const EMPTY: Name = Name {
        len: 0,
        bytes: [0; NAME_MAX],
    };

    pub fn new(s: &str) -> Name {
        let mut n = Name::EMPTY;
        let (cut, more) = if s.len() <= NAME_MAX {
            (s.len(), false)
        } else {
            let mut at = NAME_MAX - 1;
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            (at, true)
        };
        n.bytes[..cut].copy_from_slice(&s.as_bytes()[..cut]);
        let mut len = cut;
        if more {
            n.bytes[len] = b'~';
            len += 1;
        }
        n.len = len as u8;
        n
    }

    pub fn as_str(&self) -> &str {
        // Built from a `&str` cut on a character boundary (plus ASCII `~`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// Who or what ended a connection: the first letter of its termination
/// code. The table is in README.md ("Access log").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cause {
    /// Both sides finished: every byte delivered, FIN each way.
    #[default]
    Normal,
    /// The client reset the connection, or its socket failed.
    Client,
    /// The server reset, refused or failed, or no server could take the
    /// client.
    Server,
    /// The client was idle for `timeouts.client_idle`.
    ClientTimeout,
    /// The server was idle for `timeouts.server_idle`, the connect took
    /// longer than `timeouts.connect`, or the client waited longer than
    /// `timeouts.queue` for a server slot.
    ServerTimeout,
    /// ringlb turned it away: the pool's queue was full (`maxqueue`), a
    /// reload removed its pool, its PROXY header was malformed, or the
    /// address it carried is denied.
    Proxy,
    /// ringlb was stopping and the grace period ran out (or a second
    /// signal came).
    Killed,
}

impl Cause {
    pub fn letter(self) -> char {
        match self {
            Cause::Normal => '-',
            Cause::Client => 'C',
            Cause::Server => 'S',
            Cause::ClientTimeout => 'c',
            Cause::ServerTimeout => 's',
            Cause::Proxy => 'P',
            Cause::Killed => 'K',
        }
    }
}

/// Where the connection was when it ended: the second letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Waiting: for the connection budget, or in the pool's queue.
    #[default]
    Waiting,
    /// Waiting for the client's PROXY protocol header.
    Request,
    /// Connecting to a server.
    Connecting,
    /// Forwarding, both directions open.
    Data,
    /// Forwarding, one direction already finished (the last data).
    Last,
    /// Ended normally.
    Done,
}

impl Phase {
    pub fn letter(self) -> char {
        match self {
            Phase::Waiting => 'Q',
            Phase::Request => 'R',
            Phase::Connecting => 'C',
            Phase::Data => 'D',
            Phase::Last => 'L',
            Phase::Done => '-',
        }
    }
}

/// One line of the access log, as a shard hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub shard: u16,
    pub accepted: Instant,
    /// `None` when the client's address could not be read (it had gone).
    pub client: Option<SocketAddr>,
    pub listener: Name,
    /// Empty when a reload removed the pool.
    pub pool: Name,
    /// The server the connection went to, or the last one tried; empty
    /// when none was.
    pub server: Name,
    pub server_addr: Option<SocketAddr>,
    /// From accept to the first connect (waiting for the budget and in
    /// the pool's queue); `None` if no connect was ever made.
    pub queued: Option<Duration>,
    /// How long the connect that succeeded took; `None` if none did.
    pub connect: Option<Duration>,
    /// From accept to close.
    pub total: Duration,
    /// Bytes client → server and server → client.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cause: Cause,
    pub phase: Phase,
    /// Connects made (more than 1: redispatched).
    pub attempts: u32,
    /// Closed with a reset rather than FIN.
    pub reset: bool,
}

impl Record {
    /// The two-letter termination code, e.g. `--`, `SC`, `cD`.
    pub fn code(&self) -> [char; 2] {
        [self.cause.letter(), self.phase.letter()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_on_a_character_boundary() {
        assert_eq!(Name::new("web").as_str(), "web");
        assert_eq!(Name::new("").as_str(), "");
        let exact = "x".repeat(NAME_MAX);
        assert_eq!(Name::new(&exact).as_str(), exact);
        let long = "é".repeat(40); // 80 bytes
        let cut = Name::new(&long);
        assert!(cut.as_str().ends_with('~'));
        assert!(cut.as_str().len() <= NAME_MAX);
        assert!(cut.as_str().starts_with("éé"));
    }
}
