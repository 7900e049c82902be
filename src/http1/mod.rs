//! sluice's HTTP/1.1 codec: message heads parsed with `httparse`, message
//! framing (RFC 9112 §6), chunked bodies checked strictly, and heads written
//! back into a caller's buffer.
//!
//! No I/O happens here and no policy is decided: the codec says what the
//! bytes are (a head, body data, chunk framing, a trailer line, the end) or
//! why they are not acceptable, and the proxy decides what to answer. Every
//! function works on whatever part of a message the caller has read so far
//! and says when it needs more, so a caller can read into a small buffer and
//! give it back between messages.

pub mod body;
pub mod case;
pub mod chunked;
pub mod date;
pub mod framing;
pub mod fuzzing;
pub mod head;
pub mod write;

pub use body::{BodyDecoder, Step};
pub use case::{HeaderCase, Speller};
pub use chunked::{ChunkError, ChunkedDecoder};
pub use framing::{BodyKind, FramingError};
pub use head::{HeadError, Limits, RequestHead, ResponseHead, TargetForm, Version};
