//! The bot API and the admin API over hyper: routing, reading bodies within limits, caller
//! tokens, and [`run`], which serves a bound listener until a shutdown future resolves and
//! then drains connections.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::{self, State};
use crate::config::{FileState, Served, Webhook};
use crate::error::{ApiError, ErrorKind};
use crate::metrics::{Outcome, WebhookMetrics};
use crate::pipeline;
use crate::registry::Snapshot;
use crate::render::select::{Data, Document, Selection};

mod http1;

/// What the accept loop tells every connection it serves.
#[derive(Clone, Copy, Debug, Default)]
struct Signal {
    /// Shutdown began: a connection closes once idle, and after the request it serves.
    stop: bool,
    /// A client waits for a slot: while it does, a connection that is idle, or becomes
    /// idle, closes to make room, so that clients holding idle keep-alive connections
    /// cannot keep a new one out (nginx, too, closes idle keep-alive connections when it
    /// runs out of them).
    waiting: bool,
}

impl Signal {
    /// Whether an idle connection closes; `room`: whether it would to make room (only one
    /// that has served a request, so that a new one is not closed before its first request
    /// is read).
    fn closes_idle(&self, room: bool) -> bool {
        self.stop || (room && self.waiting)
    }
}

/// Which API a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `/v1/webhooks...` for bots.
    Bot,
    /// `/healthz`, `/readyz`, `/-/config`, `/-/reload` for operators.
    Admin,
}

/// How long in-flight requests may take to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `api` on `listener` until `shutdown` resolves, then stops accepting and lets
/// open connections finish their requests (up to [`DRAIN_TIMEOUT`]).
///
/// At most `max_connections` connections are served at once (the rest wait in the
/// kernel's backlog); when a client comes and every slot is taken, the connections idle
/// between requests are closed to make room. A client gets `header_read_timeout` to send
/// a request's headers.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    api: Api,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.settings.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(state.settings.max_connections));
    // Tells every connection that shutdown began, or that room is wanted.
    let (signal, stopped) = tokio::sync::watch::channel(Signal::default());
    // Clients that found every slot taken since the last warning, and when that was: one
    // warning a minute at most, as under a steady overload each new client finds it so.
    let mut crowded = (0u64, None::<std::time::Instant>);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => Ok(slot),
            Err(_) => {
                // A client waits: the idle connections make room, and so does each one
                // that becomes idle while it waits (the clients behind it in the backlog
                // wait their turn).
                signal.send_modify(|signal| signal.waiting = true);
                crowded.0 += 1;
                if crowded
                    .1
                    .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
                {
                    tracing::warn!(
                        max_connections = state.settings.max_connections,
                        clients = crowded.0,
                        "every connection slot was taken when clients came: idle connections \
                         are closed to make room"
                    );
                    crowded = (0, Some(std::time::Instant::now()));
                }
                let slot = tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot,
                    () = &mut shutdown => break,
                };
                signal.send_modify(|signal| signal.waiting = false);
                slot
            }
        };
        let Ok(slot) = slot else { break };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let builder = Arc::clone(&builder);
        let stopped = stopped.clone();
        tokio::spawn(async move {
            // Bot calls are served by `http1` until something else comes; the rest, and
            // everything on the admin listener, by hyper.
            let io = match api {
                Api::Bot => match http1::serve(stream, Arc::clone(&state), stopped.clone()).await {
                    http1::Ended::Closed => return drop(slot),
                    http1::Ended::Handover(replay) => replay,
                },
                Api::Admin => http1::Replay::none(stream),
            };
            // Only HTTP/2 closes to make room here: hyper's HTTP/1 would drop a request
            // whose head is arriving, where HTTP/2's `GOAWAY` tells the client what to retry.
            let makes_room = io.is_http2();
            let idle_timeout = state.settings.header_read_timeout;
            let activity = Arc::new(Activity::default());
            let service = {
                let activity = Arc::clone(&activity);
                service_fn(move |request| {
                    let state = Arc::clone(&state);
                    let open = activity.open();
                    async move {
                        let response = handle(&state, api, request).await;
                        drop(open);
                        Ok::<_, Infallible>(response)
                    }
                })
            };
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .into_owned();
            let shut_down =
                |connection: Pin<&mut _>| auto::Connection::graceful_shutdown(connection);
            let ended = serve_until_idle(
                connection,
                shut_down,
                &activity,
                makes_room,
                idle_timeout,
                stopped,
            );
            if let Err(err) = ended.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    signal.send_modify(|signal| signal.stop = true);
    let drained = async {
        // Every connection holds a slot until it ends; a call whose caller went away runs
        // on to its end on a task of its own.
        let _ = slots
            .acquire_many(state.settings.max_connections as u32)
            .await;
        state.calls.close();
        state.calls.wait().await;
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!("connections still open after the drain period; closing them");
    }
}

/// Requests open on a connection hyper serves, and when the last one ended.
struct Activity {
    open: std::sync::atomic::AtomicUsize,
    since: std::sync::Mutex<tokio::time::Instant>,
    /// Notified when the last open request ends (HTTP/2 serves each on a task of its own).
    idle: tokio::sync::Notify,
    /// Whether a request has been opened.
    served: std::sync::atomic::AtomicBool,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            open: std::sync::atomic::AtomicUsize::new(0),
            since: std::sync::Mutex::new(tokio::time::Instant::now()),
            idle: tokio::sync::Notify::new(),
            served: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Activity {
    /// Counts a request open until the guard drops (answered, or cancelled).
    fn open(self: &Arc<Self>) -> impl Drop + Send + use<> {
        struct Open(Arc<Activity>);
        impl Drop for Open {
            fn drop(&mut self) {
                *crate::lock(&self.0.since) = tokio::time::Instant::now();
                if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
                    self.0.idle.notify_one();
                }
            }
        }
        self.open.fetch_add(1, Ordering::SeqCst);
        self.served.store(true, Ordering::SeqCst);
        Open(Arc::clone(self))
    }

    /// When the connection will have been idle for `timeout`, if no request is open.
    fn idle_at(&self, timeout: Duration) -> Option<tokio::time::Instant> {
        (self.open.load(Ordering::SeqCst) == 0).then(|| *crate::lock(&self.since) + timeout)
    }
}

/// Serves `connection` to its end. It is shut down gracefully when `stop` turns true, when
/// a client waits for a slot while it is idle (if it `makes_room`, and has served a
/// request), or after `timeout` without an open request:
/// an idle HTTP/2 connection would otherwise hold its slot for ever (hyper bounds only
/// HTTP/1's wait for a head, with `header_read_timeout`). Gracefully: an answer being
/// written is written whole; an HTTP/2 client gets `GOAWAY`, and its open streams finish.
/// A client that does not answer the `GOAWAY`'s ping is closed by the keep-alive pings (30
/// s, then 20 s for the answer).
async fn serve_until_idle<C, E>(
    connection: C,
    shut_down: impl Fn(Pin<&mut C>),
    activity: &Activity,
    makes_room: bool,
    timeout: Duration,
    signal: tokio::sync::watch::Receiver<Signal>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    use tokio::time::{Instant, sleep_until};
    tokio::pin!(connection);
    let mut closing = false;
    // Room was wanted while a request was open: it looks again when its last one ends.
    let mut busy = false;
    loop {
        let idle_at = activity
            .idle_at(timeout)
            .unwrap_or_else(|| Instant::now() + timeout);
        let served = activity.served.load(Ordering::SeqCst);
        let room = makes_room && served && !busy;
        tokio::select! {
            ended = connection.as_mut() => return ended,
            seen = wait_to_close(signal.clone(), room), if !closing => {
                if seen.is_none_or(|signal| signal.stop) || activity.idle_at(timeout).is_some() {
                    shut_down(connection.as_mut());
                    closing = true;
                } else {
                    busy = true;
                }
            }
            // The end of the first request (from then on it may make room), or of the last
            // open one while room is wanted: loops to look again.
            () = activity.idle.notified(), if makes_room && (!served || busy) && !closing => {
                busy = false;
            }
            () = sleep_until(idle_at), if !closing => {
                // Whether it is still idle: a request may have come and gone meanwhile.
                if activity.idle_at(timeout).is_some_and(|at| at <= Instant::now()) {
                    shut_down(connection.as_mut());
                    closing = true;
                }
            }
        }
    }
}

/// The signal once it says that an idle connection closes ([`Signal::closes_idle`]);
/// `None` when the accept loop is gone.
async fn wait_to_close(
    mut signal: tokio::sync::watch::Receiver<Signal>,
    room: bool,
) -> Option<Signal> {
    let seen = signal.wait_for(|signal| signal.closes_idle(room)).await;
    seen.ok().map(|signal| *signal)
}

/// Routes one request.
pub async fn handle(
    state: &Arc<State>,
    api: Api,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let result = match api {
        Api::Bot => bot(state, request).await,
        Api::Admin => admin(state, request).await,
    };
    result.unwrap_or_else(|err| err.response())
}

async fn bot(
    state: &Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = request.uri().path().to_owned();
    // What is answered here never reads the request's body: a body not all read yet closes
    // the connection, and says so (`invoke` decides for itself).
    let unread = request.version() < http::Version::HTTP_2 && !request.body().is_end_stream();
    let Some(rest) = path
        .strip_prefix("/v1/webhooks")
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    else {
        return Ok(closing(not_found(&path).response(), unread));
    };
    // Each segment percent-decoded (`cr%65ate` is `create`); an encoded `/` stays in its
    // segment.
    let decoded: Vec<std::borrow::Cow<'_, str>> = rest
        .split('/')
        .skip(1)
        .map(|segment| percent_encoding::percent_decode_str(segment).decode_utf8_lossy())
        .collect();
    let segments: Vec<&str> = decoded.iter().map(AsRef::as_ref).collect();
    let method = request.method().clone();
    // HEAD is GET without the body (hyper leaves it out).
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let answer = match segments.as_slice() {
        [name] if post => return invoke(state, request, name, None).await,
        [name, "test"] if post => match dry_run(request.uri().query()) {
            Ok(dry_run) => return invoke(state, request, name, Some(dry_run)).await,
            Err(err) => Err(err.for_webhook(name)),
        },
        [] | [""] if get => list(state, &request),
        [name] if get => describe(state, &request, name),
        [] | [""] => Ok(not_allowed(&method, &path, None, "GET, HEAD")),
        [name] => Ok(not_allowed(&method, &path, Some(name), "GET, HEAD, POST")),
        [name, "test"] => Ok(not_allowed(&method, &path, Some(name), "POST")),
        _ => Err(not_found(&path)),
    };
    Ok(closing(answer.unwrap_or_else(|err| err.response()), unread))
}

/// Whether a Run Webhook call asks for a dry run (`?dry_run=true`). `true`, `1`, `yes`,
/// `on` (any case) or the bare key mean a dry run; `false`, `0`, `no`, `off`, or no key, a
/// call. Any other value or parameter is refused rather than read as "send", which would act
/// on the company's data when a caller meant a dry run.
fn dry_run(query: Option<&str>) -> Result<bool, ApiError> {
    let mut dry = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        if key != "dry_run" {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("Run Webhook takes one query parameter, dry_run, not {key:?}"),
            ));
        }
        match value.to_ascii_lowercase().as_str() {
            "" | "true" | "1" | "yes" | "on" => dry = true,
            "false" | "0" | "no" | "off" => {}
            _ => {
                return Err(ApiError::new(
                    ErrorKind::BadRequest,
                    format!("dry_run={value:?} is neither true nor false"),
                ));
            }
        }
    }
    Ok(dry)
}

/// 405 for `method` on `path`, with the methods the route takes in `Allow`.
fn not_allowed(
    method: &Method,
    path: &str,
    webhook: Option<&str>,
    allow: &'static str,
) -> Response<Full<Bytes>> {
    let mut err = ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!("{method} is not allowed on {path}"),
    );
    if let Some(name) = webhook {
        err = err.for_webhook(name);
    }
    let mut response = err.response();
    response
        .headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static(allow));
    response
}

/// `response` saying `connection: close` when `close`: a refusal before the request's body
/// was read, whose end on the connection is then unknown (HTTP/1 only; hyper closes it).
fn closing(mut response: Response<Full<Bytes>>, close: bool) -> Response<Full<Bytes>> {
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    response
}

/// The loaded directory, or `not_ready` before the first load.
fn loaded(snapshot: &Snapshot) -> Result<&crate::config::Loaded, ApiError> {
    snapshot.loaded.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotReady,
            "the webhook directory has not been loaded yet",
        )
    })
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no route {path}"))
}

/// `POST /v1/webhooks/{name}` (and `/test` when `test` is `Some(dry_run)`).
async fn invoke(
    state: &Arc<State>,
    request: Request<Incoming>,
    name: &str,
    test: Option<bool>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let http1 = request.version() < http::Version::HTTP_2;
    let unread = http1 && !request.body().is_end_stream();
    let webhook = match callable(state, name, caller_token(request.headers())) {
        Ok(webhook) => webhook,
        Err(err) => return Ok(closing(err.response(), unread)),
    };
    // A bot call builds only what the templates read; Run Webhook keeps it all.
    let whole = Selection::all();
    let selection = match test {
        None => &webhook.reads.conversation,
        Some(_) => &whole,
    };
    let body = match read_body(request, &state.settings).await {
        Ok(body) => body,
        Err(err) => return Ok(closing(err.for_webhook(name).response(), http1)),
    };
    let conversation = parse_conversation(&body, selection).map_err(|e| e.for_webhook(name))?;
    match test {
        None => {
            // On its own task, the call runs to its end (counted and logged) even when the
            // caller goes away meanwhile, as on the bot connection's own task: the upstream
            // may have acted on it.
            let state = Arc::clone(state);
            let call = state.calls.clone().spawn(async move {
                let data = Data::Picked(&webhook.reads.conversation, &conversation);
                call(&state, &webhook, data).await
            });
            let answer = call.await.map_err(|err| {
                ApiError::new(ErrorKind::Internal, format!("the call failed: {err}"))
                    .for_webhook(name)
            })??;
            Ok(bytes_response(StatusCode::OK, answer))
        }
        Some(dry_run) => {
            // Parsed under `Selection::all()` above, so all of it is there.
            let conversation = conversation.into_whole(selection).ok_or_else(|| {
                ApiError::new(ErrorKind::Internal, "the conversation was not kept whole")
                    .for_webhook(name)
            })?;
            let run = crate::testrun::run(
                &state.upstream,
                &webhook,
                &conversation,
                dry_run,
                state.settings.max_response_body,
            )
            .await;
            // A failed run answers with the error's status, and still shows the request
            // it rendered (or sent), its trace and its warnings.
            let status = run
                .error
                .as_ref()
                .map_or(StatusCode::OK, |e| e.kind.status());
            Ok(json_response(status, &run.to_json()))
        }
    }
}

/// The webhook `name` if it is serving and the caller who presented `token` may call it.
fn callable(state: &State, name: &str, token: Option<&str>) -> Result<Arc<Webhook>, ApiError> {
    let snapshot = state.registry.snapshot();
    let loaded = loaded(&snapshot).map_err(|e| e.for_webhook(name))?;
    let served = loaded.webhooks.get(name).ok_or_else(|| unknown(name))?;
    if let Err(err) = authorize(&snapshot, token, &served.webhook.company) {
        // Not counted in the metrics: the log is where a bot with a rotated-away token shows.
        tracing::warn!(
            webhook = %name, company = %served.webhook.company, kind = err.kind.as_str(),
            "caller refused"
        );
        return Err(err.for_webhook(name));
    }
    Ok(Arc::clone(&served.webhook))
}

/// A bot call of `webhook` with `conversation`: render, call the upstream, map the
/// variables, count it; the answer as JSON bytes.
async fn call(
    state: &State,
    webhook: &Webhook,
    conversation: Data<'_>,
) -> Result<Vec<u8>, ApiError> {
    let series = webhook
        .metrics
        .get_or_init(|| state.metrics.webhook(&webhook.name, &webhook.company));
    let _in_flight = series.start();
    let _active = state.upstream.pace.start();
    let started = std::time::Instant::now();
    let invocation = pipeline::invoke(
        &state.upstream,
        webhook,
        conversation,
        state.settings.max_response_body,
        started,
    )
    .await;
    let elapsed = match &invocation {
        Ok(done) => done.elapsed,
        Err(_) => started.elapsed(),
    };
    let answer = record(webhook, series, elapsed, invocation)?.to_answer(&webhook.variables);
    state.upstream.pace.others_first().await;
    Ok(answer)
}

/// Logs an invocation and counts it, together.
fn record(
    webhook: &Webhook,
    series: &WebhookMetrics,
    elapsed: Duration,
    invocation: Result<pipeline::Invocation, ApiError>,
) -> Result<pipeline::Invocation, ApiError> {
    let outcome = match &invocation {
        Ok(done) if done.ok => Some(Outcome::Ok),
        Ok(_) => Some(Outcome::HttpError),
        Err(err) => match err.kind {
            ErrorKind::RenderError => Some(Outcome::RenderError),
            ErrorKind::UpstreamTimeout => Some(Outcome::Timeout),
            ErrorKind::UpstreamUnreachable | ErrorKind::DestinationDenied => {
                Some(Outcome::Unreachable)
            }
            ErrorKind::UpstreamInvalidResponse => Some(Outcome::InvalidResponse),
            _ => None,
        },
    };
    if let Some(outcome) = outcome {
        series.finish(outcome, elapsed);
    }
    match &invocation {
        Ok(done) => tracing::debug!(
            webhook = %webhook.name, company = %webhook.company, status = done.status,
            duration_ms = done.duration_ms, missing = done.missing.len(), "invoked"
        ),
        Err(err) => tracing::warn!(
            webhook = %webhook.name, company = %webhook.company, kind = err.kind.as_str(),
            error = %err.message, "invocation failed"
        ),
    }
    invocation
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(
        ErrorKind::UnknownWebhook,
        format!("no webhook named {name:?} is serving"),
    )
    .for_webhook(name)
}

/// 413: a body over `limit` bytes.
fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorKind::PayloadTooLarge,
        format!("the request body is over the limit of {limit} bytes"),
    )
}

/// 408: the body did not arrive within `timeout`.
fn body_timeout(timeout: Duration) -> ApiError {
    ApiError::new(
        ErrorKind::RequestTimeout,
        format!("the request body did not arrive within {timeout:?}"),
    )
}

/// Reads the body within the limit (declared or streamed) and the body timeout.
async fn read_body(
    request: Request<Incoming>,
    settings: &crate::config::Settings,
) -> Result<Bytes, ApiError> {
    let limit = settings.max_request_body;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(limit));
    }
    let collected = tokio::time::timeout(
        settings.request_body_timeout,
        Limited::new(request.into_body(), limit).collect(),
    )
    .await
    .map_err(|_| body_timeout(settings.request_body_timeout))?;
    Ok(collected
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                too_large(limit)
            } else {
                ApiError::new(
                    ErrorKind::BadRequest,
                    format!("reading the request body failed: {err}"),
                )
            }
        })?
        .to_bytes())
}

/// The conversation object in `body`, all of it validated, the `selection` kept. An empty
/// body is an empty conversation.
fn parse_conversation(body: &[u8], selection: &Selection) -> Result<Document, ApiError> {
    let not_json = |err: &dyn std::fmt::Display| {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("the body is not valid JSON: {err}"),
        )
    };
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        "{}"
    } else {
        std::str::from_utf8(body).map_err(|err| not_json(&err))?
    };
    match selection.parse(text) {
        // Valid JSON that starts with `{` is an object.
        Ok(document) if text.trim_ascii_start().starts_with('{') => Ok(document),
        Ok(_) => Err(ApiError::new(
            ErrorKind::BadRequest,
            "the body must be a JSON object (the conversation)",
        )),
        Err(err) => Err(not_json(&err)),
    }
}

/// The bearer token a caller presented, if any.
fn caller_token(headers: &http::HeaderMap) -> Option<&str> {
    bearer(headers.get(header::AUTHORIZATION)?.as_bytes())
}

/// The token of an `Authorization: Bearer TOKEN` value (visible ASCII only).
fn bearer(value: &[u8]) -> Option<&str> {
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return None;
    }
    let (scheme, token) = std::str::from_utf8(value).ok()?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the caller for `company`. A caller whose token belongs to one or more companies
/// sees and calls only their webhooks (403 for any other); a caller without a known token
/// calls the webhooks of companies that have no tokens, gets 401 (no token) or 403 (a token
/// that is not theirs) for the others.
fn authorize(snapshot: &Snapshot, presented: Option<&str>, company: &str) -> Result<(), ApiError> {
    let companies = &snapshot.companies;
    let owned_by = |name: &str| {
        presented.is_some_and(|token| {
            companies.get(name).is_some_and(|c| {
                c.caller_tokens
                    .iter()
                    .any(|t| constant_time_eq(t.value.as_bytes(), token.as_bytes()))
            })
        })
    };
    let forbidden = || {
        ApiError::new(
            ErrorKind::Forbidden,
            "the caller token is not valid for this webhook's company",
        )
    };
    if owned_by(company) {
        return Ok(());
    }
    let has_tokens = |name: &str| {
        companies
            .get(name)
            .is_some_and(|c| !c.caller_tokens.is_empty())
    };
    if presented.is_some() && companies.keys().any(|name| owned_by(name)) {
        // A known caller of another company.
        return Err(forbidden());
    }
    match (has_tokens(company), presented) {
        (false, _) => Ok(()),
        (true, None) => Err(ApiError::new(
            ErrorKind::Unauthorized,
            "this webhook needs Authorization: Bearer TOKEN",
        )),
        (true, Some(_)) => Err(forbidden()),
    }
}

/// Whether a caller may see a company's webhooks in listings.
fn visible(snapshot: &Snapshot, request: &Request<Incoming>, company: &str) -> bool {
    authorize(snapshot, caller_token(request.headers()), company).is_ok()
}

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

fn list(state: &State, request: &Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    let snapshot = state.registry.snapshot();
    let loaded = loaded(&snapshot)?;
    let webhooks: Vec<serde_json::Value> = loaded
        .webhooks
        .values()
        .filter(|served| visible(&snapshot, request, &served.webhook.company))
        .map(entry)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "webhooks": webhooks }),
    ))
}

fn describe(
    state: &State,
    request: &Request<Incoming>,
    name: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let snapshot = state.registry.snapshot();
    let loaded = loaded(&snapshot).map_err(|e| e.for_webhook(name))?;
    let served = loaded.webhooks.get(name).ok_or_else(|| unknown(name))?;
    authorize(
        &snapshot,
        caller_token(request.headers()),
        &served.webhook.company,
    )
    .map_err(|e| e.for_webhook(name))?;
    let mut body = entry(served);
    if let Some(object) = body.as_object_mut() {
        let definition =
            serde_json::from_str(&served.webhook.definition).unwrap_or(serde_json::Value::Null);
        object.insert("definition".into(), definition);
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// A listing entry of SPEC section 4.
fn entry(served: &Served) -> serde_json::Value {
    let webhook = &served.webhook;
    json!({
        "name": webhook.name,
        "company": webhook.company,
        "method": webhook.method.as_str(),
        "url": webhook.url_source,
        "execution": "sync",
        "timeout_ms": webhook.timeout.as_millis() as u64,
        "variables": webhook.variables.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        "source": webhook.source.display().to_string(),
        "revision": webhook.revision,
        "state": served.state,
    })
}

async fn admin(
    state: &State,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = request.uri().path();
    // HEAD is GET without the body (hyper leaves it out).
    let method = match request.method() {
        &Method::HEAD => &Method::GET,
        method => method,
    };
    match (method, path) {
        (&Method::GET, "/healthz") => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        (&Method::GET, "/readyz") => {
            let ready = state.registry.snapshot().ready() && !state.draining.load(Ordering::SeqCst);
            let (status, word) = if ready {
                (StatusCode::OK, "ready")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not ready")
            };
            Ok(json_response(status, &json!({"status": word})))
        }
        (&Method::GET, "/metrics") => {
            state
                .metrics
                .set_polling(state.watch_polling.load(Ordering::Relaxed));
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }
        (&Method::GET, "/-/config") => Ok(json_response(StatusCode::OK, &config_report(state))),
        (&Method::POST, "/-/reload") => {
            app::reload(state, "admin").await;
            Ok(json_response(StatusCode::OK, &config_report(state)))
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/-/config") => {
            Ok(not_allowed(request.method(), path, None, "GET, HEAD"))
        }
        (_, "/-/reload") => Ok(not_allowed(request.method(), path, None, "POST")),
        _ => Err(not_found(path)),
    }
}

/// `GET /-/config`: the reload state and every file's state and errors.
pub fn config_report(state: &State) -> serde_json::Value {
    let snapshot = state.registry.snapshot();
    let last = snapshot.last_reload.as_ref().map(|r| {
        json!({
            "at": r.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            "duration_ms": r.duration.as_secs_f64() * 1000.0,
            "result": if r.success { "success" } else { "failure" },
            "error": r.error,
        })
    });
    let files: Vec<serde_json::Value> = snapshot
        .loaded
        .iter()
        .flat_map(|loaded| loaded.files.iter())
        .map(|file| {
            json!({
                "path": file.path.display().to_string(),
                "name": file.name,
                "kind": file.kind,
                "state": file.state,
                "errors": file.errors.iter().map(|p| json!({
                    "path": p.path.display().to_string(), "line": p.line, "column": p.column, "message": p.message,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "directory": state.dir.display().to_string(),
        "ready": snapshot.ready(),
        "revision": snapshot.revision,
        "last_reload": last,
        "webhooks": snapshot.loaded.as_ref().map_or(0, |l| l.webhooks.len()),
        "stale": snapshot.loaded.as_ref().map_or(0, |l| l.webhooks.values().filter(|s| s.state == FileState::Stale).count()),
        "files": files,
    })
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    bytes_response(
        status,
        serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

/// A response with `status` and a JSON body already serialized.
pub fn bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokex"));
        assert!(!constant_time_eq(b"token", b"token2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
