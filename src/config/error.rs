//! Configuration errors with their place in the source: file, line, column and key path.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one configuration file, rendered as `file:line:col: key.path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// Dotted key path such as `models.gpt-4o.aliases`; empty for whole-file problems.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            position: None,
            key: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A parsed file kept with its source so that later checks can point into it.
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    pub doc: toml_edit::Document<String>,
}

impl SourceFile {
    /// A stand-in for a file that could not be parsed.
    pub fn empty(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            text: String::new(),
            doc: toml_edit::Document::parse(String::new())
                .unwrap_or_else(|_| unreachable!("empty TOML parses")),
        }
    }

    /// An error at `key_path` (segments as written in the file); falls back to the
    /// nearest existing parent key, then to the whole file, when the key is absent.
    pub fn error_at(&self, key_path: &[&str], message: impl Into<String>) -> ConfigError {
        self.error_located(key_path, message, false)
    }

    /// Like [`Self::error_at`], pointing at the key rather than its value (for unknown keys).
    pub fn error_at_key(&self, key_path: &[&str], message: impl Into<String>) -> ConfigError {
        self.error_located(key_path, message, true)
    }

    fn error_located(
        &self,
        key_path: &[&str],
        message: impl Into<String>,
        at_key: bool,
    ) -> ConfigError {
        let span = locate(self.doc.as_table(), key_path, at_key);
        ConfigError {
            file: self.path.clone(),
            position: span.map(|s| line_col(&self.text, s.start)),
            key: key_path.join("."),
            message: message.into(),
        }
    }

    /// An error from serde, placed by its span and named by the deepest key enclosing it.
    pub fn error_from_de(&self, err: &toml_edit::de::Error) -> ConfigError {
        let (position, key) = match err.span() {
            Some(span) => {
                let mut path = Vec::new();
                key_path_at(self.doc.as_table(), span.start, &mut path);
                (Some(line_col(&self.text, span.start)), path.join("."))
            }
            None => (None, String::new()),
        };
        ConfigError {
            file: self.path.clone(),
            position,
            key,
            message: err.message().trim_end_matches('.').to_string(),
        }
    }
}

/// 1-based (line, column) of a byte offset; columns count characters, not bytes.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

fn locate(table: &toml_edit::Table, path: &[&str], at_key: bool) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    let (key, item) = table.get_key_value(first)?;
    if rest.is_empty() {
        return if at_key {
            key.span().or_else(|| item.span())
        } else {
            item.span().or_else(|| key.span())
        };
    }
    let deeper = match item {
        toml_edit::Item::Table(t) => locate(t, rest, at_key),
        toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => locate_inline(t, rest, at_key),
        toml_edit::Item::Value(toml_edit::Value::Array(a)) => rest
            .first()
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| a.get(i))
            .and_then(|v| v.span()),
        _ => None,
    };
    deeper.or_else(|| key.span())
}

fn locate_inline(
    table: &toml_edit::InlineTable,
    path: &[&str],
    at_key: bool,
) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    let (key, value) = table.get_key_value(first)?;
    if rest.is_empty() {
        return if at_key {
            key.span().or_else(|| value.span())
        } else {
            value.span().or_else(|| key.span())
        };
    }
    match value.as_value() {
        Some(toml_edit::Value::InlineTable(t)) => locate_inline(t, rest, at_key),
        _ => None,
    }
    .or_else(|| key.span())
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

/// Collects the keys, outermost first, whose key or value span holds `offset`.
fn key_path_at(table: &toml_edit::Table, offset: usize, path: &mut Vec<String>) {
    for (key, item) in table.iter() {
        let Some((k, _)) = table.get_key_value(key) else {
            continue;
        };
        let in_key = contains(k.span(), offset);
        let in_value = contains(item.span(), offset);
        match item {
            toml_edit::Item::Table(t) if t.contains_key_at(offset) || in_key || in_value => {
                path.push(key.to_string());
                key_path_at(t, offset, path);
                return;
            }
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) if in_key || in_value => {
                path.push(key.to_string());
                inline_key_path_at(t, offset, path);
                return;
            }
            _ if in_key || in_value => {
                path.push(key.to_string());
                return;
            }
            _ => {}
        }
    }
}

fn inline_key_path_at(table: &toml_edit::InlineTable, offset: usize, path: &mut Vec<String>) {
    for (key, value) in table.iter() {
        let Some((k, _)) = table.get_key_value(key) else {
            continue;
        };
        if contains(k.span(), offset) || contains(value.span(), offset) {
            path.push(key.to_string());
            if let toml_edit::Value::InlineTable(t) = value {
                inline_key_path_at(t, offset, path);
            }
            return;
        }
    }
}

trait ContainsKeyAt {
    fn contains_key_at(&self, offset: usize) -> bool;
}

impl ContainsKeyAt for toml_edit::Table {
    /// Standard tables have no span of their own covering their body, so look at children.
    fn contains_key_at(&self, offset: usize) -> bool {
        self.span()
            .is_some_and(|s| s.start <= offset && offset < s.end)
            || self.iter().any(|(key, item)| {
                self.get_key_value(key).is_some_and(|(k, _)| {
                    contains(k.span(), offset)
                        || contains(item.span(), offset)
                        || matches!(item, toml_edit::Item::Table(t) if t.contains_key_at(offset))
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        let x = text.find('"').unwrap_or(0);
        assert_eq!(line_col(text, x), (2, 6));
    }
}
