//! Turns the raw TOML schema into the checked model, collecting every problem
//! in one pass so a user fixes a file in one round, not one error at a time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::deserialize::Removed;
use super::error::{Diagnostic, DiagnosticKind};
use super::model::*;
use super::raw::*;
use super::units::{self, UnitError};

/// Checks `raw` (parsed from `text`, read from `file`, with `removed` taken
/// out of it for being rejected) and builds the model.
pub fn validate(
    raw: RawConfig,
    text: &str,
    file: &Path,
    removed: &Removed,
) -> Result<Config, Vec<Diagnostic>> {
    let mut checker = Checker {
        text,
        file,
        dir: file.parent().unwrap_or(Path::new("")),
        removed,
        diagnostics: Vec::new(),
    };
    let config = checker.config(raw);
    if checker.diagnostics.is_empty() {
        Ok(config)
    } else {
        checker.diagnostics.sort_by_key(|d| (d.line, d.column));
        Err(checker.diagnostics)
    }
}

/// Takes the place of an address that failed to parse; never reaches a model
/// that is returned.
const STAND_IN_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Converts a byte offset into a 1-based line and (character) column.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Walks the raw config, recording a diagnostic for every bad value. A bad
/// value is replaced by a harmless stand-in so the walk can go on and find
/// the next problem; the model built from stand-ins is thrown away, because
/// any diagnostic rejects the whole file.
struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    /// Relative certificate paths are relative to the config file, not to
    /// the directory sluice happens to be started from.
    dir: &'a Path,
    /// A list is not reported empty when its entries were rejected already.
    removed: &'a Removed,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn report(&mut self, span: Range<usize>, kind: DiagnosticKind) {
        let (line, column) = line_column(self.text, span.start);
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            kind,
        });
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let mut upstreams: Vec<_> = raw.upstream.into_iter().collect();
        upstreams.sort_by_key(|(name, _)| name.span().start);
        let names: Vec<String> = upstreams.iter().map(|(n, _)| n.get_ref().clone()).collect();
        let upstreams = upstreams
            .into_iter()
            .map(|(name, upstream)| self.upstream(name, upstream))
            .collect();

        if raw.listener.is_empty() && !self.removed.contains(&["listener"]) {
            self.report(0..0, DiagnosticKind::NoListeners);
        }
        // Who already holds each listen address, to name them in a clash.
        let mut bound: HashMap<SocketAddr, String> = HashMap::new();
        let mut listener_names: Vec<String> = Vec::new();
        let admin = raw.admin.map(|admin| {
            let admin = self.admin(admin);
            if admin.listen.port() != 0 {
                bound.insert(admin.listen, "the admin listener".to_owned());
            }
            admin
        });
        let listeners = raw
            .listener
            .into_iter()
            .map(|listener| self.listener(listener, &names, &mut bound, &mut listener_names))
            .collect();

        Config {
            path: self.file.to_owned(),
            global: self.global(raw.global),
            log: self.log(raw.log),
            cluster: raw.cluster.and_then(|cluster| self.cluster(cluster)),
            admin,
            listeners,
            upstreams,
        }
    }

    fn global(&mut self, raw: RawGlobal) -> Global {
        Global {
            worker_threads: raw.worker_threads,
            shutdown_timeout: self.duration(&raw.shutdown_timeout),
            watch: raw.watch,
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .filter_map(|c| self.cidr(c))
                .collect(),
        }
    }

    fn log(&mut self, raw: RawLog) -> Log {
        let level = raw.level.get_ref();
        if level.trim().is_empty() {
            self.report(raw.level.span(), DiagnosticKind::Empty { key: "level" });
        } else if let Err(reason) = log_filter(level) {
            let kind = DiagnosticKind::InvalidLogLevel {
                found: level.clone(),
                reason,
            };
            self.report(raw.level.span(), kind);
        }
        let format = self.choice(
            &raw.format,
            "format",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        );
        Log {
            level: raw.level.into_inner(),
            access_log: raw.access_log,
            format,
        }
    }

    /// `None` only with a diagnostic reported (a URL that does not parse).
    fn cluster(&mut self, raw: Spanned<RawCluster>) -> Option<Cluster> {
        let table = raw.span();
        let raw = raw.into_inner();
        let redis = self.required(raw.redis, &table, "redis");
        if raw.key_prefix.get_ref().trim().is_empty() {
            let kind = DiagnosticKind::Empty { key: "key_prefix" };
            self.report(raw.key_prefix.span(), kind);
        }
        let heartbeat = self.positive_duration(&raw.heartbeat, "heartbeat");
        let redis = redis?;
        let info = match redis::IntoConnectionInfo::into_connection_info(redis.get_ref().as_str()) {
            Ok(info) => info,
            Err(error) => {
                let kind = DiagnosticKind::InvalidRedisUrl {
                    found: redis.get_ref().clone(),
                    reason: error.to_string(),
                };
                self.report(redis.span(), kind);
                return None;
            }
        };
        Some(Cluster {
            redis: RedisUrl {
                text: redis.into_inner(),
                info,
            },
            instance: Some(raw.instance).filter(|i| !i.trim().is_empty()),
            key_prefix: raw.key_prefix.into_inner(),
            heartbeat,
        })
    }

    fn admin(&mut self, raw: RawAdmin) -> Admin {
        let listen = self.socket_addr(&raw.listen, "listen");
        if let Some(listen) = listen
            && raw.token.is_empty()
            && !canonical(listen.ip()).is_loopback()
        {
            self.report(
                raw.listen.span(),
                DiagnosticKind::AdminTokenRequired { listen },
            );
        }
        Admin {
            listen: listen.unwrap_or(STAND_IN_ADDR),
            token: Some(raw.token).filter(|t| !t.is_empty()),
        }
    }

    fn listener(
        &mut self,
        raw: Spanned<RawListener>,
        upstreams: &[String],
        bound: &mut HashMap<SocketAddr, String>,
        names: &mut Vec<String>,
    ) -> Listener {
        let table = raw.span();
        let raw = raw.into_inner();
        let raw_listen = self.required(raw.listen, &table, "listen");
        let listen = raw_listen
            .as_ref()
            .and_then(|l| self.socket_addr(l, "listen"));
        let name = match raw.name {
            Some(name) if name.get_ref().is_empty() => {
                self.report(name.span(), DiagnosticKind::Empty { key: "name" });
                String::new()
            }
            Some(name) => {
                if names.contains(name.get_ref()) {
                    let kind = DiagnosticKind::DuplicateListenerName {
                        name: name.get_ref().clone(),
                    };
                    self.report(name.span(), kind);
                }
                name.into_inner()
            }
            // Named by its address, which another listener may have taken
            // as its name: the metrics and logs could not tell them apart.
            // (Another listener on this very address is a clash of its own,
            // reported below; port 0 is a fresh port each time.)
            None => match &raw_listen {
                Some(raw_listen) => {
                    let name = raw_listen.get_ref().clone();
                    let own_clash = listen.is_some_and(|l| l.port() == 0 || bound.contains_key(&l));
                    if names.contains(&name) && !own_clash {
                        let kind = DiagnosticKind::DuplicateListenerName { name: name.clone() };
                        self.report(raw_listen.span(), kind);
                    }
                    name
                }
                None => String::new(),
            },
        };
        names.push(name.clone());
        // Port 0 asks the OS for a fresh port each time, so it never clashes.
        if let (Some(listen), Some(raw_listen)) = (listen.filter(|l| l.port() != 0), &raw_listen) {
            if let Some(previous) = bound.get(&listen) {
                let kind = DiagnosticKind::DuplicateListen {
                    listen,
                    previous: previous.clone(),
                };
                self.report(raw_listen.span(), kind);
            } else {
                bound.insert(listen, format!("listener \"{name}\""));
            }
        }
        let upstream = raw.upstream.map(|u| self.upstream_ref(u, upstreams));
        let before = self.diagnostics.len();
        let max_header_size = self.size(&raw.max_header_size, "max_header_size");
        // A size that did not parse was reported already, not as a zero.
        if max_header_size == 0 && self.diagnostics.len() == before {
            let kind = DiagnosticKind::IntOutOfRange {
                key: "max_header_size",
                found: 0,
                min: 1,
                max: i64::MAX,
            };
            self.report(raw.max_header_size.span(), kind);
        }
        Listener {
            name,
            listen: listen.unwrap_or(STAND_IN_ADDR),
            upstream,
            header_timeout: self.positive_duration(&raw.header_timeout, "header_timeout"),
            idle_timeout: self.positive_duration(&raw.idle_timeout, "idle_timeout"),
            max_header_size: usize::try_from(max_header_size).unwrap_or(usize::MAX),
            max_headers: self.int(&raw.max_headers, "max_headers", 1, u32::MAX.into()),
            max_body_size: Some(self.size(&raw.max_body_size, "max_body_size")).filter(|&s| s > 0),
            tls: raw.tls.map(|tls| self.listener_tls(tls)),
            routes: raw
                .route
                .into_iter()
                .map(|r| self.route(r, upstreams))
                .collect(),
        }
    }

    fn listener_tls(&mut self, raw: Spanned<RawListenerTls>) -> ListenerTls {
        let table = raw.span();
        let raw = raw.into_inner();
        let cert = self.required(raw.cert, &table, "cert");
        let key = self.required(raw.key, &table, "key");
        let unknown_sni = self.choice(
            &raw.unknown_sni,
            "unknown_sni",
            &[
                ("default", UnknownSni::Default),
                ("refuse", UnknownSni::Refuse),
            ],
            UnknownSni::Default,
        );
        ListenerTls {
            cert: self.file_path(cert.as_ref(), "cert"),
            key: self.file_path(key.as_ref(), "key"),
            handshake_timeout: self.positive_duration(&raw.handshake_timeout, "handshake_timeout"),
            unknown_sni,
            sni: raw.sni.into_iter().map(|sni| self.sni(sni)).collect(),
        }
    }

    fn sni(&mut self, raw: Spanned<RawSni>) -> SniCert {
        let table = raw.span();
        let raw = raw.into_inner();
        let names = self.required(raw.names, &table, "names");
        let cert = self.required(raw.cert, &table, "cert");
        let key = self.required(raw.key, &table, "key");
        if let Some(names) = names.as_ref().filter(|names| names.get_ref().is_empty()) {
            self.report(names.span(), DiagnosticKind::Empty { key: "names" });
        }
        let names = names
            .iter()
            .flat_map(|names| names.get_ref())
            .filter_map(|name| {
                self.host(name)?;
                Some(name.get_ref().to_ascii_lowercase())
            })
            .collect();
        SniCert {
            names,
            cert: self.file_path(cert.as_ref(), "cert"),
            key: self.file_path(key.as_ref(), "key"),
        }
    }

    fn route(&mut self, raw: Spanned<RawRoute>, upstreams: &[String]) -> Route {
        let table = raw.span();
        let raw = raw.into_inner();
        let upstream = self.required(raw.upstream, &table, "upstream");
        if let Some(prefix) = &raw.path_prefix {
            self.absolute_path(prefix, "path_prefix");
        }
        Route {
            host: raw.host.as_ref().and_then(|host| self.host(host)),
            path_prefix: raw.path_prefix.map(Spanned::into_inner),
            upstream: upstream
                .map(|upstream| self.upstream_ref(upstream, upstreams))
                .unwrap_or_default(),
        }
    }

    fn upstream_ref(&mut self, name: Spanned<String>, defined: &[String]) -> String {
        if !defined.contains(name.get_ref()) {
            let kind = DiagnosticKind::UnknownUpstream {
                name: name.get_ref().clone(),
                defined: defined.to_vec(),
            };
            self.report(name.span(), kind);
        }
        name.into_inner()
    }

    fn upstream(&mut self, name: Spanned<String>, raw: RawUpstream) -> Upstream {
        let name_span = name.span();
        let name = name.into_inner();
        let valid_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if name.is_empty() || !name.chars().all(valid_name) {
            self.report(
                name_span.clone(),
                DiagnosticKind::InvalidUpstreamName { name: name.clone() },
            );
        }
        if raw.server.is_empty() && !self.removed.contains(&["upstream", &name, "server"]) {
            self.report(
                name_span,
                DiagnosticKind::NoServers {
                    upstream: name.clone(),
                },
            );
        }
        let balance = self.choice(&raw.balance, "balance", Balance::NAMES, Balance::RoundRobin);
        let balance_factor = self.float(
            &raw.balance_factor,
            "balance_factor",
            |f| f == 0.0 || f > 1.0,
            "0 (off) or a number greater than 1, such as 1.25",
        );
        let retry_budget = self.float(
            &raw.retry_budget,
            "retry_budget",
            |f| (0.0..=1.0).contains(&f),
            "a share from 0 to 1, such as 0.2",
        );
        let mut servers: Vec<Server> = Vec::with_capacity(raw.server.len());
        for server in raw.server {
            if let Some(address) = &server.get_ref().address
                && servers.iter().any(|s| s.address == *address.get_ref())
            {
                let kind = DiagnosticKind::DuplicateServer {
                    address: address.get_ref().clone(),
                    upstream: name.clone(),
                };
                self.report(address.span(), kind);
            }
            servers.push(self.server(server));
        }
        Upstream {
            balance,
            hash_key: self.hash_key(&raw.hash_key),
            client_ip_prefix: self.client_ip_prefix(&raw.client_ip_prefix),
            consistent: raw.consistent,
            balance_factor: Some(balance_factor).filter(|&f| f != 0.0),
            max_fails: self.int(&raw.max_fails, "max_fails", 0, u32::MAX.into()),
            fail_timeout: self.duration(&raw.fail_timeout),
            connect_timeout: self.positive_duration(&raw.connect_timeout, "connect_timeout"),
            response_timeout: self.positive_duration(&raw.response_timeout, "response_timeout"),
            tries: self.non_zero(&raw.tries, "tries"),
            retry_budget,
            retry_min_per_sec: self.int(
                &raw.retry_min_per_sec,
                "retry_min_per_sec",
                0,
                u32::MAX.into(),
            ),
            queue: self.int(&raw.queue, "queue", 0, u32::MAX.into()),
            queue_timeout: self.duration(&raw.queue_timeout),
            keepalive: self.int(&raw.keepalive, "keepalive", 0, u32::MAX.into()),
            keepalive_timeout: self.duration(&raw.keepalive_timeout),
            fail_on_status: raw
                .fail_on_status
                .iter()
                .map(|status| self.int(status, "fail_on_status", 100, 599))
                .collect(),
            tls: raw.tls,
            server_name: raw
                .server_name
                .filter(|name| !name.get_ref().is_empty())
                .map(|name| self.server_name(name)),
            ca: Some(raw.ca)
                .filter(|ca| !ca.is_empty())
                .map(|ca| self.dir.join(ca)),
            sticky: raw.sticky.map(|sticky| self.sticky(sticky, &name)),
            health_check: raw.health_check.map(|health| self.health_check(health)),
            websocket: self.websocket(&raw.websocket),
            servers,
            name,
        }
    }

    fn hash_key(&mut self, raw: &Spanned<String>) -> HashKey {
        let text = raw.get_ref();
        let key = match text.split_once(':') {
            None if text == "client_ip" => Some(HashKey::ClientIp),
            None if text == "uri" => Some(HashKey::Uri),
            Some((_, "")) | None => None,
            Some(("header", name)) => {
                let lower = name.to_ascii_lowercase();
                match http::HeaderName::from_bytes(lower.as_bytes()) {
                    Ok(header) => Some(HashKey::Header(header)),
                    Err(_) => {
                        let kind = DiagnosticKind::InvalidHeaderName {
                            found: name.to_owned(),
                        };
                        self.report(raw.span(), kind);
                        return HashKey::ClientIp;
                    }
                }
            }
            Some(("cookie", name)) => Some(HashKey::Cookie(name.to_owned())),
            Some(("query", name)) => Some(HashKey::Query(name.to_owned())),
            Some(_) => None,
        };
        key.unwrap_or_else(|| {
            self.report(
                raw.span(),
                DiagnosticKind::InvalidHashKey {
                    found: text.clone(),
                },
            );
            HashKey::ClientIp
        })
    }

    fn client_ip_prefix(&mut self, raw: &Spanned<Vec<Spanned<i64>>>) -> (u8, u8) {
        match raw.get_ref().as_slice() {
            [v4, v6] => (
                self.int(v4, "client_ip_prefix IPv4 length", 0, 32),
                self.int(v6, "client_ip_prefix IPv6 length", 0, 128),
            ),
            entries => {
                let kind = DiagnosticKind::ClientIpPrefixLength {
                    found: entries.len(),
                };
                self.report(raw.span(), kind);
                (32, 128)
            }
        }
    }

    fn sticky(&mut self, raw: RawSticky, upstream: &str) -> Sticky {
        let cookie = match raw.cookie {
            Some(cookie) => {
                if !is_cookie_name(cookie.get_ref()) {
                    let kind = DiagnosticKind::InvalidCookieName {
                        found: cookie.get_ref().clone(),
                    };
                    self.report(cookie.span(), kind);
                }
                cookie.into_inner()
            }
            None => format!("sluice_{upstream}"),
        };
        self.absolute_path(&raw.path, "path");
        let same_site = self.choice(
            &raw.same_site,
            "same_site",
            &[
                ("Strict", SameSite::Strict),
                ("Lax", SameSite::Lax),
                ("None", SameSite::None),
            ],
            SameSite::Lax,
        );
        Sticky {
            cookie,
            max_age: raw.max_age.as_ref().map(|age| self.duration(age)),
            path: raw.path.into_inner(),
            http_only: raw.http_only,
            secure: raw.secure,
            same_site,
            secret: raw.secret,
        }
    }

    fn websocket(&mut self, raw: &RawWebSocket) -> WebSocket {
        let code = *raw.close_code.get_ref();
        // 1004-1006 and 1015 are reserved for reporting, never sent; below
        // 3000 only the registered codes are meaningful.
        let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
        if !sendable {
            self.report(
                raw.close_code.span(),
                DiagnosticKind::InvalidCloseCode { found: code },
            );
        }
        WebSocket {
            close_code: if sendable { code as u16 } else { 1012 },
            close_spread: self.duration(&raw.close_spread),
        }
    }

    fn health_check(&mut self, raw: RawHealthCheck) -> HealthCheck {
        self.absolute_path(&raw.path, "path");
        HealthCheck {
            interval: self.positive_duration(&raw.interval, "interval"),
            timeout: self.positive_duration(&raw.timeout, "timeout"),
            fails: self.non_zero(&raw.fails, "fails"),
            passes: self.non_zero(&raw.passes, "passes"),
            status: self.status(&raw.status),
            path: raw.path.into_inner(),
        }
    }

    fn status(&mut self, raw: &Spanned<IntOrString>) -> (u16, u16) {
        let range = match raw.get_ref() {
            IntOrString::Int(code) => u16::try_from(*code).ok().map(|c| (c, c)),
            IntOrString::String(text) => match text.split_once('-') {
                Some((lo, hi)) => lo.trim().parse().ok().zip(hi.trim().parse().ok()),
                None => text.trim().parse().ok().map(|c| (c, c)),
            },
        };
        match range {
            Some((lo, hi)) if (100..=599).contains(&lo) && (lo..=599).contains(&hi) => (lo, hi),
            _ => {
                let found = raw.get_ref().to_string();
                self.report(raw.span(), DiagnosticKind::InvalidStatus { found });
                (200, 399)
            }
        }
    }

    fn server(&mut self, raw: Spanned<RawServer>) -> Server {
        let table = raw.span();
        let raw = raw.into_inner();
        let address = self.required(raw.address, &table, "address");
        let max_conns = self.int::<u32>(&raw.max_conns, "max_conns", 0, u32::MAX.into());
        Server {
            addr: address.as_ref().map_or(STAND_IN_ADDR, |a| self.resolve(a)),
            // `resolve` accepted only `host:port`: the port follows the last
            // colon (an IPv6 host keeps its own inside brackets).
            host_len: address
                .as_ref()
                .and_then(|a| a.get_ref().rfind(':'))
                .unwrap_or_default(),
            address: address.map(Spanned::into_inner).unwrap_or_default(),
            weight: self.non_zero(&raw.weight, "weight"),
            max_conns: NonZeroU32::new(max_conns),
            backup: raw.backup,
            down: raw.down,
            drain: raw.drain,
            slow_start: self.duration(&raw.slow_start),
        }
    }

    /// Resolves `host:port` once, at load: a name that does not resolve is a
    /// config error the operator should see now, not a 502 later. IPv4 is
    /// preferred because a dual-stack name's IPv6 record is more often the one
    /// the backend does not listen on.
    fn resolve(&mut self, raw: &Spanned<String>) -> SocketAddr {
        let address = raw.get_ref();
        if let Ok(addr) = address.parse::<SocketAddr>() {
            return addr;
        }
        let host_port = address
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty() && !host.contains([':', '[', ']', ' ', '/']))
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)));
        let Some(host_port) = host_port else {
            let kind = DiagnosticKind::InvalidServerAddress {
                found: address.clone(),
            };
            self.report(raw.span(), kind);
            return STAND_IN_ADDR;
        };
        match host_port.to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                match addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) {
                    Some(addr) => *addr,
                    None => {
                        let kind = DiagnosticKind::ResolvedToNothing {
                            address: address.clone(),
                        };
                        self.report(raw.span(), kind);
                        STAND_IN_ADDR
                    }
                }
            }
            Err(source) => {
                let kind = DiagnosticKind::Unresolvable {
                    address: address.clone(),
                    source: Arc::new(source),
                };
                self.report(raw.span(), kind);
                STAND_IN_ADDR
            }
        }
    }

    /// The name upstream certificates are verified against: a DNS name or
    /// an IP address, as TLS can carry it.
    fn server_name(&mut self, raw: Spanned<String>) -> String {
        if rustls_pki_types::ServerName::try_from(raw.get_ref().as_str()).is_err() {
            let kind = DiagnosticKind::InvalidServerName {
                found: raw.get_ref().clone(),
            };
            self.report(raw.span(), kind);
        }
        raw.into_inner()
    }

    /// A required key's value; when the table at `table` lacks it, `None`
    /// after reporting it missing there (unless its value was rejected
    /// already, which said what is wrong with it). The table's other keys
    /// are checked either way.
    fn required<T>(&mut self, value: Option<T>, table: &Range<usize>, key: &str) -> Option<T> {
        if value.is_none() && !self.removed.took_key(table, key) {
            let kind = DiagnosticKind::MissingKey {
                key: key.to_owned(),
            };
            self.report(table.clone(), kind);
        }
        value
    }

    fn duration(&mut self, raw: &Spanned<String>) -> Duration {
        units::parse_duration(raw.get_ref()).unwrap_or_else(|error| {
            let found = raw.get_ref().clone();
            let kind = match error {
                UnitError::Malformed => DiagnosticKind::InvalidDuration { found },
                UnitError::TooLarge => DiagnosticKind::TooLarge {
                    key: "duration",
                    found,
                },
            };
            self.report(raw.span(), kind);
            Duration::ZERO
        })
    }

    fn positive_duration(&mut self, raw: &Spanned<String>, key: &'static str) -> Duration {
        let before = self.diagnostics.len();
        let duration = self.duration(raw);
        if duration.is_zero() && self.diagnostics.len() == before {
            self.report(raw.span(), DiagnosticKind::ZeroDuration { key });
        }
        duration
    }

    fn size(&mut self, raw: &Spanned<IntOrString>, key: &'static str) -> u64 {
        let parsed = match raw.get_ref() {
            IntOrString::Int(bytes) => u64::try_from(*bytes).map_err(|_| UnitError::Malformed),
            IntOrString::String(text) => units::parse_size(text),
        };
        parsed.unwrap_or_else(|error| {
            let found = raw.get_ref().to_string();
            let kind = match error {
                UnitError::Malformed => DiagnosticKind::InvalidSize { found },
                UnitError::TooLarge => DiagnosticKind::TooLarge { key, found },
            };
            self.report(raw.span(), kind);
            0
        })
    }

    /// An integer within `min..=max`, converted to the model's type.
    fn int<T: TryFrom<i64> + Default>(
        &mut self,
        raw: &Spanned<i64>,
        key: &'static str,
        min: i64,
        max: i64,
    ) -> T {
        let found = *raw.get_ref();
        if !(min..=max).contains(&found) {
            self.report(
                raw.span(),
                DiagnosticKind::IntOutOfRange {
                    key,
                    found,
                    min,
                    max,
                },
            );
        }
        T::try_from(found).unwrap_or_default()
    }

    fn non_zero(&mut self, raw: &Spanned<i64>, key: &'static str) -> NonZeroU32 {
        NonZeroU32::new(self.int(raw, key, 1, u32::MAX.into())).unwrap_or(NonZeroU32::MIN)
    }

    fn float(
        &mut self,
        raw: &Spanned<f64>,
        key: &'static str,
        valid: impl Fn(f64) -> bool,
        expected: &'static str,
    ) -> f64 {
        let found = *raw.get_ref();
        if found.is_finite() && valid(found) {
            found
        } else {
            self.report(
                raw.span(),
                DiagnosticKind::FloatOutOfRange {
                    key,
                    found,
                    expected,
                },
            );
            0.0
        }
    }

    /// Matches one of `options`; case-insensitively, because `"lax"` and
    /// `"Lax"` (or `"JSON"` and `"json"`) can only mean the same thing.
    fn choice<T: Copy>(
        &mut self,
        raw: &Spanned<String>,
        key: &'static str,
        options: &'static [(&'static str, T)],
        stand_in: T,
    ) -> T {
        let found = raw.get_ref();
        if let Some((_, value)) = options
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(found))
        {
            return *value;
        }
        let expected = options.iter().map(|(name, _)| *name).collect();
        let kind = DiagnosticKind::InvalidChoice {
            key,
            found: found.clone(),
            expected,
        };
        self.report(raw.span(), kind);
        stand_in
    }

    fn socket_addr(&mut self, raw: &Spanned<String>, key: &'static str) -> Option<SocketAddr> {
        let addr = raw.get_ref().parse().ok();
        if addr.is_none() {
            let kind = DiagnosticKind::InvalidSocketAddr {
                key,
                found: raw.get_ref().clone(),
            };
            self.report(raw.span(), kind);
        }
        addr
    }

    fn cidr(&mut self, raw: &Spanned<String>) -> Option<Cidr> {
        let cidr = parse_cidr(raw.get_ref());
        if cidr.is_none() {
            self.report(
                raw.span(),
                DiagnosticKind::InvalidCidr {
                    found: raw.get_ref().clone(),
                },
            );
        }
        cidr
    }

    fn host(&mut self, raw: &Spanned<String>) -> Option<HostMatch> {
        let host = parse_host(raw.get_ref());
        if host.is_none() {
            self.report(
                raw.span(),
                DiagnosticKind::InvalidHost {
                    found: raw.get_ref().clone(),
                },
            );
        }
        host
    }

    fn absolute_path(&mut self, raw: &Spanned<String>, key: &'static str) {
        if !raw.get_ref().starts_with('/') {
            let kind = DiagnosticKind::NotAbsolutePath {
                key,
                found: raw.get_ref().clone(),
            };
            self.report(raw.span(), kind);
        }
    }

    /// A file the config names, from the config's directory; `raw` is
    /// `None` when its required key is missing (reported already).
    fn file_path(&mut self, raw: Option<&Spanned<String>>, key: &'static str) -> PathBuf {
        let Some(raw) = raw else {
            return PathBuf::new();
        };
        if raw.get_ref().is_empty() {
            self.report(raw.span(), DiagnosticKind::Empty { key });
        }
        self.dir.join(raw.get_ref())
    }
}

/// Checks a `[log] level`: a level, or `RUST_LOG`'s comma-separated
/// directives. A bare word must be a level: `RUST_LOG` would read `loud`
/// as a target to log everything of, which is never what a config means.
fn log_filter(text: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!("\"{directive}\" is not a level"));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// `10.0.0.0/8`, `::1/128`, or a bare address meaning just that address.
fn parse_cidr(text: &str) -> Option<Cidr> {
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(prefix) if prefix.bytes().all(|b| b.is_ascii_digit()) => prefix.parse().ok()?,
        Some(_) => return None,
        None => max,
    };
    (prefix <= max).then_some(Cidr { addr, prefix })
}

/// A route or SNI host: an exact name or `*.suffix`, lower-cased because host
/// names are case-insensitive and requests are matched lower-cased.
fn parse_host(text: &str) -> Option<HostMatch> {
    let lower = text.to_ascii_lowercase();
    match lower.strip_prefix("*.") {
        Some(suffix) => is_host_name(suffix).then(|| HostMatch::Suffix(format!(".{suffix}"))),
        None => is_host_name(&lower).then_some(HostMatch::Exact(lower)),
    }
}

/// Dot-separated labels of letters, digits, `-` and `_` (seen in internal
/// names); no port, no wildcard in the middle.
fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An RFC 6265 cookie name: an HTTP token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
