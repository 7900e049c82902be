//! Live state of one server: counters, passive and active health, operator
//! overrides and the slow-start clock.
//!
//! It lives outside the config snapshot, keyed by `(upstream, address)` in the
//! [`Registry`](super::Registry), so a reload that keeps a server keeps its state.
//! Everything the hot path reads is an atomic.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

use tokio::sync::Notify;

use super::clock;
use super::pool::Pool;
use super::stats::{Counter, LatencyHistogram, StatusClasses};

mod closing;
mod passive;

pub use closing::{CloseCause, ClosedTunnels};
use passive::Passive;

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

/// An operator change as every instance of a cluster names it (the cluster
/// derives it from the change's version), so one instance can tell whether
/// another has applied the very change it has. 56 bits: it shares one
/// atomic word with the [`AdminState`] it set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChangeId(NonZeroU64);

impl ChangeId {
    const BITS: u32 = 56;
    const MASK: u64 = (1 << Self::BITS) - 1;

    /// The id of a 64-bit digest of a change: its low 56 bits, never zero.
    pub fn from_digest(digest: u64) -> ChangeId {
        ChangeId(NonZeroU64::new(digest & Self::MASK).unwrap_or(NonZeroU64::MIN))
    }

    /// An id as sent, or `None` for 0 (no change) or one out of range.
    pub fn from_raw(raw: u64) -> Option<ChangeId> {
        NonZeroU64::new(raw)
            .filter(|n| n.get() <= Self::MASK)
            .map(ChangeId)
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }
}

/// The operator state and the change that set it, packed in one word so
/// that no reader sees one without the other: an instance that reports a
/// change as applied has, by that same reading, switched to its state.
fn pack(admin: AdminState, change: Option<ChangeId>) -> u64 {
    (admin as u64) << ChangeId::BITS | change.map_or(0, ChangeId::get)
}

fn unpack(word: u64) -> (AdminState, Option<ChangeId>) {
    (
        AdminState::from_u8((word >> ChangeId::BITS) as u8),
        ChangeId::from_raw(word & ChangeId::MASK),
    )
}

/// How available a server is right now, before `max_conns` is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Its `fail_timeout` has passed: exactly one trial request may go.
    Trial,
    Unavailable,
}

/// The load on a server that decides whether it is drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Counts {
    pub in_flight: u32,
    pub tunnels: u32,
}

impl Counts {
    pub fn is_idle(self) -> bool {
        self.in_flight == 0 && self.tunnels == 0
    }
}

/// Other instances' counts for one server, as of their last heartbeats.
#[derive(Debug, Default)]
pub struct RemoteCounts {
    pub in_flight: AtomicU32,
    pub tunnels: AtomicU32,
    /// Unix ms of the latest sticky-bound request any of them saw (0 = never).
    pub last_bound_unix_ms: AtomicU64,
    /// The change of this instance's (a [`ChangeId`], 0 = none) that every
    /// other live instance has reported applying, with counts taken after
    /// it did: until then their counts may predate it.
    confirmed: AtomicU64,
}

impl RemoteCounts {
    /// Stores what the other live instances reported: their summed counts,
    /// and the change of this instance's they all confirm. Returns whether
    /// the answer to "drained?" may have changed, so a `drained?wait=` call
    /// can be told to look again.
    pub fn store(
        &self,
        counts: Counts,
        last_bound_unix_ms: Option<u64>,
        confirmed: Option<ChangeId>,
    ) -> bool {
        let in_flight = self.in_flight.swap(counts.in_flight, Ordering::SeqCst);
        let tunnels = self.tunnels.swap(counts.tunnels, Ordering::SeqCst);
        self.last_bound_unix_ms
            .store(last_bound_unix_ms.unwrap_or(0), Ordering::Relaxed);
        // After the counts, which [`confirms`](Self::confirms) is read
        // before: a reader that sees a confirmation sees the counts that
        // came with it.
        let confirmed = confirmed.map_or(0, ChangeId::get);
        let was = self.confirmed.swap(confirmed, Ordering::SeqCst);
        in_flight != counts.in_flight || tunnels != counts.tunnels || was != confirmed
    }

    /// Whether every other live instance has confirmed `change`, this
    /// instance's current one. Nothing needs confirming when there is no
    /// change from the cluster (no `[cluster]`, or the file's state).
    pub fn confirms(&self, change: Option<ChangeId>) -> bool {
        change.is_none_or(|change| self.confirmed.load(Ordering::SeqCst) == change.get())
    }

    /// With Redis away the others cannot confirm anything: this instance
    /// decides on the counts it last heard, as it would without the
    /// confirmation.
    pub fn confirm_locally(&self, change: Option<ChangeId>) -> bool {
        let confirmed = change.map_or(0, ChangeId::get);
        self.confirmed.swap(confirmed, Ordering::SeqCst) != confirmed
    }

    pub fn last_bound_unix_ms(&self) -> Option<u64> {
        match self.last_bound_unix_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }
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
    /// The [`AdminState`] and the [`ChangeId`] that set it, packed; read
    /// on the request path, so one load.
    operator: AtomicU64,
    /// Clock ms the drain deadline passes (0 = none).
    drain_deadline_ms: AtomicU64,
    /// The line of tunnels closing at the deadline or at shutdown, which
    /// spreads the closes over `close_spread`: the line's length as its
    /// first tunnel found it (high half) and the next place in it (low).
    drain_slots: AtomicU64,
    shutdown_slots: AtomicU64,
    closed_tunnels: Mutex<ClosedTunnels>,
    /// Callers of [`wait_until`](Self::wait_until), so the request path
    /// only pays for a wake-up when someone waits.
    waiters: AtomicU32,
    /// Woken when the last request or tunnel ends, or the drain changes,
    /// while someone waits.
    open_changed: Notify,
    /// Sticky-bound requests seen, and when the last one came (clock ms, 0 = never).
    bound_requests: AtomicU64,
    last_bound_ms: AtomicU64,
    /// When the server last became available again (clock ms, 0 = never
    /// recovered: no slow start).
    recovered_ms: AtomicU64,
    /// Runtime weight set through the API or the cluster (0 = the file's).
    weight: AtomicU32,
    /// What the other live instances of a cluster last reported for this
    /// server, summed; written only by the cluster task.
    pub remote: RemoteCounts,
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
            operator: AtomicU64::new(pack(AdminState::None, None)),
            drain_deadline_ms: AtomicU64::new(0),
            drain_slots: AtomicU64::new(0),
            shutdown_slots: AtomicU64::new(0),
            closed_tunnels: Mutex::new(Vec::new()),
            waiters: AtomicU32::new(0),
            open_changed: Notify::new(),
            bound_requests: AtomicU64::new(0),
            last_bound_ms: AtomicU64::new(0),
            recovered_ms: AtomicU64::new(0),
            weight: AtomicU32::new(0),
            remote: RemoteCounts::default(),
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
        self.operator().0
    }

    /// The operator state and the cluster change last applied to this
    /// server (`None` until one was: always without `[cluster]`), read
    /// together.
    /// Sequentially consistent: see [`try_acquire`](Self::try_acquire).
    pub fn operator(&self) -> (AdminState, Option<ChangeId>) {
        unpack(self.operator.load(Ordering::SeqCst))
    }

    /// The file decides this server's state again. The cluster change last
    /// applied stays known: this instance has dealt with it, and says so
    /// to the others that wait for its confirmation.
    pub fn clear_admin(&self) {
        self.set_admin(AdminState::None, |applied| applied);
    }

    /// Sets the operator state, and the change that set it from the one
    /// applied so far.
    fn set_admin(&self, state: AdminState, change: impl Fn(Option<ChangeId>) -> Option<ChangeId>) {
        let old = self
            .operator
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                Some(pack(state, change(unpack(word).1)))
            })
            .unwrap_or_else(|word| word);
        if unpack(old).0 == AdminState::Disabled && state != AdminState::Disabled {
            self.mark_recovered();
        }
        self.open_changed.notify_waiters();
    }

    /// The operator's drain; `deadline` is a [`clock`] stamp, `change` the
    /// cluster's name for it.
    pub fn drain(&self, deadline: Option<u64>, change: Option<ChangeId>) {
        self.set_drain_deadline_ms(deadline);
        self.set_admin(AdminState::Draining, |_| change);
    }

    /// The operator's enable: back to normal, clearing drain and down.
    pub fn enable(&self, change: Option<ChangeId>) {
        self.set_admin(AdminState::Enabled, |_| change);
        self.set_drain_deadline_ms(None);
    }

    /// The operator's disable: marked down.
    pub fn disable(&self, change: Option<ChangeId>) {
        self.set_admin(AdminState::Disabled, |_| change);
        self.set_drain_deadline_ms(None);
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
        // A new deadline starts a new line of closes.
        self.drain_slots.store(0, Ordering::Relaxed);
        // The tunnels that close once it passes wait for it in their
        // worker's idle registry.
        crate::workers::idle::stop_changed();
    }

    /// Resolves once `done` says so, asking it now and again whenever the
    /// last request or tunnel ends or the server's drain changes (or
    /// [`open_changed`](Self::open_changed) is called).
    pub async fn wait_until(&self, mut done: impl FnMut() -> bool) {
        struct Waiting<'a>(&'a AtomicU32);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        loop {
            let changed = self.open_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Pairs with `ended`: either it sees this waiter, or `done`
            // sees its count.
            fence(Ordering::SeqCst);
            if done() {
                return;
            }
            changed.await;
        }
    }

    /// Wakes [`wait_until`](Self::wait_until): something it may ask about
    /// changed (a reload, for one).
    pub fn open_changed(&self) {
        self.open_changed.notify_waiters();
    }

    /// A request or tunnel ended, leaving `left` open of that kind.
    fn ended(&self, left: u32) {
        if left == 0 && self.waiters.load(Ordering::SeqCst) > 0 {
            self.open_changed.notify_waiters();
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

    /// The weight set at runtime, overriding the file's until the file
    /// changes it.
    pub fn weight(&self) -> Option<NonZeroU32> {
        NonZeroU32::new(self.weight.load(Ordering::Relaxed))
    }

    /// Returns whether the runtime weight changed.
    pub fn set_weight(&self, weight: Option<NonZeroU32>) -> bool {
        let new = weight.map_or(0, NonZeroU32::get);
        self.weight.swap(new, Ordering::Relaxed) != new
    }

    /// This instance's in-flight requests and open tunnels, read after
    /// its operator state: a request admitted before a drain or disable
    /// was applied is in them (see [`try_acquire`](Self::try_acquire)).
    pub fn counts(&self) -> Counts {
        // In-flight first: a tunnel opens before its request's slot is
        // given back, so reading them in this order misses neither.
        Counts {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            tunnels: self.tunnels.load(Ordering::SeqCst),
        }
    }

    /// In-flight requests and open tunnels of every live instance, this one
    /// included: what "drained" means in a cluster.
    pub fn cluster_counts(&self) -> Counts {
        let local = self.counts();
        Counts {
            in_flight: local.in_flight + self.remote.in_flight.load(Ordering::SeqCst),
            tunnels: local.tunnels + self.remote.tunnels.load(Ordering::SeqCst),
        }
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

    /// Takes an in-flight slot, honouring `max_conns` exactly.
    ///
    /// Sequentially consistent, as are [`operator`](Self::operator) and
    /// [`counts`](Self::counts): a request takes its slot, then asks the
    /// operator state again ([`ServerRt::admits`](super::ServerRt::admits));
    /// a drain sets the state, then the counts are read. Whichever comes
    /// second sees the other, so a request picked just before a drain is
    /// either counted by whoever asks "drained?" afterwards, or turned
    /// away to another server.
    pub fn try_acquire(&self, max_conns: Option<u32>) -> bool {
        let prev = self.in_flight.fetch_add(1, Ordering::SeqCst);
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
        let before = self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.ended(before - 1);
    }

    pub fn tunnel_opened(&self) {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tunnel_closed(&self) {
        let before = self.tunnels.fetch_sub(1, Ordering::SeqCst);
        self.ended(before - 1);
    }
}

#[cfg(test)]
mod tests;
