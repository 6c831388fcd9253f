use nasnet_core::ConfigError;

/// Errors of the network builder and runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the network: {0}")]
    Build(String),
    #[error("{0}")]
    Model(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
