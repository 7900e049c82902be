//! Logs to stderr through `tracing`: `RUST_LOG` wins over `[log] level`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

use crate::config::{Log, LogFormat};

/// The access log's own level, whatever `[log] level` says of the rest:
/// like nginx's access log beside its error log, it is switched by
/// `access_log`, not filtered away by `level = "warn"`.
const ACCESS: &str = "sluice::access=info";

pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| from_config(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already initialised (tests, `demo` after a run): keep the first.
    let _ = result;
}

/// The filter `[log] level` asks for, the access log kept at its level.
fn from_config(level: &str) -> EnvFilter {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    match ACCESS.parse::<Directive>() {
        Ok(access) => filter.add_directive(access),
        Err(_) => filter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quieter_level_keeps_the_access_log() {
        let filter = from_config("warn").to_string();
        assert!(filter.contains("sluice::access=info"), "{filter}");
        assert!(filter.contains("warn"), "{filter}");
    }
}
