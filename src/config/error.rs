//! Configuration errors: every one names the file, the line and the key at
//! fault; [`Report`] gathers them while a configuration is read and checked,
//! and hands them back in source order.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::raw::Origin;

/// What errors from command-line flags name as their file.
pub(crate) const COMMAND_LINE: &str = "<command line>";

/// One problem found in a configuration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in (`<command line>` for quick mode).
    pub file: PathBuf,
    /// 1-based line of the offending key or value, when it is known.
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `pool[0].servers[1].addr`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": key `{}`: {}", self.key, self.message)
        }
    }
}

/// Every problem found while loading one configuration, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Maps byte offsets in a source text to 1-based line numbers.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub(crate) fn line_of(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

/// How far an error can be trusted once the source has a syntax error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The source itself is broken from this offset on (a syntax error, or
    /// no source at all): past it, the parser's recovered tree may not say
    /// what the operator meant.
    Broken(usize),
    /// Depends only on the text up to this offset.
    Upto(usize),
    /// Depends on the whole source (a reference to a pool defined anywhere,
    /// a key that may come later in its table).
    Whole,
    /// About a command-line flag, whatever the file says.
    Flag,
}

/// Where an error sorts: the file's own errors in source order, then
/// those of the whole file, then those of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Order {
    Source(usize),
    Whole,
    Flag,
}

#[derive(Debug)]
struct Found {
    order: Order,
    scope: Scope,
    error: ConfigError,
}

/// Collects every error found in one configuration source (a file, or the
/// command line in quick mode) and the flags that override it.
pub(crate) struct Report {
    file: PathBuf,
    lines: LineIndex,
    found: Vec<Found>,
}

impl Report {
    /// A report on `text`, the contents of `file`.
    pub(crate) fn new(file: &Path, text: &str) -> Self {
        Report {
            file: file.to_path_buf(),
            lines: LineIndex::new(text),
            found: Vec::new(),
        }
    }

    /// A report on a configuration built from flags alone.
    pub(crate) fn command_line() -> Self {
        Report::new(Path::new(COMMAND_LINE), "")
    }

    /// The 1-based line `at` names, if it is in the file.
    pub(crate) fn line_of(&self, at: &Origin) -> Option<usize> {
        match at {
            Origin::Span(span) => Some(self.lines.line_of(span.start)),
            Origin::Flag { .. } => None,
        }
    }

    /// The source cannot be read as written from `span` on (from the start
    /// when the span is unknown).
    pub(crate) fn syntax(&mut self, span: Option<Range<usize>>, message: String) {
        let start = span.map_or(0, |s| s.start);
        self.found.push(Found {
            order: Order::Source(start),
            scope: Scope::Broken(start),
            error: ConfigError {
                file: self.file.clone(),
                line: Some(self.lines.line_of(start)),
                key: String::new(),
                message,
            },
        });
    }

    /// There is no source to check at all (an unreadable file).
    pub(crate) fn unreadable(&mut self, message: String) {
        self.found.push(Found {
            order: Order::Source(0),
            scope: Scope::Broken(0),
            error: ConfigError {
                file: self.file.clone(),
                line: None,
                key: String::new(),
                message,
            },
        });
    }

    /// The flags cannot make a configuration: the rules that need a whole
    /// one are not checked, the flags themselves still are.
    pub(crate) fn incomplete(&mut self, flag: &'static str, message: String) {
        self.found.push(Found {
            order: Order::Flag,
            scope: Scope::Broken(0),
            error: ConfigError {
                file: PathBuf::from(COMMAND_LINE),
                line: None,
                key: flag.to_string(),
                message,
            },
        });
    }

    /// An error about the value (or key) at `at`, whose dotted path is `key`.
    pub(crate) fn at(&mut self, at: &Origin, key: &str, message: impl Into<String>) {
        let scope = match at {
            Origin::Span(span) => Scope::Upto(span.end),
            Origin::Flag { .. } => Scope::Flag,
        };
        self.push(Some(at), scope, key, message.into());
    }

    /// An error that needs the whole source to be true, shown at `at` (or
    /// against the file when `None`).
    pub(crate) fn at_document(
        &mut self,
        at: Option<&Origin>,
        key: &str,
        message: impl Into<String>,
    ) {
        let scope = match at {
            Some(Origin::Flag { .. }) => Scope::Flag,
            _ => Scope::Whole,
        };
        self.push(at, scope, key, message.into());
    }

    fn push(&mut self, at: Option<&Origin>, scope: Scope, key: &str, message: String) {
        let (order, error) = match at {
            Some(Origin::Span(span)) => (
                Order::Source(span.start),
                ConfigError {
                    file: self.file.clone(),
                    line: Some(self.lines.line_of(span.start)),
                    key: key.to_string(),
                    message,
                },
            ),
            Some(Origin::Flag { flag, part }) => (
                Order::Flag,
                ConfigError {
                    file: PathBuf::from(COMMAND_LINE),
                    line: None,
                    key: flag.to_string(),
                    message: match part {
                        Some(part) => format!("{part} {message}"),
                        None => message,
                    },
                },
            ),
            None => (
                Order::Whole,
                ConfigError {
                    file: self.file.clone(),
                    line: None,
                    key: key.to_string(),
                    message,
                },
            ),
        };
        self.found.push(Found {
            order,
            scope,
            error,
        });
    }

    /// Every error worth showing, in order: source order for the file, then
    /// those without a line, then the command line's.
    ///
    /// Past a syntax error the parser's recovered tree is a guess, so only
    /// errors that depend on text before the first one are kept (and none on
    /// a line with a syntax error); rules that need the whole file wait
    /// until it parses.
    fn into_errors(self) -> Vec<ConfigError> {
        let broken = self
            .found
            .iter()
            .filter_map(|f| match f.scope {
                Scope::Broken(at) => Some(at),
                _ => None,
            })
            .min();
        let broken_lines: Vec<Option<usize>> = self
            .found
            .iter()
            .filter(|f| matches!(f.scope, Scope::Broken(_)))
            .map(|f| f.error.line)
            .collect();
        let mut found: Vec<Found> = self
            .found
            .into_iter()
            .filter(|f| match (broken, f.scope) {
                (None, _) | (_, Scope::Broken(_) | Scope::Flag) => true,
                (Some(_), Scope::Whole) => false,
                (Some(first), Scope::Upto(end)) => {
                    end < first && !broken_lines.contains(&f.error.line)
                }
            })
            .collect();
        found.sort_by_key(|f| f.order);
        found.into_iter().map(|f| f.error).collect()
    }

    /// `value` when nothing was found, else every error.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        let errors = self.into_errors();
        if errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}
