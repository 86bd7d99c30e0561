//! What can be wrong with a definition file: it cannot be read, or it can and holds problems, each named by its field
//! and its line.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong in a definition, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as `apps[0].healthcheck.interval`; empty when the problem is the document's own (bad TOML).
    pub field: String,
    /// 1-based line of the field's key (of its table when the field is missing).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: ", self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// A definition file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read and holds problems, all of them reported, in the order of their lines.
    #[error("{}", render(origin, problems))]
    Invalid { origin: String, problems: Vec<Problem> },
}

impl SpecError {
    /// The problems found, none when the file could not be read.
    pub fn problems(&self) -> &[Problem] {
        match self {
            SpecError::Invalid { problems, .. } => problems,
            SpecError::Read { .. } => &[],
        }
    }
}

/// `FILE:LINE:COLUMN: field: message`, one problem a line, as compilers print them.
fn render(origin: &str, problems: &[Problem]) -> String {
    let mut out = format!("invalid agent definition {origin}:");
    for p in problems {
        out.push_str(&format!("\n  {origin}:{}:{}: ", p.line, p.column));
        if !p.field.is_empty() {
            out.push_str(&p.field);
            out.push_str(": ");
        }
        out.push_str(&p.message);
    }
    out
}
