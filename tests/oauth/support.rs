//! Helpers for the token-endpoint tests: the config (the common client and user tables, lockout,
//! state), a form-posting client, an `oauth2` crate HTTP client over hyper/tokio-rustls,
//! JWKS-based verification with `jsonwebtoken`, and client-assertion keys.

use std::net::SocketAddr;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oauth2::{ClientId, ClientSecret, TokenUrl};
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};

use crate::common::*;
pub use crate::oauth2_http::*;

/// Knobs that differ between tests.
#[derive(Clone)]
pub struct Opts {
    pub tokens_extra: String,
    pub max_failures: u32,
    pub base_wait_secs: u64,
    pub per_ip_per_minute: u32,
    pub top_extra: String,
    pub tables: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            tokens_extra: String::new(),
            max_failures: 3,
            base_wait_secs: 2,
            per_ip_per_minute: 0,
            top_extra: String::new(),
            tables: tables(),
        }
    }
}

/// A whole `gateway.toml` for the token endpoint tests: a real redb state file in the temp dir.
pub fn config(o: &Opts) -> String {
    Config::new()
        .top(&o.top_extra)
        .tokens(&o.tokens_extra)
        .rest(&lockout(o.max_failures, o.base_wait_secs, o.per_ip_per_minute))
        .rest("\n[state]\npath = \"state/tokengate.redb\"\n")
        .rest(&route("/api", "echo", ""))
        .rest(&o.tables)
        .text()
}

pub async fn start(o: &Opts) -> Gw {
    Gw::start_text(&config(o)).await
}

pub async fn start_default() -> Gw {
    start(&Opts::default()).await
}

/// Where to talk to a running gateway (a `Gw`, or one restarted on the same folder).
#[derive(Clone)]
pub struct Ep {
    pub https: SocketAddr,
    pub plain: SocketAddr,
    pub cert: CertificateDer<'static>,
}

/// How the client authenticates in a form request.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    /// client_secret_basic (id and secret form-urlencoded inside Basic).
    Basic(&'a str, &'a str),
    /// client_secret_post.
    Post(&'a str, &'a str),
}

impl Ep {
    pub fn of(gw: &Gw) -> Ep {
        Ep { https: gw.https, plain: gw.plain, cert: gw.cert.clone() }
    }

    /// One request over a fresh HTTPS/1.1 connection.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut c = Conn::tls(self.https, std::slice::from_ref(&self.cert), false).await;
        c.send(req(method, path, headers, full(body.to_owned()))).await
    }

    /// A form POST to `path` with the given client authentication.
    pub async fn form(&self, path: &str, auth: Auth<'_>, params: &[(&str, &str)]) -> Resp {
        let mut p: Vec<(&str, &str)> = params.to_vec();
        let mut headers = vec![FORM_CT];
        let basic;
        match auth {
            Auth::None => {}
            Auth::Basic(id, secret) => {
                basic = basic_header(id, secret);
                headers.push(("authorization", &basic));
            }
            Auth::Post(id, secret) => {
                p.push(("client_id", id));
                p.push(("client_secret", secret));
            }
        }
        self.send("POST", path, &headers, &encode_form(&p)).await
    }

    pub async fn token(&self, auth: Auth<'_>, params: &[(&str, &str)]) -> Resp {
        self.form("/oauth2/token", auth, params).await
    }

    /// Password grant for `app` (Basic); the answer as JSON after asserting 200.
    pub async fn password_ok(&self, client: &str, user: &str, pw: &str, scope: Option<&str>) -> Value {
        let mut p = vec![("grant_type", "password"), ("username", user), ("password", pw)];
        if let Some(s) = scope {
            p.push(("scope", s));
        }
        let r = self.token(Auth::Basic(client, SECRET), &p).await;
        assert_eq!(r.status, 200, "password grant: {}", r.text());
        r.json()
    }

    pub async fn refresh(&self, client: &str, rt: &str) -> Resp {
        self.token(Auth::Basic(client, SECRET), &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await
    }

    pub async fn cc_token(&self, client: &str) -> String {
        let r = self.token(Auth::Basic(client, SECRET), &[("grant_type", "client_credentials")]).await;
        assert_eq!(r.status, 200, "client_credentials: {}", r.text());
        r.json()["access_token"].as_str().expect("access_token").to_owned()
    }

    /// GET on the protected echo route with a bearer token.
    pub async fn api(&self, token: &str) -> Resp {
        self.send("GET", "/api/hello", &[("authorization", &format!("Bearer {token}"))], "").await
    }

    pub async fn jwks(&self) -> Value {
        let r = self.send("GET", "/.well-known/jwks.json", &[], "").await;
        assert_eq!(r.status, 200, "jwks: {}", r.text());
        r.json()
    }

    /// An `oauth2` crate client for `id`/`secret` with the token URL on this gateway.
    pub fn oauth2_client(&self, id: &str, secret: Option<&str>) -> OClient {
        let url = TokenUrl::new(format!("https://localhost:{}/oauth2/token", self.https.port())).expect("url");
        let c = OBase::new(ClientId::new(id.to_owned())).set_token_uri(url);
        match secret {
            Some(s) => c.set_client_secret(ClientSecret::new(s.to_owned())),
            None => c,
        }
    }

    pub fn http(&self) -> Http {
        Http { addr: self.https, cert: self.cert.clone() }
    }
}

/// Asserts an RFC 6749 5.2 error answer: status, `error`, and the no-cache headers.
pub fn assert_oauth_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "expected {status} {code}, got: {}", r.text());
    assert_eq!(r.json()["error"], code, "body: {}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"), "Cache-Control on {code}");
    assert_eq!(r.header("pragma"), Some("no-cache"), "Pragma on {code}");
}

/// Verifies `token` with `jsonwebtoken` against the served JWKS; returns (header, claims).
pub fn verify_with_jwks(jwks: &Value, token: &str, aud: &str) -> (jsonwebtoken::Header, Value) {
    let header = jsonwebtoken::decode_header(token).expect("JWT header");
    let kid = header.kid.clone().expect("kid in header");
    let set: JwkSet = serde_json::from_value(jwks.clone()).expect("JWKS parses");
    let jwk = set.find(&kid).unwrap_or_else(|| panic!("kid {kid} is not in the JWKS"));
    let key = DecodingKey::from_jwk(jwk).expect("decoding key from JWK");
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[aud]);
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &v).expect("token verifies against the JWKS");
    (header, data.claims)
}

/// A client-assertion key pair: the private PEM (for jsonwebtoken) and the public halves.
pub struct AssertionKey {
    pub private_pem: String,
    pub jwk: Value,
    pub spki_pem: String,
}

pub fn assertion_key(kid: &str) -> AssertionKey {
    let (pem, sk) = fresh_key(kid, tokengate::keys::Alg::ES256);
    let jwk = sk.public_jwk().clone();
    let spki = p256_spki_der(&jwk_point(&jwk));
    AssertionKey { private_pem: pem, jwk, spki_pem: tokengate::keys::pem_encode("PUBLIC KEY", &spki) }
}

/// A `private_key_jwt` assertion signed with jsonwebtoken.
pub fn assertion(key: &AssertionKey, kid: Option<&str>, client: &str, aud: &str, exp_in: i64, jti: &str) -> String {
    let now = now() as i64;
    let mut h = jsonwebtoken::Header::new(Algorithm::ES256);
    h.kid = kid.map(str::to_owned);
    let claims = json!({"iss": client, "sub": client, "aud": aud, "iat": now, "exp": now + exp_in, "jti": jti});
    let k = jsonwebtoken::EncodingKey::from_ec_pem(key.private_pem.as_bytes()).expect("encoding key");
    jsonwebtoken::encode(&h, &claims, &k).expect("sign assertion")
}
