//! sluice: a layer-7 reverse proxy and load balancer.
//!
//! The live configuration is one immutable [`runtime::Snapshot`] behind an
//! `ArcSwap`; per-server state lives in a [`runtime::Registry`] keyed by
//! `(upstream, address)` so it survives reloads. A request loads the snapshot
//! once, routes, asks its upstream's [`balance::Balancer`] for a server, and
//! is forwarded by [`proxy`].
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod demo;
pub mod health;
pub mod http1;
pub mod lifecycle;
pub mod logging;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod sticky;
pub mod tls;
