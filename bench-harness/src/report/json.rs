//! The `--json FILE` output: the [`Report`] serialized, and read back (for plots).

use std::path::Path;

use anyhow::Context;

use super::Report;

/// Writes `report` as pretty JSON to `path`.
pub fn write(report: &Report, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a report written by [`write`].
pub fn read(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a ringlb-bench JSON report", path.display()))
}
