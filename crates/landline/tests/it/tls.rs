//! TLS: certificate verification is on for the source and the store, a CA bundle adds a
//! private CA, and nothing turns verification off.
//!
//! A test CA (rcgen) signs a certificate for 127.0.0.1; a TLS front (tokio-rustls) terminates
//! HTTPS on a free port and relays the plain bytes to the mock API or an S3 server. Requests
//! keep the Host the client used, so S3 signatures made for the front stay valid behind it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use landline::RunError;
use landline::sink::SinkError;
use landline::source::SourceError;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::harness::{Style, data, gunzip, mock, pipeline, pipeline_text, run, verify};
use crate::s3;

/// A private CA and a server certificate it signed for `127.0.0.1` and `localhost`.
struct TestPki {
    /// The CA's certificate, PEM, in a file (what users give as a CA bundle).
    ca_file: PathBuf,
    server: ServerConfig,
    _dir: tempfile::TempDir,
}

fn pki() -> TestPki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "landline test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");

    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("write CA");
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    TestPki {
        ca_file,
        server,
        _dir: dir,
    }
}

/// HTTPS on a free port of 127.0.0.1, relayed as plain TCP to `upstream`; stops when dropped.
struct TlsFront {
    port: u16,
    _tasks: JoinSet<()>,
}

async fn tls_front(pki: &TestPki, upstream: std::net::SocketAddr) -> TlsFront {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = TlsAcceptor::from(Arc::new(pki.server.clone()));
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                // A client that refuses the certificate ends its handshake here.
                let Ok(mut client) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    TlsFront {
        port,
        _tasks: tasks,
    }
}

/// The API over HTTPS: refused without the CA (at once, not after retries, with the cause),
/// landed exactly with `[source] ca_bundle`.
#[tokio::test]
async fn source_verifies_certificates_and_trusts_a_ca_bundle() {
    let pki = pki();
    let data = data(300);
    let server = mock(data.clone(), |_| {}).await;
    let front = tls_front(&pki, server.addr()).await;
    let api = format!("https://127.0.0.1:{}", front.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("out.jsonl.gz");
    let sink = format!("url = \"{}\"", target.display());

    let text = pipeline_text(&Style::Token.source(&api, 100), &sink);
    let err = run(&pipeline(&text), vec![])
        .await
        .expect_err("an unknown CA must be refused");
    let message = err.to_string();
    assert!(
        matches!(
            err,
            RunError::Source(SourceError::Transport { attempts: 1, .. })
        ),
        "{message}"
    );
    assert!(message.contains("certificate"), "{message}");
    assert!(
        message.contains("page 1 of https://127.0.0.1:"),
        "{message}"
    );
    assert_eq!(server.stats().pages_served, 0);
    assert!(!target.exists());

    let source = Style::Token.source(&api, 100).replace(
        "records = ",
        &format!("ca_bundle = \"{}\"\nrecords = ", pki.ca_file.display()),
    );
    let text = pipeline_text(&source, &sink);
    let report = run(&pipeline(&text), vec![])
        .await
        .expect("the CA bundle is trusted");
    verify(
        &gunzip(&std::fs::read(&target).expect("object")),
        &data,
        &report,
        1,
    );
    server.shutdown().await;
}

/// S3 over HTTPS: refused without the CA, with a clear message at the first request; trusted
/// through `AWS_CA_BUNDLE` and through `[sink] ca_bundle`.
#[tokio::test]
async fn store_verifies_certificates_and_trusts_a_ca_bundle() {
    let pki = pki();
    let data = data(200);
    let server = mock(data.clone(), |_| {}).await;
    for s3 in s3::servers() {
        let upstream = format!(
            "{}:{}",
            s3.endpoint.host_str().expect("host"),
            s3.endpoint.port().expect("port")
        )
        .parse()
        .expect("socket address");
        let front = tls_front(&pki, upstream).await;
        let https_env = || {
            let mut env = s3.env();
            for (k, v) in &mut env {
                if k == "AWS_ENDPOINT_URL" {
                    *v = format!("https://127.0.0.1:{}", front.port);
                }
            }
            env.retain(|(k, _)| k != "AWS_ALLOW_HTTP");
            env
        };
        let prefix = s3.unique_prefix("tls");
        let key = format!("{prefix}/v.jsonl.gz");
        let sink = format!(
            "url = \"s3://{}/{key}\"\n[sink.retry]\nmax_attempts = 2\ninitial_backoff_ms = 1\n",
            s3.bucket
        );
        let source = Style::Token.source(&server.base_url(), 100);

        let err = run(&pipeline(&pipeline_text(&source, &sink)), https_env())
            .await
            .expect_err("an unknown CA must be refused");
        let message = err.to_string();
        assert!(
            matches!(err, RunError::Sink(SinkError::Create { .. })),
            "{}: {message}",
            s3.name
        );
        assert!(message.contains("certificate"), "{}: {message}", s3.name);
        assert!(s3.list_keys(&prefix).await.is_empty());

        // The AWS convention: AWS_CA_BUNDLE names the bundle.
        let mut env = https_env();
        env.push(("AWS_CA_BUNDLE".into(), pki.ca_file.display().to_string()));
        let report = run(&pipeline(&pipeline_text(&source, &sink)), env)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        let object = s3.get_object(&key).await.expect("object landed");
        verify(&gunzip(&object), &data, &report, 1);

        // The pipeline file's setting.
        let sink = sink.replace(
            "\n[sink.retry]",
            &format!("\nca_bundle = \"{}\"\n[sink.retry]", pki.ca_file.display()),
        );
        let report = run(&pipeline(&pipeline_text(&source, &sink)), https_env())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", s3.name));
        let object = s3.get_object(&key).await.expect("object landed");
        verify(&gunzip(&object), &data, &report, 1);
    }
    server.shutdown().await;
}
