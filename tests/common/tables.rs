//! The demo secrets, their argon2id hashes (each computed once per test binary), and the
//! `[[clients]]` / `[[users]]` entries built from them.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The secret of every confidential demo client.
pub const SECRET: &str = "s3cret-Secret";
/// A client id and secret that must be form-encoded inside Basic (RFC 6749 2.3.1).
pub const SPECIAL_ID: &str = "a:b";
pub const SPECIAL_SECRET: &str = "p@ss:w rd&x=1+%";
pub const ALICE_PW: &str = "alice-pw";
pub const BOB_PW: &str = "bob-pw";
/// A password a test changes to.
pub const NEW_PW: &str = "changed-pw";

/// The argon2id PHC string of `secret`, hashed once per test binary (each ~50 ms).
pub fn hash_of(secret: &str) -> String {
    static H: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let mut cache = H.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(secret.to_owned()).or_insert_with(|| tokengate::secrets::hash(secret).expect("hash")).clone()
}

/// A TOML array of strings.
pub fn toml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `secret_hash` line of a confidential client with `secret`.
pub fn secret_hash(secret: &str) -> String {
    format!("secret_hash = \"{}\"", hash_of(secret))
}

/// One `[[clients]]` entry; `auth` is its authentication line (`secret_hash(..)`,
/// `public = true`, `public_key = ".."`, `jwks = ".."`), `default_scopes` is left out when empty.
pub fn client(id: &str, auth: &str, grants: &[&str], scopes: &[&str], default_scopes: &[&str]) -> String {
    let defaults = if default_scopes.is_empty() {
        String::new()
    } else {
        format!("default_scopes = {}\n", toml_list(default_scopes))
    };
    format!(
        "\n[[clients]]\nid = \"{id}\"\n{auth}\ngrants = {}\nscopes = {}\n{defaults}",
        toml_list(grants),
        toml_list(scopes)
    )
}

/// One `[[users]]` entry with the hash of `password`; `extra` holds more keys (`sub = ".."`).
pub fn user(name: &str, password: &str, scopes: &[&str], extra: &str) -> String {
    format!(
        "\n[[users]]\nusername = \"{name}\"\npassword_hash = \"{}\"\n{extra}scopes = {}\n",
        hash_of(password),
        toml_list(scopes)
    )
}

/// The standard client and user tables of the token endpoint tests: a client for each grant
/// (client_credentials, password + refresh_token, password only, public), one with special
/// characters in id and secret, and the users alice and bob.
pub fn tables() -> String {
    let s = secret_hash(SECRET);
    let all = ["read", "write", "admin", "openid"];
    [
        client("svc", &s, &["client_credentials"], &["read", "write"], &["read"]),
        client("app", &s, &["password", "refresh_token"], &all, &["read"]) + "introspect = true\n",
        client("app2", &s, &["password", "refresh_token"], &all, &[]),
        client("norefresh", &s, &["password"], &["read"], &["read"]),
        client("pub", "public = true", &["password"], &["read"], &["read"]),
        client(SPECIAL_ID, &secret_hash(SPECIAL_SECRET), &["client_credentials"], &["read"], &["read"]),
        user("alice", ALICE_PW, &["read", "write", "openid"], "sub = \"alice-sub\"\n"),
        user("bob", BOB_PW, &["read", "admin"], ""),
    ]
    .concat()
}
