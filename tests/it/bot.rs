//! The bot listener's connections, byte for byte: keep-alive, pipelining, what closes a
//! connection, and requests that hyper serves instead (HTTP/1.0, chunked bodies, `Expect`,
//! other routes, many fields) on the same connection.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::util::{Answer, Client, Dir, Hookside, Reply, Upstream};

/// An upstream that answers with the path it was called on, and hookside with webhook `w`
/// mapping it into `path`.
async fn start() -> (Upstream, Dir, Hookside) {
    let upstream = Upstream::start(|seen| Reply::json(200, json!({ "path": seen.target }))).await;
    let dir = Dir::new();
    dir.file(
        "webhooks.d/w.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/orders/{{{{ extractedData.id }}}}\"\n[variables]\npath = \"response.path\"\n",
            upstream.host()
        ),
    );
    let hookside = Hookside::start(&dir.path().join("webhooks.d")).await;
    (upstream, dir, hookside)
}

/// A bot call of `w` for order `id`, with `extra` header lines.
fn call(id: &str, extra: &str) -> String {
    let body = json!({ "extractedData": { "id": id } }).to_string();
    format!(
        "POST /v1/webhooks/w HTTP/1.1\r\nhost: hookside\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

impl Answer {
    fn path(&self) -> &str {
        self.body["variables"]["path"].as_str().unwrap_or_default()
    }
}

#[tokio::test]
async fn pipelined_calls_on_one_connection_are_answered_in_order() {
    let (upstream, _dir, hookside) = start().await;
    let mut client = Client::connect(hookside.bot).await;
    // Three calls in one write, then one more after their answers.
    client
        .send(&format!(
            "{}{}{}",
            call("a", ""),
            call("b", ""),
            call("c", "")
        ))
        .await;
    for id in ["a", "b", "c"] {
        let answer = client.answer().await.expect("an answer");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.path(), format!("/orders/{id}"));
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert!(answer.header("date").is_some_and(|d| d.ends_with(" GMT")));
        assert_eq!(answer.header("connection"), None);
    }
    client.send(&call("d", "")).await;
    assert_eq!(client.answer().await.expect("answer").path(), "/orders/d");
    assert_eq!(upstream.seen().len(), 4);
}

#[tokio::test]
async fn a_body_split_across_writes_is_waited_for() {
    let (_upstream, _dir, hookside) = start().await;
    let mut client = Client::connect(hookside.bot).await;
    let request = call("split", "");
    let (first, rest) = request.split_at(request.len() - 5);
    client.send(first).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.send(rest).await;
    assert_eq!(
        client.answer().await.expect("answer").path(),
        "/orders/split"
    );
}

#[tokio::test]
async fn errors_keep_the_connection_when_the_whole_body_was_read() {
    let (upstream, _dir, hookside) = start().await;
    let mut client = Client::connect(hookside.bot).await;

    let unknown = call("x", "").replace("/v1/webhooks/w ", "/v1/webhooks/nope ");
    client.send(&unknown).await;
    let answer = client.answer().await.expect("answer");
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["error"]["kind"], "unknown_webhook");
    assert_eq!(answer.body["error"]["webhook"], "nope");

    client
        .send("POST /v1/webhooks/w HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\n[1, 2]")
        .await;
    let answer = client.answer().await.expect("answer");
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"]["kind"], "bad_request");
    assert_eq!(answer.body["error"]["webhook"], "w");

    client.send(&call("after", "")).await;
    let answer = client.answer().await.expect("answer");
    assert_eq!(answer.path(), "/orders/after");
    assert_eq!(upstream.seen().len(), 1, "only the good call went out");
}

#[tokio::test]
async fn a_body_over_the_limit_or_connection_close_ends_the_connection() {
    let (upstream, _dir, hookside) = start().await;

    let mut client = Client::connect(hookside.bot).await;
    client
        .send("POST /v1/webhooks/w HTTP/1.1\r\nhost: x\r\ncontent-length: 5000000\r\n\r\n{")
        .await;
    let answer = client.answer().await.expect("answer");
    assert_eq!(answer.status, 413);
    assert_eq!(answer.body["error"]["kind"], "payload_too_large");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(client.closed().await);

    let mut client = Client::connect(hookside.bot).await;
    client.send(&call("last", "Connection: close\r\n")).await;
    let answer = client.answer().await.expect("answer");
    assert_eq!(answer.path(), "/orders/last");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(client.closed().await);
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn what_else_comes_is_served_by_hyper_on_the_same_connection() {
    let (upstream, _dir, hookside) = start().await;

    // A chunked body, then a plain call: both answered on one connection.
    let mut client = Client::connect(hookside.bot).await;
    let body = json!({ "extractedData": { "id": "chunked" } }).to_string();
    client
        .send(&format!(
            "POST /v1/webhooks/w HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ))
        .await;
    assert_eq!(
        client.answer().await.expect("answer").path(),
        "/orders/chunked"
    );
    client.send(&call("next", "")).await;
    assert_eq!(
        client.answer().await.expect("answer").path(),
        "/orders/next"
    );

    // Expect: 100-continue: the body is sent only after the interim answer.
    let mut client = Client::connect(hookside.bot).await;
    let request = call("expect", "expect: 100-continue\r\n");
    let (head, body) = request.split_at(request.find("\r\n\r\n").expect("head") + 4);
    client.send(head).await;
    let mut interim = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), client.stream.read(&mut interim))
        .await
        .expect("100 Continue within 5 s")
        .expect("read");
    assert!(interim[..read].starts_with(b"HTTP/1.1 100 Continue\r\n"));
    client.send(body).await;
    assert_eq!(
        client.answer().await.expect("answer").path(),
        "/orders/expect"
    );

    // The listing, then a call.
    let mut client = Client::connect(hookside.bot).await;
    client
        .send("GET /v1/webhooks HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let answer = client.answer().await.expect("answer");
    assert_eq!(answer.body["webhooks"][0]["name"], "w");
    client.send(&call("listed", "")).await;
    assert_eq!(
        client.answer().await.expect("answer").path(),
        "/orders/listed"
    );

    // More fields than the fast path parses (hyper takes up to 100).
    let mut client = Client::connect(hookside.bot).await;
    let many: String = (0..40).map(|i| format!("x-field-{i}: {i}\r\n")).collect();
    client.send(&call("many", &many)).await;
    assert_eq!(
        client.answer().await.expect("answer").path(),
        "/orders/many"
    );

    // HTTP/1.0: answered, then closed.
    let mut client = Client::connect(hookside.bot).await;
    client
        .send(&call("old", "").replacen("HTTP/1.1", "HTTP/1.0", 1))
        .await;
    assert_eq!(client.answer().await.expect("answer").path(), "/orders/old");
    assert!(client.closed().await);

    assert_eq!(upstream.seen().len(), 6);
}

#[tokio::test]
async fn a_malformed_request_gets_a_json_400_and_the_connection_closes() {
    let (upstream, _dir, hookside) = start().await;
    let malformed = [
        call("twice", "content-length: 3\r\n"),
        call("plus", "").replace("content-length: ", "content-length: +"),
        "GET /v1/webhooks HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"
            .to_owned(),
        "POST /v1/webhooks/w HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n".to_owned(),
    ];
    for request in &malformed {
        let mut client = Client::connect(hookside.bot).await;
        client.send(request).await;
        let answer = client.answer().await.expect("answer");
        assert_eq!(answer.status, 400, "{request:?}");
        assert_eq!(answer.body["error"]["kind"], "bad_request", "{request:?}");
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "{request:?}"
        );
        assert_eq!(answer.header("connection"), Some("close"), "{request:?}");
        assert!(client.closed().await, "{request:?}");
    }
    assert!(upstream.seen().is_empty(), "nothing was sent upstream");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_lets_a_call_in_progress_finish() {
    let upstream = Upstream::fixed(
        Reply::json(200, json!({"path": "slow"})).delayed(Duration::from_millis(500)),
    )
    .await;
    let dir = Dir::new();
    dir.file(
        "webhooks.d/w.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/\"\n[variables]\npath = \"response.path\"\n",
            upstream.host()
        ),
    );
    let hookside = Hookside::start(&dir.path().join("webhooks.d")).await;
    let mut idle = Client::connect(hookside.bot).await;
    idle.send(&call("first", "")).await;
    assert_eq!(idle.answer().await.expect("answer").path(), "slow");
    let mut busy = Client::connect(hookside.bot).await;
    busy.send(&call("busy", "")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    hookside.shut_down();
    let closed = tokio::time::timeout(Duration::from_secs(3), idle.closed()).await;
    assert_eq!(
        closed.ok(),
        Some(true),
        "the idle connection is closed at once"
    );
    let answer = busy
        .answer()
        .await
        .expect("the call in progress is answered");
    assert_eq!(answer.path(), "slow");
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(busy.closed().await);
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_too() {
    let (upstream, _dir, hookside) = start().await;
    for id in ["h2-a", "h2-b"] {
        assert_eq!(
            call_over_http2(&hookside, id).await,
            format!("/orders/{id}")
        );
    }
    assert_eq!(upstream.seen().len(), 2);
}

#[tokio::test]
async fn a_declared_length_near_two_to_the_64_closes_the_connection_and_its_body_never_runs() {
    let (upstream, _dir, hookside) = start().await;
    // The "body" is a call of its own; it must never be read as a request.
    for target in ["nope", "w"] {
        let mut client = Client::connect(hookside.bot).await;
        client
            .send(&format!(
                "POST /v1/webhooks/{target} HTTP/1.1\r\nhost: x\r\ncontent-length: 18446744073709551615\r\n\r\n{}",
                call("smuggled", "")
            ))
            .await;
        let answer = client.answer().await.expect("answer");
        let kind = if target == "w" {
            "payload_too_large"
        } else {
            "unknown_webhook"
        };
        assert_eq!(answer.body["error"]["kind"], kind, "{answer:?}");
        assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
        assert!(client.closed().await, "nothing more is answered");
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[tokio::test]
async fn heads_hyper_would_answer_empty_get_the_json_answer_and_the_connection_closes() {
    let (upstream, _dir, hookside) = start().await;
    let many = |count: usize, bad_after: Option<usize>| -> String {
        (0..count)
            .map(|i| {
                if Some(i) == bad_after {
                    "bad field\r\n".to_owned()
                } else {
                    format!("x-field-{i}: {i}\r\n")
                }
            })
            .collect()
    };
    let cases = [
        // Not a URI, although httparse reads it.
        (
            "POST /v1/webhooks/<x> HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}".to_owned(),
            400,
            "bad_request",
        ),
        // A transfer coding whose end hyper cannot find, or in HTTP/1.0.
        (
            call("gzip", "transfer-encoding: gzip\r\n"),
            400,
            "bad_request",
        ),
        (
            call("old", "transfer-encoding: chunked\r\n").replacen("HTTP/1.1", "HTTP/1.0", 1),
            400,
            "bad_request",
        ),
        // A bad field after the fast path's 32.
        (call("bad", &many(35, Some(33))), 400, "bad_request"),
        // Over hyper's limits: 100 fields, 64 KiB.
        (call("fields", &many(101, None)), 431, "head_too_large"),
        (
            call("long", &format!("x-long: {}\r\n", "a".repeat(70_000))),
            431,
            "head_too_large",
        ),
    ];
    for (request, status, kind) in &cases {
        let mut client = Client::connect(hookside.bot).await;
        client.send(request).await;
        let answer = client.answer().await.expect("answer");
        let shown = &request[..60];
        assert_eq!(answer.status, *status, "{shown:?}: {answer:?}");
        assert_eq!(answer.body["error"]["kind"], *kind, "{shown:?}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.header("connection"), Some("close"), "{shown:?}");
        assert!(client.closed().await, "{shown:?}");
    }
    // Just inside the limits, hyper serves them.
    let mut client = Client::connect(hookside.bot).await;
    client.send(&call("ninety", &many(90, None))).await;
    assert_eq!(
        client.answer().await.expect("answer").path(),
        "/orders/ninety"
    );
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn a_refusal_on_a_connection_hyper_serves_closes_it_when_the_body_was_not_read() {
    let (upstream, _dir, hookside) = start().await;
    let chunked = |name: &str| {
        format!(
            "POST /v1/webhooks/{name} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n"
        )
    };
    // The body's last chunk is not sent: a refusal of the webhook, the route or its query
    // comes before it is read.
    for (target, kind) in [
        ("/v1/webhooks/nope", "unknown_webhook"),
        ("/v1/webhooks/w/test?dry_run=maybe", "bad_request"),
        ("/v1/other", "not_found"),
    ] {
        let mut client = Client::connect(hookside.bot).await;
        client
            .send(&chunked("w").replace("/v1/webhooks/w", target))
            .await;
        let answer = client.answer().await.expect("answer");
        assert_eq!(answer.body["error"]["kind"], kind, "{target}");
        assert_eq!(answer.header("connection"), Some("close"), "{target}");
        assert!(client.closed().await, "{target}");
    }

    // A refusal after the whole body was read keeps the connection.
    let mut client = Client::connect(hookside.bot).await;
    client
        .send(&format!("{}0\r\n\r\n", chunked("w").replace("{}", "[]")))
        .await;
    let answer = client.answer().await.expect("answer");
    assert_eq!(answer.body["error"]["kind"], "bad_request");
    assert_eq!(answer.header("connection"), None);
    client.send(&call("kept", "")).await;
    assert_eq!(
        client.answer().await.expect("answer").path(),
        "/orders/kept"
    );
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn names_may_be_percent_encoded() {
    let (upstream, _dir, hookside) = start().await;
    let mut client = Client::connect(hookside.bot).await;
    client
        .send(&call("encoded", "").replace("/v1/webhooks/w ", "/v1/webhooks/%77 "))
        .await;
    assert_eq!(
        client.answer().await.expect("answer").path(),
        "/orders/encoded"
    );
    let (status, body) = hookside.get("/v1/webhooks/%77").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "w");
    // An encoded `/` stays in the name, which no webhook has.
    let (status, body) = hookside.get("/v1/webhooks/w%2Ftest").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["webhook"], "w/test");
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn head_is_get_without_the_body_and_a_405_says_what_is_allowed() {
    let (_upstream, _dir, hookside) = start().await;
    for (address, path) in [
        (hookside.bot, "/v1/webhooks"),
        (hookside.bot, "/v1/webhooks/w"),
        (hookside.admin, "/healthz"),
        (hookside.admin, "/metrics"),
    ] {
        let mut client = Client::connect(address).await;
        client
            .send(&format!("HEAD {path} HTTP/1.1\r\nhost: x\r\n\r\n"))
            .await;
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.ends_with(b"\r\n\r\n") {
            let read = tokio::time::timeout(Duration::from_secs(5), client.stream.read(&mut chunk))
                .await
                .expect("an answer")
                .expect("read");
            assert!(read > 0, "closed");
            head.extend_from_slice(&chunk[..read]);
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200 ok\r\n"), "{path}: {text}");
        assert!(!text.contains("content-length: 0\r\n"), "{path}: {text}");
        // No body follows the head.
        let more =
            tokio::time::timeout(Duration::from_millis(200), client.stream.read(&mut chunk)).await;
        assert!(more.is_err(), "{path}: nothing after the head");
    }
    for (address, method, path, allow, webhook) in [
        (
            hookside.bot,
            "PUT",
            "/v1/webhooks/w",
            "GET, HEAD, POST",
            json!("w"),
        ),
        (
            hookside.bot,
            "GET",
            "/v1/webhooks/w/test",
            "POST",
            json!("w"),
        ),
        (
            hookside.bot,
            "DELETE",
            "/v1/webhooks",
            "GET, HEAD",
            Value::Null,
        ),
        (hookside.admin, "POST", "/healthz", "GET, HEAD", Value::Null),
        (hookside.admin, "GET", "/-/reload", "POST", Value::Null),
    ] {
        let mut client = Client::connect(address).await;
        client
            .send(&format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
            ))
            .await;
        let answer = client.answer().await.expect("answer");
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(answer.body["error"]["kind"], "method_not_allowed");
        assert_eq!(answer.body["error"]["webhook"], webhook, "{method} {path}");
    }
}

/// A call over HTTP/2 with prior knowledge on a new connection: the answer's `path`.
async fn call_over_http2(hookside: &Hookside, id: &str) -> String {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let body = json!({ "extractedData": { "id": id } }).to_string();
    let request = http::Request::post(format!("http://{}/v1/webhooks/w", hookside.bot))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let response = client.request(request).await.expect("answered");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    answer["variables"]["path"]
        .as_str()
        .expect("path")
        .to_owned()
}

/// An HTTP/2 connection that sends the preface and SETTINGS, then no request.
async fn idle_http2(hookside: &Hookside) -> tokio::net::TcpStream {
    let mut idle = tokio::net::TcpStream::connect(hookside.bot)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut idle,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    )
    .await
    .expect("write");
    idle
}

/// The types of the HTTP/2 frames that come on `idle` until hookside closes it, which must
/// be within 10 s. It answers every PING, as a client that means to keep the connection
/// would.
async fn frames_until_closed(mut idle: tokio::net::TcpStream) -> Vec<u8> {
    let mut types = Vec::new();
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut chunk = [0u8; 4096];
            let read = idle.read(&mut chunk).await.unwrap_or(0);
            if read == 0 {
                return;
            }
            buffer.extend_from_slice(&chunk[..read]);
            while buffer.len() >= 9 {
                let length = usize::from(buffer[0]) << 16
                    | usize::from(buffer[1]) << 8
                    | usize::from(buffer[2]);
                if buffer.len() < 9 + length {
                    break;
                }
                let frame: Vec<u8> = buffer.drain(..9 + length).collect();
                types.push(frame[3]);
                if frame[3] == 0x6 && frame[4] & 0x1 == 0 {
                    let mut ack = frame.clone();
                    ack[4] = 0x1;
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut idle, &ack).await;
                }
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "closed within 10 s; frames {types:?}");
    types
}

/// An HTTP/2 connection (hyper's client) that has made one call of `w`: its sender (the
/// connection stays open while it is kept) and its driver, which ends when hookside
/// closes the connection.
async fn http2_after_a_call(
    hookside: &Hookside,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = tokio::net::TcpStream::connect(hookside.bot)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    let driver = tokio::spawn(connection);
    let body = json!({ "extractedData": { "id": "h2" } }).to_string();
    let request = http::Request::post(format!("http://{}/v1/webhooks/w", hookside.bot))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("answered");
    assert_eq!(response.status(), 200);
    (sender, driver)
}

/// hookside with webhook `w` on `upstream` and `max_connections` slots (a 60 s header read
/// timeout: no slot is freed by it while a test runs).
async fn with_slots(upstream: &Upstream, max_connections: usize) -> (Dir, Hookside) {
    let settings = hookside::config::Settings {
        header_read_timeout: Duration::from_secs(60),
        max_connections,
        ..Default::default()
    };
    serving(upstream, settings).await
}

/// hookside with webhook `w` on `upstream`, and `settings`.
async fn serving(upstream: &Upstream, settings: hookside::config::Settings) -> (Dir, Hookside) {
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/orders/{{{{ extractedData.id }}}}\"\n[variables]\npath = \"response.path\"\n",
            upstream.host()
        ),
    );
    let hookside = Hookside::with_settings(dir.path(), settings).await;
    (dir, hookside)
}

/// Whether `client`'s connection is closed (checked for half a second).
async fn closed_now(client: &mut Client) -> bool {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(500), client.stream.read(&mut byte));
    matches!(read.await, Ok(Ok(0) | Err(_)))
}

// Clients holding every slot with idle keep-alive connections (a bot that leaks them) do
// not keep a new one out for the header read timeout: an idle connection, HTTP/1 or
// HTTP/2, closes to make room (nginx, too, closes idle ones when it runs out), and so does
// one that becomes idle while the client waits. A call in progress is answered, and a
// connection that has not had its first request yet is left to make it. Every wait below
// is bounded by `answer`'s 10 s, far below the 60 s header read timeout.
#[tokio::test]
async fn idle_connections_make_room_when_every_slot_is_taken() {
    let upstream =
        Upstream::start(|seen| {
            let slow = seen.target.ends_with("/slow");
            Reply::json(200, json!({ "path": seen.target }))
                .delayed(Duration::from_millis(if slow { 1500 } else { 0 }))
        })
        .await;
    let slow_reached = |count: usize| {
        let upstream = &upstream;
        crate::util::eventually(Duration::from_secs(5), move || {
            let seen = upstream.seen().len();
            async move { seen == count }
        })
    };

    // Three slots: one idle after a call, one not used yet, one in a slow call.
    let (_dir, hookside) = with_slots(&upstream, 3).await;
    let mut idle = Client::connect(hookside.bot).await;
    idle.send(&call("a", "")).await;
    assert_eq!(idle.answer().await.expect("answer").status, 200);
    let mut fresh = Client::connect(hookside.bot).await;
    let mut busy = Client::connect(hookside.bot).await;
    busy.send(&call("slow", "")).await;
    assert!(slow_reached(2).await, "the slow call reached the upstream");
    let mut new = Client::connect(hookside.bot).await;
    new.send(&call("new", "")).await;
    let answer = new.answer().await.expect("the new client is answered");
    assert_eq!((answer.status, answer.path()), (200, "/orders/new"));
    assert!(closed_now(&mut idle).await, "the idle connection made room");
    fresh.send(&call("fresh", "")).await;
    let answer = fresh.answer().await.expect("the unused one was left");
    assert_eq!(answer.path(), "/orders/fresh");
    let slow = busy
        .answer()
        .await
        .expect("the call in progress is answered");
    assert_eq!((slow.status, slow.path()), (200, "/orders/slow"));

    // One slot, in a slow call with a call pipelined behind it, while a client waits: both
    // are answered, the last one saying `connection: close`, then it makes room.
    let (_dir, hookside) = with_slots(&upstream, 1).await;
    let mut busy = Client::connect(hookside.bot).await;
    busy.send(&format!("{}{}", call("slow", ""), call("behind", "")))
        .await;
    assert!(slow_reached(5).await, "the slow call reached the upstream");
    let mut last = Client::connect(hookside.bot).await;
    last.send(&call("last", "")).await;
    let slow = busy
        .answer()
        .await
        .expect("the call in progress is answered");
    assert_eq!(slow.path(), "/orders/slow");
    assert_eq!(slow.header("connection"), None, "{slow:?}");
    let behind = busy.answer().await.expect("the pipelined call is answered");
    assert_eq!(behind.path(), "/orders/behind");
    assert_eq!(behind.header("connection"), Some("close"), "{behind:?}");
    assert!(busy.closed().await, "then it closed to make room");
    let answer = last.answer().await.expect("the waiting client is answered");
    assert_eq!(answer.path(), "/orders/last");

    // One slot, an idle HTTP/2 connection: it gets a GOAWAY and ends.
    let (_dir, hookside) = with_slots(&upstream, 1).await;
    let (_sender, idle_h2) = http2_after_a_call(&hookside).await;
    let mut new = Client::connect(hookside.bot).await;
    new.send(&call("after-h2", "")).await;
    let answer = new.answer().await.expect("the new client is answered");
    assert_eq!(answer.path(), "/orders/after-h2");
    let ended = tokio::time::timeout(Duration::from_secs(10), idle_h2).await;
    assert!(
        ended.is_ok_and(|driver| driver.is_ok_and(|ended| ended.is_ok())),
        "the idle HTTP/2 connection ended cleanly"
    );

    // One slot, an HTTP/2 connection in a slow call when a client comes: the call is
    // answered, then the connection makes room.
    let (_dir, hookside) = with_slots(&upstream, 1).await;
    let (mut sender, h2) = http2_after_a_call(&hookside).await;
    let body = json!({ "extractedData": { "id": "slow" } }).to_string();
    let request = http::Request::post(format!("http://{}/v1/webhooks/w", hookside.bot))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let slow = tokio::spawn(sender.send_request(request));
    assert!(slow_reached(11).await, "the slow call reached the upstream");
    let mut new = Client::connect(hookside.bot).await;
    new.send(&call("after-busy-h2", "")).await;
    let answer = new.answer().await.expect("the new client is answered");
    assert_eq!(answer.path(), "/orders/after-busy-h2");
    let slow = slow
        .await
        .expect("joined")
        .expect("the slow call is answered");
    assert_eq!(slow.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(10), h2).await;
    assert!(ended.is_ok(), "then the HTTP/2 connection ended");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_read_timeout() {
    // Each call takes longer than the timeout: an open request keeps its connection.
    let upstream = Upstream::start(|seen| {
        Reply::json(200, json!({ "path": seen.target })).delayed(Duration::from_millis(700))
    })
    .await;
    let settings = hookside::config::Settings {
        header_read_timeout: Duration::from_millis(300),
        max_connections: 1,
        ..Default::default()
    };
    let (_dir, hookside) = serving(&upstream, settings).await;

    // The preface and SETTINGS, then no request: the one connection slot is taken.
    let idle = idle_http2(&hookside).await;
    let types = frames_until_closed(idle).await;
    assert!(
        types.contains(&0x7),
        "a GOAWAY before the close: frame types {types:?}"
    );

    // The slot is free again, and a call longer than the timeout is answered.
    assert_eq!(call_over_http2(&hookside, "after").await, "/orders/after");
    assert_eq!(upstream.seen().len(), 1);
}

// The real binary warns when clients found every slot taken, once a minute at most: a
// steady stream of them does not flood the log.
#[tokio::test]
async fn clients_finding_every_slot_taken_are_logged_once_a_minute() {
    let (upstream, dir, _) = start().await;
    let config = dir.file("hookside.toml", "[limits]\nmax_connections = 1\n");
    let webhooks = dir.path().join("webhooks.d");
    let process = crate::util::Process::serve(
        &webhooks,
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let mut kept = Vec::new();
    for id in ["a", "b", "c"] {
        let mut client = Client::connect(process.bot).await;
        client.send(&call(id, "")).await;
        let answer = client
            .answer()
            .await
            .expect("answered: the idle one made room");
        assert_eq!(answer.path(), format!("/orders/{id}"));
        // The connection stays, idle: the next client finds the slot taken.
        kept.push(client);
    }
    assert_eq!(upstream.seen().len(), 3);
    // The first two were closed to make room; the last one stays.
    for client in &mut kept[..2] {
        assert!(client.closed().await);
    }
    let log = process.log();
    assert_eq!(
        log.matches("every connection slot was taken").count(),
        1,
        "{log}"
    );
    assert!(log.contains("max_connections=1"), "{log}");
}

// A call that arrives behind a slow one while a client waits for the only slot: it is read
// before the connection closes, so the close is not a reset that would cut the big answer
// before it (a client reading it slowly, through a small receive buffer, gets it whole).
#[tokio::test]
async fn a_connection_closing_to_make_room_loses_no_answer_and_no_call() {
    let upstream = Upstream::start(|seen| {
        let slow = seen.target.ends_with("/slow");
        let pad = if slow {
            "x".repeat(200_000)
        } else {
            String::new()
        };
        Reply::json(200, json!({ "path": seen.target, "pad": pad }))
            .delayed(Duration::from_millis(if slow { 1000 } else { 0 }))
    })
    .await;
    let (_dir, hookside) = with_slots(&upstream, 1).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut busy = Client::over(socket.connect(hookside.bot).await.expect("connect"));
    busy.send(&call("slow", "")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    busy.send(&call("behind", "")).await;
    let mut waiting = Client::connect(hookside.bot).await;
    waiting.send(&call("waiting", "")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let slow = busy.answer().await.expect("the big answer, whole");
    assert_eq!(slow.path(), "/orders/slow");
    let behind = busy.answer().await.expect("the call behind it");
    assert_eq!(behind.path(), "/orders/behind");
    assert_eq!(behind.header("connection"), Some("close"));
    assert!(busy.closed().await);
    let answer = waiting
        .answer()
        .await
        .expect("the waiting client is answered");
    assert_eq!(answer.path(), "/orders/waiting");
}
