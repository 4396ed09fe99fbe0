//! Shared helpers: a real upstream server that records what it receives, hookside served
//! in-process on port 0 from a temp directory, the real binary, and a small HTTP client.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use hookside::app::{self, State};
use hookside::config::Settings;
use hookside::server::{self, Api};

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub version: http::Version,
    /// Path and query exactly as sent.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the upstream received JSON")
    }
}

/// What the upstream answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: body.to_string().into_bytes(),
            headers: vec![("content-type".into(), "application/json".into())],
            delay: Duration::ZERO,
        }
    }

    pub fn raw(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            body: body.into(),
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A real HTTP server on 127.0.0.1:0 that records every request.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Answers every request with `handler`.
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Upstream::serve(listener, Arc::new(handler), None).await
    }

    /// Answers over TLS with `config`.
    pub async fn start_tls(
        config: Arc<rustls::ServerConfig>,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Upstream::serve(listener, Arc::new(handler), Some(config)).await
    }

    /// Always answers `reply`.
    pub async fn fixed(reply: Reply) -> Upstream {
        Upstream::start(move |_| reply.clone()).await
    }

    async fn serve(
        listener: TcpListener,
        handler: Handler,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Upstream {
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let handler = Arc::clone(&handler);
                        let recorded = Arc::clone(&recorded);
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method,
                                version: parts.version,
                                target: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                headers: parts.headers,
                                body,
                            };
                            recorded.lock().expect("lock").push(seen.clone());
                            let reply = handler(&seen);
                            tokio::time::sleep(reply.delay).await;
                            let mut response = Response::new(Full::new(Bytes::from(reply.body)));
                            *response.status_mut() =
                                StatusCode::from_u16(reply.status).expect("status");
                            for (name, value) in reply.headers {
                                response.headers_mut().insert(
                                    http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                                    http::HeaderValue::from_bytes(value.as_bytes()).expect("value"),
                                );
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            seen,
            connections,
            task,
        }
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The one request received.
    pub fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            1,
            "expected exactly one upstream request, got {seen:#?}"
        );
        seen.into_iter().next().expect("one")
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A temp directory of webhook files.
pub struct Dir {
    pub temp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            temp: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// Writes `text` at `relative` (folders created).
    pub fn file(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.temp.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }
}

/// hookside served in-process: both APIs on 127.0.0.1:0, the directory loaded once.
pub struct Hookside {
    pub bot: SocketAddr,
    pub admin: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    watcher: Option<hookside::watch::Handle>,
}

impl Hookside {
    pub async fn start(dir: &Path) -> Hookside {
        Hookside::with_settings(dir, Settings::default()).await
    }

    pub async fn with_settings(dir: &Path, settings: Settings) -> Hookside {
        let state = State::new(dir.to_path_buf(), settings);
        app::reload(&state, "test").await;
        Hookside::serve_state(state).await
    }

    /// Also watches the directory (in `mode`) and reloads as `serve` does.
    pub async fn watching(dir: &Path, mode: hookside::watch::Mode) -> Hookside {
        let state = State::new(dir.to_path_buf(), Settings::default());
        app::reload(&state, "test").await;
        let watcher = app::start_watching(&state, mode);
        let mut hookside = Hookside::serve_state(Arc::clone(&state)).await;
        let stopped = hookside.stop.subscribe();
        hookside
            .tasks
            .push(tokio::spawn(app::keep_fresh(state, stopped)));
        hookside.watcher = Some(watcher);
        hookside
    }

    /// Serves a state as it is (loaded or not).
    pub async fn serve_state(state: Arc<State>) -> Hookside {
        let bot = TcpListener::bind("127.0.0.1:0").await.expect("bind bot");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let (bot_addr, admin_addr) = (
            bot.local_addr().expect("addr"),
            admin.local_addr().expect("addr"),
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = vec![
            tokio::spawn(server::run(
                bot,
                Arc::clone(&state),
                Api::Bot,
                wait(stopped.clone()),
            )),
            tokio::spawn(server::run(admin, state, Api::Admin, wait(stopped))),
        ];
        Hookside {
            bot: bot_addr,
            admin: admin_addr,
            stop,
            tasks,
            watcher: None,
        }
    }

    /// Begins shutdown, as SIGTERM does.
    pub fn shut_down(&self) {
        let _ = self.stop.send(true);
    }

    /// Invokes a webhook with a conversation.
    pub async fn invoke(&self, name: &str, conversation: Value) -> (StatusCode, Value) {
        let (status, _, body) = send(
            Method::POST,
            &format!("http://{}/v1/webhooks/{name}", self.bot),
            &[],
            conversation.to_string().into_bytes(),
        )
        .await;
        (status, parse(&body))
    }

    /// GETs a bot API path.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = send(
            Method::GET,
            &format!("http://{}{path}", self.bot),
            &[],
            Vec::new(),
        )
        .await;
        (status, parse(&body))
    }

    /// GETs an admin API path.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = send(
            Method::GET,
            &format!("http://{}{path}", self.admin),
            &[],
            Vec::new(),
        )
        .await;
        (status, parse(&body))
    }
}

impl Drop for Hookside {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn wait(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Sends one request over a fresh connection.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Bytes) {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).expect("request");
    let response = client.request(request).await.expect("hookside answered");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

/// GETs `url` over a fresh connection.
pub async fn get(url: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(Method::GET, url, &[], Vec::new()).await
}

/// Parses a JSON body (or `null` for an empty one).
pub fn parse(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

/// Asserts an error answer's status and kind.
pub fn assert_error(answer: &(StatusCode, Value), status: u16, kind: &str) {
    assert_eq!(answer.0.as_u16(), status, "answer: {}", answer.1);
    assert_eq!(answer.1["error"]["kind"], kind, "answer: {}", answer.1);
}

/// The real `hookside` binary, started with `serve` on port 0; its addresses read from
/// its first log lines.
pub struct Process {
    pub child: Child,
    pub bot: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: Arc<Mutex<String>>,
}

impl Process {
    pub fn serve(dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookside"));
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--dir",
            ])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("HOOKSIDE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn hookside");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("hookside listening") {
                    let _ = tx.send(line.clone());
                }
                let mut all = sink.lock().expect("lock");
                all.push_str(&line);
                all.push('\n');
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("hookside did not start: {}", log.lock().expect("lock")));
        // `bot=ADDR` in text logs, `"bot":"ADDR"` in JSON logs.
        let field = |name: &str| -> SocketAddr {
            let start = [format!("{name}="), format!("\"{name}\":\"")]
                .iter()
                .find_map(|key| line.find(key.as_str()).map(|at| at + key.len()))
                .expect("address in the log line");
            let rest = &line[start..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end].parse().expect("socket address")
        };
        Process {
            bot: field("bot"),
            admin: field("admin"),
            child,
            stderr: log,
        }
    }

    pub fn log(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retries `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One answer as it came on the wire.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header fields, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Value,
}

impl Answer {
    /// The value of the field `name`, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw client connection that reads answers one by one (`Content-Length` framed).
pub struct Client {
    /// The connection, for what the answers do not cover.
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    /// A connection to `address`.
    pub async fn connect(address: SocketAddr) -> Client {
        Client::over(TcpStream::connect(address).await.expect("connect"))
    }

    /// Answers read from `stream`, already connected.
    pub fn over(stream: TcpStream) -> Client {
        Client {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &str) {
        self.stream
            .write_all(bytes.as_bytes())
            .await
            .expect("write");
    }

    /// The next answer (100 Continue skipped), or `None` if the connection closed first.
    pub async fn answer(&mut self) -> Option<Answer> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut fields);
            if let Ok(httparse::Status::Complete(len)) = response.parse(&self.buffer) {
                let status = response.code.expect("status");
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                if status == 100 {
                    self.buffer.drain(..len);
                    continue;
                }
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map(|(_, v)| v.parse().expect("length"))
                    .expect("a content-length");
                if self.buffer.len() >= len + length {
                    let body = serde_json::from_slice(&self.buffer[len..len + length])
                        .expect("a JSON body");
                    self.buffer.drain(..len + length);
                    return Some(Answer {
                        status,
                        headers,
                        body,
                    });
                }
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("an answer within 10 s")
                .expect("read");
            if read == 0 {
                assert!(self.buffer.is_empty(), "closed mid-answer");
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// Whether the server closed the connection (within 10 s), nothing else arriving.
    pub async fn closed(&mut self) -> bool {
        self.answer().await.is_none()
    }
}
