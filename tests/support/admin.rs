//! The admin API as tests use it: actions by POST, one server's entry in
//! `/api/status`, and `/metrics` parsed.

use http::Method;
use serde_json::Value;

use super::client::{Resp, get, request};
use super::proxy::Proxy;

/// POSTs an empty body to the admin API's `path`.
pub async fn admin_post(proxy: &Proxy, path: &str) -> Resp {
    request(Method::POST, &proxy.admin_url(path), &[], "").await
}

/// The `/api/status` entry of the server at `address` in upstream `web`.
pub async fn server_status(proxy: &Proxy, address: &str) -> Value {
    let resp = get(&proxy.admin_url("/api/status")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let status: Value = serde_json::from_str(&resp.body).unwrap();
    server_entry(&status, "web", address).clone()
}

/// The entry of the server at `address` in `upstream` of a parsed
/// `/api/status` body; panics naming what it searched.
pub fn server_entry<'a>(status: &'a Value, upstream: &str, address: &str) -> &'a Value {
    status["upstreams"][upstream]["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no upstream {upstream} in {status}"))
        .iter()
        .find(|s| s["address"] == address)
        .unwrap_or_else(|| panic!("no {address} in {status}"))
}

/// A `/metrics` body, parsed; panics naming the text it could not read.
pub fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}
