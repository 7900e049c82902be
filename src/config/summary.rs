//! What `sluice check` prints for a valid file: one screen that lets the user
//! confirm sluice understood the file the way they meant it.

use std::fmt;

use super::model::Config;

/// Listeners, upstreams with their servers, the admin listener, and the
/// configured features that do not work yet.
pub fn summary(cfg: &Config) -> String {
    Summary(cfg).to_string()
}

struct Summary<'a>(&'a Config);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cfg = self.0;
        writeln!(f, "{}: ok", cfg.path.display())?;
        writeln!(f, "listeners:")?;
        for listener in &cfg.listeners {
            let routes = listener.routes.len();
            writeln!(
                f,
                "  {} on {}{}, {routes} route{}, default upstream: {}",
                listener.name,
                listener.listen,
                if listener.tls.is_some() { " (tls)" } else { "" },
                if routes == 1 { "" } else { "s" },
                listener.upstream.as_deref().unwrap_or("none (404)"),
            )?;
        }
        writeln!(f, "upstreams:")?;
        for upstream in &cfg.upstreams {
            writeln!(f, "  {} ({})", upstream.name, upstream.balance.as_str())?;
            for server in &upstream.servers {
                write!(f, "    {} weight {}", server.address, server.weight)?;
                let flags = [
                    ("backup", server.backup),
                    ("down", server.down),
                    ("drain", server.drain),
                ];
                for (flag, _) in flags.iter().filter(|(_, on)| *on) {
                    write!(f, " {flag}")?;
                }
                writeln!(f)?;
            }
        }
        match &cfg.admin {
            Some(admin) => {
                let auth = if admin.token.is_some() {
                    "token required"
                } else {
                    "no token"
                };
                writeln!(f, "admin: {} ({auth})", admin.listen)?;
            }
            None => writeln!(f, "admin: off")?,
        }
        if let Some(cluster) = &cfg.cluster {
            // The address only: the URL may carry a password.
            writeln!(
                f,
                "cluster: redis {}, key prefix \"{}\", heartbeat {:?}",
                cluster.redis.info.addr(),
                cluster.key_prefix,
                cluster.heartbeat
            )?;
        }
        Ok(())
    }
}
