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
    /// This tunnel's place among the server's tunnels closing for `cause`
    /// (0 for the first to ask, then 1, 2, ...) and the line's length: the
    /// tunnels open when its first took its place. Fixed then, so that
    /// tunnels taking their places later (on another worker, whose wake-up
    /// came a moment after) are spread over the same line, not over one
    /// that the first closes have shortened.
    pub fn close_slot(&self, cause: CloseCause) -> (u32, u32) {
        let slots = match cause {
            CloseCause::Drain => &self.drain_slots,
            CloseCause::Shutdown => &self.shutdown_slots,
        };
        let open = self.tunnels();
        let line = |word: u64| {
            let (length, next) = ((word >> 32) as u32, word as u32);
            (if next == 0 { open } else { length }, next)
        };
        let taken = slots.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let (length, next) = line(word);
            Some(u64::from(length) << 32 | u64::from(next.saturating_add(1)))
        });
        let (length, place) = line(taken.unwrap_or_else(|word| word));
        (place, length.max(place + 1))
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
