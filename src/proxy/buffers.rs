//! Copy buffers for tunnels, and read buffers for HTTP/1.1 client
//! connections, kept on per-thread free lists.
//!
//! A tunnel holds a buffer only while bytes move through it: it takes one to
//! read into and gives it back as soon as a read would block with nothing
//! left to write. Ten thousand idle WebSockets then cost no buffer memory,
//! and a busy worker reuses the same few buffers instead of allocating one
//! per read. The list is thread-local, so taking and giving back is never
//! contended between workers; a buffer given back on another thread than
//! the one it came from simply joins that thread's list.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use bytes::BytesMut;

/// Bytes read at most at once: large enough that a bulk transfer costs few
/// system calls, small enough that a few hundred busy tunnels fit in cache.
pub const SIZE: usize = 16 * 1024;

/// Buffers kept per thread beyond those in use; more are freed.
const KEEP: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static FREE_READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer of at least [`SIZE`] bytes' capacity, empty, from this
/// thread's free list or new. A client connection takes one when bytes
/// arrive and gives it back with [`give_back`] once its exchange is over.
pub fn take_read() -> BytesMut {
    FREE_READ
        .with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(SIZE))
}

/// Returns a read buffer to the free list, if its whole allocation is free
/// again (a head or body split off it and still alive keeps it) and it did
/// not grow for a large head; otherwise it is simply freed.
pub fn give_back(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() > 4 * SIZE || !buf.try_reclaim(SIZE) {
        return;
    }
    let _ = FREE_READ.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

/// A [`SIZE`]-byte buffer that returns to its thread's free list when
/// dropped; or, made by [`holding`](Self::holding), one just large enough
/// for more bytes than that, freed when dropped. Not an `Option` inside: an
/// `Option<Buffer>` is then a pointer and a length, and every idle tunnel
/// holds two.
pub struct Buffer(Box<[u8]>);

impl Buffer {
    /// A buffer from this thread's free list, or a new one.
    pub fn take() -> Buffer {
        let reused = FREE.with(|free| free.borrow_mut().pop());
        Buffer(reused.unwrap_or_else(|| vec![0; SIZE].into_boxed_slice()))
    }

    /// A buffer starting with `bytes`, at least [`SIZE`] long.
    pub fn holding(bytes: &[u8]) -> Buffer {
        if bytes.len() > SIZE {
            return Buffer(bytes.into());
        }
        let mut buf = Buffer::take();
        buf[..bytes.len()].copy_from_slice(bytes);
        buf
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // An empty box in its place allocates nothing.
        let bytes = std::mem::take(&mut self.0);
        if bytes.len() != SIZE {
            return;
        }
        // During thread teardown the list may be gone: then just free it.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < KEEP {
                free.push(bytes);
            }
        });
    }
}

impl Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_the_next_one_taken() {
        let first = Buffer::take();
        assert_eq!(first.len(), SIZE);
        let address = first.as_ptr();
        drop(first);
        let second = Buffer::take();
        assert_eq!(second.as_ptr(), address, "the freed buffer was not reused");
    }

    #[test]
    fn a_read_buffer_comes_back_once_nothing_shares_it() {
        let mut buf = take_read();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split_to(8).freeze();
        give_back(buf);
        assert!(
            FREE_READ.with(|free| free.borrow().is_empty()),
            "taken back while shared"
        );
        drop(head);
        let mut buf = take_read();
        buf.extend_from_slice(b"x");
        let address = buf.as_ptr();
        give_back(buf);
        assert_eq!(
            take_read().as_ptr(),
            address,
            "the freed buffer was not reused"
        );
    }

    #[test]
    fn the_free_list_keeps_a_bounded_number() {
        let many: Vec<Buffer> = (0..KEEP + 10).map(|_| Buffer::take()).collect();
        drop(many);
        assert_eq!(FREE.with(|free| free.borrow().len()), KEEP);
    }
}
