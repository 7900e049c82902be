//! Idle keep-alive HTTP/1.1 connections to one server.
//!
//! Each worker keeps its own idle connections to each server, like nginx's
//! worker processes: a connection is only ever reused by the worker whose
//! runtime it is registered with, and the mutex of a worker's slot is only
//! ever taken by that worker, so it is never contended (it is there because
//! the server's state is shared). Connections are reused last-in, first-out
//! so the warmest ones stay in use and the rest expire. An idle connection
//! is only its stream: no task, no buffer.
//!
//! An idle connection is kept for the upstream's `keepalive_timeout`, which
//! should stay below the servers' own (Node.js and Apache close after 5 s,
//! hence the 4 s default), so sluice rarely sends a request on a connection
//! the server is closing. `keepalive` idle connections are kept per worker.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::conn::Conn;
use crate::workers;

#[derive(Debug)]
pub struct Pool {
    slots: Box<[Slot]>,
}

/// One worker's idle connections, on a cache line of its own so that two
/// workers using neighbouring slots do not bounce it between cores.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(Mutex<Vec<(Conn, Instant)>>);

impl Default for Pool {
    fn default() -> Self {
        Pool {
            slots: (0..workers::count()).map(|_| Slot::default()).collect(),
        }
    }
}

impl Pool {
    /// This worker's idle connections.
    fn slot(&self) -> &Mutex<Vec<(Conn, Instant)>> {
        // Only a thread that is not a worker could be out of range.
        &self.slots[workers::index() % self.slots.len()].0
    }

    /// An idle connection, idle for less than `keepalive_timeout`, that the
    /// server has neither closed nor written to.
    pub fn take(&self, keepalive_timeout: Duration) -> Option<Conn> {
        let slot = self.slot();
        loop {
            let (conn, since) = slot.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
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
        let mut idle = self.slot().lock().unwrap_or_else(|e| e.into_inner());
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
