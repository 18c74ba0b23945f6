//! Input and output formats for histories: JSON lines ([`jsonl`]) and Jepsen EDN ([`edn`]).
//!
//! Both parsers are all-or-nothing: they return a validated [`History`] or the first error,
//! naming its line; there is no partial history. Both drop nemesis events (a process that
//! is not a non-negative integer, e.g. `:nemesis`, `"nemesis"` or nil) before validation.
//! Both writers emit one event per line, so an event's line is its 1-based position.

pub mod edn;
pub mod jsonl;

use std::path::Path;

use crate::history::{History, HistoryError};

/// Why an input could not be read as a history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text is not valid JSON / EDN, or an event lacks a field or has a wrong type.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The events parse but do not form a valid history.
    #[error(transparent)]
    History(#[from] HistoryError),
}

impl ParseError {
    /// The 1-based line the error is about.
    pub fn line(&self) -> usize {
        match self {
            ParseError::Syntax { line, .. } => *line,
            ParseError::History(e) => e.line(),
        }
    }

    pub(crate) fn syntax(line: usize, message: impl Into<String>) -> Self {
        ParseError::Syntax { line, message: message.into() }
    }
}

/// A history file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Jepsen / Knossos EDN: a vector of maps or one map per line.
    Edn,
}

impl Format {
    /// The format a file name implies (`.jsonl`, `.json`, `.ndjson`, `.edn`), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            "edn" => Some(Format::Edn),
            _ => None,
        }
    }

    /// Guesses the format from the first meaningful character: `{"` is JSON, any other `{`,
    /// `[`, `(`, `#` or `;` is EDN. Empty input counts as JSON lines.
    pub fn sniff(input: &str) -> Format {
        let mut chars = input.trim_start().chars();
        match chars.next() {
            Some('{') => match chars.find(|c| !c.is_whitespace()) {
                Some('"') | Some('}') => Format::Jsonl,
                _ => Format::Edn,
            },
            Some('[' | '(' | '#' | ';') => Format::Edn,
            _ => Format::Jsonl,
        }
    }
}

/// Parses `input` in `format`.
pub fn parse_history(input: &str, format: Format) -> Result<History, ParseError> {
    match format {
        Format::Jsonl => jsonl::parse_jsonl(input),
        Format::Edn => edn::parse_edn(input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_json_from_edn() {
        assert_eq!(Format::sniff("{\"process\":0}"), Format::Jsonl);
        assert_eq!(Format::sniff("  {:process 0}"), Format::Edn);
        assert_eq!(Format::sniff("[{:process 0}]"), Format::Edn);
        assert_eq!(Format::sniff("; comment\n{:process 0}"), Format::Edn);
        assert_eq!(Format::sniff(""), Format::Jsonl);
    }

    #[test]
    fn extension_decides_the_format() {
        assert_eq!(Format::from_path(Path::new("h.edn")), Some(Format::Edn));
        assert_eq!(Format::from_path(Path::new("h.jsonl")), Some(Format::Jsonl));
        assert_eq!(Format::from_path(Path::new("history")), None);
    }
}
