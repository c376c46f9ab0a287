//! ringlb-bench: an io_uring load generator (wrk-style closed loop and
//! wrk2-style constant rate with coordinated-omission correction), its
//! reports (summary, HdrHistogram spectrum, JSON, interval log), latency
//! plots, and simple fast backends to load.

pub mod chunked;
pub mod cli;
pub mod clock;
pub mod engine;
pub mod http_parse;
pub mod plot;
pub mod report;
pub mod schedule;
pub mod serve;
pub mod stats;
pub mod target;
pub mod units;
pub mod workload;
