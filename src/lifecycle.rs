//! Tracking work that graceful shutdown must wait for: connections, tunnels
//! and TLS handshakes each hold a [`Token`] while they run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
}

#[derive(Debug, Clone, Default)]
pub struct Tracker {
    inner: Arc<Inner>,
}

/// Held by one piece of tracked work; dropping it ends the work.
#[derive(Debug)]
pub struct Token {
    inner: Arc<Inner>,
}

impl Tracker {
    pub fn token(&self) -> Token {
        self.inner.count.fetch_add(1, Ordering::AcqRel);
        Token {
            inner: self.inner.clone(),
        }
    }

    pub fn active(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Resolves once no token is held.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if self.inner.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
