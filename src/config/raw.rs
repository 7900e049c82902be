//! The TOML schema exactly as written in the file. Values that validation may
//! need to point at are `Spanned`, so a diagnostic can name their line and
//! column; defaults are the ones the spec documents. Nothing here is checked
//! beyond its TOML type: `validate` turns these into the model.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

mod upstream;

pub use upstream::{RawHealthCheck, RawServer, RawSticky, RawUpstream, RawWebSocket};

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

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    pub cluster: Option<Spanned<RawCluster>>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub listener: Vec<Spanned<RawListener>>,
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

/// `redis` has no default: a `[cluster]` table must name its Redis.
/// Required keys are `Option`s here: validation reports one missing at
/// its table and goes on checking the table's other keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    #[serde(default)]
    pub redis: Option<Spanned<String>>,
    #[serde(default)]
    pub instance: String,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: Spanned<String>,
    #[serde(default = "default_heartbeat")]
    pub heartbeat: Spanned<String>,
}

fn default_key_prefix() -> Spanned<String> {
    text("sluice")
}

fn default_heartbeat() -> Spanned<String> {
    text("1s")
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
    /// Required.
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
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
    pub tls: Option<Spanned<RawListenerTls>>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
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
    /// Required.
    #[serde(default)]
    pub cert: Option<Spanned<String>>,
    /// Required.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    #[serde(default = "RawListenerTls::handshake_timeout")]
    pub handshake_timeout: Spanned<String>,
    #[serde(default = "RawListenerTls::unknown_sni")]
    pub unknown_sni: Spanned<String>,
    #[serde(default)]
    pub sni: Vec<Spanned<RawSni>>,
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
    /// Required, as `cert` and `key`.
    #[serde(default)]
    pub names: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub cert: Option<Spanned<String>>,
    #[serde(default)]
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    /// Required.
    #[serde(default)]
    pub upstream: Option<Spanned<String>>,
}
