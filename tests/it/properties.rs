//! Property tests: whatever the conversation holds, the request goes to the file's origin,
//! and every header value sent is a valid one (or the invocation is a render error).

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use serde_json::json;

use hookside::config::{self, Settings, Webhook};
use hookside::error::ErrorKind;
use hookside::pipeline;
use hookside::upstream::Upstream;

/// A webhook that puts conversation values everywhere they may go.
fn webhook() -> &'static Arc<Webhook> {
    static WEBHOOK: OnceLock<(tempfile::TempDir, Arc<Webhook>)> = OnceLock::new();
    &WEBHOOK
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(
                dir.path().join("w.toml"),
                r#"company = "acme"
method = "POST"
url = "https://{{ context.host }}:8443/v1/{{ a }}/x/{{ b | lower }}?fixed=1&q={{ a }}"
[context]
host = "api.acme.example"
[headers]
X-A = "{{ a }}"
X-B = "pre-{{ b | upper }}-post"
[query]
c = "{{ a }}"
[body]
a = "{{ a }}"
"#,
            )
            .expect("write");
            let settings = Settings::default();
            let upstream = Upstream::new(Vec::new());
            let loaded = config::load(dir.path(), &settings, &upstream, None).expect("load");
            let webhook = Arc::clone(&loaded.webhooks["w"].webhook);
            (dir, webhook)
        })
        .1
}

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[/?#@:.%&=\\\\ \r\n\t\u{0}\u{7f}a-z\u{202e}]{0,24}",
        Just("..".to_owned()),
        Just("@evil.example".to_owned()),
        Just("http://evil.example:80/".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_origin_never_changes_and_headers_are_valid_or_refused(a in hostile(), b in hostile()) {
        let webhook = webhook();
        let conversation = json!({"a": a, "b": b});
        let scope = pipeline::scope(webhook, &conversation);
        match pipeline::render_request(webhook, &scope, false) {
            Ok(rendered) => {
                let uri = rendered.request.uri();
                prop_assert_eq!(uri.scheme_str(), Some("https"));
                prop_assert_eq!(uri.host(), Some("api.acme.example"));
                prop_assert_eq!(uri.port_u16(), Some(8443));
                let path = uri.path();
                prop_assert!(path.starts_with("/v1/"));
                prop_assert_eq!(path.matches('/').count(), 4, "one segment per value: {}", path);
                let query = uri.query().unwrap_or_default();
                prop_assert!(query.starts_with("fixed=1&q="));
                prop_assert_eq!(query.matches('&').count(), 2, "no parameter added: {}", query);
                for value in rendered.request.headers().values() {
                    prop_assert!(value.as_bytes().iter().all(|&c| c == b'\t' || (c >= 0x20 && c != 0x7f)));
                }
                let body: serde_json::Value = serde_json::from_slice(
                    &http_body_util::BodyExt::collect(rendered.request.into_body())
                        .now_or_never_bytes(),
                ).expect("JSON body");
                prop_assert_eq!(body, json!({"a": a}));
            }
            Err(err) => {
                prop_assert_eq!(err.kind, ErrorKind::RenderError);
                let bad = |s: &str| s.chars().any(|c| (c as u32) < 0x20 && c != '\t' || c == '\u{7f}');
                prop_assert!(bad(&a) || bad(&b), "refused a valid value: {:?} {:?}: {}", a, b, err.message);
            }
        }
    }
}

/// Collects a `Full` body, which is ready at once.
trait NowOrNever {
    fn now_or_never_bytes(self) -> Vec<u8>;
}

impl<F> NowOrNever for F
where
    F: std::future::Future<
            Output = Result<http_body_util::Collected<bytes::Bytes>, std::convert::Infallible>,
        >,
{
    fn now_or_never_bytes(self) -> Vec<u8> {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(self);
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(Ok(collected)) => collected.to_bytes().to_vec(),
            _ => panic!("a Full body is ready at once"),
        }
    }
}
