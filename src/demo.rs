//! `sluice demo`: three backends on loopback and the proxy in front of them,
//! from an embedded config, so a newcomer sees balancing with one command.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::config::{self, Config, ConfigError};
use crate::server::{self, ServerError};

/// The embedded config; also `config/demo.toml`, checked by the tests.
pub const CONFIG: &str = include_str!("../config/demo.toml");

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the embedded demo config is invalid: {0}")]
    Config(#[from] ConfigError),
    #[error("demo backend cannot listen on {addr}: {source}")]
    Backend {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Server(#[from] ServerError),
}

pub fn config() -> Result<Config, ConfigError> {
    config::parse(CONFIG, Path::new("config/demo.toml"))
}

/// Starts the backends the config names, then runs the proxy until a signal.
pub async fn run(config: Config) -> Result<(), DemoError> {
    let servers: Vec<_> = config
        .upstreams
        .iter()
        .flat_map(|u| u.servers.iter())
        .map(|s| (s.address.clone(), s.addr))
        .collect();
    for (i, (_, addr)) in servers.iter().enumerate() {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DemoError::Backend {
                addr: *addr,
                source,
            })?;
        tokio::spawn(backend(listener, format!("backend-{}", i + 1), *addr));
    }
    let listen = config.listeners[0].listen;
    println!(
        "sluice demo: proxy on http://{listen}/ in front of {} backends",
        servers.len()
    );
    for (i, (address, _)) in servers.iter().enumerate() {
        println!("  backend-{} on {address}", i + 1);
    }
    if let Some(admin) = &config.admin {
        println!("  admin API and dashboard on http://{}/", admin.listen);
    }
    println!("Try: for i in $(seq 6); do curl -s http://{listen}/; done");
    println!("Stop with Ctrl-C.");
    server::run(config).await?;
    Ok(())
}

/// A tiny backend that names itself in every reply.
async fn backend(listener: TcpListener, name: String, addr: SocketAddr) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = format!(
                    "Hello from {name} ({addr}): {} {}\n",
                    req.method(),
                    req.uri()
                );
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(
                    "x-backend",
                    http::HeaderValue::from_str(&name)
                        .unwrap_or(http::HeaderValue::from_static("demo")),
                );
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
