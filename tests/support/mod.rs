//! The end-to-end test harness: mock upstreams, a config builder, the real
//! proxy binary, clients, and the admin API's calls. Each test file includes it with `mod support;`,
//! uses a subset, and imports what it needs with
//! `use support::{client::*, config::*, proxy::*, upstream::*};`.
#![allow(dead_code)]

pub mod admin;
pub mod cdp;
pub mod client;
pub mod config;
pub mod demo;
pub mod nginx;
pub mod proxy;
pub mod redis;
pub mod upstream;
pub mod websocket;
