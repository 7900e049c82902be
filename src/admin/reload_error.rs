//! How a rejected reload reads over HTTP: a status and a JSON body naming
//! each problem with its place in the file.

use http::StatusCode;
use serde_json::{Value, json};

use crate::config::ConfigError;
use crate::reload::ReloadError;

/// The HTTP status `POST /api/reload` answers with: 422 for a file that
/// cannot be applied, 503 during shutdown, 500 for a bug.
pub fn status(err: &ReloadError) -> StatusCode {
    match err {
        ReloadError::Config(_) | ReloadError::Bind { .. } | ReloadError::Tls(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ReloadError::Load(_) | ReloadError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ReloadError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The body of a rejected `POST /api/reload`: the whole message, and
/// each problem as `{file, line, column, message}` (`line` and `column`
/// are null when the problem has no place in the file, e.g. it cannot be
/// read).
pub fn body(err: &ReloadError) -> Value {
    let diagnostics: Vec<Value> = match err {
        ReloadError::Config(err) if !err.diagnostics().is_empty() => err
            .diagnostics()
            .iter()
            .map(|d| {
                json!({
                    "file": d.file.display().to_string(),
                    "line": d.line,
                    "column": d.column,
                    "message": d.kind.to_string(),
                })
            })
            .collect(),
        ReloadError::Config(ConfigError::Read { path, source }) => vec![json!({
            "file": path.display().to_string(),
            "line": null,
            "column": null,
            "message": format!("cannot read the config file: {source}"),
        })],
        ReloadError::Tls(err) => vec![json!({
            "file": err.path().map(|p| p.display().to_string()),
            "line": null,
            "column": null,
            "message": err.to_string(),
        })],
        ReloadError::Config(_)
        | ReloadError::Load(_)
        | ReloadError::Server(_)
        | ReloadError::ShuttingDown => Vec::new(),
        ReloadError::Bind {
            file,
            at,
            addr,
            source,
        } => vec![json!({
            "file": file.display().to_string(),
            "line": at.map(|(line, _)| line),
            "column": at.map(|(_, column)| column),
            "message": format!("cannot listen on {addr}: {source}"),
        })],
    };
    json!({
        "error": err.to_string(),
        "diagnostics": diagnostics,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;

    #[test]
    fn a_bind_error_is_422_at_its_line() {
        let err = ReloadError::Bind {
            file: "sluice.toml".into(),
            at: Some((3, 10)),
            addr: "127.0.0.1:18080".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let body = body(&err);
        assert_eq!(body["diagnostics"][0]["line"], 3);
        assert_eq!(status(&err), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn invalid_file_lists_each_diagnostic() {
        let err = config::parse(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"nope\"\n",
            Path::new("s.toml"),
        )
        .expect_err("unknown upstream");
        let body = body(&ReloadError::Config(err));
        assert_eq!(body["diagnostics"][0]["file"], "s.toml");
        assert_eq!(body["diagnostics"][0]["line"], 3);
    }

    #[test]
    fn an_unknown_key_does_not_hide_the_other_problems() {
        let err = config::parse(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\ncolour = \"blue\"\nupstream = \"nope\"\n",
            Path::new("s.toml"),
        )
        .expect_err("unknown key and unknown upstream");
        let body = body(&ReloadError::Config(err));
        let at: Vec<_> = body["diagnostics"]
            .as_array()
            .expect("diagnostics")
            .iter()
            .map(|d| (d["line"].clone(), d["column"].clone()))
            .collect();
        assert_eq!(at, [(3.into(), 1.into()), (4.into(), 12.into())], "{body}");
    }
}
