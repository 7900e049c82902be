//! The checked configuration: what a TOML file becomes once it has been parsed
//! and validated. Everything here is already correct; the running proxy never
//! re-checks or `unwrap`s these values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (used for reloads and certificate paths).
    pub path: PathBuf,
    pub global: Global,
    pub log: Log,
    pub cluster: Option<Cluster>,
    pub admin: Option<Admin>,
    pub listeners: Vec<Listener>,
    /// Upstreams in file order.
    pub upstreams: Vec<Upstream>,
}

impl Config {
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// 0 = one per CPU core.
    pub worker_threads: usize,
    pub shutdown_timeout: Duration,
    pub watch: bool,
    pub trusted_proxies: Vec<Cidr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub level: String,
    pub access_log: bool,
    pub format: LogFormat,
}

/// `[cluster]`: the Redis that instances share their operator state through.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub redis: RedisUrl,
    /// `None` when empty: the cluster module names the instance.
    pub instance: Option<String>,
    pub key_prefix: String,
    pub heartbeat: Duration,
}

/// A Redis URL, parsed once at load; compared by the text the user wrote.
#[derive(Debug, Clone)]
pub struct RedisUrl {
    pub text: String,
    pub info: redis::ConnectionInfo,
}

impl PartialEq for RedisUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// `None` when empty.
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Defaults to the `listen` string when not given.
    pub name: String,
    pub listen: SocketAddr,
    pub upstream: Option<String>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_size: usize,
    pub max_headers: usize,
    /// `None` = unlimited.
    pub max_body_size: Option<u64>,
    pub tls: Option<ListenerTls>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    Default,
    Refuse,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// Paths are resolved relative to the config file's directory.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub handshake_timeout: Duration,
    pub unknown_sni: UnknownSni,
    pub sni: Vec<SniCert>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SniCert {
    /// Lower-cased; exact names or `*.suffix`.
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HostMatch {
    /// Lower-case exact host (no port).
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches any host ending in it.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    pub upstream: String,
}

/// The balancing methods, listed once as `Variant = "config name"` and
/// handed to the macro named `$then`: this file declares [`Balance`] from the
/// list and `balance/` its `Balancer`, whose variant holds the method type
/// of the same name. Adding a method is a line here and the method's file.
macro_rules! balance_methods {
    ($then:ident) => {
        $then! {
            RoundRobin = "round_robin",
            LeastConn = "least_conn",
            IpHash = "ip_hash",
            Hash = "hash",
            Random = "random",
        }
    };
}
pub(crate) use balance_methods;

/// Declares [`Balance`]: the enum, its config names (which validation
/// accepts) and the name each variant prints as.
macro_rules! balance_enum {
    ($($variant:ident = $name:literal),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Balance {
            $($variant),*
        }

        impl Balance {
            /// Every method under its `balance = "..."` name.
            pub const NAMES: &[(&str, Balance)] = &[$(($name, Balance::$variant)),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Balance::$variant => $name),*
                }
            }
        }
    };
}

balance_methods!(balance_enum);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Uri,
    /// Lower-cased header name.
    Header(http::HeaderName),
    Cookie(String),
    Query(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sticky {
    pub cookie: String,
    /// `None` = session cookie.
    pub max_age: Option<Duration>,
    pub path: String,
    pub http_only: bool,
    pub secure: bool,
    pub same_site: SameSite,
    /// Empty = the documented deterministic default key.
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub fails: NonZeroU32,
    pub passes: NonZeroU32,
    /// Inclusive status range.
    pub status: (u16, u16),
}

/// `[upstream.NAME.websocket]`: how sluice closes the WebSocket tunnels of
/// a server whose drain deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocket {
    /// Sent to clients; one an endpoint may send (RFC 6455 section 7.4).
    pub close_code: u16,
    /// Tunnel `i` of `n` is closed `i * close_spread / n` after the deadline.
    pub close_spread: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub balance: Balance,
    pub hash_key: HashKey,
    /// IPv4 and IPv6 prefix lengths that count as one client for `hash` on `client_ip`.
    pub client_ip_prefix: (u8, u8),
    pub consistent: bool,
    /// `None` when 0 (off).
    pub balance_factor: Option<f64>,
    /// 0 disables passive health.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub tries: NonZeroU32,
    /// Share of a token each request deposits in the retry budget.
    pub retry_budget: f64,
    /// Retries per second the budget always allows.
    pub retry_min_per_sec: u32,
    pub queue: usize,
    pub queue_timeout: Duration,
    pub keepalive: usize,
    /// How long a pooled connection may sit idle before it is closed.
    pub keepalive_timeout: Duration,
    pub fail_on_status: Vec<u16>,
    pub tls: bool,
    pub server_name: Option<String>,
    pub ca: Option<PathBuf>,
    pub sticky: Option<Sticky>,
    pub health_check: Option<HealthCheck>,
    pub websocket: WebSocket,
    /// In file order; at least one.
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// As written in the file (`host:port`): the server's stable identity.
    pub address: String,
    /// Where the host in `address` ends and `:port` begins, found at load.
    pub host_len: usize,
    /// Resolved at load.
    pub addr: SocketAddr,
    pub weight: NonZeroU32,
    /// `None` = unlimited.
    pub max_conns: Option<NonZeroU32>,
    pub backup: bool,
    pub down: bool,
    pub drain: bool,
    /// Zero = off.
    pub slow_start: Duration,
}

impl Server {
    /// The host of `address` as written, an IPv6 literal with its brackets:
    /// what nginx hashes for a consistent ring.
    pub fn host(&self) -> &str {
        &self.address[..self.host_len]
    }

    /// The port of `address` as written.
    pub fn port(&self) -> &str {
        self.address.get(self.host_len + 1..).unwrap_or_default()
    }

    /// The host as a certificate must name it: an IPv6 literal unbracketed.
    pub fn tls_name(&self) -> &str {
        let host = self.host();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }
}

/// An address range such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.addr.is_ipv4() == ip.is_ipv4()
            && truncate(self.addr, self.prefix) == truncate(ip, self.prefix)
    }
}

/// `ip` with only its first `prefix` bits kept (the network it is in).
pub fn truncate(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are treated as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
