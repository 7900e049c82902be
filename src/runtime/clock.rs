//! A process-wide monotonic clock in milliseconds, so time stamps fit in atomics.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds since the process started. Never 0, so 0 can mean "never".
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// [`now_ms`] as of `at`: one clock read can serve a request's several
/// stamps.
pub fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(base()).as_millis() as u64 + 1
}

/// The `Instant` a millisecond stamp stands for.
pub fn instant_of(ms: u64) -> Instant {
    base() + Duration::from_millis(ms.saturating_sub(1))
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// Wall-clock time, Unix ms: for stamps other processes read.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms)
}

/// The monotonic stamp of a Unix time, by the clocks' offset now. A time
/// already past maps to now or earlier, never to 0 ("never").
pub fn mono_of_unix(unix_ms: u64) -> u64 {
    let (mono, unix) = (now_ms(), unix_now_ms());
    if unix_ms >= unix {
        mono + (unix_ms - unix)
    } else {
        mono.saturating_sub(unix - unix_ms).max(1)
    }
}

/// The Unix time of a monotonic stamp.
pub fn unix_of_mono(mono_ms: u64) -> u64 {
    (unix_now_ms() + mono_ms).saturating_sub(now_ms())
}
