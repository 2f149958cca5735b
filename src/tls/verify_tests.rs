//! The pinned-certificate rules on certificates made to order (rcgen): `CA:TRUE` trusted only
//! as the exact certificate, dates and names still checked, and each refusal in words.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

/// A self-signed `CA:TRUE` certificate (as `openssl req -x509` makes them) for `sans` with
/// common name `cn`, valid between the two years.
fn ca_true(cn: &str, sans: &[&str], from: i32, to: i32) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().clone()
}

fn verifier(pinned: &[&CertificateDer<'static>]) -> ServerVerifier {
    let mut roots = rustls::RootCertStore::empty();
    for c in pinned {
        roots.add((*c).clone()).unwrap();
    }
    let anchors = Anchors { key: "upstream_ca", file: Some("up.pem".into()) };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ServerVerifier::new(roots, pinned.iter().map(|c| (*c).clone()).collect(), anchors, provider).unwrap()
}

/// The verdict on `cert` presented as `host`, in words.
fn check(v: &ServerVerifier, cert: &CertificateDer<'static>, host: &str) -> Result<(), String> {
    let name = ServerName::try_from(host.to_owned()).unwrap();
    v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .map(drop)
        .map_err(|e| describe(&std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

#[test]
fn the_pinned_ca_true_certificate_is_trusted_with_its_names_and_dates_checked() {
    let with_san = ca_true("legacy", &["legacy.internal", "127.0.0.1"], 2020, 2099);
    let cn_only = ca_true("localhost", &[], 2020, 2099);
    let expired = ca_true("localhost", &["localhost"], 2000, 2001);
    let future = ca_true("localhost", &["localhost"], 2098, 2099);
    let v = verifier(&[&with_san, &cn_only, &expired, &future]);
    assert_eq!(check(&v, &with_san, "legacy.internal"), Ok(()));
    assert_eq!(check(&v, &with_san, "127.0.0.1"), Ok(()));
    assert_eq!(check(&v, &cn_only, "LOCALHOST"), Ok(()), "no SAN: the common name, in any case");
    for (cert, host, says) in [
        (&with_san, "legacy", "the certificate of legacy does not name this host (its subjectAltName does not match)"),
        (
            &cn_only,
            "127.0.0.1",
            "the certificate of 127.0.0.1 does not name this host (its common name does not match)",
        ),
        (&expired, "localhost", "the certificate of localhost expired on 2001-01-01T00:00:00Z"),
        (&future, "localhost", "the certificate of localhost is not valid before 2098-01-01T00:00:00Z"),
    ] {
        assert_eq!(check(&v, cert, host), Err(format!("{says}; upstream_ca pins up.pem")), "{host}");
    }
}

#[test]
fn a_ca_true_certificate_that_is_not_the_pinned_one_is_refused_in_words() {
    let pinned = ca_true("localhost", &["localhost"], 2020, 2099);
    let lookalike = ca_true("localhost", &["localhost"], 2020, 2099);
    let err = check(&verifier(&[&pinned]), &lookalike, "localhost").unwrap_err();
    assert_eq!(
        err,
        "the certificate of localhost is a CA certificate (CA:TRUE), which is trusted only as the very certificate \
         pinned; upstream_ca pins up.pem"
    );
}

#[test]
fn os_errors_and_other_tls_failures_are_words_too() {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(describe(&refused), crate::reason::io_reason(&refused));
    let alert = std::io::Error::other(rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure));
    assert_eq!(describe(&alert), "the server refused the TLS handshake: no TLS version or cipher in common");
    let nested = std::io::Error::other(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        rustls::Error::NoCertificatesPresented,
    ));
    assert_eq!(describe(&nested), "the server sent no certificate", "through two io::Error wrappers");
}
