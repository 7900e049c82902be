//! A head's header fields as spans of its bytes: names in the case sent,
//! values as received, read in place.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::HeadError;

/// Where something lies in a head's bytes. `u32` is plenty (heads are
/// limited to far less) and keeps a field at eight bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) start: u32,
    pub(super) end: u32,
}

impl Span {
    /// The span of `part`, a slice of `whole`.
    pub(super) fn of(whole: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - whole.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    pub(super) fn get(self, bytes: &[u8]) -> &[u8] {
        &bytes[self.start as usize..self.end as usize]
    }

    fn len(self) -> usize {
        (self.end - self.start) as usize
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct FieldSpan {
    pub(super) name: Span,
    pub(super) value: Span,
    known: Known,
}

/// The names the engine reads in nearly every head, its framing and its
/// connection's fate depend on: recognised once, as the head is parsed,
/// so the several looks at them that follow (the framing, keep-alive, the
/// hop-by-hop fields a proxy drops, a missing `Date`) compare a tag
/// rather than names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    ContentLength,
    TransferEncoding,
    Connection,
    Date,
    /// Any other name.
    Other,
}

impl Known {
    /// What `name`, as sent (any case), is.
    fn of(name: &[u8]) -> Known {
        // The length rules out nearly every other name before a look at
        // its bytes.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"date") => Known::Date,
            10 if name.eq_ignore_ascii_case(b"connection") => Known::Connection,
            14 if name.eq_ignore_ascii_case(b"content-length") => Known::ContentLength,
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => Known::TransferEncoding,
            _ => Known::Other,
        }
    }
}

/// Header fields as received: in order, names in the case sent.
#[derive(Debug, Clone)]
pub struct Fields {
    pub(super) bytes: Bytes,
    pub(super) spans: Vec<FieldSpan>,
}

impl Fields {
    /// Every `(name, value)` in the order received.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans
            .iter()
            .map(|f| (f.name.get(&self.bytes), f.value.get(&self.bytes)))
    }

    /// As [`iter`](Self::iter), with what each name is.
    pub fn iter_known(&self) -> impl Iterator<Item = (Known, &[u8], &[u8])> + '_ {
        self.spans
            .iter()
            .map(|f| (f.known, f.name.get(&self.bytes), f.value.get(&self.bytes)))
    }

    /// The values of every field named `known`.
    pub fn named(&self, known: Known) -> impl Iterator<Item = &[u8]> + '_ {
        self.spans
            .iter()
            .filter(move |f| f.known == known)
            .map(|f| f.value.get(&self.bytes))
    }

    /// The values of every field named `known`, as written between the
    /// colon and the line end, with the whitespace around them httparse
    /// strips.
    pub fn named_raw(&self, known: Known) -> impl Iterator<Item = &[u8]> + '_ {
        self.spans
            .iter()
            .filter(move |f| f.known == known)
            .map(|f| self.raw_value(f))
    }

    /// The values of every field named `name` (ASCII case-insensitive).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.spans
            .iter()
            .filter(move |f| self.is_named(f, name))
            .map(|f| f.value.get(&self.bytes))
    }

    /// Whether `field` is named `name`: the lengths, compared first, rule
    /// out most fields without a look at their bytes.
    fn is_named(&self, field: &FieldSpan, name: &str) -> bool {
        field.name.len() == name.len()
            && field
                .name
                .get(&self.bytes)
                .eq_ignore_ascii_case(name.as_bytes())
    }

    /// What a field's value is as written between the colon and the line
    /// end, with the whitespace around it httparse strips.
    fn raw_value(&self, f: &FieldSpan) -> &[u8] {
        let start = f.name.end as usize + 1;
        let end = f.value.end as usize;
        let trailing = self.bytes[end..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        &self.bytes[start..end + trailing]
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// The name of the `i`th field, as sent.
    pub fn name(&self, i: usize) -> &[u8] {
        self.spans[i].name.get(&self.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The fields as an `http` header map: names lower-cased (as `http`
    /// requires), values shared with the head, not copied. The map has room
    /// for `extra` more fields, so the ones a proxy adds do not grow it.
    pub fn to_header_map(&self, extra: usize) -> Result<HeaderMap, HeadError> {
        let mut map = HeaderMap::with_capacity(self.spans.len() + extra);
        for f in &self.spans {
            let name = HeaderName::from_bytes(f.name.get(&self.bytes))
                .map_err(|_| HeadError::Malformed(httparse::Error::HeaderName))?;
            let value = self
                .bytes
                .slice(f.value.start as usize..f.value.end as usize);
            let value = HeaderValue::from_maybe_shared(value)
                .map_err(|_| HeadError::Malformed(httparse::Error::HeaderValue))?;
            map.append(name, value);
        }
        Ok(map)
    }

    pub(super) fn collect(bytes: &[u8], headers: &[httparse::Header<'_>]) -> Vec<FieldSpan> {
        headers
            .iter()
            .map(|h| FieldSpan {
                name: Span::of(bytes, h.name.as_bytes()),
                value: Span::of(bytes, h.value),
                known: Known::of(h.name.as_bytes()),
            })
            .collect()
    }
}
