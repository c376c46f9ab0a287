//! The key a client hashes to: its address (and port, for `hash_key =
//! "src_port"`), hashed by a fixed function so that every shard and every
//! ringlb process maps the same client the same way. An IPv4 client seen
//! through a v4-mapped IPv6 address hashes as the IPv4 address.

use std::net::{IpAddr, SocketAddr};

/// A fixed 64-bit hash (FNV-1a over the bytes, then the murmur3 finalizer
/// so nearby addresses spread over the whole range). Never seeded: its
/// output must not change between processes or versions.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    fmix64(h)
}

/// murmur3's 64-bit finalizer: every input bit affects every output bit.
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The hash of a client address, with or without its port.
pub fn client_key(addr: &SocketAddr, with_port: bool) -> u64 {
    let mut buf = [0u8; 18];
    let ip = match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    let n = match ip {
        IpAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            buf[..16].copy_from_slice(&v6.octets());
            16
        }
    };
    let n = if with_port {
        buf[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
        n + 2
    } else {
        n
    };
    stable_hash(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values_never_change() {
        // Instances behind ECMP must agree: these values are a contract.
        let a: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        assert_eq!(client_key(&a, false), stable_hash(&[10, 1, 2, 3]));
        assert_eq!(stable_hash(b""), fmix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(stable_hash(&[10, 1, 2, 3]), 0xb8b3_87fa_0a1c_d4e9_u64);
    }

    #[test]
    fn mapped_v6_is_v4_and_the_port_counts_only_when_asked() {
        let v4: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:4000".parse().unwrap();
        let other_port: SocketAddr = "10.1.2.3:4001".parse().unwrap();
        assert_eq!(client_key(&v4, false), client_key(&mapped, false));
        assert_eq!(client_key(&v4, true), client_key(&mapped, true));
        assert_eq!(client_key(&v4, false), client_key(&other_port, false));
        assert_ne!(client_key(&v4, true), client_key(&other_port, true));
    }
}
