//! The `--hdr-log FILE` output: one corrected-latency histogram per second in
//! the HdrHistogram interval log format (V2 compressed, base64), readable by
//! HdrHistogram's log tools (HistogramLogProcessor, HdrHistogramVisualizer).
//! Values are microseconds; the max column is in milliseconds.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;

use crate::engine::Interval;

/// Writes the intervals of a run that started measuring at `start`.
pub fn write(intervals: &[Interval], start: SystemTime, path: &Path) -> anyhow::Result<()> {
    let mut out = Vec::new();
    {
        let mut ser = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment("ringlb-bench interval log: corrected latency in microseconds")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut ser)?;
        for iv in intervals {
            log.write_histogram(
                &iv.latency,
                Duration::from_secs_f64(iv.start_s),
                Duration::from_secs_f64(iv.len_s),
                None,
            )
            .map_err(|e| anyhow::anyhow!("cannot encode interval {}: {e:?}", iv.index))?;
        }
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn writes_a_readable_log() {
        let ivs: Vec<Interval> = (0..3)
            .map(|i| {
                let mut h = new_histogram();
                h.record(100 * (i + 1)).unwrap();
                Interval {
                    index: i,
                    start_s: i as f64,
                    len_s: 1.0,
                    latency: h,
                    completed: 1,
                    errors: 0,
                    bytes: 0,
                }
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("rb-hdrlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.hlog");
        write(&ivs, SystemTime::now(), &p).unwrap();
        let data = std::fs::read(&p).unwrap();
        let n = IntervalLogIterator::new(&data)
            .filter(|e| matches!(e, Ok(LogEntry::Interval(_))))
            .count();
        assert_eq!(n, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
