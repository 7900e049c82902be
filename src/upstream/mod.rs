//! Connections to servers, for the proxy and the health checker alike: the
//! stream type, and opening one over TCP or TLS to a server whose address
//! and TLS name were settled when the snapshot was built.

pub mod connect;
mod error;
pub mod stream;

pub use connect::{ConnectError, Endpoint, connect};
pub use error::UpstreamError;
pub use stream::Conn;

use crate::http1::Limits;

/// A server's response head may be this large, with this many fields,
/// whether the proxy or a health check reads it.
pub const RESPONSE_LIMITS: Limits = Limits {
    max_head: 64 * 1024,
    max_fields: 256,
};
