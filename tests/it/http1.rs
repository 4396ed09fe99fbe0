//! HTTP/1.1 on the wire: the request bytes an upstream receives, and answers framed every
//! way RFC 9112 allows (or broken), written byte for byte by a scripted upstream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::util::{Dir, Hookside, assert_error};

/// What the scripted upstream does with the next request it reads.
enum Step {
    /// Writes these bytes, then keeps the connection open for the next request.
    Answer(&'static str),
    /// Writes these bytes, then closes the connection.
    AnswerAndClose(&'static str),
    /// Closes the connection without answering.
    Close,
    /// Never answers, and keeps the connection open for half a minute.
    Silent,
}

/// An upstream that reads whole requests (head and `Content-Length` body) and follows a
/// script, one step per request, whatever connection it arrives on.
struct Scripted {
    host: String,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    connections: Arc<Mutex<usize>>,
}

impl Scripted {
    async fn start(steps: Vec<Step>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let steps = Arc::new(Mutex::new(VecDeque::from(steps)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (seen, counted) = (Arc::clone(&requests), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                *counted.lock().expect("lock") += 1;
                let (steps, seen) = (Arc::clone(&steps), Arc::clone(&seen));
                tokio::spawn(async move {
                    while let Some(request) = read_request(&mut stream).await {
                        seen.lock().expect("lock").push(request);
                        let step = steps.lock().expect("lock").pop_front();
                        match step {
                            Some(Step::Answer(bytes)) => {
                                if stream.write_all(bytes.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            Some(Step::AnswerAndClose(bytes)) => {
                                let _ = stream.write_all(bytes.as_bytes()).await;
                                return;
                            }
                            Some(Step::Silent) => {
                                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                                return;
                            }
                            Some(Step::Close) | None => return,
                        }
                    }
                });
            }
        });
        Scripted {
            host,
            requests,
            connections,
        }
    }

    fn connections(&self) -> usize {
        *self.connections.lock().expect("lock")
    }

    fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("lock")
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }
}

/// One request, head and body, or `None` once the connection ends.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => request.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse().expect("a length"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    request.extend_from_slice(&body);
    Some(request)
}

/// A webhook to `host` with `method`, a JSON body, and one variable (`id`).
fn webhook(dir: &Dir, host: &str, method: &str) {
    dir.file(
        "w.toml",
        &format!(
            "company = \"acme\"\nmethod = \"{method}\"\nurl = \"http://{host}/orders/{{{{ orderId }}}}?q=1\"\n[headers]\nx-session = \"{{{{ sessionId }}}}\"\n[variables]\nid = \"response.id\"\n"
        ),
    );
}

/// A scripted upstream, a webhook `w` to it with `method`, and hookside serving that.
async fn serve(steps: Vec<Step>, method: &str) -> (Scripted, Dir, Hookside) {
    let upstream = Scripted::start(steps).await;
    let dir = Dir::new();
    webhook(&dir, &upstream.host, method);
    let hookside = Hookside::start(dir.path()).await;
    (upstream, dir, hookside)
}

const OK: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{\"id\":\"a\"}";

#[tokio::test]
async fn the_request_is_one_http11_message_with_host_length_and_body() {
    let upstream = Scripted::start(vec![Step::Answer(OK)]).await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &format!(
            "company = \"acme\"\nmethod = \"POST\"\nurl = \"http://{}/orders/{{{{ orderId }}}}\"\n[body]\norder = \"{{{{ orderId }}}}\"\n[variables]\nid = \"response.id\"\n",
            upstream.host
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("w", json!({"orderId": "A 1"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["variables"]["id"], "a");
    let requests = upstream.requests();
    let request = requests.first().expect("one request");
    let (head, body) = request.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.split("\r\n");
    assert_eq!(lines.next(), Some("POST /orders/A%201 HTTP/1.1"));
    let fields: Vec<&str> = lines.collect();
    assert!(
        fields.contains(&format!("host: {}", upstream.host).as_str()),
        "{head}"
    );
    assert!(fields.contains(&"content-type: application/json"), "{head}");
    for name in ["host:", "content-length:", "content-type:"] {
        let count = fields.iter().filter(|f| f.starts_with(name)).count();
        assert_eq!(count, 1, "{name} once: {head}");
    }
    assert!(
        fields.contains(&format!("content-length: {}", body.len()).as_str()),
        "{head}"
    );
    assert_eq!(body, r#"{"order":"A 1"}"#);
}

#[tokio::test]
async fn a_get_has_no_length_and_a_post_without_a_body_says_zero() {
    let upstream = Scripted::start(vec![Step::Answer(OK), Step::Answer(OK)]).await;
    let dir = Dir::new();
    webhook(&dir, &upstream.host, "GET");
    dir.file(
        "p.toml",
        &format!(
            "company = \"acme\"\nmethod = \"POST\"\nurl = \"http://{}/p\"\n",
            upstream.host
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    assert_eq!(hookside.invoke("w", json!({"orderId": 1})).await.0, 200);
    assert_eq!(hookside.invoke("p", json!({})).await.0, 200);
    let requests = upstream.requests();
    assert!(
        requests[0].starts_with("GET /orders/1?q=1 HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(!requests[0].contains("content-length"), "{}", requests[0]);
    assert!(
        requests[1].starts_with("POST /p HTTP/1.1\r\n"),
        "{}",
        requests[1]
    );
    assert!(
        requests[1].ends_with("content-length: 0\r\n\r\n"),
        "{}",
        requests[1]
    );
}

#[tokio::test]
async fn answers_framed_every_way_are_read_whole() {
    // Each answer, and whether the connection is then reused (a new one is opened if not).
    // The ids the answers carry are "a", "b", "c"... in this order.
    let cases: [(&str, &'static str, bool); 7] = [
        ("content-length", OK, true),
        (
            "chunked, with an extension and a trailer",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\n{\"i\r\n7\r\nd\":\"b\"}\r\n0\r\nx-sum: 1\r\n\r\n",
            true,
        ),
        (
            "interim answers first",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{\"id\":\"c\"}",
            true,
        ),
        (
            "connection: close",
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 10\r\n\r\n{\"id\":\"d\"}",
            false,
        ),
        (
            "HTTP/1.0 without keep-alive",
            "HTTP/1.0 200 OK\r\ncontent-length: 10\r\n\r\n{\"id\":\"e\"}",
            false,
        ),
        (
            "HTTP/1.0 with keep-alive",
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 10\r\n\r\n{\"id\":\"f\"}",
            true,
        ),
        (
            "two equal lengths",
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\ncontent-length: 10\r\n\r\n{\"id\":\"g\"}",
            true,
        ),
    ];
    for ((case, answer, reused), id) in cases.into_iter().zip(["a", "b", "c", "d", "e", "f", "g"]) {
        let (upstream, _dir, hookside) =
            serve(vec![Step::Answer(answer), Step::Answer(OK)], "POST").await;
        let (status, first) = hookside.invoke("w", json!({"orderId": 1})).await;
        assert_eq!(status, 200, "{case}: {first}");
        assert_eq!(first["variables"]["id"], id, "{case}: {first}");
        let (status, second) = hookside.invoke("w", json!({"orderId": 2})).await;
        assert_eq!(
            (status.as_u16(), &second["variables"]["id"]),
            (200, &json!("a")),
            "{case}: {second}"
        );
        let expected = if reused { 1 } else { 2 };
        assert_eq!(upstream.connections(), expected, "{case}: connections");
    }
}

#[tokio::test]
async fn a_body_until_the_close_and_answers_without_a_body() {
    let upstream = Scripted::start(vec![
        Step::AnswerAndClose(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"id\":\"h\"}",
        ),
        Step::Answer("HTTP/1.1 204 No Content\r\n\r\n"),
        Step::Answer("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n"),
        Step::Answer("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"),
    ])
    .await;
    let dir = Dir::new();
    webhook(&dir, &upstream.host, "POST");
    dir.file(
        "head.toml",
        &format!(
            "company = \"acme\"\nmethod = \"HEAD\"\nurl = \"http://{}/h\"\n",
            upstream.host
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("w", json!({"orderId": 1})).await;
    assert_eq!(
        (status.as_u16(), &answer["variables"]["id"]),
        (200, &json!("h")),
        "{answer}"
    );
    for (name, expected) in [("w", 204), ("w", 304), ("head", 200)] {
        let (status, answer) = hookside.invoke(name, json!({"orderId": 1})).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], expected, "{answer}");
        assert_eq!(answer["response"], json!(null), "{answer}");
    }
    // The close-delimited answer ended its connection; the three others shared one.
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn broken_answers_are_unreachable_and_their_connection_is_dropped() {
    let cases = [
        ("not HTTP", "SMTP ready\r\n\r\n"),
        (
            "two different lengths",
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\ncontent-length: 11\r\n\r\n{\"id\":\"x\"}",
        ),
        (
            "a length that is not a number",
            "HTTP/1.1 200 OK\r\ncontent-length: +10\r\n\r\n{\"id\":\"x\"}",
        ),
        (
            "a bad chunk size",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ),
        (
            "a chunk without CRLF",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd",
        ),
        (
            "an unasked upgrade",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
        ),
    ];
    for (case, answer) in cases {
        let (upstream, _dir, hookside) =
            serve(vec![Step::Answer(answer), Step::Answer(OK)], "POST").await;
        let broken = hookside.invoke("w", json!({"orderId": 1})).await;
        assert_error(&broken, 502, "upstream_unreachable");
        let message = broken.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("not valid HTTP"), "{case}: {message}");
        let (status, after) = hookside.invoke("w", json!({"orderId": 2})).await;
        assert_eq!(status, 200, "{case}: {after}");
        assert_eq!(
            upstream.connections(),
            2,
            "{case}: the broken connection was not reused"
        );
    }
}

#[tokio::test]
async fn a_body_cut_short_is_unreachable() {
    for answer in [
        "HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{\"id\":",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"id\"\r\n",
    ] {
        let (_upstream, _dir, hookside) = serve(vec![Step::AnswerAndClose(answer)], "POST").await;
        let answer = hookside.invoke("w", json!({"orderId": 1})).await;
        assert_error(&answer, 502, "upstream_unreachable");
        let message = answer.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("before the end of the body"), "{message}");
    }
}

#[tokio::test]
async fn a_chunked_body_that_grows_over_the_limit_is_refused() {
    // 8 bytes of JSON, then 16 or 8 bytes of trailing spaces, in chunks of 8.
    const OVER: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\n{\"id\":1}\r\n8\r\n        \r\n8\r\n        \r\n0\r\n\r\n";
    const AT: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\n{\"id\":1}\r\n8\r\n        \r\n0\r\n\r\n";
    for (answer, within) in [(OVER, false), (AT, true)] {
        let upstream = Scripted::start(vec![Step::Answer(answer)]).await;
        let dir = Dir::new();
        webhook(&dir, &upstream.host, "POST");
        let settings = hookside::config::Settings {
            max_response_body: 16,
            ..Default::default()
        };
        let hookside = Hookside::with_settings(dir.path(), settings).await;
        let answer = hookside.invoke("w", json!({"orderId": 1})).await;
        if within {
            // 16 bytes: exactly the limit.
            assert_eq!(
                (answer.0.as_u16(), &answer.1["variables"]["id"]),
                (200, &json!(1)),
                "{}",
                answer.1
            );
        } else {
            assert_error(&answer, 502, "upstream_invalid_response");
        }
    }
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused() {
    let (_upstream, _dir, hookside) = serve(
        vec![Step::Answer(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\n{\"id\":1}\r\nfffffff\r\n",
        )],
        "POST",
    )
    .await;
    let answer = hookside.invoke("w", json!({"orderId": 1})).await;
    assert_error(&answer, 502, "upstream_invalid_response");
}

#[tokio::test]
async fn a_reused_connection_closed_under_a_request_retries_only_what_may_be_repeated() {
    // The first request is answered; the second arrives on the same, kept connection,
    // which the upstream then closes without answering (a keep-alive race lost).
    for (method, retried) in [("GET", true), ("POST", false)] {
        let (upstream, _dir, hookside) = serve(
            vec![Step::Answer(OK), Step::Close, Step::Answer(OK)],
            method,
        )
        .await;
        assert_eq!(hookside.invoke("w", json!({"orderId": 1})).await.0, 200);
        let second = hookside.invoke("w", json!({"orderId": 2})).await;
        if retried {
            assert_eq!(second.0, 200, "{method}: {}", second.1);
            assert_eq!(upstream.requests().len(), 3, "{method}: sent again");
        } else {
            assert_error(&second, 502, "upstream_unreachable");
            assert_eq!(upstream.requests().len(), 2, "{method}: not sent again");
        }
    }
}

#[tokio::test]
async fn each_call_on_a_kept_connection_has_its_own_webhooks_timeout() {
    // Two webhooks of one origin share its connections: one with a long timeout answered
    // at once, then one with a short timeout that the upstream never answers on the same
    // connection. The short one is cut at its own timeout, not the long one's.
    let upstream = Scripted::start(vec![Step::Answer(OK), Step::Silent, Step::Answer(OK)]).await;
    let dir = Dir::new();
    for (name, timeout) in [("long", "20s"), ("short", "300ms")] {
        dir.file(
            &format!("{name}.toml"),
            &format!(
                "company = \"acme\"\nurl = \"http://{}/\"\ntimeout = \"{timeout}\"\n[variables]\nid = \"response.id\"\n",
                upstream.host
            ),
        );
    }
    let hookside = Hookside::start(dir.path()).await;
    assert_eq!(hookside.invoke("long", json!({})).await.0, 200);
    let started = std::time::Instant::now();
    assert_error(
        &hookside.invoke("short", json!({})).await,
        504,
        "upstream_timeout",
    );
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(3),
        "cut after {took:?}"
    );
    assert_eq!(
        upstream.connections(),
        1,
        "the second call went on the kept connection"
    );
    // The connection of the call that timed out is not used again.
    assert_eq!(hookside.invoke("long", json!({})).await.0, 200);
    assert_eq!(upstream.connections(), 2);
    assert_eq!(upstream.requests().len(), 3);
}
