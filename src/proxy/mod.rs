//! The request path: validate, route, pick, forward, retry, rewrite headers,
//! and turn failures into the contract's status codes.

pub mod access;
pub mod body;
pub mod buffers;
pub mod client;
pub mod error;
pub mod forward;
pub mod forwarding;
pub mod h1;
pub mod headers;
pub mod pool;
pub mod prefixed;
pub mod service;
pub mod tunnel;
pub mod upgrade;
mod validate;
pub mod websocket;

pub use service::{ConnCtx, ListenerCtx};
