//! What the fuzz targets (`fuzz/`) run on each input, here so that the
//! corpus replay test (`tests/fuzz_corpus.rs`) runs exactly the same checks
//! on the stable toolchain. Each function panics on a broken invariant.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::proxy_protocol::{self, Header, Parsed, V1_MAX, V2_MAX};

/// The configuration loader on arbitrary text: it reports errors, never
/// panics; an accepted configuration displays (`ringlb check`).
pub fn config(data: &[u8]) {
    crate::config::values::NO_NAME_LOOKUPS.store(true, std::sync::atomic::Ordering::Relaxed);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = crate::Config::parse(text, Path::new("fuzz.toml")) {
        let _ = config.to_string();
    }
}

/// Both PROXY header parsers on arbitrary bytes, and the writers: a
/// complete header is no longer than the protocol allows and than the
/// input, parses the same alone, and what the writers produce for
/// addresses taken from the input parses back to those addresses.
pub fn proxy_header(data: &[u8]) {
    let parsed = proxy_protocol::parse(data);
    if data.len() >= V2_MAX {
        assert_ne!(
            parsed,
            Ok(Parsed::Incomplete),
            "undecided after the longest header"
        );
    }
    if let Ok(Parsed::Complete { len, header }) = parsed {
        // The shard peeks while a header arrives: every part of it must
        // read as incomplete, never as an error.
        for cut in 0..len {
            assert_eq!(
                proxy_protocol::parse(&data[..cut]),
                Ok(Parsed::Incomplete),
                "cut at {cut}"
            );
        }
        assert!(len <= data.len(), "a header longer than its input");
        assert!(len <= V1_MAX.max(V2_MAX), "a header longer than allowed");
        assert_eq!(
            proxy_protocol::parse(&data[..len]),
            Ok(Parsed::Complete { len, header }),
            "the header alone parses differently"
        );
    }
    // Addresses from the input's first bytes.
    let mut b = [0u8; 36];
    let n = data.len().min(36);
    b[..n].copy_from_slice(&data[..n]);
    let port = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let (src, dst) = if b[0] & 1 == 0 {
        let v4 = |i: usize| IpAddr::V4(Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]));
        (
            SocketAddr::new(v4(2), port(10)),
            SocketAddr::new(v4(6), port(12)),
        )
    } else {
        let mut s = [0u8; 16];
        s.copy_from_slice(&b[1..17]);
        let mut d = [0u8; 16];
        d.copy_from_slice(&b[17..33]);
        (
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s)), port(33)),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(d)), port(34)),
        )
    };
    for v2 in [false, true] {
        let mut out = Vec::new();
        if v2 {
            let id_len = data.len().min(proxy_protocol::UNIQUE_ID_MAX);
            proxy_protocol::write_v2(&mut out, src, dst, Some(&data[..id_len]));
        } else {
            proxy_protocol::write_v1(&mut out, src, dst);
        }
        let Ok(Parsed::Complete { len, header }) = proxy_protocol::parse(&out) else {
            panic!("a written header does not parse: {out:?}");
        };
        assert_eq!(len, out.len());
        let Header::Proxied { src: s, dst: d } = header else {
            panic!("a written header is not PROXY");
        };
        // Mixed or v4-mapped families are written as one family: compare
        // the IPv4 view of each address.
        let canon = |a: SocketAddr| match a.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
            IpAddr::V4(_) => a,
        };
        assert_eq!((canon(s), canon(d)), (canon(src), canon(dst)));
    }
}
