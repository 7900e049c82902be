//! Configuration: the TOML schema, its validation, and the checked model it becomes.
//!
//! `load` and `parse` are the only ways to get a [`Config`]; both check the
//! whole file and report every problem with its line and column.

mod deserialize;
mod error;
mod files;
pub mod model;
mod raw;
mod summary;
pub mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ConfigError, Diagnostic, DiagnosticKind};
pub use files::place;
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
    parse_with_files(&text, path)
}

/// [`parse`], and every certificate, key and CA file the text names opened
/// for reading: one that cannot be is reported where it is named, with the
/// file's other problems.
pub fn parse_with_files(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let unreadable = files::unreadable(text, path);
    match parse(text, path) {
        Ok(config) if unreadable.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError::Invalid(unreadable)),
        // A syntax error stands alone, and then no file key was read.
        Err(ConfigError::Invalid(mut diagnostics)) => {
            diagnostics.extend(unreadable);
            diagnostics.sort_by_key(|d| (d.line, d.column));
            Err(ConfigError::Invalid(diagnostics))
        }
        Err(err) => Err(err),
    }
}

/// Checks config `text`. `path` names the file in diagnostics and is the
/// base for relative certificate paths. Blocking, like [`load`], because
/// server names are resolved here.
///
/// Every unknown key, wrongly typed value and bad value is reported, in file
/// order; a syntax error alone, since nothing after it can be trusted.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let schema = deserialize::deserialize(text, path)
        .map_err(|syntax| ConfigError::Invalid(vec![syntax]))?;
    let mut diagnostics = schema.diagnostics;
    if let Some(raw) = schema.raw {
        match validate::validate(raw, text, path, &schema.removed) {
            Ok(config) if diagnostics.is_empty() => return Ok(config),
            Ok(_) => {}
            Err(invalid) => diagnostics.extend(invalid),
        }
    }
    diagnostics.sort_by_key(|d| (d.line, d.column));
    Err(ConfigError::Invalid(diagnostics))
}
