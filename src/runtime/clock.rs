//! A process-wide monotonic clock in milliseconds, so time stamps fit in atomics.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds since the process started. Never 0, so 0 can mean "never".
pub fn now_ms() -> u64 {
    base().elapsed().as_millis() as u64 + 1
}

/// The `Instant` a millisecond stamp stands for.
pub fn instant_of(ms: u64) -> Instant {
    base() + Duration::from_millis(ms.saturating_sub(1))
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}
