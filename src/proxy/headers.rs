//! Header rewriting between client and upstream, in one place so every rule is auditable:
//! hop-by-hop removal (RFC 9110 section 7.6.1), `X-Forwarded-*`, and the identity headers the
//! upstream trusts, which a client must never be able to set itself.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::tls::client_cert::CertHeaderError;

/// Identity headers always set from the verified token (and always stripped from the client).
pub static X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
/// The `client_id` claim.
pub static X_AUTH_CLIENT_ID: HeaderName = HeaderName::from_static("x-auth-client-id");
/// The `scope` claim.
pub static X_AUTH_SCOPE: HeaderName = HeaderName::from_static("x-auth-scope");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Fixed hop-by-hop headers; `Connection` may name more, and any `Proxy-*` header goes too.
const HOP_BY_HOP: [&HeaderName; 5] = [
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::PROXY_AUTHORIZATION,
    &header::PROXY_AUTHENTICATE,
];

/// True for a WebSocket handshake (`Connection: upgrade` and `Upgrade: websocket`), which is proxied.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    upgrade && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    tokens_of(headers.get_all(header::CONNECTION))
}

/// The comma-separated tokens of `Connection` header values.
fn tokens_of<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> impl Iterator<Item = &'a str> {
    values
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers. A WebSocket upgrade keeps `Connection: upgrade` + `Upgrade`.
/// `TE` keeps its `trailers` token, alone: it says the client takes trailers, which the gateway
/// passes through, and gRPC servers want it (h2 allows no other `TE`); the pool sends it to h2
/// upstreams only.
///
/// A message with `Transfer-Encoding` is framed by it, never by `Content-Length` (RFC 9112
/// section 6.3), so when both came, `Content-Length` goes too: hyper reads such a body chunked,
/// and passing the sender's length on with a re-framed body would truncate it (HTTP/1.1) or make
/// a malformed h2 response (the response side of request smuggling).
///
/// One pass over the names present, then removals of only those found: most requests carry
/// none, and a response usually has a lone `Connection: keep-alive` (a removal per header is a
/// hash lookup, which is what this function used to spend its time on).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let websocket = is_websocket_upgrade(headers);
    let connection = headers.get_all(header::CONNECTION);
    let named = connection.iter().next().is_some();
    let mut doomed: Vec<HeaderName> = Vec::new();
    let (mut chunked, mut length, mut te) = (false, false, false);
    for name in headers.keys() {
        te |= *name == header::TE;
        chunked |= *name == header::TRANSFER_ENCODING;
        length |= *name == header::CONTENT_LENGTH;
        let fixed = HOP_BY_HOP.contains(&name)
            || *name == header::CONNECTION
            || *name == KEEP_ALIVE
            || (*name == header::UPGRADE && !websocket)
            || name.as_str().starts_with("proxy-");
        // A client must not be able to make us drop headers we set ourselves or need end to end.
        let protected = *name == header::HOST
            || *name == header::AUTHORIZATION
            || *name == header::CONTENT_LENGTH
            || (*name == header::UPGRADE && websocket);
        let listed = named && !protected && tokens_of(&connection).any(|t| t.eq_ignore_ascii_case(name.as_str()));
        if fixed || listed {
            doomed.push(name.clone());
        }
    }
    if chunked && length {
        doomed.push(header::CONTENT_LENGTH);
    }
    let trailers = te && tokens_of(headers.get_all(header::TE)).any(|t| t.eq_ignore_ascii_case("trailers"));
    for name in doomed {
        headers.remove(name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes every `name` header (a load balancer's client certificate, `tls.client_cert_header`)
/// so that none ever reaches an upstream, whoever sent it. Returns its value when exactly one
/// came, an error when several did.
pub fn take_client_cert(headers: &mut HeaderMap, name: &HeaderName) -> Result<Option<HeaderValue>, CertHeaderError> {
    // `remove` drops every value and returns the first: count them before.
    let several = headers.get_all(name).iter().nth(1).is_some();
    match headers.remove(name) {
        Some(_) if several => Err(CertHeaderError::Repeated),
        v => Ok(v),
    }
}

/// Whether a response head fits an h2 client's SETTINGS_MAX_HEADER_LIST_SIZE of `max` (RFC 9113
/// section 6.5.2: each field counts its name and value plus 32; `:status` counts too). `u32::MAX`
/// (HTTP/1.1, or no limit advertised) skips the sum.
pub fn fits_header_list(headers: &HeaderMap, max: u32) -> bool {
    if max == u32::MAX {
        return true;
    }
    let status = ":status".len() + 3 + 32;
    let size = headers.iter().fold(status, |n, (k, v)| n + k.as_str().len() + v.len() + 32);
    size <= max as usize
}

/// The client address as `X-Forwarded-For` shows it; made once per connection, shared by its
/// requests (a clone is a reference count, where formatting the address costs a thousand
/// instructions per request).
pub fn client_address_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(client.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The URI the client addressed, without query: scheme and host as the client used them (from
/// `X-Forwarded-Proto`/`-Host` only when `trust` says the peer is a proxy of ours), and the path
/// as sent. What a DPoP proof's `htu` must name (RFC 9449 4.3). None without any host.
pub fn client_uri(parts: &http::request::Parts, tls: bool, trust: bool) -> Option<String> {
    let forwarded = |name: &HeaderName| {
        trust
            .then(|| parts.headers.get(name))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = forwarded(&X_FORWARDED_PROTO).unwrap_or(if tls { "https" } else { "http" });
    let host = match forwarded(&X_FORWARDED_HOST) {
        Some(h) => h,
        None => match parts.uri.authority() {
            Some(a) => a.as_str(),
            None => parts.headers.get(http::header::HOST)?.to_str().ok()?,
        },
    };
    Some(format!("{scheme}://{host}{}", parts.uri.path()))
}

/// W3C Trace Context toward the upstream: `traceparent` is always ours (the client's is
/// replaced); the client's `tracestate` goes on only with the trace it belongs to, when that
/// trace was continued (a trusted caller, `server.trust_forwarded`), and is removed otherwise.
pub fn set_trace_context(h: &mut HeaderMap, traceparent: HeaderValue, keep_tracestate: bool) {
    h.insert(crate::telemetry::traceparent::TRACEPARENT.clone(), traceparent);
    if !keep_tracestate {
        h.remove(&crate::telemetry::traceparent::TRACESTATE);
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host`; client-sent ones (and `Forwarded`) are replaced unless
/// trusted. `client` is the connection's address from [`client_address_value`].
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
    trust: bool,
) {
    let prior = if trust {
        let joined: Vec<&str> = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
        (!joined.is_empty()).then(|| joined.join(", "))
    } else {
        if headers.contains_key(&FORWARDED) {
            headers.remove(&FORWARDED);
        }
        None
    };
    let xff = match prior {
        Some(p) => HeaderValue::from_str(&format!("{p}, {}", client.to_str().unwrap_or_default())).ok(),
        None => Some(client.clone()),
    };
    match xff {
        // insert replaces every earlier value.
        Some(v) => {
            headers.insert(&X_FORWARDED_FOR, v);
        }
        None => {
            headers.remove(&X_FORWARDED_FOR);
        }
    }
    if !(trust && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trust && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(&X_FORWARDED_HOST, h);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

/// Underscore spellings of these are aliases to CGI, WSGI and PHP upstreams (`X_Auth_Subject`
/// and `X-Auth-Subject` become one variable), so they must not get through either.
const ALIASED: [&str; 14] = [
    "x-auth-subject",
    "x-auth-client-id",
    "x-auth-scope",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
];

/// Removes every identity header a client might spoof: the defaults plus the route's own names,
/// and their underscore aliases. `HeaderMap` names are lowercase, so any letter case is covered.
/// One pass over the names present; removals only for what is found (usually nothing).
pub fn strip_identity<'a>(headers: &mut HeaderMap, extra: impl Iterator<Item = &'a HeaderName> + Clone) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let identity = *name == X_AUTH_SUBJECT
            || *name == X_AUTH_CLIENT_ID
            || *name == X_AUTH_SCOPE
            || extra.clone().any(|e| e == name);
        let alias = || {
            let dashed = name.as_str().replace('_', "-");
            ALIASED.contains(&dashed.as_str()) || extra.clone().any(|e| e.as_str() == dashed)
        };
        if identity || (name.as_str().contains('_') && alias()) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Sets an identity header when the value is a valid header value (claims with CR/LF are dropped).
pub fn set_identity(headers: &mut HeaderMap, name: &HeaderName, value: Option<&str>) {
    if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(name.clone(), v);
    }
}

/// A port, when present, is a number that fits in 16 bits (`http` accepts "host:99999").
fn port_ok(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) if !authority.ends_with(']') && !host.is_empty() => port.parse::<u16>().is_ok(),
        _ => true,
    }
}

/// RFC 9112 section 3.2: an HTTP/1.1 request has exactly one valid `Host`; with an absolute
/// target or h2 `:authority`, a `Host` must agree with it. Anything else is answered 400.
pub fn check_host(version: http::Version, uri: &http::Uri, headers: &HeaderMap) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    let Some(host) = host else {
        return if version == http::Version::HTTP_11 && uri.authority().is_none() {
            Err("missing Host header")
        } else {
            Ok(())
        };
    };
    let valid = host
        .to_str()
        .ok()
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .filter(|a| !a.as_str().contains('@') && port_ok(a.as_str()));
    let Some(authority) = valid else { return Err("invalid Host header") };
    match uri.authority() {
        Some(a) if !a.as_str().eq_ignore_ascii_case(authority.as_str()) => {
            Err("Host disagrees with the request target")
        }
        _ => Ok(()),
    }
}

/// `RateLimit-Policy` and `RateLimit` (IETF httpapi-ratelimit-headers, structured fields): the
/// route's quota (`q` requests per `w` seconds) and what is left of it (`r` now, full again in
/// `t` seconds).
pub fn set_rate_limit(h: &mut HeaderMap, rate: crate::quota::Rate, d: &crate::quota::Decision) {
    static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    static STATE: HeaderName = HeaderName::from_static("ratelimit");
    thread_local! {
        /// The last policy value made on this thread: a route's rate rarely changes, so most
        /// requests clone it (a reference count) instead of formatting it again.
        static LAST_POLICY: std::cell::RefCell<Option<((u32, u64), HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let key = (rate.burst, rate.window_secs());
    let policy = LAST_POLICY.with_borrow_mut(|last| match last {
        Some((k, v)) if *k == key => v.clone(),
        _ => {
            let v = quota_value(b"\"route\";q=", key.0 as u64, b";w=", key.1);
            *last = Some((key, v.clone()));
            v
        }
    });
    h.insert(&POLICY, policy);
    h.insert(&STATE, quota_value(b"\"route\";r=", d.remaining as u64, b";t=", d.reset_secs));
}

/// `<a><x><b><y>`, numbers in decimal: the two IETF RateLimit headers, without `format!`.
fn quota_value(a: &[u8], x: u64, b: &[u8], y: u64) -> HeaderValue {
    let (mut nx, mut ny) = (itoa::Buffer::new(), itoa::Buffer::new());
    let mut out = bytes::BytesMut::with_capacity(a.len() + b.len() + 40);
    for part in [a, nx.format(x).as_bytes(), b, ny.format(y).as_bytes()] {
        out.extend_from_slice(part);
    }
    // Quotes, letters, digits and punctuation only: always a valid value.
    HeaderValue::from_maybe_shared(out.freeze()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "close"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("proxy-foo", "1"),
            ("upgrade", "h2c"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn te_keeps_only_trailers() {
        for (sent, kept) in [("trailers", Some("trailers")), ("gzip;q=0.5, Trailers", Some("trailers")), ("gzip", None)]
        {
            let mut h = map(&[("te", sent), ("connection", "TE")]);
            strip_hop_by_hop(&mut h);
            assert_eq!(h.get("te").map(|v| v.to_str().unwrap()), kept, "{sent}");
            assert!(h.get("connection").is_none());
        }
    }

    #[test]
    fn connection_cannot_remove_authorization_or_host() {
        let mut h = map(&[
            ("connection", "authorization, host, content-length"),
            ("authorization", "Bearer t"),
            ("host", "h"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn host_must_be_single_valid_and_agree_with_the_authority() {
        use http::Version;
        let origin: http::Uri = "/x".parse().unwrap();
        let absolute: http::Uri = "https://good.example/x".parse().unwrap();
        assert!(check_host(Version::HTTP_11, &origin, &map(&[("host", "api.test:8443")])).is_ok());
        assert!(check_host(Version::HTTP_11, &origin, &map(&[])).is_err());
        assert!(check_host(Version::HTTP_10, &origin, &map(&[])).is_ok());
        assert!(check_host(Version::HTTP_11, &origin, &map(&[("host", "a"), ("host", "b")])).is_err());
        for bad in ["a b", "evil.com:99999", "user@evil.example", ""] {
            assert!(check_host(Version::HTTP_11, &origin, &map(&[("host", bad)])).is_err(), "{bad}");
        }
        assert!(check_host(Version::HTTP_2, &absolute, &map(&[])).is_ok());
        assert!(check_host(Version::HTTP_2, &absolute, &map(&[("host", "GOOD.example")])).is_ok());
        assert!(check_host(Version::HTTP_2, &absolute, &map(&[("host", "evil.example")])).is_err());
    }

    #[test]
    fn transfer_encoding_takes_content_length_with_it() {
        let mut h = map(&[("content-length", "4"), ("transfer-encoding", "chunked"), ("x-keep", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = map(&[("content-length", "4")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["content-length"], "4");
    }

    #[test]
    fn websocket_upgrade_is_kept() {
        let mut h = map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
    }

    #[test]
    fn forwarded_headers_are_replaced_unless_trusted() {
        let spoof = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=6.6.6.6"),
        ];
        let mut h = map(&spoof);
        let client = client_address_value("10.0.0.1".parse().unwrap());
        set_forwarded(&mut h, &client, "https", Some(HeaderValue::from_static("api.test")), false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.test");
        assert!(!h.contains_key("forwarded"));
        let mut h = map(&spoof);
        set_forwarded(&mut h, &client, "https", None, true);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "gopher");
        assert!(h.contains_key("forwarded"));
    }

    #[test]
    fn identity_headers_are_stripped_in_any_case() {
        let mut h =
            map(&[("X-Auth-Subject", "root"), ("x-AUTH-scope", "admin"), ("X-Auth-Client-Id", "c"), ("X-Tenant", "t")]);
        let tenant = HeaderName::from_static("x-tenant");
        strip_identity(&mut h, std::iter::once(&tenant));
        assert!(h.is_empty(), "{h:?}");
        set_identity(&mut h, &X_AUTH_SUBJECT, Some("alice\r\nx-evil: 1"));
        assert!(h.is_empty(), "a claim with CR/LF must not become a header");
        set_identity(&mut h, &X_AUTH_SUBJECT, Some("alice"));
        let mut u =
            map(&[("X_Auth_Subject", "root"), ("x_forwarded_for", "1.2.3.4"), ("X_Tenant", "t"), ("x_other", "kept")]);
        strip_identity(&mut u, std::iter::once(&tenant));
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!(u["x_other"], "kept");
        assert_eq!(h["x-auth-subject"], "alice");
    }
}
