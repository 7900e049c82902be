//! Live state of one server: counters, passive and active health, operator
//! overrides and the slow-start clock.
//!
//! It lives outside the config snapshot, keyed by `(upstream, address)` in the
//! [`Registry`](super::Registry), so a reload that keeps a server keeps its state.
//! Everything the hot path reads is an atomic.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::clock;
use super::stats::{Counter, LatencyHistogram, StatusClasses};
use crate::proxy::pool::Pool;

/// What an operator set at runtime through the admin API. It overrides the
/// config's `down`/`drain` until the config changes that value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    /// No override: the config decides.
    None = 0,
    Enabled = 1,
    Disabled = 2,
    Draining = 3,
}

impl AdminState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => AdminState::Enabled,
            2 => AdminState::Disabled,
            3 => AdminState::Draining,
            _ => AdminState::None,
        }
    }
}

/// Passive failure window, nginx's `max_fails`/`fail_timeout`: written only
/// when a request fails or a trial ends, so a mutex is fine here.
#[derive(Debug, Default)]
struct Passive {
    /// When the current failure window started.
    window_start_ms: u64,
}

/// How available a server is right now, before `max_conns` is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Its `fail_timeout` has passed: exactly one trial request may go.
    Trial,
    Unavailable,
}

#[derive(Debug)]
pub struct ServerState {
    in_flight: AtomicU32,
    tunnels: AtomicU32,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Passive health: unavailable until this stamp (0 = not failed).
    failed_until_ms: AtomicU64,
    /// A trial request after `fail_timeout` is in flight.
    trial: AtomicBool,
    passive: Mutex<Passive>,
    /// Failures in the current window; read lock-free on every success.
    window_fails: AtomicU32,
    /// Active health checks: false while the checks say unhealthy.
    healthy: AtomicBool,
    /// An active checker task runs for this server: at most one at a time.
    checker: AtomicBool,
    admin: AtomicU8,
    /// Unix time in ms the drain deadline passes (0 = none).
    drain_deadline_ms: AtomicU64,
    /// A reload removed this server from the config; what still holds the
    /// state (requests, tunnels) is finishing.
    removed: AtomicBool,
    /// Woken when the drain deadline or `removed` changes, for the tunnels
    /// that must close when both say so.
    retire: Notify,
    /// Sticky-bound requests seen, and when the last one came (clock ms, 0 = never).
    bound_requests: AtomicU64,
    last_bound_ms: AtomicU64,
    /// When the server last became available again (clock ms, 0 = never
    /// recovered: no slow start).
    recovered_ms: AtomicU64,
    /// Idle keep-alive connections to this server.
    pub pool: Pool,
    /// Responses by status class, for metrics.
    pub responses: StatusClasses,
    /// Time to this server's response head, for the dashboard's
    /// percentiles: a few atomic adds per request, no lock.
    pub latency: LatencyHistogram,
    /// Active health check outcomes, and the last one's Unix time in ms.
    pub checks_passed: Counter,
    pub checks_failed: Counter,
    last_check_unix_ms: AtomicU64,
}

impl ServerState {
    pub fn new(healthy: bool) -> Self {
        ServerState {
            in_flight: AtomicU32::new(0),
            tunnels: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            failed_until_ms: AtomicU64::new(0),
            trial: AtomicBool::new(false),
            passive: Mutex::new(Passive::default()),
            window_fails: AtomicU32::new(0),
            healthy: AtomicBool::new(healthy),
            checker: AtomicBool::new(false),
            admin: AtomicU8::new(AdminState::None as u8),
            drain_deadline_ms: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            retire: Notify::new(),
            bound_requests: AtomicU64::new(0),
            last_bound_ms: AtomicU64::new(0),
            recovered_ms: AtomicU64::new(0),
            pool: Pool::default(),
            responses: StatusClasses::default(),
            latency: LatencyHistogram::default(),
            checks_passed: Counter::default(),
            checks_failed: Counter::default(),
            last_check_unix_ms: AtomicU64::new(0),
        }
    }

    /// Records one active check's outcome.
    pub fn record_check(&self, passed: bool) {
        if passed {
            self.checks_passed.inc();
        } else {
            self.checks_failed.inc();
        }
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_check_unix_ms.store(unix_ms, Ordering::Relaxed);
    }

    /// Unix time in ms of the last active check, if any ran.
    pub fn last_check_unix_ms(&self) -> Option<u64> {
        match self.last_check_unix_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn tunnels(&self) -> u32 {
        self.tunnels.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    pub fn set_admin(&self, state: AdminState) {
        let old = AdminState::from_u8(self.admin.swap(state as u8, Ordering::Relaxed));
        if old == AdminState::Disabled && state != AdminState::Disabled {
            self.mark_recovered();
        }
    }

    pub fn drain_deadline_ms(&self) -> Option<u64> {
        match self.drain_deadline_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    pub fn set_drain_deadline_ms(&self, deadline: Option<u64>) {
        self.drain_deadline_ms
            .store(deadline.unwrap_or(0), Ordering::Relaxed);
        self.retire.notify_waiters();
    }

    /// Called when a reload drops this server from the config.
    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::Relaxed);
        self.retire.notify_waiters();
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// Resolves once the server has been removed from the config *and* its
    /// drain deadline has passed: the operator's word that its remaining
    /// tunnels may be cut. Without a deadline it never resolves, so a
    /// removal alone cuts nothing.
    pub async fn retired(&self) {
        loop {
            let changed = self.retire.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match (self.is_removed(), self.drain_deadline_ms()) {
                (true, Some(deadline)) => {
                    if clock::now_ms() >= deadline {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(clock::instant_of(deadline).into()) => {}
                        _ = changed => {}
                    }
                }
                _ => changed.await,
            }
        }
    }

    pub fn bound_requests(&self) -> u64 {
        self.bound_requests.load(Ordering::Relaxed)
    }

    /// Clock ms of the last sticky-bound request, if any.
    pub fn last_bound_ms(&self) -> Option<u64> {
        match self.last_bound_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    pub fn note_bound_request(&self) {
        self.bound_requests.fetch_add(1, Ordering::Relaxed);
        self.last_bound_ms.store(clock::now_ms(), Ordering::Relaxed);
    }

    /// Set by active health checks. Returns true when the state changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if healthy && !was {
            self.mark_recovered();
        }
        was != healthy
    }

    /// Claims the right to run this server's active checker; false when one
    /// already runs, so a reload never starts a second one.
    pub fn claim_checker(&self) -> bool {
        self.checker
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// The checker is exiting; a later reload may start a new one.
    pub fn release_checker(&self) {
        self.checker.store(false, Ordering::Release);
    }

    /// Starts the slow-start ramp now.
    pub fn mark_recovered(&self) {
        self.recovered_ms.store(clock::now_ms(), Ordering::Relaxed);
    }

    pub fn recovered_ms(&self) -> Option<u64> {
        match self.recovered_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// Passive health at `now_ms`.
    pub fn passive_availability(&self, now_ms: u64) -> Availability {
        let until = self.failed_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            Availability::Available
        } else if now_ms < until || self.trial.load(Ordering::Relaxed) {
            Availability::Unavailable
        } else {
            Availability::Trial
        }
    }

    pub fn is_failed(&self, now_ms: u64) -> bool {
        self.passive_availability(now_ms) == Availability::Unavailable
    }

    /// Claims the single trial request allowed after `fail_timeout`.
    pub fn claim_trial(&self) -> bool {
        self.trial
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives back a claimed trial whose request said nothing about the
    /// server (the client's body failed), so another request can try.
    pub fn abandon_trial(&self) {
        self.trial.store(false, Ordering::Relaxed);
    }

    /// Takes an in-flight slot, honouring `max_conns` exactly.
    pub fn try_acquire(&self, max_conns: Option<u32>) -> bool {
        let prev = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Some(max) = max_conns
            && prev >= max
        {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn tunnel_opened(&self) {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tunnel_closed(&self) {
        self.tunnels.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request to this server succeeded: ends a failure window or a trial.
    /// Returns true when this ended an unavailable period (a recovery).
    pub fn record_success(&self) -> bool {
        if self.window_fails.load(Ordering::Relaxed) == 0
            && self.failed_until_ms.load(Ordering::Relaxed) == 0
        {
            return false;
        }
        let _passive = self.passive.lock().unwrap_or_else(|e| e.into_inner());
        self.window_fails.store(0, Ordering::Relaxed);
        let was_failed = self.failed_until_ms.swap(0, Ordering::Relaxed) != 0;
        self.trial.store(false, Ordering::Relaxed);
        if was_failed {
            self.mark_recovered();
        }
        was_failed
    }

    /// A request to this server failed. Returns true when this failure made
    /// the server unavailable (so the caller can log it once, with context).
    pub fn record_failure(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        self.record_failure_at(clock::now_ms(), max_fails, fail_timeout)
    }

    /// [`record_failure`](Self::record_failure) at clock time `now`.
    fn record_failure_at(&self, now: u64, max_fails: u32, fail_timeout: Duration) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if max_fails == 0 {
            return false;
        }
        let timeout = clock::ms(fail_timeout);
        let mut passive = self.passive.lock().unwrap_or_else(|e| e.into_inner());
        if self.trial.swap(false, Ordering::Relaxed) {
            // The trial failed: re-open for another fail_timeout.
            self.failed_until_ms.store(now + timeout, Ordering::Relaxed);
            return false;
        }
        let mut fails = self.window_fails.load(Ordering::Relaxed);
        if fails == 0 || now.saturating_sub(passive.window_start_ms) > timeout {
            fails = 0;
            passive.window_start_ms = now;
        }
        fails += 1;
        self.window_fails.store(fails, Ordering::Relaxed);
        if fails >= max_fails && self.failed_until_ms.load(Ordering::Relaxed) == 0 {
            self.failed_until_ms.store(now + timeout, Ordering::Relaxed);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL_TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn max_fails_within_fail_timeout_make_a_server_unavailable_for_fail_timeout() {
        let s = ServerState::new(true);
        assert!(!s.record_failure_at(1_000, 2, FAIL_TIMEOUT));
        assert_eq!(s.passive_availability(1_000), Availability::Available);
        assert!(
            s.record_failure_at(2_000, 2, FAIL_TIMEOUT),
            "second failure marks it failed"
        );
        assert_eq!(s.passive_availability(2_001), Availability::Unavailable);
        assert_eq!(s.passive_availability(11_999), Availability::Unavailable);
        assert_eq!(s.passive_availability(12_000), Availability::Trial);
    }

    #[test]
    fn failures_further_apart_than_fail_timeout_never_add_up() {
        let s = ServerState::new(true);
        assert!(!s.record_failure_at(1_000, 2, FAIL_TIMEOUT));
        assert!(
            !s.record_failure_at(11_001, 2, FAIL_TIMEOUT),
            "the first window has passed"
        );
        assert_eq!(s.passive_availability(11_002), Availability::Available);
        assert!(s.record_failure_at(12_000, 2, FAIL_TIMEOUT));
    }

    #[test]
    fn a_success_forgets_the_failures_so_far() {
        let s = ServerState::new(true);
        s.record_failure_at(1_000, 2, FAIL_TIMEOUT);
        assert!(!s.record_success(), "it was never unavailable");
        assert!(!s.record_failure_at(1_500, 2, FAIL_TIMEOUT));
        assert_eq!(s.passive_availability(1_500), Availability::Available);
    }

    #[test]
    fn exactly_one_trial_after_fail_timeout_and_its_success_closes() {
        let s = ServerState::new(true);
        s.record_failure_at(1_000, 1, FAIL_TIMEOUT);
        assert_eq!(s.passive_availability(11_000), Availability::Trial);
        assert!(s.claim_trial());
        assert!(!s.claim_trial(), "a second concurrent trial");
        assert_eq!(s.passive_availability(11_000), Availability::Unavailable);
        assert!(s.record_success(), "the trial's success is a recovery");
        assert_eq!(s.passive_availability(11_001), Availability::Available);
        assert!(s.recovered_ms().is_some(), "slow start begins");
    }

    #[test]
    fn a_failed_trial_reopens_for_another_fail_timeout() {
        let s = ServerState::new(true);
        s.record_failure_at(1_000, 1, FAIL_TIMEOUT);
        assert!(s.claim_trial());
        assert!(
            !s.record_failure_at(11_500, 1, FAIL_TIMEOUT),
            "not a new transition"
        );
        assert_eq!(s.passive_availability(21_499), Availability::Unavailable);
        assert_eq!(s.passive_availability(21_500), Availability::Trial);
    }

    #[test]
    fn an_abandoned_trial_lets_the_next_request_try() {
        let s = ServerState::new(true);
        s.record_failure_at(1_000, 1, FAIL_TIMEOUT);
        assert!(s.claim_trial());
        s.abandon_trial();
        assert_eq!(s.passive_availability(11_000), Availability::Trial);
        assert!(s.claim_trial());
    }

    #[test]
    fn max_fails_zero_never_fails_a_server() {
        let s = ServerState::new(true);
        for t in 0..10 {
            assert!(!s.record_failure_at(1_000 + t, 0, FAIL_TIMEOUT));
        }
        assert_eq!(s.passive_availability(1_010), Availability::Available);
        assert_eq!(s.failures(), 10, "failures are still counted");
    }

    #[test]
    fn one_checker_per_server() {
        let s = ServerState::new(true);
        assert!(s.claim_checker());
        assert!(!s.claim_checker());
        s.release_checker();
        assert!(s.claim_checker());
    }
}
