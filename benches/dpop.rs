//! What a DPoP proof costs the proxy per request, per algorithm (RFC 9449 section 4.3): no cache
//! can skip it, since every request carries a new proof.
//!
//! `proof/<ALG>` is the whole stateless check of `dpop::verify_proof` (base64 and JSON of header
//! and claims, `typ`/`alg`/`htm`/`htu`/`iat`/`ath`, the embedded `jwk` parsed into a key, the
//! signature, the RFC 7638 thumbprint); `replay/first_use` is the in-memory replay check that
//! follows it; compare with `jwt/verify/<ALG>` of `benches/validation.rs` (the bare signature).
//!
//! Run: `cargo bench --bench dpop` (add `-- ES256` to filter).

use std::hint::black_box;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use tokengate::config::RsaAlg;
use tokengate::dpop::replay::{proof_id, ReplayMemory, Seen};
use tokengate::dpop::{token_hash, verify_proof, Expect};
use tokengate::keys::{generate_pem, Alg, SigningKey};

const URI: &str = "https://api.example/orders/17";
const ALGS: [Alg; 5] = [Alg::ES256, Alg::ES384, Alg::EdDSA, Alg::RS256, Alg::PS256];

/// A proof for GET `URI` bound to `token`, signed by a fresh `alg` key, issued at `now`.
fn proof(alg: Alg, token: &str, now: u64) -> String {
    let rsa = if alg == Alg::PS256 { RsaAlg::PS256 } else { RsaAlg::RS256 };
    let key = SigningKey::from_pem("k", generate_pem(alg).unwrap().as_bytes(), rsa).unwrap();
    let header = json!({"typ": "dpop+jwt", "alg": alg.as_str(), "jwk": key.public_jwk()});
    let claims = json!({"jti": "9f3c2a", "htm": "GET", "htu": URI, "iat": now, "ath": token_hash(token)});
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

fn dpop(c: &mut Criterion) {
    let now = tokengate::jwt::now();
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    let mut g = c.benchmark_group("dpop");
    for alg in ALGS {
        let p = proof(alg, token, now);
        let expect =
            Expect { method: "GET", uri: URI, access_token: Some(token), algorithms: &ALGS, max_age: 60, leeway: 5 };
        verify_proof(&p, &expect, now).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        g.bench_function(format!("proof/{}", alg.as_str()), |b| {
            b.iter(|| verify_proof(black_box(&p), &expect, now).unwrap())
        });
    }
    let memory = ReplayMemory::new();
    let mut n = 0u64;
    g.bench_function("replay/first_use", |b| {
        b.iter(|| {
            n += 1;
            let id = proof_id("jkt", &n.to_string());
            // 65 s windows of 100k proofs each (~1.5k proofs/s): memory stays two windows deep.
            let at = now + (n / 100_000) * 65;
            assert_eq!(memory.first_use(black_box(&id), at, 65, usize::MAX), Seen::First);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = dpop
}
criterion_main!(benches);
