use super::*;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
use tokio::sync::oneshot;

/// The order sent on `orders`; none ever once its sender is gone.
async fn ordered(orders: oneshot::Receiver<Stop>) -> Stop {
    match orders.await {
        Ok(stop) => stop,
        Err(_) => std::future::pending().await,
    }
}

#[tokio::test]
async fn bytes_flow_both_ways_until_both_sides_close() {
    let (client, mut client_peer) = duplex(64);
    let (upstream, mut upstream_peer) = duplex(64);
    let (_order, stop) = oneshot::channel();
    let relay = tokio::spawn(relay(
        Prefixed::new(Bytes::new(), client),
        Prefixed::new(Bytes::new(), upstream),
        Protocol::Other,
        Duration::from_secs(60),
        ordered(stop),
    ));
    let payload = vec![7u8; 100_000];
    let writer = {
        let payload = payload.clone();
        tokio::spawn(async move {
            client_peer.write_all(&payload).await.unwrap();
            client_peer.shutdown().await.unwrap();
            let mut back = Vec::new();
            client_peer.read_to_end(&mut back).await.unwrap();
            back
        })
    };
    let mut received = Vec::new();
    upstream_peer.read_to_end(&mut received).await.unwrap();
    assert_eq!(received, payload);
    upstream_peer.write_all(b"bye").await.unwrap();
    upstream_peer.shutdown().await.unwrap();
    assert_eq!(writer.await.unwrap(), b"bye");
    let end = relay.await.unwrap();
    assert!(end.clean);
    assert_eq!((end.up, end.down), (100_000, 3));
}

#[tokio::test]
async fn a_close_order_waits_for_the_frame_being_copied() {
    let (client, mut client_peer) = duplex(1024);
    let (upstream, mut upstream_peer) = duplex(1024);
    let (order, stop) = oneshot::channel();
    let relay = tokio::spawn(relay(
        Prefixed::new(Bytes::new(), client),
        Prefixed::new(Bytes::new(), upstream),
        Protocol::WebSocket,
        Duration::from_secs(60),
        ordered(stop),
    ));
    // A 10-byte binary frame, of which the server has sent 6 bytes.
    let frame = [0x82, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    upstream_peer.write_all(&frame[..6]).await.unwrap();
    let mut got = [0u8; 6];
    client_peer.read_exact(&mut got).await.unwrap();
    order
        .send(Stop::Close {
            client: 1012,
            server: 1001,
        })
        .unwrap();
    // The server hears 1001 at once: the client side was between frames.
    let mut to_server = [0u8; 8];
    upstream_peer.read_exact(&mut to_server).await.unwrap();
    assert_eq!(&to_server[..2], [0x88, 0x82]);
    let code = u16::from_be_bytes([to_server[6] ^ to_server[2], to_server[7] ^ to_server[3]]);
    assert_eq!(code, 1001);
    // The rest of the frame, then frames sent after it, which are dropped.
    upstream_peer.write_all(&frame[6..]).await.unwrap();
    upstream_peer.write_all(&[0x81, 1, b'x']).await.unwrap();
    let mut rest = [0u8; 8];
    client_peer.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest[..4], &frame[6..]);
    assert_eq!(
        &rest[4..],
        [0x88, 2, 0x03, 0xf4],
        "Close 1012 after the whole frame"
    );
    // Both peers answer; the relay then ends cleanly and closes TCP.
    upstream_peer
        .write_all(CloseFrame::to_client(1001).as_bytes())
        .await
        .unwrap();
    client_peer
        .write_all(CloseFrame::to_server(1012).as_bytes())
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("the relay ends once both Close frames are answered")
        .unwrap();
    assert!(end.clean);
    let mut tail = Vec::new();
    client_peer.read_to_end(&mut tail).await.unwrap();
    assert!(tail.is_empty(), "nothing after the Close: {tail:?}");
}

#[tokio::test]
async fn a_close_already_under_way_is_never_doubled() {
    let (client, mut client_peer) = duplex(1024);
    let (upstream, mut upstream_peer) = duplex(1024);
    let (order, stop) = oneshot::channel();
    let relay = tokio::spawn(relay(
        Prefixed::new(Bytes::new(), client),
        Prefixed::new(Bytes::new(), upstream),
        Protocol::WebSocket,
        Duration::from_secs(60),
        ordered(stop),
    ));
    let client_close = CloseFrame::to_server(1000);
    client_peer
        .write_all(client_close.as_bytes())
        .await
        .unwrap();
    let mut forwarded = [0u8; 8];
    upstream_peer.read_exact(&mut forwarded).await.unwrap();
    assert_eq!(forwarded, client_close.as_bytes());
    order
        .send(Stop::Close {
            client: 1012,
            server: 1001,
        })
        .unwrap();
    // The client hears 1012; the server's answer to the client's own
    // Close is not passed on as a second Close.
    let mut to_client = [0u8; 4];
    client_peer.read_exact(&mut to_client).await.unwrap();
    assert_eq!(to_client, [0x88, 2, 0x03, 0xf4]);
    upstream_peer
        .write_all(CloseFrame::to_client(1000).as_bytes())
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("both sides have closed")
        .unwrap();
    assert!(end.clean);
    let mut tail = Vec::new();
    client_peer.read_to_end(&mut tail).await.unwrap();
    assert!(tail.is_empty(), "{tail:?}");
    upstream_peer.read_to_end(&mut tail).await.unwrap();
    assert!(
        tail.is_empty(),
        "a second Close reached the server: {tail:?}"
    );
}

#[tokio::test]
async fn a_cut_order_ends_the_tunnel_at_once() {
    let (client, _client_peer) = duplex(64);
    let (upstream, _upstream_peer) = duplex(64);
    let (order, stop) = oneshot::channel();
    let relay = tokio::spawn(relay(
        Prefixed::new(Bytes::new(), client),
        Prefixed::new(Bytes::new(), upstream),
        Protocol::Other,
        Duration::from_secs(60),
        ordered(stop),
    ));
    order.send(Stop::Cut).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("cut")
        .unwrap();
    assert!(!end.clean);
}

#[tokio::test]
async fn bytes_read_before_the_switch_go_first_and_count() {
    let (client, mut client_peer) = duplex(64);
    let (upstream, mut upstream_peer) = duplex(64);
    let (_order, stop) = oneshot::channel();
    // More than a pooled buffer holds on the client's side.
    let early = vec![5u8; 20_000];
    let relay = tokio::spawn(relay(
        Prefixed::new(Bytes::from(early.clone()), client),
        Prefixed::new(Bytes::from_static(b"hello"), upstream),
        Protocol::Other,
        Duration::from_secs(60),
        ordered(stop),
    ));
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        upstream_peer.write_all(b", world").await.unwrap();
        upstream_peer.shutdown().await.unwrap();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        got
    });
    client_peer.write_all(b"late").await.unwrap();
    client_peer.shutdown().await.unwrap();
    let mut down = Vec::new();
    client_peer.read_to_end(&mut down).await.unwrap();
    assert_eq!(down, b"hello, world");
    let mut expected = early;
    expected.extend_from_slice(b"late");
    assert_eq!(reader.await.unwrap(), expected);
    let end = relay.await.unwrap();
    assert!(end.clean);
    assert_eq!((end.up, end.down), (20_004, 12));
}
