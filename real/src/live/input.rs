//! Errors in the files a user writes for live mode (targets, schedules), located at the file,
//! the line and the field, as every bad input of faultline's: the CLI maps them to exit code 2.

use std::fmt;
use std::path::{Path, PathBuf};

/// A target or schedule file that cannot be used: where, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub path: PathBuf,
    /// 1-based; 1 when the file as a whole is at fault.
    pub line: usize,
    /// The field at fault (`command`, `kills[2].node`, ...), or `(file)`.
    pub field: String,
    pub message: String,
}

impl InputError {
    /// The exit code a command reports for bad input (a failed check is 1).
    pub const EXIT_CODE: i32 = 2;

    pub fn new(
        path: &Path,
        line: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        InputError {
            path: path.to_path_buf(),
            line,
            field: field.into(),
            message: message.into(),
        }
    }

    /// An error at the byte offset `at` of `text`.
    pub fn at(
        path: &Path,
        text: &str,
        at: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        InputError::new(path, line_at(text, at), field, message)
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

impl std::error::Error for InputError {}

/// The 1-based line of byte offset `at` in `text`.
pub fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key written on the line holding byte `at` (what precedes its `=`), if any.
fn key_on_line(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('#')).then(|| key.to_string())
}

/// TOML `text` read from `path` as a `T`; a syntax or shape error names its line and field
/// (the field serde names in backquotes, else the key written where toml points).
pub fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, InputError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let at = e.span().map_or(0, |s| s.start);
        let message = e.message().trim().replace('\n', "; ");
        let quoted = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field `"))
            .map(str::to_string);
        let field = quoted
            .or_else(|| e.span().and_then(|_| key_on_line(text, at)))
            .unwrap_or_else(|| "(file)".to_string());
        InputError::at(path, text, at, field, message)
    })
}

/// The file at `path`, or an error naming it.
pub fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path)
        .map_err(|e| InputError::new(path, 1, "(file)", format!("cannot read: {e}")))
}
