//! `agentwire derp set`: the DERP map that agents and clients receive, from a file of Coder's DERP map JSON.

use agentwire_store::StoreOptions;
use anyhow::Context;
use clap::{Args, Subcommand};

use super::{open_store, DbArgs};

#[derive(Subcommand)]
pub enum DerpCommand {
    /// Set the DERP map from a file of Coder's DERP map JSON (`tailcfg.DERPMap`). Servers on the same PostgreSQL
    /// database send it to connected agents at once; a server on a SQLite file, within its check interval.
    Set(DerpSetArgs),
}

#[derive(Args)]
pub struct DerpSetArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The JSON file (`-` for standard input).
    file: std::path::PathBuf,
}

pub async fn run(command: DerpCommand) -> anyhow::Result<()> {
    match command {
        DerpCommand::Set(args) => set(args).await,
    }
}

async fn set(args: DerpSetArgs) -> anyhow::Result<()> {
    let json = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the DERP map from standard input")?
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?
    };
    let map = agentwire::tailnet::derp_map::parse_derp_map(&json).context("not a DERP map (Coder's JSON)")?;
    let store = open_store(&args.db.db, StoreOptions::default()).await?;
    store.admin().set_derp_map(&json).await?;
    let nodes: usize = map.regions.values().map(|r| r.nodes.len()).sum();
    println!("DERP map set: {} regions, {nodes} nodes", map.regions.len());
    store.close().await;
    Ok(())
}
