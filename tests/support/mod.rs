//! The end-to-end test harness: mock upstreams, the real proxy binary, and
//! clients. Each test file includes it with `mod support;`, uses a subset, and
//! imports what it needs with `use support::{client::*, proxy::*, upstream::*};`.
#![allow(dead_code)]

pub mod client;
pub mod nginx;
pub mod proxy;
pub mod upstream;
pub mod websocket;
