//! Just enough of WebSocket framing (RFC 6455 section 5) for a tunnel to
//! speak at a frame boundary: where each frame ends, and whether a Close
//! frame went by. Payloads, masks and extensions (permessage-deflate and
//! the like) stay opaque: sluice never unmasks, inflates or checks a byte of
//! them, so following a tunnel costs a header parse per frame and a
//! subtraction per read.
//!
//! A frame boundary is enough to insert a Close even in the middle of a
//! fragmented message: control frames may come between the fragments of a
//! message (section 5.4), so the FIN bit never matters here.

/// Follows the frames of one direction of a tunnel, fed the bytes in the
/// order they pass, split anywhere.
#[derive(Debug, Clone, Copy)]
pub struct FrameTracker {
    /// The header of the frame being read, while it is incomplete.
    head: [u8; MAX_HEADER],
    have: u8,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// A Close frame has begun: the sender is closing its side.
    close_seen: bool,
}

/// 2 fixed bytes, 8 of extended length, 4 of masking key.
const MAX_HEADER: usize = 14;

const OPCODE_CLOSE: u8 = 0x8;

impl Default for FrameTracker {
    fn default() -> Self {
        FrameTracker {
            head: [0; MAX_HEADER],
            have: 0,
            remaining: 0,
            close_seen: false,
        }
    }
}

impl FrameTracker {
    /// Between two frames: a frame may be inserted here without tearing one.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Whether a Close frame has gone by.
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Follows `data`, all of it.
    pub fn track(&mut self, data: &[u8]) {
        self.step(data, false);
    }

    /// Follows `data` up to the next frame boundary and returns how many
    /// bytes that took: 0 when already at one, `data.len()` when the frame
    /// goes on past it.
    pub fn track_to_boundary(&mut self, data: &[u8]) -> usize {
        if self.at_boundary() {
            return 0;
        }
        self.step(data, true)
    }

    fn step(&mut self, data: &[u8], stop_at_boundary: bool) -> usize {
        let mut i = 0;
        while i < data.len() {
            if self.remaining > 0 {
                let rest = (data.len() - i) as u64;
                let take = self.remaining.min(rest);
                self.remaining -= take;
                i += take as usize;
            } else {
                self.head[usize::from(self.have)] = data[i];
                self.have += 1;
                i += 1;
                self.header_byte();
            }
            if stop_at_boundary && self.at_boundary() {
                break;
            }
        }
        i
    }

    /// Completes the header once its last byte has arrived.
    fn header_byte(&mut self) {
        if self.have < 2 {
            return;
        }
        let masked = self.head[1] & 0x80 != 0;
        let extended = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let need = 2 + extended + if masked { 4 } else { 0 };
        if usize::from(self.have) < need {
            return;
        }
        self.remaining = match extended {
            2 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            8 => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or_default()),
            _ => u64::from(self.head[1] & 0x7f),
        };
        if self.head[0] & 0x0f == OPCODE_CLOSE {
            self.close_seen = true;
        }
        self.have = 0;
    }
}

/// A Close frame carrying a status code and no reason.
#[derive(Debug, Clone, Copy)]
pub struct CloseFrame {
    bytes: [u8; 8],
    len: u8,
}

impl CloseFrame {
    /// As a server sends it to a client: unmasked (section 5.1).
    pub fn to_client(code: u16) -> CloseFrame {
        let [hi, lo] = code.to_be_bytes();
        CloseFrame {
            bytes: [0x80 | OPCODE_CLOSE, 2, hi, lo, 0, 0, 0, 0],
            len: 4,
        }
    }

    /// As a client sends it to a server: masked with a fresh random key,
    /// which section 5.3 requires to be unpredictable.
    pub fn to_server(code: u16) -> CloseFrame {
        Self::masked(code, rand::random())
    }

    fn masked(code: u16, key: [u8; 4]) -> CloseFrame {
        let [hi, lo] = code.to_be_bytes();
        CloseFrame {
            bytes: [
                0x80 | OPCODE_CLOSE,
                0x80 | 2,
                key[0],
                key[1],
                key[2],
                key[3],
                hi ^ key[0],
                lo ^ key[1],
            ],
            len: 8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked frame with `payload`.
    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// The same frame masked with `key` (the payload bytes are opaque to the
    /// tracker, so they are left as they are).
    fn masked(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = frame(opcode, true, payload);
        out[1] |= 0x80;
        let at = out.len() - payload.len();
        out.splice(at..at, key);
        out
    }

    /// The stream's boundaries as found by feeding it in `chunk`-byte reads.
    fn boundaries(stream: &[u8], chunk: usize) -> Vec<usize> {
        let mut tracker = FrameTracker::default();
        let mut found = Vec::new();
        let mut at = 0;
        for piece in stream.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = tracker.track_to_boundary(rest);
                let n = if n == 0 {
                    // At a boundary already: step into the next frame.
                    tracker.track(&rest[..1]);
                    1
                } else {
                    n
                };
                at += n;
                rest = &rest[n..];
                if tracker.at_boundary() {
                    found.push(at);
                }
            }
        }
        found
    }

    #[test]
    fn finds_every_boundary_whatever_the_read_sizes() {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for f in [
            frame(0x1, true, b"hello"),
            frame(0x2, false, &[7; 300]),
            frame(0x9, true, b""),
            frame(0x0, true, &[1; 70_000]),
            masked(0x1, b"masked text", [1, 2, 3, 4]),
            masked(0x2, &[9; 200], [5, 6, 7, 8]),
        ] {
            stream.extend_from_slice(&f);
            expected.push(stream.len());
        }
        for chunk in [1, 2, 3, 7, 13, 1000, stream.len()] {
            assert_eq!(boundaries(&stream, chunk), expected, "reads of {chunk}");
        }
    }

    #[test]
    fn a_split_header_is_not_a_boundary() {
        let f = frame(0x2, true, &[0; 200]);
        let mut tracker = FrameTracker::default();
        tracker.track(&f[..3]);
        assert!(!tracker.at_boundary());
        assert_eq!(tracker.track_to_boundary(&f[3..]), f.len() - 3);
        assert!(tracker.at_boundary());
    }

    #[test]
    fn to_boundary_stops_at_the_end_of_the_current_frame() {
        let mut stream = frame(0x1, true, b"first");
        let first = stream.len();
        stream.extend(frame(0x1, true, b"second"));
        let mut tracker = FrameTracker::default();
        tracker.track(&stream[..2]);
        assert_eq!(tracker.track_to_boundary(&stream[2..]), first - 2);
        assert!(tracker.at_boundary());
        assert_eq!(tracker.track_to_boundary(&stream[first..]), 0);
    }

    #[test]
    fn a_close_frame_is_noticed_masked_or_not() {
        let mut tracker = FrameTracker::default();
        tracker.track(&frame(0x1, true, b"text"));
        assert!(!tracker.close_seen());
        tracker.track(CloseFrame::to_server(1000).as_bytes());
        assert!(tracker.close_seen());
        let mut tracker = FrameTracker::default();
        tracker.track(CloseFrame::to_client(1012).as_bytes());
        assert!(tracker.close_seen() && tracker.at_boundary());
    }

    #[test]
    fn close_frames_follow_the_masking_rules() {
        assert_eq!(
            CloseFrame::to_client(1012).as_bytes(),
            [0x88, 0x02, 0x03, 0xf4]
        );
        let key = [0x11, 0x22, 0x33, 0x44];
        let frame = CloseFrame::masked(1001, key);
        let bytes = frame.as_bytes();
        assert_eq!(&bytes[..6], [0x88, 0x82, 0x11, 0x22, 0x33, 0x44]);
        let code = u16::from_be_bytes([bytes[6] ^ key[0], bytes[7] ^ key[1]]);
        assert_eq!(code, 1001);
    }
}
