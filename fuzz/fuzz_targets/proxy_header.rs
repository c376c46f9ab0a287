//! Both PROXY protocol parsers, and the writers' round trip
//! (`ringlb::fuzzing::proxy_header`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringlb::fuzzing::proxy_header(data));
