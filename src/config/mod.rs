//! Configuration: the TOML schema, its validation, and the checked model it becomes.
//!
//! `load` and `parse` are the only ways to get a [`Config`]; both check the
//! whole file and report every problem with its line and column.

mod error;
pub mod model;
mod raw;
mod summary;
pub mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ConfigError, Diagnostic, DiagnosticKind};
pub use model::*;
pub use summary::summary;
pub(crate) use validate::line_column;

/// Reads and checks the config file at `path`.
///
/// Blocking: it reads the file and resolves server names, so async callers
/// (reload) should run it on a blocking thread.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Checks config `text`. `path` names the file in diagnostics and is the
/// base for relative certificate paths. Blocking, like [`load`], because
/// server names are resolved here.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        let (line, column) = validate::line_column(text, offset);
        ConfigError::Invalid(vec![Diagnostic {
            file: path.to_owned(),
            line,
            column,
            kind: syntax_kind(error.message()),
        }])
    })?;
    validate::validate(raw, text, path).map_err(ConfigError::Invalid)
}

/// Gives serde's messages for the two most common mistakes, a misspelt key
/// and a forgotten one, the typed kinds (and wording) the rest use.
fn syntax_kind(message: &str) -> DiagnosticKind {
    let unquote = |s: &str| s.trim().trim_matches('`').to_owned();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (key, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let expected = expected.strip_prefix("one of ").unwrap_or(expected);
        return DiagnosticKind::UnknownKey {
            key: unquote(key),
            expected: expected
                .replace(" or ", ",")
                .split(',')
                .map(unquote)
                .filter(|k| !k.is_empty())
                .collect(),
        };
    }
    if let Some(key) = message.strip_prefix("missing field ") {
        return DiagnosticKind::MissingKey { key: unquote(key) };
    }
    // toml puts "what" and "expected" on separate lines; a diagnostic is one.
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    DiagnosticKind::Syntax {
        message: lines.join(": "),
    }
}
