//! `sluice demo`: stateful backends on loopback and the proxy in front of
//! them, from an embedded config, so a newcomer sees with one command why a
//! balancer cares about state: sticky sessions, a disable or a drain that
//! moves users, a crash that loses their sessions.
//!
//! The backends are in [`backend`]; the steps printed at start-up, with the
//! exact commands, in [`story`].

pub mod backend;
pub mod story;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU16;
use std::path::Path;

use crate::app::{self, AppError};
use crate::config::{self, Admin, Config, ConfigError};

/// The embedded config; also `config/demo.toml`, checked by the tests.
pub const CONFIG: &str = include_str!("../../config/demo.toml");

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
    #[error("{count} backends from port {first} run past port 65535")]
    Ports { first: u16, count: u16 },
    #[error(transparent)]
    App(#[from] AppError),
}

/// What the command line may change in the embedded config.
#[derive(Debug, Clone)]
pub struct Options {
    /// The proxy's listener.
    pub listen: SocketAddr,
    /// The admin API and dashboard.
    pub admin: SocketAddr,
    /// The admin token; one is made up when `admin` is not loopback.
    pub token: Option<String>,
    pub backends: NonZeroU16,
    /// The first backend's port, the others follow; 0 lets the system
    /// choose each (tests run several demos side by side).
    pub backend_port: u16,
    /// Where the backends listen; 0.0.0.0 makes them reachable from other
    /// machines (`backends_only`, for a tier of proxies in front).
    pub backend_host: IpAddr,
    /// Run only the backends, no proxy.
    pub backends_only: bool,
}

impl Default for Options {
    /// The addresses of `config/demo.toml`.
    fn default() -> Self {
        Options {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, 9900)),
            token: None,
            backends: NonZeroU16::MIN.saturating_add(2),
            backend_port: 9101,
            backend_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            backends_only: false,
        }
    }
}

/// A demo ready to run: its backends bound, its config final.
pub struct Demo {
    pub config: Config,
    backends: Vec<Backend>,
    backends_only: bool,
    /// True when the token was made up here: the story says so.
    token_generated: bool,
}

/// One backend's name, its bound socket, and the address the proxy and the
/// story use for it.
struct Backend {
    name: String,
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

/// The embedded config, unchanged (what `config/demo.toml` says).
pub fn config() -> Result<Config, ConfigError> {
    config::parse(CONFIG, Path::new("config/demo.toml"))
}

impl Demo {
    /// Binds the backends (so their ports are known, even when chosen by the
    /// system) and writes their addresses and the listeners into the config.
    pub fn prepare(options: Options) -> Result<Demo, DemoError> {
        let mut config = config()?;
        let count = options.backends.get();
        let mut backends = Vec::with_capacity(usize::from(count));
        for i in 0..count {
            let port = match options.backend_port {
                0 => 0,
                first => first
                    .checked_add(i)
                    .ok_or(DemoError::Ports { first, count })?,
            };
            let addr = SocketAddr::new(options.backend_host, port);
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| DemoError::Backend { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| DemoError::Backend { addr, source })?;
            backends.push(Backend {
                name: format!("backend-{}", i + 1),
                listener,
                addr: reachable(bound),
            });
        }

        config.listeners[0].listen = options.listen;
        let needs_token = !config::canonical(options.admin.ip()).is_loopback();
        let token_generated = needs_token && options.token.is_none();
        let token = match options.token {
            Some(token) => Some(token),
            None if needs_token => Some(new_token()),
            None => None,
        };
        config.admin = Some(Admin {
            listen: options.admin,
            token,
        });
        for upstream in &mut config.upstreams {
            let template = upstream.servers[0].clone();
            upstream.servers = backends
                .iter()
                .map(|b| {
                    let mut server = template.clone();
                    server.address = b.addr.to_string();
                    server.addr = b.addr;
                    server
                })
                .collect();
        }
        Ok(Demo {
            config,
            backends,
            backends_only: options.backends_only,
            token_generated,
        })
    }

    /// Starts the backends, prints the story, and runs the proxy on
    /// `workers` (or, with `backends_only`, just the backends) until a
    /// signal.
    pub async fn run(self, workers: crate::workers::Workers) -> Result<(), DemoError> {
        let mut addresses = Vec::with_capacity(self.backends.len());
        for backend in self.backends {
            let addr = backend.addr;
            let listener = tokio::net::TcpListener::from_std(backend.listener)
                .map_err(|source| DemoError::Backend { addr, source })?;
            addresses.push((backend.name.clone(), backend.addr));
            tokio::spawn(backend::run(listener, backend.name));
        }
        let story = story::Story {
            config: &self.config,
            backends: &addresses,
            token_generated: self.token_generated,
        };
        if self.backends_only {
            print!("{}", story.backends_only());
            app::wait_for_stop().await;
            return Ok(());
        }
        print!("{story}");
        app::run(self.config, workers).await?;
        Ok(())
    }
}

/// The address to reach a socket bound to `addr`: an unspecified address
/// (0.0.0.0, ::) is reached on loopback.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// 128 random bits as hex: an admin token nobody can guess.
fn new_token() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_options() -> Options {
        Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            backend_port: 0,
            ..Options::default()
        }
    }

    #[test]
    fn the_embedded_config_is_sticky_and_checked() {
        let config = config().unwrap();
        let upstream = &config.upstreams[0];
        assert!(upstream.sticky.is_some());
        assert!(upstream.health_check.is_some());
        assert_eq!(upstream.servers.len(), 3);
    }

    #[test]
    fn backends_option_sets_the_servers_and_their_bound_ports() {
        let demo = Demo::prepare(Options {
            backends: NonZeroU16::new(5).unwrap(),
            ..loopback_options()
        })
        .unwrap();
        let servers = &demo.config.upstreams[0].servers;
        assert_eq!(servers.len(), 5);
        for (server, backend) in servers.iter().zip(&demo.backends) {
            assert_eq!(server.addr, backend.listener.local_addr().unwrap());
            assert_ne!(server.addr.port(), 0);
        }
        assert!(demo.config.admin.as_ref().unwrap().token.is_none());
        assert!(!demo.token_generated);
    }

    #[test]
    fn a_public_admin_listener_gets_a_token() {
        let demo = Demo::prepare(Options {
            admin: "0.0.0.0:0".parse().unwrap(),
            ..loopback_options()
        })
        .unwrap();
        let token = demo.config.admin.as_ref().unwrap().token.clone().unwrap();
        assert_eq!(token.len(), 32);
        assert!(demo.token_generated);

        let given = Demo::prepare(Options {
            admin: "0.0.0.0:0".parse().unwrap(),
            token: Some("letmein".to_owned()),
            ..loopback_options()
        })
        .unwrap();
        assert_eq!(
            given.config.admin.unwrap().token.as_deref(),
            Some("letmein")
        );
        assert!(!given.token_generated);
    }

    #[test]
    fn backends_bound_to_every_address_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9101".parse().unwrap()),
            "127.0.0.1:9101".parse().unwrap()
        );
        assert_eq!(
            reachable("[::]:9101".parse().unwrap()),
            "[::1]:9101".parse().unwrap()
        );
        assert_eq!(
            reachable("10.1.2.3:9101".parse().unwrap()),
            "10.1.2.3:9101".parse().unwrap()
        );
    }
}
