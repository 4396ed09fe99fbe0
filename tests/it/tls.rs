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

/// What the raw HTTP/2 server below does with the second request of its first connection.
#[derive(Clone, Copy)]
enum Second {
    /// `GOAWAY` keeping streams up to `last`, with this error code; with `close`, the
    /// connection is then closed without answering.
    GoAway { last: u32, code: u32, close: bool },
    /// `RST_STREAM` with this error code.
    Reset(u32),
}

/// An HTTP/2 server over TLS written frame by frame, so that it refuses a request the way
/// a test needs and not only when a race allows: it answers every request `{"n": N}` (N
/// counting the requests it answered), except the second one of its first connection,
/// which it treats as `second` says. Returns its port and the requests it saw per
/// connection.
async fn raw_h2_upstream(
    config: Arc<rustls::ServerConfig>,
    second: Second,
) -> (u16, Arc<std::sync::Mutex<Vec<u32>>>) {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let per_connection = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&per_connection);
    tokio::spawn(async move {
        let answered = Arc::new(std::sync::atomic::AtomicU32::new(0));
        while let Ok((tcp, _)) = listener.accept().await {
            let connection = {
                let mut seen = seen.lock().expect("seen");
                seen.push(0);
                seen.len() - 1
            };
            let (acceptor, seen, answered) =
                (acceptor.clone(), Arc::clone(&seen), Arc::clone(&answered));
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve_raw_h2(tls, connection, second, &seen, &answered).await;
                }
            });
        }
    });
    (port, per_connection)
}

/// One connection of [`raw_h2_upstream`].
async fn serve_raw_h2(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    connection: usize,
    second: Second,
    seen: &std::sync::Mutex<Vec<u32>>,
    answered: &std::sync::atomic::AtomicU32,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let length = u32::try_from(payload.len()).expect("length").to_be_bytes();
        let mut out = vec![length[1], length[2], length[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    };
    let mut preface = [0u8; 24];
    if tls.read_exact(&mut preface).await.is_err() {
        return;
    }
    let _ = tls.write_all(&frame(4, 0, 0, &[])).await; // SETTINGS
    let mut head = [0u8; 9];
    let mut gone_away = false;
    while tls.read_exact(&mut head).await.is_ok() {
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        if tls.read_exact(&mut payload).await.is_err() {
            return;
        }
        let mut close = false;
        let reply = match kind {
            4 if flags & 1 == 0 => frame(4, 1, 0, &[]), // SETTINGS: ACK
            6 if flags & 1 == 0 => frame(6, 1, 0, &payload), // PING: ACK
            // After its `GOAWAY`, a server processes no new stream.
            1 if gone_away => continue,
            1 => {
                let number = {
                    let mut seen = seen.lock().expect("seen");
                    seen[connection] += 1;
                    seen[connection]
                };
                match second {
                    _ if connection > 0 || number != 2 => {
                        let n = answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        // `:status: 200` (HPACK's static entry 8), then the body.
                        let mut out = frame(1, 4, stream, &[0x88]);
                        out.extend(frame(0, 1, stream, format!("{{\"n\":{n}}}").as_bytes()));
                        out
                    }
                    Second::GoAway {
                        last,
                        code,
                        close: then_close,
                    } => {
                        (close, gone_away) = (then_close, true);
                        let mut body = last.to_be_bytes().to_vec();
                        body.extend_from_slice(&code.to_be_bytes());
                        frame(7, 0, 0, &body)
                    }
                    Second::Reset(code) => frame(3, 0, stream, &code.to_be_bytes()),
                }
            }
            _ => continue,
        };
        if tls.write_all(&reply).await.is_err() || close {
            return;
        }
    }
}

/// A directory with the webhook `w`: a POST to the [`raw_h2_upstream`] on `port`, trusting
/// `ca_pem`, mapping the answer's `n`.
fn raw_h2_webhook(ca_pem: &str, port: u16) -> Dir {
    let dir = Dir::new();
    dir.file("ca.pem", ca_pem);
    dir.file(
        "w.toml",
        &format!(
            "company = \"a\"\nmethod = \"POST\"\nurl = \"https://localhost:{port}/orders\"\n\
             [tls]\nca_file = \"ca.pem\"\n[variables]\nn = \"response.n\"\n"
        ),
    );
    dir
}

/// A request the upstream says it did not process (RFC 9113, 8.7) goes again, whatever its
/// method: above a graceful `GOAWAY`'s last stream (servers close HTTP/2 connections after
/// so many requests, nginx every 1,000 by default) on a new connection, and once refused
/// (`REFUSED_STREAM`) on the same one. A request the upstream may have processed is never
/// sent twice, and a `GOAWAY` with an error code is taken at its word.
#[tokio::test]
async fn an_http2_request_the_upstream_did_not_process_is_sent_again() {
    let (ca_pem, config) = test_ca();
    let go_away = |last, code, close| Second::GoAway { last, code, close };
    let cases: [(&str, Second, Option<u32>, &[u32]); 5] = [
        ("graceful goaway", go_away(1, 0, false), Some(2), &[2, 1]),
        ("refused stream", Second::Reset(7), Some(2), &[3]),
        // ENHANCE_YOUR_CALM: not sent again at once to a server in trouble.
        ("goaway with an error", go_away(1, 0xb, false), None, &[2]),
        // The second request is within the GOAWAY: it may have been processed.
        ("kept, then closed", go_away(3, 0, true), None, &[2]),
        ("internal error", Second::Reset(2), None, &[2]),
    ];
    for (name, second, answered, requests) in cases {
        let (port, per_connection) = raw_h2_upstream(Arc::clone(&config), second).await;
        let dir = raw_h2_webhook(&ca_pem, port);
        let hookside = Hookside::start(dir.path()).await;
        let (status, first) = hookside.invoke("w", json!({})).await;
        assert_eq!(
            (status.as_u16(), &first["variables"]["n"]),
            (200, &json!(1)),
            "{name}: {first}"
        );
        let (status, again) = hookside.invoke("w", json!({})).await;
        match answered {
            Some(n) => {
                assert_eq!(status, 200, "{name}: {again}");
                assert_eq!(again["variables"]["n"], n, "{name}: {again}");
            }
            None => assert_error(&(status, again.clone()), 502, "upstream_unreachable"),
        }
        assert_eq!(
            per_connection.lock().expect("seen").as_slice(),
            requests,
            "{name}: requests per connection"
        );
    }
}

/// The requests a `GOAWAY` leaves unprocessed, all at once, share the one new connection
/// that the first of them opens, rather than each opening its own (a TLS handshake each,
/// every 1,000 requests with nginx's defaults).
#[tokio::test]
async fn requests_sent_again_after_a_goaway_share_one_new_connection() {
    let (ca_pem, config) = test_ca();
    let second = Second::GoAway {
        last: 1,
        code: 0,
        close: false,
    };
    let (port, per_connection) = raw_h2_upstream(config, second).await;
    let dir = raw_h2_webhook(&ca_pem, port);
    let hookside = Arc::new(Hookside::start(dir.path()).await);
    assert_eq!(hookside.invoke("w", json!({})).await.0, 200);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let hookside = Arc::clone(&hookside);
            tokio::spawn(async move { hookside.invoke("w", json!({})).await })
        })
        .collect();
    for call in calls {
        let (status, answer) = call.await.expect("joined");
        assert_eq!(status, 200, "{answer}");
    }
    let seen = per_connection.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2, "one new connection: {seen:?}");
    assert_eq!(seen[1], 8, "all eight went on it: {seen:?}");
}
