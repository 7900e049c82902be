//! The TOML schema exactly as written in the file. Values that validation may
//! need to point at are `Spanned`, so a diagnostic can name their line and
//! column; defaults are the ones the spec documents. Nothing here is checked
//! beyond its TOML type: `validate` turns these into the model.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

/// The default of a spanned value: an empty span, which validation never
/// reports because every documented default is valid.
fn spanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn text(value: &str) -> Spanned<String> {
    spanned(value.to_owned())
}

/// `retry_budget` when the file does not set it; `check` compares against it
/// to tell whether the user configured a budget.
pub const DEFAULT_RETRY_BUDGET: f64 = 0.2;

fn yes() -> bool {
    true
}

/// A TOML value that may be written either as an integer or as a string,
/// such as a size (`65536` or `"64KiB"`) or a status (`200` or `"200-399"`).
#[derive(Debug, Clone, PartialEq)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

/// As the user wrote it, for messages.
impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntOrStringVisitor;

        impl Visitor<'_> for IntOrStringVisitor {
            type Value = IntOrString;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_owned()))
            }
        }

        deserializer.deserialize_any(IntOrStringVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub global: RawGlobal,
    #[serde(default)]
    pub log: RawLog,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub listener: Vec<RawListener>,
    /// Keyed by the spanned name so validation can restore file order (the
    /// map itself is sorted by name) and point at an upstream's header.
    #[serde(default)]
    pub upstream: BTreeMap<Spanned<String>, RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGlobal {
    pub worker_threads: usize,
    pub shutdown_timeout: Spanned<String>,
    pub watch: bool,
    pub trusted_proxies: Vec<Spanned<String>>,
}

impl Default for RawGlobal {
    fn default() -> Self {
        RawGlobal {
            worker_threads: 0,
            shutdown_timeout: text("30s"),
            watch: true,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: Spanned<String>,
    pub access_log: bool,
    pub format: Spanned<String>,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: text("info"),
            access_log: true,
            format: text("text"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: Spanned<String>,
    pub token: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: text("127.0.0.1:9900"),
            token: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<Spanned<String>>,
    pub listen: Spanned<String>,
    pub upstream: Option<Spanned<String>>,
    #[serde(default = "RawListener::header_timeout")]
    pub header_timeout: Spanned<String>,
    #[serde(default = "RawListener::idle_timeout")]
    pub idle_timeout: Spanned<String>,
    #[serde(default = "RawListener::max_header_size")]
    pub max_header_size: Spanned<IntOrString>,
    #[serde(default = "RawListener::max_headers")]
    pub max_headers: Spanned<i64>,
    #[serde(default = "RawListener::max_body_size")]
    pub max_body_size: Spanned<IntOrString>,
    pub tls: Option<RawListenerTls>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
}

impl RawListener {
    fn header_timeout() -> Spanned<String> {
        text("10s")
    }
    fn idle_timeout() -> Spanned<String> {
        text("60s")
    }
    fn max_header_size() -> Spanned<IntOrString> {
        spanned(IntOrString::String("64KiB".to_owned()))
    }
    fn max_headers() -> Spanned<i64> {
        spanned(100)
    }
    fn max_body_size() -> Spanned<IntOrString> {
        spanned(IntOrString::Int(0))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    #[serde(default = "RawListenerTls::handshake_timeout")]
    pub handshake_timeout: Spanned<String>,
    #[serde(default = "RawListenerTls::unknown_sni")]
    pub unknown_sni: Spanned<String>,
    #[serde(default)]
    pub sni: Vec<RawSni>,
}

impl RawListenerTls {
    fn handshake_timeout() -> Spanned<String> {
        text("10s")
    }
    fn unknown_sni() -> Spanned<String> {
        text("default")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSni {
    pub names: Spanned<Vec<Spanned<String>>>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub upstream: Spanned<String>,
}

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
    pub server_name: String,
    #[serde(default)]
    pub ca: String,
    pub sticky: Option<RawSticky>,
    pub health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub server: Vec<RawServer>,
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
    pub address: Spanned<String>,
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
