//! Applying a config: read and check the file and its certificates on a
//! blocking thread, bind every new listener, and only then stop removed
//! listeners, install certificates and swap the snapshot.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::{ReloadError, ReloadReport};
use crate::config::{self, Config, ConfigError};
use crate::health;
use crate::server::{self, Server, ServerError};
use crate::tls::{self, Certs};

/// Reads the server's config file again and applies it, or changes nothing.
pub(super) async fn apply(server: &Arc<Server>) -> Result<ReloadReport, ReloadError> {
    if server.is_shutting_down() {
        return Err(ReloadError::ShuttingDown);
    }
    let old = server.shared.load();
    let path = old.config.path.clone();
    let (text, config, mut certs) = tokio::task::spawn_blocking(move || read(&path))
        .await
        .map_err(ReloadError::Load)??;

    // Bind before anything changes: a listener that cannot bind rejects the
    // whole reload. The sockets bound so far close when `bound` drops.
    let listening = server.listening();
    let mut bound = Vec::new();
    for listener in &config.listeners {
        if listening.contains(&listener.listen) {
            continue;
        }
        match server::bind(listener.listen, server.workers.count()).await {
            Ok(socket) => bound.push((listener.listen, socket)),
            Err(ServerError::Bind { addr, source }) => {
                return Err(ReloadError::Bind {
                    at: listen_position(&text, addr),
                    file: config.path.clone(),
                    addr,
                    source,
                });
            }
            Err(other) => return Err(ReloadError::Server(other)),
        }
    }

    let mut report = ReloadReport::between(&old.config, &config);
    let kept: HashSet<SocketAddr> = config.listeners.iter().map(|l| l.listen).collect();
    // Stop removed listeners first, so a connection they accept at the last
    // moment still finds its listener in the snapshot it loads.
    for addr in listening.into_iter().filter(|a| !kept.contains(a)) {
        server.stop_listener(addr);
    }
    // Certificates first: a new TLS listener must never answer in plaintext,
    // and renewed certificates apply even when the config text is unchanged.
    let upstream_tls = std::mem::take(&mut certs.upstreams);
    report.certificates_renewed = server
        .apply_tls(certs)?
        .iter()
        .map(SocketAddr::to_string)
        .collect();
    server.shared.swap(config, upstream_tls);
    // Building and swapping a snapshot start nothing: the checks its new
    // servers need are started here, by the one who swapped.
    health::start(&server.shared);
    for (addr, socket) in bound {
        server.serve(addr, socket);
    }
    Ok(report)
}

/// Reads and checks the file and loads every certificate it names, keeping
/// its text to place bind errors.
fn read(path: &Path) -> Result<(String, Config, Certs), ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config = config::parse_with_files(&text, path)?;
    let certs = tls::load(&config).map_err(|err| match err.placed(&text, path) {
        Some(placed) => ReloadError::Config(ConfigError::Invalid(vec![placed])),
        None => ReloadError::Tls(err),
    })?;
    Ok((text, config, certs))
}

/// Line and column of the `listen` value of the `[[listener]]` on `addr`.
fn listen_position(text: &str, addr: SocketAddr) -> Option<(usize, usize)> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        listener: Vec<Listener>,
    }
    #[derive(serde::Deserialize)]
    struct Listener {
        listen: toml::Spanned<String>,
    }
    let file: File = toml::from_str(text).ok()?;
    let listen = file
        .listener
        .into_iter()
        .find(|l| l.listen.get_ref().parse::<SocketAddr>() == Ok(addr))?;
    Some(config::line_column(text, listen.listen.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::reload::TEST_CONFIG as BASE;

    #[test]
    fn bind_error_points_at_the_listen_line() {
        let addr: SocketAddr = "127.0.0.1:18080".parse().unwrap();
        assert_eq!(listen_position(BASE, addr), Some((3, 10)));
        let err = ReloadError::Bind {
            file: "sluice.toml".into(),
            at: Some((3, 10)),
            addr,
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert!(
            err.to_string()
                .starts_with("sluice.toml:3:10: cannot listen on 127.0.0.1:18080")
        );
    }
}
