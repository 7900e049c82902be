//! Reads config text into the raw schema, reporting every key the schema
//! rejects (unknown, or of the wrong type), not only the first.
//!
//! serde stops at the first rejected key. So the text is parsed once into a
//! document that keeps the span of every key and value; each time serde
//! rejects something, the item its error points at is reported, taken out of
//! the document, and the rest is deserialized again, until the schema accepts
//! what is left and validation can check its values. Required keys are
//! optional to the schema, so that validation reports one missing at its
//! table and still checks the table's other values; a table serde itself
//! finds lacking a key would go whole. A syntax error stays a single error:
//! the parser cannot say where the next sound key starts.

use std::ops::Range;
use std::path::Path;

use toml_edit::{DocumentMut, ImDocument, Item, TableLike, Value};

use super::error::{Diagnostic, DiagnosticKind};
use super::raw::RawConfig;
use super::validate::line_column;

/// Enough for any file a person wrote by hand; past it, more of the same
/// would not help, and each round deserializes the whole document again.
const MAX_REJECTED: usize = 50;

/// What the schema made of the text.
pub struct Schema {
    /// `None` when the schema never accepted the rest of the document: an
    /// error that points at nothing to take out, or too many errors.
    pub raw: Option<RawConfig>,
    /// Each rejected key, in the order serde met them.
    pub diagnostics: Vec<Diagnostic>,
    pub removed: Removed,
}

/// Every item taken out of the document, so that validation does not report
/// what is missing only because it was taken out (an upstream whose only
/// server was rejected has servers, in the file).
#[derive(Default)]
pub struct Removed(Vec<Removal>);

impl Removed {
    /// Whether anything at this key path (table names, no array indices) was
    /// taken out: `["upstream", "web", "server"]` for a server of `web`.
    pub fn contains(&self, path: &[&str]) -> bool {
        self.0.iter().any(|removal| removal.path == path)
    }

    /// Whether `key` was taken out of the table `table` points at (as a
    /// "missing field" error points at it).
    pub fn took_key(&self, table: &Range<usize>, key: &str) -> bool {
        self.0.iter().any(|removal| {
            removal.table.as_ref() == Some(table)
                && removal.path.last().map(String::as_str) == Some(key)
        })
    }
}

struct Removal {
    /// The key path of the item, without array indices.
    path: Vec<String>,
    /// Where the table the key was taken from is, as serde's errors point at
    /// it; `None` when the item was an entry of an array.
    table: Option<Range<usize>>,
}

/// Parses `text` (read from `file`) and deserializes it; `Err` is a syntax
/// error.
pub fn deserialize(text: &str, file: &Path) -> Result<Schema, Diagnostic> {
    let diagnostic = |span: Option<Range<usize>>, kind| {
        let (line, column) = line_column(text, span.map_or(0, |span| span.start));
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            kind,
        }
    };
    let mut document = ImDocument::parse(text)
        .map_err(|error| diagnostic(error.span(), diagnostic_kind(error.message())))?
        .into_table();
    let mut diagnostics = Vec::new();
    let mut removed = Removed::default();
    loop {
        let error =
            match toml_edit::de::from_document::<RawConfig>(DocumentMut::from(document.clone())) {
                Ok(raw) => {
                    return Ok(Schema {
                        raw: Some(raw),
                        diagnostics,
                        removed,
                    });
                }
                Err(_) if diagnostics.len() == MAX_REJECTED => break,
                Err(error) => error,
            };
        let kind = diagnostic_kind(error.message());
        let span = error.span();
        // A required key whose value was rejected is missing now; the
        // rejection already said what is wrong with it.
        let repeated = matches!(
            (&kind, &span),
            (DiagnosticKind::MissingKey { key }, Some(table)) if removed.took_key(table, key)
        );
        let removal = span
            .as_ref()
            .and_then(|span| take(&mut document, None, span));
        if !repeated {
            diagnostics.push(diagnostic(span, kind));
        }
        match removal {
            Some(removal) => removed.0.push(removal),
            None => break,
        }
    }
    Ok(Schema {
        raw: None,
        diagnostics,
        removed,
    })
}

/// Takes the innermost item of `table` that `span` points at out of it: an
/// unknown key, a value of the wrong type with its key (a whole array, not
/// the entry, so no shorter list stands in for it), or a table missing a
/// required key. `identity` is where serde's errors point for `table` itself.
fn take(
    table: &mut dyn TableLike,
    identity: Option<Range<usize>>,
    span: &Range<usize>,
) -> Option<Removal> {
    let names: Vec<String> = table.iter().map(|(name, _)| name.to_owned()).collect();
    for name in names {
        let (key, item) = table.get_key_value(&name)?;
        let key_span = key.span();
        let item_span = item.span();
        // A value's error may point into it (at an entry of an array); a
        // table's points at the whole table, whose span may enclose others.
        let points_here = key_span.as_ref() == Some(span)
            || item_span.as_ref() == Some(span)
            || (item.is_value() && item_span.as_ref().is_some_and(|v| v.contains(&span.start)));
        // A table reached through a dotted key has no span of its own:
        // serde's errors point at its key instead.
        let own_identity = item_span.or(key_span);
        let inner = table
            .get_mut(&name)
            .and_then(|item| take_within(item, own_identity, span));
        let mut removal = match inner {
            Some(removal) => removal,
            None if points_here => {
                table.remove(&name);
                Removal {
                    path: Vec::new(),
                    table: identity,
                }
            }
            None => continue,
        };
        removal.path.insert(0, name);
        return Some(removal);
    }
    None
}

/// [`take`] for what lies under `item`: the keys of a table, or the tables
/// of an array, each taken out whole when the error points at it.
fn take_within(
    item: &mut Item,
    identity: Option<Range<usize>>,
    span: &Range<usize>,
) -> Option<Removal> {
    match item {
        Item::Table(table) => take(table, identity, span),
        Item::Value(Value::InlineTable(table)) => take(table, identity, span),
        Item::ArrayOfTables(tables) => {
            for index in 0..tables.len() {
                let table = tables.get_mut(index)?;
                let identity = table.span();
                if identity.as_ref() == Some(span) {
                    tables.remove(index);
                    return Some(entry());
                }
                if let Some(removal) = take(table, identity, span) {
                    return Some(removal);
                }
            }
            None
        }
        Item::Value(Value::Array(values)) => {
            for index in 0..values.len() {
                let Some(Value::InlineTable(table)) = values.get_mut(index) else {
                    continue;
                };
                let identity = table.span();
                if identity.as_ref() == Some(span) {
                    values.remove(index);
                    return Some(entry());
                }
                if let Some(removal) = take(table, identity, span) {
                    return Some(removal);
                }
            }
            None
        }
        Item::None | Item::Value(_) => None,
    }
}

/// A table taken out of an array; its key path is its array's.
fn entry() -> Removal {
    Removal {
        path: Vec::new(),
        table: None,
    }
}

/// Gives serde's messages for the two most common mistakes, a misspelt key
/// and a forgotten one, the typed kinds (and wording) the rest use.
fn diagnostic_kind(message: &str) -> DiagnosticKind {
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
