//! HTTP/1.1 workload: builds the request sent on every request of a run,
//! keep-alive by default or `Connection: close` with a new TCP connection per
//! request (`--close`). Responses are parsed by [`crate::http_parse`].

use thiserror::Error;

use crate::target::Target;

/// A header given on the command line that is not `Name: value`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad header {0:?}: expected 'Name: value'")]
pub struct HeaderError(pub String);

/// Parses `Name: value`, checking the name is a valid token and the value has
/// no line breaks.
pub fn parse_header(s: &str) -> Result<(String, String), HeaderError> {
    let err = || HeaderError(s.to_string());
    let (name, value) = s.split_once(':').ok_or_else(err)?;
    let name = name.trim();
    let value = value.trim();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) || value.contains(['\r', '\n']) {
        return Err(err());
    }
    Ok((name.to_string(), value.to_string()))
}

/// HTTP request settings.
#[derive(Debug, Clone)]
pub struct HttpWorkload {
    /// New TCP connection per request.
    pub close: bool,
    pub method: String,
    /// Extra headers; a `Host` given here replaces the default one.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Default for HttpWorkload {
    fn default() -> Self {
        HttpWorkload {
            close: false,
            method: "GET".into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

impl HttpWorkload {
    /// The exact bytes of one request to `target`.
    pub fn request_bytes(&self, target: &Target) -> Vec<u8> {
        let mut s = format!("{} {} HTTP/1.1\r\n", self.method, target.path);
        let has = |n: &str| self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !has("host") {
            s.push_str(&format!("Host: {}\r\n", target.host_header));
        }
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.close && !has("connection") {
            s.push_str("Connection: close\r\n");
        }
        if !self.body.is_empty() && !has("content-length") {
            s.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        s.push_str("\r\n");
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// Whether responses have no body regardless of their headers.
    pub fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_requests() {
        let t = Target::parse_http("http://127.0.0.1:8080/x?y").unwrap();
        let mut w = HttpWorkload::default();
        assert_eq!(
            w.request_bytes(&t),
            b"GET /x?y HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        );
        w.close = true;
        w.headers.push(parse_header("X-A:  b ").unwrap());
        let r = String::from_utf8(w.request_bytes(&t)).unwrap();
        assert!(r.ends_with("X-A: b\r\nConnection: close\r\n\r\n"), "{r}");
    }

    #[test]
    fn rejects_bad_headers() {
        assert!(parse_header("NoColon").is_err());
        assert!(parse_header("Bad Name: v").is_err());
        assert!(parse_header(": v").is_err());
        let e = parse_header("x").unwrap_err().to_string();
        assert!(e.contains("\"x\""), "{e}");
    }
}
