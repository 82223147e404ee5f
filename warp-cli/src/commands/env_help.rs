//! `cartridge-warp env-help`.

use std::fmt::Write as _;
use std::io::Write as _;

use warp_core::config::{env_keys, EnvKey, PLAIN_ENV_VARS};

pub fn run() -> Result<(), String> {
    let sources = warp_server::connectors::source_keys();
    let width = env_keys()
        .iter()
        .chain(sources.iter().flat_map(|(_, keys)| keys.iter()))
        .map(|k| k.file_variable().unwrap_or_else(|| k.variable()).len())
        .max()
        .unwrap_or(0);
    let mut out = String::from(
        "Environment overrides (precedence: flag > environment > file > default).\n\
         CARTRIDGE_WARP_<PATH> with `__` between levels sets any key below.\n\
         List entries (schemas[]) are set in the file.\n\n",
    );
    let line = |out: &mut String, key: &EnvKey| {
        let _ = writeln!(
            out,
            "  {:width$}  {} — {}",
            key.variable(),
            key.path,
            key.description
        );
    };
    for key in env_keys() {
        line(&mut out, key);
        if let Some(file_var) = key.file_variable() {
            let _ = writeln!(
                out,
                "  {file_var:width$}  {} — read from this file instead (Kubernetes Secret volume)",
                key.path
            );
        }
    }
    for (source_type, keys) in &sources {
        let ty = source_type.as_str();
        let _ = writeln!(out, "\nKeys of a {ty} source (source.type: {ty}):\n");
        for key in *keys {
            line(&mut out, key);
        }
    }
    out.push_str("\nVariables of the Kubernetes Deployment (a CARTRIDGE_WARP_ variable for the same key wins):\n\n");
    for (var, meaning) in PLAIN_ENV_VARS {
        let _ = writeln!(out, "  {var:width$}  {meaning}");
    }
    write_stdout(&out)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn write_stdout(text: &str) -> Result<(), String> {
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to standard output: {e}"))
        }
        _ => Ok(()),
    }
}
