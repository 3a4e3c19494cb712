//! Certificates the tests make (rcgen): for etcd over TLS and the HTTP API over TLS.

use std::path::PathBuf;

/// PEM files: a CA, a server's certificate (for 127.0.0.1 and localhost) and a client's, both
/// signed by it.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Made in `dir` (created if missing), with a CA of their own.
    pub fn make(dir: &std::path::Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
        // Every name its own (OpenSSL takes a certificate named as its issuer for self-signed,
        // and a verifier looks issuers up by name).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let ca_name = format!(
            "sextant test CA {}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let named = |mut params: CertificateParams, name: &str| {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, name);
            params.distinguished_name = dn;
            params
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = named(CertificateParams::new(Vec::<String>::new()).unwrap(), &ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let signed = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let common_name = names[0].clone();
            let cert = named(CertificateParams::new(names).unwrap(), &common_name)
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = signed(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = signed(vec!["sextant".into()]);
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
        }
    }
}
