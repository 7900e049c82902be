//! Idle keep-alive HTTP/1.1 connections to one server.
//!
//! One small mutex per server, held for a push or a pop: there is no lock
//! shared between servers or upstreams. Connections are reused last-in,
//! first-out so the warmest ones stay in use and the rest expire.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use super::body::RequestBody;

/// How long an idle connection is kept. Below the keep-alive timeout of common
/// backends (Node.js and Apache close after 5 s), so sluice rarely sends a
/// request on a connection the backend is closing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

pub type Sender = SendRequest<RequestBody>;

#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl Pool {
    /// An idle connection that is still open, if there is one.
    pub fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    /// Returns a connection whose last response ended cleanly.
    pub fn put(&self, sender: Sender, max_idle: usize) {
        if sender.is_closed() || max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= max_idle {
            // Drop the oldest: the front of the stack.
            idle.remove(0);
        }
        idle.push((sender, Instant::now()));
    }
}
