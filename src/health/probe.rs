//! What an HTTP check sends and how it reads the answer: the request, and
//! the status line's code. Pure functions, no I/O.

use std::net::SocketAddr;

use crate::config::CheckConfig;

/// `GET path HTTP/1.1` with `Host` (the configured one, or the server's
/// address) and `Connection: close`.
/// The request for `server`: after a PROXY protocol `LOCAL` header (v2) or
/// `UNKNOWN` one (v1) when the server expects a header (`send_proxy`), as
/// HAProxy's `check-send-proxy` does, so that such a server is not marked
/// down for a check that could never pass.
pub fn request_to(cfg: &CheckConfig, server: &crate::pool::Server) -> Vec<u8> {
    let mut out = Vec::new();
    match server.send_proxy {
        crate::config::SendProxy::Off => {}
        crate::config::SendProxy::V1 => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        crate::config::SendProxy::V2 => crate::proxy_protocol::write_v2_local(&mut out),
    }
    out.extend_from_slice(&request(cfg, &server.addr));
    out
}

pub fn request(cfg: &CheckConfig, addr: &SocketAddr) -> Vec<u8> {
    let host = cfg.host.clone().unwrap_or_else(|| addr.to_string());
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringlb-check\r\nConnection: close\r\n\r\n",
        cfg.path
    )
    .into_bytes()
}

/// What the bytes read so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The status line is not complete yet.
    Partial,
    Code(u16),
    /// Not an HTTP/1.x status line.
    Malformed,
}

/// Reads the status code from the start of a response.
pub fn status(bytes: &[u8]) -> Status {
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        // A status line longer than this is not one.
        return if bytes.len() > 512
            || (!bytes.is_empty() && !b"HTTP/1.".starts_with(&bytes[..bytes.len().min(7)]))
        {
            Status::Malformed
        } else {
            Status::Partial
        };
    };
    let line = &bytes[..end];
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Status::Malformed;
    };
    if !version.starts_with(b"HTTP/1.") || code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Status::Malformed;
    }
    Status::Code(code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_code_once_the_line_is_complete() {
        assert_eq!(status(b""), Status::Partial);
        assert_eq!(status(b"HTTP/1.1 2"), Status::Partial);
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Status::Code(200));
        assert_eq!(
            status(b"HTTP/1.0 503 Service Unavailable\r\nServer: x\r\n"),
            Status::Code(503)
        );
        assert_eq!(status(b"HTTP/1.1 204\r\n"), Status::Code(204));
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), Status::Malformed);
        assert_eq!(status(b"SSH-2.0"), Status::Malformed);
        assert_eq!(status(b"HTTP/1.1 2x0 OK\r\n"), Status::Malformed);
        assert_eq!(status(&[b'H'; 600]), Status::Malformed);
    }

    #[test]
    fn the_request_names_the_path_and_host() {
        let mut cfg = CheckConfig {
            path: "/healthz".into(),
            ..CheckConfig::default()
        };
        let addr: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let r = String::from_utf8(request(&cfg, &addr)).unwrap();
        assert!(
            r.starts_with("GET /healthz HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n"),
            "{r}"
        );
        assert!(r.ends_with("\r\n\r\n"));
        cfg.host = Some("app.internal".into());
        let r = String::from_utf8(request(&cfg, &addr)).unwrap();
        assert!(r.contains("Host: app.internal\r\n"));
    }
}
