//! Idle keep-alive HTTP/1.1 connections to one server.
//!
//! One small mutex per server, held for a push or a pop: there is no lock
//! shared between servers or upstreams. Connections are reused last-in,
//! first-out so the warmest ones stay in use and the rest expire. An idle
//! connection is only its stream: no task, no buffer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::conn::Conn;

/// How long an idle connection is kept. Below the keep-alive timeout of common
/// backends (Node.js and Apache close after 5 s), so sluice rarely sends a
/// request on a connection the backend is closing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl Pool {
    /// An idle connection the server has neither closed nor written to.
    pub fn take(&self) -> Option<Conn> {
        loop {
            let (conn, since) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            // Checked outside the lock; a dead one is dropped and the next
            // one looked at.
            if since.elapsed() < IDLE_TIMEOUT && conn.is_reusable() {
                return Some(conn);
            }
        }
    }

    /// Returns a connection whose last response ended cleanly.
    pub fn put(&self, conn: Conn, max_idle: usize) {
        if max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= max_idle {
            // Drop the oldest: the front of the stack.
            idle.remove(0);
        }
        idle.push((conn, Instant::now()));
    }
}
