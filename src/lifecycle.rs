//! Tracking work that graceful shutdown must wait for: connections, tunnels
//! and TLS handshakes each hold a [`Token`] while they run, and can learn
//! from it that shutdown has begun.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::workers::idle;

#[derive(Debug)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
    /// The `shutdown_timeout` once graceful shutdown has begun.
    shutdown: watch::Sender<Option<Duration>>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            count: AtomicUsize::new(0),
            idle: Notify::new(),
            shutdown: watch::Sender::new(None),
        }
    }
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

    /// Tells the tracked work that graceful shutdown has begun and will
    /// wait `timeout` for it.
    pub fn begin_shutdown(&self, timeout: Duration) {
        self.inner.shutdown.send_replace(Some(timeout));
        idle::stop_changed();
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

impl Token {
    /// Tells whether graceful shutdown has begun, without a waiter: an
    /// [`IdleWait`](idle::IdleWait) is woken when it begins.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        ShutdownSignal(self.inner.clone())
    }
}

/// Whether graceful shutdown has begun, read where the work waits.
#[derive(Debug)]
pub struct ShutdownSignal(Arc<Inner>);

impl ShutdownSignal {
    /// The `shutdown_timeout` once graceful shutdown has begun.
    pub fn begun(&self) -> Option<Duration> {
        *self.0.shutdown.borrow()
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if self.inner.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
