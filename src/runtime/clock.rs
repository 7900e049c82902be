//! A process-wide monotonic clock in milliseconds, so time stamps fit in atomics.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// The stamp of the process's start. Stamps begin this far past 0 so that
/// a moment before the start has one too: a drain deadline another
/// instance of the cluster set, and that passed before this one started,
/// keeps its own time instead of becoming the start.
const ORIGIN_MS: u64 = 30 * 24 * 3600 * 1000;

/// Milliseconds on the process's monotonic clock. Never 0, so 0 can mean
/// "never".
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// [`now_ms`] as of `at`: one clock read can serve a request's several
/// stamps.
pub fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(base()).as_millis() as u64 + ORIGIN_MS
}

/// The `Instant` a millisecond stamp stands for (the start, for a stamp
/// before it that the platform's `Instant` cannot hold).
pub fn instant_of(ms: u64) -> Instant {
    match ms.checked_sub(ORIGIN_MS) {
        Some(since) => base() + Duration::from_millis(since),
        None => base()
            .checked_sub(Duration::from_millis(ORIGIN_MS - ms))
            .unwrap_or_else(base),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moment_before_the_start_keeps_its_time() {
        // A minute before now is before this test process started.
        let unix = unix_now_ms() - 60_000;
        let mono = mono_of_unix(unix);
        assert!(mono < ms_at(base()), "{mono}");
        let back = unix_of_mono(mono);
        assert!(back.abs_diff(unix) <= 5, "{back} for {unix}");
        assert!(instant_of(mono) <= base());
    }

    #[test]
    fn stamps_and_instants_agree() {
        let now = Instant::now();
        let ms = ms_at(now);
        assert_ne!(ms, 0);
        assert!(now.saturating_duration_since(instant_of(ms)) < Duration::from_millis(1));
        assert_eq!(ms_at(instant_of(ms + 250)), ms + 250);
    }
}
