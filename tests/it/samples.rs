//! The shipped `webhooks.d/` against the shipped example upstream, with the real binaries:
//! every sample webhook answers with its variables mapped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::util::{Dir, Process, get, parse, send};

/// Copies `from` into `to`, replacing the sample upstream's address.
fn copy_tree(from: &Path, to: &Path, address: &str) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target, address);
        } else {
            let text = std::fs::read_to_string(entry.path()).expect("read");
            std::fs::write(target, text.replace("127.0.0.1:8900", address)).expect("write");
        }
    }
}

fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("examples")
        .join(name)
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn every_sample_webhook_answers_against_the_example_upstream() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = free.local_addr().expect("addr").to_string();
    drop(free);
    let upstream = Killed(
        Command::new(example_binary("upstream"))
            .arg(&address)
            .stderr(Stdio::null())
            .spawn()
            .expect("the example upstream is built by cargo test"),
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Dir::new();
    copy_tree(
        &root.join("webhooks.d"),
        &dir.path().join("webhooks.d"),
        &address,
    );
    copy_tree(
        &root.join("examples/secrets"),
        &dir.path().join("examples/secrets"),
        &address,
    );
    let process = Process::serve(
        &dir.path().join("webhooks.d"),
        &[],
        &[("HOOKSIDE_DEMO_CRM_PASSWORD", "crm-demo-password")],
    );
    let (_, _, listing) = get(&format!("http://{}/v1/webhooks", process.bot)).await;
    let listing = parse(&listing);
    let names: Vec<String> = listing["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|w| w["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names.len(), 5, "{listing}");
    let conversation = json!({
        "sessionId": "s-1", "reply": "late", "moduleId": 4, "from": "user-9",
        "extractedData": {"orderId": "A-17", "priority": 1, "email": "ada@example.com"},
        "customVariables": {"subscription_id": "sub-1"}
    });
    // The upstream may still be starting: retry the first call briefly.
    let first = format!("http://{}/v1/webhooks/{}", process.bot, names[0]);
    let ready = crate::util::eventually(std::time::Duration::from_secs(10), || {
        let first = first.clone();
        async move {
            send(http::Method::POST, &first, &[], b"{}".to_vec())
                .await
                .0
                != 502
        }
    })
    .await;
    assert!(
        ready,
        "the example upstream did not come up: {}",
        process.log()
    );
    for name in &names {
        let url = format!("http://{}/v1/webhooks/{name}", process.bot);
        let (status, _, body) = send(
            http::Method::POST,
            &url,
            &[],
            conversation.to_string().into_bytes(),
        )
        .await;
        let answer = parse(&body);
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["ok"], true, "{name}: {answer}");
        assert_eq!(answer["missing"], json!([]), "{name}: {answer}");
    }
    drop(upstream);
}
