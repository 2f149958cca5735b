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
}

/// What went wrong with a file, in words a user reads after its path ("certs/x.pem: does not
/// exist"), without the OS error number or Rust debug text.
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "does not exist".into(),
        PermissionDenied => "permission denied".into(),
        IsADirectory => "is a folder, not a file".into(),
        NotADirectory => "is not a folder".into(),
        InvalidData => "is not valid UTF-8 text".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_lowercase(),
                None => text,
            }
        }
    }
}

/// Why a PEM file could not be read, in words.
pub fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::Io(io) => io_reason(io),
        Error::NoItemsFound => "holds no PEM item of the expected kind".into(),
        other => format!("is not valid PEM ({other})"),
    }
}
