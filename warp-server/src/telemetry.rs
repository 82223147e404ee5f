//! Logging (docs/operations.md, Logging): JSON lines or text on stdout, plus an optional size-rotated file;
//! level from `RUST_LOG` (directives) or `logging.level` (which `LOG_LEVEL` sets);
//! credentials masked in every line when `sensitive_data_masking` is on.

use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;
use warp_core::config::{Environment, LogFormat, LoggingConfig};
use warp_core::mask_secrets;

use crate::error::ServerError;

/// Installs the global subscriber. Returns warnings to print once logging is up (a log
/// file that cannot be opened does not stop replication).
pub fn init(cfg: &LoggingConfig, env: &Environment) -> Result<Vec<String>, ServerError> {
    let filter = match env.get("RUST_LOG").filter(|v| !v.is_empty()) {
        Some(directives) => EnvFilter::try_new(directives)
            .map_err(|e| ServerError::Telemetry(format!("RUST_LOG: {e}")))?,
        None => EnvFilter::new(cfg.level.as_str()),
    }
    // The OAuth library logs token answers whole at debug: never let a token through.
    .add_directive("yup_oauth2=warn".parse().expect("a valid directive"));
    let mut warnings = Vec::new();
    let mut writer = BoxMakeWriter::new(io::stdout);
    if let Some(path) = &cfg.log_file {
        match open_rotating(Path::new(path), cfg) {
            Ok(file) => {
                writer = BoxMakeWriter::new(io::stdout.and(SharedFile(Arc::new(Mutex::new(file)))))
            }
            Err(e) => warnings.push(format!(
                "logging.log_file {path}: {e}; logging to stdout only"
            )),
        }
    }
    if cfg.sensitive_data_masking {
        writer = BoxMakeWriter::new(Masking(writer));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match cfg.format {
        LogFormat::Structured => builder
            .json()
            .flatten_event(true)
            // Every enclosing span (schema, table, batch): the innermost alone would drop
            // the table from a batch's lines.
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(io::IsTerminal::is_terminal(&io::stdout()))
            .try_init(),
    };
    result.map_err(|e| ServerError::Telemetry(e.to_string()))?;
    Ok(warnings)
}

/// Logs a warning (for messages produced before or outside a span).
pub fn warn(message: &str) {
    tracing::warn!("{message}");
}

fn open_rotating(path: &Path, cfg: &LoggingConfig) -> io::Result<FileRotate<AppendCount>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Probe writability first: FileRotate reports open errors only on write.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let bytes = usize::try_from(cfg.max_file_size.0).unwrap_or(usize::MAX);
    Ok(FileRotate::new(
        path,
        AppendCount::new(cfg.max_files.as_usize()),
        ContentLimit::BytesSurpassed(bytes),
        Compression::None,
        None,
    ))
}

#[derive(Clone)]
struct SharedFile(Arc<Mutex<FileRotate<AppendCount>>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

impl<'a> MakeWriter<'a> for SharedFile {
    type Writer = SharedFile;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Masks credentials in each formatted event (the formatter writes one event per call).
struct Masking<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Masking<M> {
    type Writer = MaskingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        MaskingWriter(self.0.make_writer())
    }
}

struct MaskingWriter<W>(W);

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(mask_secrets(text).as_bytes())?,
            Err(_) => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_writer_hides_passwords() {
        let mut out = Vec::new();
        MaskingWriter(&mut out)
            .write_all(b"{\"error\":\"connect mysql://root:hunter2@db/x failed\"}\n")
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("root:***@db"));
    }
}
