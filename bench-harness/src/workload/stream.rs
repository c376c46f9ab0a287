//! Bulk TCP streaming workload: every connection uploads (sends without pause)
//! or downloads (receives without pause) for the whole run; measured in Gbit/s.

use std::str::FromStr;

/// Which way the bytes flow, seen from the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "upload" | "up" => Ok(Direction::Upload),
            "download" | "down" => Ok(Direction::Download),
            _ => Err(format!("bad direction {s:?}: expected upload or download")),
        }
    }
}

/// Stream settings.
#[derive(Debug, Clone)]
pub struct StreamWorkload {
    pub direction: Direction,
    /// Bytes per send or receive operation.
    pub chunk: usize,
}

impl StreamWorkload {
    /// The upload buffer.
    pub fn buffer(&self) -> Vec<u8> {
        vec![0x5a; self.chunk]
    }
}
