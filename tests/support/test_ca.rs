//! A throwaway CA and the server certificates it signs, for the test servers that speak TLS
//! (the Redis server, the OpenID provider), and the client certificates of the mutual-TLS tests.
//! Included by those harnesses with `#[path]`.

/// A CA made in memory: its certificate PEM, and what it signs with.
pub struct TestCa {
    /// The CA certificate, PEM: what a client is told to trust.
    pub pem: String,
    /// Its key and parameters, to sign server certificates.
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A new CA named `name` (its common name).
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A server certificate for `names` (DNS names or IP addresses; the first is also its common
    /// name), signed by this CA: (certificate PEM, private key PEM).
    pub fn server_cert(&self, names: &[&str]) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("server certificate params");
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate signed by the CA");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate (TLS client auth) with subject `dn` (attribute, value pairs in DER
    /// order, e.g. `[(Organization, "Acme"), (CommonName, "app")]`) and DNS SANs `sans`,
    /// signed by this CA: (certificate PEM, private key PEM).
    #[allow(dead_code)]
    pub fn client_cert(&self, dn: &[(rcgen::DnType, &str)], sans: &[&str]) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(sans.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("client certificate params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().expect("client key");
        let cert = params.signed_by(&key, &self.issuer).expect("client certificate signed by the CA");
        (cert.pem(), key.serialize_pem())
    }
}
