//! Field names as the peer spelled them. `http`'s header map lower-cases
//! every name; a proxy that writes a message on should not change what it
//! only passes through, since some peers (old clients, appliances, tests
//! that compare bytes) depend on the case they sent. So a message read by
//! the engine keeps its head's [`Fields`] beside the map, and the writer
//! asks it how each name was spelled: one pass over a dozen names, no
//! hashing and no copy.

use http::header::HeaderName;

use super::head::Fields;

/// The original spelling of a message's field names, in the order
/// received. Carried in the request's or response's extensions from the
/// engine that read it to the one that writes it.
#[derive(Debug, Clone)]
pub struct HeaderCase(Fields);

impl HeaderCase {
    pub fn new(fields: Fields) -> HeaderCase {
        HeaderCase(fields)
    }

    /// The fields themselves, as received.
    pub fn fields(&self) -> &Fields {
        &self.0
    }
}

/// Spells the names of one message's fields as they are written, in turn.
pub struct Speller<'c> {
    case: Option<&'c HeaderCase>,
    /// Where the previous name was found: fields are mostly written in the
    /// order they came, so the next one is usually right there.
    next: usize,
    /// Bit `n % 64` is set when a name sent is `n` bytes long: the names
    /// sluice sets itself (`X-Forwarded-For`, `X-Real-IP`) are mostly of
    /// lengths no name sent has, and are known to be missing without a
    /// look at every field.
    lengths: u64,
}

/// The bit of [`Speller::lengths`] for a name of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << (len % 64)
}

impl<'c> Speller<'c> {
    pub fn new(case: Option<&'c HeaderCase>) -> Speller<'c> {
        let lengths = case.map_or(0, |case| {
            case.0
                .iter()
                .fold(0, |lengths, (name, _)| lengths | length_bit(name.len()))
        });
        Speller {
            case,
            next: 0,
            lengths,
        }
    }

    /// `name` as the peer spelled it, or as `http` does (lower case) for a
    /// field the peer did not send. A name sent several times is spelled as
    /// each line was, in turn.
    pub fn spell<'a>(&mut self, name: &'a HeaderName) -> &'a [u8]
    where
        'c: 'a,
    {
        let wanted = name.as_str().as_bytes();
        let Some(case) = self.case else {
            return wanted;
        };
        if self.lengths & length_bit(wanted.len()) == 0 {
            return wanted;
        }
        let fields = &case.0;
        // From where the last name was found to the end, then the rest.
        let order = (self.next..fields.len()).chain(0..self.next.min(fields.len()));
        for at in order {
            let sent = fields.name(at);
            // `wanted` is lower case already: one side to fold, not two.
            if sent.len() == wanted.len()
                && sent
                    .iter()
                    .zip(wanted)
                    .all(|(s, w)| s.to_ascii_lowercase() == *w)
            {
                self.next = at + 1;
                return sent;
            }
        }
        wanted
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::http1::head::{Limits, ResponseHead};

    fn case(head: &[u8]) -> HeaderCase {
        let limits = Limits {
            max_head: 4096,
            max_fields: 16,
        };
        let head = ResponseHead::parse(&mut BytesMut::from(head), limits)
            .unwrap()
            .unwrap();
        HeaderCase::new(head.fields)
    }

    #[test]
    fn names_are_spelled_as_sent_line_by_line() {
        let case = case(b"HTTP/1.1 200 OK\r\nX-Case: 1\r\nETag: a\r\nx-CASE: 2\r\n\r\n");
        let mut speller = Speller::new(Some(&case));
        let x_case = HeaderName::from_static("x-case");
        let etag = HeaderName::from_static("etag");
        // The map's order: both x-case lines, then etag.
        assert_eq!(speller.spell(&x_case), b"X-Case");
        assert_eq!(speller.spell(&x_case), b"x-CASE");
        assert_eq!(speller.spell(&etag), b"ETag");
        let date = HeaderName::from_static("date");
        assert_eq!(speller.spell(&date), b"date");
        assert_eq!(Speller::new(None).spell(&etag), b"etag");
    }

    #[test]
    fn names_of_lengths_never_sent_or_64_apart_are_spelled() {
        // 70 bytes: its length bit is that of a 6-byte name.
        let long = format!("X-{}", "Long".repeat(17));
        let case = case(format!("HTTP/1.1 200 OK\r\n{long}: 1\r\nHost: a\r\n\r\n").as_bytes());
        let mut speller = Speller::new(Some(&case));
        let x_real_ip = HeaderName::from_static("x-real-ip");
        assert_eq!(speller.spell(&x_real_ip), b"x-real-ip");
        let x_case = HeaderName::from_static("x-case");
        assert_eq!(speller.spell(&x_case), b"x-case");
        let long_name = HeaderName::from_bytes(long.as_bytes()).unwrap();
        assert_eq!(speller.spell(&long_name), long.as_bytes());
        assert_eq!(speller.spell(&http::header::HOST), b"Host");
    }
}
