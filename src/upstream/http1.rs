//! HTTP/1.1 to an upstream, on the invoking request's own task.
//!
//! hyper's client connection runs on a task of its own and passes each request and
//! response across channels; for a sidecar that sends one small request and reads one
//! small answer per invocation, those hand-offs cost about as much as the rest of the
//! exchange (BENCHMARKS.md, "What limits hookside"). A [`Conn`] instead writes the request
//! with one write and parses the answer with `httparse` (the parser hyper itself uses) in
//! the caller's task, with no task, channel or wake-up in between.
//!
//! It speaks what an origin server answers to the requests hookside sends: a status line
//! and headers (interim 1xx answers skipped), then a body framed by `Content-Length`, by
//! `Transfer-Encoding: chunked` (trailers read and dropped) or by the end of the
//! connection, or no body at all (HEAD, 204, 304). A connection is kept for the next
//! request only when the answer was framed, read to its last byte, was not a 204 that
//! declares a body, and neither side asked to close it.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{Answer, CallError, Outgoing};
use crate::deadline::Deadline;

/// A TCP or TLS stream, as the connector opens it, read and written through tokio.
pub(super) type Stream = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// The largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have (hyper's default too).
const MAX_HEADERS: usize = 100;
/// The largest chunk-size line accepted (the trailer section may be as large as a head).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// How much room a read asks for at least.
const READ_SIZE: usize = 8 * 1024;
/// Buffers over this size are not kept with an idle connection.
const KEPT_BUFFER: usize = 64 * 1024;

/// One HTTP/1.1 connection to an upstream, used by one request at a time.
pub(super) struct Conn {
    io: Stream,
    /// Bytes read and not yet parsed.
    read: BytesMut,
    /// The request being written (kept: its capacity serves the next one).
    write: Vec<u8>,
    /// When the connection was last given back to its pool.
    pub(super) since: Instant,
    /// The timer of the exchanges, made at the first one (a new connection used once
    /// never needs it).
    deadline: Option<Deadline>,
}

/// Why an exchange produced no answer.
pub(super) enum Failure {
    /// The connection ended before the upstream took the request (nothing of it was
    /// written): it may go on another connection.
    NotTaken(String),
    /// An idempotent request was sent whole and the connection ended before a byte of
    /// answer: the upstream may have read it, so it may go once more, and only on a new
    /// connection.
    Unanswered(String),
    /// Anything else.
    Failed(CallError),
}

/// How the answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    http11: bool,
    /// The fields, when the caller keeps them (else empty).
    headers: HeaderMap,
    /// Whether the last `Transfer-Encoding` field ends with `chunked`, if there is one.
    chunked: Option<bool>,
    /// The `Content-Length`, if there is one (an error if it is not one number).
    length: Result<Option<u64>, &'static str>,
    /// `Connection` tokens.
    close: bool,
    keep_alive: bool,
}

impl Conn {
    /// A connection over a freshly opened stream.
    pub(super) fn new(io: Stream) -> Conn {
        Conn {
            io,
            read: BytesMut::with_capacity(READ_SIZE),
            write: Vec::with_capacity(1024),
            since: Instant::now(),
            deadline: None,
        }
    }

    /// Whether the upstream closed this idle connection (or sent something nobody asked
    /// for, which makes it unusable too). Never waits: it looks at what already arrived. It
    /// can miss a close that is still in flight (or hidden by tokio's cooperative budget);
    /// the retry rule of [`Conn::exchange`] covers that case as hyper's did.
    pub(super) fn closed_while_idle(&mut self) -> bool {
        if !self.read.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        // Ready: the end of the stream, an error, or unasked-for data.
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut buf)
            .is_ready()
    }

    /// Sends `request` (`host` unless it has a `Host` header) and reads the whole answer
    /// before `at`, refusing a body over `limit` bytes, its header fields kept only if
    /// `headers`. Also says whether the connection can take another request. `None`: `at`
    /// came first (the connection is then dropped).
    pub(super) async fn exchange(
        &mut self,
        request: &Outgoing,
        host: &HeaderValue,
        limit: usize,
        headers: bool,
        at: tokio::time::Instant,
    ) -> Option<Result<(Answer, bool), Failure>> {
        let mut deadline = match self.deadline.take() {
            Some(mut deadline) => {
                deadline.set(at);
                deadline
            }
            None => Deadline::new(at),
        };
        let result = {
            // Pinned here, so that the exchange's state is not copied into the timer's.
            let work = self.exchange_now(request, host, limit, headers);
            tokio::pin!(work);
            deadline.within(work).await
        };
        self.deadline = Some(deadline);
        result
    }

    async fn exchange_now(
        &mut self,
        request: &Outgoing,
        host: &HeaderValue,
        limit: usize,
        headers: bool,
    ) -> Result<(Answer, bool), Failure> {
        self.encode(request, host);
        self.send().await?;
        let retryable = request.method.is_idempotent();
        let head = self.read_head(retryable, headers).await?;
        let framing = framing(&request.method, &head)?;
        let body = self.read_body(framing, limit).await?;
        let reusable = framing != Framing::Close
            && keep_alive(&head)
            // Never after an answer with both a chunked coding and a length.
            && (head.chunked.is_none() || matches!(head.length, Ok(None)))
            // Nor after a 204 that declares a body (a length above 0 or a coding, which
            // RFC 9110 forbids it): a server that broken may send the body too, and it
            // would be read as the next call's answer. (A HEAD's or a 304's length is
            // the representation's, as the RFC allows.)
            && !(head.status == StatusCode::NO_CONTENT && head.declares_a_body())
            && self.read.is_empty();
        // A large body's allocation would stay with the idle connection (the empty rest of
        // the read buffer shares it), as would a large request's: start small again.
        if body.len() > KEPT_BUFFER || self.read.capacity() > KEPT_BUFFER {
            self.read = BytesMut::with_capacity(READ_SIZE);
        }
        if self.write.capacity() > KEPT_BUFFER {
            self.write = Vec::with_capacity(1024);
        }
        let answer = Answer {
            status: head.status,
            headers: head.headers,
            body,
        };
        Ok((answer, reusable))
    }

    /// Writes the request line, the headers, `Content-Length` and the body into `write`.
    fn encode(&mut self, request: &Outgoing, host: &HeaderValue) {
        let out = &mut self.write;
        out.clear();
        out.extend_from_slice(request.method.as_str().as_bytes());
        out.push(b' ');
        let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !request.headers.iter().any(|(name, _)| name == HOST) {
            field(out, b"host", host.as_bytes());
        }
        for (name, value) in &request.headers {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        let body = &request.body;
        let method = &request.method;
        // A method that defines a meaning for a body says its length even when empty.
        if !body.is_empty() || [Method::POST, Method::PUT, Method::PATCH].contains(method) {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }

    /// Writes the encoded request; a failure of the first write is [`Failure::NotTaken`].
    /// Over TLS that first write may have sent some records before failing; an upstream
    /// whose connection failed under them cannot have read a whole request (it has a
    /// length), so it cannot have acted on it.
    async fn send(&mut self) -> Result<(), Failure> {
        let mut written = 0;
        while written < self.write.len() {
            match self.io.write(&self.write[written..]).await {
                Ok(0) if written == 0 => {
                    return Err(Failure::NotTaken("the connection is closed".into()));
                }
                Ok(0) => return Err(unreachable("the connection closed while sending")),
                Ok(n) => written += n,
                Err(err) if written == 0 => {
                    return Err(Failure::NotTaken(format!(
                        "sending the request failed: {err}"
                    )));
                }
                Err(err) => {
                    return Err(unreachable(&format!("sending the request failed: {err}")));
                }
            }
        }
        self.io
            .flush()
            .await
            .map_err(|err| unreachable(&format!("sending the request failed: {err}")))
    }

    /// Reads more into `read`; `Ok(0)` is the end of the stream.
    async fn fill(&mut self, at_least: usize) -> std::io::Result<usize> {
        self.read.reserve(at_least.max(READ_SIZE));
        self.io.read_buf(&mut self.read).await
    }

    /// Reads and parses the final response head, skipping interim (1xx) ones. With
    /// `retryable`, an end of the connection before any byte arrived is
    /// [`Failure::Unanswered`].
    async fn read_head(&mut self, retryable: bool, headers: bool) -> Result<Head, Failure> {
        let mut received = false;
        loop {
            if !self.read.is_empty() {
                received = true;
                if let Some(head) = self.parse_head(headers)? {
                    if head.status.is_informational() {
                        if head.status == StatusCode::SWITCHING_PROTOCOLS {
                            return Err(invalid("101 Switching Protocols, which was not asked"));
                        }
                        continue;
                    }
                    return Ok(head);
                }
                if self.read.len() >= MAX_HEAD {
                    return Err(invalid("the response head is over 64 KiB"));
                }
            }
            let closed = match self.fill(READ_SIZE).await {
                Ok(0) if received => {
                    "the upstream closed the connection in the middle of its answer's head"
                        .to_owned()
                }
                Ok(0) => "the upstream closed the connection without answering".to_owned(),
                Ok(_) => continue,
                Err(err) => format!("reading the response failed: {err}"),
            };
            return Err(if retryable && !received {
                Failure::Unanswered(closed)
            } else {
                unreachable(&closed)
            });
        }
    }

    /// Parses a head from `read` (consuming it) if a whole one is there, keeping its
    /// fields in a map if `keep`.
    fn parse_head(&mut self, keep: bool) -> Result<Option<Head>, Failure> {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        // Never more than the limit is parsed (a head is parsed again after each read).
        let window = &self.read[..self.read.len().min(MAX_HEAD)];
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            window,
            &mut fields,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(err) => {
                return Err(invalid(&format!(
                    "the response head is not HTTP/1.1: {err}"
                )));
            }
        };
        let status = response
            .code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or_else(|| invalid("the status code is not valid"))?;
        let mut head = Head {
            status,
            http11: response.version == Some(1),
            headers: HeaderMap::new(),
            chunked: None,
            length: Ok(None),
            close: false,
            keep_alive: false,
        };
        for field in response.headers.iter() {
            head.note(field);
            if keep {
                // httparse checked the characters; `http` checks them again.
                let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| {
                    invalid(&format!("the header name {:?} is not valid", field.name))
                })?;
                let value = HeaderValue::from_bytes(field.value)
                    .map_err(|_| invalid(&format!("the value of {name} is not valid")))?;
                head.headers.append(name, value);
            }
        }
        self.read.advance(length);
        Ok(Some(head))
    }

    /// Reads the body as `framing` delimits it.
    async fn read_body(&mut self, framing: Framing, limit: usize) -> Result<Bytes, Failure> {
        let too_large = || Failure::Failed(CallError::TooLarge(limit));
        match framing {
            Framing::Empty => Ok(Bytes::new()),
            Framing::Length(length) => {
                if length > limit as u64 {
                    return Err(too_large());
                }
                // At most `limit`, which is a usize.
                let length = usize::try_from(length).map_err(|_| too_large())?;
                while self.read.len() < length {
                    let missing = length - self.read.len();
                    if self.fill(missing).await.map_err(body_error)? == 0 {
                        return Err(truncated());
                    }
                }
                Ok(self.read.split_to(length).freeze())
            }
            Framing::Chunked => self.read_chunked(limit).await,
            Framing::Close => {
                loop {
                    if self.read.len() > limit {
                        return Err(too_large());
                    }
                    if self.fill(READ_SIZE).await.map_err(body_error)? == 0 {
                        break;
                    }
                }
                Ok(self.read.split().freeze())
            }
        }
    }

    /// Reads a chunked body and its trailers (dropped).
    async fn read_chunked(&mut self, limit: usize) -> Result<Bytes, Failure> {
        let mut body = BytesMut::new();
        loop {
            let size = loop {
                let window = &self.read[..self.read.len().min(MAX_CHUNK_LINE)];
                match httparse::parse_chunk_size(window) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.read.advance(used);
                        break size;
                    }
                    Ok(httparse::Status::Partial) if self.read.len() < MAX_CHUNK_LINE => {
                        if self.fill(READ_SIZE).await.map_err(body_error)? == 0 {
                            return Err(truncated());
                        }
                    }
                    _ => return Err(invalid("a chunk size line is not valid")),
                }
            };
            if size == 0 {
                break;
            }
            if (body.len() as u64).saturating_add(size) > limit as u64 {
                return Err(Failure::Failed(CallError::TooLarge(limit)));
            }
            // At most `limit`, which is a usize.
            let size = usize::try_from(size).map_err(|_| invalid("a chunk is too large"))?;
            while self.read.len() < size + 2 {
                let missing = size + 2 - self.read.len();
                if self.fill(missing).await.map_err(body_error)? == 0 {
                    return Err(truncated());
                }
            }
            if &self.read[size..size + 2] != b"\r\n" {
                return Err(invalid("a chunk does not end with CRLF"));
            }
            body.extend_from_slice(&self.read[..size]);
            self.read.advance(size + 2);
        }
        // Trailer fields, if any, then the empty line.
        loop {
            match self.trailers() {
                Ok(httparse::Status::Complete(used)) => {
                    self.read.advance(used);
                    return Ok(body.freeze());
                }
                Ok(httparse::Status::Partial) if self.read.len() < MAX_HEAD => {
                    if self.fill(READ_SIZE).await.map_err(body_error)? == 0 {
                        return Err(truncated());
                    }
                }
                _ => return Err(invalid("the trailer section is not valid")),
            }
        }
    }

    /// The length of the trailer section at the start of what was read, if it is whole.
    /// Its own function: the fields' array is then not kept across an `.await` (it would
    /// add 3 KB to every request's future).
    fn trailers(&self) -> httparse::Result<usize> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let window = &self.read[..self.read.len().min(MAX_HEAD)];
        Ok(match httparse::parse_headers(window, &mut fields)? {
            httparse::Status::Complete((used, _)) => httparse::Status::Complete(used),
            httparse::Status::Partial => httparse::Status::Partial,
        })
    }
}

impl Head {
    /// Whether the head announces a body, by a length above 0 or a transfer coding.
    fn declares_a_body(&self) -> bool {
        self.chunked.is_some() || !matches!(self.length, Ok(None | Some(0)))
    }

    /// Notes what framing and keep-alive need of one field.
    fn note(&mut self, field: &httparse::Header<'_>) {
        let tokens = || field.value.split(|b| *b == b',').map(<[u8]>::trim_ascii);
        if field.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = tokens().next_back().unwrap_or_default();
            self.chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if field.name.eq_ignore_ascii_case("content-length") {
            for part in tokens() {
                let Ok(known) = self.length else { return };
                self.length = match (decimal(part), known) {
                    (None, _) => Err("Content-Length is not a number"),
                    (Some(parsed), Some(known)) if known != parsed => {
                        Err("Content-Length has different values")
                    }
                    (Some(parsed), _) => Ok(Some(parsed)),
                };
            }
        } else if field.name.eq_ignore_ascii_case("connection") {
            for token in tokens() {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
}

/// How the body of an answer to `method` with `head` is delimited (RFC 9112, 6.3).
fn framing(method: &Method, head: &Head) -> Result<Framing, Failure> {
    if *method == Method::HEAD
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if let Some(chunked) = head.chunked {
        return Ok(if chunked && head.http11 {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    match head.length {
        Ok(length) => Ok(length.map_or(Framing::Close, Framing::Length)),
        Err(message) => Err(invalid(message)),
    }
}

/// Whether the upstream lets the connection stay open after this answer.
fn keep_alive(head: &Head) -> bool {
    if head.http11 {
        !head.close
    } else {
        head.keep_alive
    }
}

/// A `Content-Length` value: decimal digits only (no sign, no spaces), within u64.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    std::str::from_utf8(digits)
        .ok()
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok())
}

/// Appends `name: value\r\n`.
fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn unreachable(message: &str) -> Failure {
    Failure::Failed(CallError::Unreachable(message.to_owned()))
}

/// An answer that is not HTTP/1.1 as RFC 9112 frames it.
fn invalid(message: &str) -> Failure {
    unreachable(&format!(
        "the upstream's answer is not valid HTTP: {message}"
    ))
}

fn truncated() -> Failure {
    Failure::Failed(CallError::Body(
        "the upstream closed the connection before the end of the body".into(),
    ))
}

fn body_error(err: std::io::Error) -> Failure {
    Failure::Failed(CallError::Body(err.to_string()))
}
