//! The configuration loader on arbitrary text (`ringlb::fuzzing::config`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringlb::fuzzing::config(data));
