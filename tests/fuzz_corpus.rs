//! Replays the fuzz corpus (`fuzz/corpus/`, seeds and what fuzzing kept)
//! through the fuzz targets' checks on the stable toolchain: every input
//! that once found a new path must still pass.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails", path.display());
        n += 1;
    }
    assert!(n >= 5, "{target}: only {n} inputs in {}", dir.display());
}

#[test]
fn config_corpus() {
    replay("config", ringlb::fuzzing::config);
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header", ringlb::fuzzing::proxy_header);
}
