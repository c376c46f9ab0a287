//! Value parsing shared by the file and the command line: sizes, durations,
//! addresses (and their resolution), and the CPUs this process may run on.
//! Ranges and other rules are `validate`'s.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The ids of the CPUs this process may run on (empty when unknown).
pub(crate) fn online_cpus_ids() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}

/// Parses `4096`, `16k`, `64KiB`, `1m` into bytes.
///
/// ```
/// use ringlb::config::parse_size;
/// assert_eq!(parse_size("64KiB"), Some(65536));
/// assert_eq!(parse_size("1m"), Some(1 << 20));
/// assert_eq!(parse_size("lots"), None);
/// ```
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses a human duration (`250ms`, `5s`, `1m`); the error says what is
/// wrong and what to write instead.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 5s or 250ms"))
}

/// Resolves `ip:port`, `[v6]:port` or `host:port` (names are looked up once,
/// at load).
/// Set by the fuzz targets: host names are not looked up (an error
/// instead), so fuzzing does no network I/O.
pub static NO_NAME_LOOKUPS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "`{s}` is not an address: write host:port, e.g. 127.0.0.1:8080"
        ));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!("`{s}`: `{port}` is not a port number"));
    };
    if host.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    if NO_NAME_LOOKUPS.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(format!("`{host}`: host names are not looked up here"));
    }
    match (host.trim_matches(|c| c == '[' || c == ']'), port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("`{host}` resolves to no address")),
        Err(e) => Err(format!("cannot resolve `{host}`: {e}")),
    }
}
