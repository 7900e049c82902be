//! Streams an HTTP/2 client cancels while sluice is handling them, counted
//! per connection: the rapid reset hyper does not see.
//!
//! hyper's `max_pending_accept_reset_streams` counts only streams reset
//! before the server accepted them. A client that waits a few milliseconds
//! before each RST_STREAM — long enough for sluice to have sent the request
//! upstream — slips past it, and every stream costs a backend request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;

/// More cancelled streams than this, when they are also more than half of
/// the streams the client opened, is a flood: an attacker that cancels
/// (nearly) everything gets GOAWAY at its 51st stream, inside the
/// contract's 100, while a browser that cancels the odd navigation never
/// comes near the ratio.
pub(super) const MAX_CANCELLED_STREAMS: u32 = 50;

/// One connection's opened and cancelled streams. Each stream costs an
/// atomic add when it opens and, if cancelled, another and a load; the
/// connection's watchdog is woken only once the rule holds, so the request
/// path takes no lock.
#[derive(Debug, Default)]
pub(super) struct Cancels {
    opened: AtomicU32,
    cancelled: AtomicU32,
    flood: Notify,
}

impl Cancels {
    /// Counts a stream opened; the returned guard counts it cancelled if
    /// dropped before [`Handling::answered`].
    pub(super) fn open(self: &Arc<Self>) -> Handling {
        self.opened.fetch_add(1, Ordering::Relaxed);
        Handling(Some(self.clone()))
    }

    /// The streams cancelled so far, and opened.
    pub(super) fn counts(&self) -> (u32, u32) {
        (
            self.cancelled.load(Ordering::Relaxed),
            self.opened.load(Ordering::Relaxed),
        )
    }

    fn is_flood(&self, cancelled: u32) -> bool {
        cancelled > MAX_CANCELLED_STREAMS && cancelled > self.opened.load(Ordering::Relaxed) / 2
    }

    /// Resolves once the client has cancelled more than `beyond` streams
    /// and the rule holds.
    pub(super) async fn flooded(&self, beyond: u32) {
        loop {
            // A notification sent while nobody waited is kept for the next
            // wait, so none is lost between the check and the wait.
            self.flood.notified().await;
            let cancelled = self.cancelled.load(Ordering::Relaxed);
            if cancelled > beyond && self.is_flood(cancelled) {
                return;
            }
        }
    }
}

/// One stream sluice is handling. Dropped before its response was made,
/// it was cancelled: hyper drops the service's future when the client
/// resets the stream (or the connection ends).
#[derive(Debug)]
pub(super) struct Handling(Option<Arc<Cancels>>);

impl Handling {
    /// The response is made: whatever the client does now is no cancel.
    pub(super) fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        if let Some(cancels) = self.0.take() {
            let cancelled = cancels.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
            if cancels.is_flood(cancelled) {
                cancels.flood.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(cancels: &Arc<Cancels>, opened: u32, cancelled: u32) {
        for n in 0..opened {
            let stream = cancels.open();
            if n >= cancelled {
                stream.answered();
            }
        }
    }

    #[test]
    fn a_client_that_cancels_everything_is_a_flood_past_the_limit() {
        let cancels = Arc::new(Cancels::default());
        streams(&cancels, MAX_CANCELLED_STREAMS, MAX_CANCELLED_STREAMS);
        assert!(!cancels.is_flood(cancels.counts().0));
        streams(&cancels, 1, 1);
        assert!(cancels.is_flood(cancels.counts().0));
    }

    #[test]
    fn a_client_that_answers_most_streams_is_no_flood() {
        let cancels = Arc::new(Cancels::default());
        // 60 cancelled among 200: over the count, under half.
        streams(&cancels, 140, 0);
        streams(&cancels, 60, 60);
        assert_eq!(cancels.counts(), (60, 200));
        assert!(!cancels.is_flood(60));
    }
}
