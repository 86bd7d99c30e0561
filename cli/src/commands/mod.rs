//! The `agentwire` binary's commands, one module each (flags, then the body); here what several share: the
//! database flag and opening the store.

pub mod agent;
pub mod demo_data;
pub mod derp;
pub mod loadgen;
pub mod serve;
pub mod user;

use std::time::Duration;

use agentwire_store::{Store, StoreOptions};
use anyhow::Context;
use clap::Args;

/// The embedded SQLite file in the working directory, created on first use.
pub const DEFAULT_DB: &str = "sqlite://agentwire.db?mode=rwc";

#[derive(Args)]
pub struct DbArgs {
    /// Database URL: sqlite://FILE?mode=rwc (embedded, the default) or postgres://… (shared by replicas).
    #[arg(long, env = "AGENTWIRE_DB", default_value = DEFAULT_DB)]
    pub db: String,
}

pub async fn open_store(db: &str, options: StoreOptions) -> anyhow::Result<Store> {
    Store::open(db, options).await.with_context(|| format!("opening the database {db}"))
}

/// Whole seconds, as most flags give durations.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
