//! `GET /`: a static page that renders `/api/status` in the browser and
//! posts the drain/enable/disable actions. It holds no data itself, so it
//! needs no token; with a token configured it asks the operator for it and
//! sends it on each API call.
//!
//! The charts' history is kept by the page: it polls `/api/status` every
//! second and keeps five minutes of samples, so sluice stores nothing per
//! second. Latency percentiles come from the per-server histogram counts in
//! the status, diffed between samples.

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderValue};
use http_body_util::Full;

const HTML: &str = include_str!("dashboard.html");

pub fn page() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(HTML.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Everything the page needs is inline or same-origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        ),
    );
    response
}
