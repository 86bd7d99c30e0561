//! The agents' tokens: from a file, a list the caller made (the `agentwire` binary creates agents in the server's
//! database for `--db`), or made up for a server that accepts any.

use uuid::Uuid;

use crate::config::{LoadgenConfig, TokenSource};
use crate::LoadgenError;

/// One token per agent (`None` for plain-TCP sessions).
pub(crate) fn resolve(config: &LoadgenConfig) -> Result<Vec<Option<String>>, LoadgenError> {
    let n = config.agents;
    match &config.tokens {
        TokenSource::None => Ok(vec![None; n]),
        TokenSource::Any => Ok((0..n).map(|_| Some(Uuid::new_v4().to_string())).collect()),
        TokenSource::List(tokens) => take(tokens.clone(), n),
        TokenSource::File(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| LoadgenError::Io { path: path.clone(), source })?;
            let tokens: Vec<String> =
                text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
            take(tokens, n)
        }
    }
}

fn take(tokens: Vec<String>, n: usize) -> Result<Vec<Option<String>>, LoadgenError> {
    if tokens.len() < n {
        return Err(LoadgenError::Config(format!("{} tokens for {n} agents", tokens.len())));
    }
    Ok(tokens.into_iter().take(n).map(Some).collect())
}
