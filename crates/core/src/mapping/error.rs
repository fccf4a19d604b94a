//! Errors of the mapping file. Each problem names the file, the line and
//! column of the offending key or value, and the dotted key, so that
//! `scim2ldap check` and a refused SIGHUP reload tell the administrator
//! exactly what to edit.

use std::fmt;
use std::ops::Range;

/// One thing wrong with the mapping file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based; 0 when the problem has no position (an empty file).
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted TOML key, e.g. `user.attributes.mail.transform`; empty when
    /// the TOML itself is malformed and no key applies.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// The mapping file did not validate. Holds every problem found (at least
/// one), in file order, so one `check` run reports them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MappingError {
    problems: Vec<Problem>,
}

impl MappingError {
    pub(crate) fn new(mut problems: Vec<Problem>) -> Self {
        problems.sort_by_key(|p| (p.line, p.column));
        MappingError { problems }
    }

    /// Every problem, in file order; never empty.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The first problem in file order.
    pub fn first(&self) -> Option<&Problem> {
        self.problems.first()
    }
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            p.fmt(f)?;
        }
        Ok(())
    }
}

/// Collects problems while the raw file is validated.
pub(crate) struct Problems<'a> {
    text: &'a str,
    file: &'a str,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(text: &'a str, file: &'a str) -> Self {
        Problems {
            text,
            file,
            list: Vec::new(),
        }
    }

    pub(crate) fn add(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = line_col(self.text, span.start);
        self.list.push(Problem {
            file: self.file.to_string(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn into_error(self) -> MappingError {
        MappingError::new(self.list)
    }
}

/// 1-based line and column (in characters) of a byte offset; offsets past
/// the end or inside a character are clamped instead of panicking.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Turns the toml crate's error into a problem. The crate keeps the key
/// path private but prints it as a last line "in `a.b`" when it has no
/// input to quote, so the input is dropped and that line read back; for an
/// unknown or missing field the field itself ends the key.
pub(crate) fn from_toml(text: &str, file: &str, mut err: toml::de::Error) -> MappingError {
    let span = err.span().unwrap_or(0..0);
    let message = err.message().trim_end().to_string();
    err.set_input(None);
    let shown = err.to_string();
    let mut key = shown
        .lines()
        .filter_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')))
        .next_back()
        .unwrap_or_default()
        .to_string();
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some(end) = rest.find('`') {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(&rest[..end]);
            }
        }
    }
    let mut problems = Problems::new(text, file);
    problems.add(span, key, message);
    problems.into_error()
}
