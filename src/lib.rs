//! sluice: a layer-7 reverse proxy and load balancer.
//!
//! The live configuration is one immutable `runtime::Snapshot` behind an
//! `ArcSwap`; per-server state lives in a `runtime::Registry` keyed by
//! `(upstream, address)` so it survives reloads. A request loads the snapshot
//! once, routes, asks its upstream's `balance::Balancer` for a server, and
//! is forwarded by `proxy`.
#![forbid(unsafe_code)]

mod admin;
pub mod app;
mod balance;
mod cluster;
pub mod config;
pub mod demo;
mod health;
pub mod http1;
mod inline_text;
mod lifecycle;
pub mod logging;
pub mod probe;
mod proxy;
mod proxy_protocol;
mod reload;
mod runtime;
pub mod server;
mod sticky;
pub mod tls;
mod upstream;
pub mod workers;
