//! A proxied connection pair: the client and server fds, the pair's place
//! in its life ([`PairState`]), and the state of each direction
//! ([`Dir`], in `direction.rs`). The transitions are driven from
//! `accept.rs`, `connect.rs`, `forward.rs` and `close.rs`; `LIFECYCLE.md`
//! beside this file draws them.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::direction::Dir;
use crate::access_log::{Cause, Phase};
use crate::config::Timeouts;
use crate::limit::SrcSlots;
use crate::timer_wheel::TimerKey;

/// Client → server.
pub const UP: usize = 0;
/// Server → client.
pub const DOWN: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairState {
    /// The slot is on the free list.
    Free,
    /// Delayed by its listener's leaky bucket until `queued_at` (only the
    /// client fd exists; `accept.rs`).
    Shaped,
    /// Accepted on an `accept_proxy` listener: waiting for the client's
    /// PROXY protocol header (`proxy_header.rs`). Only the client fd exists.
    ProxyHeader,
    /// Accepted; waiting for the connection budget (or for an fd) before a
    /// server is chosen. Only the client fd exists.
    Waiting,
    /// Every usable server of the pool is at its `maxconn`: waiting in the
    /// pool's queue, unread, for a slot (`queue.rs`).
    Queued,
    /// A connect to `server_index` is in flight.
    Connecting,
    /// Both directions are moving bytes (or one has finished).
    Forwarding,
    /// Waiting for the operations still in flight to complete before the
    /// fds are closed and the slot freed.
    Closing,
}

/// Measuring a server's time to first byte (`leasttime_observe = "ttfb"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttfb {
    /// Not measured for this pair (or measured already).
    Off,
    /// Connected: waiting for the first byte sent to the server.
    Armed,
    /// The first byte went to the server at this instant.
    Sent(Instant),
}

/// A side of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

#[derive(Debug)]
pub struct Pair {
    pub generation: u32,
    pub state: PairState,
    pub client: RawFd,
    /// -1 until a server socket exists.
    pub server: RawFd,
    /// The listener that accepted the client (an index that stays valid:
    /// see `Shard::listeners`).
    pub listener: u32,
    /// The snapshot `pool` and `server_index` refer to (`swap.rs`).
    pub epoch: u32,
    pub pool: u32,
    /// The server this pair is counted against (connecting or connected).
    pub server_index: Option<u32>,
    /// The connect in flight is the server's trial after an ejection, and
    /// its result is not in yet.
    pub trial: bool,
    /// Servers already tried, a bit per server index modulo 64 (redispatch).
    pub tried: u64,
    /// Connect attempts made so far.
    pub attempts: u32,
    /// The client's key (`balance::client_key`) when its pool hashes or
    /// sticks on the client address; 0 otherwise.
    pub key: u64,
    /// The pair holds a unit of the process's connection budget.
    pub budgeted: bool,
    /// The pair holds a place under its listener's `maxconn`.
    pub listener_place: bool,
    /// Where its listener's `conn_per_src` counted it.
    pub src_slots: Option<SrcSlots>,
    /// Held (`Shaped`) until a shared limit's store answers for its source
    /// (`shared_limit.rs`).
    pub awaiting_lease: bool,
    /// Submissions whose completion has not arrived yet.
    pub inflight: u32,
    pub dirs: [Dir; 2],
    /// Last time bytes were read from or written to each side.
    pub client_seen: Instant,
    pub server_seen: Instant,
    /// Close with RST rather than FIN.
    pub reset: bool,
    /// The pair's idle timer on the shard's wheel.
    pub timer: Option<TimerKey>,
    /// When it joined its pool's queue, and its ticket there.
    pub queued_at: Instant,
    pub ticket: u64,
    /// When the current connect was submitted (connect time, slot hold).
    pub connect_started: Instant,
    pub ttfb: Ttfb,
    /// Bytes forwarded client → server and server → client.
    pub bytes: [u64; 2],
    /// What the access log says of it (kept whether or not the log is on:
    /// a few stores per connection).
    pub accepted: Instant,
    /// When its first connect was submitted.
    pub dispatched: Option<Instant>,
    /// How long the connect that succeeded took.
    pub connected_in: Option<Duration>,
    /// The last connect's failure (`-errno`; `-ECANCELED`: timed out), 0
    /// if none failed.
    pub connect_error: i32,
    /// The last server picked: (epoch, pool, server) indexes.
    pub last_server: Option<(u32, u32, u32)>,
    /// Read at accept when the log, the pool or an access list needs it;
    /// from the PROXY header on an `accept_proxy` listener.
    pub client_addr: Option<SocketAddr>,
    /// The address the client connected to, as a PROXY header gave it.
    pub client_dst: Option<SocketAddr>,
    /// Its client socket's receive low-water mark was raised while its
    /// PROXY header was incomplete.
    pub lowat_raised: bool,
    /// Why it ended (the first cause recorded wins), and where it was
    /// (set when it starts closing, unless set before).
    pub cause: Cause,
    pub phase: Option<Phase>,
}

impl Pair {
    pub fn free(generation: u32, now: Instant) -> Pair {
        Pair {
            generation,
            state: PairState::Free,
            client: -1,
            server: -1,
            listener: 0,
            epoch: 0,
            pool: 0,
            server_index: None,
            trial: false,
            tried: 0,
            attempts: 0,
            key: 0,
            budgeted: false,
            listener_place: false,
            src_slots: None,
            awaiting_lease: false,
            inflight: 0,
            dirs: [Dir::new(), Dir::new()],
            client_seen: now,
            server_seen: now,
            reset: false,
            timer: None,
            queued_at: now,
            ticket: 0,
            connect_started: now,
            ttfb: Ttfb::Off,
            bytes: [0; 2],
            accepted: now,
            dispatched: None,
            connected_in: None,
            connect_error: 0,
            last_server: None,
            client_addr: None,
            client_dst: None,
            lowat_raised: false,
            cause: Cause::Normal,
            phase: None,
        }
    }

    /// Records why the pair ends, unless a cause was recorded already.
    pub fn end_by(&mut self, cause: Cause) {
        if self.cause == Cause::Normal {
            self.cause = cause;
        }
    }

    /// Where the pair is in its life, for its termination code.
    pub fn phase_now(&self) -> Phase {
        match self.state {
            PairState::Connecting => Phase::Connecting,
            PairState::Forwarding => {
                match self.dirs.iter().filter(|d| matches!(d, Dir::Done)).count() {
                    2 => Phase::Done,
                    1 => Phase::Last,
                    _ => Phase::Data,
                }
            }
            PairState::ProxyHeader => Phase::Request,
            PairState::Free
            | PairState::Waiting
            | PairState::Shaped
            | PairState::Queued
            | PairState::Closing => Phase::Waiting,
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

    /// Marks the source (`read`) or sink of direction `d` as seen now.
    pub fn touch(&mut self, d: usize, read: bool, now: Instant) {
        if (d == UP) == read {
            self.client_seen = now;
        } else {
            self.server_seen = now;
        }
    }

    /// Records progress on the source (`read`) or sink of direction `d`.
    /// Returns the server's time to first byte when this progress completes
    /// its measurement (first bytes written to the server, then first
    /// bytes read from it).
    #[must_use]
    pub fn progress(&mut self, d: usize, read: bool, now: Instant) -> Option<std::time::Duration> {
        self.touch(d, read, now);
        match self.ttfb {
            Ttfb::Off => None,
            Ttfb::Armed => {
                if d == UP && !read {
                    self.ttfb = Ttfb::Sent(now);
                }
                None
            }
            Ttfb::Sent(at) => {
                if d == DOWN && read {
                    self.ttfb = Ttfb::Off;
                    Some(now - at)
                } else {
                    None
                }
            }
        }
    }

    /// Marks server `si` as tried (indexes alias modulo 64, which can only
    /// make a redispatch skip a server it could have tried, never repeat one).
    pub fn mark_tried(&mut self, si: usize) {
        self.tried |= 1 << (si % 64);
    }

    /// When the pair times out for idleness, or the side that already has.
    ///
    /// A side is idle when nothing was read from it or written to it for its
    /// timeout *while it could have been*: while the shard was reading it
    /// (its own direction has a receive or poll in flight), or had bytes to
    /// write to it (the other direction holds undelivered bytes). A side
    /// that could do neither (its reads are held back because its peer is
    /// slow, or it has sent FIN and is owed nothing) is not blamed; its peer
    /// is. A pair waiting for the shard's buffers is not idle at all. A
    /// pair waiting for the connection budget is idle after the client
    /// timeout; a queued one after the queue timeout (or the client
    /// timeout, if shorter); a connecting pair is bounded by the connect
    /// timeout instead.
    pub fn idle_deadline(&self, now: Instant, t: &Timeouts) -> Result<Instant, Side> {
        match self.state {
            PairState::Queued => {
                let at = (self.client_seen + t.client_idle).min(self.queued_at + t.queue);
                if at <= now {
                    Err(Side::Client)
                } else {
                    Ok(at)
                }
            }
            PairState::Shaped => {
                if self.queued_at <= now {
                    Err(Side::Client)
                } else {
                    Ok(self.queued_at)
                }
            }
            PairState::ProxyHeader => {
                let at = self.accepted + t.proxy_header;
                if at <= now {
                    Err(Side::Client)
                } else {
                    Ok(at)
                }
            }
            PairState::Waiting => {
                let at = self.client_seen + t.client_idle;
                if at <= now {
                    Err(Side::Client)
                } else {
                    Ok(at)
                }
            }
            PairState::Forwarding => {
                if self.dirs.iter().any(Dir::starved) {
                    return Ok(now + t.client_idle.min(t.server_idle));
                }
                let could = |from: &Dir, to: &Dir| from.reading() || to.undelivered() > 0;
                let client = if could(&self.dirs[UP], &self.dirs[DOWN]) {
                    self.client_seen + t.client_idle
                } else {
                    now + t.client_idle
                };
                let server = if could(&self.dirs[DOWN], &self.dirs[UP]) {
                    self.server_seen + t.server_idle
                } else {
                    now + t.server_idle
                };
                if client <= now {
                    Err(Side::Client)
                } else if server <= now {
                    Err(Side::Server)
                } else {
                    Ok(client.min(server))
                }
            }
            PairState::Connecting | PairState::Closing | PairState::Free => {
                Ok(now + t.client_idle.min(t.server_idle))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ForwardMode;
    use crate::shard::buffers::BufId;
    use crate::shard::direction::{Ctx, Event, MAX_HELD};

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(1),
            client_idle: Duration::from_secs(10),
            server_idle: Duration::from_secs(20),
            queue: Duration::from_secs(5),
            proxy_header: Duration::from_secs(3),
        }
    }

    fn copy_ctx(buffers_free: usize) -> Ctx {
        Ctx {
            mode: ForwardMode::Copy,
            buffer_size: 4096,
            buffers_free,
            pipe_size: 65536,
        }
    }

    fn forwarding(t0: Instant) -> Pair {
        let mut p = Pair::free(0, t0);
        p.state = PairState::Forwarding;
        let ctx = copy_ctx(10);
        for d in &mut p.dirs {
            d.on(Event::Start, &ctx);
        }
        p
    }

    #[test]
    fn the_quiet_side_times_out_first() {
        let t0 = Instant::now();
        let t = timeouts();
        let mut p = forwarding(t0);
        assert_eq!(p.idle_deadline(t0, &t), Ok(t0 + t.client_idle));
        p.client_seen = t0 + Duration::from_secs(15);
        assert_eq!(
            p.idle_deadline(t0 + Duration::from_secs(16), &t),
            Ok(t0 + t.server_idle)
        );
        assert_eq!(
            p.idle_deadline(t0 + Duration::from_secs(20), &t),
            Err(Side::Server)
        );
    }

    /// A client whose reads are held because the server is slow is not
    /// idle: only the server's own silence counts.
    #[test]
    fn a_held_source_is_not_blamed() {
        let t0 = Instant::now();
        let t = timeouts();
        let mut p = forwarding(t0);
        let ctx = copy_ctx(10);
        for bid in 0..MAX_HELD as u16 {
            p.dirs[UP].on(
                Event::Received {
                    buf: BufId::for_test(bid),
                    len: 4096,
                    more: bid + 1 < MAX_HELD as u16,
                },
                &ctx,
            );
        }
        assert!(!p.dirs[UP].reading());
        // The server keeps taking bytes slowly: it is making progress.
        let later = t0 + Duration::from_secs(12);
        p.server_seen = later;
        assert!(p.idle_deadline(later, &t).is_ok());
        // The server stops taking anything: it is the idle one.
        let much_later = later + t.server_idle;
        assert_eq!(p.idle_deadline(much_later, &t), Err(Side::Server));
    }

    /// The client uploaded, sent FIN and waits; the server takes the last
    /// bytes slowly. The client cannot do anything: it is not idle, and the
    /// slow server is judged by its own progress.
    #[test]
    fn a_client_that_sent_fin_waits_without_blame() {
        let t0 = Instant::now();
        let t = timeouts();
        let mut p = forwarding(t0);
        let ctx = copy_ctx(10);
        p.dirs[UP].on(
            Event::Received {
                buf: BufId::for_test(0),
                len: 4096,
                more: true,
            },
            &ctx,
        );
        p.dirs[UP].on(Event::RecvEnded(0), &ctx);
        assert!(!p.dirs[UP].reading() && p.dirs[UP].undelivered() > 0);
        let later = t0 + Duration::from_secs(15);
        p.server_seen = later;
        assert!(p.idle_deadline(later, &t).is_ok());
    }

    /// A client that half-closed and then stops reading what the server
    /// sends is still idle: it is owed bytes and takes none.
    #[test]
    fn a_half_closed_client_that_stops_reading_is_idle() {
        let t0 = Instant::now();
        let t = timeouts();
        let mut p = forwarding(t0);
        let ctx = copy_ctx(10);
        p.dirs[UP].on(Event::RecvEnded(0), &ctx);
        p.dirs[UP] = Dir::Done;
        p.dirs[DOWN].on(
            Event::Received {
                buf: BufId::for_test(0),
                len: 4096,
                more: true,
            },
            &ctx,
        );
        p.server_seen = t0 + t.client_idle;
        assert_eq!(p.idle_deadline(t0 + t.client_idle, &t), Err(Side::Client));
    }

    #[test]
    fn a_starved_pair_is_never_idle() {
        let t0 = Instant::now();
        let t = timeouts();
        let mut p = forwarding(t0);
        let mut ctx = copy_ctx(0);
        p.dirs[DOWN].on(Event::RecvEnded(-libc::ENOBUFS), &ctx);
        assert!(p.dirs[DOWN].starved());
        let late = t0 + Duration::from_secs(100);
        assert!(p.idle_deadline(late, &t).unwrap() > late);
        ctx.buffers_free = 5;
        p.dirs[DOWN].on(Event::BufferFree, &ctx);
        assert_eq!(p.idle_deadline(late, &t), Err(Side::Client));
    }

    #[test]
    fn a_waiting_client_times_out_on_the_client_timeout() {
        let t0 = Instant::now();
        let t = timeouts();
        let mut p = Pair::free(0, t0);
        p.state = PairState::Waiting;
        assert_eq!(p.idle_deadline(t0, &t), Ok(t0 + t.client_idle));
        assert_eq!(p.idle_deadline(t0 + t.client_idle, &t), Err(Side::Client));
    }
}
