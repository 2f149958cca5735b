//! What a first start creates, and where: one ES256 signing key and a self-signed localhost
//! certificate, each only at its shipped default location (`keys/`, `certs/gateway.crt` and
//! `certs/gateway.key` beside the config). A path the user typed is never papered over with a
//! fresh file: a mistyped `/etc/mytls/server.crt` is an error naming the key, not a silent new
//! certificate. Creation is announced as a warning, since a generated key or certificate is
//! rarely what production wants.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::auth::keys::{self, Alg, OwnKeys, SigningKey};
use crate::config::{Config, TlsConfig, TokensConfig};
use crate::error::BuildError;

/// What a build may do about missing generated files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    /// First start: create the signing key and self-signed certificate when allowed and missing.
    Start,
    /// Reload: never create anything; a missing file means the old snapshot stays.
    Reload,
    /// `tokengate check`: go on as a first start would, creating nothing; what a start would
    /// create is made in memory and listed in [`Snapshot::first_start`](super::Snapshot::first_start).
    Check,
}

/// Refuses, before anything is created, a first start that would have to generate a key or a
/// certificate somewhere other than the default location (a mistyped path, most likely), so a
/// failed start never leaves half of its files behind.
pub fn refuse_typed_paths(
    config: &Config,
    keys_dir: &Path,
    (cert, key): (&Path, &Path),
    mode: BuildMode,
) -> Result<(), BuildError> {
    if key_to_make(config, keys_dir, mode) && !keys_at_default(config) {
        return Err(BuildError::Invalid(format!(
            "tokens.keys_dir: {} holds no *.pem signing key; a key is generated only in the default folder `keys` \
             (create one with `tokengate keygen --out {}/<kid>.pem`)",
            keys_dir.display(),
            keys_dir.display()
        )));
    }
    if cert_to_make(config, (cert, key), mode) && !cert_at_default(config) {
        return Err(BuildError::Invalid(format!(
            "tls.cert: {} and tls.key: {} do not exist; a self-signed certificate is generated only at the default \
             certs/gateway.crt and certs/gateway.key (fix the paths, or remove both keys to use the defaults)",
            cert.display(),
            key.display()
        )));
    }
    Ok(())
}

/// Whether a start in `mode` finds no signing key where it would make one.
fn key_to_make(config: &Config, keys_dir: &Path, mode: BuildMode) -> bool {
    mode != BuildMode::Reload && config.tokens.issue_tokens && config.tokens.generate_if_missing && !has_pem(keys_dir)
}

/// Whether a start in `mode` finds neither certificate nor key where it would make them.
fn cert_to_make(config: &Config, (cert, key): (&Path, &Path), mode: BuildMode) -> bool {
    mode != BuildMode::Reload && config.tls.self_signed_if_missing && !cert.exists() && !key.exists()
}

fn keys_at_default(config: &Config) -> bool {
    config.tokens.keys_dir == TokensConfig::default().keys_dir
}

fn cert_at_default(config: &Config) -> bool {
    let default = TlsConfig::default();
    config.tls.cert == default.cert && config.tls.key == default.key
}

/// Our signing keys: loaded from `keys_dir`, or on a first start in the default folder, created.
/// None in validation-only mode (`tokens.issue_tokens = false`): `keys_dir` is then never read
/// for keys, and nothing is ever created in it.
pub fn signing_keys(
    config: &Config,
    keys_dir: &Path,
    mode: BuildMode,
    notes: &mut Vec<String>,
) -> Result<Option<OwnKeys>, BuildError> {
    let t = &config.tokens;
    if !t.issue_tokens {
        return Ok(None);
    }
    if !(key_to_make(config, keys_dir, mode) && keys_at_default(config)) {
        return load(config, keys_dir).map(Some);
    }
    let kid = t.active_kid.clone().unwrap_or_else(|| format!("es256-{}", crate::auth::jwt::now()));
    let path = keys_dir.join(format!("{kid}.pem"));
    let pem = keys::generate_pem(Alg::ES256)?;
    if mode == BuildMode::Check {
        notes.push(format!("would create the ES256 signing key {}", path.display()));
        return Ok(Some(OwnKeys::single(SigningKey::from_pem(&kid, pem.as_bytes(), t.rsa_alg)?)));
    }
    keys::write_private(&path, &pem).map_err(|e| BuildError::Invalid(format!("{}: {e}", path.display())))?;
    tracing::warn!(path = %path.display(), "first start: generated an ES256 signing key");
    notes.push(format!("created the ES256 signing key {}", path.display()));
    load(config, keys_dir).map(Some)
}

/// In validation-only mode, a warning when `keys_dir` still holds private keys (`*.pem`): they
/// sign nothing here, and a sidecar is meant to hold none.
pub fn unused_keys(config: &Config, keys_dir: &Path) -> Option<String> {
    (!config.tokens.issue_tokens && has_pem(keys_dir)).then(|| {
        format!(
            "tokens.keys_dir {} holds *.pem private keys that are unused: tokens.issue_tokens = false signs nothing \
             (remove them; a validating sidecar needs no private key)",
            keys_dir.display()
        )
    })
}

fn load(config: &Config, keys_dir: &Path) -> Result<OwnKeys, BuildError> {
    let t = &config.tokens;
    OwnKeys::load(keys_dir, t.active_kid.as_deref(), t.rsa_alg)
        .map_err(|e| BuildError::Invalid(format!("tokens.keys_dir: {e}")))
}

/// The listener's certificate: loaded, or on a first start at the default location, created.
pub fn certificate(
    config: &Config,
    (cert, key): (&Path, &Path),
    mode: BuildMode,
    notes: &mut Vec<String>,
) -> Result<Arc<CertifiedKey>, BuildError> {
    if !(cert_to_make(config, (cert, key), mode) && cert_at_default(config)) {
        return load_cert(cert, key);
    }
    let (c, k) = (cert.display(), key.display());
    if mode == BuildMode::Check {
        notes.push(format!("would create a self-signed localhost certificate {c} and key {k}"));
        return Ok(crate::tls::self_signed_in_memory(cert, key)?);
    }
    crate::tls::write_self_signed(cert, key)?;
    tracing::warn!(
        cert = %c,
        key = %k,
        "first start: wrote a self-signed certificate for localhost; replace it before serving real clients"
    );
    notes.push(format!("created a self-signed localhost certificate {c} and key {k}"));
    load_cert(cert, key)
}

fn load_cert(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, BuildError> {
    crate::tls::load_certified_key(cert, key).map_err(|e| BuildError::Invalid(format!("tls: {e}")))
}

fn has_pem(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).any(|e| e.path().extension().is_some_and(|x| x == "pem")))
        .unwrap_or(false)
}
