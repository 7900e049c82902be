//! The `Date` field sluice adds to responses that lack one (RFC 9110
//! §6.6.1: a server with a clock sends it; nginx and HAProxy do, and
//! hyper's server did before sluice had its own). Formatted at most once a
//! second per worker thread, so a response costs a clock read and a
//! reference-count increment.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

thread_local! {
    /// The second last formatted, and its field value.
    static CACHED: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// `Date` for now, as an IMF-fixdate (`Tue, 01 Dec 2026 22:47:09 GMT`).
pub fn now() -> HeaderValue {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        match &*cached {
            Some((at, value)) if *at == second => value.clone(),
            _ => {
                let value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                    .expect("an IMF-fixdate is visible ASCII");
                *cached = Some((second, value.clone()));
                value
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_an_imf_fixdate_that_parses_back_to_now() {
        let value = now();
        let text = value.to_str().expect("ascii");
        assert!(text.ends_with(" GMT"), "{text}");
        assert_eq!(text.len(), "Tue, 01 Dec 2026 22:47:09 GMT".len(), "{text}");
        let parsed = httpdate::parse_http_date(text).expect("parses");
        let age = SystemTime::now()
            .duration_since(parsed)
            .expect("not in the future");
        assert!(age.as_secs() < 5, "{text} is {age:?} old");
    }
}
