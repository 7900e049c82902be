//! The HTTP/2 limits of the contract, end to end over h2c (prior knowledge):
//! at most 100 concurrent streams, and GOAWAY for a client that floods the
//! connection — rapid reset, CONTINUATION flood, "MadeYouReset". A minimal
//! raw frame client drives them, because a real HTTP/2 client library
//! refuses to send these sequences. (The idle GOAWAY over h2c is covered in
//! tests/tls.rs.) Also here: streams the client cancels while sluice handles
//! them, which are logged and counted as 499, and which, when they are most
//! of a connection's streams, are rapid reset too.

mod support;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use support::{admin::*, client::*, config::*, proxy::*, upstream::*};

const WAIT: Duration = Duration::from_secs(20);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// What the reader task saw: a frame, or the end of the connection.
#[derive(Debug)]
enum Event {
    Frame(Frame),
    Closed(String),
}

/// A GOAWAY's last stream id and error code.
#[derive(Debug, Clone, Copy)]
struct GoAway {
    last_stream: u32,
    code: u32,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// HPACK literal without indexing, name from the static table; the value is
/// a raw (not Huffman) string shorter than 127 bytes.
fn literal(name_index: u8, value: &str) -> Vec<u8> {
    assert!(name_index < 15 && value.len() < 127);
    let mut out = vec![name_index, u8::try_from(value.len()).expect("short value")];
    out.extend(value.as_bytes());
    out
}

/// The header block of `GET http://h2.test{path}`, with no dynamic table
/// use, so blocks can be sent in any order.
fn request_block(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    block.extend(literal(2, "GET")); // :method
    block.extend(literal(6, "http")); // :scheme
    block.extend(literal(4, path)); // :path
    block.extend(literal(1, "h2.test")); // :authority
    block
}

fn get(stream: u32, path: &str) -> Vec<u8> {
    frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        stream,
        &request_block(path),
    )
}

fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

fn u32_at(payload: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(payload[at..at + 4].try_into().expect("4 bytes"))
}

/// A client-side HTTP/2 connection at the frame level: writes whatever it
/// is given; a task reads frames back into a channel.
struct RawH2 {
    write: OwnedWriteHalf,
    events: mpsc::UnboundedReceiver<Event>,
    closed: bool,
}

impl RawH2 {
    /// Sends the preface and empty SETTINGS, then acknowledges the server's
    /// SETTINGS and returns them.
    async fn connect(addr: SocketAddr) -> (RawH2, Vec<(u16, u32)>) {
        let tcp = TcpStream::connect(addr).await.expect("connect to sluice");
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        let (read, write) = tcp.into_split();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(read, tx));
        let mut conn = RawH2 {
            write,
            events,
            closed: false,
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        conn.send(&hello).await.expect("send the preface");
        let settings = loop {
            match conn.next().await {
                Some(Frame {
                    kind: SETTINGS,
                    flags,
                    payload,
                    ..
                }) if flags & ACK == 0 => break payload,
                Some(_) => {}
                None => panic!("sluice closed the connection before its SETTINGS"),
            }
        };
        conn.send(&frame(SETTINGS, ACK, 0, &[]))
            .await
            .expect("acknowledge SETTINGS");
        let settings = settings
            .chunks_exact(6)
            .map(|s| (u16::from_be_bytes([s[0], s[1]]), u32_at(s, 2)))
            .collect();
        (conn, settings)
    }

    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write.write_all(bytes).await
    }

    /// The next frame, waiting up to `WAIT`; `None` once the connection is closed.
    async fn next(&mut self) -> Option<Frame> {
        if self.closed {
            return None;
        }
        let event = tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no frame from sluice in time");
        self.frame_of(event)
    }

    /// A frame already read, without waiting.
    fn try_next(&mut self) -> Option<Frame> {
        if self.closed {
            return None;
        }
        match self.events.try_recv() {
            Ok(event) => self.frame_of(Some(event)),
            Err(_) => None,
        }
    }

    fn frame_of(&mut self, event: Option<Event>) -> Option<Frame> {
        match event {
            Some(Event::Frame(frame)) => Some(frame),
            Some(Event::Closed(why)) => {
                eprintln!("connection closed: {why}");
                self.closed = true;
                None
            }
            None => {
                self.closed = true;
                None
            }
        }
    }

    /// Takes the frames already read: answers PINGs (so that a graceful
    /// GOAWAY goes on to its final one) and returns the last GOAWAY seen.
    async fn pings_and_goaway(&mut self) -> Option<GoAway> {
        let mut goaway = None;
        while let Some(read) = self.try_next() {
            if read.kind == PING && read.flags & ACK == 0 {
                let _ = self.send(&frame(PING, ACK, 0, &read.payload)).await;
            }
            goaway = as_goaway(&read).or(goaway);
        }
        goaway
    }

    /// Reads until GOAWAY (returned) or the end of the connection (`None`).
    async fn goaway(&mut self) -> Option<GoAway> {
        while let Some(frame) = self.next().await {
            if let Some(goaway) = as_goaway(&frame) {
                return Some(goaway);
            }
        }
        None
    }
}

fn as_goaway(frame: &Frame) -> Option<GoAway> {
    (frame.kind == GOAWAY).then(|| GoAway {
        last_stream: u32_at(&frame.payload, 0) & 0x7fff_ffff,
        code: u32_at(&frame.payload, 4),
    })
}

async fn read_frames(mut read: tokio::net::tcp::OwnedReadHalf, tx: mpsc::UnboundedSender<Event>) {
    loop {
        let mut head = [0u8; 9];
        if let Err(e) = read.read_exact(&mut head).await {
            let _ = tx.send(Event::Closed(e.to_string()));
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if let Err(e) = read.read_exact(&mut payload).await {
            let _ = tx.send(Event::Closed(e.to_string()));
            return;
        }
        let frame = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        if tx.send(Event::Frame(frame)).is_err() {
            return;
        }
    }
}

/// Client stream ids are odd: the n-th stream (from 0).
fn stream_id(n: u32) -> u32 {
    2 * n + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_100_concurrent_streams_are_advertised_and_served() {
    let upstream = MockUpstream::named("a").hang().start().await;
    let proxy = Proxy::start(&Config::web(&[&upstream]).toml()).await;

    let (mut conn, settings) = RawH2::connect(proxy.addr()).await;
    let advertised = settings
        .iter()
        .find(|(id, _)| *id == SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|(_, value)| *value);
    assert_eq!(advertised, Some(100), "server SETTINGS: {settings:?}");

    // A client that ignores the limit and opens 150 streams at once.
    const OPENED: u32 = 150;
    let mut burst = Vec::new();
    for n in 0..OPENED {
        burst.extend(get(stream_id(n), &format!("/s{n}")));
    }
    conn.send(&burst).await.expect("send 150 requests");

    let mut refused = 0;
    let mut peak = 0;
    poll_until(
        WAIT,
        "100 requests upstream and 50 streams refused",
        async || {
            while let Some(frame) = conn.try_next() {
                if frame.kind == RST_STREAM && u32_at(&frame.payload, 0) == REFUSED_STREAM {
                    refused += 1;
                }
                assert!(as_goaway(&frame).is_none(), "unexpected GOAWAY: {frame:?}");
            }
            peak = peak.max(upstream.in_flight());
            assert!(!conn.closed, "sluice closed the connection");
            upstream.in_flight() >= 100 && refused >= OPENED - 100
        },
    )
    .await;
    eprintln!(
        "in flight upstream: {} (peak {peak}), refused streams: {refused}",
        upstream.in_flight()
    );
    assert_eq!(upstream.in_flight(), 100);
    assert_eq!(peak, 100);
    assert_eq!(refused, OPENED - 100);

    // Released, exactly the 100 accepted streams are answered.
    upstream.set_hang(false);
    let mut answered = 0;
    while answered < 100 {
        let frame = conn.next().await.expect("the connection stays open");
        if frame.kind == HEADERS {
            assert_eq!(frame.stream % 2, 1, "{frame:?}");
            answered += 1;
        }
    }
    assert_eq!(upstream.count(), 100);
    assert_eq!(upstream.in_flight(), 0);
}

/// The contract's 100 streams before GOAWAY, with slack for streams sluice
/// accepts between a flooding client's frames.
const FLOOD_BOUND: u32 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway() {
    let upstream = MockUpstream::named("a")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let proxy = Proxy::start(&Config::web(&[&upstream]).toml()).await;
    let (mut conn, _) = RawH2::connect(proxy.addr()).await;

    // Open and cancel streams, pipelined in batches, as an attacker would.
    const MAX_STREAMS: u32 = 10_000;
    const BATCH: u32 = 10;
    let mut sent = 0;
    let mut goaway = None;
    while sent < MAX_STREAMS && goaway.is_none() && !conn.closed {
        let mut batch = Vec::new();
        for n in sent..sent + BATCH {
            batch.extend(get(stream_id(n), "/reset"));
            batch.extend(rst_stream(stream_id(n), CANCEL));
        }
        if conn.send(&batch).await.is_err() {
            break;
        }
        sent += BATCH;
        while let Some(frame) = conn.try_next() {
            goaway = goaway.or(as_goaway(&frame));
        }
    }
    let goaway = match goaway {
        Some(goaway) => goaway,
        None => conn
            .goaway()
            .await
            .unwrap_or_else(|| panic!("no GOAWAY after {sent} reset streams")),
    };
    let processed = goaway.last_stream.div_ceil(2);
    eprintln!(
        "rapid reset: {sent} streams sent, GOAWAY {goaway:?} after {processed} streams, \
         {} requests reached the upstream",
        upstream.count()
    );
    assert_eq!(goaway.code, ENHANCE_YOUR_CALM, "{goaway:?}");
    assert!(processed <= FLOOD_BOUND, "GOAWAY after {processed} streams");
    assert!(
        conn.goaway().await.is_none(),
        "the connection ends after GOAWAY"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_gets_goaway_and_never_reaches_the_upstream() {
    let upstream = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&upstream]).toml()).await;
    let (mut conn, _) = RawH2::connect(proxy.addr()).await;

    // HEADERS without END_HEADERS, then small CONTINUATION frames that never
    // end the block. 100 of them hold ~11 KB, under `max_header_size`: the
    // frame count alone must trip the limit, not the size of the block.
    const FRAMES: usize = 100;
    let first = frame(HEADERS, END_STREAM, 1, &request_block("/flood"));
    conn.send(&first).await.expect("send HEADERS");
    let filler = "x".repeat(100);
    let mut sent = 0;
    let mut goaway = None;
    while sent < FRAMES && goaway.is_none() && !conn.closed {
        // Each frame holds one whole `x-flood: xxx…` field (literal, new name).
        let mut block = vec![0x00, 7];
        block.extend(b"x-flood");
        block.push(u8::try_from(filler.len()).expect("short value"));
        block.extend(filler.as_bytes());
        if conn.send(&frame(CONTINUATION, 0, 1, &block)).await.is_err() {
            break;
        }
        sent += 1;
        while let Some(frame) = conn.try_next() {
            goaway = goaway.or(as_goaway(&frame));
        }
    }
    // Then nothing more: without a limit sluice would wait for the rest of
    // the block, and `next` would time out.
    let goaway = match goaway {
        Some(goaway) => Some(goaway),
        None => conn.goaway().await,
    };
    eprintln!("CONTINUATION flood: {sent} frames sent, then {goaway:?}");
    let goaway = goaway.expect("GOAWAY before the connection closed");
    assert_eq!(goaway.code, ENHANCE_YOUR_CALM, "{goaway:?}");
    assert!(conn.goaway().await.is_none(), "the connection ends");
    assert_eq!(
        upstream.count(),
        0,
        "the flooded request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_you_reset_gets_goaway() {
    let upstream = MockUpstream::named("a")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let proxy = Proxy::start(&Config::web(&[&upstream]).toml()).await;
    let (mut conn, _) = RawH2::connect(proxy.addr()).await;

    // Each stream is valid until the client sends a WINDOW_UPDATE that
    // overflows its send window (65 535 + 2^31 - 1): a stream error the
    // *server* must answer with RST_STREAM, so the resets are the server's,
    // not the client's.
    const MAX_STREAMS: u32 = 10_000;
    let mut sent = 0;
    // Informational: sluice may close before flushing its resets.
    let mut server_resets = 0;
    let mut goaway = None;
    while sent < MAX_STREAMS && goaway.is_none() && !conn.closed {
        let mut batch = get(stream_id(sent), "/made-you-reset");
        batch.extend(frame(
            WINDOW_UPDATE,
            0,
            stream_id(sent),
            &0x7fff_ffff_u32.to_be_bytes(),
        ));
        if conn.send(&batch).await.is_err() {
            break;
        }
        sent += 1;
        while let Some(frame) = conn.try_next() {
            server_resets += u32::from(frame.kind == RST_STREAM);
            goaway = goaway.or(as_goaway(&frame));
        }
    }
    let goaway = match goaway {
        Some(goaway) => goaway,
        None => loop {
            let frame = conn
                .next()
                .await
                .unwrap_or_else(|| panic!("no GOAWAY after {sent} streams"));
            server_resets += u32::from(frame.kind == RST_STREAM);
            if let Some(goaway) = as_goaway(&frame) {
                break goaway;
            }
        },
    };
    let processed = goaway.last_stream.div_ceil(2);
    eprintln!(
        "MadeYouReset: {sent} streams sent, {server_resets} RST_STREAM from sluice, \
         GOAWAY {goaway:?} after {processed} streams"
    );
    assert_eq!(goaway.code, ENHANCE_YOUR_CALM, "{goaway:?}");
    assert!(processed <= FLOOD_BOUND, "GOAWAY after {processed} streams");
}

/// Spaced rapid reset: each stream is cancelled only once its request has
/// reached the upstream, so hyper's count of streams reset before they were
/// accepted never sees it; sluice counts the streams it was handling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_streams_after_they_reach_the_upstream_gets_goaway() {
    let upstream = MockUpstream::named("a").hang().start().await;
    let proxy = Proxy::start(&Config::web(&[&upstream]).toml()).await;
    let (mut conn, _) = RawH2::connect(proxy.addr()).await;

    let mut goaway = None;
    let mut opened = 0;
    while opened < 100 && goaway.is_none() && !conn.closed {
        let stream = stream_id(opened);
        conn.send(&get(stream, "/cancelled"))
            .await
            .expect("send HEADERS");
        opened += 1;
        let reached = usize::try_from(opened).expect("count");
        poll_until(WAIT, "the request reached the upstream", async || {
            goaway = conn.pings_and_goaway().await.or(goaway);
            upstream.count() >= reached || goaway.is_some() || conn.closed
        })
        .await;
        if conn.send(&rst_stream(stream, CANCEL)).await.is_err() {
            break;
        }
        goaway = conn.pings_and_goaway().await.or(goaway);
    }
    eprintln!(
        "spaced rapid reset: {opened} streams opened, GOAWAY {goaway:?}, {} requests upstream",
        upstream.count()
    );
    let first = goaway.unwrap_or_else(|| panic!("no GOAWAY after {opened} cancelled streams"));
    assert!(opened < 100, "GOAWAY only after {opened} streams");

    // The GOAWAY is hyper's graceful one (last stream 2^31-1, then the
    // real last stream once the PING is answered): the final one names a
    // stream under the 100th.
    let mut last = first;
    poll_until(WAIT, "the final GOAWAY", async || {
        last = conn.pings_and_goaway().await.unwrap_or(last);
        last.last_stream < stream_id(100) || conn.closed
    })
    .await;
    assert!(
        last.last_stream < stream_id(100),
        "last stream {} in {last:?}",
        last.last_stream
    );
    assert_eq!(
        proxy.logged("HTTP/2 client cancels most of its streams"),
        1,
        "one warning for the connection"
    );
}

/// hyper's graceful GOAWAY admits streams until its PING is answered: a
/// client that never answers and cancels on is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_on_after_goaway_drops_the_connection() {
    let upstream = MockUpstream::named("a").hang().start().await;
    let proxy = Proxy::start(&Config::web(&[&upstream]).toml()).await;
    let (mut conn, _) = RawH2::connect(proxy.addr()).await;

    const MAX_STREAMS: u32 = 300;
    let mut goaway_at = None;
    let mut opened = 0;
    while opened < MAX_STREAMS && !conn.closed {
        let stream = stream_id(opened);
        if conn.send(&get(stream, "/cancelled")).await.is_err() {
            break;
        }
        opened += 1;
        let reached = usize::try_from(opened).expect("count");
        poll_until(WAIT, "the request reached the upstream", async || {
            // Frames are read, PINGs left unanswered.
            while let Some(frame) = conn.try_next() {
                if as_goaway(&frame).is_some() {
                    goaway_at = goaway_at.or(Some(opened));
                }
            }
            upstream.count() >= reached || conn.closed
        })
        .await;
        if conn.send(&rst_stream(stream, CANCEL)).await.is_err() {
            break;
        }
    }
    while conn.next().await.is_some() {}
    eprintln!("GOAWAY at stream {goaway_at:?}, connection closed after {opened} streams");
    assert!(
        goaway_at.is_some_and(|n| n < 100),
        "GOAWAY at {goaway_at:?}"
    );
    assert!(opened < 160, "connection still open after {opened} streams");
}

/// A browser cancels the odd stream (navigation away): never cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cancels_a_few_streams_keeps_its_connection() {
    let upstream = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(
        &Config::web(&[&upstream])
            .set("log", "format", "json")
            .toml(),
    )
    .await;
    let (mut conn, _) = RawH2::connect(proxy.addr()).await;

    const ANSWERED: u32 = 200;
    const CANCELLED: u32 = 10;
    let mut cancelled = 0;
    for n in 0..ANSWERED + CANCELLED {
        let stream = stream_id(n);
        // One stream in 21 is cancelled once sluice has sent it upstream.
        let cancel = n % 21 == 20;
        if cancel {
            upstream.set_hang(true);
        }
        let before = upstream.count();
        let path = if cancel {
            format!("/cancelled{n}")
        } else {
            "/page".to_owned()
        };
        conn.send(&get(stream, &path)).await.expect("send HEADERS");
        if cancel {
            poll_until(WAIT, "the request reached the upstream", async || {
                upstream.count() > before
            })
            .await;
            conn.send(&rst_stream(stream, CANCEL))
                .await
                .expect("send RST_STREAM");
            // Released only once sluice has dropped the request, which it
            // logs: else the answer might beat the reset.
            poll_until(WAIT, "the cancelled request logged as 499", async || {
                access_lines(&proxy, &path)
                    .iter()
                    .any(|line| line["status"] == 499)
            })
            .await;
            upstream.set_hang(false);
            cancelled += 1;
            continue;
        }
        loop {
            let frame = conn
                .next()
                .await
                .unwrap_or_else(|| panic!("connection closed at stream {n}"));
            assert!(
                as_goaway(&frame).is_none(),
                "GOAWAY at stream {n}: {frame:?}"
            );
            if frame.stream == stream
                && matches!(frame.kind, HEADERS | DATA)
                && frame.flags & END_STREAM != 0
            {
                break;
            }
        }
    }
    assert_eq!(cancelled, CANCELLED);

    // A PING answered with nothing before it: no GOAWAY is on its way.
    conn.send(&frame(PING, 0, 0, b"sluice!!"))
        .await
        .expect("send PING");
    loop {
        let frame = conn.next().await.expect("the connection stays open");
        assert!(as_goaway(&frame).is_none(), "{frame:?}");
        if frame.kind == PING && frame.flags & ACK != 0 {
            break;
        }
    }
    assert_eq!(proxy.logged("HTTP/2 client cancels most of its streams"), 0);
}

/// The access log's JSON lines for requests to `path`.
fn access_lines(proxy: &Proxy, path: &str) -> Vec<serde_json::Value> {
    proxy
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "sluice::access" && v["path"] == path)
        .collect()
}

/// As nginx: a request whose client went away before it was answered is
/// logged once with status 499, and counted, although the server has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_is_logged_once_as_499_and_counted() {
    let upstream = MockUpstream::named("a").hang().start().await;
    let toml = Config::web(&[&upstream])
        .set("log", "format", "json")
        .admin()
        .toml();
    let proxy = Proxy::start(&toml).await;
    let requests_4xx = async || {
        let resp = support::client::get(&proxy.admin_url("/metrics")).await;
        scrape(&resp.body)
            .samples
            .iter()
            .filter(|s| s.metric == "sluice_requests_total" && s.labels.get("code") == Some("4xx"))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("sluice_requests_total is {other:?}"),
            })
            .sum::<f64>()
    };
    assert_eq!(requests_4xx().await, 0.0);

    // Reset by the client: RST_STREAM.
    let (mut conn, _) = RawH2::connect(proxy.addr()).await;
    conn.send(&get(1, "/reset")).await.expect("send HEADERS");
    poll_until(WAIT, "the request reached the upstream", async || {
        upstream.count() >= 1
    })
    .await;
    conn.send(&rst_stream(1, CANCEL))
        .await
        .expect("send RST_STREAM");
    // Gone with its connection.
    let (mut conn, _) = RawH2::connect(proxy.addr()).await;
    conn.send(&get(1, "/closed")).await.expect("send HEADERS");
    poll_until(WAIT, "the request reached the upstream", async || {
        upstream.count() >= 2
    })
    .await;
    drop(conn);

    poll_until(WAIT, "both requests logged", async || {
        !access_lines(&proxy, "/reset").is_empty() && !access_lines(&proxy, "/closed").is_empty()
    })
    .await;
    // A request answered after them is logged after them: had either been
    // logged twice, the second line would be there by now.
    upstream.set_hang(false);
    let (mut conn, _) = RawH2::connect(proxy.addr()).await;
    conn.send(&get(1, "/answered")).await.expect("send HEADERS");
    while let Some(frame) = conn.next().await {
        if frame.flags & END_STREAM != 0 && matches!(frame.kind, HEADERS | DATA) {
            break;
        }
    }
    poll_until(WAIT, "the answered request logged", async || {
        !access_lines(&proxy, "/answered").is_empty()
    })
    .await;
    for path in ["/reset", "/closed"] {
        let lines = access_lines(&proxy, path);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["status"], 499, "{lines:?}");
        assert_eq!(lines[0]["bytes"], 0, "{lines:?}");
        assert_eq!(lines[0]["upstream"], "web", "{lines:?}");
    }
    assert_eq!(access_lines(&proxy, "/answered")[0]["status"], 200);
    assert_eq!(requests_4xx().await, 2.0);
}
