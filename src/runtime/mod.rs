//! What a config becomes when it runs: an immutable [`Snapshot`] of listeners,
//! routes and upstreams, swapped atomically on reload, and a [`Registry`] of
//! live per-server state that outlives snapshots.

pub mod clock;
mod line;
pub mod pool;
pub mod retry_budget;
mod snapshot;
pub mod state;
pub mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::tls::UpstreamClients;
pub use snapshot::{ListenerRt, ServerRt, ServerStatus, Snapshot, UpstreamRt};
pub use state::{
    AdminState, Availability, ChangeId, CloseCause, ClosedTunnels, Counts, ServerState,
};

/// The live config: one `ArcSwap` load per request.
pub struct Shared {
    current: ArcSwap<Snapshot>,
    /// Held while a snapshot is built and stored, so a reload and a rebuild
    /// for a runtime weight never store over each other's work.
    swap_lock: Mutex<()>,
    pub registry: Registry,
    pub reloads_ok: stats::Counter,
    pub reloads_failed: stats::Counter,
}

impl Shared {
    /// Builds the first snapshot: every server starts up. `tls` is the
    /// client side [`crate::tls::load`] built for `config`'s TLS upstreams.
    /// Nothing is
    /// started: the caller starts the health checks (and whatever else
    /// runs beside the proxy).
    pub fn new(config: Config, tls: UpstreamClients) -> Arc<Self> {
        let registry = Registry::default();
        let snapshot = Snapshot::build(Arc::new(config), tls, &registry, None);
        Arc::new(Shared {
            current: ArcSwap::from_pointee(snapshot),
            swap_lock: Mutex::new(()),
            registry,
            reloads_ok: stats::Counter::default(),
            reloads_failed: stats::Counter::default(),
        })
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in a new config, with the client side of its TLS upstreams,
    /// carrying the state of every surviving server.
    /// Returns the new snapshot. The caller starts the health checks its
    /// new servers need.
    pub fn swap(&self, config: Config, tls: UpstreamClients) -> Arc<Snapshot> {
        let _swapping = self.swap_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.store(Arc::new(config), tls)
    }

    /// Builds the running config again, for a runtime weight: the balancers
    /// precompute their order from the weights, as they do on a reload.
    pub fn rebuild(&self) -> Arc<Snapshot> {
        let _swapping = self.swap_lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load();
        self.store(current.config.clone(), current.upstream_tls.clone())
    }

    /// Builds and stores a snapshot; the caller holds `swap_lock`.
    fn store(&self, config: Arc<Config>, tls: UpstreamClients) -> Arc<Snapshot> {
        let old = self.current.load_full();
        let new = Arc::new(Snapshot::build(config, tls, &self.registry, Some(&old)));
        self.current.store(new.clone());
        self.registry.retain(&new);
        // A changed `drain` in the file may make a server drained.
        for server in new.upstreams.iter().flat_map(|u| &u.servers) {
            server.state.open_changed();
        }
        new
    }
}

/// Identity of a server across reloads: its upstream and its address as written.
pub type ServerKey = (String, String);

/// Live state keyed by identity, consulted only when a snapshot is built.
#[derive(Default)]
pub struct Registry {
    servers: Mutex<HashMap<ServerKey, Arc<ServerState>>>,
    upstreams: Mutex<HashMap<String, Arc<UpstreamState>>>,
    /// Responses per listener, keyed by its address (its identity).
    listeners: Mutex<HashMap<SocketAddr, Arc<stats::StatusClasses>>>,
}

impl Registry {
    fn server(
        &self,
        key: ServerKey,
        make: impl FnOnce() -> ServerState,
    ) -> (Arc<ServerState>, bool) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let mut created = false;
        let state = servers
            .entry(key)
            .or_insert_with(|| {
                created = true;
                Arc::new(make())
            })
            .clone();
        (state, created)
    }

    fn upstream(&self, name: &str) -> Arc<UpstreamState> {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        upstreams.entry(name.to_owned()).or_default().clone()
    }

    fn listener(&self, listen: SocketAddr) -> Arc<stats::StatusClasses> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.entry(listen).or_default().clone()
    }

    /// Forgets servers and upstreams the snapshot no longer has. Their state
    /// lives on in older snapshots and in-flight requests until those end;
    /// a removed server with requests or tunnels still open stays known
    /// until a reload finds it idle, so that one bringing it back before
    /// they end counts them (its `max_conns` stays exact).
    fn retain(&self, snapshot: &Snapshot) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.retain(|(upstream, address), state| {
            let kept = snapshot
                .upstream(upstream)
                .is_some_and(|u| u.servers.iter().any(|s| &s.cfg.address == address));
            if !kept {
                // Waiters on a removed server learn it is gone.
                state.open_changed();
            }
            kept || state.in_flight() > 0 || state.tunnels() > 0
        });
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        upstreams.retain(|name, _| snapshot.upstream(name).is_some());
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.retain(|listen, _| snapshot.listener(*listen).is_some());
    }
}

/// Per-upstream live state that survives reloads.
#[derive(Debug, Default)]
pub struct UpstreamState {
    /// Round-robin position among the primary servers.
    pub rr: AtomicU64,
    /// Among the backup servers: a tier of its own, as nginx keeps it, so
    /// the primaries' skipped positions do not steer the backups' turns.
    pub rr_backup: AtomicU64,
    /// Requests in flight to this upstream.
    pub in_flight: AtomicU32,
    /// Kept across reloads, so a reload does not hand a failing upstream a
    /// fresh budget.
    pub retry_budget: retry_budget::RetryBudget,
    /// Requests waiting in the `queue` for a server under `max_conns`.
    pub queued: AtomicU32,
    /// Those requests, in arrival order.
    pub line: line::Line,
    pub retries: stats::Counter,
    /// Retries the budget refused.
    pub retries_refused: stats::Counter,
    pub sticky_honoured: stats::Counter,
    pub sticky_reissued: stats::Counter,
    /// Time to the response head (or the error), per request.
    pub latency: stats::LatencyHistogram,
}

impl UpstreamState {
    pub fn next_rr(&self) -> u64 {
        self.rr.fetch_add(1, Ordering::Relaxed)
    }
}
