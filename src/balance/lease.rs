//! The guard for a server's in-flight count: what `max_conns`,
//! `least_conn` and the `queue` read, held by a request from the moment a
//! server is picked until its response body ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::runtime::{ServerState, UpstreamState};

/// One request's claim on a server: counted in the server's and upstream's
/// in-flight numbers until dropped.
#[derive(Debug)]
pub struct Lease {
    pub server: Arc<ServerState>,
    upstream: Arc<UpstreamState>,
}

impl Lease {
    /// Takes a slot on `server`, or `None` when it is at `max_conns`.
    pub fn acquire(
        server: &Arc<ServerState>,
        upstream: &Arc<UpstreamState>,
        max_conns: Option<u32>,
    ) -> Option<Lease> {
        if !server.try_acquire(max_conns) {
            return None;
        }
        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            server: server.clone(),
            upstream: upstream.clone(),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.server.release();
        self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
        super::queue::slot_freed(&self.upstream);
    }
}
