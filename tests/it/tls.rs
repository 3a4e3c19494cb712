//! The HTTP API over TLS (`--http-tls-cert`, `--http-tls-key`, `--http-tls-client-ca`), with
//! certificates the test makes (rcgen): clients that trust the CA are served; with a clients'
//! CA, one without a certificate, or with one another CA signed, is refused at the handshake; a
//! plain-HTTP client gets nothing; SIGHUP serves a renewed certificate and keeps the one in use
//! when the new files are bad.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pki::TlsFiles;
use common::tools::TempDir;
use common::{TestServer, tls_config};
use serde_json::json;

fn https_client(files: &TlsFiles, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&files.ca).unwrap()).unwrap();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn the_api_over_tls_serves_clients_that_trust_it() {
    let dir = TempDir::new("http-tls");
    let files = TlsFiles::make(&dir.0);
    let server = TestServer::start_with(tls_config(&files, false)).await;
    let base = format!("https://127.0.0.1:{}", server.app().http_addr().port());
    let client = https_client(&files, None);
    let registration = json!({"Name": "orders", "ID": "orders-1", "Address": "10.0.0.1", "Port": 80});
    let response = client
        .put(format!("{base}/v1/agent/service/register"))
        .json(&registration)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let health: serde_json::Value = client
        .get(format!("{base}/v1/health/service/orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health[0]["Service"]["ID"], "orders-1");
    let answer = common::dns::udp(
        server.dns,
        "orders.service.trading-dc.",
        hickory_proto::rr::RecordType::A,
    )
    .await;
    assert_eq!(common::dns::addresses(&answer), [common::ip("10.0.0.1")]);
    // HTTP/2 when asked for, as Go's clients do.
    let h2 = client
        .get(format!("{base}/v1/status/leader"))
        .version(reqwest::Version::HTTP_2);
    assert_eq!(h2.send().await.unwrap().version(), reqwest::Version::HTTP_2);
    // Plain HTTP to the TLS port gets no answer.
    let plain = server.http.get(server.url("/v1/status/leader")).send().await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    server.stop().await;
}

#[tokio::test]
async fn with_a_clients_ca_only_its_certificates_are_served() {
    let dir = TempDir::new("http-mtls");
    let files = TlsFiles::make(&dir.0);
    let other = TlsFiles::make(&dir.0.join("other-ca"));
    let server = TestServer::start_with(tls_config(&files, true)).await;
    let url = format!(
        "https://127.0.0.1:{}/v1/catalog/services",
        server.app().http_addr().port()
    );
    let with_certificate = https_client(&files, Some((&files.client_cert, &files.client_key)));
    assert_eq!(with_certificate.get(&url).send().await.unwrap().status(), 200);
    let without = https_client(&files, None).get(&url).send().await;
    assert!(
        without.is_err(),
        "a client without a certificate was served: {without:?}"
    );
    let wrong_ca = https_client(&files, Some((&other.client_cert, &other.client_key)));
    let refused = wrong_ca.get(&url).send().await;
    assert!(refused.is_err(), "a certificate of another CA was taken: {refused:?}");
    // The server is none the worse.
    assert_eq!(with_certificate.get(&url).send().await.unwrap().status(), 200);
    server.stop().await;
}

/// The certificate a fresh TLS connection to `addr` is shown, if `ca` signed it.
async fn served_certificate(addr: std::net::SocketAddr, ca: &Path) -> Option<Vec<u8>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].to_vec())
}

fn der_of(pem_file: &Path) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(pem_file).unwrap().to_vec()
}

#[tokio::test]
async fn sighup_serves_a_renewed_certificate_and_keeps_it_when_the_files_are_bad() {
    let dir = TempDir::new("http-tls-reload");
    let first = TlsFiles::make(&dir.0.join("first"));
    let cert = dir.0.join("served.pem");
    let key = dir.0.join("served-key.pem");
    std::fs::copy(&first.server_cert, &cert).unwrap();
    std::fs::copy(&first.server_key, &key).unwrap();
    let data = TempDir::new("http-tls-reload-data");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let running = common::process::start_binary_with(
        &common::repo_zones(),
        &data.0,
        &["--http-tls-cert", &cert_arg, "--http-tls-key", &key_arg],
    );
    assert!(
        running
            .startup_log
            .iter()
            .any(|l| l.contains("sextant is serving") && l.contains("https")),
        "{:#?}",
        running.startup_log
    );
    assert_eq!(
        served_certificate(running.http, &first.ca).await,
        Some(der_of(&first.server_cert))
    );
    let hup = || {
        let sent = Command::new("kill")
            .args(["-HUP", &running.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    // Renewed (by another CA here, to tell them apart): served from the next connection on.
    let renewed = TlsFiles::make(&dir.0.join("renewed"));
    std::fs::copy(&renewed.server_cert, &cert).unwrap();
    std::fs::copy(&renewed.server_key, &key).unwrap();
    hup();
    common::wait_for("the renewed certificate served", async || {
        tokio::time::timeout(Duration::from_secs(2), served_certificate(running.http, &renewed.ca))
            .await
            .is_ok_and(|der| der == Some(der_of(&renewed.server_cert)))
    })
    .await;
    // A key that does not belong to the certificate: reported, and the renewed one stays.
    std::fs::copy(&first.server_key, &key).unwrap();
    hup();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let line = running
            .log
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("a line saying the certificate was not reloaded");
        if line.contains("HTTP TLS certificate not reloaded") {
            break;
        }
    }
    assert_eq!(
        served_certificate(running.http, &renewed.ca).await,
        Some(der_of(&renewed.server_cert))
    );
}

#[test]
fn a_certificate_without_its_key_stops_the_start() {
    let dir = TempDir::new("http-tls-start");
    let files = TlsFiles::make(&dir.0);
    let config = sextant::Config {
        http_tls_cert: Some(files.server_cert.clone()),
        ..common::test_config()
    };
    let error = config.settings().unwrap_err().to_string();
    assert!(error.contains("http_tls_key"), "{error}");
    let config = sextant::Config {
        http_tls_cert: Some(files.server_cert.clone()),
        http_tls_key: Some(files.ca.clone()),
        ..common::test_config()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime
        .block_on(sextant::App::bind(config))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("--http-tls-key"), "{error}");
}

/// A connection over a limit is told why over TLS, in the HTTP/1.1 503 it can read (not HTTP/2,
/// which the refusal does not offer).
#[tokio::test]
async fn a_tls_client_over_a_limit_reads_the_503() {
    let dir = TempDir::new("http-tls-limit");
    let files = TlsFiles::make(&dir.0);
    let server = TestServer::start_with(sextant::Config {
        http_max_per_client: 1,
        ..tls_config(&files, false)
    })
    .await;
    let url = format!("https://127.0.0.1:{}/v1/status/leader", server.app().http_addr().port());
    // Its connection stays open in its pool: the one this address may have.
    let holder = https_client(&files, None);
    assert_eq!(holder.get(&url).send().await.unwrap().status(), 200);
    let refused = https_client(&files, None).get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.text().await.unwrap().contains("--http-max-per-client"));
    server.stop().await;
}

/// The command-line client and the client library over HTTPS with a private CA and a client
/// certificate: from Consul's variables (`CONSUL_HTTP_SSL`, `CONSUL_CACERT`,
/// `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`), from flags, and from the builder. Without the CA,
/// or without the certificate, they fail and say so.
#[tokio::test]
async fn the_cli_and_the_client_library_speak_https_with_a_private_ca() {
    use sextant::client::{Client, Registration};
    let dir = TempDir::new("client-tls");
    let files = TlsFiles::make(&dir.0);
    let server = TestServer::start_with(tls_config(&files, true)).await;
    let port = server.app().http_addr().port();
    let url = format!("https://127.0.0.1:{port}");
    let client = Client::builder(&url)
        .ca_cert(&files.ca)
        .client_cert(&files.client_cert, &files.client_key)
        .build()
        .unwrap();
    let orders = Registration::new("orders").id("orders-1").address("10.0.0.1").port(80);
    client.register(&orders).await.unwrap();
    assert_eq!(client.registered().await.unwrap().len(), 1);
    let without_certificate = Client::builder(&url).ca_cert(&files.ca).build().unwrap();
    assert!(
        without_certificate.registered().await.is_err(),
        "served without a certificate"
    );

    let path = |p: &Path| p.to_str().unwrap().to_owned();
    // (tokio's Command: the server runs on this test's one thread.)
    let sextant = async |args: Vec<String>, env: Vec<(&str, String)>| {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sextant"))
            .args(&args)
            .env("SEXTANT_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .envs(env)
            .output()
            .await
            .unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.code(), text(&output.stdout), text(&output.stderr))
    };
    let consul_env = vec![
        ("CONSUL_HTTP_SSL", "true".to_owned()),
        ("CONSUL_CACERT", path(&files.ca)),
        ("CONSUL_CLIENT_CERT", path(&files.client_cert)),
        ("CONSUL_CLIENT_KEY", path(&files.client_key)),
    ];
    let (code, out, err) = sextant(vec!["services".into()], consul_env.clone()).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("orders"), "{out}");
    let flags = vec![
        "instances".into(),
        "orders".into(),
        "--http".into(),
        url.clone(),
        "--ca-cert".into(),
        path(&files.ca),
        "--client-cert".into(),
        path(&files.client_cert),
        "--client-key".into(),
        path(&files.client_key),
    ];
    let (code, out, err) = sextant(flags, Vec::new()).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("10.0.0.1"), "{out}");
    // Without the private CA the server is not trusted; without a certificate it refuses.
    let (code, _, err) = sextant(vec!["services".into()], consul_env[..1].to_vec()).await;
    assert_eq!(code, Some(3), "{err}");
    let (code, _, err) = sextant(vec!["services".into()], consul_env[..2].to_vec()).await;
    assert_eq!(code, Some(3), "{err}");
    // A CA file that holds no certificate, or a certificate without its key: said, exit 2.
    let not_pem = dir.0.join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let (code, _, err) = sextant(
        vec!["services".into(), "--ca-cert".into(), path(&not_pem)],
        consul_env[..1].to_vec(),
    )
    .await;
    assert!(code == Some(2) && err.contains("CA certificate"), "{code:?}: {err}");
    let (code, _, err) = sextant(vec!["services".into()], consul_env[..3].to_vec()).await;
    assert!(code == Some(2) && err.contains("needs its key"), "{code:?}: {err}");
    server.stop().await;
}
