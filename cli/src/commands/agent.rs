//! `agentwire agent create`: an agent, with its user, template, workspace and build, and its token printed.

use agentwire::provision;
use agentwire_store::StoreOptions;
use clap::{Args, Subcommand};

use super::{open_store, DbArgs};

/// The owner of a created agent unless `--owner` says otherwise (created when missing).
const DEFAULT_OWNER: &str = "admin";
/// The template of a created agent unless `--template` says otherwise.
const DEFAULT_TEMPLATE: &str = "default";

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Create an agent (and its user, template, workspace and build) and print its token.
    Create(CreateArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Workspace name.
    #[arg(long)]
    workspace: String,
    /// Agent name.
    #[arg(long)]
    name: String,
    /// Owner's username (created when missing).
    #[arg(long, default_value = DEFAULT_OWNER)]
    owner: String,
    /// Template name.
    #[arg(long, default_value = DEFAULT_TEMPLATE)]
    template: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Create(args) => create(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let store = open_store(&args.db.db, StoreOptions::default()).await?;
    let created = provision::create_agent(&store, &args.owner, &args.template, &args.workspace, &args.name).await?;
    if args.json {
        let out = serde_json::json!({
            "workspace": created.workspace,
            "agent": created.agent,
            "agent_id": created.agent_id.to_string(),
            "token": created.token.to_string(),
        });
        println!("{out}");
    } else {
        println!("agent {} of workspace {} created", created.agent, created.workspace);
        println!("token: {}", created.token);
    }
    store.close().await;
    Ok(())
}
