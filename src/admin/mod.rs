//! The admin listener: the JSON API, `/metrics` and the dashboard page, on
//! `[admin] listen`, over HTTP/1.1.
//!
//! It reads the live snapshot on every call, so it always shows what the
//! proxy is doing now; the token too is read per call, so a reload that
//! changes it applies at once. Admin connections are not tracked for
//! graceful shutdown: a dashboard left open must not hold the proxy up.

pub mod api;
mod dashboard;
mod metrics;
mod reload_error;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::cluster::Cluster;
use crate::reload::Reloader;
use crate::runtime::Shared;

/// How long a client may take to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the admin API cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A status and a JSON body.
pub type Reply = (StatusCode, Value);

pub fn json_error(status: StatusCode, message: &str) -> Reply {
    (status, json!({ "error": message }))
}

/// Binds the admin address, so a taken port fails start-up.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// What the admin API acts on: the server through its reloader (reloads
/// go through it, as `SIGHUP`'s do), and the cluster with `[cluster]`.
struct Admin {
    reloader: Arc<Reloader>,
    cluster: Option<Arc<Cluster>>,
}

/// Serves the admin API on `listener` until the process ends.
pub fn spawn(listener: TcpListener, reloader: Arc<Reloader>, cluster: Option<Arc<Cluster>>) {
    let admin = Arc::new(Admin { reloader, cluster });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(handle(&admin, req).await) }
                });
                let result = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                }
            });
        }
    });
}

/// What a path is, once routed.
enum Route<'a> {
    Dashboard,
    Metrics,
    Status,
    Cluster,
    Reload,
    Server {
        upstream: &'a str,
        address: &'a str,
        action: api::Action,
    },
    Weight {
        upstream: &'a str,
        address: &'a str,
    },
    Drained {
        upstream: &'a str,
        address: &'a str,
    },
}

impl Route<'_> {
    /// The one method a route answers (GET routes answer HEAD too).
    fn allowed(&self) -> &'static str {
        match self {
            Route::Dashboard
            | Route::Metrics
            | Route::Status
            | Route::Cluster
            | Route::Drained { .. } => "GET",
            Route::Reload | Route::Server { .. } | Route::Weight { .. } => "POST",
        }
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        [""] => Route::Dashboard,
        ["metrics"] => Route::Metrics,
        ["api", "status"] => Route::Status,
        ["api", "cluster"] => Route::Cluster,
        ["api", "reload"] => Route::Reload,
        ["api", "upstreams", upstream, "servers", address, "weight"] => {
            Route::Weight { upstream, address }
        }
        ["api", "upstreams", upstream, "servers", address, "drained"] => {
            Route::Drained { upstream, address }
        }
        ["api", "upstreams", upstream, "servers", address, action] => Route::Server {
            upstream,
            address,
            action: api::Action::parse(action)?,
        },
        _ => return None,
    })
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let server = &admin.reloader.server;
    let shared: &Shared = &server.shared;
    let cluster = admin.cluster.as_deref();
    let path = req.uri().path();
    let protected = path != "/";
    if protected && !authorized(shared, &req) {
        let mut response = reply(json_error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ));
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let Some(route) = route(path) else {
        return reply(json_error(
            StatusCode::NOT_FOUND,
            &format!("no such endpoint: {path}"),
        ));
    };
    let allowed = route.allowed();
    let method = req.method();
    let method_ok = method.as_str() == allowed || (allowed == "GET" && *method == Method::HEAD);
    if !method_ok {
        let mut response = reply(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} {path} is not allowed; use {allowed}", req.method()),
        ));
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allowed));
        return response;
    }
    match route {
        Route::Dashboard => dashboard::page(),
        Route::Metrics => {
            let accept = req.headers().get(header::ACCEPT);
            let format = metrics::Format::accepted(accept.and_then(|v| v.to_str().ok()));
            let mut response = Response::new(Full::new(Bytes::from(metrics::render(
                shared,
                cluster,
                server.workers.accepted_counts(),
                format,
            ))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            response
        }
        Route::Status => reply((StatusCode::OK, api::status(shared, cluster))),
        Route::Cluster => reply(api::cluster(cluster)),
        Route::Reload => reply(api::reload_handler(&admin.reloader).await),
        Route::Server {
            upstream,
            address,
            action,
        } => reply(match decoded(upstream, address) {
            Ok((u, a)) => api::server_action(shared, cluster, &u, &a, action, req.uri().query()),
            Err(bad) => bad,
        }),
        Route::Weight { upstream, address } => reply(match decoded(upstream, address) {
            Ok((u, a)) => api::set_weight(shared, cluster, &u, &a, req.uri().query()),
            Err(bad) => bad,
        }),
        Route::Drained { upstream, address } => reply(match decoded(upstream, address) {
            Ok((u, a)) => api::drained(shared, &u, &a, req.uri().query()).await,
            Err(bad) => bad,
        }),
    }
}

/// The upstream and address segments of a server path, percent-decoded.
fn decoded(upstream: &str, address: &str) -> Result<(String, String), Reply> {
    match (api::percent_decode(upstream), api::percent_decode(address)) {
        (Some(upstream), Some(address)) => Ok((upstream, address)),
        _ => Err(json_error(
            StatusCode::BAD_REQUEST,
            "bad percent-encoding in the path",
        )),
    }
}

fn reply((status, body): Reply) -> Response<Full<Bytes>> {
    let mut text = body.to_string();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// With a token configured, the request must carry `Authorization: Bearer
/// TOKEN`.
fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let snapshot = shared.load();
    let Some(token) = snapshot
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.as_deref())
    else {
        return true;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credentials)| credentials.trim());
    presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()))
}

/// Compares without an early exit, so response timing does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_on_raw_segments() {
        assert!(matches!(route("/"), Some(Route::Dashboard)));
        assert!(matches!(route("/metrics"), Some(Route::Metrics)));
        assert!(matches!(route("/api/status"), Some(Route::Status)));
        assert!(matches!(
            route("/api/upstreams/web/servers/127.0.0.1%3A80/drain"),
            Some(Route::Server {
                upstream: "web",
                address: "127.0.0.1%3A80",
                action: api::Action::Drain
            })
        ));
        assert!(matches!(
            route("/api/upstreams/web/servers/a:1/weight"),
            Some(Route::Weight { .. })
        ));
        assert!(matches!(
            route("/api/upstreams/web/servers/a:1/drained"),
            Some(Route::Drained { .. })
        ));
        assert!(matches!(route("/api/cluster"), Some(Route::Cluster)));
        assert!(route("/api/upstreams/web/servers/a:1/explode").is_none());
        assert!(route("/api/nothing").is_none());
    }

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
