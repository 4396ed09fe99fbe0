//! Connections to one upstream origin, kept alive and reused.
//!
//! Every webhook's origin (`scheme://host:port`) is fixed when its file loads, so each
//! webhook holds the [`Pool`] of its origin directly: a request takes the most recently
//! used idle connection without hashing or looking anything up, sends on hyper's HTTP/1
//! (or, when TLS negotiates it, HTTP/2) connection API, and gives the connection back once
//! the whole answer is read. A connection is never shared by two HTTP/1 requests at once,
//! so a pool grows to the concurrency it sees. An idle HTTP/1 connection is not used after
//! [`IDLE_TIMEOUT`] (the next request to the origin closes it) nor once the upstream closed
//! it; the shared HTTP/2 connection is pinged while idle, and replaced when it dies.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower_service::Service as _;

use super::{CallError, PolicyResolver};

/// How long an unused connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Opens TCP (and TLS) connections: the policy-checking resolver, and the trust roots.
pub type Connector = HttpsConnector<HttpConnector<PolicyResolver>>;

/// The connections to one origin through one connector (one set of trust roots).
pub struct Pool {
    connector: Connector,
    /// `scheme://authority/`, what the connector connects to.
    origin: Uri,
    scheme: Scheme,
    authority: Authority,
    /// The `Host` header sent when the request has none (no default port).
    host: HeaderValue,
    idle: Mutex<Idle>,
}

/// The idle connections, newest last, and the one shared HTTP/2 connection.
#[derive(Default)]
struct Idle {
    http1: Vec<(http1::SendRequest<Full<Bytes>>, Instant)>,
    http2: Option<http2::SendRequest<Full<Bytes>>>,
}

/// A connection lent to one request.
pub(super) enum Lent {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool for the origin `scheme://authority` (as parsed when the URL was compiled),
    /// empty until the first request.
    pub fn new(connector: Connector, scheme: &Scheme, authority: &Authority) -> Pool {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme.clone());
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        // Invariant: a parsed scheme and authority with the path `/` make a URI.
        #[expect(clippy::expect_used, reason = "parts that were parsed from a URI")]
        let origin = Uri::from_parts(parts).expect("a scheme, an authority and `/`");
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => authority.as_str(),
            _ => authority.host(),
        };
        // Invariant: an authority's characters are all valid in a header value.
        #[expect(clippy::expect_used, reason = "an authority is a valid header value")]
        let host = HeaderValue::from_str(host).expect("an authority is a valid header value");
        Pool {
            connector,
            origin,
            scheme: scheme.clone(),
            authority: authority.clone(),
            host,
            idle: Mutex::new(Idle::default()),
        }
    }

    /// Sends `request` (its URI absolute, of this origin) and returns the response head;
    /// [`Pool::give_back`] the returned connection once the body is read. A request that
    /// an idle connection could not take (it was closing) goes on another one; one that a
    /// new connection could not take fails.
    pub(super) async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Option<Lent>), CallError> {
        loop {
            let (lent, reused) = match self.take().await {
                Some(lent) => (lent, true),
                None => (self.connect().await?, false),
            };
            let unsent = match lent {
                Lent::Http1(mut sender) => {
                    let mut outgoing = request;
                    if outgoing.uri().scheme().is_some() {
                        *outgoing.uri_mut() = origin_form(outgoing.uri());
                    }
                    // HTTP/1.1 names the origin in `Host` (HTTP/2 in `:authority`).
                    if !outgoing.headers().contains_key(http::header::HOST) {
                        outgoing
                            .headers_mut()
                            .insert(http::header::HOST, self.host.clone());
                    }
                    match sender.try_send_request(outgoing).await {
                        Ok(response) => return Ok((response, Some(Lent::Http1(sender)))),
                        Err(mut err) => match err.take_message() {
                            Some(unsent) => unsent,
                            None => return Err(CallError::from_hyper(err.error())),
                        },
                    }
                }
                Lent::Http2(mut sender) => {
                    if request.uri().scheme().is_none() {
                        *request.uri_mut() = self.absolute(request.uri());
                    }
                    request.headers_mut().remove(http::header::HOST);
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok((response, None)),
                        Err(mut err) => match err.take_message() {
                            Some(unsent) => {
                                // Not offered again: the next try takes another connection.
                                self.lock().http2 = None;
                                unsent
                            }
                            None => return Err(CallError::from_hyper(err.error())),
                        },
                    }
                }
            };
            if !reused {
                return Err(CallError::Unreachable(
                    "the upstream closed a new connection before the request was sent".into(),
                ));
            }
            // Never written: the idle connection was closing. Try another one.
            request = unsent;
        }
    }

    /// Returns a connection whose answer was read in full.
    pub(super) fn give_back(&self, lent: Option<Lent>) {
        let Some(Lent::Http1(sender)) = lent else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        // The oldest are first: drop those unused for too long.
        let stale = idle
            .http1
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) > IDLE_TIMEOUT)
            .count();
        idle.http1.drain(..stale);
        idle.http1.push((sender, now));
    }

    /// The newest idle connection that is still open and ready, if any.
    async fn take(&self) -> Option<Lent> {
        loop {
            let next = {
                let mut idle = self.lock();
                if let Some(shared) = idle.http2.as_ref() {
                    if shared.is_closed() {
                        idle.http2 = None;
                    } else {
                        return Some(Lent::Http2(shared.clone()));
                    }
                }
                idle.http1.pop()
            };
            let (mut sender, since) = next?;
            if since.elapsed() > IDLE_TIMEOUT || sender.is_closed() {
                continue;
            }
            // Ready as soon as the connection has finished the previous exchange.
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(Lent::Http1(sender));
            }
        }
    }

    /// Opens a new connection: HTTP/2 when TLS negotiates it, else HTTP/1.1.
    async fn connect(&self) -> Result<Lent, CallError> {
        let mut connector = self.connector.clone();
        let stream: MaybeHttpsStream<TokioIo<tokio::net::TcpStream>> = connector
            .call(self.origin.clone())
            .await
            .map_err(|err| CallError::from_connect(&*err))?;
        if stream.connected().is_negotiated_h2() {
            // Pings find a connection that died silently (it is then closed, and replaced).
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true)
                .handshake(stream)
                .await
                .map_err(|err| CallError::from_hyper(&err))?;
            spawn_connection(connection);
            self.lock().http2 = Some(sender.clone());
            return Ok(Lent::Http2(sender));
        }
        let (sender, connection) = http1::Builder::new()
            .handshake(stream)
            .await
            .map_err(|err| CallError::from_hyper(&err))?;
        spawn_connection(connection);
        Ok(Lent::Http1(sender))
    }

    fn absolute(&self, uri: &Uri) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = uri.path_and_query().cloned();
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        crate::lock(&self.idle)
    }
}

/// Runs a connection (HTTP/1 or HTTP/2) on a task of its own until it ends.
fn spawn_connection<C>(connection: C)
where
    C: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "upstream connection ended");
        }
    });
}

/// `/path?query` of an absolute URI, as HTTP/1.1 sends it to an origin server.
fn origin_form(uri: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}
