//! Passive health, nginx's `max_fails`/`fail_timeout`: failures within a
//! window make a server unavailable for `fail_timeout`, then one trial
//! request decides whether it is back.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Availability, ServerState};
use crate::runtime::clock;

/// Passive failure window, nginx's `max_fails`/`fail_timeout`: written only
/// when a request fails or a trial ends, so a mutex is fine here.
#[derive(Debug, Default)]
pub(super) struct Passive {
    /// When the current failure window started.
    window_start_ms: u64,
}

impl ServerState {
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

    /// Passive health was turned off for this server: whatever failures
    /// it had are forgotten, and a failed server is available again.
    pub fn forget_failures(&self) {
        self.record_success();
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
    pub(super) fn record_failure_at(
        &self,
        now: u64,
        max_fails: u32,
        fail_timeout: Duration,
    ) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if max_fails == 0 {
            // Off: a trial claimed before it was turned off must not leave
            // the server unavailable for want of a success.
            self.forget_failures();
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
