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

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use warp_core::config::{Environment, Mode};

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
    Run(RunArgs),
    /// Load and check a configuration (file + environment).
    Validate(ValidateArgs),
    /// Per-table state, position, lag, owner and errors (works while `run` is active).
    Status(StatusArgs),
    /// Ask the running replicator to re-snapshot one table (others keep streaming).
    Resync(ResyncArgs),
    /// Compare source and destination by key ranges; report (and with --repair re-copy)
    /// the rows that differ. Runs while replication runs. Exits 1 when any differ.
    Verify(VerifyArgs),
    /// Inspect and act on the dead-letter table.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Write a commented starter configuration.
    Init(InitArgs),
    /// List every environment variable that overrides the configuration.
    EnvHelp,
}

#[derive(Args)]
struct ConfigArg {
    /// Configuration file (YAML).
    #[arg(long, short = 'c', value_name = "PATH")]
    config: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Single,
    Multi,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Overrides `mode` from the file and environment.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// The schema to run (single mode), or the only schema to run (multi mode).
    #[arg(long)]
    schema: Option<String>,
    /// Connect, discover and print the plan (tables, estimated rows, DDL); write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Re-snapshot every table before streaming.
    #[arg(long)]
    full_resync: bool,
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Also connect to the source and destination and check their prerequisites.
    #[arg(long)]
    check_connections: bool,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ResyncArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long)]
    schema: String,
    #[arg(long)]
    table: String,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long)]
    schema: String,
    /// Only this table.
    #[arg(long)]
    table: Option<String>,
    /// Re-copy the rows of the mismatching ranges from the source (rows the replicator
    /// changes meanwhile are left to it).
    #[arg(long)]
    repair: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Keys per range before bisection narrows a mismatching one.
    #[arg(long, default_value_t = 1000)]
    range_keys: usize,
    /// Seconds between reads of a suspected difference (replication catching up).
    #[arg(long, default_value_t = 5.0)]
    recheck_delay: f64,
    /// Also write the results as Prometheus text (textfile collector) to this file.
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters (pending by default).
    List(DlqArgs),
    /// Re-apply pending dead letters after fixing their cause; a letter older than the
    /// destination row is marked superseded instead.
    Replay(DlqArgs),
    /// Mark pending dead letters discarded.
    Discard(DlqArgs),
}

#[derive(Args)]
struct DlqArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[arg(long)]
    schema: Option<String>,
    #[arg(long)]
    table: Option<String>,
    /// Only these entries (repeatable).
    #[arg(long = "id")]
    ids: Vec<i64>,
    /// list: pending, replayed, discarded or all.
    #[arg(long, default_value = "pending")]
    status: String,
    /// replay/discard: act on every pending entry (when no --id/--table narrows it).
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InitArgs {
    /// Where to write it (`-` for standard output).
    #[arg(long, short = 'o', default_value = "cartridge-warp.yaml")]
    output: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Single => Mode::Single,
            ModeArg::Multi => Mode::Multi,
        }
    }
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
