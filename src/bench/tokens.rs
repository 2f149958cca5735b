//! Where the bearer tokens come from: a file, local minting, or one client-credentials request.

use std::path::Path;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::HeaderValue;

use super::args::{MintSpec, TokenSource};
use super::conn::{Connector, Sender};
use crate::auth::jwt::{self, ACCESS_TOKEN_TYP};
use crate::auth::keys::SigningKey;

/// Tokens of a file: one a line, surrounding whitespace trimmed, blank and '#' lines skipped.
pub fn parse_token_file(text: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let t = t.strip_prefix("Bearer ").map(str::trim_start).unwrap_or(t);
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("line {}: a token must be printable ASCII without spaces", n + 1);
        }
        out.push(t.to_owned());
    }
    if out.is_empty() {
        bail!("no token in the file");
    }
    Ok(out)
}

/// Mints `spec.distinct` tokens, each with its own `jti`.
pub fn mint(spec: &MintSpec) -> anyhow::Result<Vec<String>> {
    let pem = std::fs::read(&spec.key).with_context(|| format!("reading {}", spec.key.display()))?;
    let key = SigningKey::from_pem(&spec.kid, &pem, spec.rsa_alg).with_context(|| spec.key.display().to_string())?;
    let now = jwt::now();
    (0..spec.distinct)
        .map(|_| {
            let mut claims = serde_json::json!({
                "iss": spec.iss,
                "sub": spec.sub,
                "aud": spec.aud,
                "scope": spec.scope,
                "client_id": "tokengate-bench",
                "iat": now,
                "exp": now + spec.ttl,
                "jti": jwt::random_id(),
            });
            if let Some(jkt) = &spec.jkt {
                claims["cnf"] = serde_json::json!({ "jkt": jkt });
            }
            jwt::sign(&key, ACCESS_TOKEN_TYP, &claims).context("signing")
        })
        .collect()
}

/// The `access_token` of a token endpoint's JSON answer.
pub fn access_token(body: &[u8]) -> Option<String> {
    member(body, "access_token")
}

/// The `refresh_token` of a token response, if any.
pub fn refresh_token(body: &[u8]) -> Option<String> {
    member(body, "refresh_token")
}

fn member(body: &[u8], name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(name)?.as_str().filter(|t| !t.is_empty()).map(str::to_owned)
}

/// Loads or makes the tokens of `source` (empty for [`TokenSource::None`]).
pub async fn load(source: &TokenSource, connector: &Connector) -> anyhow::Result<Vec<String>> {
    match source {
        TokenSource::None => Ok(Vec::new()),
        TokenSource::File(f) => read_file(f),
        TokenSource::Mint(spec) => mint(spec),
        TokenSource::Endpoint { url, client_id, client_secret, scope } => {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(s) = scope {
                form.append_pair("scope", s);
            }
            let auth = super::args::basic(client_id, client_secret);
            let ep = connector.http1().for_url(url.clone())?;
            let Sender::H1(mut conn) = ep.connect().await.with_context(|| format!("connecting to {url}"))? else {
                bail!("the token endpoint is asked over HTTP/1.1");
            };
            let headers = [
                (http::header::AUTHORIZATION, HeaderValue::from_str(&auth)?),
                (http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded")),
            ];
            let req = ep.encode(&http::Method::POST, &headers, form.finish().as_bytes());
            let answer = tokio::time::timeout(ep.timeout, conn.exchange(&req, true))
                .await
                .context("token endpoint timed out")?
                .with_context(|| format!("token request to {url}"))?;
            let (status, body) = (answer.status, answer.body.unwrap_or_default());
            match access_token(&body) {
                Some(t) if status == 200 => Ok(vec![t]),
                _ => bail!("token endpoint {url} answered {status} without an access_token"),
            }
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_token_file(&text).with_context(|| path.display().to_string())
}

/// `Bearer <token>` header values, built once.
pub fn bearer_values(tokens: &[String]) -> anyhow::Result<Vec<HeaderValue>> {
    tokens
        .iter()
        .map(|t| {
            HeaderValue::from_maybe_shared(Bytes::from(format!("Bearer {t}")))
                .context("a token is not a valid header value")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::{Issuer, Trust};
    use crate::auth::keys::{generate_pem, Alg, KeySet};
    use crate::config::RsaAlg;

    #[test]
    fn token_file_parsing() {
        let text = "# tokens\n\n  a.b.c  \r\nBearer d.e.f\n#x\ng.h.i";
        assert_eq!(parse_token_file(text).unwrap(), ["a.b.c", "d.e.f", "g.h.i"]);
        assert!(parse_token_file("\n# only comments\n  \n").unwrap_err().to_string().contains("no token"));
        let e = parse_token_file("ok\na b\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse_token_file("caf\u{e9}").is_err());
        assert_eq!(bearer_values(&["x.y.z".into()]).unwrap()[0], "Bearer x.y.z");
    }

    #[test]
    fn access_token_extraction() {
        assert_eq!(access_token(br#"{"access_token":"t","token_type":"Bearer"}"#).as_deref(), Some("t"));
        assert_eq!(refresh_token(br#"{"access_token":"t","refresh_token":"r"}"#).as_deref(), Some("r"));
        assert_eq!(refresh_token(br#"{"access_token":"t"}"#), None);
        for bad in [&br#"{"access_token":""}"#[..], br#"{"access_token":1}"#, b"{}", b"not json"] {
            assert_eq!(access_token(bad), None);
        }
    }

    #[test]
    fn minted_tokens_are_distinct_and_validate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b1.pem");
        std::fs::write(&path, generate_pem(Alg::ES256).unwrap()).unwrap();
        let spec = MintSpec {
            key: path.clone(),
            kid: "b1".into(),
            rsa_alg: RsaAlg::RS256,
            iss: "https://i".into(),
            aud: "api".into(),
            sub: "s".into(),
            scope: "read".into(),
            ttl: 60,
            distinct: 3,
            jkt: None,
        };
        let toks = mint(&spec).unwrap();
        assert_eq!(toks.len(), 3);
        assert!(toks[0] != toks[1] && toks[1] != toks[2]);
        let key = SigningKey::from_pem("b1", &std::fs::read(&path).unwrap(), RsaAlg::RS256).unwrap();
        let jwks = serde_json::json!({ "keys": [key.public_jwk()] }).to_string();
        let issuer = Issuer {
            keys: KeySet::from_jwks(jwks.as_bytes(), &[Alg::ES256]).unwrap().into(),
            algorithms: vec![Alg::ES256],
            audiences: vec!["api".into()],
            require_typ: Some("at+jwt".into()),
            leeway: 0,
            scope_claim: None,
        };
        let trust = Trust { issuers: [("https://i".to_string(), issuer)].into(), max_token_bytes: 8192 };
        for t in &toks {
            let v = trust.validate(t, None, jwt::now()).unwrap();
            assert_eq!((v.sub.as_deref(), v.scope.as_deref()), (Some("s"), Some("read")));
        }
        let bound = mint(&MintSpec { jkt: Some("abc".into()), distinct: 1, ..spec.clone() }).unwrap();
        let cnf = trust.validate(&bound[0], None, jwt::now()).unwrap().cnf.expect("cnf");
        assert_eq!(cnf.jkt.as_deref(), Some("abc"));
    }
}
