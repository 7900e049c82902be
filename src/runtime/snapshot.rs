//! A snapshot: one config resolved into what the request path reads, each
//! upstream with its servers, their live state from the registry, their
//! endpoints and the upstream's balancer.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{AdminState, Availability, Registry, ServerState, UpstreamState, clock, stats};
use crate::balance::Balancer;
use crate::config::{self, Config, HostMatch};
use crate::sticky::Sticky;
use crate::tls::{UpstreamClients, UpstreamTls};
use crate::upstream::Endpoint;

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
                    state.clear_admin();
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
        // Passive health off (`max_fails = 0`, or one server): a server a
        // reload finds failed from before is available again at once.
        if cfg.max_fails == 0 || servers.len() == 1 {
            for server in &servers {
                server.state.forget_failures();
            }
        }
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
        self.down_by(self.state.admin())
    }

    pub fn is_draining(&self) -> bool {
        self.draining_by(self.state.admin())
    }

    fn down_by(&self, admin: AdminState) -> bool {
        match admin {
            AdminState::Disabled => true,
            AdminState::Enabled | AdminState::Draining => false,
            AdminState::None => self.cfg.down,
        }
    }

    fn draining_by(&self, admin: AdminState) -> bool {
        match admin {
            AdminState::Draining => true,
            AdminState::Enabled | AdminState::Disabled => false,
            AdminState::None => self.cfg.drain,
        }
    }

    /// Asked again once a request holds its slot on this server: whether
    /// the operator state still lets it in. A drain or disable applied
    /// since the pick turns it away (to pick again), so that whoever reads
    /// the counts after applying it has seen every request it let in (see
    /// [`ServerState::try_acquire`]).
    pub fn admits(&self, bound: bool) -> bool {
        let admin = self.state.admin();
        !self.down_by(admin) && (bound || !self.draining_by(admin))
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
    /// open on any live instance (this one alone without `[cluster]`), as
    /// every other live instance counted after applying this drain. A
    /// disabled server is down, not drained: it was never drained of
    /// anything, only cut off.
    pub fn is_drained(&self) -> bool {
        let (admin, change) = self.state.operator();
        // In this order: the confirmation before the counts that came with
        // it (see `RemoteCounts::store`), both after the state.
        self.draining_by(admin)
            && self.state.remote.confirms(change)
            && self.state.cluster_counts().is_idle()
    }

    /// Whether every other live instance has applied this instance's
    /// current operator change and reported its counts since (always, with
    /// no change from the cluster to confirm).
    pub fn is_confirmed(&self) -> bool {
        let (_, change) = self.state.operator();
        self.state.remote.confirms(change)
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
