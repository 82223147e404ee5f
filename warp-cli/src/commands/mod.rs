pub mod dlq;
pub mod env_help;
pub mod init;
pub mod run;
pub mod status;
pub mod validate;
pub mod verify;

/// A single-thread-per-core runtime for commands that talk to databases.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// An error with its hint, on one line.
pub fn with_hint(message: impl std::fmt::Display, hint: Option<String>) -> String {
    match hint {
        Some(h) => format!("{message} (hint: {h})"),
        None => message.to_string(),
    }
}
