//! The HTTP API over TLS (rustls): a certificate chain and its key (PEM), and optionally a CA
//! whose certificates every client must present. Read at start (a file that cannot be used stops
//! the start) and again on SIGHUP, as the zones are (a file that cannot be used then is reported
//! and the certificate in use is kept): a renewed certificate is served without a restart, from
//! the next connection on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// Where the certificate, its key and the clients' CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, a client must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("the HTTP TLS certificate {cert} and key {key} cannot be used together: {message}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// The TLS configurations served, swapped whole on a reload: one for connections served, one
/// for connections refused (over a limit), which offers HTTP/1.1 alone so that the refusal, an
/// HTTP/1.1 503, is what the client reads.
pub struct HttpTls {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
    refusing: ArcSwap<ServerConfig>,
}

impl HttpTls {
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let (config, refusing) = configs(&files)?;
        Ok(Self {
            files,
            config: ArcSwap::from_pointee(config),
            refusing: ArcSwap::from_pointee(refusing),
        })
    }

    /// Reads the files again; on an error the configurations in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (config, refusing) = configs(&self.files)?;
        self.config.store(Arc::new(config));
        self.refusing.store(Arc::new(refusing));
        Ok(())
    }

    /// What accepts the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// What accepts a connection that is refused, to tell it why in HTTP/1.1.
    pub fn refusing_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.refusing.load_full())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn file_error(what: &'static str, path: &Path) -> impl Fn(String) -> TlsError {
    move |message| TlsError::File {
        what,
        path: path.to_path_buf(),
        message,
    }
}

/// The certificates in a PEM file: at least one.
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = file_error(what, path);
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

/// The configuration served, and the same offering HTTP/1.1 alone.
fn configs(files: &TlsFiles) -> Result<(ServerConfig, ServerConfig), TlsError> {
    let mut config = server_config(files)?;
    let mut refusing = config.clone();
    // HTTP/2 when the client offers it (Consul's Go clients do), else HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    refusing.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, refusing))
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = certificates("the HTTP TLS certificate (--http-tls-cert)", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error("the HTTP TLS key (--http-tls-key)", &files.key)(e.to_string()))?;
    let pair_error = |message: String| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        message,
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| pair_error(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let what = "the clients' CA (--http-tls-client-ca)";
            let mut roots = RootCertStore::empty();
            for cert in certificates(what, path)? {
                roots.add(cert).map_err(|e| file_error(what, path)(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| file_error(what, path)(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| pair_error(e.to_string()))
}
