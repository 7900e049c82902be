//! The certificate, key and CA files a config names, found by the places of
//! their keys in the text. A file that cannot be opened is reported where it
//! is named, beside the config's other problems; a certificate that opens
//! but cannot be used (found later, by `tls::load`) is placed the same way.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Diagnostic, DiagnosticKind, validate::line_column};

/// What a named file is for, as its messages say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    Certificate,
    PrivateKey,
    CaBundle,
}

impl FileRole {
    fn noun(self) -> &'static str {
        match self {
            FileRole::Certificate => "certificate file",
            FileRole::PrivateKey => "private key file",
            FileRole::CaBundle => "CA bundle",
        }
    }
}

/// One file key: the file (relative paths from the config's directory, as
/// the model has them), the span of its value and what it is for.
struct Named {
    path: PathBuf,
    span: Range<usize>,
    role: FileRole,
    /// Which table named it: a certificate and its key share one.
    table: usize,
}

/// Just the file keys of the schema; every other key is ignored here (the
/// full check reports them).
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    listener: Vec<Listener>,
    #[serde(default)]
    upstream: BTreeMap<String, Upstream>,
}

#[derive(Deserialize)]
struct Listener {
    tls: Option<Tls>,
}

#[derive(Deserialize)]
struct Tls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    sni: Vec<Sni>,
}

#[derive(Deserialize)]
struct Sni {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct Upstream {
    ca: Option<Spanned<String>>,
}

/// Every file key of `text` with a non-empty value, in file order; none when
/// the text or one of these keys does not parse (the full check says why).
fn named(text: &str, config: &Path) -> Vec<Named> {
    let Ok(file) = toml::from_str::<File>(text) else {
        return Vec::new();
    };
    let dir = config.parent().unwrap_or(Path::new(""));
    let mut keys = Vec::new();
    let mut add = |value: Option<Spanned<String>>, role, table| {
        if let Some(value) = value.filter(|v| !v.get_ref().is_empty()) {
            keys.push(Named {
                path: dir.join(value.get_ref()),
                span: value.span(),
                role,
                table,
            });
        }
    };
    let mut table = 0;
    for tls in file.listener.into_iter().filter_map(|l| l.tls) {
        table += 1;
        add(tls.cert, FileRole::Certificate, table);
        add(tls.key, FileRole::PrivateKey, table);
        for sni in tls.sni {
            table += 1;
            add(sni.cert, FileRole::Certificate, table);
            add(sni.key, FileRole::PrivateKey, table);
        }
    }
    for upstream in file.upstream.into_values() {
        table += 1;
        add(upstream.ca, FileRole::CaBundle, table);
    }
    keys.sort_by_key(|k| k.span.start);
    keys
}

/// A diagnostic for every named file that cannot be opened for reading.
pub(super) fn unreadable(text: &str, config: &Path) -> Vec<Diagnostic> {
    named(text, config)
        .into_iter()
        .filter_map(|named| {
            let reason = std::fs::File::open(&named.path).err()?;
            let (line, column) = line_column(text, named.span.start);
            Some(Diagnostic {
                file: config.to_owned(),
                line,
                column,
                kind: DiagnosticKind::UnreadableFile {
                    what: named.role.noun(),
                    path: named.path,
                    reason: reason.to_string(),
                },
            })
        })
        .collect()
}

/// `message` about `file` as a diagnostic at the first key of `text` that
/// names it (in a table that also names `paired`, for a key that does not
/// match its certificate), if one does.
pub fn place(
    text: &str,
    config: &Path,
    file: &Path,
    paired: Option<&Path>,
    message: String,
) -> Option<Diagnostic> {
    let keys = named(text, config);
    let in_pair = |n: &Named| {
        paired.is_none_or(|paired| {
            keys.iter()
                .any(|other| other.table == n.table && other.path == paired)
        })
    };
    let named = keys.iter().find(|n| n.path == file && in_pair(n))?;
    let (line, column) = line_column(text, named.span.start);
    Some(Diagnostic {
        file: config.to_owned(),
        line,
        column,
        kind: DiagnosticKind::UnusableFile { message },
    })
}
