//! The JSON API: status of every listener, upstream and server, and the
//! operator's per-server actions (drain, enable, disable, weight), shared
//! with the other instances when there is a `[cluster]`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::{Value, json};

use super::{Reply, json_error, reload_error};
use crate::cluster::{Change, Cluster};
use crate::config::units::parse_duration;
use crate::reload::{self, Reloader};
use crate::runtime::stats::{LATENCY_BUCKETS, LatencyHistogram};
use crate::runtime::{ClosedTunnels, ServerRt, Shared, Snapshot, UpstreamRt, clock};

/// An operator's action on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Drain,
    Enable,
    Disable,
}

impl Action {
    pub fn parse(name: &str) -> Option<Action> {
        match name {
            "drain" => Some(Action::Drain),
            "enable" => Some(Action::Enable),
            "disable" => Some(Action::Disable),
            _ => None,
        }
    }
}

/// `GET /api/status`.
pub fn status(shared: &Shared, cluster: Option<&Cluster>) -> Value {
    let snapshot = shared.load();
    let now = Now::read();
    let upstreams: serde_json::Map<String, Value> = snapshot
        .upstreams
        .iter()
        .map(|u| (u.name.to_string(), upstream_json(u, &now)))
        .collect();
    let mut status = json!({
        "upstreams": upstreams,
        "listeners": listeners_json(&snapshot),
        "reloads": {"ok": shared.reloads_ok.get(), "failed": shared.reloads_failed.get()},
        "latency_buckets_s": LATENCY_BUCKETS,
    });
    if let Some(cluster) = cluster {
        status["cluster"] = json!({
            "instance": cluster.settings.instance,
            "connected": cluster.is_connected(),
        });
    }
    status
}

/// `GET /api/cluster`: 404 without a `[cluster]` table.
pub fn cluster(cluster: Option<&Cluster>) -> Reply {
    match cluster {
        Some(cluster) => (StatusCode::OK, cluster.status()),
        None => json_error(StatusCode::NOT_FOUND, "no [cluster] is configured"),
    }
}

fn listeners_json(snapshot: &Snapshot) -> Value {
    snapshot
        .listeners
        .iter()
        .map(|l| {
            let responses = l.responses.read();
            json!({
                "name": &*l.name,
                "listen": l.cfg.listen.to_string(),
                "tls": l.cfg.tls.is_some(),
                "upstream": l.cfg.upstream,
                "responses": classes_json(responses),
            })
        })
        .collect()
}

fn classes_json(counts: [u64; 5]) -> Value {
    json!({"1xx": counts[0], "2xx": counts[1], "3xx": counts[2], "4xx": counts[3], "5xx": counts[4]})
}

fn upstream_json(u: &UpstreamRt, now: &Now) -> Value {
    let (_, latency_sum, latency_count) = u.state.latency.read();
    json!({
        "balance": u.cfg.balance.as_str(),
        "sticky": u.sticky.as_ref().map(|s| s.cookie_name()),
        "in_flight": u.state.in_flight.load(std::sync::atomic::Ordering::Relaxed),
        "retries": u.state.retries.get(),
        "retries_refused": u.state.retries_refused.get(),
        "sticky_honoured": u.state.sticky_honoured.get(),
        "sticky_reissued": u.state.sticky_reissued.get(),
        "latency": {"count": latency_count, "sum_s": latency_sum},
        "servers": u.servers.iter().map(|s| server_json(s, now)).collect::<Vec<_>>(),
    })
}

/// The clock readings a status is computed against, taken once.
struct Now {
    /// Monotonic, as [`clock::now_ms`].
    mono_ms: u64,
    /// Wall clock, Unix ms.
    unix_ms: u64,
}

impl Now {
    fn read() -> Now {
        Now {
            mono_ms: clock::now_ms(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, clock::ms),
        }
    }

    /// The wall-clock time of a monotonic stamp.
    fn unix_of(&self, mono_ms: u64) -> u64 {
        (self.unix_ms + mono_ms).saturating_sub(self.mono_ms)
    }
}

fn server_json(s: &ServerRt, now: &Now) -> Value {
    let state = &s.state;
    let deadline = state.drain_deadline_ms().filter(|_| s.is_draining());
    // The latest sticky-bound request on any instance (the remote stamp is
    // zero without a cluster).
    let last_bound_unix = state
        .last_bound_ms()
        .map(|last| now.unix_of(last))
        .max(state.remote.last_bound_unix_ms());
    json!({
        "address": s.cfg.address,
        "resolved": s.cfg.addr.to_string(),
        "state": s.status(now.mono_ms).as_str(),
        "weight": s.cfg.weight.get(),
        "backup": s.cfg.backup,
        "max_conns": s.max_conns(),
        "in_flight": state.in_flight(),
        "tunnels": state.tunnels(),
        "cluster": state.cluster_counts(),
        "requests": state.requests(),
        "failures": state.failures(),
        "responses": classes_json(state.responses.read()),
        "latency": latency_json(&state.latency),
        "health": {
            "healthy": state.is_healthy(),
            "last_check": state.last_check_unix_ms().map(rfc3339),
            "checks_passed": state.checks_passed.get(),
            "checks_failed": state.checks_failed.get(),
        },
        "tunnels_closed": closed_tunnels_json(&state.closed_tunnels()),
        "drain": {
            "draining": s.is_draining(),
            "since_last_bound_request_s": last_bound_unix
                .map(|last| now.unix_ms.saturating_sub(last) as f64 / 1000.0),
            "deadline": deadline.map(|d| rfc3339(now.unix_of(d))),
            "deadline_passed": deadline.is_some_and(|d| now.mono_ms >= d),
            "bound_requests": state.bound_requests(),
        },
    })
}

/// `{"drain": {"1012": 3, "none": 1}, "shutdown": {"1001": 2}}`: tunnels
/// sluice closed, by cause and by the Close code sent to the client (`none`
/// for a tunnel that was not a WebSocket).
fn closed_tunnels_json(closed: &ClosedTunnels) -> Value {
    let mut out = serde_json::Map::new();
    for ((cause, code), n) in closed {
        let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
        let by_code = out.entry(cause.as_str()).or_insert_with(|| json!({}));
        by_code[code] = json!(n);
    }
    Value::Object(out)
}

/// `GET /api/upstreams/{upstream}/servers/{address}/drained?wait=60s`: 200
/// once the server is drained (at once if it is), 409 with its counts when
/// `wait` passes first. Waits on the server's notification of its last
/// request or tunnel ending, so it answers the moment that happens and
/// costs nothing while it waits.
pub async fn drained(shared: &Shared, upstream: &str, address: &str, query: Option<&str>) -> Reply {
    let wait = match query_param(query, "wait") {
        None => Duration::ZERO,
        Some(text) => match parse_duration(&text) {
            Ok(wait) => wait,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("wait {text:?}: {e}")),
        },
    };
    let state = {
        let snapshot = shared.load();
        match lookup(&snapshot, upstream, address) {
            Ok(server) => server.state.clone(),
            Err(reply) => return reply,
        }
    };
    let started = Instant::now();
    // Asked against the live snapshot each time: a reload may drain it.
    let decided = || {
        let snapshot = shared.load();
        let server = lookup(&snapshot, upstream, address).ok()?;
        Some(server.is_drained())
    };
    let answered = tokio::time::timeout(wait, state.wait_until(|| decided() != Some(false))).await;
    let snapshot = shared.load();
    let server = match lookup(&snapshot, upstream, address) {
        Ok(server) => server,
        Err(reply) => return reply,
    };
    let drained = answered.is_ok() && server.is_drained();
    let mut body = server_json(server, &Now::read());
    // The counts the answer was decided on: every live instance's.
    let counts = server.state.cluster_counts();
    body["in_flight"] = json!(counts.in_flight);
    body["tunnels"] = json!(counts.tunnels);
    body["upstream"] = json!(upstream);
    body["drained"] = json!(drained);
    body["waited_s"] = json!(started.elapsed().as_secs_f64());
    let status = if drained {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (status, body)
}

/// The server `address` of `upstream`, or the 404 that says which is missing.
fn lookup<'a>(
    snapshot: &'a Snapshot,
    upstream: &str,
    address: &str,
) -> Result<&'a ServerRt, Reply> {
    let Some(up) = snapshot.upstream(upstream) else {
        return Err(json_error(
            StatusCode::NOT_FOUND,
            &format!("no upstream named {upstream:?}"),
        ));
    };
    find_server(up, address).ok_or_else(|| {
        json_error(
            StatusCode::NOT_FOUND,
            &format!("upstream {upstream:?} has no server {address:?}"),
        )
    })
}

/// Counts per bucket of `latency_buckets_s` (the last is everything
/// slower), totals since start: a client diffs two readings to get the
/// percentiles of the requests in between.
fn latency_json(histogram: &LatencyHistogram) -> Value {
    let (buckets, sum_s, count) = histogram.read();
    json!({"buckets": buckets, "sum_s": sum_s, "count": count})
}

/// `POST /api/upstreams/{upstream}/servers/{address}/{action}`. `address`
/// is already percent-decoded; `query` is the raw query string.
pub fn server_action(
    shared: &Shared,
    cluster: Option<&Cluster>,
    upstream: &str,
    address: &str,
    action: Action,
    query: Option<&str>,
) -> Reply {
    let snapshot = shared.load();
    let server = match lookup(&snapshot, upstream, address) {
        Ok(server) => server,
        Err(reply) => return reply,
    };
    let deadline = match (action, query_param(query, "deadline")) {
        (_, None) => None,
        (Action::Drain, Some(text)) => match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                return json_error(StatusCode::BAD_REQUEST, &format!("deadline {text:?}: {e}"));
            }
        },
        (_, Some(_)) => {
            return json_error(StatusCode::BAD_REQUEST, "only drain takes a deadline");
        }
    };
    let state = &server.state;
    let change = match action {
        Action::Drain => {
            let deadline = deadline.map(|d| clock::now_ms() + clock::ms(d));
            state.drain(deadline);
            Change::Drain {
                deadline_unix_ms: deadline.map(clock::unix_of_mono),
            }
        }
        Action::Enable => {
            state.enable();
            Change::Enable
        }
        Action::Disable => {
            state.disable();
            Change::Disable
        }
    };
    if let Some(cluster) = cluster {
        cluster.local_change(upstream, &server.cfg.address, change);
    }
    tracing::info!(
        upstream,
        server = %server.cfg.address,
        action = ?action,
        deadline = ?deadline,
        "admin API changed a server"
    );
    let mut body = server_json(server, &Now::read());
    body["upstream"] = json!(upstream);
    (StatusCode::OK, body)
}

/// `POST /api/upstreams/{upstream}/servers/{address}/weight?value=N`: the
/// weight from now on, as if the file said so, until the file changes that
/// server's weight.
pub fn set_weight(
    shared: &Shared,
    cluster: Option<&Cluster>,
    upstream: &str,
    address: &str,
    query: Option<&str>,
) -> Reply {
    let value = match query_param(query, "value") {
        None => return json_error(StatusCode::BAD_REQUEST, "weight needs ?value=N"),
        Some(text) => match text.parse::<NonZeroU32>() {
            Ok(value) => value,
            Err(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    &format!("weight {text:?}: expected an integer of at least 1"),
                );
            }
        },
    };
    let snapshot = shared.load();
    let server = match lookup(&snapshot, upstream, address) {
        Ok(server) => server,
        Err(reply) => return reply,
    };
    let address = server.cfg.address.clone();
    if server.state.set_weight(Some(value)) {
        shared.rebuild();
    }
    if let Some(cluster) = cluster {
        cluster.local_change(upstream, &address, Change::Weight { value });
    }
    tracing::info!(upstream, server = %address, weight = value, "admin API changed a weight");
    let snapshot = shared.load();
    match lookup(&snapshot, upstream, &address) {
        Ok(server) => {
            let mut body = server_json(server, &Now::read());
            body["upstream"] = json!(upstream);
            (StatusCode::OK, body)
        }
        // A reload removed it in the meantime.
        Err(reply) => reply,
    }
}

/// `POST /api/reload`: 200 with what changed, or the rejection's status
/// (422 for a file that cannot be applied) with every problem.
pub async fn reload_handler(reloader: &Arc<Reloader>) -> Reply {
    match reload::reload(reloader).await {
        Ok(report) => (
            StatusCode::OK,
            serde_json::to_value(report).unwrap_or_else(|_| json!({})),
        ),
        Err(err) => (reload_error::status(&err), reload_error::body(&err)),
    }
}

/// A server by its address as written in the config, or else by the socket
/// address it resolved to.
fn find_server<'a>(up: &'a UpstreamRt, address: &str) -> Option<&'a ServerRt> {
    up.servers
        .iter()
        .find(|s| s.cfg.address == address)
        .or_else(|| {
            let addr: SocketAddr = address.parse().ok()?;
            up.servers.iter().find(|s| s.cfg.addr == addr)
        })
}

/// The percent-decoded value of `name` in a query string.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(value))
}

/// Decodes `%XX` escapes (and nothing else); `None` for a broken escape or
/// text that does not decode to UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A Unix time in ms as RFC 3339 UTC with millisecond precision.
fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(drain_b: bool) -> crate::config::Config {
        let text = format!(
            "[[listener]]\nlisten = \"127.0.0.1:18080\"\nupstream = \"web\"\n\
             [[upstream.web.server]]\naddress = \"127.0.0.1:19001\"\n\
             [[upstream.web.server]]\naddress = \"127.0.0.1:19002\"\ndrain = {drain_b}\n"
        );
        crate::config::parse(&text, std::path::Path::new("test.toml")).unwrap()
    }

    fn state_of(shared: &Shared, address: &str) -> String {
        let snapshot = shared.load();
        let up = snapshot.upstream("web").unwrap();
        find_server(up, address)
            .unwrap()
            .status(clock::now_ms())
            .as_str()
            .to_owned()
    }

    #[test]
    fn api_changes_survive_reloads_until_the_file_changes_that_server() {
        let shared = Shared::new(config(false), Default::default());
        let (status, _) = server_action(
            &shared,
            None,
            "web",
            "127.0.0.1:19001",
            Action::Disable,
            None,
        );
        assert_eq!(status, StatusCode::OK);
        server_action(
            &shared,
            None,
            "web",
            "127.0.0.1:19002",
            Action::Drain,
            Some("deadline=10m"),
        );
        assert_eq!(state_of(&shared, "127.0.0.1:19001"), "down");
        assert_eq!(state_of(&shared, "127.0.0.1:19002"), "drained");

        // The same file again: the operator's changes stay.
        shared.swap(config(false), Default::default());
        assert_eq!(state_of(&shared, "127.0.0.1:19001"), "down");
        assert_eq!(state_of(&shared, "127.0.0.1:19002"), "drained");

        // The file now sets server 2's drain itself (to true, then false):
        // from there on the file decides it; server 1 keeps its override.
        shared.swap(config(true), Default::default());
        assert_eq!(state_of(&shared, "127.0.0.1:19002"), "drained");
        shared.swap(config(false), Default::default());
        assert_eq!(state_of(&shared, "127.0.0.1:19002"), "up");
        assert_eq!(state_of(&shared, "127.0.0.1:19001"), "down");
    }

    fn weight_of(shared: &Shared, address: &str) -> u32 {
        let snapshot = shared.load();
        find_server(snapshot.upstream("web").unwrap(), address)
            .unwrap()
            .cfg
            .weight
            .get()
    }

    #[test]
    fn a_runtime_weight_lasts_until_the_file_changes_that_weight() {
        let shared = Shared::new(config(false), Default::default());
        let (status, body) = set_weight(&shared, None, "web", "127.0.0.1:19001", Some("value=5"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["weight"], 5);
        assert_eq!(weight_of(&shared, "127.0.0.1:19001"), 5);
        let balancers_see_it = shared.load().upstream("web").unwrap().cfg.servers[0].weight;
        assert_eq!(balancers_see_it.get(), 5);

        shared.swap(config(false), Default::default());
        assert_eq!(
            weight_of(&shared, "127.0.0.1:19001"),
            5,
            "a reload keeps it"
        );

        let mut reweighted = config(false);
        reweighted.upstreams[0].servers[0].weight = NonZeroU32::new(2).unwrap();
        shared.swap(reweighted.clone(), Default::default());
        assert_eq!(weight_of(&shared, "127.0.0.1:19001"), 2, "the file wins");
        shared.swap(reweighted, Default::default());
        assert_eq!(weight_of(&shared, "127.0.0.1:19001"), 2);

        for bad in [None, Some("value=0"), Some("value=x")] {
            assert_eq!(
                set_weight(&shared, None, "web", "127.0.0.1:19001", bad).0,
                StatusCode::BAD_REQUEST
            );
        }
    }

    #[test]
    fn unknown_targets_and_bad_deadlines_are_refused() {
        let shared = Shared::new(config(false), Default::default());
        let not_found = |u, a| server_action(&shared, None, u, a, Action::Drain, None).0;
        assert_eq!(not_found("api", "127.0.0.1:19001"), StatusCode::NOT_FOUND);
        assert_eq!(not_found("web", "127.0.0.1:1"), StatusCode::NOT_FOUND);
        let bad = server_action(
            &shared,
            None,
            "web",
            "127.0.0.1:19001",
            Action::Drain,
            Some("deadline=soon"),
        );
        assert_eq!(bad.0, StatusCode::BAD_REQUEST);
        assert_eq!(state_of(&shared, "127.0.0.1:19001"), "up");
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn percent_decode_handles_ports_and_ipv6() {
        assert_eq!(
            percent_decode("127.0.0.1%3A9001").as_deref(),
            Some("127.0.0.1:9001")
        );
        assert_eq!(
            percent_decode("%5B%3A%3A1%5D%3A80").as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(percent_decode("[::1]:80").as_deref(), Some("[::1]:80"));
        assert_eq!(percent_decode("%3").as_deref(), None);
        assert_eq!(percent_decode("%zz").as_deref(), None);
    }

    #[test]
    fn query_param_finds_the_deadline() {
        assert_eq!(
            query_param(Some("a=1&deadline=10m"), "deadline").as_deref(),
            Some("10m")
        );
        assert_eq!(
            query_param(Some("deadline=1%20s"), "deadline").as_deref(),
            Some("1 s")
        );
        assert_eq!(query_param(None, "deadline"), None);
    }
}
