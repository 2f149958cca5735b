//! The errors of building a snapshot and of starting the gateway, in one place: the snapshot
//! builder, the client and user tables and the listeners all report through these, so none of
//! them has to import another just for its error type.

use std::net::SocketAddr;

/// Why a snapshot could not be built; the message names the file or key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Key(#[from] crate::auth::keys::KeyError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Invalid(String),
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Tracing(#[from] crate::telemetry::ExportError),
}
