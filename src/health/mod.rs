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
//! gone. Whoever swaps a snapshot in (start-up, a reload) calls [`start`]
//! after it, which starts the checkers that are missing; the `ServerState`
//! claim makes sure there is never a second one.

mod probe;

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::config::HealthCheck;
use crate::runtime::{ServerState, Shared};
use crate::upstream::Endpoint;
use probe::{CheckFailure, Probe};

/// Starts a checker for every server of a checked upstream that has none,
/// and marks the servers of unchecked upstreams healthy (a removed
/// `health_check` table must not leave a server out). Whoever swaps a
/// config in calls it after the swap.
pub fn start(shared: &Arc<Shared>) {
    let snapshot = shared.load();
    for up in &snapshot.upstreams {
        for server in &up.servers {
            if up.cfg.health_check.is_none() {
                if server.state.set_healthy(true) {
                    tracing::info!(upstream = %up.name, server = %server.cfg.address, "health checks removed: unhealthy -> healthy");
                }
            } else if server.state.claim_checker() {
                tokio::spawn(run(
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
    /// Checks speak TLS to a TLS upstream, as its requests do.
    endpoint: Endpoint,
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
        endpoint: server.endpoint.clone(),
        address: server.cfg.address.clone(),
        connect_timeout: up.cfg.connect_timeout,
        state,
    })
}

async fn run(shared: Weak<Shared>, upstream: Arc<str>, state: Weak<ServerState>) {
    let mut probe = Probe::default();
    let Some(target) = find(&shared, &upstream, &state) else {
        if let Some(server) = state.upgrade() {
            server.release_checker();
        }
        return;
    };
    let mut streak = Streak {
        // Unhealthy before any check ran: added by a reload to a checked
        // upstream, it waits for its first passing check, not for `passes`.
        awaiting_first_pass: !target.state.is_healthy()
            && target.state.last_check_unix_ms().is_none(),
        ..Streak::default()
    };
    // A short random start spreads the first checks of many servers.
    let mut delay = target.check.interval.mul_f64(0.1 * rand::random::<f64>());
    drop(target);
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
    awaiting_first_pass: bool,
}

impl Streak {
    fn record(&mut self, upstream: &str, target: &Target, outcome: Result<(), CheckFailure>) {
        let state = &target.state;
        state.record_check(outcome.is_ok());
        match outcome {
            Ok(()) => {
                self.fails = 0;
                self.passes = self.passes.saturating_add(1);
                let enough = std::mem::take(&mut self.awaiting_first_pass)
                    || self.passes >= target.check.passes.get();
                if enough && state.set_healthy(true) {
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::atomic::{AtomicU16, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config;

    /// A keep-alive HTTP/1.1 server answering every request with `status`.
    async fn responder(status: Arc<AtomicU16>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let status = status.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let code = status.load(Ordering::Relaxed);
                            let head = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                            if stream.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// `passes`: `None` for no `health_check` table.
    fn config(servers: &[SocketAddr], passes: Option<u32>) -> config::Config {
        let mut text = String::from(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"web\"\n[upstream.web]\n",
        );
        if let Some(passes) = passes {
            text.push_str(&format!(
                "[upstream.web.health_check]\ninterval = \"20ms\"\nfails = 1\npasses = {passes}\n"
            ));
        }
        for addr in servers {
            text.push_str(&format!("[[upstream.web.server]]\naddress = \"{addr}\"\n"));
        }
        config::parse(&text, Path::new("test.toml")).expect("valid test config")
    }

    async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        for _ in 0..500 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    fn server_state(shared: &Shared, i: usize) -> Arc<ServerState> {
        shared.load().upstreams[0].servers[i].state.clone()
    }

    #[tokio::test]
    async fn reloads_start_and_stop_the_one_checker_of_a_server() {
        let sick = Arc::new(AtomicU16::new(503));
        let a = responder(sick.clone()).await;
        let b = responder(Arc::new(AtomicU16::new(200))).await;
        let shared = Shared::new(config(&[a, b], Some(2)), Default::default());
        start(&shared);
        let state = server_state(&shared, 0);
        wait_until("a failing check takes a out", || !state.is_healthy()).await;
        assert!(!state.claim_checker(), "a checker runs");

        // Removing the table brings the server back at once, and the checker
        // goes away.
        shared.swap(config(&[a, b], None), Default::default());
        start(&shared);
        assert!(state.is_healthy());
        wait_until("the checker exits", || state.claim_checker()).await;
        state.release_checker();
        let checks = state.checks_failed.get();

        // Adding it back starts one checker again.
        shared.swap(config(&[a, b], Some(2)), Default::default());
        start(&shared);
        wait_until("checks resume", || state.checks_failed.get() > checks).await;
        wait_until("a is out again", || !state.is_healthy()).await;
        sick.store(200, Ordering::Relaxed);
        wait_until("a passes and is back", || state.is_healthy()).await;
    }

    #[tokio::test]
    async fn a_server_added_to_a_checked_upstream_waits_for_its_first_pass() {
        let a = responder(Arc::new(AtomicU16::new(200))).await;
        let status = Arc::new(AtomicU16::new(503));
        let c = responder(status.clone()).await;
        let shared = Shared::new(config(&[a], Some(1000)), Default::default());
        start(&shared);
        assert!(
            server_state(&shared, 0).is_healthy(),
            "at start-up every server is up"
        );

        shared.swap(config(&[a, c], Some(1000)), Default::default());
        start(&shared);
        let added = server_state(&shared, 1);
        assert!(!added.is_healthy());
        wait_until("c is checked", || added.checks_failed.get() > 0).await;
        assert!(!added.is_healthy(), "a failing check let it in");
        status.store(200, Ordering::Relaxed);
        wait_until("c's first pass lets it in", || added.is_healthy()).await;
    }
}
