//! Bot calls over HTTP/1.1 on the connection's own task.
//!
//! A bot posts `POST /v1/webhooks/NAME` with a `Content-Length` body, again and again over
//! one keep-alive connection. This module serves exactly that: it parses the request head
//! with `httparse` (the parser hyper uses) into a few slices of its read buffer, reads the
//! body, calls the webhook and writes the answer in one write. No header map, no request
//! or response object, no connection state machine in between: it took about a sixth of
//! the instructions of a bot call off (BENCHMARKS.md).
//!
//! Anything else (another path or method, HTTP/1.0, HTTP/2, chunked bodies, `Expect`,
//! `Upgrade`, a head over the limits) is handed to hyper together with the bytes already
//! read, and hyper serves the connection from then on. Both answer the same things the
//! same way: routing and errors are the same functions. A head no server could serve (not
//! HTTP, two `Content-Length` fields) gets the JSON 400 here, where hyper's is empty.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::app::State;
use crate::deadline::Deadline;
use crate::error::{ApiError, ErrorKind};
use crate::render::select::Data;

/// The largest request head served here (hyper's limit for the rest is the same).
const MAX_HEAD: usize = 64 * 1024;
/// Header fields parsed here; a request with more goes to hyper.
const MAX_FIELDS: usize = 32;
/// Header fields hyper takes (its default); a request with more gets the JSON 431 here.
const MAX_HYPER_FIELDS: usize = 100;
/// What the read buffer starts with, and what it shrinks back to after a large body.
const BUFFER: usize = 4 * 1024;

/// How a connection served here ended.
pub(super) enum Ended {
    /// It is closed (or to be dropped).
    Closed,
    /// hyper serves the rest: the stream and the bytes read from it but not served.
    Handover(Replay),
}

/// What the head of a bot call said, as offsets into the read buffer.
struct Head {
    /// Length of the head, blank line included.
    len: usize,
    /// The webhook's name.
    name: (usize, usize),
    /// The `Authorization` value, if any.
    authorization: Option<(usize, usize)>,
    /// The declared body length.
    body: u64,
    /// Whether the client asked to close after this request.
    close: bool,
}

/// Serves bot calls on `stream` until it closes, the accept loop's `signal` says to close
/// while it is idle (shutdown, or room wanted for a new connection), or a request comes that
/// hyper must serve.
pub(super) async fn serve(
    mut stream: TcpStream,
    state: Arc<State>,
    signal: watch::Receiver<super::Signal>,
) -> Ended {
    let settings = &state.settings;
    let mut buffer: Vec<u8> = Vec::with_capacity(BUFFER);
    let mut out: Vec<u8> = Vec::new();
    // One wait for the signal for the whole connection (not one per request), made anew
    // once, after the first answer: from then on the connection also closes, when idle,
    // to make room for a client that waits for a slot.
    let mut answered = false;
    let stopped = super::wait_to_close(signal.clone(), answered);
    tokio::pin!(stopped);
    // When the last answer was written (or the connection came): the next head's time
    // starts then, not while a slow reader was taking the answer.
    let mut written = Instant::now();
    let mut deadline = Deadline::new(written + settings.header_read_timeout);
    loop {
        // The head, within the header read timeout (idle time included, as with hyper).
        deadline.set(written + settings.header_read_timeout);
        let head = loop {
            match parse_head(&buffer) {
                Parsed::Call(head) => break head,
                Parsed::Partial if buffer.len() < MAX_HEAD => {}
                Parsed::Other => return handover(stream, buffer),
                parsed => {
                    let err = match parsed {
                        Parsed::Refused(err) => err,
                        _ => ApiError::new(
                            ErrorKind::HeadTooLarge,
                            format!("the request head is over {} KiB", MAX_HEAD / 1024),
                        ),
                    };
                    // Where its body ends is unknown: answer, then close.
                    out.clear();
                    encode(&mut out, Err(err), true, Instant::now());
                    if stream.write_all(&out).await.is_ok() {
                        close(&mut stream, &mut buffer, &mut deadline).await;
                    }
                    return Ended::Closed;
                }
            }
            if buffer.is_empty() {
                if !signal.borrow().closes_idle(answered) {
                    tokio::select! {
                        biased;
                        read = deadline.within(stream.read_buf(&mut buffer)) => match read {
                            Some(Ok(n)) if n > 0 => continue,
                            _ => return Ended::Closed,
                        },
                        _ = &mut stopped => {}
                    }
                }
                // Shutdown, or room for a waiting client: unless a request came meanwhile
                // (closing on unread bytes would reset the connection, and lose them).
                if let Ok(n) = stream.try_read_buf(&mut buffer)
                    && n > 0
                {
                    stopped.set(super::wait_to_close(signal.clone(), answered));
                    continue;
                }
                let _ = stream.shutdown().await;
                return Ended::Closed;
            }
            match deadline.within(read_more(&mut stream, &mut buffer)).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return Ended::Closed,
            }
        };

        let token = head
            .authorization
            .and_then(|(start, end)| super::bearer(&buffer[start..end]));
        let webhook = super::callable(&state, text(&buffer, head.name), token);
        let limit = settings.max_request_body;
        // Saturating: a declared length near 2^64 is never all read, so the connection
        // closes after the answer rather than serving the body as a request.
        let whole = (head.len as u64).saturating_add(head.body);
        // Read the body unless the call is already refused; an unread body that has not
        // all arrived closes the connection after the answer.
        let outcome = match webhook {
            Err(err) => Err(err),
            Ok(_) if head.body > limit as u64 => Err(super::too_large(limit)),
            Ok(webhook) => {
                // Mostly the body came with the head: no clock read then.
                if (buffer.len() as u64) < whole {
                    deadline.set(Instant::now() + settings.request_body_timeout);
                }
                let mut cut = false;
                while (buffer.len() as u64) < whole {
                    match deadline.within(read_more(&mut stream, &mut buffer)).await {
                        Some(Ok(n)) if n > 0 => {}
                        Some(_) => return Ended::Closed,
                        None => {
                            cut = true;
                            break;
                        }
                    }
                }
                if cut {
                    Err(super::body_timeout(settings.request_body_timeout))
                } else {
                    let body = &buffer[head.len..whole as usize];
                    match super::parse_conversation(body, &webhook.reads.conversation) {
                        Ok(conversation) => {
                            let data = Data::Picked(&webhook.reads.conversation, &conversation);
                            super::call(&state, &webhook, data).await
                        }
                        Err(err) => Err(err),
                    }
                }
            }
        };
        let outcome = outcome.map_err(|err| err.for_webhook(text(&buffer, head.name)));
        let read_all = buffer.len() as u64 >= whole;
        // At shutdown, or when a client waits for a slot and no other call has come here
        // (the connection would go idle, and close to make room), the answer says so.
        let signal_now = *signal.borrow();
        let closes = head.close
            || !read_all
            || signal_now.stop
            || (signal_now.waiting
                && buffer.len() as u64 == whole
                && !matches!(stream.try_read_buf(&mut buffer), Ok(n) if n > 0));
        out.clear();
        encode(&mut out, outcome, closes, Instant::now());
        if stream.write_all(&out).await.is_err() {
            return Ended::Closed;
        }
        if closes {
            close(&mut stream, &mut buffer, &mut deadline).await;
            return Ended::Closed;
        }
        written = Instant::now();
        if !answered {
            answered = true;
            stopped.set(super::wait_to_close(signal.clone(), answered));
        }
        // Pipelined requests stay for the next turn.
        buffer.drain(..whole as usize);
        if buffer.is_empty() && buffer.capacity() > MAX_HEAD {
            buffer = Vec::with_capacity(BUFFER);
        }
        if out.capacity() > MAX_HEAD {
            out = Vec::new();
        }
    }
}

/// How long a closing connection reads what its client still sends ([`close`]).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Ends a connection after its last answer: a FIN after what was written. Closing a socket
/// that holds unread bytes (a call sent behind the last one) would send a reset instead,
/// and the client could lose the end of the answer: such bytes are read and dropped until
/// the client closes, for up to [`LINGER`] (nginx's lingering close). With none, it ends at
/// once.
async fn close(stream: &mut TcpStream, buffer: &mut Vec<u8>, deadline: &mut Deadline) {
    let _ = stream.shutdown().await;
    buffer.clear();
    match stream.try_read_buf(buffer) {
        Ok(n) if n > 0 => {}
        _ => return,
    }
    deadline.set(Instant::now() + LINGER);
    loop {
        buffer.clear();
        match deadline.within(stream.read_buf(buffer)).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// Reads into `buffer`, growing it when full.
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    if buffer.len() == buffer.capacity() {
        buffer.reserve(BUFFER);
    }
    stream.read_buf(buffer).await
}

fn text(buffer: &[u8], (start, end): (usize, usize)) -> &str {
    // The name was checked to be ASCII.
    std::str::from_utf8(&buffer[start..end]).unwrap_or_default()
}

fn handover(stream: TcpStream, buffer: Vec<u8>) -> Ended {
    Ended::Handover(Replay {
        before: Bytes::from(buffer),
        stream,
    })
}

/// What the bytes so far hold.
enum Parsed {
    /// A complete head of a bot call served here.
    Call(Head),
    /// Not yet a complete head.
    Partial,
    /// Something for hyper.
    Other,
    /// An HTTP/1 head that no server may serve, or one over hyper's limits (hyper would
    /// answer an empty 400 or 431): the JSON answer.
    Refused(ApiError),
}

/// 400 for a head whose end or body's end is unknown.
fn malformed(message: impl Into<String>) -> Parsed {
    Parsed::Refused(ApiError::new(ErrorKind::BadRequest, message))
}

fn parse_head(buffer: &[u8]) -> Parsed {
    if buffer.is_empty() {
        return Parsed::Partial;
    }
    let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buffer, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // More fields than parsed here: hyper serves them, within its limit.
        Err(httparse::Error::TooManyHeaders) => return many_fields(buffer),
        // HTTP/2's preface: hyper serves it.
        Err(_) if buffer.starts_with(b"PRI ") => return Parsed::Other,
        Err(err) => return malformed(format!("the request is not valid HTTP/1.1: {err}")),
    };
    let name = request
        .path
        .and_then(|path| path.strip_prefix("/v1/webhooks/"))
        .filter(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        });
    let Some(name) = name.filter(|_| request.version == Some(1) && request.method == Some("POST"))
    else {
        return for_hyper(&request);
    };
    let offsets = |part: &[u8]| {
        let start = part.as_ptr() as usize - buffer.as_ptr() as usize;
        (start, start + part.len())
    };
    let mut head = Head {
        len,
        name: offsets(name.as_bytes()),
        authorization: None,
        body: 0,
        close: false,
    };
    let mut length = None;
    for field in request.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            if let Err(why) = content_length(field.value, &mut length) {
                return malformed(why);
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            if head.authorization.is_none() {
                head.authorization = Some(offsets(field.value));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let value = field.value;
            if value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                head.close = true;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return for_hyper(&request);
        }
    }
    head.body = length.unwrap_or(0);
    Parsed::Call(head)
}

/// A complete head with more fields than parsed here, parsed again up to hyper's limit.
fn many_fields(buffer: &[u8]) -> Parsed {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HYPER_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(buffer, &mut fields) {
        Ok(httparse::Status::Complete(_)) => for_hyper(&request),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::Refused(ApiError::new(
            ErrorKind::HeadTooLarge,
            format!("the request has more than {MAX_HYPER_FIELDS} header fields"),
        )),
        Err(err) => malformed(format!("the request is not valid HTTP/1.1: {err}")),
    }
}

/// A complete head that hyper is to serve, unless hyper could not (it would answer an
/// empty 400): the body's end must be known (one `Content-Length` that is a number, a
/// `Transfer-Encoding` ending in `chunked`), and the target must be a URI.
fn for_hyper(request: &httparse::Request<'_, '_>) -> Parsed {
    let mut length = None;
    let mut coding: Option<&[u8]> = None;
    for field in request.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-length") {
            if let Err(why) = content_length(field.value, &mut length) {
                return malformed(why);
            }
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            coding = field.value.rsplit(|&b| b == b',').next();
        }
    }
    if let Some(last) = coding
        && !last.trim_ascii().eq_ignore_ascii_case(b"chunked")
    {
        return malformed("Transfer-Encoding must end in chunked (RFC 9112, 6.3)");
    }
    if coding.is_some() && request.version == Some(0) {
        return malformed("Transfer-Encoding is not HTTP/1.0 (RFC 9112, 6.1)");
    }
    if let Some(target) = request.path
        && http::Uri::try_from(target).is_err()
    {
        return malformed(format!("the request target {target:?} is not a valid URI"));
    }
    Parsed::Other
}

/// Reads one `Content-Length` field into `length`; a second one, or one that is not a
/// number, is an error (RFC 9112, 6.3: the body's end is unknown).
fn content_length(value: &[u8], length: &mut Option<u64>) -> Result<(), String> {
    if length.is_some() {
        return Err("the request has more than one Content-Length".into());
    }
    match crate::upstream::decimal(value.trim_ascii()) {
        Some(value) => {
            *length = Some(value);
            Ok(())
        }
        None => Err(format!(
            "Content-Length {:?} is not a length in bytes",
            String::from_utf8_lossy(value)
        )),
    }
}

/// Writes the whole answer: status line, headers, JSON body.
fn encode(out: &mut Vec<u8>, outcome: Result<Vec<u8>, ApiError>, close: bool, now: Instant) {
    let (status, body) = match outcome {
        Ok(body) => (StatusCode::OK, body),
        Err(err) => (
            err.kind.status(),
            serde_json::to_vec(&err.body()).unwrap_or_default(),
        ),
    };
    out.reserve(body.len() + 160);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    date(out, now);
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
}

/// The `Date` value at `now`, formatted once a second per thread: the wall clock is read
/// only when the second the cached text shows is over.
fn date(out: &mut Vec<u8>, now: Instant) {
    struct Cached {
        until: Option<Instant>,
        text: String,
    }
    thread_local! {
        static CACHED: std::cell::RefCell<Cached> =
            const { std::cell::RefCell::new(Cached { until: None, text: String::new() }) };
    }
    CACHED.with_borrow_mut(|cached| {
        if cached.until.is_none_or(|until| now >= until) {
            let wall = SystemTime::now();
            let into_second = wall
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .subsec_nanos();
            let rest = Duration::from_secs(1) - Duration::from_nanos(u64::from(into_second));
            cached.until = Some(now + rest);
            cached.text = httpdate::fmt_http_date(wall);
        }
        out.extend_from_slice(cached.text.as_bytes());
    });
}

/// A stream whose first reads return bytes already read from it.
pub(super) struct Replay {
    before: Bytes,
    stream: TcpStream,
}

impl Replay {
    /// Whether what was read so far is HTTP/2's preface.
    pub(super) fn is_http2(&self) -> bool {
        self.before.starts_with(b"PRI * HTTP/2.0")
    }

    /// `stream` with nothing read from it yet.
    pub(super) fn none(stream: TcpStream) -> Replay {
        Replay {
            before: Bytes::new(),
            stream,
        }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.before.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.before.len().min(buf.remaining());
        buf.put_slice(&this.before[..n]);
        this.before.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_the_wall_clocks_and_is_read_again_once_its_second_is_over() {
        let close_to_now = |out: &[u8]| {
            let text = std::str::from_utf8(out).expect("ASCII");
            let date = httpdate::parse_http_date(text).expect("an HTTP date");
            let now = SystemTime::now();
            let apart = now.duration_since(date).unwrap_or_else(|e| e.duration());
            assert!(apart < Duration::from_secs(2), "{text} is {apart:?} off");
        };
        let start = Instant::now();
        let mut first = Vec::new();
        date(&mut first, start);
        close_to_now(&first);
        // Within the same second: the same text, without reading the wall clock.
        let mut again = Vec::new();
        date(&mut again, start);
        assert_eq!(again, first);
        // Over a second later: the wall clock is read again.
        std::thread::sleep(Duration::from_millis(1100));
        let mut later = Vec::new();
        date(&mut later, Instant::now());
        close_to_now(&later);
        assert_ne!(later, first, "a second later, a later date");
    }
}
