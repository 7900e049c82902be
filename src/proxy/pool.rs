//! Idle keep-alive HTTP/1.1 connections to one server.
//!
//! One small mutex per server, held for a push or a pop: there is no lock
//! shared between servers or upstreams. Connections are reused last-in,
//! first-out so the warmest ones stay in use and the rest expire. An idle
//! connection is only its stream: no task, no buffer.
//!
//! An idle connection is kept for the upstream's `keepalive_timeout`, which
//! should stay below the servers' own (Node.js and Apache close after 5 s,
//! hence the 4 s default), so sluice rarely sends a request on a connection
//! the server is closing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::conn::Conn;

#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl Pool {
    /// An idle connection, idle for less than `keepalive_timeout`, that the
    /// server has neither closed nor written to.
    pub fn take(&self, keepalive_timeout: Duration) -> Option<Conn> {
        loop {
            let (conn, since) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            // Checked outside the lock; a dead one is dropped and the next
            // one looked at.
            if since.elapsed() < keepalive_timeout && conn.is_reusable() {
                return Some(conn);
            }
        }
    }

    /// Returns a connection whose last response ended cleanly, closing the
    /// oldest ones that have been idle for `keepalive_timeout` already.
    pub fn put(&self, conn: Conn, max_idle: usize, keepalive_timeout: Duration) {
        if max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let expired = idle
            .iter()
            .take_while(|(_, since)| since.elapsed() >= keepalive_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() >= max_idle {
            // Drop the oldest: the front of the stack.
            idle.remove(0);
        }
        idle.push((conn, Instant::now()));
    }
}
