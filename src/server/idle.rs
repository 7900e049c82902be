//! Idle tracking for HTTP/2 connections: which have requests open, and
//! since when none has.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};

use crate::runtime::clock;

/// A connection's requests in flight, for its idle timeout: hyper has no
/// idle timeout for HTTP/2 (pings keep an idle connection alive forever),
/// and for HTTP/1.1 only the header timeout, so sluice closes a connection
/// that has had no request open for `idle_timeout`.
///
/// A request costs two atomics and a clock read, nothing more: the idle task
/// is not told about requests. It sleeps until `idle_timeout` after the last
/// request ended and checks again when it wakes, so it wakes about once per
/// `idle_timeout` however many requests the connection carries.
#[derive(Debug)]
pub(super) struct Activity {
    open: AtomicUsize,
    /// When a request last ended (or the connection began), in
    /// [`clock::now_ms`] milliseconds.
    last_end: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            last_end: AtomicU64::new(clock::now_ms()),
        }
    }

    pub(super) fn open(self: &Arc<Self>) -> OpenRequest {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenRequest(self.clone())
    }

    /// Resolves once no request has been open for `timeout`.
    pub(super) async fn idle_for(&self, timeout: Duration) {
        let timeout_ms = clock::ms(timeout);
        let mut deadline = self.last_end.load(Ordering::Acquire) + timeout_ms;
        loop {
            tokio::time::sleep_until(clock::instant_of(deadline).into()).await;
            let now = clock::now_ms();
            if self.open.load(Ordering::Acquire) > 0 {
                // Busy: nothing can be idle for `timeout` before then.
                deadline = now + timeout_ms;
                continue;
            }
            // Read after `open`: a request that ended has stamped this.
            deadline = self.last_end.load(Ordering::Acquire) + timeout_ms;
            if now >= deadline {
                return;
            }
        }
    }
}

/// One request counted in its connection's [`Activity`] until dropped.
#[derive(Debug)]
pub(super) struct OpenRequest(Arc<Activity>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        // Stamped before the count drops, so the idle task never sees no
        // request open with an older stamp than this request's end.
        self.0.last_end.fetch_max(clock::now_ms(), Ordering::AcqRel);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request open until it ends or is
/// dropped (hyper drops it once sent, or when the stream is reset).
pub(super) struct Tracked<B> {
    pub(super) body: B,
    pub(super) _open: OpenRequest,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
