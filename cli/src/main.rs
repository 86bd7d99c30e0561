//! `agentwire`: serve Coder agents, and the operator commands around it. This file parses the command line and
//! dispatches; each command's flags and body are in its module under `commands/`.

mod commands;

use clap::{Args, Parser, Subcommand};

use commands::agent::AgentCommand;
use commands::demo_data::DemoDataArgs;
use commands::derp::DerpCommand;
use commands::loadgen::LoadgenCommand;
use commands::serve::ServeArgs;
use commands::user::UserCommand;

#[derive(Parser)]
#[command(name = "agentwire", version, about = "A wire-compatible server for Coder's workspace agent endpoint")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    observability: ObservabilityArgs,
}

/// What the process tells about itself. Every command logs; `serve` also answers `/metrics` (Prometheus) and
/// `/healthz` on its `--listen` address, which need no flag.
#[derive(Args)]
#[command(next_help_heading = "Observability")]
struct ObservabilityArgs {
    /// Which log lines go to stderr: a tracing filter, e.g. `debug` or `info,agentwire_store=debug`. One that does
    /// not parse is reported and `info` used.
    #[arg(long = "log", env = "AGENTWIRE_LOG", default_value = "info", global = true)]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Serve agents on /api/v2/workspaceagents/me/rpc.
    Serve(Box<ServeArgs>),
    /// Manage agents.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Fill a database with realistic history (users, templates, workspaces, builds, agent stats): demos,
    /// benchmarks.
    DemoData(DemoDataArgs),
    /// Manage the DERP map served to agents and clients.
    Derp {
        #[command(subcommand)]
        command: DerpCommand,
    },
    /// Simulated agents against an agent endpoint: realistic, saturating, fixed-rate or idle load, with a JSON
    /// report and an SVG plot.
    Loadgen(Box<LoadgenCommand>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log = &cli.observability.log;
    let (filter, unparsed) = match tracing_subscriber::EnvFilter::try_new(log) {
        Ok(filter) => (filter, None),
        Err(err) => (tracing_subscriber::EnvFilter::new("info"), Some(err)),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Some(err) = unparsed {
        tracing::warn!("the log filter {log:?} (--log, AGENTWIRE_LOG) does not parse, logging at info: {err}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => commands::serve::run(*args).await,
            Command::Agent { command } => commands::agent::run(command).await,
            Command::User { command } => commands::user::run(command).await,
            Command::DemoData(args) => commands::demo_data::run(args).await,
            Command::Derp { command } => commands::derp::run(command).await,
            Command::Loadgen(args) => commands::loadgen::run(*args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of every command's flags (unique names, the global `--log` included, and defaults that
    /// parse), which it otherwise makes only when that command is parsed.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
