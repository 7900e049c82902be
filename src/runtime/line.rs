//! An upstream's waiting line as data: who waits, in arrival order, each
//! with the `Notify` that wakes it. What waiting means (who may join, who
//! picks, when to give up) is `balance::queue`'s; this lives in the
//! upstream's [`UpstreamState`](super::UpstreamState) so it survives
//! reloads with the leases that wake it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Line {
    inner: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    next_id: u64,
    line: VecDeque<(u64, Arc<Notify>)>,
}

impl Line {
    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the end of the line, woken through `notify`, unless `max`
    /// already wait. Returns the place's id.
    pub fn join(&self, max: usize, notify: Arc<Notify>) -> Option<u64> {
        let mut waiters = self.lock();
        if waiters.line.len() >= max {
            return None;
        }
        let id = waiters.next_id;
        waiters.next_id += 1;
        waiters.line.push_back((id, notify));
        Some(id)
    }

    pub fn is_head(&self, id: u64) -> bool {
        self.lock()
            .line
            .front()
            .is_some_and(|&(head, _)| head == id)
    }

    /// Leaves the line; a head that leaves wakes the next one. False when
    /// `id` was not in line.
    pub fn leave(&self, id: u64) -> bool {
        let mut waiters = self.lock();
        let Some(at) = waiters.line.iter().position(|&(w, _)| w == id) else {
            return false;
        };
        waiters.line.remove(at);
        if at == 0 {
            waiters.wake_head();
        }
        true
    }

    pub fn wake_head(&self) {
        self.lock().wake_head();
    }
}

impl Waiters {
    fn wake_head(&self) {
        if let Some((_, head)) = self.line.front() {
            head.notify_one();
        }
    }
}
