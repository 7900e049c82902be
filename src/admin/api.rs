//! The JSON API: status of every listener, upstream and server, and the
//! operator's per-server actions (drain, enable, disable, weight), shared
//! with the other instances when there is a `[cluster]`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;

use super::{Reply, json_error, reload_error};
use crate::cluster::{Change, Cluster};
use crate::config::units::parse_duration;
use crate::reload::{self, Reloader};
use crate::runtime::{ServerRt, Shared, Snapshot, UpstreamRt, clock};

mod status;

#[cfg(test)]
use status::rfc3339;
use status::{Now, server_json};
pub use status::{cluster, status};

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
    // A server a reload removed while it was waited on is drained once
    // what it still serves (here) has ended: a preStop hook that drained
    // it and then had it taken out of the file still gets its answer.
    let removed_idle = || state.in_flight() == 0 && state.tunnels() == 0;
    // Asked against the live snapshot each time: a reload may drain it.
    let decided = || {
        let snapshot = shared.load();
        match lookup(&snapshot, upstream, address) {
            Ok(server) => server.is_drained(),
            Err(_) => removed_idle(),
        }
    };
    let answered = tokio::time::timeout(wait, state.wait_until(decided)).await;
    let snapshot = shared.load();
    let Ok(server) = lookup(&snapshot, upstream, address) else {
        let drained = answered.is_ok() && removed_idle();
        let body = json!({
            "address": address,
            "upstream": upstream,
            "state": "removed",
            "in_flight": state.in_flight(),
            "tunnels": state.tunnels(),
            "drained": drained,
            "waited_s": started.elapsed().as_secs_f64(),
        });
        let status = if drained {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        };
        return (status, body);
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
    let apply = |id| match action {
        Action::Drain => {
            let deadline = deadline.map(|d| clock::now_ms() + clock::ms(d));
            state.drain(deadline, id);
            Change::Drain {
                deadline_unix_ms: deadline.map(clock::unix_of_mono),
            }
        }
        Action::Enable => {
            state.enable(id);
            Change::Enable
        }
        Action::Disable => {
            state.disable(id);
            Change::Disable
        }
    };
    match cluster {
        Some(cluster) => cluster.local_change(upstream, &server.cfg.address, apply),
        None => {
            apply(None);
        }
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
    let apply = |_| {
        if server.state.set_weight(Some(value)) {
            shared.rebuild();
        }
        Change::Weight { value }
    };
    match cluster {
        Some(cluster) => cluster.local_change(upstream, &address, apply),
        None => {
            apply(None);
        }
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

#[cfg(test)]
mod tests;
