//! Tunnels sluice closes itself: at their server's drain deadline or at
//! graceful shutdown, spread over `close_spread`, and counted by cause.

use std::sync::atomic::Ordering;

use super::ServerState;

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
