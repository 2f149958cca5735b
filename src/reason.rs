//! Why a file could not be used, in words a user reads after its path ("certs/x.pem: does not
//! exist"), without OS error numbers or Rust debug text. A leaf module: the config, keys and TLS
//! loaders all use it, and it uses none of them.

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
