//! `ringlb ctl`: the admin API for shell users. Each command is one HTTP
//! request (the `ureq` crate); the answer is printed (tables for `stats`,
//! JSON with `--json`), and the exit code says whether it succeeded.
//!
//! Where the API is: `--admin URL`, else `RINGLB_ADMIN`, else `[admin] bind`
//! of `--config FILE`, else `http://127.0.0.1:9900`. The token: `--token`,
//! else `RINGLB_TOKEN`, else the configuration file's.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The admin API's base URL (default: RINGLB_ADMIN, the config's
    /// admin.bind, or http://127.0.0.1:9900).
    #[arg(long)]
    pub admin: Option<String>,
    /// Bearer token (default: RINGLB_TOKEN, or the config's).
    #[arg(long)]
    pub token: Option<String>,
    /// Read admin.bind and the token from this configuration file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print the API's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Every pool, server, listener and shard.
    Stats,
    /// The Prometheus metrics.
    Metrics,
    /// No new connections for a server; open ones finish.
    Drain { pool: String, server: String },
    /// Back in service (from drain or maint).
    Ready { pool: String, server: String },
    /// Out for maintenance: no new connections, checks pause.
    Maint { pool: String, server: String },
    /// Set a server's weight.
    Weight {
        pool: String,
        server: String,
        weight: u32,
    },
    /// Add a server to a pool.
    Add {
        pool: String,
        name: String,
        addr: String,
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove a drained server with no connection left.
    Remove { pool: String, server: String },
    /// Re-read the configuration file.
    Reload,
}

/// Why a `ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the admin API at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
    #[error("{0}")]
    Config(String),
}

/// Runs a `ctl` command; what to print on success.
pub fn run(args: &CtlArgs) -> Result<String, CtlError> {
    let (base, token) = endpoint(args)?;
    let base = base.trim_end_matches('/').to_string();
    let (method, path, body) = match &args.command {
        CtlCommand::Stats => ("GET", "/stats".to_string(), None),
        CtlCommand::Metrics => ("GET", "/metrics".to_string(), None),
        CtlCommand::Drain { pool, server } => (
            "POST",
            format!("/pools/{pool}/servers/{server}/drain"),
            None,
        ),
        CtlCommand::Ready { pool, server } => (
            "POST",
            format!("/pools/{pool}/servers/{server}/ready"),
            None,
        ),
        CtlCommand::Maint { pool, server } => (
            "POST",
            format!("/pools/{pool}/servers/{server}/maint"),
            None,
        ),
        CtlCommand::Weight {
            pool,
            server,
            weight,
        } => (
            "PUT",
            format!("/pools/{pool}/servers/{server}/weight"),
            Some(weight.to_string()),
        ),
        CtlCommand::Add {
            pool,
            name,
            addr,
            weight,
        } => (
            "POST",
            format!("/pools/{pool}/servers"),
            Some(serde_json::json!({ "name": name, "addr": addr, "weight": weight }).to_string()),
        ),
        CtlCommand::Remove { pool, server } => {
            ("DELETE", format!("/pools/{pool}/servers/{server}"), None)
        }
        CtlCommand::Reload => ("POST", "/reload".to_string(), Some(String::new())),
    };
    let url = format!("{base}{path}");
    let (status, text) = request(method, &url, token.as_deref(), body)?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .map(|v| {
                let mut m = v["error"].as_str().unwrap_or(&text).to_string();
                if let Some(errors) = v["errors"].as_array() {
                    for e in errors {
                        m.push_str("\n  ");
                        m.push_str(e.as_str().unwrap_or_default());
                    }
                }
                m
            })
            .unwrap_or(text);
        return Err(CtlError::Refused { status, message });
    }
    if args.json || matches!(args.command, CtlCommand::Metrics) {
        return Ok(text);
    }
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    Ok(match &args.command {
        CtlCommand::Stats => stats_table(&v),
        CtlCommand::Remove { pool, server } => format!("removed {pool}/{server}\n"),
        CtlCommand::Reload => format!("reloaded: {}\n", v["changes"]),
        _ => server_line(&v),
    })
}

fn endpoint(args: &CtlArgs) -> Result<(String, Option<String>), CtlError> {
    let from_file = match &args.config {
        Some(path) => {
            let config = crate::Config::load(path)
                .map_err(|e| CtlError::Config(format!("{}: {e}", path.display())))?;
            config.admin
        }
        None => None,
    };
    let base = args
        .admin
        .clone()
        .or_else(|| std::env::var("RINGLB_ADMIN").ok())
        .or_else(|| from_file.as_ref().map(|a| format!("http://{}", a.bind)))
        .unwrap_or_else(|| "http://127.0.0.1:9900".to_string());
    let base = if base.contains("://") {
        base
    } else {
        format!("http://{base}")
    };
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("RINGLB_TOKEN").ok())
        .or_else(|| from_file.and_then(|a| a.token));
    Ok((base, token))
}

fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(u16, String), CtlError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let auth = token.map(|t| format!("Bearer {t}"));
    let unreachable = |e: ureq::Error| CtlError::Unreachable {
        url: url.to_string(),
        message: e.to_string(),
    };
    let response = match (method, body) {
        ("GET", _) => with_auth(agent.get(url), &auth).call(),
        ("DELETE", _) => with_auth(agent.delete(url), &auth).call(),
        ("PUT", b) => with_auth(agent.put(url), &auth).send(b.unwrap_or_default()),
        (_, b) => with_auth(agent.post(url), &auth).send(b.unwrap_or_default()),
    };
    let mut response = response.map_err(unreachable)?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().map_err(unreachable)?;
    Ok((status, text))
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: &Option<String>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

fn server_line(v: &Value) -> String {
    format!(
        "{} {} state={} weight={} active={} total={}\n",
        v["name"].as_str().unwrap_or("?"),
        v["addr"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        v["weight"],
        v["active"],
        v["total"]
    )
}

fn stats_table(v: &Value) -> String {
    let mut out = String::new();
    for p in v["pools"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "pool {} ({})\n  {:<16} {:<22} {:<6} {:>6} {:>8} {:>12} {:>10}\n",
            p["name"].as_str().unwrap_or("?"),
            p["balance"].as_str().unwrap_or("?"),
            "server",
            "address",
            "state",
            "weight",
            "active",
            "total",
            "errors"
        ));
        for s in p["servers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:<16} {:<22} {:<6} {:>6} {:>8} {:>12} {:>10}\n",
                s["name"].as_str().unwrap_or("?"),
                s["addr"].as_str().unwrap_or("?"),
                s["state"].as_str().unwrap_or("?"),
                s["weight"].to_string(),
                s["active"].to_string(),
                s["total"].to_string(),
                s["connect_errors"].to_string()
            ));
        }
    }
    out.push_str(&format!(
        "{:<16} {:<22} {:>10} {:>8} {:>9}\n",
        "listener", "address", "accepted", "active", "rejected"
    ));
    for l in v["listeners"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<16} {:<22} {:>10} {:>8} {:>9}\n",
            l["name"].as_str().unwrap_or("?"),
            l["addr"].as_str().unwrap_or("?"),
            l["accepted"].to_string(),
            l["active"].to_string(),
            l["rejected"].to_string()
        ));
    }
    out
}
