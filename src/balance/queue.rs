//! The `queue`: requests that wait, in arrival order, for a server under
//! `max_conns` instead of failing at once.
//!
//! A request waits only when some untried server is available but full (or
//! others already wait, so a newcomer cannot jump the line), at most `queue`
//! of them per upstream, each for at most `queue_timeout` (then 503). Only the
//! head of the line tries to pick; a lease ending wakes it, and a head that
//! got a server wakes the next one, which picks too if capacity is left. The
//! line sits behind a per-upstream mutex that only queued requests and lease
//! ends on an upstream with waiters ever touch; without waiters a lease end
//! costs one fence and one atomic load.

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::runtime::{Availability, UpstreamRt, UpstreamState};

/// How often the head re-tries without a wake-up: capacity also comes back
/// without a lease ending (a server recovers, is enabled, or a reload adds one).
const RECHECK: Duration = Duration::from_millis(100);

/// Whether newcomers must queue behind requests already waiting.
pub fn has_waiters(state: &UpstreamState) -> bool {
    state.queued.load(Ordering::Relaxed) > 0
}

/// A lease on the upstream ended: wake the head of its line, if any.
pub fn slot_freed(state: &UpstreamState) {
    // Pairs with the fence in `wait`: either the waiter sees the freed slot
    // or this sees the waiter.
    fence(Ordering::SeqCst);
    if has_waiters(state) {
        state.line.wake_head();
    }
}

/// Waits in line for `take` (called with the clock's `now_ms`) to pick a
/// server and take a slot on it. `None` when the request should not or may no longer wait: queueing
/// is off, the line is full, nothing is merely full, or `queue_timeout` passed.
pub async fn wait<T>(
    up: &UpstreamRt,
    tried: &[usize],
    mut take: impl FnMut(u64) -> Option<T>,
) -> Option<T> {
    let state = &up.state;
    let now_ms = crate::runtime::clock::now_ms();
    if up.cfg.queue == 0 || !worth_waiting(up, tried, now_ms) {
        return None;
    }
    let deadline = Instant::now() + up.cfg.queue_timeout;
    let notify = Arc::new(Notify::new());
    let id = state.line.join(up.cfg.queue, notify.clone())?;
    state.queued.fetch_add(1, Ordering::Relaxed);
    let _place = Place { state, id };
    fence(Ordering::SeqCst);
    loop {
        let woken = notify.notified();
        tokio::pin!(woken);
        // Registered before the pick, so a wake-up in between is kept.
        woken.as_mut().enable();
        let is_head = state.line.is_head(id);
        if is_head && let Some(taken) = take(crate::runtime::clock::now_ms()) {
            return Some(taken);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let _ = tokio::time::timeout_at(deadline.min(now + RECHECK), woken).await;
    }
}

/// Some server this request has not tried would take it but for `max_conns`
/// (or others wait ahead of it for one).
fn worth_waiting(up: &UpstreamRt, tried: &[usize], now_ms: u64) -> bool {
    up.servers.iter().enumerate().any(|(i, s)| {
        !tried.contains(&i) && s.availability(now_ms, false) != Availability::Unavailable
    })
}

/// A request's place in line: leaving (served, timed out or cancelled) passes
/// the turn to the next request.
struct Place<'a> {
    state: &'a UpstreamState,
    id: u64,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.state.line.leave(self.id) {
            self.state.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::wait;
    use crate::balance::Lease;
    use crate::balance::testing::upstream;

    #[tokio::test]
    async fn waiters_are_served_in_arrival_order_and_a_full_line_refuses() {
        let up = upstream(
            "queue = 3\nqueue_timeout = \"30s\"",
            &["9001 max_conns = 1"],
        );
        let take = |up: &crate::runtime::UpstreamRt| {
            let s = &up.servers[0];
            Lease::acquire(&s.state, &up.state, s.max_conns())
        };
        let busy = take(&up).expect("the only slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3u32 {
            let (mine, tx) = (up.clone(), tx.clone());
            tokio::spawn(async move {
                let lease = wait(&mine, &[], |_| take(&mine)).await.expect("a slot");
                tx.send(n).expect("receiver");
                drop(lease);
            });
            while up.state.queued.load(Ordering::Relaxed) <= n {
                tokio::task::yield_now().await;
            }
        }
        assert!(
            wait(&up, &[], |_| take(&up)).await.is_none(),
            "the line is full"
        );
        drop(busy);
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(rx.recv().await.expect("a waiter served"));
        }
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(up.state.queued.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn nothing_waits_when_queueing_is_off_or_no_server_is_merely_full() {
        let off = upstream("queue = 0", &["9001 max_conns = 1"]);
        let s = &off.servers[0];
        let _busy = Lease::acquire(&s.state, &off.state, s.max_conns()).expect("slot");
        assert!(wait(&off, &[], |_| Some(())).await.is_none());
        let down = upstream("queue = 5", &["9001 down = true"]);
        assert!(wait(&down, &[], |_| Some(())).await.is_none());
    }
}
