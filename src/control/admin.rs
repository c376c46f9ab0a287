//! The admin API: HTTP/1.1 on `[admin] bind`, served by one thread (the
//! `tiny_http` crate) off the data path. Every answer is JSON except the
//! stats page (`GET /`) and `/metrics`.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/` | the live stats page |
//! | GET | `/stats` | every pool, server, listener and shard, as JSON |
//! | GET | `/metrics` | the same for Prometheus |
//! | GET | `/pools/{pool}/servers/{server}` | one server |
//! | POST | `/pools/{pool}/servers/{server}/drain\|ready\|maint` | its state |
//! | PUT | `/pools/{pool}/servers/{server}/weight` | its weight (body: a number) |
//! | POST | `/pools/{pool}/servers` | adds one (body: `{"name","addr","weight"}`) |
//! | DELETE | `/pools/{pool}/servers/{server}` | removes a drained one (409 otherwise) |
//! | POST | `/reload` | re-reads the configuration |
//!
//! With a token configured, every request needs `Authorization: Bearer
//! <token>` (401 otherwise). Unknown pool or server: 404; a bad body: 400;
//! a known path with another method: 405.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server};

use super::servers::{ApiError, StateChange};
use super::{Control, ReloadError};

/// The largest request body read.
const MAX_BODY: u64 = 64 * 1024;

const PAGE: &str = include_str!("page.html");

/// The running admin API.
pub struct Admin {
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (admin.bind): {message}")]
pub struct AdminError {
    addr: SocketAddr,
    message: String,
}

impl Admin {
    pub fn start(
        bind: SocketAddr,
        token: Option<String>,
        control: Arc<Control>,
    ) -> Result<Admin, AdminError> {
        let server = Server::http(bind).map_err(|e| AdminError {
            addr: bind,
            message: e.to_string(),
        })?;
        let addr = server.server_addr().to_ip().unwrap_or(bind);
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let (srv, flag) = (server.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("ringlb-admin".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match srv.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(req)) => handle(req, token.as_deref(), &control),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!("admin API: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
            .map_err(|e| AdminError {
                addr: bind,
                message: e.to_string(),
            })?;
        tracing::info!("admin API on http://{addr}/");
        Ok(Admin {
            server,
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// Where it listens (its real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `given` equals `want`, in time that does not depend on where
/// they differ.
fn same_secret(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn authorized(req: &Request, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    req.headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
        .is_some_and(|given| same_secret(given.trim().as_bytes(), token.as_bytes()))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

/// An answer: status, content type, body.
struct Reply(u16, &'static str, String);

impl Reply {
    fn json(status: u16, v: Value) -> Reply {
        Reply(status, "application/json", v.to_string())
    }

    fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, json!({ "error": message.into() }))
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        Reply::error(e.status(), e.to_string())
    }
}

fn handle(mut req: Request, token: Option<&str>, control: &Control) {
    let reply = if !authorized(&req, token) {
        Reply::error(401, "missing or wrong bearer token")
    } else {
        let mut body = String::new();
        let read = req.as_reader().take(MAX_BODY + 1).read_to_string(&mut body);
        if read.is_err() || body.len() as u64 > MAX_BODY {
            Reply::error(
                400,
                format!("the body must be UTF-8 and at most {MAX_BODY} bytes"),
            )
        } else {
            let method = req.method().clone();
            let path = req.url().split('?').next().unwrap_or("").to_string();
            route(&method, &path, &body, control)
        }
    };
    let Reply(status, kind, body) = reply;
    let mut response = Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", kind))
        .with_header(header("Cache-Control", "no-store"));
    if status == 401 {
        response = response.with_header(header("WWW-Authenticate", "Bearer"));
    }
    if let Err(e) = req.respond(response) {
        tracing::debug!("admin API: cannot answer: {e}");
    }
}

#[derive(Deserialize)]
struct NewServer {
    name: String,
    addr: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

fn route(method: &Method, path: &str, body: &str, control: &Control) -> Reply {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let wrong_method = || Reply::error(405, format!("{method} is not allowed on {path}"));
    match parts.as_slice() {
        [""] => match method {
            Method::Get => Reply(200, "text/html; charset=utf-8", PAGE.to_string()),
            _ => wrong_method(),
        },
        ["stats"] => match method {
            Method::Get => Reply::json(200, json!(control.lock().stats())),
            _ => wrong_method(),
        },
        ["metrics"] => match method {
            Method::Get => {
                let stats = control.lock().stats();
                Reply(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    super::metrics::render(stats),
                )
            }
            _ => wrong_method(),
        },
        ["reload"] => match method {
            Method::Post => match control.reload() {
                Ok(report) => Reply::json(200, json!({ "reloaded": true, "changes": report })),
                Err(ReloadError::Config(errors)) => Reply::json(
                    400,
                    json!({
                        "error": "the new configuration has errors; the running one stays",
                        "errors": errors.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                    }),
                ),
                Err(e) => Reply::error(500, e.to_string()),
            },
            _ => wrong_method(),
        },
        ["pools", pool, "servers"] => match method {
            Method::Post => {
                let new: NewServer = match serde_json::from_str(body) {
                    Ok(n) => n,
                    Err(e) => {
                        return Reply::error(
                            400,
                            format!(
                            "expected {{\"name\": …, \"addr\": \"ip:port\", \"weight\": n}}: {e}"
                        ),
                        )
                    }
                };
                let Ok(addr) = new.addr.parse::<SocketAddr>() else {
                    return Reply::error(400, format!("addr `{}` is not an ip:port", new.addr));
                };
                match control.lock().add_server(pool, &new.name, addr, new.weight) {
                    Ok(s) => Reply::json(201, json!(s)),
                    Err(e) => e.into(),
                }
            }
            _ => wrong_method(),
        },
        ["pools", pool, "servers", server] => match method {
            Method::Get => match control.lock().server_stats(pool, server) {
                Ok(s) => Reply::json(200, json!(s)),
                Err(e) => e.into(),
            },
            Method::Delete => match control.lock().remove_server(pool, server) {
                Ok(()) => Reply::json(200, json!({ "removed": format!("{pool}/{server}") })),
                Err(e) => e.into(),
            },
            _ => wrong_method(),
        },
        ["pools", pool, "servers", server, "weight"] => match method {
            Method::Put => match body.trim().parse::<u32>() {
                Ok(w) => match control.lock().set_weight(pool, server, w) {
                    Ok(s) => Reply::json(200, json!(s)),
                    Err(e) => e.into(),
                },
                Err(_) => Reply::error(
                    400,
                    format!(
                        "the body must be a weight (a whole number), not `{}`",
                        body.trim()
                    ),
                ),
            },
            _ => wrong_method(),
        },
        ["pools", pool, "servers", server, verb] => match (method, StateChange::parse(verb)) {
            (Method::Post, Some(change)) => match control.lock().change_state(pool, server, change)
            {
                Ok(s) => Reply::json(200, json!(s)),
                Err(e) => e.into(),
            },
            (_, Some(_)) => wrong_method(),
            (_, None) => Reply::error(
                404,
                format!("no such action `{verb}` (drain, ready, maint, weight)"),
            ),
        },
        _ => Reply::error(404, format!("no such endpoint: {path}")),
    }
}
