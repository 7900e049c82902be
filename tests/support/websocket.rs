//! A WebSocket echo upstream and a client, for upgrade tunnels.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket server answering every text or binary message with the same
/// message, and noting the code of every Close frame it receives. Dropping
/// it stops accepting and closes every session.
pub struct WebSocketEcho {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    closes: Arc<Mutex<Vec<u16>>>,
    accept: JoinHandle<()>,
}

impl WebSocketEcho {
    pub async fn start() -> WebSocketEcho {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("websocket echo bind");
        let addr = listener.local_addr().expect("websocket echo addr");
        let open = Arc::new(AtomicUsize::new(0));
        let closes = Arc::new(Mutex::new(Vec::new()));
        let sessions = open.clone();
        let codes = closes.clone();
        let accept = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let sessions = sessions.clone();
                let codes = codes.clone();
                tasks.spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    sessions.fetch_add(1, Ordering::SeqCst);
                    while let Some(Ok(message)) = ws.next().await {
                        if let Message::Close(Some(frame)) = &message {
                            codes.lock().unwrap().push(u16::from(frame.code));
                        }
                        if (message.is_text() || message.is_binary())
                            && ws.send(message).await.is_err()
                        {
                            break;
                        }
                    }
                    sessions.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        WebSocketEcho {
            addr,
            open,
            closes,
            accept,
        }
    }

    /// The codes of the Close frames received so far, in order.
    pub fn close_codes(&self) -> Vec<u16> {
        self.closes.lock().unwrap().clone()
    }

    /// `"127.0.0.1:PORT"`, as a config `address` value.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Sessions open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for WebSocketEcho {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

pub type WsClient = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket session to `url` (`ws://host:port/path`).
pub async fn ws_connect(url: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
    tokio_tungstenite::connect_async(url)
        .await
        .map(|(ws, _)| ws)
}

/// Sends `text` and waits (10 s at most) for the next text message.
pub async fn ws_echo(ws: &mut WsClient, text: &str) -> Result<String, String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let exchange = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(reply))) => return Ok(reply.to_string()),
                Some(Ok(Message::Close(_))) | None => return Err("closed".to_owned()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("receive: {e}")),
            }
        }
    };
    tokio::time::timeout(ECHO_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no echo within {ECHO_TIMEOUT:?}"))?
}

/// How a session ended: the code of the peer's Close frame, the data
/// messages received before it, and when it came.
pub struct WsClosed {
    pub code: u16,
    pub messages: Vec<Message>,
    pub at: Instant,
}

/// Reads until the peer's Close frame (10 s at most) and answers it, as a
/// client does.
pub async fn ws_closed_with(ws: &mut WsClient) -> Result<WsClosed, String> {
    let mut messages = Vec::new();
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return Ok(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    messages.push(message)
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("receive: {e}")),
                None => return Err("the connection ended without a Close frame".to_owned()),
            }
        }
    };
    let code = tokio::time::timeout(ECHO_TIMEOUT, read)
        .await
        .map_err(|_| format!("no Close frame within {ECHO_TIMEOUT:?}"))??;
    let at = Instant::now();
    // Polling on sends the answering Close, until the proxy closes TCP.
    let _ = tokio::time::timeout(ECHO_TIMEOUT, async { while ws.next().await.is_some() {} }).await;
    Ok(WsClosed { code, messages, at })
}
