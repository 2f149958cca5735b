//! Where a request goes: the host it names, the target sent upstream, and, for the log, the
//! upstream's address and what went wrong with it in words.

use http::Uri;

use super::upstream::pool::UpstreamError;
use crate::config::UpstreamTarget;
use crate::snapshot::{Route, Snapshot, Upstream};

/// The host a request names: its `:authority` or absolute-form target, else its `Host` header
/// (the two were checked to agree by `headers::check_host`).
pub(super) fn request_host(parts: &http::request::Parts) -> Option<&str> {
    match parts.uri.authority() {
        Some(a) => Some(a.as_str()),
        None => parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()),
    }
}

/// The origin-form target sent upstream: the canonical path, less the `matched` bytes of route
/// prefix when `strip_prefix`, under the upstream's base path, with the query as sent. The
/// client's own target is reused untouched when nothing changes it (the common case: no copy,
/// no parse).
pub(super) fn upstream_target(route: &Route, matched: usize, uri: &Uri, rewritten: Option<&str>) -> Option<Uri> {
    let base = match &route.upstream {
        Upstream::Remote { base_path, .. } => base_path.as_str(),
        Upstream::Echo | Upstream::Group(_) => "",
    };
    let path = rewritten.unwrap_or(uri.path());
    let path = match path.get(matched..) {
        Some(rest) if route.strip_prefix && rest.starts_with('/') => rest,
        Some(_) if route.strip_prefix && matched > 0 => "/",
        _ => path,
    };
    // (Stripping borrows a suffix, so "unchanged" is a length test, not a Cow variant.)
    if base.is_empty() && rewritten.is_none() && path.len() == uri.path().len() && uri.authority().is_none() {
        return Some(uri.clone());
    }
    let mut target = String::with_capacity(base.len() + path.len() + uri.query().map_or(0, |q| q.len() + 1));
    target.push_str(base);
    target.push_str(path);
    if let Some(q) = uri.query() {
        target.push('?');
        target.push_str(q);
    }
    Uri::try_from(target).ok()
}

/// `host:port` of a route's upstream, for logs (the pool keeps its own copy private).
pub(super) fn upstream_address(snap: &Snapshot, route: &Route) -> Option<String> {
    let r = snap.config.routes.get(route.index)?;
    let uri = match &r.upstream {
        UpstreamTarget::Url(uri) => uri,
        UpstreamTarget::Group(name) => return Some(name.clone()),
        UpstreamTarget::Echo => return None,
    };
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    Some(format!("{}:{port}", uri.host()?))
}

/// An upstream failure in words: a refused certificate names the key that pins what is trusted.
pub(super) fn upstream_reason(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Connect(inner) => format!("connect: {}", crate::tls::verify::describe(inner.as_ref())),
        UpstreamError::Http(inner) => crate::tls::verify::describe(inner),
    }
}

/// The operating system's error under an upstream failure ("Connection refused (os error
/// 111)"): the errors around it (connector, hyper) only say what was being done.
pub(super) fn os_error(e: &UpstreamError) -> Option<&std::io::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = match e {
        UpstreamError::Connect(inner) => Some(inner.as_ref()),
        UpstreamError::Http(inner) => Some(inner),
    };
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = err.source();
    }
    None
}
