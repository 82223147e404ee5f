use warp_core::config::ConfigErrors;

/// Errors of the runtime. Connector and engine errors arrive as [`warp_core::Error`],
/// which carries the retryable/permanent split.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),

    #[error(transparent)]
    Core(#[from] warp_core::Error),

    /// The configuration names a connector this binary was built without.
    #[error(
        "this cartridge-warp binary was built without the `{feature}` feature, so it cannot use {what}; \
         rebuild with `cargo build -p warp-cli --features {feature}` or use an image that includes it"
    )]
    MissingFeature { feature: &'static str, what: String },

    #[error("cannot serve {what} on port {port}: {message}")]
    Bind {
        what: &'static str,
        port: u16,
        message: String,
    },

    /// A command was asked for something the configuration does not have.
    #[error("{0}")]
    Usage(String),

    #[error("metrics: {0}")]
    Metrics(String),

    #[error("logging: {0}")]
    Telemetry(String),

    #[error(
        "shutdown did not finish within {0:?}; some tables may replay their last batch on restart"
    )]
    DrainTimeout(std::time::Duration),
}

impl ServerError {
    /// What to do about it, when known.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Core(e) => e.hint(),
            _ => None,
        }
    }
}
