//! What to load: an `http://host:port/path` URL for the HTTP workloads, or a
//! `host:port` (optionally `tcp://host:port`) address for the TCP workloads.

use std::net::{SocketAddr, ToSocketAddrs};

use thiserror::Error;

/// A target that could not be understood or resolved.
#[derive(Debug, Error)]
pub enum TargetError {
    #[error("bad URL {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error("cannot resolve {host:?}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host:?} resolved to no address")]
    NoAddress { host: String },
}

/// A resolved target.
#[derive(Debug, Clone)]
pub struct Target {
    /// What the user wrote.
    pub original: String,
    /// Address connected to.
    pub addr: SocketAddr,
    /// Value for the HTTP `Host` header (`host[:port]` as written).
    pub host_header: String,
    /// Request path with query, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses and resolves an `http://` URL.
    pub fn parse_http(url: &str) -> Result<Target, TargetError> {
        let bad = |why| TargetError::Url {
            url: url.to_string(),
            why,
        };
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(bad("https is not supported; use http://"));
        } else {
            return Err(bad("expected http://host:port/path"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(bad("user info in URLs is not supported"));
        }
        let addr = resolve(authority, 80).map_err(|e| match e {
            ResolveFail::Syntax(why) => bad(why),
            ResolveFail::Target(t) => t,
        })?;
        Ok(Target {
            original: url.to_string(),
            addr,
            host_header: authority.to_string(),
            path,
        })
    }

    /// Parses and resolves a `host:port` or `tcp://host:port` address.
    pub fn parse_tcp(s: &str) -> Result<Target, TargetError> {
        let rest = s.strip_prefix("tcp://").unwrap_or(s);
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(TargetError::Url {
                url: s.to_string(),
                why: "expected host:port or tcp://host:port",
            });
        }
        let addr = resolve(rest, 0).map_err(|e| match e {
            ResolveFail::Syntax(why) => TargetError::Url {
                url: s.to_string(),
                why,
            },
            ResolveFail::Target(t) => t,
        })?;
        if addr.port() == 0 {
            return Err(TargetError::Url {
                url: s.to_string(),
                why: "a port is required",
            });
        }
        Ok(Target {
            original: s.to_string(),
            addr,
            host_header: rest.to_string(),
            path: String::new(),
        })
    }
}

enum ResolveFail {
    Syntax(&'static str),
    Target(TargetError),
}

fn resolve(authority: &str, default_port: u16) -> Result<SocketAddr, ResolveFail> {
    if authority.is_empty() {
        return Err(ResolveFail::Syntax("missing host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or(ResolveFail::Syntax("unclosed [ in IPv6 address"))?;
        let host = &v6[..end];
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| ResolveFail::Syntax("bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(ResolveFail::Syntax("junk after IPv6 address")),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| ResolveFail::Syntax("bad port"))?,
            ),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return Err(ResolveFail::Syntax("missing host"));
    }
    let mut addrs = (host, port).to_socket_addrs().map_err(|e| {
        ResolveFail::Target(TargetError::Resolve {
            host: host.to_string(),
            source: e,
        })
    })?;
    addrs.next().ok_or_else(|| {
        ResolveFail::Target(TargetError::NoAddress {
            host: host.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        let t = Target::parse_http("http://127.0.0.1:8080/a/b?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/a/b?x=1");
        assert_eq!(t.host_header, "127.0.0.1:8080");
        let t = Target::parse_http("http://[::1]:81").unwrap();
        assert_eq!(t.addr, "[::1]:81".parse().unwrap());
        assert_eq!(t.path, "/");
        let t = Target::parse_http("http://127.0.0.1?q").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/?q");
    }

    #[test]
    fn bad_urls_name_the_problem() {
        for (u, want) in [
            ("127.0.0.1:80/", "expected http://"),
            ("https://x/", "https"),
            ("http://127.0.0.1:99999/", "bad port"),
            ("http:///x", "missing host"),
        ] {
            let e = Target::parse_http(u).unwrap_err().to_string();
            assert!(e.contains(u) && e.contains(want), "{u}: {e}");
        }
    }

    #[test]
    fn tcp_addrs() {
        assert_eq!(
            Target::parse_tcp("tcp://127.0.0.1:9000").unwrap().addr,
            "127.0.0.1:9000".parse().unwrap()
        );
        assert!(Target::parse_tcp("127.0.0.1").is_err());
    }
}
