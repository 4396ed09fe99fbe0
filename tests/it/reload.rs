//! Hot reload: every way files change on disk reaches the serving snapshot within a
//! second or two, bad versions never serve, and no invocation fails because of a reload.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use hookside::watch::Mode;

use crate::util::{Dir, Hookside, Reply, Upstream, eventually};

const SOON: Duration = Duration::from_secs(5);

/// An upstream that echoes the path, one header and the body back.
async fn echo() -> Upstream {
    Upstream::start(|seen| {
        Reply::json(
            200,
            json!({
                "path": seen.target,
                "version": seen.header("x-version"),
                "body": serde_json::from_slice::<Value>(&seen.body).unwrap_or(Value::Null),
            }),
        )
    })
    .await
}

/// A webhook whose path, header and body all carry `version`.
fn versioned(upstream: &Upstream, version: &str) -> String {
    format!(
        "company = \"acme\"\nmethod = \"POST\"\nurl = \"http://{}/v{version}\"\n[headers]\nX-Version = \"{version}\"\n[body]\nversion = \"{version}\"\n",
        upstream.host()
    )
}

/// The path the upstream saw for `name`, or the error kind.
async fn path_of(hookside: &Hookside, name: &str) -> String {
    let (status, answer) = hookside.invoke(name, json!({})).await;
    if status == 200 {
        answer["response"]["path"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else {
        answer["error"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn serves(hookside: &Hookside, name: &str, expected: &str) -> bool {
    eventually(SOON, || async { path_of(hookside, name).await == expected }).await
}

async fn state_of(hookside: &Hookside, name: &str) -> String {
    let (_, entry) = hookside.get(&format!("/v1/webhooks/{name}")).await;
    entry["state"].as_str().unwrap_or_default().to_owned()
}

async fn watching(dir: &Dir) -> Hookside {
    Hookside::watching(dir.path(), Mode::Native).await
}

#[tokio::test]
async fn edit_add_delete_rename_and_a_new_subdirectory() {
    let upstream = echo().await;
    let dir = Dir::new();
    dir.file("a.toml", &versioned(&upstream, "1"));
    let hookside = watching(&dir).await;
    assert_eq!(path_of(&hookside, "a").await, "/v1");

    dir.file("a.toml", &versioned(&upstream, "2"));
    assert!(serves(&hookside, "a", "/v2").await, "edit");

    dir.file("b.toml", &versioned(&upstream, "3"));
    assert!(serves(&hookside, "b", "/v3").await, "add");

    std::fs::remove_file(dir.path().join("b.toml")).expect("rm");
    assert!(serves(&hookside, "b", "unknown_webhook").await, "delete");

    std::fs::rename(dir.path().join("a.toml"), dir.path().join("c.toml")).expect("mv");
    assert!(serves(&hookside, "c", "/v2").await, "rename: new name");
    assert!(
        serves(&hookside, "a", "unknown_webhook").await,
        "rename: old name gone"
    );

    dir.file("sub/deeper/d.toml", &versioned(&upstream, "4"));
    assert!(serves(&hookside, "d", "/v4").await, "new subdirectory");
}

#[tokio::test]
async fn editor_save_patterns() {
    let upstream = echo().await;
    let dir = Dir::new();
    let path = dir.file("w.toml", &versioned(&upstream, "1"));
    let hookside = watching(&dir).await;

    // vim: a swap file, a probe file `4913`, a backup by rename, a new file, cleanup.
    dir.file(".w.toml.swp", "swap");
    dir.file("4913", "");
    std::fs::remove_file(dir.path().join("4913")).expect("rm probe");
    std::fs::rename(&path, dir.path().join("w.toml~")).expect("backup");
    dir.file("w.toml", &versioned(&upstream, "2"));
    std::fs::remove_file(dir.path().join("w.toml~")).expect("rm backup");
    std::fs::remove_file(dir.path().join(".w.toml.swp")).expect("rm swap");
    assert!(serves(&hookside, "w", "/v2").await, "vim");

    // emacs / atomic save: write a temporary file, rename it over the original.
    dir.file("#w.toml#", &versioned(&upstream, "3"));
    std::fs::rename(dir.path().join("#w.toml#"), &path).expect("rename over");
    assert!(serves(&hookside, "w", "/v3").await, "rename over");

    // truncate and rewrite in place.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        file.write_all(versioned(&upstream, "4").as_bytes())
            .expect("write");
    }
    assert!(serves(&hookside, "w", "/v4").await, "truncate and rewrite");
    assert_eq!(state_of(&hookside, "w").await, "ok");
}

/// Lays out a ConfigMap volume the way the kubelet does, with `files` in revision `rev`.
fn configmap_update(dir: &Path, rev: &str, files: &[(&str, String)], first: bool) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        let data = dir.join(format!("..{rev}"));
        std::fs::create_dir(&data).expect("mkdir rev");
        for (name, text) in files {
            std::fs::write(data.join(name), text).expect("write");
        }
        symlink(format!("..{rev}"), dir.join("..data_tmp")).expect("symlink tmp");
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
        if first {
            for (name, _) in files {
                symlink(format!("..data/{name}"), dir.join(name)).expect("symlink file");
            }
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_symlink_swap() {
    let upstream = echo().await;
    let dir = Dir::new();
    configmap_update(
        dir.path(),
        "2026_11_24_1",
        &[("w.toml", versioned(&upstream, "1"))],
        true,
    );
    let hookside = watching(&dir).await;
    assert_eq!(path_of(&hookside, "w").await, "/v1");
    configmap_update(
        dir.path(),
        "2026_11_24_2",
        &[("w.toml", versioned(&upstream, "2"))],
        false,
    );
    std::fs::remove_dir_all(dir.path().join("..2026_11_24_1")).expect("rm old rev");
    assert!(serves(&hookside, "w", "/v2").await, "ConfigMap swap");
}

#[cfg(unix)]
#[tokio::test]
async fn the_directory_replaced_by_rm_and_by_a_symlink_swap() {
    let upstream = echo().await;
    let root = Dir::new();
    // git-sync: the served path is a symlink that moves to a new checkout.
    let rev1 = root.path().join("rev1");
    std::fs::create_dir(&rev1).expect("mkdir");
    std::fs::write(rev1.join("w.toml"), versioned(&upstream, "1")).expect("write");
    let link = root.path().join("current");
    std::os::unix::fs::symlink(&rev1, &link).expect("link");
    let hookside = Hookside::watching(&link, Mode::Native).await;
    assert_eq!(path_of(&hookside, "w").await, "/v1");

    let rev2 = root.path().join("rev2");
    std::fs::create_dir(&rev2).expect("mkdir");
    std::fs::write(rev2.join("w.toml"), versioned(&upstream, "2")).expect("write");
    let tmp = root.path().join("current.tmp");
    std::os::unix::fs::symlink(&rev2, &tmp).expect("link");
    std::fs::rename(&tmp, &link).expect("swap");
    assert!(serves(&hookside, "w", "/v2").await, "symlink swap");

    // rm -rf and recreate: the watch must be re-armed on the new directory.
    std::fs::remove_dir_all(&rev2).expect("rm -rf");
    std::fs::create_dir(&rev2).expect("recreate");
    std::fs::write(rev2.join("w.toml"), versioned(&upstream, "3")).expect("write");
    assert!(serves(&hookside, "w", "/v3").await, "recreated");
    std::fs::write(rev2.join("w.toml"), versioned(&upstream, "4")).expect("write");
    assert!(serves(&hookside, "w", "/v4").await, "edit after the re-arm");
}

#[tokio::test]
async fn a_half_written_or_invalid_file_keeps_the_last_good_version() {
    let upstream = echo().await;
    let dir = Dir::new();
    let full = versioned(&upstream, "2");
    dir.file("w.toml", &versioned(&upstream, "1"));
    let hookside = watching(&dir).await;
    dir.file("w.toml", &full[..full.len() / 2]);
    let stale = eventually(SOON, || async { state_of(&hookside, "w").await == "stale" }).await;
    assert!(stale, "the half-written file is reported");
    assert_eq!(
        path_of(&hookside, "w").await,
        "/v1",
        "the last good version serves"
    );
    let (_, config) = hookside.admin_get("/-/config").await;
    assert_eq!(config["last_reload"]["result"], "failure");
    assert!(
        config["files"][0]["errors"][0]["line"].is_number(),
        "{config}"
    );
    // It names what still serves, although the file no longer says.
    assert_eq!(config["files"][0]["state"], "stale", "{config}");
    assert_eq!(config["files"][0]["name"], "w", "{config}");
    assert_eq!(config["files"][0]["kind"], "webhook", "{config}");
    // Nor when it says another name, and fails.
    dir.file(
        "w.toml",
        &format!("name = \"w2\"\ntimeout = \"500s\"\n{full}"),
    );
    let renamed = eventually(SOON, || async {
        let (_, config) = hookside.admin_get("/-/config").await;
        config["files"][0]["errors"].to_string().contains("500s")
    })
    .await;
    assert!(renamed);
    let (_, config) = hookside.admin_get("/-/config").await;
    assert_eq!(config["files"][0]["name"], "w", "{config}");
    dir.file("w.toml", &full);
    assert!(
        serves(&hookside, "w", "/v2").await,
        "the complete file serves"
    );
    assert_eq!(state_of(&hookside, "w").await, "ok");
    // A new file that fails is not served.
    dir.file("new.toml", "company = \"acme\"\nurl = ");
    let reported = eventually(SOON, || async {
        let (_, config) = hookside.admin_get("/-/config").await;
        config["files"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["state"] == "error"))
    })
    .await;
    assert!(reported);
    assert_eq!(path_of(&hookside, "new").await, "unknown_webhook");
}

#[tokio::test]
async fn a_template_edit_reaches_its_dependents_and_a_broken_template_keeps_them() {
    let upstream = echo().await;
    let dir = Dir::new();
    let template = |version: &str| {
        format!(
            "kind = \"template\"\nname = \"base\"\ncompany = \"acme\"\nurl = \"http://{}/v{version}\"\n",
            upstream.host()
        )
    };
    dir.file("base.toml", &template("1"));
    dir.file("one.toml", "extends = \"base\"\n");
    dir.file("two.toml", "extends = \"base\"\n");
    let hookside = watching(&dir).await;
    assert_eq!(path_of(&hookside, "one").await, "/v1");
    dir.file("base.toml", &template("2"));
    assert!(serves(&hookside, "one", "/v2").await);
    assert!(serves(&hookside, "two", "/v2").await);
    dir.file(
        "base.toml",
        "kind = \"template\"\nname = \"base\"\nurl = 5\n",
    );
    let stale = eventually(SOON, || async {
        state_of(&hookside, "two").await == "stale"
    })
    .await;
    assert!(stale, "dependents keep their last good version");
    assert_eq!(path_of(&hookside, "one").await, "/v2");
}

#[tokio::test]
async fn a_template_that_fails_serves_none_of_its_new_text_even_where_overridden() {
    let upstream = echo().await;
    let dir = Dir::new();
    let template = |version: &str, timeout: &str| {
        format!(
            "kind = \"template\"\nname = \"base\"\ncompany = \"acme\"\ntimeout = \"{timeout}\"\nurl = \"http://{}/v{version}\"\n",
            upstream.host()
        )
    };
    dir.file("base.toml", &template("1", "2s"));
    dir.file("plain.toml", "extends = \"base\"\n");
    dir.file("own.toml", "extends = \"base\"\ntimeout = \"1s\"\n");
    let hookside = watching(&dir).await;
    assert_eq!(path_of(&hookside, "own").await, "/v1");
    // The template's new URL comes with a timeout that fails: `own` overrides the
    // timeout, yet the new URL must not reach it.
    dir.file("base.toml", &template("2", "3x"));
    for name in ["plain", "own"] {
        let stale = eventually(SOON, || async {
            state_of(&hookside, name).await == "stale"
        });
        assert!(stale.await, "{name} keeps its last good version");
        assert_eq!(path_of(&hookside, name).await, "/v1", "{name}");
    }
    let (_, config) = hookside.admin_get("/-/config").await;
    let own = config["files"]
        .as_array()
        .and_then(|files| {
            files
                .iter()
                .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with("own.toml")))
        })
        .cloned()
        .unwrap_or_default();
    assert!(
        own["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("extends: template \"base\" does not load; see")),
        "{config}"
    );
    dir.file("base.toml", &template("3", "2s"));
    assert!(serves(&hookside, "own", "/v3").await);
    assert!(serves(&hookside, "plain", "/v3").await);
}

#[tokio::test]
async fn a_template_failing_only_where_its_webhooks_override_it_stops_none_of_them() {
    let upstream = echo().await;
    let dir = Dir::new();
    // The template's default token is not set here; each webhook sets its own.
    dir.file(
        "base.toml",
        &format!(
            "kind = \"template\"\nname = \"base\"\ncompany = \"acme\"\nurl = \"http://{}/v1\"\n[auth]\ntype = \"bearer\"\ntoken = \"${{env:HOOKSIDE_TEST_NEVER_SET_DEFAULT}}\"\n",
            upstream.host()
        ),
    );
    dir.file("token", "own-token");
    let own = |path: &str| {
        format!(
            "extends = \"base\"\nurl = \"http://{}/{path}\"\n[auth]\ntoken = \"${{file:token}}\"\n",
            upstream.host()
        )
    };
    dir.file("one.toml", &own("one"));
    let hookside = watching(&dir).await;
    assert_eq!(path_of(&hookside, "one").await, "/one");
    assert_eq!(state_of(&hookside, "one").await, "ok");
    // The webhook's own edit still applies: the template did not change.
    dir.file("one.toml", &own("one-b"));
    assert!(serves(&hookside, "one", "/one-b").await);
}

#[tokio::test]
async fn a_rotated_secret_file_takes_effect_without_a_restart() {
    let upstream =
        Upstream::start(|seen| Reply::json(200, json!({"auth": seen.header("authorization")})))
            .await;
    let dir = Dir::new();
    dir.file(".secrets/token", "first\n");
    dir.file(
        "w.toml",
        &format!(
            "company = \"a\"\nurl = \"http://{}/\"\n[auth]\ntype = \"bearer\"\ntoken = \"${{file:.secrets/token}}\"\n",
            upstream.host()
        ),
    );
    let hookside = watching(&dir).await;
    hookside.invoke("w", json!({})).await;
    dir.file(".secrets/token", "second\n");
    let rotated = eventually(SOON, || async {
        hookside.invoke("w", json!({})).await;
        upstream
            .seen()
            .last()
            .and_then(|s| s.header("authorization").map(str::to_owned))
            == Some("Bearer second".to_owned())
    })
    .await;
    assert!(rotated);
    assert_eq!(
        upstream.seen()[0].header("authorization"),
        Some("Bearer first")
    );
}

#[tokio::test]
async fn polling_mode_sees_changes() {
    let upstream = echo().await;
    let dir = Dir::new();
    dir.file("w.toml", &versioned(&upstream, "1"));
    let hookside = Hookside::watching(dir.path(), Mode::Poll(Duration::from_millis(100))).await;
    dir.file("w.toml", &versioned(&upstream, "2"));
    assert!(serves(&hookside, "w", "/v2").await);
}

#[tokio::test]
async fn no_invocation_fails_while_files_are_rewritten_and_answers_are_consistent() {
    let upstream = echo().await;
    let dir = Dir::new();
    dir.file("w.toml", &versioned(&upstream, "0"));
    let hookside = Arc::new(watching(&dir).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let hookside = Arc::clone(&hookside);
        let stop = Arc::clone(&stop);
        let done = Arc::clone(&done);
        callers.push(tokio::spawn(async move {
            let mut versions = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, answer) = hookside.invoke("w", json!({})).await;
                assert_eq!(status, 200, "an invocation failed during reloads: {answer}");
                let response = &answer["response"];
                let version = response["version"].as_str().expect("version").to_owned();
                assert_eq!(response["path"], format!("/v{version}"), "{answer}");
                assert_eq!(response["body"]["version"], version.as_str(), "{answer}");
                versions.insert(version);
                done.fetch_add(1, Ordering::Relaxed);
            }
            versions
        }));
    }
    // Rewrite the file 20 times a second for 3 seconds, by rename (atomic) and in place.
    for version in 1..=60 {
        let text = versioned(&upstream, &version.to_string());
        if version % 2 == 0 {
            let tmp = dir.file(".w.toml.tmp", &text);
            std::fs::rename(tmp, dir.path().join("w.toml")).expect("rename");
        } else {
            dir.file("w.toml", &text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for caller in callers {
        seen.extend(caller.await.expect("caller"));
    }
    assert!(done.load(Ordering::Relaxed) > 100, "enough invocations ran");
    assert!(seen.len() > 3, "reloads happened during the run: {seen:?}");
}

#[tokio::test]
async fn reads_and_traffic_do_not_trigger_reloads() {
    let upstream = echo().await;
    let dir = Dir::new();
    dir.file("w.toml", &versioned(&upstream, "1"));
    let hookside = watching(&dir).await;
    dir.file("w.toml", &versioned(&upstream, "2"));
    assert!(serves(&hookside, "w", "/v2").await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let revision = |config: Value| config["revision"].as_u64().expect("revision");
    let before = revision(hookside.admin_get("/-/config").await.1);
    for _ in 0..40 {
        assert_eq!(hookside.invoke("w", json!({})).await.0, 200);
        hookside.admin_get("/-/config").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = revision(hookside.admin_get("/-/config").await.1);
    assert_eq!(before, after, "no reload happened without a change");
}

#[tokio::test]
async fn a_broken_file_keeps_its_name_against_a_newcomer() {
    let upstream = echo().await;
    let dir = Dir::new();
    dir.file(
        "z-first.toml",
        &format!("name = \"w\"\n{}", versioned(&upstream, "1")),
    );
    let hookside = watching(&dir).await;
    dir.file(
        "a-second.toml",
        &format!("name = \"w\"\n{}", versioned(&upstream, "2")),
    );
    let rejected = eventually(SOON, || async {
        let (_, config) = hookside.admin_get("/-/config").await;
        config.to_string().contains("already used by")
    })
    .await;
    assert!(rejected);
    // Sorted before the serving file, the newcomer would win a cold start; not a reload.
    assert_eq!(path_of(&hookside, "w").await, "/v1");
    // The owner breaks: the newcomer still may not take the name; the last good version serves.
    dir.file("z-first.toml", "name = \"w\"\ncompany = ");
    let stale = eventually(SOON, || async { state_of(&hookside, "w").await == "stale" }).await;
    assert!(stale, "the owner's last good version serves");
    assert_eq!(path_of(&hookside, "w").await, "/v1");
    let (_, config) = hookside.admin_get("/-/config").await;
    let second = config["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("a-second.toml"))
        })
        .expect("listed")
        .clone();
    assert!(
        second["errors"].to_string().contains("already used by"),
        "{second}"
    );
    // The owner is deleted: now the name is free.
    std::fs::remove_file(dir.path().join("z-first.toml")).expect("rm");
    assert!(
        serves(&hookside, "w", "/v2").await,
        "the name passes on once its file is gone"
    );
}

#[tokio::test]
async fn names_claimed_twice_keep_their_owners_over_many_reloads() {
    let upstream = echo().await;
    let dir = Dir::new();
    let template = |version: &str| {
        format!(
            "kind = \"template\"\nname = \"base\"\n{}",
            versioned(&upstream, version)
        )
    };
    // Two templates and a webhook claim `base`; on a cold start, path order gives it to
    // t/a.toml. Reloads that change nothing must not hand it to another.
    dir.file("t/a.toml", &template("1"));
    dir.file("t/b.toml", &template("2"));
    dir.file("w.toml", "name = \"w\"\nextends = \"base\"\n");
    dir.file(
        "z.toml",
        &format!("name = \"base\"\n{}", versioned(&upstream, "3")),
    );
    let hookside = Hookside::start(dir.path()).await;
    for round in 0..12 {
        assert_eq!(path_of(&hookside, "w").await, "/v1", "round {round}");
        assert_eq!(
            path_of(&hookside, "base").await,
            "unknown_webhook",
            "round {round}"
        );
        let (status, _, _) = crate::util::send(
            http::Method::POST,
            &format!("http://{}/-/reload", hookside.admin),
            &[],
            Vec::new(),
        )
        .await;
        assert_eq!(status, 200, "round {round}");
    }
}

#[tokio::test]
async fn changes_where_links_lead_outside_the_directory_are_seen() {
    let upstream = echo().await;
    let dir = Dir::new();
    // The directory, and what its links lead to, beside it.
    dir.file("webhooks.d/plain.toml", &versioned(&upstream, "0"));
    let file = dir.file("elsewhere/linked.toml", &versioned(&upstream, "1"));
    std::os::unix::fs::symlink(&file, dir.path().join("webhooks.d/linked.toml")).expect("link");
    let hookside = Hookside::watching(&dir.path().join("webhooks.d"), Mode::Native).await;
    assert_eq!(path_of(&hookside, "linked").await, "/v1");

    // A linked file edited where it is (a save by rename, as editors do).
    let saved = dir.path().join("elsewhere/.linked.toml.swp");
    std::fs::write(&saved, versioned(&upstream, "2")).expect("write");
    std::fs::rename(&saved, &file).expect("rename");
    assert!(serves(&hookside, "linked", "/v2").await, "a linked file");

    // A folder linked in after the start, then a file edited and one added in it.
    dir.file("shared/late.toml", &versioned(&upstream, "3"));
    std::os::unix::fs::symlink(
        dir.path().join("shared"),
        dir.path().join("webhooks.d/shared"),
    )
    .expect("link");
    assert!(serves(&hookside, "late", "/v3").await, "the link itself");
    tokio::time::sleep(Duration::from_millis(1500)).await; // the watcher's next look
    dir.file("shared/late.toml", &versioned(&upstream, "4"));
    assert!(
        serves(&hookside, "late", "/v4").await,
        "a file in a linked folder"
    );
    dir.file("shared/deeper/new.toml", &versioned(&upstream, "5"));
    assert!(
        serves(&hookside, "new", "/v5").await,
        "a new file in a linked folder"
    );
}

#[tokio::test]
async fn a_serving_file_moved_keeps_its_name_against_the_copy_refused_it() {
    let upstream = echo().await;
    let dir = Dir::new();
    dir.file(
        "x/m.toml",
        &format!("name = \"dup\"\n{}", versioned(&upstream, "1")),
    );
    dir.file(
        "x/z-copy.toml",
        &format!("name = \"dup\"\n{}", versioned(&upstream, "2")),
    );
    let hookside = watching(&dir).await;
    assert_eq!(path_of(&hookside, "dup").await, "/v1");
    // The serving file moves to another folder, sorted after the copy.
    std::fs::create_dir(dir.path().join("y")).expect("mkdir");
    std::fs::rename(dir.path().join("x/m.toml"), dir.path().join("y/m.toml")).expect("mv");
    let moved = eventually(SOON, || async {
        let (_, config) = hookside.admin_get("/-/config").await;
        config["files"].as_array().is_some_and(|files| {
            files.iter().any(|f| {
                f["path"].as_str().is_some_and(|p| p.ends_with("y/m.toml")) && f["state"] == "ok"
            })
        })
    })
    .await;
    assert!(moved, "the moved file is loaded");
    assert_eq!(path_of(&hookside, "dup").await, "/v1", "it keeps its name");
    let (_, entry) = hookside.get("/v1/webhooks/dup").await;
    assert!(
        entry["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("y/m.toml")),
        "{entry}"
    );
    // Moved again beside an identical copy that was refused the name: still its.
    std::fs::write(
        dir.path().join("x/z-copy.toml"),
        format!("name = \"dup\"\n{}", versioned(&upstream, "1")),
    )
    .expect("write");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    std::fs::rename(dir.path().join("y/m.toml"), dir.path().join("y/n.toml")).expect("mv");
    let moved = eventually(SOON, || async {
        let (_, entry) = hookside.get("/v1/webhooks/dup").await;
        entry["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("y/n.toml"))
    })
    .await;
    assert!(
        moved,
        "the moved file keeps the name, not the identical copy"
    );
}
