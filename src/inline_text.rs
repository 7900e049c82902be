//! Short text written into a fixed buffer held inline: an address or a
//! number formatted without a heap allocation.

use std::fmt;

/// Up to `N` bytes of text (`N` at most 255), written with `write!`; a
/// write past `N` bytes fails and leaves what was written before it.
#[derive(Clone, Copy)]
pub struct InlineText<const N: usize> {
    buf: [u8; N],
    len: u8,
}

impl<const N: usize> InlineText<N> {
    pub const fn new() -> Self {
        InlineText {
            buf: [0; N],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("written from a str")
    }
}

impl<const N: usize> Default for InlineText<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for InlineText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let start = usize::from(self.len);
        let end = start + s.len();
        self.buf
            .get_mut(start..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = u8::try_from(end).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for InlineText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use super::*;

    #[test]
    fn text_past_its_room_is_refused_and_what_fit_is_kept() {
        let mut text = InlineText::<4>::new();
        write!(text, "ab").unwrap();
        assert!(write!(text, "cde").is_err());
        assert_eq!(text.as_str(), "ab");
        write!(text, "cd").unwrap();
        assert_eq!(text.as_bytes(), b"abcd");
    }
}
