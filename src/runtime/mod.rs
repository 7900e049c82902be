//! What a config becomes when it runs: an immutable [`Snapshot`] of listeners,
//! routes and upstreams, swapped atomically on reload, and a [`Registry`] of
//! live per-server state that outlives snapshots.

pub mod clock;
pub mod pool;
pub mod retry_budget;
pub mod state;
pub mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::balance::Balancer;
use crate::config::{self, Config, HostMatch};
use crate::sticky::Sticky;
use crate::tls::{UpstreamClients, UpstreamTls};
use crate::upstream::Endpoint;
pub use state::{AdminState, Availability, CloseCause, ClosedTunnels, Counts, ServerState};

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
    /// lives on in older snapshots and in-flight requests until those end.
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
            kept
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
    /// Round-robin position.
    pub rr: AtomicU64,
    /// Requests in flight to this upstream.
    pub in_flight: AtomicU32,
    /// Kept across reloads, so a reload does not hand a failing upstream a
    /// fresh budget.
    pub retry_budget: retry_budget::RetryBudget,
    /// Requests waiting in the `queue` for a server under `max_conns`.
    pub queued: AtomicU32,
    /// Those requests, in arrival order.
    pub line: crate::balance::queue::Line,
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

/// One immutable, fully resolved configuration.
pub struct Snapshot {
    pub config: Arc<Config>,
    /// Kept for rebuilding this config (a runtime weight) without reading
    /// its CA bundles again.
    pub upstream_tls: UpstreamClients,
    pub listeners: Vec<Arc<ListenerRt>>,
    pub upstreams: Vec<Arc<UpstreamRt>>,
}

impl Snapshot {
    pub fn build(
        config: Arc<Config>,
        upstream_tls: UpstreamClients,
        registry: &Registry,
        old: Option<&Snapshot>,
    ) -> Snapshot {
        let upstreams: Vec<Arc<UpstreamRt>> = config
            .upstreams
            .iter()
            .map(|u| Arc::new(UpstreamRt::build(u, upstream_tls.get(u), registry, old)))
            .collect();
        let find = |name: &str| {
            upstreams
                .iter()
                .find(|u| u.cfg.name == name)
                .cloned()
                .expect("config validation guarantees every referenced upstream exists")
        };
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                Arc::new(ListenerRt {
                    name: l.name.as_str().into(),
                    default: l.upstream.as_deref().map(find),
                    routes: l
                        .routes
                        .iter()
                        .map(|r| RouteRt {
                            host: r.host.clone(),
                            path_prefix: r.path_prefix.clone(),
                            upstream: find(&r.upstream),
                        })
                        .collect(),
                    responses: registry.listener(l.listen),
                    cfg: l.clone(),
                })
            })
            .collect();
        Snapshot {
            config,
            upstream_tls,
            listeners,
            upstreams,
        }
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<UpstreamRt>> {
        self.upstreams.iter().find(|u| u.cfg.name == name)
    }

    pub fn listener(&self, listen: SocketAddr) -> Option<&Arc<ListenerRt>> {
        self.listeners.iter().find(|l| l.cfg.listen == listen)
    }
}

pub struct ListenerRt {
    pub name: Arc<str>,
    pub cfg: config::Listener,
    pub default: Option<Arc<UpstreamRt>>,
    pub routes: Vec<RouteRt>,
    /// Every response this listener sent, by status class (survives reloads).
    pub responses: Arc<stats::StatusClasses>,
}

pub struct RouteRt {
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    pub upstream: Arc<UpstreamRt>,
}

impl ListenerRt {
    /// First matching route, else the default upstream. `host` is lower-case
    /// and has no port.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<UpstreamRt>> {
        self.routes
            .iter()
            .find(|r| {
                r.host.as_ref().is_none_or(|h| match h {
                    HostMatch::Exact(exact) => host == exact,
                    HostMatch::Suffix(suffix) => {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    }
                }) && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            })
            .map(|r| &r.upstream)
            .or(self.default.as_ref())
    }
}

pub struct UpstreamRt {
    pub name: Arc<str>,
    pub cfg: config::Upstream,
    pub servers: Vec<ServerRt>,
    /// Indices into `servers`: the primary tier, then the backup tier.
    pub primary: Vec<usize>,
    pub backup: Vec<usize>,
    pub balancer: Balancer,
    pub state: Arc<UpstreamState>,
    /// Cookie stickiness, with every server's cookie value precomputed.
    pub sticky: Option<Sticky>,
}

impl UpstreamRt {
    fn build(
        cfg: &config::Upstream,
        tls: Option<UpstreamTls>,
        registry: &Registry,
        old: Option<&Snapshot>,
    ) -> UpstreamRt {
        let old_upstream = old.and_then(|o| o.upstream(&cfg.name));
        let servers: Vec<ServerRt> = cfg
            .servers
            .iter()
            .map(|s| {
                // At start-up every server is up; one added later to a checked
                // upstream waits for its first passing check.
                let healthy = old.is_none() || cfg.health_check.is_none();
                let (state, created) = registry
                    .server((cfg.name.clone(), s.address.clone()), || {
                        ServerState::new(healthy)
                    });
                if created && old.is_some() {
                    state.mark_recovered();
                }
                let old_server = old_upstream
                    .and_then(|u| u.servers.iter().find(|o| o.cfg.address == s.address));
                if let Some(o) = old_server
                    && (o.cfg.down != s.down || o.cfg.drain != s.drain)
                {
                    // The file changed this server's state: it wins over the API.
                    state.set_admin(AdminState::None);
                    state.set_drain_deadline_ms(None);
                }
                // The old snapshot's weight may be a runtime one: the file's
                // own is in its config.
                let old_file_weight = old
                    .and_then(|o| o.config.upstream(&cfg.name))
                    .and_then(|u| u.servers.iter().find(|o| o.address == s.address))
                    .map(|o| o.weight);
                if old_file_weight.is_some_and(|w| w != s.weight) {
                    state.set_weight(None);
                }
                let mut server = s.clone();
                server.weight = state.weight().unwrap_or(s.weight);
                let endpoint = Endpoint {
                    addr: s.addr,
                    tls: tls.as_ref().map(|tls| tls.server(&cfg.name, s)),
                };
                ServerRt {
                    cfg: server,
                    state,
                    endpoint,
                }
            })
            .collect();
        // What the balancers see: the file's upstream with runtime weights.
        let mut cfg = cfg.clone();
        for (file, running) in cfg.servers.iter_mut().zip(&servers) {
            file.weight = running.cfg.weight;
        }
        let cfg = &cfg;
        let primary = (0..servers.len())
            .filter(|&i| !servers[i].cfg.backup)
            .collect();
        let backup = (0..servers.len())
            .filter(|&i| servers[i].cfg.backup)
            .collect();
        UpstreamRt {
            name: cfg.name.as_str().into(),
            balancer: Balancer::build(cfg),
            sticky: cfg
                .sticky
                .as_ref()
                .map(|sticky| Sticky::build(&cfg.name, sticky, &cfg.servers)),
            state: registry.upstream(&cfg.name),
            cfg: cfg.clone(),
            servers,
            primary,
            backup,
        }
    }

    /// nginx never marks the only server failed: there is nowhere else to go.
    pub fn max_fails(&self) -> u32 {
        if self.servers.len() == 1 {
            0
        } else {
            self.cfg.max_fails
        }
    }
}

pub struct ServerRt {
    pub cfg: config::Server,
    pub state: Arc<ServerState>,
    /// How to connect to it, TLS name included.
    pub endpoint: Endpoint,
}

/// The state a server shows to operators (`/api/status`, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    Up,
    Down,
    Unhealthy,
    Failed,
    Draining,
    Drained,
    Backup,
}

impl ServerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Up => "up",
            ServerStatus::Down => "down",
            ServerStatus::Unhealthy => "unhealthy",
            ServerStatus::Failed => "failed",
            ServerStatus::Draining => "draining",
            ServerStatus::Drained => "drained",
            ServerStatus::Backup => "backup",
        }
    }
}

impl ServerRt {
    pub fn is_down(&self) -> bool {
        match self.state.admin() {
            AdminState::Disabled => true,
            AdminState::Enabled | AdminState::Draining => false,
            AdminState::None => self.cfg.down,
        }
    }

    pub fn is_draining(&self) -> bool {
        match self.state.admin() {
            AdminState::Draining => true,
            AdminState::Enabled | AdminState::Disabled => false,
            AdminState::None => self.cfg.drain,
        }
    }

    /// Whether a request may go to this server now, before `max_conns`.
    /// `bound` is true for a request carrying a valid sticky binding to it.
    pub fn availability(&self, now_ms: u64, bound: bool) -> Availability {
        if self.is_down() || !self.state.is_healthy() {
            return Availability::Unavailable;
        }
        if self.is_draining() {
            let past_deadline = self
                .state
                .drain_deadline_ms()
                .is_some_and(|deadline| now_ms >= deadline);
            if !bound || past_deadline {
                return Availability::Unavailable;
            }
        }
        self.state.passive_availability(now_ms)
    }

    pub fn max_conns(&self) -> Option<u32> {
        self.cfg.max_conns.map(|n| n.get())
    }

    /// Below `max_conns` right now (a hint: the acquire is what counts).
    pub fn has_capacity(&self) -> bool {
        self.max_conns()
            .is_none_or(|max| self.state.in_flight() < max)
    }

    /// The slow-start share in (0, 1]: ~10% right after a recovery, rising
    /// linearly to 1 over `slow_start`.
    pub fn slow_start_factor(&self, now_ms: u64) -> f64 {
        let ramp = clock::ms(self.cfg.slow_start);
        match self.state.recovered_ms() {
            Some(since) if ramp > 0 && now_ms < since + ramp => {
                let elapsed = (now_ms - since) as f64 / ramp as f64;
                0.1 + 0.9 * elapsed
            }
            _ => 1.0,
        }
    }

    /// The one rule for *drained*, behind both the `drained` state and the
    /// `drained?wait=` call: draining, with nothing in flight and no tunnel
    /// open on any live instance (this one alone without `[cluster]`).
    pub fn is_drained(&self) -> bool {
        self.is_draining() && self.state.cluster_counts().is_idle()
    }

    pub fn status(&self, now_ms: u64) -> ServerStatus {
        if self.is_down() {
            ServerStatus::Down
        } else if self.is_draining() {
            if self.is_drained() {
                ServerStatus::Drained
            } else {
                ServerStatus::Draining
            }
        } else if !self.state.is_healthy() {
            ServerStatus::Unhealthy
        } else if self.state.is_failed(now_ms) {
            ServerStatus::Failed
        } else if self.cfg.backup {
            ServerStatus::Backup
        } else {
            ServerStatus::Up
        }
    }
}
