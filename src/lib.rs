//! sluice: a layer-7 reverse proxy and load balancer.
#![forbid(unsafe_code)]

pub mod config;
