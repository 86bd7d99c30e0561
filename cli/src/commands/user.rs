//! `agentwire user token`: an API token for a user (created when missing), for the user-facing endpoints.

use std::time::Duration;

use agentwire_store::StoreOptions;
use clap::{Args, Subcommand};

use super::{open_store, DbArgs};

/// How long a new token lives unless `--lifetime-hours` says otherwise: 30 days.
const DEFAULT_LIFETIME_HOURS: u64 = 30 * 24;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an API token for a user (created when missing) and print it: the session token of
    /// `watch-metadata` and the other user endpoints.
    Token(TokenArgs),
}

#[derive(Args)]
pub struct TokenArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The user's username.
    #[arg(long)]
    username: String,
    /// Hours until the token expires.
    #[arg(long, default_value_t = DEFAULT_LIFETIME_HOURS)]
    lifetime_hours: u64,
}

pub async fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Token(args) => token(args).await,
    }
}

async fn token(args: TokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.lifetime_hours > 0, "--lifetime-hours must be at least 1");
    let store = open_store(&args.db.db, StoreOptions::default()).await?;
    let admin = store.admin();
    let user = match admin.user_id(&args.username).await? {
        Some(id) => id,
        None => admin.create_user(&args.username, &format!("{}@example.com", args.username)).await?,
    };
    let lifetime = Duration::from_secs(args.lifetime_hours.saturating_mul(3600));
    let token = admin.create_api_key(user, lifetime).await?;
    println!("{token}");
    store.close().await;
    Ok(())
}
