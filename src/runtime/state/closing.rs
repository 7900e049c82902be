//! Tunnels sluice closes itself: at their server's drain deadline or at
//! graceful shutdown, spread over `close_spread`, and counted by cause.

use std::sync::atomic::Ordering;

use super::ServerState;
use crate::runtime::clock;

/// Why sluice closed a tunnel it did not have to carry any longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CloseCause {
    /// Its server's drain deadline passed.
    Drain,
    /// Graceful shutdown.
    Shutdown,
}

impl CloseCause {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::Drain => "drain",
            CloseCause::Shutdown => "shutdown",
        }
    }
}

/// Tunnels sluice closed, by cause and by the Close code sent to the
/// client (`None`: not a WebSocket, closed without one).
pub type ClosedTunnels = Vec<((CloseCause, Option<u16>), u64)>;

impl ServerState {
    /// Resolves once a drain deadline is set and has passed: the operator's
    /// word that the server's tunnels must close. Without a deadline it
    /// waits for one.
    pub async fn drain_deadline_passed(&self) {
        loop {
            let changed = self.deadline_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.drain_deadline_ms() {
                Some(deadline) => {
                    if clock::now_ms() >= deadline {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(clock::instant_of(deadline).into()) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// This tunnel's place among the server's tunnels closing for `cause`:
    /// 0 for the first to ask, then 1, 2, ...
    pub fn close_slot(&self, cause: CloseCause) -> u32 {
        let slots = match cause {
            CloseCause::Drain => &self.drain_slots,
            CloseCause::Shutdown => &self.shutdown_slots,
        };
        slots.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a tunnel sluice closed, with the code sent to the client.
    pub fn note_closed_tunnel(&self, cause: CloseCause, code: Option<u16>) {
        let mut closed = self
            .closed_tunnels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match closed.iter_mut().find(|(key, _)| *key == (cause, code)) {
            Some((_, n)) => *n += 1,
            None => {
                closed.push(((cause, code), 1));
                closed.sort_unstable_by_key(|(key, _)| *key);
            }
        }
    }

    pub fn closed_tunnels(&self) -> ClosedTunnels {
        self.closed_tunnels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
