//! The agents' tokens: from a file, made up (for a server that accepts any), or agents created in the server's
//! database through the store, as `agentwire agent create` does, one workspace each.

use std::io::Write;
use std::time::Duration;

use agentwire_store::{NewAgent, NewMetadata, Store, StoreOptions};
use futures::stream::{self, StreamExt, TryStreamExt};
use uuid::Uuid;

use super::config::{LoadgenConfig, TokenSource};
use super::LoadgenError;

/// Agents created at once through the store (SQLite serialises them anyway; PostgreSQL overlaps round trips).
const CREATE_CONCURRENCY: usize = 16;
/// Metadata keys of created agents collect every 1..=10 s, drawn per key (Coder's template examples use 1–10 s).
const METADATA_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 1..=10;

/// One token per agent (`None` for plain-TCP sessions).
pub(crate) async fn resolve(config: &LoadgenConfig) -> Result<Vec<Option<String>>, LoadgenError> {
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
        TokenSource::Db { url, write_tokens, metadata_keys } => {
            let tokens = create_agents(url, n, *metadata_keys).await?;
            if let Some(path) = write_tokens {
                let mut file =
                    std::fs::File::create(path).map_err(|source| LoadgenError::Io { path: path.clone(), source })?;
                for token in &tokens {
                    writeln!(file, "{token}").map_err(|source| LoadgenError::Io { path: path.clone(), source })?;
                }
            }
            Ok(tokens.into_iter().map(Some).collect())
        }
    }
}

fn take(tokens: Vec<String>, n: usize) -> Result<Vec<Option<String>>, LoadgenError> {
    if tokens.len() < n {
        return Err(LoadgenError::Config(format!("{} tokens for {n} agents", tokens.len())));
    }
    Ok(tokens.into_iter().take(n).map(Some).collect())
}

/// Creates `n` agents (one workspace each, owned by the user `loadgen`) and returns their tokens.
pub async fn create_agents(db: &str, n: usize, metadata_keys: usize) -> Result<Vec<String>, LoadgenError> {
    let store = Store::open(db, StoreOptions::default()).await?;
    let result = create_in(&store, n, metadata_keys).await;
    store.close().await;
    result
}

/// As [`create_agents`], in an open store.
pub async fn create_in(store: &Store, n: usize, metadata_keys: usize) -> Result<Vec<String>, LoadgenError> {
    let admin = store.admin();
    let owner = match admin.user_id("loadgen").await? {
        Some(id) => id,
        None => admin.create_user("loadgen", "loadgen@example.com").await?,
    };
    let template = admin.create_template("default", "loadgen").await?;
    // Workspace names are unique per owner: a run id keeps repeated creations apart.
    let run = &Uuid::new_v4().simple().to_string()[..8];
    stream::iter(0..n)
        .map(|i| {
            let admin = store.admin();
            async move {
                let build =
                    admin.create_workspace_with_build(owner, template.template_id, &format!("lg-{run}-{i}")).await?;
                let agent = admin
                    .create_agent(
                        build.resource_id,
                        &NewAgent {
                            name: "main".to_owned(),
                            directory: "/home/coder".to_owned(),
                            architecture: "amd64".to_owned(),
                            operating_system: "linux".to_owned(),
                            ..NewAgent::default()
                        },
                    )
                    .await?;
                for k in 0..metadata_keys {
                    let every = Duration::from_secs(fastrand::u64(METADATA_INTERVAL_SECS));
                    admin
                        .add_metadata_description(
                            agent.id,
                            &NewMetadata {
                                key: format!("key{k}"),
                                display_name: format!("key {k}"),
                                script: "true".into(),
                                interval: every.as_nanos() as i64,
                                timeout: 1_000_000_000,
                                display_order: k as i64,
                            },
                        )
                        .await?;
                }
                Ok::<_, LoadgenError>(agent.auth_token.to_string())
            }
        })
        .buffered(CREATE_CONCURRENCY)
        .try_collect()
        .await
}
