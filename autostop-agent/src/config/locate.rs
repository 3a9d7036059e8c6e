//! Turns byte offsets reported by `toml` into 1-based line:column positions,
//! and finds which TOML field an offset belongs to, so that even syntax and
//! type errors from the deserialiser name a field path.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::LocatedError;

/// Builds [`LocatedError`]s for one document.
pub(crate) struct Locator<'a> {
    origin: &'a str,
    text: &'a str,
}

impl<'a> Locator<'a> {
    /// `origin` is the label shown in messages, `text` the whole document.
    pub(crate) fn new(origin: &'a str, text: &'a str) -> Self {
        Locator { origin, text }
    }

    /// 1-based (line, column) of a byte offset; columns count characters.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let offset = self.text.floor_char_boundary(offset);
        let before = self.text.get(..offset).unwrap_or_default();
        let line = before.matches('\n').count().saturating_add(1);
        let last_line = before.rsplit('\n').next().unwrap_or_default();
        let column = last_line.chars().count().saturating_add(1);
        (line, column)
    }

    /// An error located at the start of `span`.
    pub(crate) fn error(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> LocatedError {
        let (line, column) = self.position(span.start);
        LocatedError {
            origin: self.origin.to_string(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }

    /// Converts a `toml` deserialisation error, recovering the field path
    /// from the document structure since `toml` does not expose it.
    pub(crate) fn toml_error(&self, err: &toml::de::Error) -> LocatedError {
        let span = err.span().unwrap_or(0..0);
        let field = field_path_at(self.text, span.start);
        self.error(span, field, err.message().trim_end())
    }
}

/// One key/value (or array item) of the document, flattened.
struct Entry {
    path: String,
    depth: usize,
    key: Option<Range<usize>>,
    value: Range<usize>,
    is_table: bool,
}

fn contains(range: &Range<usize>, offset: usize) -> bool {
    range.contains(&offset) || (range.start == range.end && range.start == offset)
}

/// Best guess at the dotted field path an offset falls in: the deepest
/// key/value containing it; else a key earlier on the same line (syntax
/// errors in a value); else the table whose header precedes it.
pub(crate) fn field_path_at(text: &str, offset: usize) -> String {
    let (root, _) = DeTable::parse_recoverable(text);
    let mut entries = Vec::new();
    for (key, value) in root.get_ref().iter() {
        collect(
            value,
            key.get_ref().to_string(),
            1,
            Some(key.span()),
            &mut entries,
        );
    }
    let inside = entries
        .iter()
        .filter(|e| {
            contains(&e.value, offset) || e.key.as_ref().is_some_and(|k| contains(k, offset))
        })
        .max_by_key(|e| (e.depth, usize::MAX.saturating_sub(e.value.len())));
    if let Some(entry) = inside {
        return entry.path.clone();
    }
    let line_of = |o: usize| {
        text.get(..o.min(text.len()))
            .map_or(0, |s| s.matches('\n').count())
    };
    let same_line = entries
        .iter()
        .filter_map(|e| e.key.as_ref().map(|k| (k.start, e)))
        .filter(|(start, _)| *start <= offset && line_of(*start) == line_of(offset))
        .max_by_key(|(start, e)| (*start, e.depth));
    if let Some((_, entry)) = same_line {
        return entry.path.clone();
    }
    entries
        .iter()
        .filter(|e| e.is_table && e.value.start <= offset)
        .max_by_key(|e| (e.value.start, e.depth))
        .map(|e| e.path.clone())
        .unwrap_or_default()
}

fn collect(
    value: &Spanned<DeValue<'_>>,
    path: String,
    depth: usize,
    key: Option<Range<usize>>,
    out: &mut Vec<Entry>,
) {
    match value.get_ref() {
        DeValue::Table(table) => {
            for (k, v) in table.iter() {
                let child = format!("{path}.{}", k.get_ref());
                collect(v, child, depth.saturating_add(1), Some(k.span()), out);
            }
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(
                    item,
                    format!("{path}[{i}]"),
                    depth.saturating_add(1),
                    None,
                    out,
                );
            }
        }
        _ => {}
    }
    out.push(Entry {
        path,
        depth,
        key,
        value: value.span(),
        is_table: value.get_ref().is_table(),
    });
}
