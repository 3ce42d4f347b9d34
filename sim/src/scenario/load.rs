//! Turning a scenario file into a `Scenario`: TOML syntax, then serde with the path of the field
//! that failed, then the semantic checks in `validate`.
//!
//! Every error names the file, the line and the dotted field, and says what is allowed. Loading
//! only reads the file; it never touches the simulation.

use super::validate::validate;
use super::{Scenario, Schedule};
use serde::de::DeserializeOwned;

/// A scenario that cannot be used, located as precisely as the file allows.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not valid TOML: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: {field}: {message}")]
    Invalid {
        path: String,
        line: usize,
        field: String,
        message: String,
    },
}

/// The 1-based line of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The line where the dotted `field` is written (its key, or the nearest enclosing table).
fn line_of(text: &str, field: &str) -> usize {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return 1;
    };
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut line = 1;
    for part in field.split('.') {
        // `kills[2]`: the third table of the array `kills`.
        let (name, index) = match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
            Some((name, i)) => (name, i.parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((key, item)) = table.get_key_value(name) else {
            break;
        };
        if let Some(span) = key.span().or_else(|| item.span()) {
            line = line_at(text, span.start);
        }
        let item = match (index, item.as_array_of_tables()) {
            (Some(i), Some(array)) => match array.get(i) {
                Some(t) => {
                    if let Some(span) = t.span() {
                        line = line_at(text, span.start);
                    }
                    table = t;
                    continue;
                }
                None => break,
            },
            _ => item,
        };
        match item.as_table_like() {
            Some(t) => table = t,
            None => break,
        }
    }
    line
}

/// Reads, parses and validates a scenario file.
pub fn load(path: &str) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_string(),
        source,
    })?;
    parse(path, &text)
}

/// Reads a schedule file (`--schedule`) and checks it against the scenario it is replayed in.
pub fn load_schedule(path: &str, scenario: &Scenario) -> Result<Schedule, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_string(),
        source,
    })?;
    let schedule: Schedule = deserialize(path, &text)?;
    super::schedule::validate(&schedule, scenario, "").map_err(|(field, message)| {
        ScenarioError::Invalid {
            path: path.to_string(),
            line: line_of(&text, &field),
            field,
            message,
        }
    })?;
    Ok(schedule)
}

/// Parses and validates scenario `text`; `path` only names it in errors.
pub fn parse(path: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let scenario: Scenario = deserialize(path, text)?;
    let checked = validate(&scenario).and_then(|()| match &scenario.schedule {
        Some(schedule) => super::schedule::validate(schedule, &scenario, "schedule."),
        None => Ok(()),
    });
    checked.map_err(|(field, message)| ScenarioError::Invalid {
        path: path.to_string(),
        line: line_of(text, &field),
        field,
        message,
    })?;
    Ok(scenario)
}

/// TOML `text` as a `T`, every error located at its file, line and dotted field.
fn deserialize<T: DeserializeOwned>(path: &str, text: &str) -> Result<T, ScenarioError> {
    // Syntax first, so a broken file is not reported as a problem with some field.
    if let Err(e) = toml_edit::ImDocument::parse(text) {
        return Err(ScenarioError::Syntax {
            path: path.to_string(),
            line: e.span().map_or(1, |s| line_at(text, s.start)),
            message: e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let table = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().trim().to_string();
        // serde reports a missing field at its enclosing table; name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'));
        let (field, message) = match (missing, table.as_str()) {
            (Some(name), ".") => (name.to_string(), "missing field".to_string()),
            (Some(name), t) => (format!("{t}.{name}"), "missing field".to_string()),
            (None, ".") => ("(top level)".to_string(), message),
            (None, _) => (table.clone(), message),
        };
        let line = inner
            .span()
            .map(|s| line_at(text, s.start))
            .unwrap_or_else(|| line_of(text, &table));
        ScenarioError::Invalid {
            path: path.to_string(),
            line,
            field,
            message,
        }
    })
}
