//! The end-to-end test harness: mock upstreams, the real proxy binary, and
//! clients. Each test file includes it with `mod support;` and uses a subset.
#![allow(dead_code)]

pub mod client;
pub mod proxy;
pub mod upstream;

pub use client::{Client, Resp, get, get_from, get_with, poll_until, raw_request, raw_status, request};
pub use proxy::{Proxy, Signal, free_port, server_entries};
pub use upstream::{MockUpstream, RecordedRequest};
