//! What can go wrong in an exchange with a server once connected, for the
//! proxy's client and the health checker alike.

use std::io;

use crate::http1::{ChunkError, FramingError, HeadError};

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("sending the request: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response: {0}")]
    Read(#[source] io::Error),
    #[error("connection closed before the response head")]
    ClosedBeforeHead,
    #[error("invalid response head: {0}")]
    Head(#[source] HeadError),
    #[error("invalid response framing: {0}")]
    Framing(#[source] FramingError),
    #[error("invalid chunked response body: {0}")]
    Chunked(#[source] ChunkError),
    #[error("connection closed before the response body ended")]
    Truncated,
    /// Not the server's doing: the client closed its connection while the
    /// response head was awaited, so the exchange was given up.
    #[error("the client went away before the response")]
    ClientGone,
}
