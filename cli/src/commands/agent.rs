//! `agentwire agent create`: an agent, with its user, template, workspace and build, and its token printed; from a
//! definition file with `--spec`. `agentwire agent update --spec`: an existing agent brought to a definition file.

use std::path::{Path, PathBuf};

use agentwire::agent_spec::{self, Parsed};
use agentwire::provision;
use agentwire_store::{AgentPlacement, StoreOptions};
use anyhow::Context;
use clap::{Args, Subcommand};
use uuid::Uuid;

use super::{open_store, DbArgs};

/// The owner of a created agent unless `--owner` says otherwise (created when missing).
const DEFAULT_OWNER: &str = "admin";
/// The template of a created agent unless `--template` says otherwise.
const DEFAULT_TEMPLATE: &str = "default";

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Create an agent (and its user, template, workspace and build) and print its token.
    Create(CreateArgs),
    /// Bring an existing agent to a definition file, as a template version update does in Coder: it keeps its id
    /// and token, and sees the new definition at its next manifest fetch (its next connection).
    Update(UpdateArgs),
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
    /// The agent's definition (TOML: scripts, apps, metadata, env, ...; README, "Agent definitions"). Everything is
    /// created in one transaction.
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The agent's new definition (TOML; README, "Agent definitions").
    #[arg(long, value_name = "FILE")]
    spec: PathBuf,
    /// The agent's id; or name it with --workspace and --name.
    #[arg(long, conflicts_with_all = ["workspace", "name"], required_unless_present_all = ["workspace", "name"])]
    id: Option<Uuid>,
    /// The agent's workspace.
    #[arg(long, requires = "name")]
    workspace: Option<String>,
    /// The agent's name.
    #[arg(long, requires = "workspace")]
    name: Option<String>,
    /// The workspace owner's username.
    #[arg(long, default_value = DEFAULT_OWNER)]
    owner: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Create(args) => create(args).await,
        AgentCommand::Update(args) => update(args).await,
    }
}

/// Reads and checks a definition before the database is opened; warnings go to stderr.
fn load_spec(path: &Path) -> anyhow::Result<Parsed> {
    let parsed = agent_spec::load(path)?;
    for w in &parsed.warnings {
        eprintln!("warning: {}:{}:{}: {}: {}", path.display(), w.line, w.column, w.field, w.message);
    }
    Ok(parsed)
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let spec = args.spec.as_deref().map(load_spec).transpose()?;
    let store = open_store(&args.db.db, StoreOptions::default()).await?;
    let (agent_id, token) = match &spec {
        Some(parsed) => {
            let placement = AgentPlacement {
                owner: &args.owner,
                template: &args.template,
                workspace: &args.workspace,
                agent: &args.name,
            };
            let created = agent_spec::create_agent(&store, placement, &parsed.spec).await?;
            (created.agent.id, created.agent.auth_token)
        }
        None => {
            let created =
                provision::create_agent(&store, &args.owner, &args.template, &args.workspace, &args.name).await?;
            (created.agent_id, created.token)
        }
    };
    if args.json {
        let out = serde_json::json!({
            "workspace": args.workspace,
            "agent": args.name,
            "agent_id": agent_id.to_string(),
            "token": token.to_string(),
        });
        println!("{out}");
    } else {
        println!("agent {} of workspace {} created", args.name, args.workspace);
        println!("token: {token}");
    }
    store.close().await;
    Ok(())
}

async fn update(args: UpdateArgs) -> anyhow::Result<()> {
    let parsed = load_spec(&args.spec)?;
    let store = open_store(&args.db.db, StoreOptions::default()).await?;
    let agent_id = match (args.id, &args.workspace, &args.name) {
        (Some(id), _, _) => id,
        (None, Some(workspace), Some(name)) => store
            .admin()
            .find_agent(&args.owner, workspace, name)
            .await?
            .with_context(|| format!("no agent {name:?} in workspace {workspace:?} of {:?}", args.owner))?,
        // clap requires --id or both names.
        _ => anyhow::bail!("give --id, or --workspace and --name"),
    };
    agent_spec::update_agent(&store, agent_id, &parsed.spec).await?;
    if args.json {
        println!("{}", serde_json::json!({ "agent_id": agent_id.to_string(), "updated": true }));
    } else {
        println!("agent {agent_id} updated; a connected agent sees the new definition at its next manifest fetch");
    }
    store.close().await;
    Ok(())
}
