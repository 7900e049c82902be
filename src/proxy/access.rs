//! The access log: one line per request, written when its response ends.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode};

/// What the access-log line of one request says but its outcome. Built once
/// per request, and only when the access log is on; the response body (or
/// the tunnel) that ends the request logs it.
pub struct AccessEntry {
    /// The listener's name.
    pub listener: Arc<str>,
    pub client: IpAddr,
    pub method: Method,
    pub path: String,
    pub started: Instant,
    /// The upstream the request was routed to, once it was.
    pub upstream: Option<Arc<str>>,
    /// The server that answered, once one did.
    pub server: Option<String>,
}

impl AccessEntry {
    /// Writes the line: `bytes` sent to the client, `complete` when the
    /// response (or tunnel) ended cleanly.
    pub fn log(&self, status: StatusCode, bytes: u64, complete: bool) {
        tracing::info!(
            target: "sluice::access",
            listener = %self.listener,
            client = %self.client,
            method = %self.method,
            path = self.path.as_str(),
            status = status.as_u16(),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            server = self.server.as_deref().unwrap_or("-"),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            bytes,
            complete,
        );
    }
}
