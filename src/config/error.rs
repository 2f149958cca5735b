//! Why a configuration file could not be read, in a file of its own: every part of the schema
//! refuses values with it, and the whole (`config`) uses the parts, so it cannot live there.

use std::path::{Path, PathBuf};

/// Why a configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {}", path.display(), crate::reason::io_reason(error))]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}{}: {}", path.display(), at, error.message().trim_end())]
    Parse {
        path: PathBuf,
        /// ", line L column C" where the parser stopped, or empty.
        at: String,
        /// The parser's error (its own Display spans several lines, so only its message is shown).
        error: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A TOML error as one line: the file, where, and what (toml's own text spans several lines).
pub(super) fn parse_error(path: &Path, text: &str, e: toml::de::Error) -> ConfigError {
    let at = e
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(", line {line} column {column}")
        })
        .unwrap_or_default();
    ConfigError::Parse { path: path.to_owned(), at, error: Box::new(e) }
}
