//! Every error kind of the bot API with its HTTP status.

use std::time::Duration;

use http::Method;
use serde_json::json;

use hookside::app::State;
use hookside::config::Settings;

use crate::util::{Dir, Hookside, Reply, Upstream, assert_error, parse, send};

fn simple(dir: &Dir, name: &str, url: &str, extra: &str) {
    dir.file(
        &format!("{name}.toml"),
        &format!("company = \"acme\"\nurl = \"{url}\"\n{extra}"),
    );
}

#[tokio::test]
async fn bad_bodies_are_400_and_unknown_webhooks_404() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    simple(&dir, "w", &format!("http://{}/", upstream.host()), "");
    let hookside = Hookside::start(dir.path()).await;
    let url = format!("http://{}/v1/webhooks/w", hookside.bot);
    for body in ["[1, 2]", "not json", "\"text\"", "{\"a\": "] {
        let (status, _, answer) = send(Method::POST, &url, &[], body.into()).await;
        let answer = (status, parse(&answer));
        assert_error(&answer, 400, "bad_request");
        assert_eq!(answer.1["error"]["webhook"], "w");
    }
    assert_error(
        &hookside.invoke("nope", json!({})).await,
        404,
        "unknown_webhook",
    );
    assert!(upstream.seen().is_empty());
    let (status, _, answer) = send(Method::PUT, &url, &[], Vec::new()).await;
    assert_error(&(status, parse(&answer)), 405, "method_not_allowed");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    simple(&dir, "w", &format!("http://{}/", upstream.host()), "");
    let hookside = Hookside::start(dir.path()).await;
    let big = format!("{{\"reply\": \"{}\"}}", "x".repeat(1 << 20));
    let url = format!("http://{}/v1/webhooks/w", hookside.bot);
    let (status, _, answer) = send(Method::POST, &url, &[], big.into_bytes()).await;
    assert_error(&(status, parse(&answer)), 413, "payload_too_large");
    // Just under the limit is fine.
    let fits = format!("{{\"reply\": \"{}\"}}", "x".repeat((1 << 20) - 20));
    let (status, _, _) = send(Method::POST, &url, &[], fits.into_bytes()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_header_rendering_cr_lf_or_nul_is_422_and_nothing_is_sent() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    simple(
        &dir,
        "w",
        &format!("http://{}/", upstream.host()),
        "[headers]\nX-Reply = \"{{ reply }}\"\n",
    );
    simple(
        &dir,
        "broken",
        &format!("http://{}/", upstream.host()),
        // A misspelt filter on a branch only data takes: `check` cannot find it, the call can.
        "[body]\nx = \"{% if reply %}{{ reply | no_such_filter }}{% endif %}\"\n",
    );
    let hookside = Hookside::start(dir.path()).await;
    for value in ["a\r\nX-Injected: 1", "a\nb", "a\u{0}b"] {
        let answer = hookside.invoke("w", json!({"reply": value})).await;
        assert_error(&answer, 422, "render_error");
    }
    assert_error(
        &hookside.invoke("broken", json!({"reply": "x"})).await,
        422,
        "render_error",
    );
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn upstream_failures_are_502_and_504() {
    let invalid = Upstream::fixed(Reply::raw(200, "<html>not json</html>")).await;
    let huge = Upstream::fixed(Reply::raw(200, vec![b' '; 10 * 1024 * 1024 + 1])).await;
    let slow = Upstream::fixed(Reply::json(200, json!({})).delayed(Duration::from_secs(3))).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let dir = Dir::new();
    simple(&dir, "invalid", &format!("http://{}/", invalid.host()), "");
    simple(&dir, "huge", &format!("http://{}/", huge.host()), "");
    simple(
        &dir,
        "slow",
        &format!("http://{}/", slow.host()),
        "timeout = \"300ms\"\n",
    );
    simple(&dir, "down", &format!("http://{closed_addr}/"), "");
    let hookside = Hookside::start(dir.path()).await;
    assert_error(
        &hookside.invoke("invalid", json!({})).await,
        502,
        "upstream_invalid_response",
    );
    assert_error(
        &hookside.invoke("huge", json!({})).await,
        502,
        "upstream_invalid_response",
    );
    assert_error(
        &hookside.invoke("down", json!({})).await,
        502,
        "upstream_unreachable",
    );
    let started = std::time::Instant::now();
    assert_error(
        &hookside.invoke("slow", json!({})).await,
        504,
        "upstream_timeout",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout cut the call short"
    );
}

#[tokio::test]
async fn a_body_of_only_whitespace_is_null_and_anything_more_is_json_or_a_502() {
    let blank = Upstream::fixed(Reply::raw(200, " \r\n\t\n")).await;
    let trailing = Upstream::fixed(Reply::raw(200, "{\"a\": 1}\n\n")).await;
    let stray = Upstream::fixed(Reply::raw(200, "\n.\n")).await;
    let dir = Dir::new();
    simple(&dir, "blank", &format!("http://{}/", blank.host()), "");
    simple(
        &dir,
        "trailing",
        &format!("http://{}/", trailing.host()),
        "",
    );
    simple(&dir, "stray", &format!("http://{}/", stray.host()), "");
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("blank", json!({})).await;
    assert_eq!(
        (status.as_u16(), &answer["response"]),
        (200, &json!(null)),
        "{answer}"
    );
    let (status, answer) = hookside.invoke("trailing", json!({})).await;
    assert_eq!(
        (status.as_u16(), &answer["response"]),
        (200, &json!({"a": 1})),
        "{answer}"
    );
    assert_error(
        &hookside.invoke("stray", json!({})).await,
        502,
        "upstream_invalid_response",
    );
}

#[tokio::test]
async fn the_timeout_covers_a_body_that_drips() {
    // Headers come at once, the body never finishes: only a whole-exchange timeout ends it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"a\":")
                    .await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        }
    });
    let dir = Dir::new();
    simple(
        &dir,
        "drip",
        &format!("http://{addr}/"),
        "timeout = \"400ms\"\n",
    );
    let hookside = Hookside::start(dir.path()).await;
    assert_error(
        &hookside.invoke("drip", json!({})).await,
        504,
        "upstream_timeout",
    );
}

#[tokio::test]
async fn the_default_timeout_is_five_seconds() {
    let dir = Dir::new();
    simple(&dir, "w", "http://127.0.0.1:9/", "");
    simple(&dir, "t", "http://127.0.0.1:9/", "timeout = \"1500ms\"\n");
    let state = State::new(dir.path().to_path_buf(), Settings::default());
    hookside::app::reload(&state, "test").await;
    let snapshot = state.registry.snapshot();
    let webhooks = &snapshot.loaded.as_ref().expect("loaded").webhooks;
    assert_eq!(webhooks["w"].webhook.timeout, Duration::from_secs(5));
    assert_eq!(webhooks["t"].webhook.timeout, Duration::from_millis(1500));
}

#[tokio::test]
async fn before_the_first_load_everything_is_not_ready() {
    let state = State::new("/nonexistent/hookside-test".into(), Settings::default());
    let hookside = Hookside::serve_state(state).await;
    assert_error(&hookside.invoke("w", json!({})).await, 503, "not_ready");
    assert_eq!(hookside.admin_get("/readyz").await.0, 503);
    assert_eq!(hookside.admin_get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_destination_in_a_denied_network_is_refused_after_resolving() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    // `localhost` resolves to loopback, which this test denies.
    simple(
        &dir,
        "byname",
        &format!("http://localhost:{}/", upstream.addr.port()),
        "",
    );
    simple(
        &dir,
        "literal",
        &format!("http://127.0.0.1:{}/", upstream.addr.port()),
        "",
    );
    simple(
        &dir,
        "metadata",
        "http://169.254.169.254/latest/meta-data",
        "",
    );
    // The unspecified addresses reach this host's loopback: literal, mapped, and by name
    // (`0` resolves to 0.0.0.0).
    let port = upstream.addr.port();
    for (name, host) in [
        ("zero", "0.0.0.0".to_owned()),
        ("zero-name", "0".to_owned()),
        ("zero-mapped", "[::ffff:0.0.0.0]".to_owned()),
        ("zero-v6", "[::]".to_owned()),
    ] {
        simple(&dir, name, &format!("http://{host}:{port}/"), "");
    }
    let settings = Settings {
        deny_networks: vec![
            "127.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ],
        ..Settings::default()
    };
    let hookside = Hookside::with_settings(dir.path(), settings).await;
    assert_error(
        &hookside.invoke("byname", json!({})).await,
        502,
        "destination_denied",
    );
    assert_error(
        &hookside.invoke("literal", json!({})).await,
        502,
        "destination_denied",
    );
    for name in ["zero", "zero-name", "zero-mapped", "zero-v6"] {
        let answer = hookside.invoke(name, json!({})).await;
        assert_error(&answer, 502, "destination_denied");
    }
    assert!(upstream.seen().is_empty());
    // The default policy (link-local, metadata) applies without a config file.
    let defaults = Hookside::start(dir.path()).await;
    assert_error(
        &defaults.invoke("metadata", json!({})).await,
        502,
        "destination_denied",
    );
}

#[tokio::test]
async fn routes_match_exactly() {
    let dir = Dir::new();
    let hookside = Hookside::start(dir.path()).await;
    assert_error(&hookside.get("/v1/webhooksXYZ").await, 404, "not_found");
    assert_error(&hookside.get("/v2/webhooks").await, 404, "not_found");
    assert_eq!(hookside.get("/v1/webhooks").await.0, 200);
    assert_eq!(hookside.get("/v1/webhooks/").await.0, 200);
}
