//! The ceiling: the least an HTTP/1.1 reverse proxy on tokio and httparse
//! does per request, to measure what is left above sluice's own cost on a
//! machine. One current-thread runtime, one task per client connection
//! with the upstream exchange inline in it, a per-worker pool of plain
//! upstream streams, round-robin over the backends, buffers taken from a
//! free list only while bytes move. No features: the head goes upstream as
//! received, only `Content-Length` framing (what `wrk` sends and the bench
//! backends answer), no timeouts, no limits, no logging. Not a product.
//!
//!     ceiling 127.0.0.1:18085 127.0.0.1:19101 127.0.0.1:19102 127.0.0.1:19103

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BUFFER: usize = 16 * 1024;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Vec<u8> {
    FREE.with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUFFER))
}

fn give_buffer(mut buffer: Vec<u8>) {
    buffer.clear();
    FREE.with(|free| free.borrow_mut().push(buffer));
}

struct Backends {
    addresses: Vec<SocketAddr>,
    idle: RefCell<Vec<Vec<TcpStream>>>,
    next: Cell<usize>,
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .expect("listen address")
        .parse()
        .expect("address");
    let addresses: Vec<SocketAddr> = args.map(|a| a.parse().expect("address")).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(listen).await?;
        let backends = Rc::new(Backends {
            idle: RefCell::new(addresses.iter().map(|_| Vec::new()).collect()),
            addresses,
            next: Cell::new(0),
        });
        loop {
            let (client, _) = listener.accept().await?;
            client.set_nodelay(true)?;
            let backends = backends.clone();
            tokio::task::spawn_local(async move {
                let _ = serve(client, &backends).await;
            });
        }
    })
}

/// Reads into `buffer`; 0 is the peer's end. Through `AsyncRead`, as
/// tokio clears the readiness of a socket a read left short, so the next
/// wait costs no `EAGAIN` read.
async fn read_some(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    if buffer.capacity() == buffer.len() {
        buffer.reserve(BUFFER);
    }
    stream.read_buf(buffer).await
}

/// The length of a complete head and its body's Content-Length, or None
/// while the head is partial.
type Framing = io::Result<Option<(usize, usize)>>;

fn request_head(bytes: &[u8]) -> Framing {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => Ok(Some((head, content_length(request.headers)?))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

fn response_head(bytes: &[u8]) -> Framing {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => Ok(Some((head, content_length(response.headers)?))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

fn content_length(fields: &[httparse::Header<'_>]) -> io::Result<usize> {
    for field in fields {
        if field.name.eq_ignore_ascii_case("content-length") {
            return std::str::from_utf8(field.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "content-length"));
        }
    }
    Ok(0)
}

/// Reads one whole message (head and Content-Length body) into `buffer`.
async fn read_message(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    head: fn(&[u8]) -> Framing,
) -> io::Result<bool> {
    loop {
        if let Some((head, body)) = head(buffer)? {
            while buffer.len() < head + body {
                if read_some(stream, buffer).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            return Ok(true);
        }
        if read_some(stream, buffer).await? == 0 {
            return Ok(false);
        }
    }
}

async fn serve(mut client: TcpStream, backends: &Backends) -> io::Result<()> {
    loop {
        // Idle: no buffer until the client's next request starts arriving.
        client.readable().await?;
        let mut buffer = take_buffer();
        if !read_message(&mut client, &mut buffer, request_head).await? {
            give_buffer(buffer);
            return Ok(());
        }
        let index = backends.next.get();
        backends.next.set((index + 1) % backends.addresses.len());
        let pooled = backends.idle.borrow_mut()[index].pop();
        let mut upstream = match pooled {
            Some(upstream) => upstream,
            None => {
                let upstream = TcpStream::connect(backends.addresses[index]).await?;
                upstream.set_nodelay(true)?;
                upstream
            }
        };
        upstream.write_all(&buffer).await?;
        buffer.clear();
        if !read_message(&mut upstream, &mut buffer, response_head).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        backends.idle.borrow_mut()[index].push(upstream);
        client.write_all(&buffer).await?;
        give_buffer(buffer);
    }
}
