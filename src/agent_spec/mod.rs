//! Agent definitions: a TOML file an operator writes to give an agent what a Coder template gives one (the
//! `coder_agent` block and the `coder_script`, `coder_app` and `coder_env` resources attached to it), read, checked
//! against Coder's rules, and written to the store (`agentwire agent create --spec`, `agent update --spec`,
//! `serve --demo`). The format is described in the README ("Agent definitions") and shown whole by [`EXAMPLE`].
//!
//! | file | what |
//! | --- | --- |
//! | `model.rs` | the file's shape (serde, unknown keys refused), each field documented |
//! | `validate.rs` | the rules, each with the Coder source it mirrors; `cron.rs`, script schedules as the agent parses them |
//! | `locate.rs` | field paths, and the line each is written on |
//! | `error.rs` | problems, each naming its field and line |
//! | `apply.rs` | Coder's defaults, and creating or updating an agent in the store |

mod apply;
mod cron;
mod error;
mod locate;
mod model;
mod validate;

use std::path::Path;

pub use apply::{create_agent, definition, update_agent, UpdateError};
pub use error::{Problem, SpecError};
pub use model::{
    AgentSpec, AppSpec, DisplayApps, HealthcheckSpec, MetadataSpec, MonitorSpec, ResourcesMonitoring, ScriptSpec,
    VolumeSpec,
};

use locate::Located;

/// The shipped example (`examples/agent.toml`): every part of the format, and the agent `serve --demo` creates.
pub const EXAMPLE: &str = include_str!("../../examples/agent.toml");

/// A definition that passed every rule, and what it may not mean as written.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub spec: AgentSpec,
    /// Valid but suspicious values, such as a schedule that reads like a five-field Unix one.
    pub warnings: Vec<Problem>,
}

/// Read and check a definition file.
pub fn load(path: &Path) -> Result<Parsed, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: path.to_owned(), source })?;
    parse(&text, &path.display().to_string())
}

/// Check a definition; `origin` names it in errors (its path, usually). Every problem is reported, not the first
/// only, each with its field and line.
pub fn parse(text: &str, origin: &str) -> Result<Parsed, SpecError> {
    let located = Located::new(text);
    let spec: AgentSpec = toml::from_str(text).map_err(|e| {
        let (field, offset) = match e.span() {
            Some(span) => (located.path_at(span.start).to_string(), span.start),
            None => (String::new(), 0),
        };
        let (line, column) = located.position(offset);
        let message = e.message().trim_end().to_owned();
        SpecError::Invalid { origin: origin.to_owned(), problems: vec![Problem { field, line, column, message }] }
    })?;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for finding in validate::validate(&spec) {
        let (line, column) = located.position(located.span_of(&finding.path).start);
        let problem = Problem { field: finding.path.to_string(), line, column, message: finding.message };
        if finding.warning {
            warnings.push(problem);
        } else {
            errors.push(problem);
        }
    }
    if errors.is_empty() {
        Ok(Parsed { spec, warnings })
    } else {
        errors.sort_by_key(|p| (p.line, p.column));
        Err(SpecError::Invalid { origin: origin.to_owned(), problems: errors })
    }
}

#[cfg(test)]
mod tests;
