//! The PROXY protocol (HAProxy's specification, versions 1 and 2): the
//! header a balancer sends first on a connection to carry the client's
//! address. Building headers (`send_proxy`) and reading them
//! (`accept_proxy`), with no I/O here: the shard peeks at a connection's
//! first bytes and hands them to [`parse`].
//!
//! Reading is strict: a v1 header is at most 107 bytes and must end in
//! CRLF; a v2 header at most [`V2_MAX`] bytes; anything malformed is an
//! error that says what. `LOCAL` (v2) and `UNKNOWN` (v1) headers, and the
//! v2 `UNSPEC` family, mean "use the connection's own addresses", as the
//! specification says. Other families (unix sockets, datagrams) are
//! refused: they cannot describe a TCP client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
pub const V1_MAX: usize = 107;
/// The longest v2 header accepted: 16 fixed bytes, 36 of IPv6 addresses,
/// and room for TLVs.
pub const V2_MAX: usize = 16 + 36 + 460;
/// The v2 TLV that carries a connection's unique ID.
pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
/// The longest unique ID the specification allows.
pub const UNIQUE_ID_MAX: usize = 128;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection was proxied for this client, to this address.
    Proxied { src: SocketAddr, dst: SocketAddr },
    /// Use the connection's own addresses (v2 `LOCAL` or `UNSPEC`, v1
    /// `UNKNOWN`): a health check, or a sender that does not know.
    Local,
}

/// The result of reading the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes; the data starts after it.
    Complete { len: usize, header: Header },
    /// A valid beginning: more bytes are needed.
    Incomplete,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header (wrong signature)")]
    Signature,
    #[error("PROXY v1 header longer than 107 bytes without CRLF")]
    V1TooLong,
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("PROXY v2 version {0} (only 2 exists)")]
    V2Version(u8),
    #[error("PROXY v2 command {0} (only LOCAL and PROXY exist)")]
    V2Command(u8),
    #[error("PROXY v2 family/protocol {0:#04x} is not TCP over IPv4 or IPv6")]
    V2Family(u8),
    #[error("PROXY v2 header of {0} bytes is longer than the {V2_MAX} accepted")]
    V2TooLong(usize),
    #[error("PROXY v2 address block of {got} bytes, {need} needed for its family")]
    V2Short { got: usize, need: usize },
    #[error("PROXY v2 TLV runs past the header")]
    V2Tlv,
}

/// Reads a header from the first bytes of a connection.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if buf.len() < 16 {
            Ok(Parsed::Incomplete)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return parse_v1(buf);
    }
    Err(ProxyError::Signature)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(ProxyError::V1TooLong);
        }
        // A line feed without its carriage return can never become one.
        if window.contains(&b'\n') {
            return Err(ProxyError::V1("a line feed without a carriage return"));
        }
        return Ok(Parsed::Incomplete);
    };
    let len = cr + 2;
    if buf[..cr].contains(&b'\n') {
        // What a shorter read of the same bytes already refused.
        return Err(ProxyError::V1("a line feed without a carriage return"));
    }
    let line = std::str::from_utf8(&buf[6..cr]).map_err(|_| ProxyError::V1("not ASCII"))?;
    let mut parts = line.split(' ');
    let proto = parts.next().unwrap_or("");
    if proto == "UNKNOWN" {
        return Ok(Parsed::Complete {
            len,
            header: Header::Local,
        });
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::V1("expected 4 fields after the protocol"));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        match proto {
            "TCP4" => s
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ProxyError::V1("not an IPv4 address")),
            "TCP6" => s
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ProxyError::V1("not an IPv6 address")),
            _ => Err(ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
        }
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        if s.is_empty() || s.len() > 5 || (s.len() > 1 && s.starts_with('0')) {
            return Err(ProxyError::V1("a port is not a number from 0 to 65535"));
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProxyError::V1("a port is not a number from 0 to 65535"));
        }
        s.parse()
            .map_err(|_| ProxyError::V1("a port is not a number from 0 to 65535"))
    };
    Ok(Parsed::Complete {
        len,
        header: Header::Proxied {
            src: SocketAddr::new(ip(src)?, port(sport)?),
            dst: SocketAddr::new(ip(dst)?, port(dport)?),
        },
    })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2Version(ver_cmd >> 4));
    }
    let cmd = ver_cmd & 0x0F;
    if cmd > 1 {
        return Err(ProxyError::V2Command(cmd));
    }
    let fam = buf[13];
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = 16 + body;
    if len > V2_MAX {
        return Err(ProxyError::V2TooLong(len));
    }
    // LOCAL carries no address that matters, whatever its family says.
    let need = match fam {
        _ if cmd == 0 => 0,
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        _ => return Err(ProxyError::V2Family(fam)),
    };
    if body < need {
        return Err(ProxyError::V2Short { got: body, need });
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    // TLVs must tile what follows the addresses exactly. A LOCAL or UNSPEC
    // header's block is ignored whole, as the specification says.
    let mut at = if cmd == 0 || fam == 0x00 {
        len
    } else {
        16 + need
    };
    while at < len {
        if at + 3 > len {
            return Err(ProxyError::V2Tlv);
        }
        let l = u16::from_be_bytes([buf[at + 1], buf[at + 2]]) as usize;
        at += 3 + l;
        if at > len {
            return Err(ProxyError::V2Tlv);
        }
    }
    let a = &buf[16..];
    let header = match (cmd, fam) {
        (0, _) | (_, 0x00) => Header::Local,
        (_, 0x11) => {
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Header::Proxied {
                src: SocketAddr::new(ip(0), port(8)),
                dst: SocketAddr::new(ip(4), port(10)),
            }
        }
        _ => {
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Header::Proxied {
                src: SocketAddr::new(ip(0), port(32)),
                dst: SocketAddr::new(ip(16), port(34)),
            }
        }
    };
    Ok(Parsed::Complete { len, header })
}

/// Both addresses in one family: IPv4 ones stay IPv4 unless the other is
/// IPv6, in which case they are written v4-mapped.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    let unmapped = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    };
    let (src, dst) = (unmapped(src), unmapped(dst));
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (v6(src), v6(dst))
    }
}

/// Appends a v1 header for a client at `src` that connected to `dst`.
pub fn write_v1(out: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr) {
    use std::io::Write;
    let (src, dst) = same_family(src, dst);
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    let _ = write!(
        out,
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    );
}

/// Appends a v2 `LOCAL` header (no addresses: the receiver uses the
/// connection's own).
pub fn write_v2_local(out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
}

/// Appends a v2 `PROXY` header, with a `PP2_TYPE_UNIQUE_ID` TLV when
/// `unique_id` is given (at most [`UNIQUE_ID_MAX`] bytes; longer is cut).
pub fn write_v2(out: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr, unique_id: Option<&[u8]>) {
    let (src, dst) = same_family(src, dst);
    let id = unique_id.map(|id| &id[..id.len().min(UNIQUE_ID_MAX)]);
    let addrs = if src.is_ipv4() { 12 } else { 36 };
    let tlv = id.map_or(0, |id| 3 + id.len());
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    out.push(if src.is_ipv4() { 0x11 } else { 0x21 });
    out.extend_from_slice(&((addrs + tlv) as u16).to_be_bytes());
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => unreachable!("same_family gives one family"),
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    if let Some(id) = id {
        out.push(PP2_TYPE_UNIQUE_ID);
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_golden_bytes_both_ways() {
        let mut out = Vec::new();
        write_v1(&mut out, sa("192.0.2.1:56324"), sa("198.51.100.7:443"));
        assert_eq!(out, b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
        let parsed = parse(&[&out[..], b"GET /"].concat()).unwrap();
        assert_eq!(
            parsed,
            Parsed::Complete {
                len: out.len(),
                header: Header::Proxied {
                    src: sa("192.0.2.1:56324"),
                    dst: sa("198.51.100.7:443")
                }
            }
        );
        out.clear();
        write_v1(&mut out, sa("[2001:db8::1]:1"), sa("[2001:db8::2]:65535"));
        assert_eq!(out, b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n");
        out.clear();
        // Mixed families are written as IPv6.
        write_v1(&mut out, sa("192.0.2.1:5"), sa("[2001:db8::2]:6"));
        assert_eq!(out, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 5 6\r\n");
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 whatever\r\nrest").unwrap(),
            Parsed::Complete {
                len: 32,
                header: Header::Local
            }
        );
    }

    #[test]
    fn v2_golden_bytes_both_ways() {
        let mut out = Vec::new();
        write_v2(
            &mut out,
            sa("192.0.2.1:56324"),
            sa("198.51.100.7:443"),
            None,
        );
        let want: Vec<u8> = [
            &V2_SIGNATURE[..],
            &[0x21, 0x11, 0x00, 0x0C],
            &[192, 0, 2, 1, 198, 51, 100, 7],
            &[0xDC, 0x04, 0x01, 0xBB],
        ]
        .concat();
        assert_eq!(out, want);
        assert_eq!(
            parse(&out).unwrap(),
            Parsed::Complete {
                len: 28,
                header: Header::Proxied {
                    src: sa("192.0.2.1:56324"),
                    dst: sa("198.51.100.7:443")
                }
            }
        );
        out.clear();
        write_v2(
            &mut out,
            sa("[2001:db8::1]:1"),
            sa("[2001:db8::2]:2"),
            Some(b"abc"),
        );
        assert_eq!(out.len(), 16 + 36 + 3 + 3);
        assert_eq!(&out[12..16], &[0x21, 0x21, 0x00, 36 + 6]);
        assert_eq!(&out[52..], &[PP2_TYPE_UNIQUE_ID, 0, 3, b'a', b'b', b'c']);
        assert_eq!(
            parse(&out).unwrap(),
            Parsed::Complete {
                len: out.len(),
                header: Header::Proxied {
                    src: sa("[2001:db8::1]:1"),
                    dst: sa("[2001:db8::2]:2")
                }
            }
        );
        // LOCAL: the connection's own addresses.
        let local = [&V2_SIGNATURE[..], &[0x20, 0x00, 0x00, 0x00]].concat();
        assert_eq!(
            parse(&local).unwrap(),
            Parsed::Complete {
                len: 16,
                header: Header::Local
            }
        );
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let mut v1 = Vec::new();
        write_v1(&mut v1, sa("192.0.2.1:1"), sa("192.0.2.2:2"));
        let mut v2 = Vec::new();
        write_v2(&mut v2, sa("192.0.2.1:1"), sa("192.0.2.2:2"), Some(b"id"));
        for h in [v1, v2] {
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut]), Ok(Parsed::Incomplete), "{cut}");
            }
            assert!(matches!(parse(&h), Ok(Parsed::Complete { .. })));
        }
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        let bad: &[(&[u8], ProxyError)] = &[
            (b"GET / HTTP/1.1\r\n", ProxyError::Signature),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                ProxyError::V1("a line feed without a carriage return"),
            ),
            (
                b"PROXY UNKNOWN a\nb\r\n",
                ProxyError::V1("a line feed without a carriage return"),
            ),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                ProxyError::V1("expected 4 fields after the protocol"),
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
                ProxyError::V1("not an IPv4 address"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
                ProxyError::V1("a port is not a number from 0 to 65535"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
                ProxyError::V1("a port is not a number from 0 to 65535"),
            ),
        ];
        for (input, want) in bad {
            assert_eq!(
                parse(input).as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
        let v2 = |ver_cmd: u8, fam: u8, len: u16, rest: &[u8]| {
            [&V2_SIGNATURE[..], &[ver_cmd, fam], &len.to_be_bytes(), rest].concat()
        };
        assert_eq!(
            parse(&v2(0x31, 0x11, 12, &[0; 12])),
            Err(ProxyError::V2Version(3))
        );
        assert_eq!(
            parse(&v2(0x22, 0x11, 12, &[0; 12])),
            Err(ProxyError::V2Command(2))
        );
        // Unix sockets, datagrams, and unknown families.
        for fam in [0x31, 0x12, 0x22, 0x41] {
            assert_eq!(
                parse(&v2(0x21, fam, 12, &[0; 12])),
                Err(ProxyError::V2Family(fam))
            );
        }
        assert_eq!(
            parse(&v2(0x21, 0x11, 8, &[0; 8])),
            Err(ProxyError::V2Short { got: 8, need: 12 })
        );
        assert_eq!(
            parse(&v2(0x21, 0x11, 600, &[])),
            Err(ProxyError::V2TooLong(616))
        );
        // A TLV whose length runs past the header.
        assert_eq!(
            parse(&v2(
                0x21,
                0x11,
                15,
                &[[0u8; 12].as_slice(), &[0x05, 0x00, 0x09]].concat()
            )),
            Err(ProxyError::V2Tlv)
        );
        // LOCAL may name any family, with or without its addresses.
        assert_eq!(
            parse(&v2(0x20, 0x11, 0, &[])),
            Ok(Parsed::Complete {
                len: 16,
                header: Header::Local
            })
        );
        assert_eq!(
            parse(&v2(0x20, 0x31, 4, &[0; 4])),
            Ok(Parsed::Complete {
                len: 20,
                header: Header::Local
            })
        );
    }
}
