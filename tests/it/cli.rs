//! The real binary: `check`, `run`, `schema`, and the `/test` route.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::util::{Dir, Hookside, Reply, Upstream, send};

fn hookside(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookside"));
    command
        .args(args)
        .env_remove("HOOKSIDE_DIR")
        .env_remove("HOOKSIDE_CONFIG");
    for (name, value) in envs {
        command.env(name, value);
    }
    command.output().expect("run hookside")
}

/// `hookside check --dir DIR`.
fn check(dir: &Dir) -> Output {
    hookside(
        &["check", "--dir", dir.path().to_str().expect("utf-8")],
        &[],
    )
}

/// `check` of `DIR/webhooks.d` with `config`.
fn check_with_config(dir: &Dir, config: &Path) -> Output {
    let webhooks = dir.path().join("webhooks.d");
    let args = [
        "check",
        "--dir",
        webhooks.to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
    ];
    hookside(&args, &[])
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts that `out` holds each of `lines`, and no other line about a file (`.toml:`).
fn assert_lines(out: &str, lines: &[&str]) {
    for expected in lines {
        assert!(out.contains(expected), "{expected:?} in:\n{out}");
    }
    let about_files = out.lines().filter(|l| l.contains(".toml:")).count();
    assert_eq!(about_files, lines.len(), "{out}");
}

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn check_reports_every_problem_with_its_location_and_fails() {
    let broken = fixtures().join("broken");
    let output = hookside(&["check", "--dir", broken.to_str().expect("utf-8")], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let out = text(&output);
    let line = |file: &str, needle: &str| {
        out.lines()
            .find(|l| l.contains(file) && l.contains(needle))
            .unwrap_or_else(|| panic!("no line for {file} / {needle} in:\n{out}"))
            .to_owned()
    };
    assert!(line("syntax.toml", "").contains("syntax.toml:2:"), "{out}");
    assert!(
        line("fields.toml", "method").contains("fields.toml:2:10:"),
        "{out}"
    );
    assert!(
        line("fields.toml", "timeout").contains("fields.toml:4:"),
        "{out}"
    );
    assert!(
        line("unknown-key.toml", "retries").contains("unknown-key.toml:3:1:"),
        "{out}"
    );
    let example = line("example.toml", "eta");
    assert!(example.contains("example.toml:8:1:"), "{example}");
    assert!(
        example.contains("expected \"2026-12-01\", got \"2026-12-02\""),
        "{example}"
    );
    assert!(
        !out.contains("variable status"),
        "a matching variable is not reported: {out}"
    );
    // A port out of range would have sent the calls to port 80.
    assert!(
        line("values.toml", "port").contains("values.toml:2:7: url: the port \"89437\""),
        "{out}"
    );
    assert!(
        line("values.toml", "x-note").contains("values.toml:4:10:"),
        "{out}"
    );
    assert!(
        line("values.toml", "JSONPath").contains(
            "values.toml:8:5: variables.v: invalid JSONPath: expected comparable at character 13"
        ),
        "{out}"
    );
    // The secret is named, never shown.
    let secret = line("values.toml", "x-secret");
    assert!(
        secret.contains("values.toml:6:12: headers.x-secret: the secret ${file:newline-secret.txt} holds a line break"),
        "{out}"
    );
    assert!(!out.contains("line one"), "{out}");
    assert!(
        line("query.toml", "invalid type: integer").contains(
            "query.toml:4:9: invalid type: integer, expected a string or an array of strings"
        ),
        "{out}"
    );
    // One line per problem (a parser's report over several lines included), then the summary.
    let (summary, problems) = out
        .trim_end()
        .lines()
        .collect::<Vec<_>>()
        .split_last()
        .map(|(s, p)| (s.to_string(), p.to_vec()))
        .expect("lines");
    assert!(
        line("headers.toml", "twice").contains("headers.toml:"),
        "two spellings of one header: {out}"
    );
    assert!(summary.contains("11 problems in 7 files"), "{out}");
    for problem in problems {
        let mut fields = problem.splitn(4, ':');
        let (path, line, column) = (fields.next(), fields.next(), fields.next());
        assert!(
            path.is_some_and(|p| p.ends_with(".toml"))
                && line.is_some_and(|l| l.parse::<u32>().is_ok())
                && column.is_some_and(|c| c.parse::<u32>().is_ok()),
            "not PATH:LINE:COL: {problem:?}"
        );
    }
}

#[test]
fn check_passes_the_shipped_samples_and_each_has_an_example() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("webhooks.d");
    let output = hookside(
        &[
            "check",
            "--dir",
            samples.to_str().expect("utf-8"),
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["ok"], true);
    assert_eq!(report["webhooks"], 5);
    assert!(
        report["examples"].as_u64().expect("examples") >= 5,
        "{report}"
    );
    for name in [
        "order-status",
        "create-ticket",
        "crm-lookup",
        "save-note",
        "cancel-subscription",
    ] {
        let path = std::fs::read_dir(samples.join("acme"))
            .into_iter()
            .chain(std::fs::read_dir(samples.join("globex")))
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_stem().is_some_and(|s| {
                    s == name
                        || std::fs::read_to_string(p)
                            .is_ok_and(|t| t.contains(&format!("name = \"{name}\"")))
                })
            })
            .unwrap_or_else(|| panic!("{name} has a file"));
        let text = std::fs::read_to_string(path).expect("read");
        assert!(text.contains("[[examples]]"), "{name} has an example");
    }
    // A clean directory: exit 0 and one summary line.
    let dir = Dir::new();
    dir.file("w.toml", "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n");
    let output = check(&dir);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output).trim(),
        "ok: 1 file, 1 webhook, 0 examples passed, 0 warnings"
    );
}

#[test]
fn check_never_prints_a_secret() {
    let dir = Dir::new();
    dir.file("canary", "canary-7f3a9c\n");
    dir.file(
        "w.toml",
        "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n[auth]\ntype = \"bearer\"\ntoken = \"${file:canary}\"\n[headers]\nX = \"${file:canary}\"\n[[examples]]\nresponse = '{}'\n[examples.request]\nheaders = { authorization = \"Bearer canary-7f3a9c\" }\n",
    );
    dir.file("bad.toml", "password = \"${file:canary}\"\n[auth\n");
    // A token written in the file as a number: the type error does not quote it.
    dir.file(
        "typed.toml",
        "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n[auth]\ntype = \"bearer\"\ntoken = 987654321\n",
    );
    let output = check(&dir);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("typed.toml:5:9: invalid type: integer, expected a string"),
        "{out}"
    );
    assert!(!out.contains("987654321"), "{out}");
    assert!(
        out.contains("expected \"Bearer canary-7f3a9c\", got \"Bearer ***\""),
        "{out}"
    );
    assert_eq!(
        out.matches("canary-7f3a9c").count(),
        1,
        "only the file's own expectation is echoed: {out}"
    );
}

// The binary blocks this thread while the upstream answers it: a second worker serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_the_request_the_answer_and_the_variables() {
    let upstream = Upstream::start(|seen| {
        Reply::json(
            200,
            json!({"order": {"status": "shipped", "echo": seen.header("authorization")}}),
        )
    })
    .await;
    let dir = Dir::new();
    dir.file("token", "canary-token-42\n");
    dir.file(
        "w.toml",
        &format!(
            "company = \"a\"\nmethod = \"POST\"\nurl = \"http://{}/orders/{{{{ extractedData.id }}}}\"\n[auth]\ntype = \"bearer\"\ntoken = \"${{file:token}}\"\n[body]\nid = \"{{{{ extractedData.id }}}}\"\n[variables]\nstatus = \"response.order.status\"\necho = \"response.order.echo\"\ngone = \"$.nope\"\n",
            upstream.host()
        ),
    );
    let context = dir.file("conversation.json", r#"{"extractedData": {"id": "A-17"}}"#);
    let args = [
        "run",
        "w",
        "--dir",
        dir.path().to_str().expect("utf-8"),
        "--context",
        context.to_str().expect("utf-8"),
    ];

    let dry = hookside(&[&args[..], &["--dry-run"]].concat(), &[]);
    let out = text(&dry);
    assert_eq!(dry.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!("POST http://{}/orders/A-17", upstream.host())),
        "{out}"
    );
    assert!(out.contains("authorization: Bearer ***"), "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert!(upstream.seen().is_empty(), "a dry run sends nothing");
    // Without the secret: a dry run still renders (a warning says so); a call cannot run.
    std::fs::remove_file(dir.path().join("token")).expect("remove the secret");
    let unset = hookside(&[&args[..], &["--dry-run"]].concat(), &[]);
    let out = text(&unset);
    assert_eq!(unset.status.code(), Some(0), "{out}");
    assert!(out.contains("authorization: Bearer ***"), "{out}");
    assert!(out.contains("a placeholder stands in"), "{out}");
    let unset = hookside(&args, &[]);
    assert_eq!(unset.status.code(), Some(2), "{}", text(&unset));
    assert!(upstream.seen().is_empty(), "nothing was sent");
    dir.file("token", "canary-token-42\n");

    let live = hookside(&args, &[]);
    let out = text(&live);
    assert_eq!(
        live.status.code(),
        Some(1),
        "a variable found nothing: exit 1\n{out}"
    );
    assert_eq!(upstream.seen().len(), 1);
    assert!(out.contains("=> 200 (ok)"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("status") && l.contains("\"shipped\"")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("gone") && l.contains("missing")),
        "{out}"
    );
    assert!(
        !out.contains("canary-token-42"),
        "the echoed secret is scrubbed: {out}"
    );

    let json = hookside(&[&args[..], &["--json"]].concat(), &[]);
    let report: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(report["variables"]["status"], "shipped");
    assert_eq!(report["variables"]["echo"], "Bearer ***");
    assert_eq!(report["missing"], json!(["gone"]));
    assert!(!String::from_utf8_lossy(&json.stdout).contains("canary-token-42"));

    // From standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookside"))
        .args([
            "run",
            "w",
            "--dir",
            dir.path().to_str().expect("utf-8"),
            "--context",
            "-",
            "--dry-run",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"extractedData": {"id": "B-2"}}"#)
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(
        report["request"]["url"]
            .as_str()
            .expect("url")
            .ends_with("/orders/B-2"),
        "{report}"
    );
}

#[tokio::test]
async fn the_test_route_shows_request_trace_and_warnings() {
    let upstream = Upstream::fixed(Reply::raw(500, "<html>oops</html>")).await;
    let dir = Dir::new();
    dir.file("t", "route-canary-9");
    dir.file(
        "w.toml",
        &format!(
            "company = \"a\"\nurl = \"http://{}/x?q={{{{ reply }}}}\"\n[context]\nunused = \"1\"\n[headers]\nX-Key = \"${{file:t}}\"\n[query]\nk = \"${{file:t}}\"\n[variables]\nv = \"response.v\"\n",
            upstream.host()
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let url = format!("http://{}/v1/webhooks/w/test", hookside.bot);
    let (status, _, body) = send(
        http::Method::POST,
        &format!("{url}?dry_run=true"),
        &[],
        br#"{"reply": "a b"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let dry: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(dry["dry_run"], true);
    assert!(
        dry["request"]["url"]
            .as_str()
            .expect("url")
            .ends_with("/x?q=a%20b&k=***"),
        "a query secret is shown as ***, as in headers: {dry}"
    );
    assert!(
        dry["request"]["headers"].to_string().contains("***"),
        "{dry}"
    );
    let agent = concat!("hookside/", env!("CARGO_PKG_VERSION"));
    assert!(
        dry["request"]["headers"]
            .as_array()
            .expect("headers")
            .contains(&serde_json::json!(["user-agent", agent])),
        "the headers hookside adds are shown with the webhook's: {dry}"
    );
    assert!(
        dry["warnings"].to_string().contains("context.unused"),
        "{dry}"
    );
    assert!(upstream.seen().is_empty());

    let (status, _, body) = send(http::Method::POST, &url, &[], b"{}".to_vec()).await;
    assert_eq!(status, 200);
    let live: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(live["status"], 500);
    assert_eq!(upstream.seen()[0].header("user-agent"), Some(agent));
    assert_eq!(
        live["response"], "<html>oops</html>",
        "a body that is not JSON is shown as text"
    );
    assert!(
        live["warnings"].to_string().contains("not valid JSON"),
        "{live}"
    );
    assert_eq!(live["trace"][0]["name"], "v");
    assert!(live["trace"][0]["missing"].is_string(), "{live}");
    assert!(!String::from_utf8_lossy(&body).contains("route-canary-9"));
}

// Run Webhook on a failing webhook: the error's status and kind, and still the request it
// rendered and the warnings (what a person needs to see why it failed).
#[tokio::test]
async fn the_test_route_shows_the_request_and_warnings_of_a_failed_run() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir = Dir::new();
    dir.file("t", "failed-canary-3");
    dir.file(
        "w.toml",
        &format!(
            "company = \"a\"\nurl = \"http://127.0.0.1:{port}/items/{{{{ id }}}}\"\n[context]\nunused = \"1\"\n[headers]\nX-Key = \"${{file:t}}\"\n"
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let url = format!("http://{}/v1/webhooks/w/test", hookside.bot);
    let (status, _, body) = send(http::Method::POST, &url, &[], br#"{"id": "7"}"#.to_vec()).await;
    let failed: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(status, 502, "{failed}");
    assert_eq!(failed["error"]["kind"], "upstream_unreachable", "{failed}");
    assert_eq!(failed["error"]["webhook"], "w", "{failed}");
    assert_eq!(
        failed["request"]["url"],
        format!("http://127.0.0.1:{port}/items/7"),
        "{failed}"
    );
    assert!(
        failed["request"]["headers"].to_string().contains("***"),
        "{failed}"
    );
    assert!(
        failed["warnings"].to_string().contains("context.unused"),
        "{failed}"
    );
    assert!(!String::from_utf8_lossy(&body).contains("failed-canary-3"));

    // A render error, sent or dry: no request, the warnings still.
    for url in [url.clone(), format!("{url}?dry_run=true")] {
        let (status, _, body) =
            send(http::Method::POST, &url, &[], br#"{"id": ".."}"#.to_vec()).await;
        let refused: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(status, 422, "{url}: {refused}");
        assert_eq!(refused["error"]["kind"], "render_error", "{refused}");
        assert!(refused.get("request").is_none(), "{refused}");
        assert!(
            refused["warnings"].to_string().contains("context.unused"),
            "{refused}"
        );
    }
}

#[test]
fn the_schema_validates_every_sample_and_fixture_and_rejects_unknown_keys() {
    let output = hookside(&["schema"], &[]);
    assert_eq!(output.status.code(), Some(0));
    let schema: Value = serde_json::from_slice(&output.stdout).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut stack = vec![root.join("webhooks.d"), fixtures().join("valid")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 8, "{files:?}");
    let as_json = |path: &Path| -> Value {
        let table: toml::Table =
            toml::from_str(&std::fs::read_to_string(path).expect("read")).expect("TOML");
        serde_json::to_value(table).expect("JSON")
    };
    for path in &files {
        let instance = as_json(path);
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
    let unknown = as_json(&fixtures().join("broken/unknown-key.toml"));
    assert!(
        !validator.is_valid(&unknown),
        "an unknown key fails the schema"
    );
    let bad_method = json!({"company": "a", "url": "http://x/", "method": "FETCH"});
    assert!(!validator.is_valid(&bad_method));
    let any_case = json!({"company": "a", "url": "http://x/", "method": "Patch"});
    assert!(validator.is_valid(&any_case));
    // What `check` refuses, the schema refuses too.
    for refused in [
        json!({"company": " ", "url": "http://x/"}),
        json!({"company": "a", "url": "http://x/", "examples": [{"status": 0}]}),
        json!({"company": "a", "url": "http://x/", "examples": [{"status": 999}]}),
    ] {
        assert!(!validator.is_valid(&refused), "{refused}");
    }
    let example = json!({"company": "a", "url": "http://x/", "examples": [{"status": 503}]});
    assert!(validator.is_valid(&example));
    // Patterns are ECMA-262 as JSON Schema means them: no inline flags like `(?i:`,
    // which JavaScript validators (ajv on Node 20) refuse.
    let mut patterns = Vec::new();
    let mut stack = vec![&schema];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(pattern)) = map.get("pattern") {
                    patterns.push(pattern.clone());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    assert!(!patterns.is_empty());
    for pattern in &patterns {
        assert!(!pattern.contains("(?"), "{pattern}");
    }
}

#[test]
fn the_committed_schema_is_current() {
    let output = hookside(&["schema"], &[]);
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("hookside.schema.json"))
            .expect("read");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        committed,
        "regenerate with: cargo run -- schema > hookside.schema.json"
    );
}

#[test]
fn a_template_with_a_bad_extends_is_reported_even_unused() {
    let dir = Dir::new();
    dir.file(
        "t.toml",
        "kind = \"template\"\nname = \"t\"\nextends = \"nowhere\"\n",
    );
    let output = check(&dir);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("t.toml:3:11: extends: no template named \"nowhere\""),
        "{out}"
    );
}

#[test]
fn check_answers_in_json_even_when_the_config_or_the_directory_fails() {
    let dir = Dir::new();
    let config = dir.file("hookside.toml", "[limits]\nmax_request_body = \"lots\"\n");
    let config = config.to_str().expect("utf-8");
    let webhooks = fixtures().join("valid");
    let webhooks = webhooks.to_str().expect("utf-8");
    let missing = dir.path().join("nowhere");
    let missing = missing.to_str().expect("utf-8");
    for (args, path) in [
        (
            vec![
                "check", "--dir", webhooks, "--config", config, "--format", "json",
            ],
            config,
        ),
        (vec!["check", "--dir", missing, "--format", "json"], missing),
    ] {
        let output = hookside(&args, &[]);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("{err}: {}", text(&output)));
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["problems"][0]["path"], path, "{report}");
        assert!(
            report["problems"][0]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{report}"
        );
    }
}

#[test]
fn output_to_a_reader_that_went_away_is_no_panic_and_keeps_the_exit_code() {
    let broken = fixtures().join("broken");
    for (args, code) in [
        (vec!["schema"], 0),
        (vec!["check", "--dir", broken.to_str().expect("utf-8")], 1),
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_hookside"))
            .args(&args)
            .stdout(writer)
            .output()
            .expect("run hookside");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_example_whose_response_echoes_a_secret_maps_as_serve_answers_and_prints_no_secret() {
    let dir = Dir::new();
    let webhook = |expected: &str| {
        format!(
            "company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\n[auth]\ntype = \"bearer\"\ntoken = \"${{env:HOOKSIDE_TEST_ECHOED}}\"\n[variables]\nv = \"response.echo\"\n[[examples]]\nresponse = {{ echo = \"Bearer topsecret-99\" }}\nexpect = {{ v = \"{expected}\" }}\n"
        )
    };
    let secret = [("HOOKSIDE_TEST_ECHOED", "topsecret-99")];
    let args = ["check", "--dir", dir.path().to_str().expect("utf-8")];
    dir.file("w.toml", &webhook("Bearer ***"));
    let output = hookside(&args, &secret);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    dir.file("w.toml", &webhook("something else"));
    let output = hookside(&args, &secret);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("got \"Bearer ***\""), "{out}");
    assert!(!out.contains("topsecret-99"), "{out}");
}

#[cfg(unix)]
#[test]
fn a_link_to_a_webhook_file_that_does_not_exist_fails_the_check() {
    let dir = Dir::new();
    dir.file("w.toml", "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n");
    std::os::unix::fs::symlink("../nowhere/typo.toml", dir.path().join("linked.toml"))
        .expect("symlink");
    let output = check(&dir);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("linked.toml: a symbolic link to ../nowhere/typo.toml, which does not exist"),
        "{out}"
    );
    assert!(
        out.contains("1 problem in 1 file (1 file, 1 webhook loaded"),
        "{out}"
    );
    // A loop is told as one.
    std::os::unix::fs::symlink("loop.toml", dir.path().join("loop.toml")).expect("symlink");
    let out = text(&check(&dir));
    assert!(
        out.contains("loop.toml: a symbolic link to loop.toml, which cannot be followed ("),
        "{out}"
    );
}

#[test]
fn files_and_secrets_past_their_size_limit_are_refused_unread() {
    let dir = Dir::new();
    // One byte over the limit: valid TOML, the rest a comment.
    let mut huge = String::from("company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n# ");
    huge.push_str(&"x".repeat(1024 * 1024 + 1 - huge.len()));
    dir.file("huge.toml", &huge);
    let mut fits = String::from("company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n# ");
    fits.push_str(&"x".repeat(1024 * 1024 - fits.len()));
    dir.file("fits.toml", &fits);
    dir.file("big-secret", &"s".repeat(64 * 1024 + 1));
    dir.file(
        "big.toml",
        "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n[auth]\ntype = \"bearer\"\ntoken = \"${file:big-secret}\"\n",
    );
    dir.file(
        "zero.toml",
        "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n[auth]\ntype = \"bearer\"\ntoken = \"${file:/dev/zero}\"\n",
    );
    let output = check(&dir);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("huge.toml: cannot read: the file is larger than 1 MiB"),
        "{out}"
    );
    assert!(!out.contains("fits.toml"), "{out}");
    assert!(
        out.contains("big.toml:5:9: auth.token: secret `${file:big-secret}`: cannot read ")
            && out.contains("big-secret: the file is larger than 64 KiB"),
        "{out}"
    );
    assert!(
        out.contains("zero.toml:5:9: auth.token: secret `${file:/dev/zero}`: cannot read /dev/zero: not a regular file"),
        "{out}"
    );
}

#[test]
fn a_basic_auth_username_with_a_colon_is_an_error_that_shows_no_secret() {
    let dir = Dir::new();
    dir.file(
        "w.toml",
        "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n[auth]\ntype = \"basic\"\nusername = \"${env:HOOKSIDE_TEST_USER}\"\npassword = \"p\"\n",
    );
    let output = hookside(
        &["check", "--dir", dir.path().to_str().expect("utf-8")],
        &[("HOOKSIDE_TEST_USER", "us:er-secret")],
    );
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("w.toml:5:12: auth.username: a basic-auth username cannot hold `:`"),
        "{out}"
    );
    assert!(!out.contains("er-secret"), "{out}");
}

#[test]
fn a_company_with_a_control_character_is_an_error() {
    let dir = Dir::new();
    dir.file(
        "w.toml",
        "company = \"ac\\u001bme\\nFORGED\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let out = text(&check(&dir));
    assert!(
        out.contains("w.toml:1:11: company: must not hold a control character"),
        "{out}"
    );
    assert!(!out.contains('\u{1b}'), "{out}");
}

#[test]
fn a_misspelt_secret_reference_is_an_error_at_its_line_and_never_sent() {
    let dir = Dir::new();
    dir.file(
        "w.toml",
        "company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\n[auth]\ntype = \"bearer\"\ntoken = \"${ENV:ACME_TOKEN}\"\n[headers]\nX-Key = \"${ACME_KEY}\"\n",
    );
    let output = hookside(
        &["check", "--dir", dir.path().to_str().expect("utf-8")],
        &[("ACME_TOKEN", "t-1"), ("ACME_KEY", "k-1")],
    );
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert_lines(
        &out,
        &[
            "w.toml:5:9: auth.token: `${ENV:ACME_TOKEN}` is not a secret reference and would be taken as written: did you mean `${env:ACME_TOKEN}`?",
            "w.toml:7:9: headers.x-key: `${ACME_KEY}` is not a secret reference and would be taken as written: did you mean `${env:ACME_KEY}`?",
        ],
    );
}

#[test]
fn check_reports_every_type_error_of_a_file_not_only_the_first() {
    let dir = Dir::new();
    let config = dir.file(
        "hookside.toml",
        "[limits]\nmax_connections = \"64\"\nheader_read_timeout = 10\n[companies.acme]\ntokens = \"t\"\n",
    );
    dir.file(
        "webhooks.d/typos.toml",
        "company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\ntimeout = 5\n[auth]\ntype = \"bearer\"\ntokn = \"t\"\n\
         [[examples]]\nstatus = \"200\"\n[[examples]]\nstatus = 200\n[[examples]]\nstauts = 200\n",
    );
    let output = check_with_config(&dir, &config);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert_lines(
        &out,
        &[
            "hookside.toml:2:19: invalid type: string, expected an integer (write it without quotes)",
            "hookside.toml:3:23: invalid type: integer, expected a string",
            "hookside.toml:5:1: unknown field `tokens`",
            "typos.toml:3:11: invalid type: integer, expected a string (a duration, in quotes: \"5s\", \"1500ms\")",
            "typos.toml:6:1: unknown field `tokn`",
            "typos.toml:8:10: invalid type: string, expected an integer (write it without quotes)",
            "typos.toml:12:1: unknown field `stauts`",
            "hookside.toml: warning: the webhooks were checked with the default settings",
        ],
    );
    assert!(out.contains("7 problems in 2 files"), "{out}");
}

#[test]
fn a_config_file_that_fails_hides_no_problem_of_the_webhook_files() {
    let dir = Dir::new();
    let config = dir.file("hookside.toml", "[limits]\nmax_connections = 0\n");
    dir.file(
        "webhooks.d/good.toml",
        "company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    dir.file(
        "webhooks.d/bad.toml",
        "company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\nmetod = \"GET\"\n",
    );
    let output = check_with_config(&dir, &config);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("hookside.toml:2:19: limits.max_connections: must be more than 0"),
        "{out}"
    );
    assert!(out.contains("bad.toml:3:1: unknown field `metod`"), "{out}");
    assert!(
        out.contains("hookside.toml: warning: the webhooks were checked with the default settings"),
        "{out}"
    );
    assert!(
        out.contains("2 problems in 2 files (2 files, 1 webhook loaded, 0 examples run)"),
        "{out}"
    );
}

#[test]
fn check_warns_of_a_company_named_in_another_case_than_the_config_file() {
    let dir = Dir::new();
    let config = dir.file(
        "hookside.toml",
        "[companies.ACME]\ncaller_tokens = [\"token-one\"]\n[companies.globex]\ncaller_tokens = []\n",
    );
    for (name, company) in [("open", "acme"), ("closed", "ACME"), ("globex", "Globex")] {
        dir.file(
            &format!("webhooks.d/{name}.toml"),
            &format!("company = \"{company}\"\nurl = \"http://127.0.0.1:9/\"\n"),
        );
    }
    let output = check_with_config(&dir, &config);
    let out = text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "a warning does not fail: {out}"
    );
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].contains("open.toml:1:11: warning: company: \"acme\" has no caller tokens")
            && warnings[0].contains("[companies.ACME]"),
        "{out}"
    );
    assert!(!out.contains("token-one"), "{out}");
}

// `check` runs where production secrets are not: a caller token that is not set there is a
// warning, as a webhook's secret is, and the webhooks are still checked.
#[test]
fn check_warns_of_caller_tokens_not_set_where_it_runs() {
    let dir = Dir::new();
    let config = dir.file(
        "hookside.toml",
        "[companies.acme]\ncaller_tokens = [\"${env:HOOKSIDE_TEST_UNSET_TOKEN}\", \"${file:secrets/none}\"]\n",
    );
    dir.file(
        "webhooks.d/w.toml",
        "company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\n[variables]\nv = \"$[\"\n",
    );
    dir.file(
        "webhooks.d/ok.toml",
        "company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let output = check_with_config(&dir, &config);
    let out = text(&output);
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{out}");
    assert!(
        warnings[0].contains("hookside.toml:2:18: warning: companies.acme.caller_tokens")
            && warnings[0].contains("HOOKSIDE_TEST_UNSET_TOKEN is not set"),
        "{out}"
    );
    assert!(warnings[1].contains("hookside.toml:2:54:"), "{out}");
    // The webhooks were checked: the broken JSONPath fails the check, nothing else does.
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("w.toml:4:5: "), "{out}");
    assert!(out.contains("1 problem in 1 file (2 files"), "{out}");
    // `run` checks no caller: the unset token does not stop it either.
    let webhooks = dir.path().join("webhooks.d");
    let run = [
        "run",
        "ok",
        "--dry-run",
        "--dir",
        webhooks.to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
    ];
    let output = hookside(&run, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn allowed_hosts_may_name_ip_addresses() {
    let dir = Dir::new();
    let config = dir.file(
        "hookside.toml",
        "[security]\nallowed_hosts = [\"[::1]\", \"127.0.0.1\", \"api.acme.example\"]\n",
    );
    for (name, host) in [
        ("six", "[0:0::1]"),
        ("four", "127.0.0.1"),
        ("other", "[::2]"),
    ] {
        dir.file(
            &format!("webhooks.d/{name}.toml"),
            &format!("company = \"a\"\nurl = \"http://{host}:9/\"\n"),
        );
    }
    let output = check_with_config(&dir, &config);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let problems: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("allowed_hosts"))
        .collect();
    assert_eq!(problems.len(), 1, "{out}");
    assert!(
        problems[0].contains("other.toml:2:7: url: host \"::2\" is not in security.allowed_hosts"),
        "{out}"
    );
}

// The binary blocks this thread while the upstream answers it: a second worker serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_fails_when_a_bot_call_would_fail_on_a_body_that_is_not_json() {
    let upstream = Upstream::fixed(Reply::raw(200, "<html>maintenance</html>")).await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &format!(
            "company = \"a\"\nurl = \"http://{}/x\"\n[variables]\ncode = \"status\"\n",
            upstream.host()
        ),
    );
    let run = hookside(
        &["run", "w", "--dir", dir.path().to_str().expect("utf-8")],
        &[],
    );
    let out = text(&run);
    // Shown as text with a warning, but a bot call would answer 502: not a success.
    assert!(out.contains("<html>maintenance</html>"), "{out}");
    assert!(out.contains("upstream_invalid_response"), "{out}");
    assert_eq!(run.status.code(), Some(1), "{out}");
}

// Run Webhook's dry run: what a caller may write for "true" sends nothing, and a value or a
// parameter it does not know is refused rather than read as "send".
#[tokio::test]
async fn a_dry_run_is_never_guessed_to_be_a_call() {
    let upstream = Upstream::fixed(Reply::json(200, json!({"v": 1}))).await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &format!(
            "company = \"a\"\nmethod = \"POST\"\nurl = \"http://{}/x\"\n",
            upstream.host()
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let test = |query: &str| {
        let url = format!("http://{}/v1/webhooks/w/test{query}", hookside.bot);
        async move {
            let (status, _, body) = send(http::Method::POST, &url, &[], b"{}".to_vec()).await;
            (
                status.as_u16(),
                serde_json::from_slice::<Value>(&body).expect("JSON"),
            )
        }
    };
    for query in [
        "?dry_run=true",
        "?dry_run=True",
        "?dry_run=1",
        "?dry_run=YES",
        "?dry_run=on",
        "?dry_run",
        "?dry_run=false&dry_run=true",
    ] {
        let (status, body) = test(query).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["dry_run"], true, "{query}: {body}");
    }
    assert!(upstream.seen().is_empty(), "no dry run sent anything");
    for query in [
        "?dry_run=maybe",
        "?dry-run=true",
        "?dryrun=1",
        "?dry_run=true&x=1",
    ] {
        let (status, body) = test(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["kind"], "bad_request", "{query}");
        assert_eq!(body["error"]["webhook"], "w", "{query}");
    }
    assert!(upstream.seen().is_empty(), "no refused run sent anything");
    for query in ["", "?dry_run=false", "?dry_run=0", "?dry_run=OFF"] {
        let (status, body) = test(query).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["dry_run"], false, "{query}: {body}");
    }
    assert_eq!(upstream.seen().len(), 4);
}

#[test]
fn run_shows_why_a_file_that_does_not_parse_does_not_load() {
    let dir = Dir::new();
    dir.file(
        "hdup.toml",
        "company = \"a\"\nurl = \"http://127.0.0.1:9/echo\"\n[headers]\nX-A = \"1\"\nX-A = \"2\"\n",
    );
    let dir_arg = dir.path().to_str().expect("utf-8");
    let output = hookside(&["run", "hdup", "--dir", dir_arg, "--dry-run"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"hdup\" does not load"), "{stderr}");
    assert!(
        stderr.contains("hdup.toml:5:1: duplicate key X-A"),
        "{stderr}"
    );
    // A name no file has is still unknown.
    let output = hookside(&["run", "other", "--dir", dir_arg, "--dry-run"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no webhook named \"other\""));
    // A template's name gets what to run instead.
    dir.file(
        "t.toml",
        "kind = \"template\"\nname = \"tenant\"\ncompany = \"a\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let output = hookside(&["run", "tenant", "--dir", dir_arg, "--dry-run"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"tenant\" is a template (")
            && stderr.contains("run a webhook that extends it"),
        "{stderr}"
    );
}

#[test]
fn check_points_at_where_a_context_value_is_read_and_at_secrets_that_would_be_sent_as_text() {
    let dir = Dir::new();
    let file = |name: &str, text: &str| {
        dir.file(name, text);
    };
    file(
        "header.toml",
        "company = \"a\"\nurl = \"http://x.example/\"\n[headers]\nX-A = \"{{ context.zone }}\"\n",
    );
    file(
        "host.toml",
        "company = \"a\"\nurl = \"http://{{ context.host }}/\"\n",
    );
    file(
        "secrets.toml",
        "company = \"a\"\nmethod = \"POST\"\nurl = \"http://x.example/?k=${env:K}\"\n[context]\nc = \"${env:K}\"\n[body]\nkey = \"${env:K}\"\n",
    );
    file(
        "both.toml",
        "company = \"a\"\nurl = \"https://{{ reply }}.example/{{ context.p }}\"\n[headers]\nX = \"{{ context.p }}\"\n",
    );
    file(
        "leaf.toml",
        "company = \"a\"\nmethod = \"POST\"\nurl = \"http://x.example/{{ a b }}\"\n[body]\nkey = \"x\"\n[body.outer]\ninner = [\"x\", \"{{ a b }}\"]\n",
    );
    let output = check(&dir);
    assert_eq!(output.status.code(), Some(1));
    let out = text(&output);
    for expected in [
        "header.toml:4:7: context.zone is used but [context] does not define it",
        "host.toml:2:7: context.host is used but [context] does not define it",
        "secrets.toml:3:7: url: secrets (${env:...}, ${file:...}) are resolved only in",
        "secrets.toml:5:5: context.c: secrets (",
        "secrets.toml:6:1: body: secrets (",
        "leaf.toml:3:7: url: syntax error",
        "leaf.toml:7:16: body.outer.inner[1]: syntax error",
        // An undefined value does not hide what else is wrong, and is told once.
        "both.toml:2:7: url: the scheme, host and port may use only context values, not reply",
        "both.toml:2:7: context.p is used but [context] does not define it",
    ] {
        assert!(out.contains(expected), "{expected:?} in:\n{out}");
    }
    assert!(!out.contains("not a valid origin"), "{out}");
    assert_eq!(out.matches("both.toml:").count(), 2, "{out}");
}

#[test]
fn check_finds_a_misspelt_filter_test_or_function() {
    let dir = Dir::new();
    dir.file(
        "f.toml",
        "company = \"a\"\nurl = \"http://x.example/\"\n[query]\nlang = \"{{ customVariables.lang | defualt('en') }}\"\n[headers]\nX-B = \"{% if x is nonsense %}a{% endif %}\"\nX-C = \"{{ nofunc(1) }}\"\nX-D = \"{{ x | upper }}{{ x | default('a') | lower }}\"\n[variables]\nid = \"response.order.id | uper\"\nok = \"response.order.id | default('x')\"\n",
    );
    let output = check(&dir);
    assert_eq!(output.status.code(), Some(1));
    let out = text(&output);
    assert_lines(
        &out,
        &[
            "f.toml:4:8: query.lang: unknown filter: filter defualt is unknown",
            "f.toml:6:7: headers.x-b: unknown test: test nonsense is unknown",
            "f.toml:7:7: headers.x-c: unknown function: nofunc is unknown",
            "f.toml:10:6: variables.id: invalid expression: unknown filter: filter uper is unknown",
        ],
    );
}

#[test]
fn a_template_is_checked_on_its_own_and_a_webhook_failing_on_its_use_is_named() {
    let dir = Dir::new();
    // Broken on its own, extended by two webhooks: its problems once, at its lines; each
    // webhook learns that it does not load.
    dir.file(
        "own/t.toml",
        "kind = \"template\"\nname = \"t\"\nmethod = \"FETCH\"\ntimeout = \"500s\"\n[headers]\nX-A = \"{{ x\"\n",
    );
    for name in ["w1", "w2"] {
        dir.file(
            &format!("own/{name}.toml"),
            "extends = \"t\"\ncompany = \"a\"\nurl = \"http://x.example/\"\n",
        );
    }
    // Fine on its own (what it leaves out, webhooks set); failing for one webhook's use.
    dir.file(
        "use/base.toml",
        "kind = \"template\"\nname = \"base\"\ncompany = \"acme\"\nurl = \"http://x.example/a\"\n[auth]\ntype = \"basic\"\nusername = \"u\"\n[headers]\nX-Zone = \"{{ context.zone }}\"\n[variables]\nstatus = \"response.order.status\"\n[[examples]]\nresponse = '{\"order\": {\"status\": \"shipped\", \"state\": \"x\"}}'\nexpect = { status = \"shipped\" }\n",
    );
    dir.file(
        "use/good.toml",
        "extends = \"base\"\n[auth]\npassword = \"p\"\n[context]\nzone = \"eu\"\n",
    );
    dir.file(
        "use/nozone.toml",
        "extends = \"base\"\n[auth]\npassword = \"p\"\n",
    );
    dir.file(
        "use/override.toml",
        "extends = \"base\"\n[auth]\npassword = \"p\"\n[context]\nzone = \"eu\"\n[variables]\nstatus = \"response.order.state\"\n",
    );
    // A template nothing extends yet is checked too.
    dir.file(
        "alone.toml",
        "kind = \"template\"\nname = \"alone\"\n[variables]\nv = \"$.a[?\"\n",
    );
    let output = check(&dir);
    assert_eq!(output.status.code(), Some(1));
    let out = text(&output);
    assert_lines(
        &out,
        &[
            "own/t.toml:3:10: method: \"FETCH\" is not one of",
            "own/t.toml:4:11: timeout: \"500s\" is over the maximum of 120s",
            "own/t.toml:6:7: headers.x-a: syntax error",
            "own/w1.toml:1:11: extends: template \"t\" does not load; see ",
            "own/w2.toml:1:11: extends: template \"t\" does not load; see ",
            "use/base.toml:9:10: context.zone is used but [context] does not define it (for webhook \"nozone\" of ",
            "use/base.toml:12:1: example 1: variable status (response.order.state): expected \"shipped\", got \"x\" (for webhook \"override\" of ",
            "alone.toml:4:5: variables.v: invalid JSONPath",
        ],
    );
}

#[test]
fn a_template_leaves_its_host_and_body_to_the_webhooks_that_use_it() {
    let dir = Dir::new();
    let config = dir.file(
        "hookside.toml",
        "[security]\nallowed_hosts = [\"*.api.acme.example\"]\n",
    );
    // A host made of a context value that each webhook sets: fine on its own.
    dir.file(
        "webhooks.d/base.toml",
        "kind = \"template\"\nname = \"base\"\ncompany = \"acme\"\nmethod = \"POST\"\nurl = \"https://{{ context.region }}.api.acme.example/v1\"\n[body]\na = \"{{ reply | uper }}\"\n",
    );
    dir.file(
        "webhooks.d/eu.toml",
        "extends = \"base\"\n[context]\nregion = \"eu\"\n[body]\nb = \"1\"\n",
    );
    let output = check_with_config(&dir, &config);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    // The template's misspelt filter is its own, once; the webhook only learns it.
    assert!(
        out.contains("base.toml:7:6: body.a: unknown filter"),
        "{out}"
    );
    assert!(
        out.contains("eu.toml:1:11: extends: template \"base\" does not load"),
        "{out}"
    );
    assert!(!out.contains("allowed_hosts"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains(".toml:")).count(),
        2,
        "{out}"
    );
}

#[test]
fn serve_on_a_taken_port_exits_2_and_tells_the_cause_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr").to_string();
    let dir = Dir::new();
    let serve = |format: &str| {
        let mut args = vec!["serve", "--dir"];
        args.push(dir.path().to_str().expect("utf-8"));
        args.extend(["--listen", &address, "--admin-listen", "127.0.0.1:0"]);
        args.extend(["--log-format", format]);
        // Logs off: why it exits is still told.
        hookside(&args, &[("RUST_LOG", "off")])
    };
    let text = serve("text");
    assert_eq!(text.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(
        stderr.contains(&format!("hookside: cannot listen on {address}: ")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");

    let json = serve("json");
    assert_eq!(json.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&json.stderr);
    let last: Value = serde_json::from_str(stderr.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(last["fields"]["message"], "cannot serve");
    assert!(
        last["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot listen")),
        "{stderr}"
    );
}

#[test]
fn check_warns_of_credentials_that_the_auth_type_would_not_send() {
    let dir = Dir::new();
    let head = "company = \"a\"\nurl = \"http://x.example/\"\n[auth]\n";
    dir.file("no-type.toml", &format!("{head}token = \"t-1\"\n"));
    dir.file(
        "none.toml",
        &format!("{head}type = \"none\"\nusername = \"u\"\n"),
    );
    dir.file(
        "basic.toml",
        &format!("{head}type = \"basic\"\nusername = \"u\"\npassword = \"p\"\ntoken = \"t\"\n"),
    );
    // A webhook's type overrides its template's credentials; a template may leave the type
    // to its webhooks, and one that does not set it is told; a webhook's own credential
    // beside its template's "none" is told too.
    dir.file(
        "t.toml",
        "kind = \"template\"\nname = \"t\"\ncompany = \"a\"\nurl = \"http://x.example/\"\n[auth]\ntype = \"basic\"\nusername = \"u\"\npassword = \"p\"\n",
    );
    dir.file(
        "over.toml",
        "extends = \"t\"\n[auth]\ntype = \"bearer\"\ntoken = \"x\"\n",
    );
    dir.file(
        "t2.toml",
        "kind = \"template\"\nname = \"t2\"\ncompany = \"a\"\nurl = \"http://x.example/\"\n[auth]\ntoken = \"t\"\n",
    );
    dir.file(
        "typed.toml",
        "extends = \"t2\"\n[auth]\ntype = \"bearer\"\n",
    );
    dir.file("untyped.toml", "extends = \"t2\"\n");
    dir.file(
        "t3.toml",
        "kind = \"template\"\nname = \"t3\"\ncompany = \"a\"\nurl = \"http://x.example/\"\n[auth]\ntype = \"none\"\n",
    );
    dir.file("own.toml", "extends = \"t3\"\n[auth]\ntoken = \"t\"\n");
    let output = check(&dir);
    let out = text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "warnings only, the files load: {out}"
    );
    assert_lines(
        &out,
        &[
            "no-type.toml:4:9: warning: auth.token is not sent: no auth.type is set; set type = \"bearer\" to send it",
            "none.toml:5:12: warning: auth.username is not sent: auth type \"none\" sends nothing; remove it or set type = \"basic\"",
            "basic.toml:7:9: warning: auth.token is not sent: auth type \"basic\" does not use it; remove it",
            "t2.toml:6:9: warning: auth.token is not sent: no auth.type is set; set type = \"bearer\" to send it (for webhook \"untyped\" of ",
            "own.toml:3:9: warning: auth.token is not sent: auth type \"none\" sends nothing; remove it or set type = \"bearer\"",
        ],
    );
}

#[test]
fn check_says_how_to_write_the_webhook_builders_words_and_values_of_the_wrong_type() {
    let dir = Dir::new();
    let head = "company = \"a\"\nurl = \"http://x.example/\"\n";
    for (file, line) in [
        ("timeout", "timeout = 5"),
        ("header", "[headers]\nX-Retry = 3"),
        ("auth-string", "auth = \"bearer\""),
        ("auth-case", "[auth]\ntype = \"Bearer\"\ntoken = \"t\""),
        ("response-type", "response_type = \"JSON\""),
        ("execution", "execution = \"Synchronous\""),
        ("auth-words", "[auth]\ntype = \"No authentication\""),
        (
            "mapper",
            "[variables]\nc = \"{{ response.a }} and {{ response.b }}\"",
        ),
        ("status", "[[examples]]\nstatus = \"200\""),
        ("status-word", "[[examples]]\nstatus = \"ok\""),
        ("status-range", "[[examples]]\nstatus = 70000"),
        ("headers-string", "headers = \"x\""),
        ("examples-table", "examples = {}"),
    ] {
        dir.file(&format!("{file}.toml"), &format!("{head}{line}\n"));
    }
    let output = check(&dir);
    assert_eq!(output.status.code(), Some(1));
    let out = text(&output);
    assert_lines(
        &out,
        &[
            "timeout.toml:3:11: invalid type: integer, expected a string (a duration, in quotes: \"5s\", \"1500ms\")",
            "header.toml:4:11: invalid type: integer, expected a string (write it in quotes)",
            "auth-string.toml:3:8: invalid type: string, expected a table",
            "auth-case.toml:4:8: auth.type: \"Bearer\" is written \"bearer\"",
            "response-type.toml:3:17: response_type: \"JSON\" is written \"json\"",
            "execution.toml:3:13: execution: \"Synchronous\" is written \"sync\"",
            "auth-words.toml:4:8: auth.type: \"No authentication\" is written \"none\"",
            "status.toml:4:10: invalid type: string, expected an integer (write it without quotes)",
            "status-word.toml:4:10: invalid type: string, expected an integer\n",
            "status-range.toml:4:10: invalid value: integer, expected an integer from 0 to 65535",
            "headers-string.toml:3:11: invalid type: string, expected a table",
            "examples-table.toml:3:12: invalid type: table, expected an array",
            "mapper.toml:4:5: variables.c: a variable is one expression, bare or in one {{ }}; to join values and text, write them in one: {{ response.a ~ ' and ' ~ response.b }}",
        ],
    );
}

#[test]
fn a_warning_placed_in_a_template_names_the_webhook_it_is_about() {
    let dir = Dir::new();
    dir.file(
        "tenant.toml",
        "kind = \"template\"\nname = \"tenant\"\ncompany = \"a\"\nurl = \"http://x.example/{{ context.env }}/orders\"\n[context]\nenv = \"dev\"\n[auth]\ntype = \"bearer\"\ntoken = \"${env:HOOKSIDE_TEST_NEVER_SET}\"\n",
    );
    dir.file("uses.toml", "extends = \"tenant\"\n");
    dir.file(
        "overrides.toml",
        "extends = \"tenant\"\nurl = \"http://x.example/other\"\n",
    );
    let output = check(&dir);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("warning:")).collect();
    // The template's own warning (a secret not set) is one line for its two webhooks.
    assert_eq!(warnings.len(), 2, "{out}");
    assert!(
        warnings[1].contains("tenant.toml:9:9: warning: auth.token: secret")
            && !warnings[1].contains("for webhook"),
        "{out}"
    );
    assert!(
        warnings[0].contains("tenant.toml:6:7: warning: context.env is defined but the webhook's url, headers, query and body do not read it (for webhook \"overrides\" of "),
        "{out}"
    );
}

#[test]
fn check_warns_of_a_variable_that_reads_nothing_of_the_response() {
    let dir = Dir::new();
    dir.file(
        "w.toml",
        "company = \"a\"\nurl = \"http://x.example/\"\n[variables]\nbare = \"order.status\"\nbraced = \"{{ order.id }}\"\nbody = \"response.order.id\"\ncode = \"status\"\nheader = \"headers['x-a']\"\npath = \"$.order.id\"\nsession = \"sessionId\"\n",
    );
    let output = check(&dir);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    let warned: Vec<&str> = out.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warned.len(), 2, "{out}");
    assert!(warned[0].contains("w.toml:4:8: warning: variables.bare reads nothing of the response (response, status, headers) nor a conversation key the platform sends; the response's body is `response`"), "{out}");
    assert!(
        warned[1].contains("w.toml:5:10: warning: variables.braced reads nothing"),
        "{out}"
    );
}

// A secret that is not set where `check` runs is a warning; a secret file that is there and
// that serve would refuse anywhere (a folder; too large, above) is a problem, as in serve.
#[test]
fn check_fails_a_secret_file_serve_would_refuse_and_warns_of_one_not_there() {
    let dir = Dir::new();
    std::fs::create_dir(dir.path().join("folder")).expect("mkdir");
    let webhook = |token: &str| {
        format!(
            "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n[auth]\ntype = \"bearer\"\ntoken = \"{token}\"\n"
        )
    };
    dir.file("folder.toml", &webhook("${file:folder}"));
    dir.file("absent.toml", &webhook("${file:not-here}"));
    // Encrypted in the checkout (git-crypt), or a path through a file: not set here.
    std::fs::write(dir.path().join("sealed"), b"\x00GITCRYPT\x00\xff\xfe").expect("write");
    dir.file("sealed.toml", &webhook("${file:sealed}"));
    dir.file("through.toml", &webhook("${file:sealed/token}"));
    let output = check(&dir);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert_lines(
        &out,
        &[
            "folder.toml:5:9: auth.token: secret `${file:folder}`: cannot read",
            "absent.toml:5:9: warning: auth.token: secret `${file:not-here}`: cannot read",
            "sealed.toml:5:9: warning: auth.token: secret `${file:sealed}`: cannot read",
            "through.toml:5:9: warning: auth.token: secret `${file:sealed/token}`: cannot read",
        ],
    );
    assert!(out.contains("folder: not a regular file"), "{out}");
    assert!(out.contains("1 problem in 1 file"), "{out}");
}

// A template error in a multi-line string points at the template's own line, as TOML reads
// the string (escapes, a line-ending backslash); a body value's, at the value, not `[body]`.
#[test]
fn check_points_a_template_error_at_its_own_line() {
    let dir = Dir::new();
    dir.file(
        "w.toml",
        concat!(
            "company = \"a\"\n",                                         // 1
            "url = \"http://127.0.0.1:9/\"\n",                           // 2
            "[headers]\n",                                               // 3
            "X-Note = \"\"\"\n",                                         // 4
            "one \\\n",                                                  // 5
            "  still one\n",                                             // 6
            "{{ reply }\n",                                              // 7
            "\"\"\"\n",                                                  // 8
            "X-Two = \"a\\nb\\n{{ x }\"\n",                              // 9
            "[body]\n",                                                  // 10
            "order = { id = \"{{ id }}\", items = [ \"{{ a }}\", '''\n", // 11
            "x\n",                                                       // 12
            "{% if %}''' ] }\n",                                         // 13
        ),
    );
    dir.file(
        "base.toml",
        "kind = \"template\"\nname = \"base\"\n[body]\nnote = \"\"\"\nfine\n{{ reply }\n\"\"\"\n",
    );
    dir.file(
        "child.toml",
        "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\nextends = \"base\"\n",
    );
    // Line 1 after `"""` and a line break; a line feed written `\u000A`; a body expression
    // with blank lines around it (compiled without them); a value with a secret, whose
    // pieces count their own lines, keeps the value's location.
    dir.file(
        "more.toml",
        concat!(
            "company = \"a\"\n",                          // 1
            "url = \"http://127.0.0.1:9/\"\n",            // 2
            "[headers]\n",                                // 3
            "X-One = \"\"\"\n",                           // 4
            "{{ one }\n",                                 // 5
            "\"\"\"\n",                                   // 6
            "X-Escaped = \"\"\"a\\u000A{{ two }\"\"\"\n", // 7
            "X-Secret = \"\"\"\n",                        // 8
            "${env:HOME}\n",                              // 9
            "{{ three }\n",                               // 10
            "\"\"\"\n",                                   // 11
            "[body]\n",                                   // 12
            "e = \"\"\"\n",                               // 13
            "\n",                                         // 14
            "{{ reply\n",                                 // 15
            "  | nosuch( }}\n",                           // 16
            "\"\"\"\n",                                   // 17
        ),
    );
    // A body path with a `.`: a quoted key or nested tables, whichever the file holds; with
    // both, the message cannot tell them apart, and the problem stays at `[body]`.
    dir.file(
        "dotted.toml",
        "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n[body]\nx.y = \"{{ bad }\"\n",
    );
    dir.file(
        "quoted.toml",
        "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n[body]\n\"x.y\" = \"{{ bad }\"\n",
    );
    dir.file(
        "both.toml",
        "company = \"a\"\nurl = \"http://127.0.0.1:9/\"\n[body]\n\"a.b\" = \"{{ bad }\"\na.b = \"{{ fine }}\"\n",
    );
    let output = check(&dir);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert_lines(
        &out,
        &[
            "dotted.toml:4:8: body.x.y: syntax error:",
            "quoted.toml:4:10: body.x.y: syntax error:",
            "both.toml:3:1: body.a.b: syntax error:",
            "w.toml:7:1: headers.x-note: syntax error: unexpected `}`, expected end of variable block (template line 2)\n",
            "w.toml:9:16: headers.x-two: syntax error:",
            "w.toml:13:1: body.order.items[1]: syntax error: unexpected end of block (template line 2)\n",
            "base.toml:6:1: body.note: syntax error:",
            "child.toml:3:11: extends: template \"base\" does not load",
            "more.toml:5:1: headers.x-one: syntax error:",
            "more.toml:7:23: headers.x-escaped: syntax error:",
            "more.toml:8:12: headers.x-secret: syntax error:",
            "more.toml:16:1: body.e: syntax error:",
        ],
    );
}
