//! The operator-facing files agree with the binary: the Grafana dashboard and the alert
//! rules name only exported metrics; the Kubernetes manifests use real flags, ports and
//! probe paths.

use std::collections::BTreeSet;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use std::time::Duration;

use crate::util::{Dir, Process, Reply, Upstream, eventually, get, send};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(relative: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(root().join(relative)).expect("read yaml");
    YamlLoader::load_from_str(&text).expect("valid YAML")
}

/// Metric names in a PromQL expression (hookside's own and the process collector's).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts_word = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        if starts_word && (rest.starts_with("hookside_") || rest.starts_with("process_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names a running hookside exports (with histogram suffixes).
async fn exported() -> BTreeSet<String> {
    let dir = Dir::new();
    dir.file(
        "w.toml",
        "company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let process = Process::serve(dir.path(), &[], &[]);
    let (_, _, body) = get(&format!("http://{}/metrics", process.admin)).await;
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .flat_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next().unwrap_or_default().to_owned();
            let histogram = parts.next() == Some("histogram");
            let mut names = vec![name.clone()];
            if histogram {
                names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
            }
            names
        })
        .collect()
}

#[tokio::test]
async fn the_dashboard_and_the_rules_name_only_exported_metrics() {
    let exported = exported().await;
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("examples/grafana-dashboard.json")).expect("read"),
    )
    .expect("the dashboard is valid JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if variable["type"] == "query" {
            exprs.push(variable["query"].as_str().expect("query").to_owned());
        }
    }
    assert!(exprs.len() >= 10, "the dashboard has its panels");
    let rules = yaml("examples/alerts.yml");
    for group in rules[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("expr").to_owned());
        }
    }
    let recorded: BTreeSet<String> = rules[0]["groups"]
        .as_vec()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_vec().cloned().unwrap_or_default())
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect();
    for expr in &exprs {
        let names = metric_names(expr);
        let uses_recorded = recorded.iter().any(|r| expr.contains(r.as_str()));
        assert!(
            !names.is_empty() || uses_recorded,
            "no hookside metric in {expr}"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "{name} (in {expr}) is not exported: {exported:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_kubernetes_manifests_match_the_binary() {
    let deployment = &yaml("examples/kubernetes/deployment.yaml")[0];
    let spec = &deployment["spec"]["template"]["spec"];
    let sidecar = spec["initContainers"]
        .as_vec()
        .expect("initContainers")
        .iter()
        .find(|c| c["name"].as_str() == Some("hookside"))
        .expect("hookside is an init container");
    assert_eq!(
        sidecar["restartPolicy"].as_str(),
        Some("Always"),
        "a native sidecar"
    );
    let args: Vec<&str> = sidecar["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args[0], "serve");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_hookside"))
        .args(["serve", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(flag),
            "{flag} is not a flag of hookside serve"
        );
    }
    let arg = |flag: &str| -> &str {
        let at = args
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("{flag} missing"));
        args[at + 1]
    };
    let port = sidecar["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("hookside-admin"))
        .expect("admin port");
    let admin_port = port["containerPort"].as_i64().expect("port");
    assert!(arg("--admin-listen").ends_with(&format!(":{admin_port}")));
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"].as_str(),
        Some(admin_port.to_string().as_str())
    );
    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        assert_eq!(
            sidecar[probe]["httpGet"]["path"].as_str(),
            Some(path),
            "{probe}"
        );
        assert_eq!(
            sidecar[probe]["httpGet"]["port"].as_str(),
            Some("hookside-admin"),
            "{probe}"
        );
    }
    let mounts: Vec<&str> = sidecar["volumeMounts"]
        .as_vec()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(
        mounts.contains(&arg("--dir")),
        "webhooks.d is mounted where --dir points"
    );
    let config_dir = Path::new(arg("--config"))
        .parent()
        .and_then(Path::to_str)
        .expect("config dir");
    assert!(mounts.contains(&config_dir), "the config file is mounted");
    let bot = spec["containers"]
        .as_vec()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("bot"))
        .expect("bot");
    let url = bot["env"]
        .as_vec()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("HOOKSIDE_URL"))
        .and_then(|e| e["value"].as_str())
        .expect("HOOKSIDE_URL");
    assert_eq!(url, format!("http://{}", arg("--listen")));

    // The probe paths answer on the admin listener of the real binary.
    let dir = Dir::new();
    let config = dir.file("hookside.toml", "[defaults]\ntimeout = \"5s\"\n");
    let webhooks = dir.path().join("webhooks.d");
    std::fs::create_dir(&webhooks).expect("mkdir");
    let process = Process::serve(
        &webhooks,
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--log-format",
            "json",
        ],
        &[],
    );
    for path in ["/readyz", "/healthz", "/metrics"] {
        let (status, _, _) = get(&format!("http://{}{path}", process.admin)).await;
        assert_eq!(status, 200, "{path}");
    }
    // Ready with nothing to serve (a ConfigMap mounted elsewhere, say) is worth a warning.
    let empty = eventually(Duration::from_secs(5), || async {
        !events(
            &process,
            "no webhook is serving: the directory has no webhook file, or none loads",
        )
        .is_empty()
    });
    assert!(empty.await, "{}", process.log());

    // The ConfigMap's webhook and config file load.
    let configmaps = yaml("examples/kubernetes/configmap.yaml");
    let webhook = configmaps[0]["data"]["order-status.toml"]
        .as_str()
        .expect("webhook file");
    let parsed: toml::Table = toml::from_str(webhook).expect("the ConfigMap's webhook is TOML");
    assert_eq!(parsed["name"].as_str(), Some("order-status"));
    assert!(configmaps[1]["data"]["hookside.toml"].as_str().is_some());

    // Prometheus keeps the port by the name the Deployment gives it.
    let prometheus = &yaml("examples/prometheus.yml")[0];
    let relabels = prometheus["scrape_configs"][0]["relabel_configs"]
        .as_vec()
        .expect("relabels");
    assert!(
        relabels
            .iter()
            .any(|r| r["regex"].as_str() == Some("hookside-admin"))
    );
    assert_eq!(
        prometheus["scrape_configs"][0]["metrics_path"].as_str(),
        Some("/metrics")
    );
}

/// The log lines of a `--log-format json` process, parsed; `fields.message` is the event.
fn json_lines(process: &Process) -> Vec<serde_json::Value> {
    process
        .log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// How many lines of `process`'s JSON log are the event `message`.
fn events(process: &Process, message: &str) -> Vec<serde_json::Value> {
    json_lines(process)
        .into_iter()
        .filter(|line| line["fields"]["message"] == message)
        .collect()
}

#[tokio::test]
async fn the_log_tells_each_event_once_with_unique_keys() {
    let upstream = Upstream::fixed(Reply::json(200, serde_json::json!({}))).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir = Dir::new();
    dir.file("token", "first-token-5a1b");
    dir.file("caller", "caller-token-77c2");
    let config = dir.file(
        "hookside.toml",
        "[companies.guarded]\ncaller_tokens = [\"${file:caller}\"]\n",
    );
    dir.file(
        "webhooks.d/ok.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/\"\n[auth]\ntype = \"bearer\"\ntoken = \"${{file:../token}}\"\n",
            upstream.host()
        ),
    );
    dir.file(
        "webhooks.d/down.toml",
        &format!("company = \"acme\"\nurl = \"http://127.0.0.1:{closed_port}/\"\n"),
    );
    dir.file(
        "webhooks.d/guarded.toml",
        &format!(
            "company = \"guarded\"\nurl = \"http://{}/\"\n",
            upstream.host()
        ),
    );
    let process = Process::serve(
        &dir.path().join("webhooks.d"),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--log-format",
            "json",
        ],
        &[],
    );
    let bot = |name: &str| format!("http://{}/v1/webhooks/{name}", process.bot);
    let reload = || async {
        let url = format!("http://{}/-/reload", process.admin);
        assert_eq!(send(http::Method::POST, &url, &[], Vec::new()).await.0, 200);
    };
    let logged = |message: &'static str, count: usize| {
        let process = &process;
        async move {
            eventually(Duration::from_secs(5), || async {
                events(process, message).len() >= count
            })
            .await;
            events(process, message)
        }
    };

    // A failed invocation: the event and the error's text under keys of their own.
    let (status, _, _) = send(http::Method::POST, &bot("down"), &[], b"{}".to_vec()).await;
    assert_eq!(status, 502);
    let failed = logged("invocation failed", 1).await;
    assert_eq!(failed.len(), 1, "{}", process.log());
    assert_eq!(failed[0]["level"], "WARN");
    assert!(
        failed[0]["fields"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );

    // A refused caller shows in the log, without the token.
    let wrong = [("authorization", "Bearer not-the-caller-token")];
    let (status, _, _) = send(http::Method::POST, &bot("guarded"), &wrong, b"{}".to_vec()).await;
    assert_eq!(status, 403);
    let refused = logged("caller refused", 1).await;
    assert_eq!(refused.len(), 1, "{}", process.log());
    assert_eq!(refused[0]["fields"]["kind"], "forbidden");
    assert_eq!(refused[0]["fields"]["webhook"], "guarded");
    assert!(!process.log().contains("not-the-caller-token"));

    // A rotated secret is a change the log tells, naming the webhook and not the value.
    dir.file("token", "second-token-9d4e");
    reload().await;
    let rotated = |line: &serde_json::Value| {
        line["fields"]["secrets_changed"]
            .as_str()
            .is_some_and(|names| names.contains("\"ok\""))
    };
    assert!(
        waited_for(&process, "reloaded", rotated).await,
        "{}",
        process.log()
    );
    assert!(!process.log().contains("second-token-9d4e"));

    // A broken file is told once, however many reloads find it broken, and its repair is
    // told too; the log is in order, so once the repair is read, so is all before it.
    dir.file("webhooks.d/bad.toml", "company = \"acme\"\nurl = 7\n");
    reload().await;
    assert!(waited_for(&process, "webhook file error", |_| true).await);
    reload().await;
    reload().await;
    std::fs::remove_file(dir.path().join("webhooks.d/bad.toml")).expect("remove");
    reload().await;
    let repaired = |line: &serde_json::Value| line["fields"]["problems_fixed"] == 1;
    assert!(
        waited_for(&process, "reloaded", repaired).await,
        "{}",
        process.log()
    );
    assert_eq!(
        events(&process, "webhook file error").len(),
        1,
        "{}",
        process.log()
    );

    // Every line is one object with unique keys: a repeated key would hide the event.
    for line in process.log().lines() {
        let keys = serde_json::from_str::<Line>(line)
            .expect("a JSON line")
            .fields
            .0;
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "a key repeats in {line}");
    }
}

/// Waits until a line of the event `message` that `wanted` accepts has been logged.
async fn waited_for(
    process: &Process,
    message: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> bool {
    eventually(Duration::from_secs(5), || async {
        events(process, message).iter().any(&wanted)
    })
    .await
}

/// A JSON log line's `fields`, as the keys written, repeated ones included.
#[derive(serde::Deserialize)]
struct Line {
    fields: Keys,
}

/// An object's keys in order, each as often as it is written.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Keys, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[tokio::test]
async fn a_config_file_that_fails_counts_among_the_files_with_errors() {
    let dir = Dir::new();
    let config = dir.file(
        "hookside.toml",
        "[companies.acme]\ncaller_tokens = [\"t-1\"]\n",
    );
    dir.file(
        "webhooks.d/w.toml",
        "company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let process = Process::serve(
        &dir.path().join("webhooks.d"),
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let gauge = || async {
        let (_, _, body) = get(&format!("http://{}/metrics", process.admin)).await;
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|line| line.strip_prefix("hookside_config_file_errors "))
            .map(str::to_owned)
    };
    assert_eq!(gauge().await.as_deref(), Some("0"));
    dir.file(
        "hookside.toml",
        "[companies.acme]\ncaller_tokens = [\"\"]\n",
    );
    let url = format!("http://{}/-/reload", process.admin);
    send(http::Method::POST, &url, &[], Vec::new()).await;
    assert_eq!(gauge().await.as_deref(), Some("1"), "{}", process.log());

    // Its problem is told once, however many reloads find it, and its repair is told.
    send(http::Method::POST, &url, &[], Vec::new()).await;
    send(http::Method::POST, &url, &[], Vec::new()).await;
    dir.file(
        "hookside.toml",
        "[companies.acme]\ncaller_tokens = [\"t-2\"]\n",
    );
    send(http::Method::POST, &url, &[], Vec::new()).await;
    assert_eq!(gauge().await.as_deref(), Some("0"), "{}", process.log());
    let repaired = eventually(Duration::from_secs(5), || async {
        process.log().contains("the config file loads again")
    });
    assert!(repaired.await, "{}", process.log());
    assert_eq!(
        process.log().matches("the config file fails").count(),
        1,
        "{}",
        process.log()
    );
}

#[tokio::test]
async fn a_directory_that_cannot_be_read_is_told_once_and_its_return_is_told() {
    let dir = Dir::new();
    let webhooks = dir.path().join("webhooks.d");
    let process = Process::serve(&webhooks, &["--log-format", "json"], &[]);
    let url = format!("http://{}/-/reload", process.admin);
    let back = "the webhook directory reads again";
    // Counted once the line that follows them has been read: the log is read by a thread.
    let count_once_back = |message: &'static str, times: usize| {
        let process = &process;
        async move {
            let told = eventually(Duration::from_secs(5), || async {
                events(process, back).len() >= times
            });
            assert!(told.await, "{}", process.log());
            events(process, message).len()
        }
    };
    let failed = "reload failed; keeping what serves";
    let webhook = "company = \"acme\"\nurl = \"http://127.0.0.1:9/\"\n";
    // Retried every second while nothing has loaded, and at every asked reload.
    for _ in 0..3 {
        send(http::Method::POST, &url, &[], Vec::new()).await;
    }
    dir.file("webhooks.d/w.toml", webhook);
    send(http::Method::POST, &url, &[], Vec::new()).await;
    assert_eq!(count_once_back(failed, 1).await, 1, "{}", process.log());
    let ready = get(&format!("http://{}/readyz", process.admin)).await.0;
    assert_eq!(ready, 200, "{}", process.log());

    // Gone again: told again, once; what served still serves.
    std::fs::remove_dir_all(&webhooks).expect("remove");
    for _ in 0..3 {
        send(http::Method::POST, &url, &[], Vec::new()).await;
    }
    let (status, _, _) = send(
        http::Method::POST,
        &format!("http://{}/v1/webhooks/w", process.bot),
        &[],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 502, "the webhook that served is still served");
    dir.file("webhooks.d/w.toml", webhook);
    send(http::Method::POST, &url, &[], Vec::new()).await;
    assert_eq!(count_once_back(failed, 2).await, 2, "{}", process.log());
    assert_eq!(events(&process, back).len(), 2, "{}", process.log());
}
