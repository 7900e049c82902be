//! Idle keep-alive HTTP/1.1 connections to one server.
//!
//! Each worker keeps its own idle connections to each server, like nginx's
//! worker processes: a connection is only ever reused by the worker whose
//! runtime it is registered with, and the mutex of a worker's slot is only
//! taken by that worker and, once a second, briefly, by [`sweep`], so it
//! is all but never contended (it is there because the server's state is
//! shared). Connections are reused last-in, first-out
//! so the warmest ones stay in use and the rest expire. An idle connection
//! is only its stream: no task, no buffer.
//!
//! An idle connection is kept for the upstream's `keepalive_timeout`, which
//! should stay below the servers' own (Node.js and Apache close after 5 s,
//! hence the 4 s default), so sluice rarely sends a request on a connection
//! the server is closing. `keepalive` idle connections are kept per worker.
//! Expired connections are closed when the pool is next used, and by
//! [`sweep`] within a second otherwise: a server that gets no more traffic
//! is not left holding sluice's idle connections.
//!
//! The pool lives with the server's state, which outlives snapshots, but the
//! connection type is the request path's, which sits above this module: a
//! slot holds whatever [`Idle`] type it is given, checked by its `TypeId`
//! when it is taken (a compare, no allocation per request).

use std::any::Any;
use std::fmt;
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::Shared;
use crate::workers;

/// A connection that can wait in a [`Pool`].
pub trait Idle: Send + 'static {
    /// Whether the server has neither closed the connection nor written to
    /// it since its last response.
    fn is_reusable(&self) -> bool;
}

#[derive(Debug)]
pub struct Pool {
    slots: Box<[Slot]>,
}

/// One worker's idle connections (a `Vec<(C, Instant)>` once first used), on a cache line of its own so that two workers using
/// neighbouring slots do not bounce it between cores.
#[derive(Default)]
#[repr(align(64))]
struct Slot(Mutex<Option<Box<dyn Idles>>>);

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

/// A slot's connections, whatever their type: what [`Pool::expire`] needs
/// of them without knowing it.
trait Idles: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    /// Drops (closes) those idle for `keepalive_timeout` at `now`.
    fn expire(&mut self, keepalive_timeout: Duration, now: Instant);
}

impl<C: Idle> Idles for Vec<(C, Instant)> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn expire(&mut self, keepalive_timeout: Duration, now: Instant) {
        // Oldest first: the expired ones are a prefix.
        let expired = self
            .iter()
            .take_while(|(_, since)| now.saturating_duration_since(*since) >= keepalive_timeout)
            .count();
        self.drain(..expired);
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            slots: (0..workers::count()).map(|_| Slot::default()).collect(),
        }
    }
}

/// The connections in a locked slot, made on first use.
fn idle<C: Idle>(slot: &mut Option<Box<dyn Idles>>) -> &mut Vec<(C, Instant)> {
    slot.get_or_insert_with(|| Box::new(Vec::<(C, Instant)>::new()))
        .as_any()
        .downcast_mut()
        .expect("the request path pools one connection type")
}

impl Pool {
    /// This worker's idle connections.
    fn slot(&self) -> MutexGuard<'_, Option<Box<dyn Idles>>> {
        // Only a thread that is not a worker could be out of range.
        self.slots[workers::index() % self.slots.len()]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection, idle for less than `keepalive_timeout` at `now`
    /// (the caller's clock read, shared with its other uses), that the
    /// server has neither closed nor written to.
    pub fn take<C: Idle>(&self, keepalive_timeout: Duration, now: Instant) -> Option<C> {
        loop {
            let (conn, since) = idle::<C>(&mut self.slot()).pop()?;
            // Checked outside the lock; a dead one is dropped and the next
            // one looked at.
            if now.saturating_duration_since(since) < keepalive_timeout && conn.is_reusable() {
                return Some(conn);
            }
        }
    }

    /// Returns a connection whose last response ended cleanly, closing the
    /// oldest ones that have been idle for `keepalive_timeout` already.
    pub fn put<C: Idle>(&self, conn: C, max_idle: usize, keepalive_timeout: Duration) {
        if max_idle == 0 {
            return;
        }
        // One clock read, for the expiry checks and the new stamp.
        let now = Instant::now();
        let mut slot = self.slot();
        let idle = idle::<C>(&mut slot);
        idle.expire(keepalive_timeout, now);
        if idle.len() >= max_idle {
            // Drop the oldest: the front of the stack.
            idle.remove(0);
        }
        idle.push((conn, now));
    }

    /// Closes every worker's connections idle for `keepalive_timeout` at
    /// `now`. Each slot's lock is taken once, briefly: its worker may wait
    /// on it for that long once a second.
    pub fn expire(&self, keepalive_timeout: Duration, now: Instant) {
        for slot in &self.slots {
            let mut idles = slot.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(idles) = idles.as_mut() {
                idles.expire(keepalive_timeout, now);
            }
        }
    }
}

/// Once a second, closes the pooled connections of every server that have
/// been idle for their upstream's `keepalive_timeout`, until `shared` is
/// gone.
pub async fn sweep(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let snapshot = shared.load();
        let now = Instant::now();
        for up in &snapshot.upstreams {
            for server in &up.servers {
                server.state.pool.expire(up.cfg.keepalive_timeout, now);
            }
        }
    }
}
