//! The TOML schema as written by the operator, before validation.
//!
//! Every field that a later check may complain about keeps its source span
//! (`Spanned`) so the error can name the line.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub runtime: Option<Spanned<RawRuntime>>,
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    #[serde(default)]
    pub listener: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub pool: Vec<Spanned<RawPool>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    pub shards: Option<Spanned<i64>>,
    pub cpus: Option<Spanned<Vec<i64>>>,
    pub forward: Option<Spanned<String>>,
    pub buffer_size: Option<Spanned<String>>,
    pub buffers: Option<Spanned<i64>>,
    pub pipes: Option<Spanned<i64>>,
    pub pipe_size: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub connect: Option<Spanned<String>>,
    pub client_idle: Option<Spanned<String>>,
    pub server_idle: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub name: Spanned<String>,
    pub bind: Spanned<String>,
    pub pool: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub name: Spanned<String>,
    pub balance: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub servers: Option<Spanned<Vec<Spanned<RawServer>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub name: Spanned<String>,
    pub addr: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
    #[serde(default)]
    pub backup: bool,
}
