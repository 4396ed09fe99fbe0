//! Loading webhook files: names, secrets, `extends`, errors with their location, and the
//! listing and description routes.

use serde_json::json;

use crate::util::{Dir, Hookside, Process, Reply, Upstream, get, send};

#[tokio::test]
async fn a_missing_secret_fails_only_its_file() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    let url = format!("http://{}/", upstream.host());
    dir.file("good.toml", &format!("company = \"a\"\nurl = \"{url}\"\n"));
    dir.file(
        "bad.toml",
        &format!("company = \"a\"\nurl = \"{url}\"\n[auth]\ntype = \"bearer\"\ntoken = \"${{file:nope}}\"\n"),
    );
    let hookside = Hookside::start(dir.path()).await;
    assert_eq!(hookside.invoke("good", json!({})).await.0, 200);
    assert_eq!(hookside.invoke("bad", json!({})).await.0, 404);
    let (_, config) = hookside.admin_get("/-/config").await;
    let bad = config["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["name"] == "bad")
        .expect("bad is listed")
        .clone();
    assert_eq!(bad["state"], "error");
    assert_eq!(bad["errors"][0]["line"], 5);
    assert!(
        bad["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("auth.token")
    );
}

#[tokio::test]
async fn secrets_from_env_reach_only_the_upstream() {
    let upstream =
        Upstream::start(|seen| Reply::json(200, json!({"got": seen.header("x-key")}))).await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &format!(
            "company = \"a\"\nurl = \"http://{}/\"\n[auth]\ntype = \"bearer\"\ntoken = \"${{env:HOOKSIDE_IT_TOKEN}}\"\n[headers]\nX-Key = \"${{env:HOOKSIDE_IT_KEY}}\"\n[variables]\ngot = \"response.got\"\n",
            upstream.host()
        ),
    );
    dir.file("unset.toml", &format!("company = \"a\"\nurl = \"http://{}/\"\n[headers]\nX = \"${{env:HOOKSIDE_IT_SURELY_UNSET}}\"\n", upstream.host()));
    let process = Process::serve(
        dir.path(),
        &[],
        &[
            ("HOOKSIDE_IT_TOKEN", "env-token-1"),
            ("HOOKSIDE_IT_KEY", "env-key-2"),
        ],
    );
    let (status, _, body) = send(
        http::Method::POST,
        &format!("http://{}/v1/webhooks/w", process.bot),
        &[],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let seen = upstream.only();
    assert_eq!(seen.header("authorization"), Some("Bearer env-token-1"));
    assert_eq!(seen.header("x-key"), Some("env-key-2"));
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(!body.contains("env-key-2"), "{body}");
    let (status, _, _) = send(
        http::Method::POST,
        &format!("http://{}/v1/webhooks/unset", process.bot),
        &[],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 404, "a file with a missing secret is not served");
    let (_, _, config) = get(&format!("http://{}/-/config", process.admin)).await;
    let config = String::from_utf8_lossy(&config).into_owned();
    assert!(config.contains("HOOKSIDE_IT_SURELY_UNSET"), "{config}");
    assert!(
        !config.contains("env-token-1") && !config.contains("env-key-2"),
        "{config}"
    );
    let log = process.log();
    assert!(log.contains("HOOKSIDE_IT_SURELY_UNSET"), "{log}");
    assert!(
        !log.contains("env-token-1") && !log.contains("env-key-2"),
        "{log}"
    );
}

#[tokio::test]
async fn extends_inherits_merges_overrides_and_chains() {
    let upstream = Upstream::fixed(Reply::json(200, json!({"v": 1}))).await;
    let dir = Dir::new();
    dir.file(
        "templates/base.toml",
        &format!(
            r#"kind = "template"
name = "base"
company = "acme"
method = "POST"
timeout = "2s"
url = "http://{}/base/{{{{ context.part }}}}"
[context]
part = "from-base"
[headers]
X-Base = "base"
X-Both = "base"
[body]
a = "base"
b = "base"
[variables]
v = "response.v"
"#,
            upstream.host()
        ),
    );
    dir.file(
        "templates/middle.toml",
        "kind = \"template\"\nname = \"middle\"\nextends = \"base\"\ntimeout = \"3s\"\n[headers]\nX-Middle = \"middle\"\n",
    );
    dir.file(
        "child.toml",
        "extends = \"middle\"\n[context]\npart = \"from-child\"\n[headers]\nX-Both = \"child\"\n[body]\nb = \"child\"\nc = \"{{ sessionId }}\"\n",
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("child", json!({"sessionId": "s"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["variables"]["v"], 1);
    let seen = upstream.only();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/base/from-child");
    assert_eq!(seen.header("x-base"), Some("base"));
    assert_eq!(seen.header("x-middle"), Some("middle"));
    assert_eq!(seen.header("x-both"), Some("child"));
    assert_eq!(seen.json(), json!({"a": "base", "b": "child", "c": "s"}));
    let (_, listing) = hookside.get("/v1/webhooks").await;
    let names: Vec<&str> = listing["webhooks"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["child"], "templates are never served");
    assert_eq!(listing["webhooks"][0]["timeout_ms"], 3000);
    assert_eq!(hookside.invoke("base", json!({})).await.0, 404);
}

#[tokio::test]
async fn extends_cycles_and_unknown_templates_are_errors_of_the_extending_file() {
    let dir = Dir::new();
    dir.file("a.toml", "kind = \"template\"\nextends = \"b\"\n");
    dir.file("b.toml", "kind = \"template\"\nextends = \"a\"\n");
    dir.file(
        "w.toml",
        "extends = \"a\"\ncompany = \"x\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    dir.file(
        "u.toml",
        "company = \"x\"\nurl = \"http://127.0.0.1:9/\"\n\nextends = \"nowhere\"\n",
    );
    // A template that does not parse is not "no template".
    dir.file("broken.toml", "kind = \"template\"\ncompany = \"x\n");
    dir.file(
        "v.toml",
        "extends = \"broken\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let hookside = Hookside::start(dir.path()).await;
    let (_, config) = hookside.admin_get("/-/config").await;
    let message = |name: &str| -> String {
        config["files"]
            .as_array()
            .expect("files")
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| {
                f["errors"][0]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    assert!(message("a").contains("cycle"), "{config}");
    assert!(message("b").contains("cycle"), "{config}");
    assert!(
        message("w").contains("template \"a\" does not load"),
        "{config}"
    );
    assert!(
        message("u").contains("no template named \"nowhere\""),
        "{config}"
    );
    assert!(
        message("v").contains("template \"broken\" does not load; see ")
            && message("v").ends_with("broken.toml"),
        "{config}"
    );
    let unknown_line = config["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["name"] == "u")
        .map(|f| f["errors"][0]["line"].clone());
    assert_eq!(unknown_line, Some(json!(4)));
}

#[tokio::test]
async fn names_default_to_the_stem_and_duplicates_keep_the_first_path() {
    let dir = Dir::new();
    dir.file(
        "a/order.toml",
        "company = \"x\"\nurl = \"http://127.0.0.1:9/a\"\n",
    );
    dir.file(
        "b/other.toml",
        "name = \"order\"\ncompany = \"x\"\nurl = \"http://127.0.0.1:9/b\"\n",
    );
    dir.file(".hidden/skip.toml", "this is not toml");
    dir.file("notes.txt", "ignored");
    dir.file(
        "deep/er/thing.toml",
        "company = \"x\"\nurl = \"http://127.0.0.1:9/c\"\nbogus = 1\n",
    );
    let hookside = Hookside::start(dir.path()).await;
    let (_, listing) = hookside.get("/v1/webhooks/order").await;
    assert!(
        listing["source"]
            .as_str()
            .expect("source")
            .ends_with("a/order.toml"),
        "{listing}"
    );
    let (_, config) = hookside.admin_get("/-/config").await;
    let files = config["files"].as_array().expect("files");
    assert_eq!(
        files.len(),
        3,
        "hidden folders and other files are skipped: {config}"
    );
    let other = files
        .iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("other.toml"))
        })
        .expect("other");
    assert!(
        other["errors"][0]["message"]
            .as_str()
            .expect("m")
            .contains("already used by"),
        "{other}"
    );
    let thing = files
        .iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("thing.toml"))
        })
        .expect("thing");
    assert_eq!(
        thing["errors"][0]["line"], 3,
        "an unknown key is an error at its line"
    );
}

#[tokio::test]
async fn listing_and_description_hide_secrets() {
    let dir = Dir::new();
    dir.file("t", "hidden-token-value");
    dir.file(
        "w.toml",
        "company = \"acme\"\ndescription = \"d\"\nurl = \"http://127.0.0.1:9/x\"\n[auth]\ntype = \"bearer\"\ntoken = \"${file:t}\"\n[headers]\nX-Key = \"k ${file:t}\"\n[variables]\na = \"response.a\"\n",
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, listing) = hookside.get("/v1/webhooks").await;
    assert_eq!(status, 200);
    let entry = &listing["webhooks"][0];
    for key in [
        "name",
        "company",
        "method",
        "url",
        "execution",
        "timeout_ms",
        "variables",
        "source",
        "revision",
        "state",
    ] {
        assert!(entry.get(key).is_some(), "{key} missing in {entry}");
    }
    assert_eq!(entry["state"], "ok");
    assert_eq!(entry["variables"], json!(["a"]));
    let (status, one) = hookside.get("/v1/webhooks/w").await;
    assert_eq!(status, 200);
    assert_eq!(one["definition"]["auth"]["token"], "***");
    assert_eq!(one["definition"]["headers"]["x-key"], "k ***");
    let text = format!("{listing}{one}");
    assert!(!text.contains("hidden-token-value"));
}

#[tokio::test]
async fn invalid_fields_are_reported_with_their_line() {
    let dir = Dir::new();
    dir.file(
        "w.toml",
        "company = \"x\"\nmethod = \"FETCH\"\nurl = \"http://{{ extractedData.host }}/x\"\ntimeout = \"200s\"\nresponse_type = \"xml\"\n[headers]\nHost = \"x\"\n[variables]\nv = \"$.[[[\"\n",
    );
    let hookside = Hookside::start(dir.path()).await;
    let (_, config) = hookside.admin_get("/-/config").await;
    let errors = config["files"][0]["errors"]
        .as_array()
        .expect("errors")
        .clone();
    let at = |needle: &str| -> Option<u64> {
        errors
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
            .and_then(|e| e["line"].as_u64())
    };
    assert_eq!(at("method"), Some(2), "{errors:?}");
    assert_eq!(at("only context"), Some(3), "{errors:?}");
    assert_eq!(at("timeout"), Some(4), "{errors:?}");
    assert_eq!(at("response_type"), Some(5), "{errors:?}");
    assert_eq!(at("headers: host"), Some(7), "{errors:?}");
    assert_eq!(at("JSONPath"), Some(9), "{errors:?}");
}
