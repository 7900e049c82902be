//! `GET /api/status` and `GET /api/cluster`: every listener, upstream and
//! server as JSON, against one reading of the clocks.

use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::{Value, json};

use super::{Reply, json_error};
use crate::cluster::Cluster;
use crate::runtime::stats::{LATENCY_BUCKETS, LatencyHistogram};
use crate::runtime::{ClosedTunnels, ServerRt, Shared, Snapshot, UpstreamRt, clock};

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
        "queued": u.state.queued.load(std::sync::atomic::Ordering::Relaxed),
        "retries": u.state.retries.get(),
        "retries_refused": u.state.retries_refused.get(),
        "sticky_honoured": u.state.sticky_honoured.get(),
        "sticky_reissued": u.state.sticky_reissued.get(),
        "latency": {"count": latency_count, "sum_s": latency_sum},
        "servers": u.servers.iter().map(|s| server_json(s, now)).collect::<Vec<_>>(),
    })
}

/// The clock readings a status is computed against, taken once.
pub(super) struct Now {
    /// Monotonic, as [`clock::now_ms`].
    mono_ms: u64,
    /// Wall clock, Unix ms.
    unix_ms: u64,
}

impl Now {
    pub(super) fn read() -> Now {
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

pub(super) fn server_json(s: &ServerRt, now: &Now) -> Value {
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
            "confirmed": s.is_confirmed(),
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

/// Counts per bucket of `latency_buckets_s` (the last is everything
/// slower), totals since start: a client diffs two readings to get the
/// percentiles of the requests in between.
fn latency_json(histogram: &LatencyHistogram) -> Value {
    let (buckets, sum_s, count) = histogram.read();
    json!({"buckets": buckets, "sum_s": sum_s, "count": count})
}

/// A Unix time in ms as RFC 3339 UTC with millisecond precision.
pub(super) fn rfc3339(unix_ms: u64) -> String {
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
