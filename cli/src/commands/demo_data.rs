//! `agentwire demo-data`: a database filled with realistic history (users, templates, workspaces, builds, agent
//! stats) for demos and benchmarks of the insights endpoints.

use agentwire::metrics_cache::demo;
use agentwire_store::StoreOptions;
use anyhow::Context;
use clap::Args;

use super::{open_store, DbArgs};

/// Workspaces created unless `--workspaces` says otherwise.
const DEFAULT_WORKSPACES: usize = 100;
/// Days of history unless `--days` says otherwise.
const DEFAULT_DAYS: usize = 30;
/// The generator's seed unless `--seed` says otherwise.
const DEFAULT_SEED: u64 = 1;

#[derive(Args)]
pub struct DemoDataArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Workspaces to create (users: one per 5 workspaces; templates: one per 100, 2 to 10).
    #[arg(long, default_value_t = DEFAULT_WORKSPACES)]
    workspaces: usize,
    /// Days of history, ending now.
    #[arg(long, default_value_t = DEFAULT_DAYS)]
    days: usize,
    /// Agent stats rows per workspace per day.
    #[arg(long, default_value_t = demo::DEFAULT_STATS_PER_WORKSPACE_DAY)]
    stats_per_day: usize,
    /// Seed of the generator (the same seed and size give the same shape; ids are seeded too).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

pub async fn run(args: DemoDataArgs) -> anyhow::Result<()> {
    let spec = demo::DemoSpec {
        workspaces: args.workspaces,
        days: args.days,
        stats_per_workspace_day: args.stats_per_day,
        seed: args.seed,
        now: agentwire_store::now_micros(),
    };
    let history = demo::generate(&spec)?;
    let store = open_store(&args.db.db, StoreOptions::default()).await?;
    let started = std::time::Instant::now();
    store.insert_demo_history("default", &history).await.context("writing the demo history")?;
    println!(
        "demo data: {} users, {} templates, {} workspaces, {} builds, {} agent stats rows in {:.1?}",
        history.users.len(),
        history.templates.len(),
        history.workspaces.len(),
        history.builds.len(),
        history.stats.len(),
        started.elapsed()
    );
    store.close().await;
    Ok(())
}
