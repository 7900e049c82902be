//! Bodies on both sides of the proxy, streamed frame by frame, never buffered
//! whole.
//!
//! The response body owns the request's [`crate::balance::Lease`] and its
//! upstream connection: the server's in-flight count drops, and the
//! connection goes back to the pool, only when the body has ended cleanly. A body that errors or is dropped
//! early takes its connection with it, since the connection's framing is
//! unknown from then on.

mod request;
mod response;

pub use request::{ClientBody, RequestBody, RequestBodyError};
pub use response::{Finish, ResponseBody};
