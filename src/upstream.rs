//! Calling upstreams: one pooled hyper-util client per set of trust roots (webpki roots,
//! plus a webhook's `[tls] ca_file`), the destination policy on resolved addresses, the
//! webhook's timeout over the whole exchange, the response size limit while streaming, and
//! the classification of failures.
//!
//! Redirects are not followed (hyper's client never does) and proxy variables are ignored
//! (no proxy connector is installed).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The HTTP client type: TLS (or plain HTTP) over a policy-checking resolver.
pub type Client =
    hyper_util::client::legacy::Client<HttpsConnector<HttpConnector<PolicyResolver>>, Full<Bytes>>;

/// The process's upstream clients. Built once; webhooks hold an `Arc` of theirs, so every
/// invocation of a webhook shares one connection pool.
#[derive(Debug)]
pub struct Upstream {
    default: Arc<Client>,
    /// Clients with extra roots, by a hash of the PEM content. A mutex: touched only when
    /// a file with `[tls]` loads, never per request.
    with_roots: Mutex<HashMap<u64, Arc<Client>>>,
    deny: Arc<Vec<IpNet>>,
}

/// The upstream's answer, body fully read.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Why a call did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No full response within the timeout.
    #[error("no full response within {0:?}")]
    Timeout(Duration),
    /// DNS, connect or TLS failure.
    #[error("{0}")]
    Unreachable(String),
    /// The destination's address is in `deny_networks`.
    #[error("{0}")]
    Denied(String),
    /// The body is over the size limit.
    #[error("the response body is over the limit of {0} bytes")]
    TooLarge(usize),
    /// The connection failed while reading the body.
    #[error("reading the response failed: {0}")]
    Body(String),
}

/// A resolved address fell in `deny_networks`.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {address}, which is in a denied network")]
pub struct DestinationDenied {
    host: String,
    address: IpAddr,
}

/// A DNS resolver that drops addresses in `deny_networks` and fails when none is left.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    deny: Arc<Vec<IpNet>>,
}

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let deny = Arc::clone(&self.deny);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut allowed = Vec::with_capacity(resolved.len());
            let mut first_denied = None;
            for address in resolved {
                if denied(&deny, address.ip()) {
                    first_denied.get_or_insert(address.ip());
                } else {
                    allowed.push(address);
                }
            }
            match (allowed.is_empty(), first_denied) {
                (true, Some(address)) => {
                    Err(Box::new(DestinationDenied { host, address }) as Self::Error)
                }
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

/// Whether `address` is in one of `deny` (IPv4-mapped IPv6 is checked as IPv4 too).
pub fn denied(deny: &[IpNet], address: IpAddr) -> bool {
    let mapped = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    deny.iter()
        .any(|net| net.contains(&address) || mapped.is_some_and(|m| net.contains(&m)))
}

impl Upstream {
    /// Builds the default client (webpki roots) with the destination policy.
    pub fn new(deny_networks: Vec<IpNet>) -> Upstream {
        let deny = Arc::new(deny_networks);
        let roots = webpki_roots_store();
        Upstream {
            default: Arc::new(build_client(roots, &deny)),
            with_roots: Mutex::new(HashMap::new()),
            deny,
        }
    }

    /// The client with webpki roots only.
    pub fn default_client(&self) -> Arc<Client> {
        Arc::clone(&self.default)
    }

    /// A client that also trusts the certificates of the PEM file at `path`.
    pub fn client_with_roots(&self, path: &Path) -> Result<Arc<Client>, String> {
        let pem =
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let key = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            pem.hash(&mut hasher);
            hasher.finish()
        };
        let mut cache = self
            .with_roots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = cache.get(&key) {
            return Ok(Arc::clone(client));
        }
        let mut roots = webpki_roots_store();
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|err| format!("{} is not valid PEM: {err}", path.display()))?;
            roots
                .add(cert)
                .map_err(|err| format!("{}: a certificate was refused: {err}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        let client = Arc::new(build_client(roots, &self.deny));
        cache.insert(key, Arc::clone(&client));
        Ok(client)
    }

    /// Whether a literal IP host is denied (names are checked when they resolve).
    pub fn literal_denied(&self, address: Option<IpAddr>) -> Option<String> {
        let address = address?;
        denied(&self.deny, address).then(|| format!("{address} is in a denied network"))
    }

    /// Sends `request` and reads the whole answer within `timeout`, refusing a body over
    /// `limit` bytes (declared or streamed).
    pub async fn call(
        &self,
        client: &Client,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Answer, CallError> {
        let exchange = async {
            let response = client.request(request).await.map_err(classify)?;
            let (parts, body) = response.into_parts();
            let declared = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|length| length > limit as u64) {
                return Err(CallError::TooLarge(limit));
            }
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|err| {
                    if err.is::<http_body_util::LengthLimitError>() {
                        CallError::TooLarge(limit)
                    } else {
                        CallError::Body(chain(&*err))
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)))
    }
}

fn webpki_roots_store() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn build_client(roots: rustls::RootCertStore, deny: &Arc<Vec<IpNet>>) -> Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Invariant: the ring provider supports the default protocol versions.
    #[expect(
        clippy::expect_used,
        reason = "the ring provider supports TLS 1.2 and 1.3"
    )]
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the safe default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(PolicyResolver {
        deny: Arc::clone(deny),
    });
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https)
}

/// An error and its causes, as one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Turns a client error into a call error, finding a policy refusal in its causes.
fn classify(err: hyper_util::client::legacy::Error) -> CallError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut chain = Vec::new();
    while let Some(cause) = source {
        if let Some(denied) = cause.downcast_ref::<DestinationDenied>() {
            return CallError::Denied(denied.to_string());
        }
        let text = cause.to_string();
        if chain.last() != Some(&text) {
            chain.push(text);
        }
        source = cause.source();
    }
    CallError::Unreachable(chain.join(": "))
}
