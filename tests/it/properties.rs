//! Property tests: whatever the conversation holds, the request goes to the file's origin,
//! and every header value sent is a valid one (or the invocation is a render error); and a
//! webhook of plain lookups renders and maps the same from the parts of the conversation
//! and response it parses as from the whole documents.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use serde_json::json;

use hookside::config::{self, Settings, Webhook};
use hookside::error::ErrorKind;
use hookside::pipeline;
use hookside::render::Scope;
use hookside::render::select::Data;
use hookside::upstream::Upstream;

/// Loads `text` as the one file of a temporary directory, as `serve` would.
fn load(text: &str) -> (tempfile::TempDir, Arc<Webhook>) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("w.toml"), text).expect("write");
    let settings = Settings::default();
    let upstream = Upstream::new(Vec::new());
    let loaded = config::load(dir.path(), &settings, &upstream, None).expect("load");
    let webhook = Arc::clone(&loaded.webhooks["w"].webhook);
    (dir, webhook)
}

/// A webhook that puts conversation values everywhere they may go.
fn webhook() -> &'static Arc<Webhook> {
    static WEBHOOK: OnceLock<(tempfile::TempDir, Arc<Webhook>)> = OnceLock::new();
    &WEBHOOK
        .get_or_init(|| {
            load(
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
        })
        .1
}

/// A webhook of plain lookups only, reaching into objects and arrays, with defaults.
fn lookups() -> &'static Arc<Webhook> {
    static WEBHOOK: OnceLock<(tempfile::TempDir, Arc<Webhook>)> = OnceLock::new();
    &WEBHOOK
        .get_or_init(|| {
            let (dir, webhook) = load(
                r#"company = "acme"
method = "POST"
url = "http://127.0.0.1:9/o/{{ extractedData.a }}/{{ extractedData.items[0].x }}?r={{ reply }}"
[headers]
X-S = "{{ sessionId }}"
X-B = "{{ extractedData.b[-1] | default('none') }}"
[body]
whole = "{{ extractedData.a }}"
deep = "{{ extractedData.items }}"
text = "s={{ sessionId }} r={{ reply }} x={{ extractedData.x.a.b }}"
[variables]
one = "response.a.b"
two = "$.items[1].x"
three = "response.x[-1]"
four = "sessionId"
five = "$.a"
"#,
            );
            assert!(!webhook.reads.conversation.is_all() && !webhook.reads.response.is_all());
            (dir, webhook)
        })
        .1
}

/// Any JSON, with keys the lookups above follow.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-z\u{e9}\"\\\\/ ]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        let key = prop_oneof![
            Just("a"),
            Just("b"),
            Just("x"),
            Just("items"),
            Just("other")
        ]
        .prop_map(String::from);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key, inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn conversation() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("sessionId"),
        Just("reply"),
        Just("extractedData"),
        Just("moduleId")
    ]
    .prop_map(String::from);
    prop::collection::btree_map(key, json(), 0..5)
        .prop_map(|map| serde_json::Value::Object(map.into_iter().collect()))
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
                let uri = &rendered.request.uri;
                prop_assert_eq!(uri.scheme_str(), Some("https"));
                prop_assert_eq!(uri.host(), Some("api.acme.example"));
                prop_assert_eq!(uri.port_u16(), Some(8443));
                let path = uri.path();
                prop_assert!(path.starts_with("/v1/"));
                prop_assert_eq!(path.matches('/').count(), 4, "one segment per value: {}", path);
                for segment in path.split('/') {
                    let decoded = segment.replace("%2E", ".").replace("%2F", "/").replace("%5C", "/");
                    prop_assert!(!decoded.split('/').any(|p| p == "." || p == ".."), "a dot-segment: {}", path);
                }
                let query = uri.query().unwrap_or_default();
                prop_assert!(query.starts_with("fixed=1&q="));
                prop_assert_eq!(query.matches('&').count(), 2, "no parameter added: {}", query);
                for (_, value) in &rendered.request.headers {
                    prop_assert!(value.as_bytes().iter().all(|&c| c == b'\t' || (c >= 0x20 && c != 0x7f)));
                }
                let body: serde_json::Value = serde_json::from_slice(
                    &rendered.request.body,
                ).expect("JSON body");
                prop_assert_eq!(body, json!({"a": a}));
            }
            Err(err) => {
                prop_assert_eq!(err.kind, ErrorKind::RenderError);
                let bad = |s: &str| s.chars().any(|c| (c as u32) < 0x20 && c != '\t' || c == '\u{7f}');
                // A value holding a `.` or `..` segment (between `/` or `\`) is refused too.
                let dots = |s: &str| s.split(['/', '\\']).any(|p| p == "." || p == "..");
                prop_assert!(bad(&a) || bad(&b) || dots(&a) || dots(&b), "refused a valid value: {:?} {:?}: {}", a, b, err.message);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn parsing_only_what_lookups_read_renders_and_maps_the_same(
        conversation in conversation(),
        response in json(),
    ) {
        let webhook = lookups();
        let text = conversation.to_string();
        let pruned = webhook.reads.conversation.parse(&text).expect("valid JSON");
        let render = |data: Data<'_>| {
            let scope = Scope::of(&webhook.fixed, data);
            pipeline::render_request(webhook, &scope, false)
                .map(|rendered| {
                    let request = rendered.request;
                    (request.method, request.uri, request.headers, request.body)
                })
                .map_err(|err| err.message)
        };
        let picked = Data::Picked(&webhook.reads.conversation, &pruned);
        prop_assert_eq!(render(picked), render(Data::Whole(&conversation)));

        let answer = response.to_string();
        let pruned_answer = webhook.reads.response.parse(&answer).expect("valid JSON");
        let headers = http::HeaderMap::new();
        let map = |data: Data<'_>, body: Data<'_>| {
            let scope = Scope::of(&webhook.fixed, data);
            pipeline::map_variables(webhook, &scope, 200, &headers, body, 10 << 20)
        };
        let picked_answer = Data::Picked(&webhook.reads.response, &pruned_answer);
        prop_assert_eq!(
            map(picked, picked_answer),
            map(Data::Whole(&conversation), Data::Whole(&response))
        );
    }
}
