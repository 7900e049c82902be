//! An `[upstream.NAME]` table as written: its servers, sticky cookie,
//! WebSocket closing and health check, with the spec's defaults.

use serde::Deserialize;
use toml::Spanned;

use super::{DEFAULT_RETRY_BUDGET, IntOrString, spanned, text, yes};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default = "RawUpstream::balance")]
    pub balance: Spanned<String>,
    #[serde(default = "RawUpstream::hash_key")]
    pub hash_key: Spanned<String>,
    #[serde(default = "RawUpstream::client_ip_prefix")]
    pub client_ip_prefix: Spanned<Vec<Spanned<i64>>>,
    #[serde(default = "yes")]
    pub consistent: bool,
    #[serde(default = "RawUpstream::balance_factor")]
    pub balance_factor: Spanned<f64>,
    #[serde(default = "RawUpstream::max_fails")]
    pub max_fails: Spanned<i64>,
    #[serde(default = "RawUpstream::fail_timeout")]
    pub fail_timeout: Spanned<String>,
    #[serde(default = "RawUpstream::connect_timeout")]
    pub connect_timeout: Spanned<String>,
    #[serde(default = "RawUpstream::response_timeout")]
    pub response_timeout: Spanned<String>,
    #[serde(default = "RawUpstream::tries")]
    pub tries: Spanned<i64>,
    #[serde(default = "RawUpstream::retry_budget")]
    pub retry_budget: Spanned<f64>,
    #[serde(default = "RawUpstream::retry_min_per_sec")]
    pub retry_min_per_sec: Spanned<i64>,
    #[serde(default = "RawUpstream::queue")]
    pub queue: Spanned<i64>,
    #[serde(default = "RawUpstream::queue_timeout")]
    pub queue_timeout: Spanned<String>,
    #[serde(default = "RawUpstream::keepalive")]
    pub keepalive: Spanned<i64>,
    #[serde(default = "RawUpstream::keepalive_timeout")]
    pub keepalive_timeout: Spanned<String>,
    #[serde(default)]
    pub fail_on_status: Vec<Spanned<i64>>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub server_name: Option<Spanned<String>>,
    #[serde(default)]
    pub ca: String,
    pub sticky: Option<RawSticky>,
    pub health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub websocket: RawWebSocket,
    #[serde(default)]
    pub server: Vec<Spanned<RawServer>>,
}

impl RawUpstream {
    fn balance() -> Spanned<String> {
        text("round_robin")
    }
    fn hash_key() -> Spanned<String> {
        text("client_ip")
    }
    fn client_ip_prefix() -> Spanned<Vec<Spanned<i64>>> {
        spanned(vec![spanned(32), spanned(128)])
    }
    fn balance_factor() -> Spanned<f64> {
        spanned(0.0)
    }
    fn max_fails() -> Spanned<i64> {
        spanned(1)
    }
    fn fail_timeout() -> Spanned<String> {
        text("10s")
    }
    fn connect_timeout() -> Spanned<String> {
        text("3s")
    }
    fn response_timeout() -> Spanned<String> {
        text("60s")
    }
    fn tries() -> Spanned<i64> {
        spanned(3)
    }
    fn retry_budget() -> Spanned<f64> {
        spanned(DEFAULT_RETRY_BUDGET)
    }
    fn retry_min_per_sec() -> Spanned<i64> {
        spanned(10)
    }
    fn queue() -> Spanned<i64> {
        spanned(0)
    }
    fn queue_timeout() -> Spanned<String> {
        text("5s")
    }
    fn keepalive() -> Spanned<i64> {
        spanned(64)
    }
    fn keepalive_timeout() -> Spanned<String> {
        text("4s")
    }
}

/// `[upstream.NAME.sticky]`. The cookie name's default depends on the
/// upstream's name, so it stays optional here and validation fills it in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSticky {
    pub cookie: Option<Spanned<String>>,
    pub max_age: Option<Spanned<String>>,
    pub path: Spanned<String>,
    pub http_only: bool,
    pub secure: bool,
    pub same_site: Spanned<String>,
    pub secret: String,
}

impl Default for RawSticky {
    fn default() -> Self {
        RawSticky {
            cookie: None,
            max_age: None,
            path: text("/"),
            http_only: true,
            secure: false,
            same_site: text("Lax"),
            secret: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebSocket {
    pub close_code: Spanned<i64>,
    pub close_spread: Spanned<String>,
}

impl Default for RawWebSocket {
    fn default() -> Self {
        RawWebSocket {
            close_code: spanned(1012),
            close_spread: text("10s"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealthCheck {
    pub path: Spanned<String>,
    pub interval: Spanned<String>,
    pub timeout: Spanned<String>,
    pub fails: Spanned<i64>,
    pub passes: Spanned<i64>,
    pub status: Spanned<IntOrString>,
}

impl Default for RawHealthCheck {
    fn default() -> Self {
        RawHealthCheck {
            path: text("/healthz"),
            interval: text("5s"),
            timeout: text("2s"),
            fails: spanned(2),
            passes: spanned(2),
            status: spanned(IntOrString::String("200-399".to_owned())),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Required: validation reports it missing, at the table.
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    #[serde(default = "RawServer::weight")]
    pub weight: Spanned<i64>,
    #[serde(default = "RawServer::max_conns")]
    pub max_conns: Spanned<i64>,
    #[serde(default)]
    pub backup: bool,
    #[serde(default)]
    pub down: bool,
    #[serde(default)]
    pub drain: bool,
    #[serde(default = "RawServer::slow_start")]
    pub slow_start: Spanned<String>,
}

impl RawServer {
    fn weight() -> Spanned<i64> {
        spanned(1)
    }
    fn max_conns() -> Spanned<i64> {
        spanned(0)
    }
    fn slow_start() -> Spanned<String> {
        text("0s")
    }
}
