//! Strict `application/x-www-form-urlencoded` request parsing for the OAuth endpoints: body only,
//! bounded, every parameter at most once (RFC 6749 section 3.2).

use std::collections::HashMap;

use http::header;
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::errors::OAuthError;

/// Largest accepted body; client assertions are the biggest legitimate parameter.
pub const MAX_BODY: usize = 16 * 1024;

/// The parsed parameters; empty values count as absent (RFC 6749 section 3.1).
#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

impl Form {
    /// A parameter's value, if present and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Parses a body, refusing repeated parameters.
    pub fn parse(body: &[u8]) -> Result<Form, OAuthError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err(OAuthError::InvalidRequest("a parameter is repeated"));
            }
        }
        Ok(Form(map))
    }
}

/// Reads and parses the form of a POST: the right content type, no query string, bounded size.
/// A refusal leaves the rest of `body` unread (the caller discards it).
pub async fn read(parts: &Parts, body: &mut Incoming) -> Result<Form, OAuthError> {
    if parts.method != http::Method::POST {
        return Err(OAuthError::InvalidRequest("use POST"));
    }
    if parts.uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(OAuthError::InvalidRequest("parameters must be in the body, not the query"));
    }
    let ct = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::InvalidRequest("content type must be application/x-www-form-urlencoded"));
    }
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY)
    {
        return Err(OAuthError::TooLarge);
    }
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| OAuthError::InvalidRequest("the request body could not be read"))?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > MAX_BODY {
                return Err(OAuthError::TooLarge);
            }
            bytes.extend_from_slice(data);
        }
    }
    Form::parse(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_and_empty_ones_ignored() {
        assert_eq!(Form::parse(b"a=1&a=2").unwrap_err(), OAuthError::InvalidRequest("a parameter is repeated"));
        let f = Form::parse(b"a=1&b=&c=x%20y+z").unwrap();
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), None);
        assert_eq!(f.get("c"), Some("x y z"));
    }
}
