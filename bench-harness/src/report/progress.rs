//! The live progress line shown once per second on a terminal (elapsed,
//! requests/s, errors, current p99); nothing at all when stderr is not a TTY.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::Interval;

/// Progress display; inert when stderr is not a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    stream: bool,
}

impl Progress {
    pub fn new(enabled: bool, stream: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
            b.set_message("starting…");
            b
        });
        Progress { bar, stream }
    }

    /// Shows the figures of the second just completed.
    pub fn interval(&self, iv: &Interval) {
        let Some(b) = &self.bar else { return };
        let end = iv.start_s + iv.len_s;
        let msg = if self.stream {
            format!(
                "{end:6.1}s  {:8.2} Gbit/s  errors {}",
                iv.bytes as f64 * 8.0 / 1e9 / iv.len_s.max(1e-9),
                iv.errors
            )
        } else {
            let p99 = if iv.latency.is_empty() {
                0
            } else {
                iv.latency.value_at_quantile(0.99)
            };
            format!(
                "{end:6.1}s  {:10.0} req/s  errors {}  p99 {}",
                iv.completed as f64 / iv.len_s.max(1e-9),
                iv.errors,
                super::summary::fmt_us(p99 as f64)
            )
        };
        b.set_message(msg);
        b.tick();
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
