//! The chunked transfer coding (RFC 9112 §7.1), checked strictly and
//! incrementally.
//!
//! The decoder does not copy or re-encode: it tells its caller which of the
//! bytes at hand are chunk framing, data, a trailer line or the end, so a
//! proxy can pass the framing on untouched between HTTP/1.1 peers and still
//! know exactly where the body ends. Chunk-size lines and the line break
//! after chunk data must be CRLF; in the trailer section a bare LF also ends
//! a line (§2.2 allows it), so `0\r\n\n` ends the body where it appears
//! instead of swallowing what follows as trailer fields.

use super::body::Step;

/// A chunk-size line (size and extensions) longer than this is refused, so
/// a decoder never needs more than this much buffered to make progress.
pub const MAX_LINE: usize = 4096;

/// All trailer lines of one body together.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    BadSize,
    #[error("chunk size over 2^64")]
    SizeOverflow,
    #[error("invalid chunk extension")]
    BadExtension,
    #[error("chunk line not ended by CRLF")]
    BadLineEnd,
    #[error("chunk line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("invalid trailer field")]
    BadTrailer,
    #[error("trailer section over {MAX_TRAILERS} bytes")]
    TrailersTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: State::Size }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Looks at the front of `input` (what is buffered of the body) and says
    /// what its first bytes are. Never consumes part of a line.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        match self.state {
            State::Size => {
                let Some(line) = line(input)? else {
                    return Ok(Step::NeedMore);
                };
                let content = line.strip_suffix(b"\r\n").ok_or(ChunkError::BadLineEnd)?;
                let size = chunk_size(content)?;
                self.state = match size {
                    0 => State::Trailers(0),
                    size => State::Data(size),
                };
                Ok(Step::Framing(line.len()))
            }
            State::Data(left) => {
                if input.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = usize::try_from(left).map_or(input.len(), |l| l.min(input.len()));
                let left = left - take as u64;
                self.state = match left {
                    0 => State::DataEnd,
                    left => State::Data(left),
                };
                Ok(Step::Data(take))
            }
            State::DataEnd => match input {
                [] | [b'\r'] => Ok(Step::NeedMore),
                [b'\r', b'\n', ..] => {
                    self.state = State::Size;
                    Ok(Step::Framing(2))
                }
                _ => Err(ChunkError::BadLineEnd),
            },
            State::Trailers(seen) => {
                let Some(line) = line(input)? else {
                    return Ok(Step::NeedMore);
                };
                let content = line
                    .strip_suffix(b"\n")
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .unwrap_or(line);
                if content.is_empty() {
                    self.state = State::Done;
                    return Ok(Step::End(line.len()));
                }
                let seen = seen + line.len();
                if seen > MAX_TRAILERS {
                    return Err(ChunkError::TrailersTooLarge);
                }
                if !valid_field(content) {
                    return Err(ChunkError::BadTrailer);
                }
                self.state = State::Trailers(seen);
                Ok(Step::Trailer {
                    line: content.len(),
                    consumed: line.len(),
                })
            }
            State::Done => Ok(Step::End(0)),
        }
    }
}

/// The first line of `input`, its LF included, once it is all there.
fn line(input: &[u8]) -> Result<Option<&[u8]>, ChunkError> {
    let window = &input[..input.len().min(MAX_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(end) => Ok(Some(&input[..=end])),
        None if input.len() >= MAX_LINE => Err(ChunkError::LineTooLong),
        None => Ok(None),
    }
}

/// `1*HEXDIG [ BWS chunk-ext ]`, where each extension is
/// `BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ]`.
fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkError::BadSize);
    }
    let mut size = 0u64;
    for &d in &line[..digits] {
        let value = char::from(d).to_digit(16).unwrap_or_default();
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(value)))
            .ok_or(ChunkError::SizeOverflow)?;
    }
    let rest = skip_ws(&line[digits..]);
    if rest.is_empty() {
        return Ok(size);
    }
    if rest[0] != b';' {
        return Err(ChunkError::BadSize);
    }
    extensions(rest).map(|()| size)
}

fn extensions(mut rest: &[u8]) -> Result<(), ChunkError> {
    while let Some(after) = rest.strip_prefix(b";") {
        rest = skip_ws(after);
        let name = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return Err(ChunkError::BadExtension);
        }
        rest = skip_ws(&rest[name..]);
        if let Some(after) = rest.strip_prefix(b"=") {
            rest = skip_ws(after);
            rest = match rest.first() {
                Some(b'"') => quoted_string(&rest[1..])?,
                _ => {
                    let value = rest.iter().take_while(|&&b| is_tchar(b)).count();
                    if value == 0 {
                        return Err(ChunkError::BadExtension);
                    }
                    &rest[value..]
                }
            };
            rest = skip_ws(rest);
        }
    }
    match rest {
        [] => Ok(()),
        _ => Err(ChunkError::BadExtension),
    }
}

/// What follows a quoted string whose opening quote is already consumed.
fn quoted_string(mut rest: &[u8]) -> Result<&[u8], ChunkError> {
    loop {
        match rest {
            [b'"', tail @ ..] => return Ok(tail),
            [b'\\', escaped, tail @ ..] if is_qd_text(*escaped) || *escaped == b'"' => {
                rest = tail;
            }
            [b, tail @ ..] if is_qd_text(*b) => rest = tail,
            _ => return Err(ChunkError::BadExtension),
        }
    }
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    &bytes[n..]
}

/// RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_qd_text(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\' || b >= 0x80
}

/// `name ":" OWS value OWS` with a token name and no control characters
/// but tab in the value.
fn valid_field(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&b| is_tchar(b))
        && value.iter().all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data, the trailer lines, and how many bytes the body took.
    type Decoded = (Vec<u8>, Vec<Vec<u8>>, usize);

    /// Feeds `input` in pieces of `piece` bytes.
    fn decode(input: &[u8], piece: usize) -> Result<Decoded, ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut data = Vec::new();
        let mut trailers = Vec::new();
        let mut offset = 0;
        let mut available = piece.min(input.len());
        loop {
            let buffered = &input[offset..available];
            match decoder.step(buffered)? {
                Step::NeedMore => {
                    assert!(available < input.len(), "ran out of input");
                    available = (available + piece).min(input.len());
                }
                Step::Framing(n) => offset += n,
                Step::Data(n) => {
                    data.extend_from_slice(&buffered[..n]);
                    offset += n;
                }
                Step::Trailer { line, consumed } => {
                    trailers.push(buffered[..line].to_vec());
                    offset += consumed;
                }
                Step::End(n) => return Ok((data, trailers, offset + n)),
            }
        }
    }

    fn decode_all_ways(input: &[u8]) -> Result<Decoded, ChunkError> {
        let whole = decode(input, input.len().max(1));
        for piece in 1..8 {
            assert_eq!(decode(input, piece), whole, "pieces of {piece}");
        }
        whole
    }

    #[test]
    fn decodes_data_and_trailers_at_every_cut() {
        let body = b"5\r\nhello\r\n6;name=value;flag\r\n world\r\nA ; q=\"a \\\"b\\\" c\"\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-B:\r\n\r\nNEXT";
        let (data, trailers, used) = decode_all_ways(body).unwrap();
        assert_eq!(data, b"hello world0123456789");
        assert_eq!(trailers, [b"X-Sum: 1".to_vec(), b"X-B:".to_vec()]);
        assert_eq!(&body[used..], b"NEXT");
    }

    #[test]
    fn bare_lf_after_the_last_chunk_ends_the_body() {
        let body = b"3\r\nabc\r\n0\r\n\nGET / HTTP/1.1\r\n\r\n";
        let (data, trailers, used) = decode_all_ways(body).unwrap();
        assert_eq!(data, b"abc");
        assert!(trailers.is_empty());
        assert_eq!(&body[used..], b"GET / HTTP/1.1\r\n\r\n");

        let body = b"0\r\nX: 1\n\nrest";
        let (_, trailers, used) = decode_all_ways(body).unwrap();
        assert_eq!(trailers, [b"X: 1".to_vec()]);
        assert_eq!(&body[used..], b"rest");
    }

    #[test]
    fn refuses_bad_chunk_lines() {
        for (bad, err) in [
            (&b"\r\n"[..], ChunkError::BadSize),
            (b"x\r\n", ChunkError::BadSize),
            (b"-1\r\n", ChunkError::BadSize),
            (b"+1\r\n", ChunkError::BadSize),
            (b"0x5\r\n", ChunkError::BadSize),
            (b"5 5\r\n", ChunkError::BadSize),
            (b"5\n", ChunkError::BadLineEnd),
            (b"5\r\r\n", ChunkError::BadSize),
            (b"10000000000000000\r\n", ChunkError::SizeOverflow),
            (b"5;\r\n", ChunkError::BadExtension),
            (b"5;a=\r\n", ChunkError::BadExtension),
            (b"5;a=\"open\r\n", ChunkError::BadExtension),
            (b"5;a b\r\n", ChunkError::BadExtension),
            (b"5;a\x00\r\n", ChunkError::BadExtension),
            (b"3\r\nabcX\r\n", ChunkError::BadLineEnd),
            (b"3\r\nabc\n0\r\n\r\n", ChunkError::BadLineEnd),
            (b"0\r\nno colon\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nBad Name: 1\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nX: a\x01b\r\n\r\n", ChunkError::BadTrailer),
        ] {
            assert_eq!(
                decode(bad, bad.len()),
                Err(err),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut decoder = ChunkedDecoder::default();
        assert_eq!(decoder.step(b"ffffffffffffffff\r\n"), Ok(Step::Framing(18)));
        assert_eq!(decoder.step(b"abc"), Ok(Step::Data(3)));
    }

    #[test]
    fn bounds_lines_and_trailers() {
        let long = format!("5;{}\r\n", "a".repeat(MAX_LINE));
        assert_eq!(
            ChunkedDecoder::default().step(long.as_bytes()),
            Err(ChunkError::LineTooLong)
        );
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILERS + 100 {
            trailers.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(
            decode(&trailers, trailers.len()).map(|_| ()),
            Err(ChunkError::TrailersTooLarge)
        );
    }
}
