//! The config module's behaviour as a user meets it: files that parse into
//! the model, and files that fail with every problem at its line and column.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

mod diagnostics;
mod model;
mod values;

const MINIMAL: &str = r#"
[[listener]]
listen = "127.0.0.1:8080"
upstream = "web"

[upstream.web]
[[upstream.web.server]]
address = "127.0.0.1:9001"
"#;

fn parse_ok(text: &str) -> Config {
    parse(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("expected a valid config:\n{e}"))
}

/// Every diagnostic as `LINE:COL: message`.
fn errors(text: &str) -> Vec<String> {
    let error = parse(text, Path::new("test.toml")).expect_err("expected an invalid config");
    error
        .diagnostics()
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.kind))
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
