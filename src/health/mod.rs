//! Active health checks: one task per checked server, probing it with an
//! HTTP/1.1 `GET` over its own keep-alive connection.
//!
//! Passive health (nginx's `max_fails`/`fail_timeout`, counted on real
//! requests) lives in [`ServerState`] and the request path; this module owns
//! the checks that run whether or not traffic flows.
//!
//! A checker is tied to one [`ServerState`], the identity a server keeps
//! across reloads, not to a snapshot or a worker: it holds only weak
//! references, looks its server up in the current snapshot every round (so a
//! reload that changes `interval`, `path` or the address applies at the next
//! round), and exits once the server or its upstream's `health_check` table is
//! gone. [`start`] runs after every snapshot swap and starts the checkers
//! that are missing; the `ServerState` claim makes sure there is never a
//! second one.

mod probe;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::config::HealthCheck;
use crate::runtime::{ServerState, Shared};
use probe::{CheckFailure, Probe};

/// Starts a checker for every server of a checked upstream that has none,
/// and marks the servers of unchecked upstreams healthy (a removed
/// `health_check` table must not leave a server out). Called with every new
/// snapshot. Outside a Tokio runtime (unit tests building snapshots) no
/// checker starts.
pub fn start(shared: &Arc<Shared>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let snapshot = shared.load();
    for up in &snapshot.upstreams {
        for server in &up.servers {
            if up.cfg.health_check.is_none() {
                if server.state.set_healthy(true) {
                    tracing::info!(upstream = %up.name, server = %server.cfg.address, "health checks removed: unhealthy -> healthy");
                }
            } else if server.state.claim_checker() {
                runtime.spawn(run(
                    Arc::downgrade(shared),
                    up.name.clone(),
                    Arc::downgrade(&server.state),
                ));
            }
        }
    }
}

/// What one round needs, read from the current snapshot.
struct Target {
    state: Arc<ServerState>,
    check: HealthCheck,
    addr: SocketAddr,
    /// As written in the config: the `Host` of the check request.
    address: String,
    connect_timeout: Duration,
}

/// The server behind `state` in the current snapshot, if it is still there
/// and its upstream is still checked.
fn find(shared: &Weak<Shared>, upstream: &str, state: &Weak<ServerState>) -> Option<Target> {
    let shared = shared.upgrade()?;
    let state = state.upgrade()?;
    let snapshot = shared.load();
    let up = snapshot.upstream(upstream)?;
    let check = up.cfg.health_check.clone()?;
    let server = up.servers.iter().find(|s| Arc::ptr_eq(&s.state, &state))?;
    Some(Target {
        check,
        addr: server.cfg.addr,
        address: server.cfg.address.clone(),
        connect_timeout: up.cfg.connect_timeout,
        state,
    })
}

async fn run(shared: Weak<Shared>, upstream: Arc<str>, state: Weak<ServerState>) {
    let mut probe = Probe::default();
    let mut streak = Streak::default();
    // A short random start spreads the first checks of many servers.
    let mut delay = find(&shared, &upstream, &state).map_or(Duration::ZERO, |t| {
        t.check.interval.mul_f64(0.1 * rand::random::<f64>())
    });
    loop {
        tokio::time::sleep(delay).await;
        let Some(target) = find(&shared, &upstream, &state) else {
            let Some(server) = state.upgrade() else {
                return;
            };
            server.release_checker();
            // A reload may have brought the check back between the lookup
            // and the release, and seen this checker still running.
            if find(&shared, &upstream, &state).is_some() && server.claim_checker() {
                continue;
            }
            tracing::debug!(%upstream, "health checker stopped");
            return;
        };
        // Never later than `interval`, a little earlier at random, so checks
        // of servers started together drift apart.
        delay = target
            .check
            .interval
            .mul_f64(0.9 + 0.1 * rand::random::<f64>());
        let outcome = probe.check(&target).await;
        // The table may have been removed while the check ran: its result
        // must not take back the healthy state the removal set.
        if find(&shared, &upstream, &state).is_none() {
            continue;
        }
        streak.record(&upstream, &target, outcome);
    }
}

/// Consecutive results, which move a server across the `fails`/`passes`
/// thresholds.
#[derive(Debug, Default)]
struct Streak {
    passes: u32,
    fails: u32,
}

impl Streak {
    fn record(&mut self, upstream: &str, target: &Target, outcome: Result<(), CheckFailure>) {
        let state = &target.state;
        // A server added by a reload waits unhealthy for its first check,
        // and the first pass lets it in.
        let first = state.last_check_unix_ms().is_none();
        state.record_check(outcome.is_ok());
        match outcome {
            Ok(()) => {
                self.fails = 0;
                self.passes = self.passes.saturating_add(1);
                if (first || self.passes >= target.check.passes.get()) && state.set_healthy(true) {
                    tracing::info!(%upstream, server = %target.address, "health check: unhealthy -> healthy");
                }
            }
            Err(reason) => {
                self.passes = 0;
                self.fails = self.fails.saturating_add(1);
                tracing::debug!(%upstream, server = %target.address, %reason, "health check failed");
                if self.fails >= target.check.fails.get() && state.set_healthy(false) {
                    tracing::warn!(%upstream, server = %target.address, "health check: healthy -> unhealthy: {reason}");
                }
            }
        }
    }
}
