//! Logging from the data path without flooding: one line per connection
//! that failed would make a dead backend or an fd shortage a denial of
//! service on the shard itself.
//!
//! Each kind of event has a one-second window. The first occurrence opens
//! the window and is written in full; later ones in the same window are
//! only counted, and once the window ends one summary line says how many
//! there were. So a kind writes at most two lines a second, whatever the
//! rate of failures. Counting costs an integer increment and allocates
//! nothing; the caller formats a line only when [`LogLimiter::admit`] says
//! so, and `tracing`'s macros format nothing unless their level is enabled.

use std::time::{Duration, Instant};

/// How long one window lasts.
pub const WINDOW: Duration = Duration::from_secs(1);

/// The kinds of data-path events that are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// Accepting paused: the process's connection budget is used up.
    AcceptBudget,
    /// Accepting paused: out of fds or memory.
    AcceptResources,
    /// Any other accept error (backing off).
    AcceptError,
    /// No fd for a server socket: the client waits.
    SocketResources,
    /// A server socket could not be created for another reason.
    SocketError,
    /// A connect failed or timed out.
    ConnectFailed,
    /// No server could take a client.
    NoServer,
    /// A client was turned away by `maxqueue`.
    QueueFull,
    /// A client waited `timeouts.queue` without a slot.
    QueueTimeout,
    /// A failing server was not ejected: it is the last usable one.
    LastServerKept,
    /// A malformed PROXY header, or one from an untrusted peer.
    ProxyHeader,
    /// Accepting paused: a listener is at its `maxconn`.
    AcceptMaxconn,
}

const KINDS: usize = 12;

impl LogKind {
    fn index(self) -> usize {
        self as usize
    }

    const ALL: [LogKind; KINDS] = [
        LogKind::AcceptBudget,
        LogKind::AcceptResources,
        LogKind::AcceptError,
        LogKind::SocketResources,
        LogKind::SocketError,
        LogKind::ConnectFailed,
        LogKind::NoServer,
        LogKind::QueueFull,
        LogKind::QueueTimeout,
        LogKind::LastServerKept,
        LogKind::ProxyHeader,
        LogKind::AcceptMaxconn,
    ];

    /// What the summary line calls these events.
    pub fn describe(self) -> &'static str {
        match self {
            LogKind::AcceptBudget => "accept pauses at the connection budget",
            LogKind::AcceptResources => "accept pauses for lack of fds or memory",
            LogKind::AcceptMaxconn => "clients held at a listener's maxconn",
            LogKind::AcceptError => "accept errors",
            LogKind::SocketResources => "server sockets delayed for lack of fds",
            LogKind::SocketError => "server sockets that could not be created",
            LogKind::ConnectFailed => "failed server connects",
            LogKind::NoServer => "clients closed with no server to take them",
            LogKind::QueueFull => "clients turned away by a full queue",
            LogKind::QueueTimeout => "clients closed after the queue timeout",
            LogKind::LastServerKept => "failures of a last usable server (not ejected)",
            LogKind::ProxyHeader => "clients closed for a bad or untrusted PROXY header",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    opened: Option<Instant>,
    suppressed: u64,
}

/// One shard's windows, one per [`LogKind`].
#[derive(Debug, Default)]
pub struct LogLimiter {
    windows: [Window; KINDS],
}

/// A summary that is due: `count` more events of `kind` in `over`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub kind: LogKind,
    pub count: u64,
    pub over: Duration,
}

impl LogLimiter {
    /// Whether to write this occurrence of `kind` now; if not, it is counted
    /// for a later summary (see [`LogLimiter::next_due`]).
    pub fn admit(&mut self, kind: LogKind, now: Instant) -> bool {
        let w = &mut self.windows[kind.index()];
        match w.opened {
            Some(t) if now.saturating_duration_since(t) < WINDOW => {
                w.suppressed += 1;
                false
            }
            _ if w.suppressed > 0 => {
                // The previous window's summary is still due: count this
                // one in it rather than write two lines at once.
                w.suppressed += 1;
                false
            }
            _ => {
                w.opened = Some(now);
                true
            }
        }
    }

    /// When the next summary is due, if any is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.windows
            .iter()
            .filter(|w| w.suppressed > 0)
            .filter_map(|w| w.opened.map(|t| t + WINDOW))
            .min()
    }

    /// Takes every summary due at `now`.
    pub fn due(&mut self, now: Instant, mut emit: impl FnMut(Summary)) {
        for kind in LogKind::ALL {
            let w = &mut self.windows[kind.index()];
            let Some(opened) = w.opened else { continue };
            if w.suppressed > 0 && now.saturating_duration_since(opened) >= WINDOW {
                emit(Summary {
                    kind,
                    count: w.suppressed,
                    over: now.saturating_duration_since(opened),
                });
                w.suppressed = 0;
                w.opened = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_writes_one_line_then_one_summary_per_window() {
        let mut l = LogLimiter::default();
        let t0 = Instant::now();
        let mut written = 0;
        let mut summaries = Vec::new();
        // 10,000 failures a second for 3 seconds, summaries flushed every 10 ms.
        for i in 0..30_000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            if l.admit(LogKind::ConnectFailed, now) {
                written += 1;
            }
            if i % 100 == 0 {
                l.due(now, |s| summaries.push(s));
            }
        }
        l.due(t0 + Duration::from_secs(4), |s| summaries.push(s));
        let counted: u64 = summaries.iter().map(|s| s.count).sum();
        assert_eq!(
            written as u64 + counted,
            30_000,
            "every event is accounted for"
        );
        assert!(written <= 3, "{written} lines written");
        assert!(summaries.len() <= 3, "{summaries:?}");
        assert!(summaries.iter().all(|s| s.kind == LogKind::ConnectFailed));
    }

    #[test]
    fn kinds_are_limited_apart_and_quiet_kinds_log_at_once() {
        let mut l = LogLimiter::default();
        let t0 = Instant::now();
        assert!(l.admit(LogKind::AcceptError, t0));
        assert!(!l.admit(LogKind::AcceptError, t0));
        assert!(l.admit(LogKind::NoServer, t0));
        assert_eq!(l.next_due(), Some(t0 + WINDOW));
        let mut got = Vec::new();
        l.due(t0 + WINDOW / 2, |s| got.push(s));
        assert!(got.is_empty());
        l.due(t0 + WINDOW, |s| got.push(s));
        assert_eq!(
            got,
            [Summary {
                kind: LogKind::AcceptError,
                count: 1,
                over: WINDOW
            }]
        );
        assert_eq!(l.next_due(), None);
        // A later occurrence, after a quiet second, is written in full again.
        assert!(l.admit(LogKind::AcceptError, t0 + 3 * WINDOW));
    }
}
