//! Upstream connections: kept alive and reused, grown to the concurrency, and never used
//! once the upstream has closed them.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::util::{Dir, Hookside, Reply, Upstream};

fn webhook(host: &str) -> String {
    format!(
        "company = \"acme\"\nurl = \"http://{host}/orders/{{{{ orderId }}}}\"\n[variables]\nid = \"response.id\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_and_the_pool_grows_to_the_concurrency() {
    let upstream =
        Upstream::fixed(Reply::json(200, json!({"id": "x"})).delayed(Duration::from_millis(300)))
            .await;
    let dir = Dir::new();
    dir.file("w.toml", &webhook(&upstream.host()));
    let hookside = std::sync::Arc::new(Hookside::start(dir.path()).await);

    for _ in 0..3 {
        let (status, answer) = hookside.invoke("w", json!({"orderId": 1})).await;
        assert_eq!(
            (status.as_u16(), &answer["variables"]["id"]),
            (200, &json!("x"))
        );
    }
    assert_eq!(
        upstream.connections(),
        1,
        "sequential calls share one connection"
    );

    let calls: Vec<_> = (0..8)
        .map(|i| {
            let hookside = std::sync::Arc::clone(&hookside);
            tokio::spawn(async move { hookside.invoke("w", json!({"orderId": i})).await })
        })
        .collect();
    for call in calls {
        let (status, answer) = call.await.expect("joined");
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(
        upstream.connections(),
        8,
        "eight at once need eight connections"
    );

    for _ in 0..8 {
        assert_eq!(hookside.invoke("w", json!({"orderId": 2})).await.0, 200);
    }
    assert_eq!(upstream.connections(), 8, "and then they are reused");
    assert_eq!(upstream.seen().len(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_each_connection_is_answered_every_time() {
    let mut reply = Reply::json(200, json!({"id": "y"}));
    reply.headers.push(("connection".into(), "close".into()));
    let upstream = Upstream::fixed(reply).await;
    let dir = Dir::new();
    dir.file("w.toml", &webhook(&upstream.host()));
    let hookside = Hookside::start(dir.path()).await;
    for _ in 0..3 {
        let (status, answer) = hookside.invoke("w", json!({"orderId": 1})).await;
        assert_eq!(
            (status.as_u16(), &answer["variables"]["id"]),
            (200, &json!("y"))
        );
    }
    assert_eq!(upstream.connections(), 3);
}

/// How many signals are waiting on `receiver` (taking them).
fn received(receiver: &mut tokio::sync::mpsc::UnboundedReceiver<()>) -> usize {
    std::iter::from_fn(|| receiver.try_recv().ok()).count()
}

/// A request's head read byte by byte (so nothing of the next is read), or `None` when the
/// connection ends first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Answers 200 with the JSON `body`, keeping the connection.
async fn write_json(stream: &mut tokio::net::TcpStream, body: &str) {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
}

/// An upstream that keeps each connection open for one answer and then, while it is idle,
/// closes it (as servers with a short keep-alive timeout do).
async fn closing_upstream() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let (accepted, count) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = accepted.send(());
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                write_json(&mut stream, r#"{"id": "z"}"#).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (host, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let (host, mut accepted) = closing_upstream().await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &webhook(&host).replace("company", "method = \"GET\"\ncompany"),
    );
    let hookside = Hookside::start(dir.path()).await;
    for round in 0..3 {
        let (status, answer) = hookside.invoke("w", json!({"orderId": round})).await;
        assert_eq!(
            (status.as_u16(), &answer["variables"]["id"]),
            (200, &json!("z")),
            "round {round}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let connections = received(&mut accepted);
    assert_eq!(
        connections, 3,
        "each call after a close opens a new connection"
    );
}

/// An upstream that answers `/orders/warm` once it has read eight of them (so that eight
/// calls hold eight connections) and keeps the connection, and reads `/orders/drop` whole
/// and closes without answering; each request it read is sent on `read` with its path,
/// each connection it accepted on `accepted`.
async fn dropping_upstream() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let (read, paths) = tokio::sync::mpsc::unbounded_channel();
    let (accepted, connections) = tokio::sync::mpsc::unbounded_channel();
    let warm = std::sync::Arc::new((
        std::sync::atomic::AtomicUsize::new(0),
        tokio::sync::Notify::new(),
    ));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = accepted.send(());
            let read = read.clone();
            let warm = std::sync::Arc::clone(&warm);
            tokio::spawn(async move {
                loop {
                    let Some(head) = read_head(&mut stream).await else {
                        return;
                    };
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    let _ = read.send(path.clone());
                    if path == "/orders/drop" {
                        return;
                    }
                    let (count, notify) = &*warm;
                    if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= 8 {
                        notify.notify_waiters();
                    }
                    loop {
                        let notified = notify.notified();
                        if count.load(std::sync::atomic::Ordering::SeqCst) >= 8 {
                            break;
                        }
                        notified.await;
                    }
                    write_json(&mut stream, r#"{"id": "w"}"#).await;
                }
            });
        }
    });
    (host, paths, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_the_upstream_reads_and_closes_on_goes_once_more_on_a_new_connection_only() {
    let (host, mut paths, mut accepted) = dropping_upstream().await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &webhook(&host).replace("company", "method = \"GET\"\ncompany"),
    );
    let hookside = std::sync::Arc::new(Hookside::start(dir.path()).await);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let hookside = std::sync::Arc::clone(&hookside);
            tokio::spawn(async move { hookside.invoke("w", json!({"orderId": "warm"})).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("joined").0, 200);
    }
    assert_eq!(received(&mut accepted), 8, "eight idle connections");
    let _ = std::iter::from_fn(|| paths.try_recv().ok()).count();

    let answer = hookside.invoke("w", json!({"orderId": "drop"})).await;
    crate::util::assert_error(&answer, 502, "upstream_unreachable");
    let message = answer.1["error"]["message"].as_str().expect("message");
    assert!(
        message.contains(
            "without answering on a kept connection; sent again on a new one: the upstream closed"
        ),
        "{message}"
    );
    let sent: Vec<String> = std::iter::from_fn(|| paths.try_recv().ok()).collect();
    assert_eq!(
        sent,
        ["/orders/drop", "/orders/drop"],
        "once on an idle connection, once more on a new one, never on the seven others"
    );
    assert_eq!(
        received(&mut accepted),
        1,
        "the second went on a new connection"
    );

    let (status, answer) = hookside.invoke("w", json!({"orderId": "warm"})).await;
    assert_eq!(
        (status.as_u16(), &answer["variables"]["id"]),
        (200, &json!("w"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_new_connections_at_once_is_unreachable_not_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let (accepted, mut count) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = accepted.send(());
            drop(stream);
        }
    });
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &webhook(&host).replace("company", "timeout = \"3s\"\ncompany"),
    );
    let hookside = Hookside::start(dir.path()).await;
    let started = std::time::Instant::now();
    let answer = hookside.invoke("w", json!({"orderId": 1})).await;
    crate::util::assert_error(&answer, 502, "upstream_unreachable");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered before the timeout, not after retrying until it: {:?}",
        started.elapsed()
    );
    let connections = received(&mut count);
    assert_eq!(
        connections, 1,
        "a new connection that closed is not retried"
    );
}

#[tokio::test]
async fn a_path_carried_by_the_origins_context_value_prefixes_every_request() {
    let upstream = Upstream::fixed(Reply::json(200, json!({"id": "p"}))).await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{{{{ context.base }}}}/orders/{{{{ orderId }}}}?x=1\"\n[context]\nbase = \"{}/v1\"\n",
            upstream.host()
        ),
    );
    dir.file(
        "bad.toml",
        "company = \"acme\"\nurl = \"http://{{ context.base }}/orders\"\n[context]\nbase = \"api.example?x=1\"\n",
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("w", json!({"orderId": 7})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(upstream.only().target, "/v1/orders/7?x=1");
    let answer = hookside.invoke("bad", json!({})).await;
    crate::util::assert_error(&answer, 404, "unknown_webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_are_counted_while_in_progress_and_all_answered() {
    let upstream =
        Upstream::fixed(Reply::json(200, json!({"id": "c"})).delayed(Duration::from_millis(300)))
            .await;
    let dir = Dir::new();
    dir.file("w.toml", &webhook(&upstream.host()));
    // Refused at once: counted too, and released on the error path.
    dir.file(
        "denied.toml",
        "company = \"acme\"\nurl = \"http://169.254.169.254/x\"\n",
    );
    let state = hookside::app::State::new(dir.path().to_path_buf(), Default::default());
    hookside::app::reload(&state, "test").await;
    let hookside = std::sync::Arc::new(Hookside::serve_state(std::sync::Arc::clone(&state)).await);
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let hookside = std::sync::Arc::clone(&hookside);
            let name = if i % 4 == 0 { "denied" } else { "w" };
            tokio::spawn(async move { (name, hookside.invoke(name, json!({"orderId": i})).await) })
        })
        .collect();
    // Wait until the upstream holds the twelve (it answers each after 300 ms).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while upstream.seen().len() < 12 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        state.upstream.pace.active(),
        12,
        "the twelve waiting on the upstream are in progress"
    );
    for call in calls {
        let (name, (status, answer)) = call.await.expect("joined");
        if name == "w" {
            assert_eq!(
                (status.as_u16(), &answer["variables"]["id"]),
                (200, &json!("c"))
            );
        } else {
            crate::util::assert_error(&(status, answer), 502, "destination_denied");
        }
    }
    assert_eq!(state.upstream.pace.active(), 0, "every guard was released");
}

/// An upstream that answers `/nobody` with a 204 declaring a body (which HTTP forbids)
/// and then sends bytes after it (a stray answer), as broken servers do; any other path
/// gets `{"id": PATH}`. Connections are kept.
async fn out_of_step_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut stream).await {
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    if path == "/nobody" {
                        let answer = "HTTP/1.1 204 No Content\r\ncontent-length: 13\r\n\r\n";
                        let _ = stream.write_all(answer.as_bytes()).await;
                        // The stray bytes come once a next request does, on this connection:
                        // a kept connection reads them as its answer, whatever the timing.
                        let Some(next) = read_head(&mut stream).await else {
                            return;
                        };
                        write_json(&mut stream, r#"{"id":"stray"}"#).await;
                        let path = next.split(' ').nth(1).unwrap_or_default().to_owned();
                        write_json(&mut stream, &json!({ "id": path }).to_string()).await;
                    } else {
                        write_json(&mut stream, &json!({ "id": path }).to_string()).await;
                    }
                }
            });
        }
    });
    host
}

#[tokio::test]
async fn a_connection_after_a_204_that_declared_a_body_is_not_kept() {
    let host = out_of_step_upstream().await;
    let dir = Dir::new();
    dir.file(
        "nobody.toml",
        &format!("company = \"acme\"\nurl = \"http://{host}/nobody\"\n"),
    );
    dir.file(
        "real.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{host}/real\"\n[variables]\nid = \"response.id\"\n"
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    for _ in 0..3 {
        let (status, answer) = hookside.invoke("nobody", json!({})).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["response"], serde_json::Value::Null, "{answer}");
        // On a kept connection, the stray bytes would be read as this call's answer.
        let (status, answer) = hookside.invoke("real", json!({})).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["variables"]["id"], "/real", "{answer}");
    }
}
