//! A WebSocket echo upstream and a client, for upgrade tunnels.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket server answering every text or binary message with the same
/// message. Dropping it stops accepting and closes every session.
pub struct WebSocketEcho {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl WebSocketEcho {
    pub async fn start() -> WebSocketEcho {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("websocket echo bind");
        let addr = listener.local_addr().expect("websocket echo addr");
        let open = Arc::new(AtomicUsize::new(0));
        let sessions = open.clone();
        let accept = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let sessions = sessions.clone();
                tasks.spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    sessions.fetch_add(1, Ordering::SeqCst);
                    while let Some(Ok(message)) = ws.next().await {
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
        WebSocketEcho { addr, open, accept }
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
