//! Calling upstreams: one connector per set of trust roots (webpki roots, plus a webhook's
//! `[tls] ca_file`), one connection [`Pool`] per origin and connector, the destination
//! policy on resolved addresses, the webhook's timeout over the whole exchange, the
//! response size limit while streaming, and the classification of failures.
//!
//! HTTP/1.1 is spoken on the invoking request's task (`http1`), HTTP/2 by hyper. Redirects
//! are not followed and proxy variables are ignored (no proxy connector is installed).

mod http1;
pub(crate) use http1::decimal;
mod pool;

pub use pool::{Connector, IDLE_TIMEOUT, Pool};

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::lock;
use crate::pace::Pace;

/// The process's upstream connectors and pools. Built once; webhooks hold an `Arc` of
/// their origin's pool, so every invocation to one origin shares its connections, across
/// webhooks and across reloads.
pub struct Upstream {
    default: Connector,
    /// Connectors with extra roots, by a hash of the PEM content. Mutexes: touched only
    /// when files load, never per request.
    with_roots: Mutex<HashMap<u64, Connector>>,
    /// The pools in use, by trust roots and origin.
    pools: Mutex<HashMap<PoolKey, Weak<Pool>>>,
    deny: Arc<Vec<IpNet>>,
    /// The bot invocations in progress, whose writes go out together under load.
    pub pace: Pace,
}

/// A pool's trust roots (a hash of the extra PEM file; `None`: webpki's only) and origin.
type PoolKey = (Option<u64>, String);

/// Which trust roots a webhook's upstream connections use, with the connector that uses
/// them.
#[derive(Clone)]
pub struct Roots {
    /// A hash of the extra PEM file; `None`: webpki's roots only.
    key: Option<u64>,
    connector: Connector,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("deny", &self.deny)
            .finish_non_exhaustive()
    }
}

/// The upstream's answer, body fully read.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers (over HTTP/1, only when the call asked to keep them).
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
    // A connection to the unspecified address (`0.0.0.0`, `::`) reaches this host: it is
    // checked as the loopback address it reaches, too.
    let reached = match mapped.unwrap_or(address) {
        IpAddr::V4(v4) if v4.is_unspecified() => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(v6) if v6.is_unspecified() => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => None,
    };
    deny.iter().any(|net| {
        net.contains(&address)
            || mapped.is_some_and(|m| net.contains(&m))
            || reached.is_some_and(|r| net.contains(&r))
    })
}

impl Upstream {
    /// Builds the default connector (webpki roots) with the destination policy.
    pub fn new(deny_networks: Vec<IpNet>) -> Upstream {
        let deny = Arc::new(deny_networks);
        let roots = webpki_roots_store();
        Upstream {
            default: build_connector(roots, &deny),
            with_roots: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            deny,
            pace: Pace::default(),
        }
    }

    /// Trust roots that add the certificates of the PEM file at `path` to webpki's.
    pub fn roots_from(&self, path: &Path) -> Result<Roots, String> {
        let pem = crate::config::source::read_at_most(path, crate::config::source::MAX_CA_FILE)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let key = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            pem.hash(&mut hasher);
            hasher.finish()
        };
        let mut cache = lock(&self.with_roots);
        if let Some(connector) = cache.get(&key) {
            return Ok(Roots {
                key: Some(key),
                connector: connector.clone(),
            });
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
        let connector = build_connector(roots, &self.deny);
        cache.insert(key, connector.clone());
        Ok(Roots {
            key: Some(key),
            connector,
        })
    }

    /// Webpki's trust roots only.
    pub fn webpki_roots(&self) -> Roots {
        Roots {
            key: None,
            connector: self.default.clone(),
        }
    }

    /// The pool of the origin `scheme://authority` through `roots`: the one in use when
    /// there is one (another webhook's, or the previous load's), else a new one.
    pub fn pool(&self, roots: &Roots, scheme: &Scheme, authority: &Authority) -> Arc<Pool> {
        let mut pools = lock(&self.pools);
        let key = (roots.key, format!("{scheme}://{authority}"));
        if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
            return pool;
        }
        let pool = Arc::new(Pool::new(roots.connector.clone(), scheme, authority));
        pools.retain(|_, pool| pool.strong_count() > 0);
        pools.insert(key, Arc::downgrade(&pool));
        pool
    }

    /// Whether a literal IP host is denied (names are checked when they resolve).
    pub fn literal_denied(&self, address: Option<IpAddr>) -> Option<String> {
        let address = address?;
        denied(&self.deny, address).then(|| format!("{address} is in a denied network"))
    }

    /// Sends `request` (of the pool's origin) and reads the whole answer within `timeout`
    /// of `started` (when the invocation began), refusing a body over `limit` bytes
    /// (declared or streamed). The answer's header fields are kept if `headers` (a mapping
    /// reads them); else they may be left out.
    pub async fn call(
        &self,
        pool: &Pool,
        request: Outgoing,
        started: Instant,
        timeout: Duration,
        limit: usize,
        headers: bool,
    ) -> Result<Answer, CallError> {
        self.pace.others_first().await;
        pool.call(&request, started, timeout, limit, headers).await
    }
}

fn webpki_roots_store() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn build_connector(roots: rustls::RootCertStore, deny: &Arc<Vec<IpNet>>) -> Connector {
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
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http)
}

/// A rendered request, as the client sends it.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The method.
    pub method: Method,
    /// The absolute URI: the webhook's origin, and the rendered path and query.
    pub uri: Uri,
    /// The header fields, in the order they are sent (`Host` and `Content-Length` are
    /// the client's).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Bytes,
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

impl CallError {
    /// A failure to connect (DNS, TCP, TLS), finding a policy refusal in its causes.
    fn from_connect(err: &(dyn std::error::Error + 'static)) -> CallError {
        let mut source = Some(err);
        while let Some(cause) = source {
            if let Some(denied) = cause.downcast_ref::<DestinationDenied>() {
                return CallError::Denied(denied.to_string());
            }
            source = cause.source();
        }
        CallError::Unreachable(chain(err))
    }

    /// A failure of the HTTP exchange before a response head arrived.
    fn from_hyper(err: &hyper::Error) -> CallError {
        CallError::Unreachable(chain(err))
    }
}
