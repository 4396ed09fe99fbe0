//! The adversarial suite: hostile conversation values, hostile upstreams, hostile clients
//! and shutdowns, against the real binary. One canary value is every secret (a bearer
//! token, a header secret from a file, a basic-auth password, a caller token); after every
//! case the canary must appear in no response, log line, metric, listing or test run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Client, Dir, Process, Reply, Upstream, get, parse, send};

const CANARY: &str = "canary-5ecret-c4n4ry";
const OTHER_TOKEN: &str = "globex-caller-token";

/// A directory with a config that uses the canary as every secret.
fn setup(dir: &Dir, extra_limits: &str) -> Vec<String> {
    dir.file("secrets/canary", &format!("{CANARY}\n"));
    let config = dir.file(
        "hookside.toml",
        &format!(
            "[limits]\n{extra_limits}\n[companies.acme]\ncaller_tokens = [\"${{env:CANARY_ENV}}\"]\n[companies.globex]\ncaller_tokens = [\"{OTHER_TOKEN}\"]\n"
        ),
    );
    vec!["--config".into(), config.to_str().expect("utf-8").into()]
}

/// A webhook of company acme whose every credential is the canary.
fn webhook(upstream: &str, extra: &str) -> String {
    format!(
        "company = \"acme\"\nmethod = \"POST\"\nurl = \"{upstream}\"\n[auth]\ntype = \"bearer\"\ntoken = \"${{env:CANARY_ENV}}\"\n[headers]\nX-Key = \"${{file:../secrets/canary}}\"\n{extra}"
    )
}

fn start(dir: &Dir, args: &[String]) -> Process {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::serve(
        &dir.path().join("webhooks.d"),
        &args,
        &[("CANARY_ENV", CANARY)],
    )
}

async fn call(process: &Process, name: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {CANARY}");
    let (status, _, body) = send(
        http::Method::POST,
        &format!("http://{}/v1/webhooks/{name}", process.bot),
        &[("authorization", &auth)],
        body.to_string().into_bytes(),
    )
    .await;
    (status.as_u16(), parse(&body))
}

/// The canary is nowhere: not in these answers, the log, the metrics, `/-/config`, the
/// listings or a test run.
async fn assert_no_canary(process: &Process, answers: &[&Value]) {
    for answer in answers {
        assert!(
            !answer.to_string().contains(CANARY),
            "an answer holds the canary: {answer}"
        );
    }
    let auth = format!("Bearer {CANARY}");
    let mut seen = Vec::new();
    for (base, path) in [
        (process.admin, "/metrics"),
        (process.admin, "/-/config"),
        (process.bot, "/v1/webhooks"),
    ] {
        let (_, _, body) = send(
            http::Method::GET,
            &format!("http://{base}{path}"),
            &[("authorization", &auth)],
            Vec::new(),
        )
        .await;
        seen.push(String::from_utf8_lossy(&body).into_owned());
    }
    let listing = parse(seen[2].as_bytes());
    for entry in listing["webhooks"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().unwrap_or_default();
        for path in [
            format!("/v1/webhooks/{name}"),
            format!("/v1/webhooks/{name}/test?dry_run=true"),
        ] {
            let method = if path.ends_with("dry_run=true") {
                http::Method::POST
            } else {
                http::Method::GET
            };
            let (_, _, body) = send(
                method,
                &format!("http://{}{path}", process.bot),
                &[("authorization", &auth)],
                b"{}".to_vec(),
            )
            .await;
            seen.push(String::from_utf8_lossy(&body).into_owned());
        }
    }
    seen.push(process.log());
    for text in seen {
        assert!(!text.contains(CANARY), "the canary leaked: {text}");
    }
}

#[tokio::test]
async fn hostile_values_never_move_the_request_or_inject_anything() {
    let upstream = Upstream::start(|seen| {
        Reply::json(
            200,
            json!({"headers": format!("{:?}", seen.headers), "path": seen.target}),
        )
    })
    .await;
    let dir = Dir::new();
    let args = setup(&dir, "");
    dir.file(
        "webhooks.d/w.toml",
        &webhook(
            &format!("http://{}/orders/{{{{ extractedData.id }}}}", upstream.host()),
            "[query]\nq = \"{{ reply }}\"\n[body]\nreply = \"{{ reply }}\"\nid = \"{{ extractedData.id }}\"\n[variables]\nechoed = \"response.headers\"\n",
        ),
    );
    let process = start(&dir, &args);
    let mut answers = Vec::new();
    let hostile = [
        ("a/b/admin", "x\", \"admin\": true, \"y\": \""),
        ("a/b?c=d#e", "a&admin=1&q=2"),
        ("@evil.example:80", "%26admin%3D1"),
        ("http://evil.example/", "{{ 7*7 }}{% raw %}"),
        ("...", "${env:CANARY_ENV}"),
        ("%2e%2e%2f", "\u{202e}\u{0}"),
    ];
    for (id, reply) in hostile {
        let (status, answer) = call(
            &process,
            "w",
            json!({"extractedData": {"id": id}, "reply": reply}),
        )
        .await;
        assert_eq!(status, 200, "{id}: {answer}");
        answers.push(answer);
    }
    // A whole segment of dots would be `..` to a server that normalises `%2E`: refused.
    for id in ["..", ".", "../../admin", "x/..\\.."] {
        let (status, answer) = call(
            &process,
            "w",
            json!({"extractedData": {"id": id}, "reply": "r"}),
        )
        .await;
        assert_eq!(status, 422, "{id}: {answer}");
        assert_eq!(answer["error"]["kind"], "render_error", "{answer}");
        answers.push(answer);
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), hostile.len());
    for (request, (id, reply)) in seen.iter().zip(hostile) {
        // One path segment below /orders/, decoding to exactly the value.
        let path = request.target.split('?').next().expect("path");
        let segment = path.strip_prefix("/orders/").expect("prefix");
        assert!(!segment.contains('/'), "{path}");
        let decoded = percent_decode(segment);
        assert_eq!(decoded, id);
        // Exactly one query parameter, decoding to exactly the value.
        let query = request
            .target
            .split_once('?')
            .map(|(_, q)| q)
            .expect("query");
        assert_eq!(query.matches('&').count(), 0, "{query}");
        let value = query.strip_prefix("q=").expect("q=");
        assert_eq!(percent_decode(value), reply);
        // Exactly the body's two keys, holding exactly the values.
        let body = request.json();
        assert_eq!(body, json!({"reply": reply, "id": id}));
        assert_eq!(request.header("host"), Some(upstream.host().as_str()));
    }
    let refs: Vec<&Value> = answers.iter().collect();
    assert_no_canary(&process, &refs).await;
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[tokio::test]
async fn internal_and_metadata_addresses_in_every_spelling_are_denied() {
    let dir = Dir::new();
    let args = setup(&dir, "");
    let spellings = [
        "169.254.169.254",
        "2852039166",
        "0xa9fea9fe",
        "0251.0376.0251.0376",
        "0xa9.0xfe.0xa9.0xfe",
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]",
        "[fe80::1]",
        "[fd00:ec2::254]",
    ];
    for (i, host) in spellings.iter().enumerate() {
        dir.file(
            &format!("webhooks.d/m{i}.toml"),
            &webhook(&format!("http://{host}/latest/meta-data/"), ""),
        );
    }
    let process = start(&dir, &args);
    let mut answers = Vec::new();
    for (i, host) in spellings.iter().enumerate() {
        let started = Instant::now();
        let (status, answer) = call(&process, &format!("m{i}"), json!({})).await;
        assert_eq!(
            (status, answer["error"]["kind"].as_str()),
            (502, Some("destination_denied")),
            "{host}: {answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{host} was refused at once"
        );
        answers.push(answer);
    }
    let refs: Vec<&Value> = answers.iter().collect();
    assert_no_canary(&process, &refs).await;
}

#[tokio::test]
async fn hostile_upstreams_redirects_echoes_and_huge_bodies() {
    let redirect = Upstream::start(|_| {
        let mut reply = Reply::json(302, json!({"to": "metadata"}));
        reply.headers.push((
            "location".into(),
            "http://169.254.169.254/latest/meta-data/".into(),
        ));
        reply
    })
    .await;
    let echo = Upstream::start(|seen| {
        let headers: Vec<String> = seen
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
            .collect();
        Reply::raw(
            500,
            format!("<html><pre>{}</pre></html>", headers.join("\n")),
        )
    })
    .await;
    let json_echo = Upstream::start(|seen| {
        Reply::json(
            401,
            json!({"you_sent": seen.header("authorization"), "key": seen.header("x-key")}),
        )
    })
    .await;
    // A chunked body (no Content-Length) over the 10 MiB limit, from a plain thread.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let chunked = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                // Read the request head first: closing on unread bytes would reset the stream.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, " ".repeat(1 << 20));
                for _ in 0..12 {
                    if stream.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
                let _ = stream.write_all(b"0\r\n\r\n");
            });
        }
    });
    let dir = Dir::new();
    let args = setup(&dir, "");
    dir.file(
        "webhooks.d/redirect.toml",
        &webhook(&format!("http://{}/", redirect.host()), ""),
    );
    dir.file(
        "webhooks.d/echo.toml",
        &webhook(&format!("http://{}/", echo.host()), ""),
    );
    dir.file(
        "webhooks.d/jsonecho.toml",
        &webhook(
            &format!("http://{}/", json_echo.host()),
            "[variables]\nsent = \"response.you_sent\"\n",
        ),
    );
    dir.file(
        "webhooks.d/chunked.toml",
        &webhook(&format!("http://{chunked}/"), ""),
    );
    let process = start(&dir, &args);

    let (status, redirected) = call(&process, "redirect", json!({})).await;
    assert_eq!(
        (
            status,
            redirected["status"].as_u64(),
            redirected["ok"].as_bool()
        ),
        (200, Some(302), Some(false))
    );
    assert_eq!(redirect.seen().len(), 1, "the redirect is not followed");

    let (status, echoed) = call(&process, "echo", json!({})).await;
    assert_eq!(
        (status, echoed["error"]["kind"].as_str()),
        (502, Some("upstream_invalid_response")),
        "{echoed}"
    );

    let (status, json_echoed) = call(&process, "jsonecho", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(json_echoed["variables"]["sent"], "Bearer ***");
    assert_eq!(json_echoed["response"]["key"], "***");

    let (status, huge) = call(&process, "chunked", json!({})).await;
    assert_eq!(
        (status, huge["error"]["kind"].as_str()),
        (502, Some("upstream_invalid_response")),
        "{huge}"
    );

    // The Run Webhook of the echoing upstream shows the page as text, scrubbed.
    let auth = format!("Bearer {CANARY}");
    let (_, _, body) = send(
        http::Method::POST,
        &format!("http://{}/v1/webhooks/echo/test", process.bot),
        &[("authorization", &auth)],
        b"{}".to_vec(),
    )
    .await;
    let test_run = parse(&body);
    assert!(
        test_run["response"]
            .as_str()
            .expect("text")
            .contains("x-key: ***"),
        "{test_run}"
    );
    assert_no_canary(
        &process,
        &[&redirected, &echoed, &json_echoed, &huge, &test_run],
    )
    .await;
}

#[tokio::test]
async fn header_injection_and_template_abuse_fail_fast_and_send_nothing() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    let args = setup(&dir, "");
    dir.file(
        "webhooks.d/header.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/\"\n[auth]\ntype = \"bearer\"\ntoken = \"${{env:CANARY_ENV}}\"\n[headers]\nX-Reply = \"{{{{ reply }}}}\"\n",
            upstream.host()
        ),
    );
    dir.file(
        "webhooks.d/loops.toml",
        &webhook(
            &format!("http://{}/", upstream.host()),
            "body = '''{% for a in extractedData.items %}{% for b in extractedData.items %}{{ a }}{{ b }}{% endfor %}{% endfor %}'''\n",
        ),
    );
    let process = start(&dir, &args);
    let mut answers = Vec::new();
    for value in [
        "a\r\nX-Injected: yes",
        "a\nb",
        "a\rb",
        "a\u{0}b",
        "a\u{7f}b",
    ] {
        let (status, answer) = call(&process, "header", json!({"reply": value})).await;
        assert_eq!(
            (status, answer["error"]["kind"].as_str()),
            (422, Some("render_error")),
            "{value:?}"
        );
        answers.push(answer);
    }
    let items: Vec<u32> = (0..3000).collect();
    let started = Instant::now();
    let (status, answer) = call(
        &process,
        "loops",
        json!({"extractedData": {"items": items}}),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["kind"].as_str()),
        (422, Some("render_error")),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "fuel stops the template quickly"
    );
    answers.push(answer);
    assert!(upstream.seen().is_empty(), "nothing was sent");
    let refs: Vec<&Value> = answers.iter().collect();
    assert_no_canary(&process, &refs).await;
}

#[tokio::test]
async fn a_toml_error_next_to_a_secret_does_not_print_it() {
    let dir = Dir::new();
    let args = setup(&dir, "");
    dir.file(
        "webhooks.d/broken.toml",
        &format!("company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\n[auth]\ntype = \"basic\"\nusername = \"u\"\npassword = \"{CANARY}\" oops\n"),
    );
    dir.file(
        "webhooks.d/typed.toml",
        &format!("company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\n[auth]\ntype = \"basic\"\nusername = \"u\"\npassword = [\"{CANARY}\"]\n"),
    );
    let process = start(&dir, &args);
    let (_, _, config) = get(&format!("http://{}/-/config", process.admin)).await;
    let config = parse(&config);
    assert_eq!(config["files"].as_array().expect("files").len(), 2);
    assert!(
        config["files"]
            .as_array()
            .expect("files")
            .iter()
            .all(|f| f["state"] == "error"),
        "{config}"
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_hookside"))
        .args(["check", "--dir"])
        .arg(dir.path().join("webhooks.d"))
        .output()
        .expect("check");
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(out.contains("broken.toml:6:"), "{out}");
    assert!(!out.contains(CANARY), "{out}");
    assert_no_canary(&process, &[&config]).await;
}

#[tokio::test]
async fn callers_need_their_companys_token() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    let args = setup(&dir, "");
    dir.file(
        "webhooks.d/acme.toml",
        &webhook(&format!("http://{}/", upstream.host()), ""),
    );
    dir.file(
        "webhooks.d/globex.toml",
        &format!(
            "company = \"globex\"\nurl = \"http://{}/\"\n",
            upstream.host()
        ),
    );
    dir.file(
        "webhooks.d/open.toml",
        &format!(
            "company = \"initech\"\nurl = \"http://{}/\"\n",
            upstream.host()
        ),
    );
    let process = start(&dir, &args);
    let url = |name: &str| format!("http://{}/v1/webhooks/{name}", process.bot);
    let post = |name: String, token: Option<&'static str>| async move {
        let header = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("authorization", h)])
            .unwrap_or_default();
        let (status, _, body) = send(http::Method::POST, &name, &headers, b"{}".to_vec()).await;
        (status.as_u16(), parse(&body))
    };
    let (status, missing) = post(url("acme"), None).await;
    assert_eq!(
        (status, missing["error"]["kind"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, wrong) = post(url("acme"), Some(OTHER_TOKEN)).await;
    assert_eq!(
        (status, wrong["error"]["kind"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = post(url("acme"), Some(CANARY)).await;
    assert_eq!(status, 200);
    let (status, _) = post(url("globex"), Some(OTHER_TOKEN)).await;
    assert_eq!(status, 200);
    let (status, _) = post(url("open"), None).await;
    assert_eq!(status, 200, "a company without tokens is open");
    let listing = |token: &'static str| async move {
        let header = format!("Bearer {token}");
        let (_, _, body) = send(
            http::Method::GET,
            &format!("http://{}/v1/webhooks", process.bot),
            &[("authorization", &header)],
            Vec::new(),
        )
        .await;
        let names: Vec<String> = parse(&body)["webhooks"]
            .as_array()
            .expect("list")
            .iter()
            .map(|w| w["name"].as_str().unwrap_or("").to_owned())
            .collect();
        names
    };
    assert_eq!(
        listing(OTHER_TOKEN).await,
        ["globex"],
        "a caller with a token sees only its own company's webhooks"
    );
    let (status, _) = post(url("open"), Some(OTHER_TOKEN)).await;
    assert_eq!(
        status, 403,
        "nor calls another company's, even one without tokens"
    );
    let (status, _) = post(url("open"), Some("no-such-token")).await;
    assert_eq!(
        status, 200,
        "an unknown token is no company's: the open webhook answers"
    );
    let (status, _, _) = send(
        http::Method::GET,
        &url("acme"),
        &[("authorization", "Bearer globex-caller-token")],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 403);
    assert_no_canary(&process, &[&missing, &wrong]).await;
}

#[tokio::test]
async fn slow_and_huge_clients_are_cut_off_without_buffering() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    let args = setup(
        &dir,
        "header_read_timeout = \"1s\"\nrequest_body_timeout = \"1s\"\n",
    );
    dir.file(
        "webhooks.d/w.toml",
        &webhook(&format!("http://{}/", upstream.host()), ""),
    );
    let process = start(&dir, &args);
    let bot = process.bot;

    // Slowloris: headers that never finish are cut off; others are served meanwhile.
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(bot).expect("connect");
        stream
            .write_all(b"POST /v1/webhooks/w HTTP/1.1\r\nhost: x\r\n")
            .expect("write");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let started = Instant::now();
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer).unwrap_or(0);
        (
            started.elapsed(),
            String::from_utf8_lossy(&buffer[..read]).into_owned(),
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = call(&process, "w", json!({})).await;
    assert_eq!(status, 200, "served while a slow client waits");
    let (waited, answer) = tokio::task::spawn_blocking(move || slow.join().expect("thread"))
        .await
        .expect("join");
    assert!(
        waited < Duration::from_secs(4),
        "the slow client was cut off after {waited:?}: {answer}"
    );

    // An idle keep-alive connection is closed after the same timeout.
    let idle = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(bot).expect("connect");
        let request = format!(
            "POST /v1/webhooks/w HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CANARY}\r\ncontent-length: 2\r\n\r\n{{}}"
        );
        stream.write_all(request.as_bytes()).expect("write");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    });
    let (waited, answer) = tokio::task::spawn_blocking(move || idle.join().expect("thread"))
        .await
        .expect("join");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited < Duration::from_secs(4),
        "an idle keep-alive connection was closed after {waited:?}"
    );

    // A body that drips: 408 after the body timeout.
    let drip = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(bot).expect("connect");
        let head = format!(
            "POST /v1/webhooks/w HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CANARY}\r\ncontent-length: 100\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).expect("write");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    });
    let answer = tokio::task::spawn_blocking(move || drip.join().expect("thread"))
        .await
        .expect("join");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // 100 MB, chunked: refused at the limit, long before it is all sent, and not buffered.
    let rss_before = rss_kib(process.child.id());
    let huge = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(bot).expect("connect");
        let head = format!(
            "POST /v1/webhooks/w HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CANARY}\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).expect("write");
        let chunk = format!("{:x}\r\n{}\r\n", 1 << 16, "x".repeat(1 << 16));
        let mut sent = 0usize;
        for _ in 0..1600 {
            if stream.write_all(chunk.as_bytes()).is_err() {
                break;
            }
            sent += 1 << 16;
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buffer = [0u8; 256];
        let read = stream.read(&mut buffer).unwrap_or(0);
        (sent, String::from_utf8_lossy(&buffer[..read]).into_owned())
    });
    let (sent, answer) = tokio::task::spawn_blocking(move || huge.join().expect("thread"))
        .await
        .expect("join");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        sent < 100 << 20,
        "the server stopped reading before 100 MB arrived ({sent} bytes sent)"
    );
    let grown = rss_kib(process.child.id()).saturating_sub(rss_before);
    assert!(grown < 20 * 1024, "resident memory grew by {grown} KiB");
    assert_no_canary(&process, &[]).await;
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The process's exit code, once it exits within `within` (else the test fails with `why`).
async fn exit_code(process: &mut Process, within: Duration, why: &str) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(exit) = process.child.try_wait().expect("wait") {
            return exit.code();
        }
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// hookside serving one webhook, `name`, that calls `upstream` (with `extra` fields).
fn serving_one(dir: &Dir, name: &str, upstream: &Upstream, extra: &str) -> Process {
    let args = setup(dir, "");
    dir.file(
        &format!("webhooks.d/{name}.toml"),
        &webhook(&format!("http://{}/", upstream.host()), extra),
    );
    start(dir, &args)
}

fn signal(process: &Process, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &process.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_calls_finish_and_exits_zero() {
    let upstream = Upstream::fixed(
        Reply::json(200, json!({"done": true})).delayed(Duration::from_millis(1500)),
    )
    .await;
    let dir = Dir::new();
    let mut process = serving_one(&dir, "slow", &upstream, "");
    let bot = process.bot;
    let in_flight = tokio::spawn(async move {
        let auth = format!("Bearer {CANARY}");
        let (status, _, body) = send(
            http::Method::POST,
            &format!("http://{bot}/v1/webhooks/slow"),
            &[("authorization", &auth)],
            b"{}".to_vec(),
        )
        .await;
        (status, parse(&body))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&process, "TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, _) = get(&format!("http://{}/readyz", process.admin)).await;
    assert_eq!(status, 503, "not ready while draining");
    assert!(
        TcpStream::connect(bot).is_err(),
        "no new connections once the drain started"
    );
    let (status, answer) = in_flight.await.expect("call");
    assert_eq!(status, 200, "the in-flight call finished: {answer}");
    assert_eq!(answer["response"]["done"], true);
    let code = exit_code(
        &mut process,
        Duration::from_secs(10),
        "exited within the grace period",
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(!process.log().contains(CANARY));
}

// A call hyper serves (a chunked body) whose caller leaves during the drain still runs to
// its end before the process exits, and is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_a_call_whose_caller_went_away() {
    let upstream =
        Upstream::fixed(Reply::raw(200, "not json").delayed(Duration::from_millis(1500))).await;
    let dir = Dir::new();
    let mut process = serving_one(&dir, "slow", &upstream, "");
    let started = Instant::now();
    let mut client = TcpStream::connect(process.bot).expect("connect");
    client
        .write_all(
            format!(
                "POST /v1/webhooks/slow HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CANARY}\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&process, "TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);
    let code = exit_code(
        &mut process,
        Duration::from_secs(10),
        "exited within the grace period",
    )
    .await;
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the exit waited for the call: {:?}",
        started.elapsed()
    );
    let log = process.log();
    assert!(
        log.contains("invocation failed") && log.contains("upstream_invalid_response"),
        "{log}"
    );
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let upstream =
        Upstream::fixed(Reply::json(200, json!({})).delayed(Duration::from_secs(20))).await;
    let dir = Dir::new();
    let mut process = serving_one(&dir, "stuck", &upstream, "timeout = \"60s\"\n");
    let bot = process.bot;
    let _stuck = tokio::spawn(async move {
        let auth = format!("Bearer {CANARY}");
        send(
            http::Method::POST,
            &format!("http://{bot}/v1/webhooks/stuck"),
            &[("authorization", &auth)],
            b"{}".to_vec(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&process, "TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        process.child.try_wait().expect("wait").is_none(),
        "still draining the stuck call"
    );
    signal(&process, "INT");
    let code = exit_code(
        &mut process,
        Duration::from_secs(3),
        "the second signal ends it at once",
    )
    .await;
    assert_eq!(code, Some(1));
}

#[tokio::test]
async fn proxy_variables_are_ignored() {
    let upstream = Upstream::fixed(Reply::json(200, json!({"direct": true}))).await;
    let dir = Dir::new();
    let args = setup(&dir, "");
    dir.file(
        "webhooks.d/w.toml",
        &webhook(&format!("http://{}/", upstream.host()), ""),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let process = Process::serve(
        &dir.path().join("webhooks.d"),
        &args,
        &[
            ("CANARY_ENV", CANARY),
            ("HTTP_PROXY", "http://127.0.0.1:9"),
            ("http_proxy", "http://127.0.0.1:9"),
            ("HTTPS_PROXY", "http://127.0.0.1:9"),
            ("ALL_PROXY", "http://127.0.0.1:9"),
            ("NO_PROXY", ""),
        ],
    );
    let (status, answer) = call(&process, "w", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["direct"], true);
    assert_eq!(
        upstream.seen().len(),
        1,
        "the request went straight to the upstream"
    );
}

#[tokio::test]
async fn a_bot_slow_to_read_an_answer_has_the_whole_header_timeout_for_its_next_call() {
    // An answer far larger than the socket buffers: hookside's write lasts until the bot
    // reads. The next head's timeout starts when the write is done, not before it.
    let pad = "x".repeat(9 * 1024 * 1024);
    let upstream = Upstream::fixed(Reply::json(200, json!({ "pad": pad }))).await;
    let dir = Dir::new();
    let args = setup(&dir, "header_read_timeout = \"1s\"\n");
    dir.file(
        "webhooks.d/w.toml",
        &webhook(&format!("http://{}/", upstream.host()), ""),
    );
    let process = start(&dir, &args);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let mut bot = Client::over(socket.connect(process.bot).await.expect("connect"));
    let request = format!(
        "POST /v1/webhooks/w HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CANARY}\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    bot.send(&request).await;
    // The bot starts reading only after twice the header timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = bot.answer().await.expect("the first answer");
    assert_eq!(first.status, 200, "{:?}", first.headers);
    assert_eq!(
        first.body["response"]["pad"].as_str().map(str::len),
        Some(9 * 1024 * 1024),
        "the whole answer"
    );
    // At once, the next call on the same connection.
    bot.send(&request).await;
    let second = bot
        .answer()
        .await
        .expect("the second answer, not a closed connection");
    assert_eq!(second.status, 200, "{:?}", second.headers);
}

#[tokio::test]
async fn a_rotated_caller_token_takes_effect_at_the_next_reload() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    dir.file("secrets/bot-token", "token-one\n");
    let config = dir.file(
        "hookside.toml",
        "[companies.acme]\ncaller_tokens = [\"${file:secrets/bot-token}\"]\n",
    );
    dir.file(
        "webhooks.d/w.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/\"\n",
            upstream.host()
        ),
    );
    let process = Process::serve(
        &dir.path().join("webhooks.d"),
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let status_with = |token: &'static str| {
        let url = format!("http://{}/v1/webhooks/w", process.bot);
        async move {
            let auth = format!("Bearer {token}");
            let headers = [("authorization", auth.as_str())];
            send(http::Method::POST, &url, &headers, b"{}".to_vec())
                .await
                .0
                .as_u16()
        }
    };
    let reload = || async {
        let url = format!("http://{}/-/reload", process.admin);
        let (status, _, _) = send(http::Method::POST, &url, &[], Vec::new()).await;
        assert_eq!(status, 200);
    };
    assert_eq!(status_with("token-one").await, 200);
    // Rotated in place, as a Kubernetes Secret is: the old token stops, the new one works.
    dir.file("secrets/bot-token", "token-two\n");
    reload().await;
    assert_eq!(status_with("token-one").await, 403);
    assert_eq!(status_with("token-two").await, 200);
    // A config file that fails keeps the tokens that serve.
    dir.file("hookside.toml", "[companies.acme\n");
    reload().await;
    assert_eq!(status_with("token-two").await, 200);
    assert_eq!(status_with("token-one").await, 403);
    let logged = crate::util::eventually(Duration::from_secs(5), || async {
        let log = process.stderr.lock().expect("lock").clone();
        log.contains("caller tokens that serve are kept")
    })
    .await;
    assert!(logged, "{}", process.stderr.lock().expect("lock"));
    // That reload failed, for dashboards and alerts as for the log; a good file mends it.
    let last_reload = || async {
        let url = format!("http://{}/-/config", process.admin);
        let (_, _, body) = get(&url).await;
        let config: Value = serde_json::from_slice(&body).expect("JSON");
        let url = format!("http://{}/metrics", process.admin);
        let (_, _, metrics) = get(&url).await;
        let metrics = String::from_utf8(metrics.to_vec()).expect("utf-8");
        let successful = metrics
            .lines()
            .find_map(|l| l.strip_prefix("hookside_config_last_reload_successful "))
            .map(str::to_owned);
        (config["last_reload"].clone(), successful)
    };
    let (outcome, successful) = last_reload().await;
    assert_eq!(outcome["result"], "failure", "{outcome}");
    assert!(
        outcome["error"]
            .as_str()
            .is_some_and(|e| e.contains("config file")),
        "{outcome}"
    );
    assert_eq!(successful.as_deref(), Some("0"));
    dir.file(
        "hookside.toml",
        "[companies.acme]\ncaller_tokens = [\"${file:secrets/bot-token}\"]\n",
    );
    reload().await;
    let (outcome, successful) = last_reload().await;
    assert_eq!(outcome["result"], "success", "{outcome}");
    assert_eq!(successful.as_deref(), Some("1"));
}

// Company names are compared exactly: `company = "acme"` under `[companies.ACME]` is open to
// any caller. It still serves as documented, and the log says why it is open.
#[tokio::test]
async fn a_company_named_in_another_case_than_the_config_file_is_warned_of() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    let config = dir.file(
        "hookside.toml",
        "[companies.ACME]\ncaller_tokens = [\"token-one\"]\n",
    );
    for (name, company) in [("open", "acme"), ("closed", "ACME")] {
        dir.file(
            &format!("webhooks.d/{name}.toml"),
            &format!(
                "company = \"{company}\"\nurl = \"http://{}/\"\n",
                upstream.host()
            ),
        );
    }
    let process = Process::serve(
        &dir.path().join("webhooks.d"),
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let status = |name: &str| {
        let url = format!("http://{}/v1/webhooks/{name}", process.bot);
        async move { send(http::Method::POST, &url, &[], b"{}".to_vec()).await.0 }
    };
    assert_eq!(status("open").await, 200);
    assert_eq!(status("closed").await, 401);
    // Run Webhook lists it among its warnings.
    let url = format!("http://{}/v1/webhooks/open/test?dry_run=true", process.bot);
    let (_, _, body) = send(http::Method::POST, &url, &[], b"{}".to_vec()).await;
    let run: Value = serde_json::from_slice(&body).expect("JSON");
    assert!(
        run["warnings"].to_string().contains("[companies.ACME]"),
        "{run}"
    );
    crate::util::eventually(Duration::from_secs(5), || async {
        process.log().contains("differs only in case")
    })
    .await;
    let log = process.log();
    let line = log
        .lines()
        .find(|line| line.contains("differs only in case"))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(line.contains("open") && line.contains("ACME"), "{line}");
    assert!(
        !log.lines()
            .any(|l| l.contains("differs only in case") && l.contains("webhook=closed")),
        "{log}"
    );
    // Once, not at every reload; again when the file changes and it is still open.
    let warnings = || process.log().matches("differs only in case").count();
    let reload = || async {
        let url = format!("http://{}/-/reload", process.admin);
        assert_eq!(send(http::Method::POST, &url, &[], Vec::new()).await.0, 200);
    };
    reload().await;
    reload().await;
    assert_eq!(warnings(), 1, "{}", process.log());
    dir.file(
        "webhooks.d/open.toml",
        &format!(
            "company = \"Acme\"\nurl = \"http://{}/\"\n",
            upstream.host()
        ),
    );
    reload().await;
    let again = crate::util::eventually(Duration::from_secs(5), || async { warnings() == 2 }).await;
    assert!(again, "{}", process.log());
    assert!(process.log().contains("company=Acme"), "{}", process.log());
}

#[tokio::test]
async fn a_descent_over_an_answer_nested_to_repeat_itself_stays_small() {
    // 100 objects nested in each other around 200 KiB: `$..id` would copy 20 MiB, and
    // an upstream could shape its 10 MiB into gigabytes that way.
    let mut deep = json!("x".repeat(200 * 1024));
    for _ in 0..100 {
        deep = json!({ "id": deep });
    }
    let upstream = Upstream::fixed(Reply::json(200, deep)).await;
    let dir = Dir::new();
    let process = serving_one(
        &dir,
        "ids",
        &upstream,
        "[variables]\nids = \"$..id\"\nfirst = \"$.id.id.id\"\n",
    );
    let (status, _, body) = send(
        http::Method::POST,
        &format!("http://{}/v1/webhooks/ids", process.bot),
        &[("authorization", &format!("Bearer {CANARY}"))],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    // The response itself once, the variable that fits, and no 20 MiB.
    assert!(body.len() < 1024 * 1024, "{} bytes", body.len());
    let answer = parse(&body);
    assert_eq!(answer["variables"]["ids"], Value::Null);
    assert_eq!(answer["missing"], json!(["ids"]));
    assert!(answer["variables"]["first"].is_object());
}

#[tokio::test]
async fn a_text_answer_quoting_a_secret_json_escaped_shows_it_scrubbed() {
    let secret = r#"hdr"CANARY\x<>&"#;
    let escaped = serde_json::to_string(secret).expect("JSON");
    let upstream = Upstream::start(|seen| {
        let sent = seen.header("x-api-key").unwrap_or_default();
        let text = format!("echo: {}", serde_json::to_string(sent).expect("JSON"));
        Reply::raw(500, text)
    })
    .await;
    let dir = Dir::new();
    dir.file("key", secret);
    dir.file(
        "echo.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/\"\n[headers]\nX-Api-Key = \"${{file:key}}\"\n",
            upstream.host()
        ),
    );
    let process = Process::serve(dir.path(), &[], &[]);
    let (status, _, body) = send(
        http::Method::POST,
        &format!("http://{}/v1/webhooks/echo/test", process.bot),
        &[],
        b"{}".to_vec(),
    )
    .await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""response":"echo: \"***\"""#), "{text}");
    assert!(!text.contains("CANARY"), "{text}");
    assert!(!text.contains(&escaped[1..escaped.len() - 1]), "{text}");
    // The upstream did get the secret as it is.
    assert_eq!(upstream.only().header("x-api-key"), Some(secret));
}
