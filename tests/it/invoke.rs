//! The request path end to end: methods, auth, headers, query, bodies, context values,
//! hostile conversation values, variables and non-2xx answers.

use serde_json::json;

use crate::util::{Dir, Hookside, Reply, Upstream, assert_error, send};

fn webhook(upstream: &Upstream, extra: &str) -> String {
    format!(
        "company = \"acme\"\nurl = \"http://{}/api/{{{{ extractedData.id }}}}\"\n{extra}",
        upstream.host()
    )
}

#[tokio::test]
async fn every_method_reaches_the_upstream() {
    let upstream = Upstream::fixed(Reply::json(200, json!({"ok": 1}))).await;
    let dir = Dir::new();
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    for method in methods {
        let case = if method == "PATCH" { "patch" } else { method };
        dir.file(
            &format!("{}.toml", method.to_lowercase()),
            &webhook(&upstream, &format!("method = \"{case}\"")),
        );
    }
    let hookside = Hookside::start(dir.path()).await;
    for method in methods {
        let (status, answer) = hookside
            .invoke(&method.to_lowercase(), json!({"extractedData": {"id": 1}}))
            .await;
        assert_eq!(status, 200, "{method}: {answer}");
        let expected = if method == "HEAD" {
            json!(null)
        } else {
            json!({"ok": 1})
        };
        assert_eq!(answer["response"], expected, "{method}");
    }
    let seen: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.method.to_string())
        .collect();
    assert_eq!(seen, methods);
}

#[tokio::test]
async fn auth_types_send_the_exact_authorization_header() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    dir.file("secrets/token", "tok-123\n");
    dir.file("none.toml", &webhook(&upstream, ""));
    dir.file(
        "basic.toml",
        &webhook(
            &upstream,
            "[auth]\ntype = \"basic\"\nusername = \"ada\"\npassword = \"${file:secrets/token}\"\n",
        ),
    );
    dir.file(
        "bearer.toml",
        &webhook(
            &upstream,
            "[auth]\ntype = \"bearer\"\ntoken = \"${file:secrets/token}\"\n",
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    for name in ["none", "basic", "bearer"] {
        let (status, answer) = hookside.invoke(name, json!({})).await;
        assert_eq!(status, 200, "{name}: {answer}");
    }
    let seen = upstream.seen();
    assert_eq!(seen[0].header("authorization"), None);
    // base64("ada:tok-123"): the file's trailing newline is trimmed.
    assert_eq!(
        seen[1].header("authorization"),
        Some("Basic YWRhOnRvay0xMjM=")
    );
    assert_eq!(seen[2].header("authorization"), Some("Bearer tok-123"));
}

#[tokio::test]
async fn headers_query_and_typed_json_body() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    dir.file("k", "key-9");
    dir.file(
        "w.toml",
        &format!(
            r#"company = "acme"
method = "POST"
url = "http://{}/items?fixed=1"
[headers]
X-Session = "{{{{ sessionId }}}}"
X-Api-Key = "k-${{file:k}}"
X-Lang = "{{{{ customVariables.lang | default('en') }}}}"
[query]
tag = ["a", "{{{{ reply }}}}"]
empty = "{{{{ nothing }}}}"
[body]
number = "{{{{ extractedData.count }}}}"
object = "{{{{ extractedData }}}}"
list = "{{{{ extractedData.list }}}}"
flag = "{{{{ extractedData.flag }}}}"
missing = "{{{{ extractedData.nope }}}}"
text = "n={{{{ extractedData.count }}}}"
literal = 5
nested = {{ session = "{{{{ sessionId }}}}", fixed = [1, 2] }}
"#,
            upstream.host()
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let conversation = json!({
        "sessionId": "s-1", "reply": "x y&z",
        "extractedData": {"count": 3, "list": [1, "b"], "flag": true}
    });
    let (status, answer) = hookside.invoke("w", conversation).await;
    assert_eq!(status, 200, "{answer}");
    let seen = upstream.only();
    assert_eq!(seen.header("x-session"), Some("s-1"));
    assert_eq!(seen.header("x-api-key"), Some("k-key-9"));
    assert_eq!(seen.header("x-lang"), Some("en"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.target, "/items?fixed=1&empty=&tag=a&tag=x%20y%26z");
    assert_eq!(
        seen.json(),
        json!({
            "number": 3, "object": {"count": 3, "list": [1, "b"], "flag": true},
            "list": [1, "b"], "flag": true, "missing": null, "text": "n=3", "literal": 5,
            "nested": {"session": "s-1", "fixed": [1, 2]}
        })
    );
}

#[tokio::test]
async fn text_body_is_sent_as_rendered() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    dir.file(
        "note.toml",
        &format!(
            "company = \"acme\"\nmethod = \"PUT\"\nurl = \"http://{}/note\"\nbody = '''Hi {{{{ firstName | default(\"there\") }}}}: {{{{ reply }}}} {{{{ missing }}}}|'''\n",
            upstream.host()
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside
        .invoke("note", json!({"reply": "{{ 7*7 }} \"q\""}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let seen = upstream.only();
    // Conversation text is data, never a template; a missing value renders empty.
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        "Hi there: {{ 7*7 }} \"q\" |"
    );
    assert_eq!(
        seen.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

// A plain `{{ context.NAME }}` prints as written even beside expressions that minijinja
// renders (and that are encoded as anything printed from the conversation is).
#[tokio::test]
async fn a_plain_context_value_prints_as_written_beside_other_expressions() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &format!(
            r#"company = "acme"
url = "http://{}/{{{{ context.version }}}}/{{{{ id | upper }}}}?v={{{{ context.version }}}}&q={{{{ id | upper }}}}&r={{{{ context.version ~ id }}}}"
[context]
version = "v2/eu"
"#,
            upstream.host()
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("w", json!({"id": "a7/x"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        upstream.only().target,
        "/v2/eu/A7%2FX?v=v2/eu&q=A7%2FX&r=v2%2Feua7%2Fx"
    );
}

#[tokio::test]
async fn context_values_fill_host_and_path_and_hostile_values_stay_in_their_segment() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    let port = upstream.addr.port();
    dir.file(
        "w.toml",
        &format!(
            r#"company = "acme"
url = "http://{{{{ context.host }}}}:{{{{ context.port }}}}/{{{{ context.version }}}}/orders/{{{{ extractedData.id }}}}?q={{{{ reply }}}}"
[context]
host = "127.0.0.1"
port = {port}
version = "v2"
[headers]
X-Hook = "{{{{ webhook.name }}}}@{{{{ webhook.company }}}}"
[variables]
region = "context.version"
"#
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let hostile = [
        ("a/b", "/v2/orders/a%2Fb"),
        ("x?admin=1", "/v2/orders/x%3Fadmin%3D1"),
        ("evil.example/", "/v2/orders/evil.example%2F"),
        ("@evil.example", "/v2/orders/%40evil.example"),
        ("#frag", "/v2/orders/%23frag"),
        ("a..", "/v2/orders/a.."),
        ("%2E%2E", "/v2/orders/%252E%252E"),
    ];
    for (value, _) in hostile {
        let (status, answer) = hookside
            .invoke(
                "w",
                json!({"extractedData": {"id": value}, "reply": "a&b=c#d"}),
            )
            .await;
        assert_eq!(status, 200, "{value}: {answer}");
        assert_eq!(
            answer["variables"]["region"], "v2",
            "context at mapping time"
        );
    }
    let seen = upstream.seen();
    assert_eq!(
        seen.len(),
        hostile.len(),
        "every request reached the same upstream"
    );
    for (request, (value, path)) in seen.iter().zip(hostile) {
        assert_eq!(request.target, format!("{path}?q=a%26b%3Dc%23d"), "{value}");
        assert_eq!(
            request.header("host"),
            Some(upstream.host().as_str()),
            "{value}"
        );
        assert_eq!(request.header("x-hook"), Some("w@acme"), "{value}");
    }
}

#[tokio::test]
async fn a_value_that_would_make_a_dot_segment_is_refused_before_the_call() {
    let upstream = Upstream::fixed(Reply::json(200, json!({}))).await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/v1/{{{{ extractedData.kind }}}}/{{{{ extractedData.id }}}}{{{{ extractedData.tail }}}}/status\"\n",
            upstream.host()
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    // `%2E` is `.` to a server that normalises the path (RFC 3986, 6.2.2.2): `..` here
    // would reach `/admin/status` instead of an order.
    for (kind, id, tail) in [
        ("..", "admin", ""),
        ("orders", ".", ""),
        ("orders", ".", "."),
        ("orders", "../../admin", ""),
        ("orders", "x\\..", ""),
    ] {
        let answer = hookside
            .invoke(
                "w",
                json!({"extractedData": {"kind": kind, "id": id, "tail": tail}}),
            )
            .await;
        assert_error(&answer, 422, "render_error");
        let message = answer.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("another path"), "{message}");
    }
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
    // Dots with anything else in the segment are a plain value.
    let (status, answer) = hookside
        .invoke(
            "w",
            json!({"extractedData": {"kind": "orders", "id": "v1..2", "tail": "."}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(upstream.only().target, "/v1/orders/v1..2%2E/status");
}

#[tokio::test]
async fn variables_map_jinja_and_jsonpath_with_types_and_missing() {
    let upstream = Upstream::fixed(Reply::json(
        200,
        json!({"a": {"b": [{"n": 1.5, "tag": "X"}, {"n": 7, "tag": "Y"}]}, "ok": true, "nothing": null}),
    ))
    .await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &webhook(
            &upstream,
            r#"[variables]
first = "response.a.b[0].n"
upper = "{{ response.a.b[1].tag | lower }}"
count = "response.a.b | length"
flag = "response.ok"
session = "sessionId"
status_code = "status"
path_one = "$.a.b[1].n"
path_filter = "$.a.b[?@.n > 2].tag"
path_all = "$.a.b[*].n"
found_null = "$.nothing"
gone = "response.not.there"
gone_path = "$.not.there"
"#,
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("w", json!({"sessionId": "s-9"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["variables"],
        json!({
            "first": 1.5, "upper": "y", "count": 2, "flag": true, "session": "s-9",
            "status_code": 200, "path_one": 7, "path_filter": ["Y"], "path_all": [1.5, 7],
            "found_null": null, "gone": null, "gone_path": null
        })
    );
    assert_eq!(answer["missing"], json!(["gone", "gone_path"]));
    assert_eq!(answer["ok"], true);
    assert!(answer["duration_ms"].as_f64().expect("number") >= 0.0);
}

#[tokio::test]
async fn a_non_2xx_answer_is_200_with_ok_false_and_mapped() {
    let upstream = Upstream::fixed(Reply::json(404, json!({"error": "no such order"}))).await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &webhook(&upstream, "[variables]\nwhy = \"response.error\"\n"),
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("w", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], 404);
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["variables"]["why"], "no such order");
    assert_eq!(answer["response"], json!({"error": "no such order"}));
}

#[tokio::test]
async fn a_redirect_is_the_upstreams_answer_and_not_followed() {
    let upstream = Upstream::start(|_| {
        let mut reply = Reply::json(302, json!({"moved": true}));
        reply
            .headers
            .push(("location".into(), "http://169.254.169.254/latest".into()));
        reply
    })
    .await;
    let dir = Dir::new();
    dir.file("w.toml", &webhook(&upstream, ""));
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("w", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (answer["status"].as_u64(), answer["ok"].as_bool()),
        (Some(302), Some(false))
    );
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn an_upstream_echoing_a_secret_has_it_replaced() {
    // The PIN comes back as a JSON number, as an API that parses it would echo it.
    // A 20-digit one parses as a float and prints rounded (9.876543210987654e19).
    let upstream = Upstream::start(|seen| {
        let header = |name: &str| json!(seen.header(name));
        let pin: u64 = seen.header("x-pin").unwrap_or("0").parse().unwrap_or(0);
        let long = seen.header("x-long").unwrap_or("0");
        Reply::raw(
            200,
            format!(
                r#"{{"echo": {}, "key": {}, "pin": {pin}, "near": {}, "long": {long}}}"#,
                header("authorization"),
                header("x-key"),
                pin + 1
            ),
        )
    })
    .await;
    let dir = Dir::new();
    dir.file("t", "canary-secret-value");
    dir.file("pin", "4455667788");
    dir.file("long", "98765432109876543210");
    dir.file(
        "w.toml",
        &webhook(
            &upstream,
            "[auth]\ntype = \"bearer\"\ntoken = \"${file:t}\"\n[headers]\nX-Key = \"${file:t}\"\nX-Pin = \"${file:pin}\"\nX-Long = \"${file:long}\"\n[variables]\nleak = \"response.echo\"\npin = \"$.pin\"\n",
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("w", json!({})).await;
    assert_eq!(status, 200);
    let text = answer.to_string();
    assert!(!text.contains("canary-secret-value"), "{text}");
    assert!(!text.contains("4455667788"), "{text}");
    assert_eq!(answer["variables"]["leak"], "Bearer ***");
    assert_eq!(answer["response"]["key"], "***");
    assert_eq!(answer["response"]["pin"], "***");
    assert_eq!(answer["variables"]["pin"], "***");
    assert_eq!(
        answer["response"]["near"], 4455667789_u64,
        "other numbers stay numbers"
    );
    assert_eq!(answer["response"]["long"], "***");
    assert!(!text.contains("9876543210987654"), "{text}");
}

#[tokio::test]
async fn escaped_echoes_and_encoded_query_secrets_are_scrubbed_and_empty_passwords_harmless() {
    // The upstream echoes the token with `/` escaped (PHP's json_encode does) and quotes its
    // request URL, where the query secret travels percent-encoded.
    let upstream = Upstream::start(|seen| {
        let auth = seen
            .header("authorization")
            .unwrap_or_default()
            .replace('/', "\\/");
        let body = format!(r#"{{"auth": "{auth}", "url": "{}"}}"#, seen.target);
        Reply::raw(200, body)
    })
    .await;
    let dir = Dir::new();
    dir.file("token", "tok/en+secret");
    dir.file("key", "key with/space&more");
    dir.file(
        "w.toml",
        &webhook(
            &upstream,
            "[auth]\ntype = \"bearer\"\ntoken = \"${file:token}\"\n[query]\nk = \"${file:key}\"\n",
        ),
    );
    dir.file(
        "empty.toml",
        &webhook(
            &upstream,
            "[auth]\ntype = \"basic\"\nusername = \"sk_live_user\"\npassword = \"\"\n",
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("w", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer.to_string();
    assert!(
        !text.contains("tok/en+secret") && !text.contains("tok\\/en"),
        "{text}"
    );
    assert_eq!(answer["response"]["auth"], "Bearer ***");
    assert!(!text.contains("key%20with%2Fspace%26more"), "{text}");
    assert!(
        answer["response"]["url"]
            .as_str()
            .expect("url")
            .ends_with("k=***"),
        "{answer}"
    );
    // An empty password is no secret to scrub: answers stay readable.
    let (status, answer) = hookside.invoke("empty", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["response"]["url"]
            .as_str()
            .expect("url")
            .starts_with("/api/"),
        "{answer}"
    );
}

#[tokio::test]
async fn secrets_echoed_in_other_spellings_are_scrubbed_too() {
    // No backslash anywhere in the body: the numbers spelled another way, the query secret
    // as a form encodes it (or with lower-case hex), the basic pair's base64 unpadded.
    use base64::Engine as _;
    let pair = base64::engine::general_purpose::STANDARD_NO_PAD.encode("svc-user:pw-55443322");
    let body = format!(
        r#"{{"pin": 4.455667788e9, "long": 9.876543210987654e19, "form": "key+with%2Fspace%26more", "lower": "key%20with%2fspace%26more", "pair": "{pair}", "near": 4.455667789e9}}"#
    );
    let upstream = Upstream::fixed(Reply::raw(200, body)).await;
    let dir = Dir::new();
    dir.file("pin", "4455667788");
    dir.file("long", "98765432109876543210");
    dir.file("key", "key with/space&more");
    dir.file("password", "pw-55443322");
    dir.file(
        "w.toml",
        &webhook(
            &upstream,
            "[auth]\ntype = \"basic\"\nusername = \"svc-user\"\npassword = \"${file:password}\"\n[headers]\nX-Pin = \"${file:pin}\"\nX-Long = \"${file:long}\"\n[query]\nk = \"${file:key}\"\n[variables]\nall = \"response\"\n",
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside.invoke("w", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer.to_string();
    for leak in [
        "4455667788",
        "9876543210987654",
        "key+with",
        "key%20with",
        pair.as_str(),
    ] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    assert_eq!(answer["response"]["form"], "***");
    assert_eq!(answer["response"]["lower"], "***");
    assert_eq!(answer["response"]["pair"], "***");
    assert_eq!(answer["response"]["near"], 4455667789.0, "{answer}");
}

#[tokio::test]
async fn plain_lookups_parse_only_what_they_read_yet_validate_everything() {
    let mut body =
        br#"{"order": {"status": "shipped", "lines": [{"sku": "A"}]}, "note": "caf"#.to_vec();
    body.extend_from_slice(b"\xe9\"}");
    let bad_utf8 = Upstream::fixed(Reply::raw(200, body)).await;
    let good = Upstream::fixed(Reply::json(
        200,
        json!({"order": {"status": "shipped", "lines": [{"sku": "A"}]}, "note": "x"}),
    ))
    .await;
    let dir = Dir::new();
    let variables = "[headers]\nX-Session = \"{{ sessionId }}\"\n[variables]\nstatus = \"response.order.status\"\nsku = \"$.order.lines[0].sku\"\n";
    dir.file("good.toml", &webhook(&good, variables));
    dir.file("bad.toml", &webhook(&bad_utf8, variables));
    let hookside = Hookside::start(dir.path()).await;

    let conversation =
        json!({"sessionId": "s-1", "extractedData": {"id": "7"}, "other": [1, {"deep": true}]});
    let (status, answer) = hookside.invoke("good", conversation.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["variables"],
        json!({"status": "shipped", "sku": "A"})
    );
    // The answer carries the whole response, not only what the variables read.
    assert_eq!(
        answer["response"],
        json!({"order": {"status": "shipped", "lines": [{"sku": "A"}]}, "note": "x"})
    );
    assert_eq!(good.only().target, "/api/7");
    assert_eq!(good.only().header("x-session"), Some("s-1"));

    // Invalid UTF-8 in a string no variable reads.
    let answer = hookside.invoke("bad", conversation).await;
    crate::util::assert_error(&answer, 502, "upstream_invalid_response");

    // A conversation broken where no template reads is still refused.
    let (status, _, body) = crate::util::send(
        http::Method::POST,
        &format!("http://{}/v1/webhooks/good", hookside.bot),
        &[],
        br#"{"sessionId": "s-1", "other": [1, {"deep": }]}"#.to_vec(),
    )
    .await;
    crate::util::assert_error(&(status, crate::util::parse(&body)), 400, "bad_request");
}

#[tokio::test]
async fn variables_read_the_answers_headers_only_where_a_mapping_asks() {
    let mut reply = Reply::json(200, json!({"id": 7}));
    reply.headers.push(("x-total".into(), "42".into()));
    reply.headers.push(("X-Page".into(), "3".into()));
    let upstream = Upstream::fixed(reply).await;
    let dir = Dir::new();
    dir.file(
        "plain.toml",
        &webhook(
            &upstream,
            "[variables]\ntotal = \"headers['x-total']\"\nid = \"response.id\"\n",
        ),
    );
    dir.file(
        "jinja.toml",
        &webhook(
            &upstream,
            "[variables]\nnext = \"(headers['x-page'] | int) + 1\"\ncount = \"headers | length >= 2\"\n",
        ),
    );
    dir.file(
        "body.toml",
        &webhook(&upstream, "[variables]\nid = \"$.id\"\n"),
    );
    let hookside = Hookside::start(dir.path()).await;
    let conversation = json!({"extractedData": {"id": 1}});

    let (status, answer) = hookside.invoke("plain", conversation.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["variables"], json!({"total": "42", "id": 7}));
    assert_eq!(answer["missing"], json!([]));

    let (_, answer) = hookside.invoke("jinja", conversation.clone()).await;
    assert_eq!(
        answer["variables"],
        json!({"next": 4, "count": true}),
        "{answer}"
    );

    // Its answer's fields are not kept; framing still reads them (the body is whole).
    let (_, answer) = hookside.invoke("body", conversation).await;
    assert_eq!(answer["variables"], json!({"id": 7}));
    assert_eq!(answer["response"], json!({"id": 7}));
}

#[tokio::test]
async fn plain_lookups_print_and_index_as_jinja_does() {
    let upstream = Upstream::fixed(Reply::json(200, json!({"name": "Ünal", "ratio": 1e20}))).await;
    let dir = Dir::new();
    // Each value twice: as a plain lookup (hookside's own fast path) and forced through
    // minijinja by `~ ''`. Both must print the same.
    dir.file(
        "w.toml",
        &webhook(
            &upstream,
            r#"[headers]
X-Initial = "{{ firstName[0] }}|{{ firstName[-1] }}|{{ firstName[0][0] }}|{{ firstName[9] }}"
X-Initial-Jinja = "{{ firstName[0] ~ '' }}|{{ firstName[-1] ~ '' }}|{{ firstName[0][0] ~ '' }}|{{ firstName[9] }}"
X-N = "{{ n }}|{{ small }}|{{ count }}"
X-N-Jinja = "{{ n ~ '' }}|{{ small ~ '' }}|{{ count ~ '' }}"
[variables]
letter = "response.name[0]"
letter_jinja = "{{ response.name[0] ~ '' }}"
last = "response.name[-1]"
"#,
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let (status, answer) = hookside
        .invoke(
            "w",
            json!({"firstName": "Zoe", "n": 1e20, "small": 1.5, "count": 7, "extractedData": {"id": "1"}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let seen = upstream.only();
    assert_eq!(seen.header("x-initial"), Some("Z|e|Z|"));
    assert_eq!(seen.header("x-initial"), seen.header("x-initial-jinja"));
    assert_eq!(seen.header("x-n"), seen.header("x-n-jinja"));
    assert_eq!(seen.header("x-n"), Some("100000000000000000000.0|1.5|7"));
    assert_eq!(answer["variables"]["letter"], "Ü");
    assert_eq!(
        answer["variables"]["letter"],
        answer["variables"]["letter_jinja"]
    );
    assert_eq!(answer["variables"]["last"], "l");
    assert_eq!(answer["missing"], json!([]), "{answer}");
}

#[tokio::test]
async fn header_values_beyond_ascii_go_as_utf_8_and_are_shown_and_read_as_text() {
    let upstream = Upstream::start(|seen| {
        let sent = seen.headers.get("x-b").map(|v| v.as_bytes().to_vec());
        let mut reply = Reply::json(
            200,
            json!({ "x-b": sent.map(|b| String::from_utf8(b).expect("UTF-8")) }),
        );
        reply.headers.push(("x-name".into(), "José ☃".into()));
        reply
    })
    .await;
    let dir = Dir::new();
    dir.file(
        "w.toml",
        &format!(
            "company = \"acme\"\nurl = \"http://{}/\"\n[headers]\nX-B = \"é ☃ {{{{ reply }}}}\"\n[variables]\nsent = \"response['x-b']\"\nname = \"headers['x-name']\"\n",
            upstream.host()
        ),
    );
    let hookside = Hookside::start(dir.path()).await;
    let url = format!("http://{}/v1/webhooks/w/test?dry_run=false", hookside.bot);
    let (status, _, body) = send(
        http::Method::POST,
        &url,
        &[],
        json!({ "reply": "ü" }).to_string().into_bytes(),
    )
    .await;
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["variables"]["sent"], "é ☃ ü", "{answer}");
    assert_eq!(answer["variables"]["name"], "José ☃", "{answer}");
    let shown = answer["request"]["headers"]
        .as_array()
        .and_then(|h| h.iter().find(|pair| pair[0] == "x-b"))
        .cloned();
    assert_eq!(shown, Some(json!(["x-b", "é ☃ ü"])), "{answer}");
}
