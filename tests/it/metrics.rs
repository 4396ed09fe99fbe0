//! Prometheus metrics: exact counts after known invocations, bounded series, reloads.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::util::{Dir, Hookside, Process, Reply, Upstream, get, send};

/// Every sample of `/metrics`: (name, labels) -> value.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

async fn scrape(hookside: &Hookside) -> (String, Samples) {
    let (status, headers, body) = get(&format!("http://{}/metrics", hookside.admin)).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    let samples = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split("\",")
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, value) = pair.split_once('=').expect("label");
                            (key.to_owned(), value.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            (name, labels, value.parse::<f64>().expect("number"))
        })
        .collect();
    (text, samples)
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                && l.len() == labels.len()
        })
        .map(|(_, _, v)| *v)
}

#[tokio::test]
async fn counters_histogram_and_in_flight_have_exact_values() {
    let ok = Upstream::fixed(Reply::json(200, json!({"a": 1}))).await;
    let failing = Upstream::fixed(Reply::json(503, json!({}))).await;
    let invalid = Upstream::fixed(Reply::raw(200, "nope")).await;
    let slow =
        Upstream::fixed(Reply::json(200, json!({})).delayed(Duration::from_millis(600))).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let dir = Dir::new();
    let file = |name: &str, url: String, extra: &str| {
        dir.file(
            &format!("{name}.toml"),
            &format!("company = \"acme\"\nurl = \"{url}\"\n{extra}"),
        );
    };
    file("ok", format!("http://{}/", ok.host()), "");
    file("failing", format!("http://{}/", failing.host()), "");
    file("invalid", format!("http://{}/", invalid.host()), "");
    file(
        "timeout",
        format!("http://{}/", slow.host()),
        "timeout = \"100ms\"\n",
    );
    file("slow", format!("http://{}/", slow.host()), "");
    file("down", format!("http://{closed_addr}/"), "");
    file(
        "render",
        format!("http://{}/", ok.host()),
        "[headers]\nX = \"{{ reply }}\"\n",
    );
    let hookside = Hookside::start(dir.path()).await;

    for _ in 0..3 {
        hookside.invoke("ok", json!({})).await;
    }
    hookside.invoke("failing", json!({})).await;
    hookside.invoke("invalid", json!({})).await;
    hookside.invoke("timeout", json!({})).await;
    hookside.invoke("down", json!({})).await;
    hookside.invoke("render", json!({"reply": "a\nb"})).await;
    hookside.invoke("no-such-webhook", json!({})).await;

    let (text, samples) = scrape(&hookside).await;
    let requests = |webhook: &str, outcome: &str| {
        value(
            &samples,
            "hookside_webhook_requests_total",
            &[
                ("webhook", webhook),
                ("company", "acme"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(requests("ok", "ok"), Some(3.0));
    assert_eq!(requests("ok", "http_error"), Some(0.0));
    assert_eq!(requests("failing", "http_error"), Some(1.0));
    assert_eq!(requests("invalid", "invalid_response"), Some(1.0));
    assert_eq!(requests("timeout", "timeout"), Some(1.0));
    assert_eq!(requests("down", "unreachable"), Some(1.0));
    assert_eq!(requests("render", "render_error"), Some(1.0));
    let timeouts = |webhook: &str| {
        value(
            &samples,
            "hookside_webhook_timeouts_total",
            &[("webhook", webhook), ("company", "acme")],
        )
    };
    assert_eq!(timeouts("timeout"), Some(1.0));
    assert_eq!(timeouts("ok"), Some(0.0));
    let histogram = |suffix: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("webhook", "ok"), ("company", "acme")];
        labels.extend_from_slice(extra);
        value(
            &samples,
            &format!("hookside_webhook_request_duration_seconds{suffix}"),
            &labels,
        )
    };
    assert_eq!(histogram("_count", &[]), Some(3.0));
    assert_eq!(histogram("_bucket", &[("le", "+Inf")]), Some(3.0));
    assert_eq!(histogram("_bucket", &[("le", "10")]), Some(3.0));
    assert!(histogram("_sum", &[]).expect("sum") > 0.0);
    let timeout_slow_bucket = value(
        &samples,
        "hookside_webhook_request_duration_seconds_bucket",
        &[("webhook", "timeout"), ("company", "acme"), ("le", "0.05")],
    );
    assert_eq!(
        timeout_slow_bucket,
        Some(0.0),
        "a 100 ms timeout is not under 50 ms"
    );
    for le in [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ] {
        assert!(
            histogram("_bucket", &[("le", le)]).is_some(),
            "bucket {le} missing"
        );
    }
    assert_eq!(
        value(
            &samples,
            "hookside_webhook_in_flight",
            &[("webhook", "slow"), ("company", "acme")]
        ),
        Some(0.0)
    );
    assert!(
        !text.contains("no-such-webhook"),
        "unknown names create no series"
    );
    assert_eq!(value(&samples, "hookside_config_webhooks", &[]), Some(7.0));
    assert_eq!(
        value(&samples, "hookside_config_file_errors", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "hookside_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "hookside_config_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &samples,
            "hookside_config_last_reload_success_timestamp_seconds",
            &[]
        )
        .expect("ts")
            > 1.7e9
    );
    assert!(
        text.contains("process_resident_memory_bytes"),
        "process metrics are exported"
    );

    // One slow call in flight: the gauge reads 1 while it runs, 0 after.
    let bot = hookside.bot;
    let call = tokio::spawn(async move {
        send(
            http::Method::POST,
            &format!("http://{bot}/v1/webhooks/slow"),
            &[],
            b"{}".to_vec(),
        )
        .await
    });
    let during = crate::util::eventually(Duration::from_millis(500), || async {
        let (_, samples) = scrape(&hookside).await;
        value(
            &samples,
            "hookside_webhook_in_flight",
            &[("webhook", "slow"), ("company", "acme")],
        ) == Some(1.0)
    })
    .await;
    assert!(during, "in flight during the call");
    assert_eq!(call.await.expect("call").0, 200);
    let (_, samples) = scrape(&hookside).await;
    assert_eq!(
        value(
            &samples,
            "hookside_webhook_in_flight",
            &[("webhook", "slow"), ("company", "acme")]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_deleted_webhook_loses_its_series_and_a_failed_reload_is_counted() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    dir.file(
        "gone.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/\"\n",
            upstream.host()
        ),
    );
    dir.file(
        "kept.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/\"\n",
            upstream.host()
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    hookside.invoke("gone", json!({})).await;
    let (text, _) = scrape(&hookside).await;
    assert!(text.contains("webhook=\"gone\""));
    std::fs::remove_file(dir.path().join("gone.toml")).expect("rm");
    dir.file("broken.toml", "company = ");
    let (status, _, _) = send(
        http::Method::POST,
        &format!("http://{}/-/reload", hookside.admin),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200);
    let (text, samples) = scrape(&hookside).await;
    assert!(!text.contains("webhook=\"gone\""), "{text}");
    assert!(text.contains("webhook=\"kept\""));
    assert_eq!(
        value(
            &samples,
            "hookside_config_reloads_total",
            &[("result", "failure")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "hookside_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "hookside_config_file_errors", &[]),
        Some(1.0)
    );
    assert_eq!(value(&samples, "hookside_config_webhooks", &[]), Some(1.0));
}

// `process_cpu_seconds_total` counts to the clock tick, not in whole seconds: the scraped
// value lies between the process's CPU time read from /proc just before and just after.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn process_cpu_seconds_are_counted_to_the_clock_tick() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &format!("company = \"a\"\nurl = \"http://{}/\"\n", upstream.host()),
    );
    let process = Process::serve(dir.path(), &[], &[]);
    let url = format!("http://{}/v1/webhooks/w", process.bot);
    for _ in 0..200 {
        assert_eq!(
            send(http::Method::POST, &url, &[], b"{}".to_vec()).await.0,
            200
        );
    }
    let pid = i32::try_from(process.child.id()).expect("pid");
    let cpu = || {
        let stat = procfs::process::Process::new(pid)
            .and_then(|p| p.stat())
            .expect("stat");
        (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
    };
    let before = cpu();
    let (status, _, body) = get(&format!("http://{}/metrics", process.admin)).await;
    let after = cpu();
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    let scraped: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("process_cpu_seconds_total "))
        .unwrap_or_else(|| panic!("no process_cpu_seconds_total: {text}"))
        .parse()
        .expect("a number");
    assert!(before > 0.0, "the process has run: {before}");
    assert!(
        (before..=after).contains(&scraped),
        "{before} <= {scraped} <= {after}"
    );
}

// A call hyper serves (a chunked body here) whose caller goes away before the answer still
// runs to its end, and is counted and logged as on the bot connection's own task.
#[tokio::test]
async fn a_call_whose_caller_went_away_is_still_counted() {
    let slow =
        Upstream::fixed(Reply::json(200, json!({"a": 1})).delayed(Duration::from_millis(300)))
            .await;
    let dir = Dir::new();
    dir.file(
        "slow.toml",
        &format!("company = \"acme\"\nurl = \"http://{}/\"\n", slow.host()),
    );
    let hookside = Hookside::start(dir.path()).await;
    for path in ["/v1/webhooks/slow", "/v1/webhooks/slow"] {
        let mut stream = tokio::net::TcpStream::connect(hookside.bot)
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(stream);
    }
    let counted = crate::util::eventually(Duration::from_secs(5), || async {
        let (_, samples) = scrape(&hookside).await;
        value(
            &samples,
            "hookside_webhook_requests_total",
            &[("webhook", "slow"), ("company", "acme"), ("outcome", "ok")],
        ) == Some(2.0)
    })
    .await;
    assert!(counted, "both calls counted as ok");
    assert_eq!(slow.seen().len(), 2);
}
