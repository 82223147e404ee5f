//! `cartridge-warp`: change-data-capture from MongoDB, MySQL/MariaDB and BigQuery into
//! PostgreSQL.

mod commands;

/// A snapshot allocates and frees a value per cell; with glibc's allocator that was a
/// third of the process's CPU, with mimalloc the process needs ~35% less CPU per
/// million rows (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use warp_core::config::Environment;

#[derive(Parser)]
#[command(
    name = "cartridge-warp",
    about = "Change-data-capture into PostgreSQL",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replicate until SIGTERM/SIGINT, then drain and exit 0.
    Run(commands::run::RunArgs),
    /// Load and check a configuration (file + environment).
    Validate(commands::validate::ValidateArgs),
    /// Per-table state, position, lag, owner and errors (works while `run` is active).
    Status(commands::status::StatusArgs),
    /// Ask the running replicator to re-snapshot one table (others keep streaming).
    Resync(commands::status::ResyncArgs),
    /// Compare source and destination by key ranges; report (and with --repair re-copy)
    /// the rows that differ. Runs while replication runs. Exits 1 when any differ.
    Verify(commands::verify::VerifyArgs),
    /// Inspect and act on the dead-letter table.
    #[command(subcommand)]
    Dlq(commands::dlq::DlqCommand),
    /// Write a commented starter configuration.
    Init(commands::init::InitArgs),
    /// List every environment variable that overrides the configuration.
    EnvHelp,
}

#[derive(Args)]
struct ConfigArg {
    /// Configuration file (YAML).
    #[arg(long, short = 'c', value_name = "PATH")]
    config: PathBuf,
}

fn version() -> String {
    format!(
        "{} (features: {})",
        env!("CARGO_PKG_VERSION"),
        warp_server::connectors::enabled_features().join(", ")
    )
}

fn main() -> ExitCode {
    let matches = Cli::command().version(version()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let env: Environment = std::env::vars().collect();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args, &env),
        Command::Validate(args) => commands::validate::run(&args, &env),
        Command::Status(args) => commands::status::run(&args, &env),
        Command::Resync(args) => commands::status::resync(&args, &env),
        Command::Verify(args) => commands::verify::run(&args, &env),
        Command::Dlq(cmd) => commands::dlq::run(cmd, &env),
        Command::Init(args) => commands::init::run(&args),
        Command::EnvHelp => commands::env_help::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // `error:` before each line (one per failed check), credentials masked,
            // whatever produced it.
            for line in message.lines() {
                eprintln!("error: {}", warp_core::mask_secrets(line));
            }
            ExitCode::FAILURE
        }
    }
}
