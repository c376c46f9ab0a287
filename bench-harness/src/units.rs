//! Human units on the command line: durations (`30s`, `2m`, `250ms`, bare
//! numbers are seconds), rates (`2000`, `10k`, `1.5M`, optional `/s`) and byte
//! sizes (`64`, `16k`, `1m`, binary multiples).

use std::time::Duration;

use thiserror::Error;

/// A value on the command line that could not be understood.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("bad duration {0:?}: expected e.g. 30s, 2m, 250ms, 1h or a number of seconds")]
    Duration(String),
    #[error("bad rate {0:?}: expected e.g. 2000, 10k, 1.5M (per second)")]
    Rate(String),
    #[error("bad size {0:?}: expected e.g. 64, 16k, 1m (bytes, binary multiples)")]
    Size(String),
}

/// Parses a duration such as `30s`, `2m`, `1m30s`, `250ms` or `10` (seconds).
///
/// ```
/// use std::time::Duration;
/// use ringlb_bench::units::parse_duration;
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError::Duration(s.to_string()));
    }
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(UnitError::Duration(s.to_string()));
    }
    humantime::parse_duration(t).map_err(|_| UnitError::Duration(s.to_string()))
}

fn split_suffix(t: &str) -> (&str, &str) {
    let pos = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    (&t[..pos], t[pos..].trim())
}

/// Parses a rate per second such as `2000`, `10k`, `1.5M` or `500/s` (decimal multiples).
///
/// ```
/// use ringlb_bench::units::parse_rate;
/// assert_eq!(parse_rate("10k").unwrap(), 10_000.0);
/// assert_eq!(parse_rate("500/s").unwrap(), 500.0);
/// assert!(parse_rate("-3").is_err());
/// ```
pub fn parse_rate(s: &str) -> Result<f64, UnitError> {
    let err = || UnitError::Rate(s.to_string());
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let (num, suffix) = split_suffix(t);
    let n: f64 = num.parse().map_err(|_| err())?;
    let mult = match suffix {
        "" => 1.0,
        "k" | "K" => 1e3,
        "m" | "M" => 1e6,
        "g" | "G" => 1e9,
        _ => return Err(err()),
    };
    let r = n * mult;
    if !r.is_finite() || r <= 0.0 {
        return Err(err());
    }
    Ok(r)
}

/// Parses a byte size such as `64`, `16k`, `1m`, `4KiB` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size(s.to_string());
    let (num, suffix) = split_suffix(s.trim());
    let n: f64 = num.parse().map_err(|_| err())?;
    let mult = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(err()),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 || v.fract() != 0.0 {
        return Err(err());
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2000").unwrap(), 2000.0);
        assert_eq!(parse_rate("10k").unwrap(), 10_000.0);
        assert_eq!(parse_rate("1.5M").unwrap(), 1_500_000.0);
        assert_eq!(parse_rate("500/s").unwrap(), 500.0);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("10x").is_err());
        let e = parse_rate("abc").unwrap_err().to_string();
        assert!(e.contains("\"abc\""), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64").unwrap(), 64);
        assert_eq!(parse_size("16k").unwrap(), 16384);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("0.5k").unwrap(), 512);
        assert!(parse_size("1.3").is_err());
        assert!(parse_size("12q").is_err());
    }
}
