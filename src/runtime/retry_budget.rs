//! The retry budget of one upstream: a token bucket over time, as Finagle's
//! `RetryBudget`.
//!
//! Each request deposits `retry_budget` of a token, each retry withdraws a
//! whole one, and both expire after [`WINDOW_SECS`]; on top of that,
//! `retry_min_per_sec` retries per second of the window are a reserve that
//! is always there. A server dying under load therefore costs nothing while
//! the others are healthy (its share of the last ten seconds of requests is
//! retried), and an upstream whose every server fails sees at most about
//! `1 + retry_budget` times its request rate.
//!
//! A share of the requests *in flight* (what sluice had before) is the wrong
//! shape: the retries of a crash all come in the same few milliseconds, so
//! the in-flight count says nothing about how many the upstream can afford.
//!
//! Lock-free: a ring of one-second slots, each an atomic holding its second
//! and its net amount, like Finagle's `WindowedAdder`. A request costs one
//! compare-and-swap on the current second's slot.

use std::sync::atomic::{AtomicU64, Ordering};

/// Deposits and withdrawals count for this many seconds.
pub const WINDOW_SECS: u64 = 10;

/// Amounts are kept in thousandths of a token, so a deposit of 0.2 is exact.
const MILLI: i64 = 1000;

#[derive(Debug, Default)]
pub struct RetryBudget {
    /// Slot `s % WINDOW_SECS` holds second `s`: the second in the high 32
    /// bits, the net milli-tokens added in it (an `i32`) in the low ones.
    slots: [AtomicU64; WINDOW_SECS as usize],
}

impl RetryBudget {
    /// Takes one retry if the budget (with its reserve of `min_per_sec`
    /// retries per second of the window) has a whole token left.
    ///
    /// The token is taken first and given back if that overdrew the budget:
    /// retries racing for the last token may all be refused, but the budget
    /// is never exceeded, which is its promise to a failing upstream.
    /// Checking and taking in one step would need a lock.
    pub fn try_withdraw(&self, min_per_sec: u32) -> bool {
        self.try_withdraw_at(min_per_sec, crate::runtime::clock::now_ms())
    }

    /// Returns a token [`try_withdraw`](Self::try_withdraw) took for a
    /// retry that did not happen (no server was left to try).
    pub fn give_back(&self) {
        self.add(MILLI, crate::runtime::clock::now_ms());
    }

    /// A request arrived at `now_ms` ([`clock::now_ms`](crate::runtime::clock::now_ms)
    /// milliseconds; the proxy's one clock read for the request): deposit
    /// `share` of a token. Inline: every request calls it from the proxy,
    /// which the compiler builds apart from this module and (callgrind
    /// shows) then no longer inlines it.
    #[inline]
    pub fn deposit_at(&self, share: f64, now_ms: u64) {
        // `share` is validated to 0..=1, so this is 0..=1000.
        let amount = (share * MILLI as f64).round() as i64;
        if amount > 0 {
            self.add(amount, now_ms);
        }
    }

    fn try_withdraw_at(&self, min_per_sec: u32, now_ms: u64) -> bool {
        let reserve = i64::from(min_per_sec) * WINDOW_SECS as i64 * MILLI;
        self.add(-MILLI, now_ms);
        if self.sum(now_ms) + reserve < 0 {
            self.add(MILLI, now_ms);
            return false;
        }
        true
    }

    fn add(&self, amount: i64, now_ms: u64) {
        let second = now_ms / 1000;
        let slot = &self.slots[(second % WINDOW_SECS) as usize];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (stamp, value) = unpack(current);
            // A slot last written a window ago starts over for this second.
            let base = if stamp == second { value } else { 0 };
            let next = pack(second, base.saturating_add(amount));
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Net milli-tokens deposited in the window ending at `now_ms`.
    fn sum(&self, now_ms: u64) -> i64 {
        let second = now_ms / 1000;
        self.slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Relaxed)))
            .filter(|&(stamp, _)| stamp <= second && stamp + WINDOW_SECS > second)
            .map(|(_, value)| value)
            .sum()
    }
}

fn pack(second: u64, value: i64) -> u64 {
    let value = value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    (second << 32) | u64::from(value as u32)
}

fn unpack(slot: u64) -> (u64, i64) {
    (slot >> 32, i64::from(slot as u32 as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retries taken from `budget` at `now_ms` until it refuses.
    fn drain(budget: &RetryBudget, min_per_sec: u32, now_ms: u64) -> usize {
        std::iter::from_fn(|| budget.try_withdraw_at(min_per_sec, now_ms).then_some(()))
            .take(100_000)
            .count()
    }

    #[test]
    fn each_request_buys_its_share_of_a_retry() {
        let budget = RetryBudget::default();
        for _ in 0..100 {
            budget.deposit_at(0.2, 1_000);
        }
        assert_eq!(drain(&budget, 0, 1_000), 20);
        budget.deposit_at(0.2, 1_500);
        assert_eq!(
            drain(&budget, 0, 1_500),
            0,
            "a fifth of a token is not a retry"
        );
    }

    #[test]
    fn a_burst_of_failures_spends_what_the_last_ten_seconds_saved() {
        // 100 requests a second for 9 s, then a crash: every request of the
        // next second fails at once, and all of them can be retried.
        let budget = RetryBudget::default();
        for second in 0..9 {
            for _ in 0..100 {
                budget.deposit_at(0.2, second * 1_000 + 1);
            }
        }
        assert_eq!(drain(&budget, 0, 9_000), 180);
    }

    #[test]
    fn deposits_expire_after_the_window() {
        let budget = RetryBudget::default();
        for _ in 0..50 {
            budget.deposit_at(0.2, 1_000);
        }
        assert!(budget.try_withdraw_at(0, 10_999), "still inside the window");
        assert!(
            !budget.try_withdraw_at(0, 11_000),
            "the deposits expired, the withdrawal not yet"
        );
    }

    #[test]
    fn withdrawals_expire_too() {
        let budget = RetryBudget::default();
        assert_eq!(drain(&budget, 1, 0), 10, "the reserve: 1 a second for 10 s");
        assert_eq!(drain(&budget, 1, 9_999), 0, "spent within the window");
        assert_eq!(drain(&budget, 1, 10_000), 10, "back once they expire");
    }

    #[test]
    fn the_reserve_allows_min_per_sec_without_any_request() {
        let budget = RetryBudget::default();
        let taken: Vec<usize> = (0..21).map(|s| drain(&budget, 10, s * 1_000)).collect();
        // A window's reserve at once, then again when those withdrawals expire.
        let mut expected = vec![0; 21];
        expected[0] = 100;
        expected[10] = 100;
        expected[20] = 100;
        assert_eq!(taken, expected);
    }

    #[test]
    fn a_zero_budget_without_reserve_never_retries() {
        let budget = RetryBudget::default();
        for _ in 0..1_000 {
            budget.deposit_at(0.0, 1_000);
        }
        assert_eq!(drain(&budget, 0, 1_000), 0);
    }

    #[test]
    fn racing_withdrawals_never_overdraw() {
        let budget = RetryBudget::default();
        for _ in 0..50 {
            budget.deposit_at(0.2, 1_000);
        }
        let taken: usize = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| drain(&budget, 0, 1_000)))
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).sum()
        });
        assert!((1..=10).contains(&taken), "{taken} retries from 10 tokens");
        assert!(budget.sum(1_000) >= 0);
    }

    #[test]
    fn a_slot_saturates_instead_of_wrapping() {
        let budget = RetryBudget::default();
        let slot = pack(3, i64::from(i32::MAX) - 100);
        budget.slots[3].store(slot, Ordering::Relaxed);
        budget.deposit_at(1.0, 3_000);
        assert_eq!(budget.sum(3_000), i64::from(i32::MAX));
        budget.add(-MILLI, 3_000);
        assert_eq!(budget.sum(3_000), i64::from(i32::MAX) - MILLI);
    }
}
