//! `agentwire loadgen`: the load generator's own flags (`agentwire-loadgen`), plus the agents it may first create
//! in the server's database, which the load generator cannot reach.

use agentwire::provision;
use agentwire_loadgen::{LoadgenArgs, Target, TokenSource};
use agentwire_store::StoreOptions;
use anyhow::Context;
use clap::Args;

use super::open_store;

#[derive(Args)]
pub struct LoadgenCommand {
    #[command(flatten)]
    run: LoadgenArgs,
    /// Create --agents agents in this database (the server's --db) and use their tokens.
    #[arg(long, env = "AGENTWIRE_LOADGEN_DB", conflicts_with_all = ["tokens_file", "any_token"])]
    db: Option<String>,
    /// With --db: write the created tokens here, one per line, for a later --tokens-file.
    #[arg(long, env = "AGENTWIRE_LOADGEN_WRITE_TOKENS", requires = "db")]
    write_tokens: Option<std::path::PathBuf>,
    /// With --db: metadata keys per created agent (interval 1–10 s, drawn per key).
    #[arg(long, env = "AGENTWIRE_LOADGEN_METADATA_KEYS", default_value_t = provision::DEFAULT_LOAD_METADATA_KEYS)]
    metadata_keys: usize,
}

/// With `--db`, creates the run's agents (WebSocket runs) and hands their tokens in; then runs.
pub async fn run(cmd: LoadgenCommand) -> anyhow::Result<()> {
    let mut config = cmd.run.config().await?;
    if let (Some(db), Target::Ws { .. }) = (&cmd.db, &config.target) {
        let store = open_store(db, StoreOptions::default()).await?;
        let created = provision::create_load_agents(&store, config.agents, cmd.metadata_keys).await;
        store.close().await;
        let tokens = created.context("creating agents")?;
        if let Some(path) = &cmd.write_tokens {
            let lines: String = tokens.iter().map(|token| format!("{token}\n")).collect();
            std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
        }
        config.tokens = TokenSource::List(tokens);
    }
    agentwire_loadgen::main(&cmd.run, config).await?;
    Ok(())
}
