//! Following one message body, whatever its framing, over the bytes read so
//! far: the same steps for a Content-Length body, a chunked one and one that
//! runs until the connection closes.

use super::chunked::{ChunkError, ChunkedDecoder};
use super::framing::BodyKind;

/// What the first bytes of the buffered body are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing can be said until more bytes arrive.
    NeedMore,
    /// This many bytes of chunk framing (a chunk-size line, the CRLF after
    /// chunk data), passed on as they are between HTTP/1.1 peers.
    Framing(usize),
    /// This many bytes of body data.
    Data(usize),
    /// A trailer field: `line` bytes without their line break, `consumed`
    /// with it. Passed on with a CRLF, whatever break it came with.
    Trailer { line: usize, consumed: usize },
    /// The body ended after this many more bytes (the last empty line of a
    /// chunked body: passed on as CRLF). What follows is the next message.
    End(usize),
}

/// The body ended early: the connection closed before its framing said it
/// was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection closed before the body ended")]
pub struct Truncated;

/// Follows one body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl BodyDecoder {
    pub fn new(kind: BodyKind) -> BodyDecoder {
        match kind {
            BodyKind::Empty => BodyDecoder::Length(0),
            BodyKind::Length(len) => BodyDecoder::Length(len),
            BodyKind::Chunked => BodyDecoder::Chunked(ChunkedDecoder::default()),
            BodyKind::UntilClose => BodyDecoder::UntilClose,
        }
    }

    /// Says what the front of `input` is; the caller consumes what the step
    /// names and calls again. `End` comes once, then again for every call.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        match self {
            BodyDecoder::Length(0) => Ok(Step::End(0)),
            BodyDecoder::Length(left) => {
                if input.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                *left -= take as u64;
                Ok(Step::Data(take))
            }
            BodyDecoder::Chunked(chunked) => chunked.step(input),
            BodyDecoder::UntilClose if input.is_empty() => Ok(Step::NeedMore),
            BodyDecoder::UntilClose => Ok(Step::Data(input.len())),
        }
    }

    /// The peer closed the connection: fine only for a body that runs until
    /// the close, or one already complete.
    pub fn at_eof(&self) -> Result<(), Truncated> {
        match self {
            BodyDecoder::Length(0) | BodyDecoder::UntilClose => Ok(()),
            BodyDecoder::Chunked(chunked) if chunked.is_done() => Ok(()),
            _ => Err(Truncated),
        }
    }

    /// Whether the connection can carry another message after this body.
    pub fn keeps_connection(&self) -> bool {
        !matches!(self, BodyDecoder::UntilClose)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut body = BodyDecoder::new(BodyKind::Length(5));
        assert_eq!(body.step(b""), Ok(Step::NeedMore));
        assert_eq!(body.step(b"abc"), Ok(Step::Data(3)));
        assert_eq!(body.at_eof(), Err(Truncated));
        assert_eq!(body.step(b"deGET"), Ok(Step::Data(2)));
        assert_eq!(body.step(b"GET"), Ok(Step::End(0)));
        assert_eq!(body.at_eof(), Ok(()));
        assert!(body.keeps_connection());
    }

    #[test]
    fn empty_bodies_end_at_once() {
        let mut body = BodyDecoder::new(BodyKind::Empty);
        assert_eq!(body.step(b"GET / HTTP/1.1"), Ok(Step::End(0)));
    }

    #[test]
    fn close_delimited_bodies_take_everything_and_end_at_eof() {
        let mut body = BodyDecoder::new(BodyKind::UntilClose);
        assert_eq!(body.step(b"anything"), Ok(Step::Data(8)));
        assert_eq!(body.step(b""), Ok(Step::NeedMore));
        assert_eq!(body.at_eof(), Ok(()));
        assert!(!body.keeps_connection());
    }

    #[test]
    fn chunked_bodies_are_truncated_until_their_last_chunk() {
        let mut body = BodyDecoder::new(BodyKind::Chunked);
        assert_eq!(body.step(b"1\r\na\r\n"), Ok(Step::Framing(3)));
        assert_eq!(body.step(b"a\r\n"), Ok(Step::Data(1)));
        assert_eq!(body.step(b"\r\n"), Ok(Step::Framing(2)));
        assert_eq!(body.at_eof(), Err(Truncated));
        assert_eq!(body.step(b"0\r\n\r\n"), Ok(Step::Framing(3)));
        assert_eq!(body.step(b"\r\n"), Ok(Step::End(2)));
        assert_eq!(body.at_eof(), Ok(()));
    }
}
