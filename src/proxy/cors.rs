//! CORS at the gateway: a route's policy (`cors`, or `server.cors`) compiled once per snapshot
//! into the header values it sends, the preflights the gateway answers itself (before any token
//! is asked for: a browser never sends one with a preflight), and the headers every other answer
//! on such a route gets on its way out, the upstream's and the gateway's own refusals alike, so a
//! script can read a 401 or a 429 instead of seeing a network error.
//!
//! What decides where a preflight goes (the route of the method it asks for) is in `proxy`; this
//! file only reads and writes headers, and imports nothing of the request path.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::config::CorsConfig;
use crate::respond::json_error;

/// What a preflight's answer depends on: a cache must not give one origin's answer to another.
static PREFLIGHT_VARY: HeaderValue =
    HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
static ORIGIN_VARY: HeaderValue = HeaderValue::from_static("Origin");
static TRUE: HeaderValue = HeaderValue::from_static("true");

/// A CORS policy, checked and turned into header values once per snapshot.
#[derive(Debug)]
pub struct Cors {
    /// Who may read the answers, as browsers serialize origins (the value echoed back).
    origins: Origins,
    /// Methods a preflight may ask for, uppercased (browsers compare them case-sensitively).
    methods: Vec<Method>,
    /// `Access-Control-Allow-Methods`, joined once.
    allow_methods: HeaderValue,
    /// Request headers a preflight may ask for (lowercase, as `HeaderName` keeps them).
    headers: Vec<HeaderName>,
    /// `Access-Control-Allow-Headers`; None when no header is allowed.
    allow_headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers`; None when nothing beyond the safelisted ones is exposed.
    expose_headers: Option<HeaderValue>,
    /// `Access-Control-Max-Age`; None leaves the browser's default.
    max_age: Option<HeaderValue>,
    /// Send `Access-Control-Allow-Credentials: true` (never with `*`: checked when compiled).
    credentials: bool,
}

#[derive(Debug)]
enum Origins {
    /// `*`: any origin, answered `*` on every answer, so no cache can serve one without it.
    Any(HeaderValue),
    /// These origins exactly.
    List(Vec<HeaderValue>),
}

/// The CORS headers an answer other than a preflight's gets: the route's policy, and the
/// request's origin when the policy allows it (borrowed from the policy: nothing is copied).
#[derive(Debug, Clone, Copy)]
pub struct Actual<'s> {
    /// The policy of the route (or of the server, for answers no route made).
    policy: &'s Cors,
    /// The `Access-Control-Allow-Origin` value, when the request's origin may read the answer.
    origin: Option<&'s HeaderValue>,
}

impl Cors {
    /// Checks a `cors` table; the error names the key under `cors` and the value, in one sentence.
    pub fn compile(c: &CorsConfig) -> Result<Cors, String> {
        let origins = if c.origins.iter().any(|o| o == "*") {
            if c.origins.len() > 1 {
                return Err("origins: \"*\" allows every origin, so it must be the only one".into());
            }
            if c.credentials {
                return Err("origins: \"*\" cannot go with credentials = true (browsers refuse a wildcard for \
                            requests with credentials): list the origins"
                    .into());
            }
            Origins::Any(HeaderValue::from_static("*"))
        } else {
            if c.origins.is_empty() {
                return Err("origins: lists no origin, so no browser could use it".into());
            }
            let mut list: Vec<HeaderValue> = Vec::with_capacity(c.origins.len());
            for o in &c.origins {
                let v = HeaderValue::from_str(&origin(o)?).map_err(|_| format!("origins: {o:?} is not an origin"))?;
                if !list.contains(&v) {
                    list.push(v);
                }
            }
            Origins::List(list)
        };
        let mut methods: Vec<Method> = Vec::new();
        for m in &c.methods {
            if m == "*" {
                return Err("methods: \"*\" is not accepted: list the methods a preflight may ask for".into());
            }
            let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("methods: {m:?} is not an HTTP method"))?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        if methods.is_empty() {
            return Err("methods: lists no method, so every preflight would be refused".into());
        }
        let headers = header_names("headers", &c.headers)?;
        let expose = header_names("expose_headers", &c.expose_headers)?;
        Ok(Cors {
            origins,
            allow_methods: joined(methods.iter().map(Method::as_str)).unwrap_or_else(|| HeaderValue::from_static("")),
            methods,
            allow_headers: joined(headers.iter().map(HeaderName::as_str)),
            headers,
            expose_headers: joined(expose.iter().map(HeaderName::as_str)),
            max_age: c.max_age_secs.map(HeaderValue::from),
            credentials: c.credentials,
        })
    }

    /// The `Access-Control-Allow-Origin` value for a request: `*`, or its `Origin` when listed
    /// (exactly one `Origin`, compared byte for byte, as browsers serialize it).
    fn allowed_origin(&self, req: &HeaderMap) -> Option<&HeaderValue> {
        match &self.origins {
            Origins::Any(star) => Some(star),
            Origins::List(list) => {
                let mut sent = req.get_all(header::ORIGIN).iter();
                let (Some(origin), None) = (sent.next(), sent.next()) else { return None };
                list.iter().find(|o| o.as_bytes() == origin.as_bytes())
            }
        }
    }

    /// The answer to a preflight asking for `asked`: 204 with the policy's headers, or 403 with
    /// none of them, so the browser refuses the real request (fail closed) and whoever looks at
    /// the network tab or runs curl reads why. Never forwarded, no token asked for.
    pub fn preflight(&self, asked: &Method, req: &HeaderMap) -> Response<Full<Bytes>> {
        let refuse = |why: &str| {
            let mut resp = json_error(StatusCode::FORBIDDEN, "cors_refused", why);
            resp.headers_mut().insert(header::VARY, PREFLIGHT_VARY.clone());
            resp
        };
        let Some(origin) = self.allowed_origin(req) else {
            return refuse("this origin may not call this route (CORS policy)");
        };
        if !self.methods.contains(asked) {
            return refuse("the CORS policy does not allow this method");
        }
        if let Some(h) =
            requested_headers(req).find(|h| !self.headers.iter().any(|a| a.as_str().eq_ignore_ascii_case(h)))
        {
            return refuse(&format!("the CORS policy does not allow the request header {h:?}"));
        }
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        if let Some(v) = &self.allow_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        h.insert(header::VARY, PREFLIGHT_VARY.clone());
        resp
    }

    /// What an answer to this request (not a preflight) will carry, decided from its head.
    pub fn actual(&self, req: &HeaderMap) -> Actual<'_> {
        Actual { policy: self, origin: self.allowed_origin(req) }
    }
}

impl Actual<'_> {
    /// Sets the policy's headers on an answer, replacing whatever `Access-Control-*` headers the
    /// upstream sent: the route's policy is the one answer (an upstream's own `*` would otherwise
    /// widen it, and two `Access-Control-Allow-Origin` make browsers refuse the answer).
    pub fn apply(self, h: &mut HeaderMap) {
        while let Some(name) = h.keys().find(|n| n.as_str().starts_with("access-control-")).cloned() {
            h.remove(name);
        }
        let p = self.policy;
        if matches!(p.origins, Origins::List(_)) && !varies_on_origin(h) {
            h.append(header::VARY, ORIGIN_VARY.clone());
        }
        let Some(origin) = self.origin else { return };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if p.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        if let Some(v) = &p.expose_headers {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

/// The method a CORS preflight asks for: an `OPTIONS` with an `Origin` and a valid
/// `Access-Control-Request-Method`; None for any other request (a plain `OPTIONS` included).
pub fn preflight_method(method: &Method, req: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !req.contains_key(header::ORIGIN) {
        return None;
    }
    Method::from_bytes(req.get(header::ACCESS_CONTROL_REQUEST_METHOD)?.as_bytes()).ok()
}

/// Whether a route's `methods` name `OPTIONS`: its upstream answers its own preflights, so the
/// gateway forwards them and leaves CORS to it (no policy of its own, none inherited).
pub fn names_options(methods: &[String]) -> bool {
    methods.iter().any(|m| m.eq_ignore_ascii_case("OPTIONS"))
}

/// A route's policy: its own `cors`, else the server's; none on a route that names `OPTIONS`.
/// The error is the sentence after `route "...": `.
pub fn route_policy(
    own: Option<&CorsConfig>,
    server: Option<&Arc<Cors>>,
    methods: &[String],
) -> Result<Option<Arc<Cors>>, String> {
    match (own, names_options(methods)) {
        (Some(_), true) => Err("cors: a route whose methods name OPTIONS forwards preflights to its upstream, which \
                                answers CORS itself; remove OPTIONS from methods or remove cors"
            .into()),
        (Some(c), false) => Cors::compile(c).map(|c| Some(Arc::new(c))).map_err(|e| format!("cors.{e}")),
        (None, true) => Ok(None),
        (None, false) => Ok(server.cloned()),
    }
}

/// `origin` as browsers send it (scheme and host lowercase, no default port), or why it is none.
fn origin(s: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("origins: {s:?} {why}"));
    if s.eq_ignore_ascii_case("null") {
        return bad("is what sandboxed documents and file:// pages send, so allowing it would allow all of them");
    }
    let Some((scheme, rest)) = s.split_once("://") else { return bad("is not scheme://host[:port]") };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return bad("has no valid scheme: an origin is scheme://host[:port]");
    }
    if rest.contains(['/', '?', '#']) {
        return bad("has a path: an origin is scheme://host[:port], with no path (not even a trailing /)");
    }
    if rest.contains('@') {
        return bad("has user information: an origin is scheme://host[:port]");
    }
    if rest.contains('*') {
        return bad("has a wildcard: list each origin, or write \"*\" alone for any origin");
    }
    if !rest.is_ascii() {
        return bad("has a non-ASCII host: write it in its ASCII (punycode) form, as browsers send it");
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, after)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => (&rest[..addr.len() + 2], after),
            _ => return bad("has no valid IPv6 address between [ and ]"),
        },
        None => rest.find(':').map_or((rest, ""), |i| rest.split_at(i)),
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
    if !host_ok {
        return bad("has no valid host: an origin is scheme://host[:port]");
    }
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return bad("has a port outside 1-65535"),
        },
        _ => return bad("has no valid port: an origin is scheme://host[:port]"),
    };
    let scheme = scheme.to_ascii_lowercase();
    let default = matches!((scheme.as_str(), port), ("http", Some(80)) | ("https", Some(443)));
    let mut out = format!("{scheme}://{}", host.to_ascii_lowercase());
    if let Some(p) = port.filter(|_| !default) {
        out.push_str(&format!(":{p}"));
    }
    Ok(out)
}

/// `key`'s header names, lowercased and without repeats.
fn header_names(key: &str, names: &[String]) -> Result<Vec<HeaderName>, String> {
    let mut out: Vec<HeaderName> = Vec::with_capacity(names.len());
    for n in names {
        if n == "*" {
            return Err(format!(
                "{key}: \"*\" is not accepted: browsers never let it cover Authorization nor requests with \
                 credentials; list the headers"
            ));
        }
        let name = HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("{key}: {n:?} is not a header name"))?;
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// `a, b, c` as one header value; None for no items.
fn joined<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let text = items.collect::<Vec<_>>().join(", ");
    (!text.is_empty()).then(|| HeaderValue::from_str(&text).ok()).flatten()
}

/// The names a preflight's `Access-Control-Request-Headers` lists (comma-separated, any case).
fn requested_headers(req: &HeaderMap) -> impl Iterator<Item = &str> {
    req.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .into_iter()
        // An unreadable list asks for a header no policy names: the preflight is refused.
        .flat_map(|v| v.to_str().unwrap_or("\u{fffd}").split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether an answer's `Vary` already covers `Origin` (named, or `*`).
fn varies_on_origin(h: &HeaderMap) -> bool {
    h.get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("origin") || t.trim() == "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Cors, String> {
        let c: CorsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Cors::compile(&c)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn origins_are_compared_as_browsers_send_them() {
        let c = policy("origins = [\"HTTPS://App.Example.com:443\", \"http://localhost:8080\", \"http://[::1]:80\"]")
            .unwrap();
        let Origins::List(list) = &c.origins else { panic!("a list") };
        let list: Vec<&str> = list.iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(list, ["https://app.example.com", "http://localhost:8080", "http://[::1]"]);
    }

    #[test]
    fn bad_origins_are_refused_in_one_sentence() {
        for (origin, says) in [
            ("https://app.example.com/", "has a path"),
            ("app.example.com", "is not scheme://host[:port]"),
            ("https://*.example.com", "has a wildcard"),
            ("null", "sandboxed documents"),
            ("https://u@app.example.com", "user information"),
            ("https://app.example.com:0", "outside 1-65535"),
            ("https://app.example.com:x", "no valid port"),
            ("https://", "no valid host"),
            ("https://bücher.example", "punycode"),
        ] {
            let e = policy(&format!("origins = [{origin:?}]")).unwrap_err();
            assert!(e.starts_with(&format!("origins: {origin:?} ")) && e.contains(says), "{origin}: {e}");
        }
        let e = policy("origins = [\"*\"]\ncredentials = true").unwrap_err();
        assert!(e.contains("cannot go with credentials = true"), "{e}");
        let e = policy("origins = [\"*\", \"https://a.example\"]").unwrap_err();
        assert!(e.contains("must be the only one"), "{e}");
        let e = policy("origins = [\"https://a.example\"]\nheaders = [\"*\"]").unwrap_err();
        assert!(e.starts_with("headers: \"*\" is not accepted"), "{e}");
        let e = policy("origins = [\"https://a.example\"]\nmethods = [\"GE T\"]").unwrap_err();
        assert_eq!(e, "methods: \"GE T\" is not an HTTP method");
    }

    #[test]
    fn a_preflight_is_answered_only_for_what_the_policy_allows() {
        let c = policy(
            "origins = [\"https://app.example\"]\nmethods = [\"get\", \"DELETE\"]\nheaders = [\"Authorization\", \
             \"X-Custom\"]\nmax_age_secs = 600\ncredentials = true",
        )
        .unwrap();
        let ask = |origin: &str, acrh: &str| {
            headers(&[
                ("origin", origin),
                ("access-control-request-method", "DELETE"),
                ("access-control-request-headers", acrh),
            ])
        };
        let ok = c.preflight(&Method::DELETE, &ask("https://app.example", "authorization,X-CUSTOM"));
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        let h = ok.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-allow-methods"], "GET, DELETE");
        assert_eq!(h["access-control-allow-headers"], "authorization, x-custom");
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["access-control-allow-credentials"], "true");
        for (method, req) in [
            (Method::DELETE, ask("https://evil.example", "authorization")),
            (Method::PUT, ask("https://app.example", "authorization")),
            (Method::DELETE, ask("https://app.example", "authorization, x-other")),
        ] {
            let r = c.preflight(&method, &req);
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
            assert!(!r.headers().keys().any(|k| k.as_str().starts_with("access-control-")), "{:?}", r.headers());
        }
    }

    #[test]
    fn actual_answers_get_the_policy_and_lose_the_upstreams() {
        let c = policy("origins = [\"https://app.example\"]\nexpose_headers = [\"WWW-Authenticate\"]").unwrap();
        let mut resp =
            headers(&[("access-control-allow-origin", "*"), ("access-control-max-age", "9"), ("vary", "Accept")]);
        c.actual(&headers(&[("origin", "https://app.example")])).apply(&mut resp);
        assert_eq!(resp["access-control-allow-origin"], "https://app.example");
        assert_eq!(resp["access-control-expose-headers"], "www-authenticate");
        assert!(resp.get("access-control-max-age").is_none() && resp.get("access-control-allow-credentials").is_none());
        let vary: Vec<_> = resp.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept", "Origin"]);
        let mut other = headers(&[("access-control-allow-origin", "*"), ("vary", "origin")]);
        c.actual(&headers(&[("origin", "https://evil.example")])).apply(&mut other);
        assert!(other.get("access-control-allow-origin").is_none());
        assert_eq!(other.get_all("vary").iter().count(), 1, "Origin was already named");
    }

    #[test]
    fn a_route_naming_options_leaves_cors_to_its_upstream() {
        let server = Arc::new(policy("origins = [\"https://app.example\"]").unwrap());
        let opts = ["GET".to_string(), "options".into()];
        assert!(route_policy(None, Some(&server), &opts).unwrap().is_none());
        assert!(route_policy(None, Some(&server), &[]).unwrap().is_some());
        let own: CorsConfig = toml::from_str("origins = [\"https://b.example\"]").unwrap();
        assert!(route_policy(Some(&own), None, &opts)
            .unwrap_err()
            .starts_with("cors: a route whose methods name OPTIONS"));
    }
}
