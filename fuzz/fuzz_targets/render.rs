//! Fuzzes rendering with arbitrary conversation JSON: it must never panic, the request
//! must go to the file's origin, and every header must be valid (or the render refused).
//!
//! Run with: bash fuzz/run.sh
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use hookside::config::compile::{Webhook, compile};
use hookside::config::raw::parse;
use hookside::config::source::SourceFile;
use hookside::config::Settings;
use hookside::pipeline;
use hookside::upstream::Upstream;
use libfuzzer_sys::fuzz_target;

const FILE: &str = r#"company = "acme"
method = "POST"
url = "https://{{ context.host }}/v1/{{ extractedData.id }}/{{ reply | lower }}?q={{ reply }}"
[context]
host = "api.acme.example"
[headers]
X-Session = "{{ sessionId }}"
X-Mixed = "{% for k in extractedData %}{{ k }},{% endfor %}"
[query]
tag = ["{{ customVariables.tag }}", "{{ from | default('none') }}"]
[body]
all = "{{ extractedData }}"
text = "Hi {{ firstName | default('there') }}: {{ reply }}"
n = "{{ moduleId + 1 }}"
[variables]
v = "response.a"
"#;

fn webhook() -> &'static Webhook {
    static WEBHOOK: OnceLock<Webhook> = OnceLock::new();
    WEBHOOK.get_or_init(|| {
        let source = SourceFile::new(Path::new("/nonexistent/render.toml").into(), FILE.to_owned());
        let def = parse(&source).expect("parses");
        compile(&def, &def.fields, 0, &Settings::default(), &Upstream::new(Vec::new())).expect("compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(conversation) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if !conversation.is_object() {
        return;
    }
    let webhook = webhook();
    let scope = pipeline::scope(webhook, &conversation);
    if let Ok(rendered) = pipeline::render_request(webhook, &scope, false) {
        let uri = rendered.request.uri();
        assert_eq!(uri.scheme_str(), Some("https"));
        assert_eq!(uri.host(), Some("api.acme.example"));
        assert_eq!(uri.port_u16(), None);
        assert_eq!(uri.path().matches('/').count(), 3);
    }
});
