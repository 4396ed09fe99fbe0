//! HTTPS upstreams: verification is always on; `[tls] ca_file` adds a private CA.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

use crate::util::{Dir, Hookside, Reply, Upstream, assert_error};

/// A test CA and a server config for `localhost` signed by it.
fn test_ca() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca_cert.pem(), Arc::new(config))
}

#[tokio::test]
async fn a_private_ca_works_only_with_ca_file_and_http2_is_negotiated() {
    let (ca_pem, server_config) = test_ca();
    let upstream =
        Upstream::start_tls(server_config, |_| Reply::json(200, json!({"secure": true}))).await;
    let dir = Dir::new();
    dir.file("certs/ca.pem", &ca_pem);
    let url = format!("https://localhost:{}/x", upstream.addr.port());
    dir.file(
        "without.toml",
        &format!("company = \"a\"\nurl = \"{url}\"\n"),
    );
    dir.file(
        "with.toml",
        &format!("company = \"a\"\nurl = \"{url}\"\n[tls]\nca_file = \"certs/ca.pem\"\n[variables]\ns = \"response.secure\"\n"),
    );
    let hookside = Hookside::start(dir.path()).await;
    let refused = hookside.invoke("without", json!({})).await;
    assert_error(&refused, 502, "upstream_unreachable");
    let message = refused.1["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    let (status, answer) = hookside.invoke("with", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["variables"]["s"], true);
    let seen = upstream.seen();
    assert_eq!(
        seen.len(),
        1,
        "only the trusted call got through the handshake"
    );
    assert_eq!(seen[0].version, http::Version::HTTP_2);
    // HTTP/2 names the origin in `:authority`; a `Host` beside it could disagree.
    assert_eq!(seen[0].header("host"), None);
}

#[tokio::test]
async fn a_ca_file_that_is_not_pem_is_a_file_error() {
    let dir = Dir::new();
    dir.file("ca.pem", "not a certificate");
    dir.file(
        "w.toml",
        "company = \"a\"\nurl = \"https://localhost/\"\n[tls]\nca_file = \"ca.pem\"\n",
    );
    let hookside = Hookside::start(dir.path()).await;
    assert_eq!(hookside.invoke("w", json!({})).await.0, 404);
    let (_, config) = hookside.admin_get("/-/config").await;
    let message = config["files"][0]["errors"][0]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(message.contains("tls.ca_file"), "{message}");
}
