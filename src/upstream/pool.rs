//! Connections to one upstream origin, kept alive and reused.
//!
//! Every webhook's origin (`scheme://host:port`) is fixed when its file loads, so each
//! webhook holds the [`Pool`] of its origin directly: a request takes the most recently
//! used idle connection without hashing or looking anything up. HTTP/1.1 runs on the
//! request's own task ([`Conn`]); when TLS negotiates HTTP/2, one connection, driven by
//! hyper on a task of its own, is shared by all requests. An HTTP/1.1 connection serves one
//! request at a time, so a pool grows to the concurrency it sees. An idle HTTP/1.1
//! connection is not used after [`IDLE_TIMEOUT`] (the next request to the origin closes it)
//! nor once the upstream closed it; the shared HTTP/2 connection is pinged while idle, and
//! replaced when it dies. A request that a connection did not take goes on another one; on
//! HTTP/2 that includes one the upstream says it did not process ([`Unprocessed`]).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioIo, TokioTimer};
use tower_service::Service as _;

use super::http1::{Conn, Failure};
use super::{Answer, CallError, Outgoing, PolicyResolver, chain};

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
    /// Held while an HTTP/2 connection opens, once the origin has spoken HTTP/2: the
    /// requests that find no connection (all at once after a `GOAWAY`) wait for one to open
    /// and share it, rather than each opening its own.
    opening: tokio::sync::Mutex<()>,
}

/// The idle HTTP/1.1 connections, newest last, and the one shared HTTP/2 connection.
#[derive(Default)]
struct Idle {
    #[expect(clippy::vec_box, reason = "moved out and back in on every request")]
    http1: Vec<Box<Conn>>,
    http2: Option<Shared>,
    /// Counts the HTTP/2 connections opened, to tell the current one from an older one.
    opened: u64,
}

/// The shared HTTP/2 connection and its number.
#[derive(Clone)]
struct Shared {
    number: u64,
    sender: http2::SendRequest<Full<Bytes>>,
}

/// A connection taken for one request.
enum Taken {
    /// Boxed: a TLS connection's state is large, and taken and given back each request.
    Http1(Box<Conn>),
    Http2(Shared),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// `err`, saying that the request went out a second time after `first`, when it did.
fn told_resent(err: CallError, first: Option<&str>) -> CallError {
    match (first, err) {
        (Some(first), CallError::Unreachable(second)) => CallError::Unreachable(format!(
            "{first} on a kept connection; sent again on a new one: {second}"
        )),
        (_, err) => err,
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
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `request` (of this origin) and reads the whole answer within `timeout` of
    /// `started`, refusing a body over `limit` bytes; HTTP/1 header fields are kept only if
    /// `headers`. A request that an idle connection could not take (the upstream had
    /// closed it) goes on another one; one that a new connection could not take fails. An
    /// idempotent request an idle connection closed on without answering goes once more,
    /// on a new connection: the upstream may have read it, and an upstream that reads and
    /// closes would otherwise get it once per idle connection.
    ///
    /// `started` also stands for "now" when an idle connection is taken: it is a few
    /// microseconds old, on the side of finding a connection idle for too long.
    pub(super) async fn call(
        &self,
        request: &Outgoing,
        started: Instant,
        timeout: Duration,
        limit: usize,
        headers: bool,
    ) -> Result<Answer, CallError> {
        let at = tokio::time::Instant::from_std(started + timeout);
        let late = || CallError::Timeout(timeout);
        // Why the request went out once more, when it did.
        let mut resent: Option<String> = None;
        loop {
            let idle = if resent.is_some() {
                None
            } else {
                self.take(started)
            };
            let (taken, reused) = match idle {
                Some(taken) => (taken, true),
                None => (
                    // Boxed, as is the HTTP/2 call: their futures (TLS, HTTP/2) are
                    // kilobytes, and would otherwise be part of every request's future.
                    tokio::time::timeout_at(at, Box::pin(self.connect()))
                        .await
                        .map_err(|_| late())?
                        .map_err(|err| told_resent(err, resent.as_deref()))?,
                    false,
                ),
            };
            let not_taken = match taken {
                Taken::Http1(mut conn) => {
                    let exchange = conn.exchange(request, &self.host, limit, headers, at);
                    match exchange.await {
                        Some(Ok((answer, reusable))) => {
                            if reusable {
                                self.give_back(conn);
                            }
                            return Ok(answer);
                        }
                        None => return Err(late()),
                        Some(Err(Failure::Failed(err))) => {
                            return Err(told_resent(err, resent.as_deref()));
                        }
                        Some(Err(Failure::NotTaken(reason))) => reason,
                        Some(Err(Failure::Unanswered(reason))) if reused => {
                            tracing::debug!(reason = %reason, "an idle upstream connection closed without answering; sending once more on a new one");
                            resent = Some(reason);
                            continue;
                        }
                        Some(Err(Failure::Unanswered(reason))) => {
                            let err = CallError::Unreachable(reason);
                            return Err(told_resent(err, resent.as_deref()));
                        }
                    }
                }
                Taken::Http2(sender) => {
                    let call = Box::pin(self.call_http2(sender, request, limit));
                    match tokio::time::timeout_at(at, call)
                        .await
                        .map_err(|_| late())?
                    {
                        Ok(result) => return result,
                        Err(reason) => reason.to_owned(),
                    }
                }
            };
            if !reused {
                let err = CallError::Unreachable(format!(
                    "the upstream closed a new connection before taking the request: {not_taken}"
                ));
                return Err(told_resent(err, resent.as_deref()));
            }
            tracing::debug!(reason = %not_taken, "an idle upstream connection was closed; trying another");
        }
    }

    /// Sends `request` on the shared HTTP/2 connection; `Err(why)` when the connection did
    /// not take it and is going away (it was closing, or its `GOAWAY` left the request
    /// unprocessed): it is not offered again, and the request can go on a new one. A stream
    /// the upstream refuses (`REFUSED_STREAM`, say over its concurrency limit, which hyper
    /// cannot know on a new connection) goes once more on the same connection, which stays.
    async fn call_http2(
        &self,
        shared: Shared,
        request: &Outgoing,
        limit: usize,
    ) -> Result<Result<Answer, CallError>, &'static str> {
        let Shared { number, mut sender } = shared;
        let mut refused = false;
        let not_taken = loop {
            match sender.try_send_request(self.http2_request(request)).await {
                Ok(response) => return Ok(read_response(response, limit).await),
                Err(err) if err.message().is_some() => break "the HTTP/2 connection is closing",
                Err(err) => match unprocessed(err.error()) {
                    Some(Unprocessed::Refused) if !refused => refused = true,
                    Some(Unprocessed::Refused) => {
                        return Ok(Err(CallError::Unreachable(
                            "the upstream refused the HTTP/2 request twice (REFUSED_STREAM)"
                                .to_owned(),
                        )));
                    }
                    Some(Unprocessed::GoneAway) => {
                        break "the upstream closed the HTTP/2 connection (GOAWAY) before the request";
                    }
                    None => return Ok(Err(CallError::from_hyper(err.error()))),
                },
            }
        };
        // Only this connection: another request may have opened the next one.
        let mut idle = self.lock();
        if idle
            .http2
            .as_ref()
            .is_some_and(|current| current.number == number)
        {
            idle.http2 = None;
        }
        Err(not_taken)
    }

    /// `request` as hyper's HTTP/2 client takes it.
    fn http2_request(&self, request: &Outgoing) -> Request<Full<Bytes>> {
        let mut outgoing = Request::new(Full::new(request.body.clone()));
        *outgoing.method_mut() = request.method.clone();
        *outgoing.uri_mut() = self.absolute(&request.uri);
        let headers = outgoing.headers_mut();
        for (name, value) in &request.headers {
            // HTTP/2 names the origin in `:authority`.
            if name != http::header::HOST {
                headers.append(name.clone(), value.clone());
            }
        }
        outgoing
    }

    /// Keeps an HTTP/1.1 connection whose answer was read in full for the next request.
    fn give_back(&self, mut conn: Box<Conn>) {
        // The real time: a slow answer (the timeout may be longer than the idle limit)
        // leaves a connection that was busy until now, not idle since the call began.
        let now = Instant::now();
        conn.since = now;
        let mut idle = self.lock();
        // The oldest are first: drop those unused for too long.
        let stale = idle
            .http1
            .iter()
            .take_while(|conn| now.saturating_duration_since(conn.since) > IDLE_TIMEOUT)
            .count();
        idle.http1.drain(..stale);
        idle.http1.push(conn);
    }

    /// The shared HTTP/2 connection, or the newest idle HTTP/1.1 connection that is still
    /// open (and was not idle too long at `now`), if any.
    fn take(&self, now: Instant) -> Option<Taken> {
        loop {
            let next = {
                let mut idle = self.lock();
                if let Some(shared) = idle.http2.as_ref() {
                    if shared.sender.is_closed() {
                        idle.http2 = None;
                    } else {
                        return Some(Taken::Http2(shared.clone()));
                    }
                }
                idle.http1.pop()
            };
            let mut conn = next?;
            if now.saturating_duration_since(conn.since) <= IDLE_TIMEOUT
                && !conn.closed_while_idle()
            {
                return Some(Taken::Http1(conn));
            }
        }
    }

    /// Opens a new connection: HTTP/2 when TLS negotiates it, else HTTP/1.1. To an origin
    /// that has spoken HTTP/2, one at a time: a request that waited takes the connection
    /// another one opened meanwhile.
    async fn connect(&self) -> Result<Taken, CallError> {
        let http2_before = self.lock().opened > 0;
        let _opening = if http2_before {
            let opening = self.opening.lock().await;
            if let Some(taken) = self.take(Instant::now()) {
                return Ok(taken);
            }
            Some(opening)
        } else {
            None
        };
        let mut connector = self.connector.clone();
        let stream: MaybeHttpsStream<TokioIo<tokio::net::TcpStream>> = connector
            .call(self.origin.clone())
            .await
            .map_err(|err| CallError::from_connect(&*err))?;
        if !stream.connected().is_negotiated_h2() {
            return Ok(Taken::Http1(Box::new(Conn::new(TokioIo::new(stream)))));
        }
        // Pings find a connection that died silently (it is then closed, and replaced).
        let (sender, connection) = http2::Builder::new(BoxedExecutor)
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .handshake(stream)
            .await
            .map_err(|err| CallError::from_hyper(&err))?;
        spawn_connection(connection);
        let mut idle = self.lock();
        idle.opened += 1;
        let shared = Shared {
            number: idle.opened,
            sender,
        };
        idle.http2 = Some(shared.clone());
        Ok(Taken::Http2(shared))
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

/// How the upstream said it did not process an HTTP/2 request (RFC 9113, 8.7), which makes
/// the request safe to send again, whatever its method.
enum Unprocessed {
    /// The stream was above the last one a graceful `GOAWAY` (no error) kept: a server
    /// closing a connection after so many requests, as nginx does every 1,000 by default.
    GoneAway,
    /// The stream was reset with `REFUSED_STREAM`.
    Refused,
}

/// Whether the upstream said it did not process the HTTP/2 request that failed with `err`.
/// hyper reports both cases as errors of the call (hyperium/hyper#2500); their source is
/// h2's error, which tells them apart. A `GOAWAY` with an error code makes the same promise
/// for the streams above its last one, but they are not sent again: a server in trouble
/// (`ENHANCE_YOUR_CALM`, say) should not get them back at once. One case cannot be told
/// apart: on a multi-threaded runtime, a request whose stream was written just before a
/// `GOAWAY` arrived can fail with that `GOAWAY` though it is below its last stream; a server
/// that shuts down in two steps (first a `GOAWAY` keeping every stream) could then see it
/// twice.
fn unprocessed(err: &hyper::Error) -> Option<Unprocessed> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            if !h2.is_remote() {
                return None;
            }
            return match h2.reason() {
                Some(h2::Reason::NO_ERROR) if h2.is_go_away() => Some(Unprocessed::GoneAway),
                Some(h2::Reason::REFUSED_STREAM) if h2.is_reset() => Some(Unprocessed::Refused),
                _ => None,
            };
        }
        source = cause.source();
    }
    None
}

/// Spawns hyper's HTTP/2 tasks (two per call: the request's body and the answer) boxed,
/// so that the task holds a pointer and the future is copied once, not at every move
/// through `tokio::spawn`.
#[derive(Clone, Copy)]
struct BoxedExecutor;

impl<F> hyper::rt::Executor<F> for BoxedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Box::pin(future));
    }
}

/// Runs an HTTP/2 connection on a task of its own until it ends.
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

/// Reads an HTTP/2 answer's body, refusing one over `limit` bytes (declared or streamed).
async fn read_response(response: Response<Incoming>, limit: usize) -> Result<Answer, CallError> {
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
}
