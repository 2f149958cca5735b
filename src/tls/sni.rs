//! The HTTPS listener's certificates by server name (SNI): `tls.cert` for every name, and a
//! `[[tls.certificates]]` entry's certificate for the names it lists: an exact name first, then a
//! `*.` wildcard (one label), then the default. Names are compared without regard to ASCII case.
//! An entry is refused unless its certificate's own names (subjectAltName) cover every name it is
//! listed for, so no listed name is served a certificate its clients would refuse. Built once per
//! snapshot; the lookup of each handshake allocates nothing.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use super::{load_certified_key, TlsError};

/// One certificate per name, and the default for the rest; immutable once in a snapshot.
pub struct Certificates {
    /// `tls.cert`: for names no entry lists, and for clients that send no server name.
    default: Arc<CertifiedKey>,
    /// Exact names (ASCII-lowercase), sorted so a handshake finds its name by binary search.
    exact: Vec<(Box<str>, Arc<CertifiedKey>)>,
    /// Wildcard names by the domain below the `*.` (`*.a.example` as `a.example`), sorted.
    wildcard: Vec<(Box<str>, Arc<CertifiedKey>)>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wildcards = self.wildcard.iter().map(|(d, _)| format!("*.{d}"));
        let names: Vec<String> = self.exact.iter().map(|(n, _)| n.to_string()).chain(wildcards).collect();
        f.debug_struct("Certificates").field("names", &names).finish()
    }
}

impl Certificates {
    /// Only the default certificate, served for every name.
    pub fn new(default: Arc<CertifiedKey>) -> Certificates {
        Certificates { default, exact: Vec::new(), wildcard: Vec::new() }
    }

    /// Loads a `[[tls.certificates]]` entry's chain and key and serves it for `names` (ASCII-
    /// lowercase, without a trailing dot, listed by no other entry: the config checked), once
    /// its subjectAltName covers each of them.
    pub fn add(&mut self, names: &[String], (cert, key): (&Path, &Path)) -> Result<(), TlsError> {
        let ck = load_certified_key(cert, key)?;
        let own = SanNames::of(ck.end_entity_cert().map_err(|e| super::err(cert, e))?.as_ref())
            .map_err(|m| super::err(cert, m))?;
        if let Some(name) = names.iter().find(|n| !own.covers(n)) {
            return Err(super::err(cert, format!("does not cover the name {name:?} ({})", own.described())));
        }
        for name in names {
            let (table, key) = match name.strip_prefix("*.") {
                Some(domain) => (&mut self.wildcard, domain),
                None => (&mut self.exact, name.as_str()),
            };
            match table.binary_search_by(|(k, _)| (**k).cmp(key)) {
                Ok(i) => table[i].1 = ck.clone(),
                Err(i) => table.insert(i, (key.into(), ck.clone())),
            }
        }
        Ok(())
    }

    /// The certificate for a handshake that asked for `server_name` (rustls passes it
    /// lowercased; compared without regard to case anyway): the entry listing it, else the entry
    /// listing `*.` and its parent domain, else the default.
    pub fn resolve(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name.map(|n| n.strip_suffix('.').unwrap_or(n)) else { return &self.default };
        if let Some(ck) = find(&self.exact, name) {
            return ck;
        }
        match name.split_once('.') {
            Some((label, domain)) if !label.is_empty() => find(&self.wildcard, domain).unwrap_or(&self.default),
            _ => &self.default,
        }
    }
}

/// The entry of the sorted `table` whose (lowercase) name is `name` in any case, found without
/// allocating.
fn find<'t>(table: &'t [(Box<str>, Arc<CertifiedKey>)], name: &str) -> Option<&'t Arc<CertifiedKey>> {
    let lower = || name.bytes().map(|b| b.to_ascii_lowercase());
    table.binary_search_by(|(k, _)| k.bytes().cmp(lower())).ok().map(|i| &table[i].1)
}

/// A certificate's own names: its subjectAltName's DNS names (lowercase, without a trailing
/// dot) and IP addresses.
struct SanNames {
    /// dNSName entries; `*.a.example` covers one label below `a.example`.
    dns: Vec<String>,
    /// iPAddress entries, as text (only ever shown: SNI never carries an address).
    ips: Vec<String>,
}

impl SanNames {
    fn of(der: &[u8]) -> Result<SanNames, String> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|_| "holds a certificate that cannot be parsed")?;
        let general = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext.value.general_names.clone(),
            Ok(None) => Vec::new(),
            Err(_) => return Err("has a subjectAltName that cannot be parsed".into()),
        };
        let (mut dns, mut ips) = (Vec::new(), Vec::new());
        for n in general {
            match n {
                GeneralName::DNSName(d) => dns.push(d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase()),
                GeneralName::IPAddress(b) => ips.push(ip_text(b)),
                _ => {}
            }
        }
        Ok(SanNames { dns, ips })
    }

    /// Whether a client asking for `name` (lowercase; `*.d` for any one label below `d`) accepts
    /// this certificate: a SAN names it, or a wildcard SAN covers its one first label.
    fn covers(&self, name: &str) -> bool {
        self.dns.iter().any(|san| {
            san == name
                || match (san.strip_prefix("*."), name.strip_prefix("*.")) {
                    (Some(domain), None) => {
                        name.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == domain)
                    }
                    _ => false,
                }
        })
    }

    /// What the certificate does name, for the error.
    fn described(&self) -> String {
        let all: Vec<&str> = self.dns.iter().chain(&self.ips).map(String::as_str).collect();
        if all.is_empty() {
            "it has no subjectAltName, and its common name alone is not enough".into()
        } else {
            format!("its subjectAltName names {}", all.join(", "))
        }
    }
}

fn ip_text(b: &[u8]) -> String {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).map(|a| std::net::IpAddr::from(a).to_string()).unwrap_or_default(),
        16 => <[u8; 16]>::try_from(b).map(|a| std::net::IpAddr::from(a).to_string()).unwrap_or_default(),
        _ => "an unreadable address".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `sans` (dNSNames, or addresses) and its key, in `dir`.
    fn cert(dir: &Path, file: &str, sans: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let names = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        let (c, k) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
        std::fs::write(&c, made.cert.pem()).unwrap();
        std::fs::write(&k, made.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_then_wildcard_then_default_in_any_case() {
        let dir = tempfile::tempdir().unwrap();
        let d = cert(dir.path(), "default", &["localhost"]);
        let a = cert(dir.path(), "admin", &["admin.example.com", "*.admin.example.com"]);
        let x = cert(dir.path(), "exact", &["x.admin.example.com"]);
        let mut certs = Certificates::new(load_certified_key(&d.0, &d.1).unwrap());
        certs.add(&names(&["admin.example.com", "*.admin.example.com"]), (&a.0, &a.1)).unwrap();
        certs.add(&names(&["x.admin.example.com"]), (&x.0, &x.1)).unwrap();
        let served = |n: Option<&str>| certs.resolve(n).end_entity_cert().unwrap().as_ref().to_vec();
        let read = |p: &Path| load_certified_key(p, &p.with_extension("key")).unwrap();
        let (default, admin, exact) = (read(&d.0), read(&a.0), read(&x.0));
        let der = |ck: &CertifiedKey| ck.end_entity_cert().unwrap().as_ref().to_vec();
        assert_eq!(served(None), der(&default));
        assert_eq!(served(Some("admin.example.com")), der(&admin));
        assert_eq!(served(Some("ADMIN.Example.COM")), der(&admin));
        assert_eq!(served(Some("admin.example.com.")), der(&admin));
        assert_eq!(served(Some("a.admin.example.com")), der(&admin));
        assert_eq!(served(Some("A.Admin.example.com")), der(&admin));
        // The exact name wins over the wildcard that also covers it.
        assert_eq!(served(Some("x.admin.example.com")), der(&exact));
        assert_eq!(served(Some("X.ADMIN.EXAMPLE.COM")), der(&exact));
        // One label only, and the wildcard is not its own domain's certificate.
        assert_eq!(served(Some("b.a.admin.example.com")), der(&default));
        assert_eq!(served(Some("example.com")), der(&default));
        assert_eq!(served(Some("other.example.com")), der(&default));
        assert_eq!(served(Some("")), der(&default));
    }

    #[test]
    fn an_entry_whose_certificate_does_not_cover_a_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = cert(dir.path(), "default", &["localhost"]);
        let mut certs = Certificates::new(load_certified_key(&d.0, &d.1).unwrap());
        let w = cert(dir.path(), "wild", &["*.example.com", "127.0.0.1"]);
        // A wildcard SAN covers one label: a.example.com, not example.com, a.b.example.com or *.b.example.com.
        certs.add(&names(&["a.example.com", "*.example.com"]), (&w.0, &w.1)).unwrap();
        for name in ["example.com", "a.b.example.com", "*.b.example.com", "a.example.org"] {
            let e = certs.add(&names(&[name]), (&w.0, &w.1)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "{}: does not cover the name {name:?} (its subjectAltName names *.example.com, 127.0.0.1)",
                    w.0.display()
                )
            );
        }
        // An exact SAN does not cover the wildcard of its own domain.
        let a = cert(dir.path(), "admin", &["admin.example.com"]);
        let e = certs.add(&names(&["*.admin.example.com"]), (&a.0, &a.1)).unwrap_err().to_string();
        assert!(
            e.ends_with("does not cover the name \"*.admin.example.com\" (its subjectAltName names admin.example.com)"),
            "{e}"
        );
        let e = certs.add(&names(&["admin.example.com"]), (&a.0, &dir.path().join("missing.key"))).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: does not exist", dir.path().join("missing.key").display()));
    }
}
