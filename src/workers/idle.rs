//! Idle waits: one timer and one stop watcher per worker, however many idle
//! connections and tunnels the worker holds.
//!
//! An idle HTTP/1.1 connection or tunnel waits for its socket, for a
//! deadline (`header_timeout`, `idle_timeout`, a drain deadline) and for a
//! reason to stop (shutdown, its listener removed, its server drained). A
//! tokio `Sleep` and a watch waiter of its own would cost it some 270 bytes
//! while it does nothing; an [`IdleWait`] costs it a slot here (a deadline
//! and its task's waker, 24 bytes) and a key.
//!
//! A request waiting for its response head within `response_timeout`
//! waits here too, through a [`Deadline`]: a tokio timer would be put into
//! the timer wheel and taken out again for every request, nearly all of
//! which are answered long before it.
//!
//! One sweeper task per worker sleeps until the earliest deadline, rounded
//! up to a multiple of [`GRANULARITY`], and wakes the waits whose deadline
//! has passed. Rounding puts the deadlines of a busy worker into 100 ms
//! bins, so thousands of them cost ten sweeps a second at most rather than
//! a timer-wheel entry and a wake-up each. 100 ms is little beside the
//! timeouts it times (seconds by default) and a deadline fires at most that
//! late; finer bins would mean more sweeps over every slot, coarser ones
//! later closes. A woken wait checks its own deadline, so a sweep early or
//! late is never wrong, only early or late.
//!
//! The sweeper also holds the one waiter for [`stop_changed`], which whoever
//! sets a reason to stop (shutdown, a reload removing a listener, a drain
//! deadline) calls: it wakes every wait of every worker, and each checks its
//! own reasons, which is cheap and rare.
//!
//! The registry is the worker's own (a thread's, found by a thread local),
//! behind a mutex only its worker takes in practice: the slot is shared with
//! the sweeper, and a future holding it must stay `Send`, as every task
//! spawned on a multi-threaded runtime (tests, a library user) must be.
//! The busy path pays one uncontended lock per idle wait, and no ordered
//! structure: the sweeper scans the slots instead, at most once per bin.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How coarse the sweeps are: deadlines are rounded up to a multiple of it.
pub const GRANULARITY: Duration = Duration::from_millis(100);
const GRANULARITY_MS: u64 = GRANULARITY.as_millis() as u64;

/// No deadline: a slot woken and not re-armed, a wait for a reason to
/// stop only, or the sweeper's next sweep when nothing waits.
const NEVER: u64 = u64::MAX;

/// Bumped by [`stop_changed`]; every sweeper watches it.
static STOPS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::Sender::new(0));

thread_local! {
    static REGISTRY: RefCell<Option<Arc<Registry>>> = const { RefCell::new(None) };
}

/// Wakes every idle wait of every worker, so each checks its reasons to
/// stop: call it after setting one.
pub fn stop_changed() {
    STOPS.send_modify(|n| *n = n.wrapping_add(1));
}

/// One wait: a deadline and a waker, or a free slot's link to the next.
struct Slot {
    /// Milliseconds since the registry's `base`; [`NEVER`] when woken or
    /// when only a stop is waited for. For a free slot, the next free
    /// slot's index.
    deadline: u64,
    /// `None` for a free slot.
    waker: Option<Waker>,
}

struct Slots {
    slots: Vec<Slot>,
    /// The first free slot, or `slots.len()`.
    free: usize,
    /// When the sweeper will next sweep ([`NEVER`]: it waits for a wait).
    next: u64,
}

/// One worker's idle waits.
struct Registry {
    base: Instant,
    slots: Mutex<Slots>,
    /// Told when a wait's deadline comes before the sweeper's next sweep.
    earlier: Notify,
    /// Whether a sweeper runs for this registry: it ends with its runtime,
    /// and a later runtime on the same thread starts a new registry.
    sweeping: AtomicBool,
}

impl Registry {
    /// The registry of the worker this runs on, with its sweeper running.
    fn current() -> Arc<Registry> {
        REGISTRY.with(|cell| {
            let mut cell = cell.borrow_mut();
            if let Some(registry) = &*cell
                && registry.sweeping.load(Ordering::Acquire)
            {
                return registry.clone();
            }
            let registry = Arc::new(Registry {
                base: Instant::now(),
                slots: Mutex::new(Slots {
                    slots: Vec::new(),
                    free: 0,
                    next: NEVER,
                }),
                earlier: Notify::new(),
                sweeping: AtomicBool::new(true),
            });
            tokio::spawn(sweep(registry.clone(), STOPS.subscribe()));
            *cell = Some(registry.clone());
            registry
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `at` in the registry's milliseconds, rounded up to a bin's end.
    fn bin_of(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.base).as_millis();
        let ms = u64::try_from(ms).unwrap_or(NEVER - GRANULARITY_MS);
        ms.div_ceil(GRANULARITY_MS) * GRANULARITY_MS
    }
}

/// A connection's or tunnel's place in its worker's idle waits, freed when
/// dropped.
pub struct IdleWait {
    registry: Arc<Registry>,
    key: usize,
}

impl std::fmt::Debug for IdleWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleWait").field("key", &self.key).finish()
    }
}

impl IdleWait {
    /// A wait in the current worker's registry, with no deadline yet.
    ///
    /// # Panics
    /// Outside a tokio runtime (the worker's sweeper is spawned on first
    /// use).
    pub fn start() -> IdleWait {
        let registry = Registry::current();
        let key = {
            let mut s = registry.lock();
            let key = s.free;
            let slot = Slot {
                deadline: NEVER,
                waker: None,
            };
            if key == s.slots.len() {
                s.slots.push(slot);
                s.free = key + 1;
            } else {
                s.free = usize::try_from(s.slots[key].deadline).unwrap_or(usize::MAX);
                s.slots[key] = slot;
            }
            key
        };
        IdleWait { registry, key }
    }

    /// Ready once `deadline` has passed. Until then the task is woken at
    /// `deadline` (up to [`GRANULARITY`] late), and by [`stop_changed`]:
    /// check the reasons to stop after this returns `Pending`, so that a
    /// reason set in between wakes the task again.
    ///
    /// The clock is read only once the sweeper (or a stop) has woken this
    /// wait. Until then its deadline has not passed by the sweeper's
    /// clock; a deadline first armed here that has passed already is swept
    /// at once ([`arm`](Self::arm) tells the sweeper when it comes before
    /// its next sweep), and the poll that follows finds it passed. So a
    /// wait that ends before its deadline, as nearly all do, reads no
    /// clock.
    pub fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let bin = self.registry.bin_of(deadline);
        let s = self.registry.lock();
        let slot = &s.slots[self.key];
        if slot.waker.is_some() && slot.deadline == NEVER && Instant::now() >= deadline {
            return Poll::Ready(());
        }
        self.arm(s, cx, bin);
        Poll::Pending
    }

    /// Has the task woken by [`stop_changed`] only: a wait with no deadline.
    pub fn wait_for_stop(&mut self, cx: &mut Context<'_>) {
        self.arm(self.registry.lock(), cx, NEVER);
    }

    fn arm(&self, mut s: MutexGuard<'_, Slots>, cx: &mut Context<'_>, bin: u64) {
        let slot = &mut s.slots[self.key];
        slot.deadline = bin;
        match &slot.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        if bin < s.next {
            s.next = bin;
            drop(s);
            self.registry.earlier.notify_one();
        }
    }
}

impl Drop for IdleWait {
    fn drop(&mut self) {
        let mut s = self.registry.lock();
        let free = s.free;
        s.slots[self.key] = Slot {
            deadline: free as u64,
            waker: None,
        };
        s.free = self.key;
    }
}

/// A deadline for work polled beside it (an upstream's response head
/// within `response_timeout`), on the worker's idle waits rather than a
/// tokio `Sleep`: no timer-wheel entry to insert and remove per request,
/// and no clock read when the work is done before its deadline. It fires
/// up to [`GRANULARITY`] late.
pub struct Deadline {
    at: Instant,
    /// Taken on the first `Pending` poll: work done at once needs none.
    wait: Option<IdleWait>,
}

impl Deadline {
    pub fn new(at: Instant) -> Deadline {
        Deadline { at, wait: None }
    }

    /// Moves the deadline (later, as work it times makes progress); the
    /// next poll waits for the new one.
    pub fn move_to(&mut self, at: Instant) {
        self.at = at;
    }

    /// Ready once the deadline has passed; poll it after the work it times
    /// was `Pending`.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.wait
            .get_or_insert_with(IdleWait::start)
            .poll_until(cx, self.at)
    }
}

/// Marks its registry as without a sweeper when the sweeper ends (its
/// runtime shut down).
struct Sweeping(Arc<Registry>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        self.0.sweeping.store(false, Ordering::Release);
    }
}

/// The worker's sweeper: wakes waits whose deadline passed, and every wait
/// when a reason to stop changed.
async fn sweep(registry: Arc<Registry>, mut stops: watch::Receiver<u64>) {
    let _sweeping = Sweeping(registry.clone());
    let mut timer = std::pin::pin!(tokio::time::sleep_until(registry.base));
    let mut next = NEVER;
    loop {
        let stopped = tokio::select! {
            () = &mut timer, if next != NEVER => false,
            changed = stops.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            () = registry.earlier.notified() => false,
        };
        // Not rounded: a slot's deadline is its bin's end, so one at or
        // before now has passed, and its wait finds it so.
        let now = u64::try_from(registry.base.elapsed().as_millis()).unwrap_or(NEVER);
        let mut s = registry.lock();
        let mut earliest = NEVER;
        for slot in &mut s.slots {
            let Some(waker) = &slot.waker else { continue };
            if stopped || slot.deadline <= now {
                waker.wake_by_ref();
                slot.deadline = NEVER;
            } else {
                earliest = earliest.min(slot.deadline);
            }
        }
        s.next = earliest;
        next = earliest;
        drop(s);
        if next != NEVER {
            timer
                .as_mut()
                .reset(registry.base + Duration::from_millis(next));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    /// Resolves once `wait` says its deadline passed.
    async fn until(wait: &mut IdleWait, deadline: Instant) {
        poll_fn(|cx| wait.poll_until(cx, deadline)).await;
    }

    fn used(registry: &Registry) -> usize {
        registry
            .lock()
            .slots
            .iter()
            .filter(|s| s.waker.is_some())
            .count()
    }

    #[tokio::test]
    async fn a_wait_is_woken_once_its_deadline_passed() {
        let mut wait = IdleWait::start();
        let deadline = Instant::now() + Duration::from_millis(30);
        tokio::time::timeout(Duration::from_secs(10), until(&mut wait, deadline))
            .await
            .expect("the sweeper wakes the wait");
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn thousands_of_waits_share_one_sweeper() {
        let deadline = Instant::now() + Duration::from_millis(20);
        let waits = (0..2000).map(|_| async move {
            let mut wait = IdleWait::start();
            until(&mut wait, deadline).await;
        });
        tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::future::join_all(waits),
        )
        .await
        .expect("every wait is woken");
    }

    #[tokio::test]
    async fn a_stop_wakes_every_wait_and_a_dropped_wait_frees_its_slot() {
        let mut wait = IdleWait::start();
        let registry = wait.registry.clone();
        let far = Instant::now() + Duration::from_secs(3600);
        let mut woken = false;
        poll_fn(|cx| {
            if woken {
                return Poll::Ready(());
            }
            // Armed first, then the reason set: the order a connection
            // checks in.
            assert!(wait.poll_until(cx, far).is_pending());
            woken = true;
            stop_changed();
            Poll::Pending
        })
        .await;
        assert_eq!(used(&registry), 1);
        drop(wait);
        assert_eq!(used(&registry), 0);
        let again = IdleWait::start();
        assert_eq!(again.key, 0, "the freed slot is reused");
    }

    #[tokio::test]
    async fn a_deadline_fires_even_when_already_past_at_its_first_poll() {
        let mut deadline = Deadline::new(Instant::now());
        tokio::time::timeout(Duration::from_secs(10), poll_fn(|cx| deadline.poll(cx)))
            .await
            .expect("the sweeper wakes the wait");
    }

    #[tokio::test]
    async fn a_deadline_does_not_fire_before_its_time() {
        let at = Instant::now() + Duration::from_millis(150);
        let mut deadline = Deadline::new(at);
        poll_fn(|cx| deadline.poll(cx)).await;
        assert!(Instant::now() >= at);
    }

    #[test]
    fn an_idle_wait_is_two_words() {
        assert_eq!(
            std::mem::size_of::<IdleWait>(),
            2 * std::mem::size_of::<usize>()
        );
    }
}
