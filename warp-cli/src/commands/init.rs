//! `cartridge-warp init`.

use std::path::PathBuf;

use super::env_help::write_stdout;
use clap::Args;

pub fn run(args: &InitArgs) -> Result<(), String> {
    let text = warp_core::config::starter_config();
    if args.output.as_os_str() == "-" {
        return write_stdout(text);
    }
    let path = &args.output;
    if path.exists() && !args.force {
        return Err(format!(
            "{} exists; pass --force to overwrite it",
            path.display()
        ));
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!(
        "wrote {}; check it with: cartridge-warp validate --config {}",
        path.display(),
        path.display()
    );
    Ok(())
}

#[derive(Args)]
pub(crate) struct InitArgs {
    /// Where to write it (`-` for standard output).
    #[arg(long, short = 'o', default_value = "cartridge-warp.yaml")]
    output: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}
