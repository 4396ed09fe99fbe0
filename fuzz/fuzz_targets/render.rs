//! Fuzzes rendering with arbitrary conversation JSON: it must never panic, the request
//! must go to the file's origin, and every header must be valid (or the render refused).
//! A second webhook of plain lookups must render the same request from the parts of the
//! conversation it parses as from the whole of it, and the partial parse must accept and
//! refuse exactly what a full parse does.
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

const LOOKUPS: &str = r#"company = "acme"
method = "POST"
url = "https://api.acme.example/v1/{{ extractedData.id }}/{{ extractedData.items[0].sku }}?q={{ reply }}"
[headers]
X-Session = "{{ sessionId }}"
X-Last = "{{ extractedData.items[-1].sku | default('none') }}"
[body]
all = "{{ extractedData }}"
text = "Hi {{ firstName }}: {{ reply }}"
n = "{{ moduleId }}"
"#;

fn compiled(name: &str, text: &str) -> Webhook {
    let source = SourceFile::new(Path::new(name).into(), text.to_owned());
    let def = parse(&source).expect("parses");
    compile(&def, &def.fields, 0, &Settings::default(), &Upstream::new(Vec::new())).expect("compiles")
}

fn lookups() -> &'static Webhook {
    static WEBHOOK: OnceLock<Webhook> = OnceLock::new();
    WEBHOOK.get_or_init(|| compiled("/nonexistent/lookups.toml", LOOKUPS))
}

fn webhook() -> &'static Webhook {
    static WEBHOOK: OnceLock<Webhook> = OnceLock::new();
    WEBHOOK.get_or_init(|| compiled("/nonexistent/render.toml", FILE))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let whole = serde_json::from_str::<serde_json::Value>(text);
        let pruned = lookups().reads.conversation.parse(text);
        assert_eq!(whole.is_ok(), pruned.is_ok(), "the partial parse accepts what a full one does");
        if let (Ok(whole), Ok(pruned)) = (whole, pruned) {
            let render = |data: &serde_json::Value| {
                let scope = pipeline::scope(lookups(), data);
                pipeline::render_request(lookups(), &scope, false)
                    .map(|r| (r.request.uri().clone(), r.request.headers().clone(), format!("{:?}", r.request.body())))
                    .map_err(|e| e.message)
            };
            assert_eq!(render(&pruned), render(&whole));
        }
    }
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
