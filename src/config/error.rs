//! Why a config file was rejected: every problem, each with its file, line
//! and column, so `sluice check`, a reload and the admin API can all show the
//! user exactly where to look.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// A config file that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Every problem, in file order; a syntax error is reported alone, as
    /// nothing after it can be read reliably.
    #[error("{}", Lines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// Every problem with its position; empty when the file could not be read
    /// at all (the `Display` of a `Read` error names the file).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(diagnostics) => diagnostics,
        }
    }
}

/// One problem at one place in the file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub kind: DiagnosticKind,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.kind
        )
    }
}

/// Displays diagnostics one per line, in file order.
struct Lines<'a>(&'a [Diagnostic]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// What is wrong; the message says what was found and what was expected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiagnosticKind {
    /// The TOML parser's own message: bad syntax or a value of the wrong type.
    #[error("{message}")]
    Syntax { message: String },
    #[error("unknown key \"{key}\", expected one of {}", expected.join(", "))]
    UnknownKey { key: String, expected: Vec<String> },
    #[error("missing required key \"{key}\"")]
    MissingKey { key: String },
    #[error("no [[listener]] is configured: expected at least one")]
    NoListeners,
    #[error(
        "invalid duration \"{found}\": expected a number followed by ms, s, m or h, such as \"250ms\", \"10s\" or \"1m30s\""
    )]
    InvalidDuration { found: String },
    #[error(
        "invalid size \"{found}\": expected a number of bytes, optionally followed by B, KiB, MiB or GiB, such as \"64KiB\""
    )]
    InvalidSize { found: String },
    #[error("{key} \"{found}\" is too large")]
    TooLarge { key: &'static str, found: String },
    #[error("{key} = {found} is out of range: expected {}", Bounds(*min, *max))]
    IntOutOfRange {
        key: &'static str,
        found: i64,
        min: i64,
        max: i64,
    },
    #[error("{key} = {found} is out of range: expected {expected}")]
    FloatOutOfRange {
        key: &'static str,
        found: f64,
        expected: &'static str,
    },
    #[error("{key} must be greater than 0")]
    ZeroDuration { key: &'static str },
    #[error("{key} must not be empty")]
    Empty { key: &'static str },
    #[error("invalid {key} \"{found}\": expected one of {}", expected.join(", "))]
    InvalidChoice {
        key: &'static str,
        found: String,
        expected: Vec<&'static str>,
    },
    #[error(
        "invalid {key} \"{found}\": expected an IP address and port, such as 0.0.0.0:8080 or [::1]:8080"
    )]
    InvalidSocketAddr { key: &'static str, found: String },
    #[error("listen address {listen} is already used by {previous}")]
    DuplicateListen {
        listen: SocketAddr,
        previous: String,
    },
    #[error("listener name \"{name}\" is already used by another listener")]
    DuplicateListenerName { name: String },
    #[error(
        "upstream \"{name}\" is not defined (defined: {})",
        defined_list(defined)
    )]
    UnknownUpstream { name: String, defined: Vec<String> },
    #[error("invalid upstream name \"{name}\": expected letters, digits, '_', '-' or '.'")]
    InvalidUpstreamName { name: String },
    #[error(
        "upstream \"{upstream}\" has no servers: expected at least one [[upstream.{upstream}.server]]"
    )]
    NoServers { upstream: String },
    #[error("server \"{address}\" appears twice in upstream \"{upstream}\"")]
    DuplicateServer { address: String, upstream: String },
    #[error(
        "invalid server address \"{found}\": expected host:port, such as 127.0.0.1:9001 or backend.internal:80"
    )]
    InvalidServerAddress { found: String },
    #[error("server address \"{address}\" cannot be resolved: {source}")]
    Unresolvable {
        address: String,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("server address \"{address}\" resolved to no addresses")]
    ResolvedToNothing { address: String },
    #[error(
        "invalid CIDR \"{found}\": expected an IP address with an optional prefix length, such as 10.0.0.0/8 or ::1/128"
    )]
    InvalidCidr { found: String },
    #[error(
        "invalid host \"{found}\": expected a host name such as api.example.com or a wildcard such as *.example.com, without a port"
    )]
    InvalidHost { found: String },
    #[error("{key} \"{found}\" must start with \"/\"")]
    NotAbsolutePath { key: &'static str, found: String },
    #[error(
        "invalid hash_key \"{found}\": expected client_ip, uri, header:NAME, cookie:NAME or query:NAME"
    )]
    InvalidHashKey { found: String },
    #[error("invalid header name \"{found}\" in hash_key")]
    InvalidHeaderName { found: String },
    #[error(
        "client_ip_prefix has {found} entries: expected two, the IPv4 and IPv6 prefix lengths, such as [32, 128]"
    )]
    ClientIpPrefixLength { found: usize },
    #[error(
        "invalid status \"{found}\": expected a status code or an inclusive range such as \"200-399\", within 100-599"
    )]
    InvalidStatus { found: String },
    #[error("invalid cookie name \"{found}\": expected letters, digits and !#$%&'*+-.^_`|~")]
    InvalidCookieName { found: String },
    #[error("invalid redis URL \"{found}\": {reason}; expected such as redis://127.0.0.1:6379/0")]
    InvalidRedisUrl { found: String, reason: String },
    #[error(
        "invalid server_name \"{found}\": expected a DNS name or an IP address, such as api.internal or 10.0.0.7"
    )]
    InvalidServerName { found: String },
    #[error(
        "invalid log level \"{found}\": {reason}; expected trace, debug, info, warn, error or off, or directives such as \"info,sluice::access=warn\""
    )]
    InvalidLogLevel { found: String, reason: String },
    #[error(
        "invalid close_code {found}: expected a code an endpoint may send, 1000-1003, 1007-1014 or 3000-4999 (such as 1012, Service Restart)"
    )]
    InvalidCloseCode { found: i64 },
    #[error("token is required when admin listen is not loopback ({listen})")]
    AdminTokenRequired { listen: SocketAddr },
    #[error("cannot read {what} {}: {reason}", path.display())]
    UnreadableFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A certificate, key or CA file that opens but cannot be used: the TLS
    /// layer's message, which names the file.
    #[error("{message}")]
    UnusableFile { message: String },
}

/// Lists the defined upstreams in a message, or says there are none.
fn defined_list(defined: &[String]) -> String {
    if defined.is_empty() {
        "none".to_owned()
    } else {
        defined.join(", ")
    }
}

/// An integer range as a user reads it: `1 to 10`, or `at least 1` when the
/// upper bound is only the type's limit.
struct Bounds(i64, i64);

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Bounds(min, i64::MAX) => write!(f, "at least {min}"),
            Bounds(min, max) => write!(f, "{min} to {max}"),
        }
    }
}
