//! Request templates: one process-wide minijinja environment, text templates (with secrets
//! spliced in after rendering), typed JSON bodies, and the URL rule.
//!
//! Everything here is compiled when a file loads; the request path only evaluates.
//! Conversation data is only ever template *data*: it is never compiled as a template, and
//! secrets are never in the data (they are joined to the rendered text afterwards).
//!
//! The URL rule: the scheme and authority are rendered once, at load time, from `context`
//! and `webhook` alone. The path and the query are rendered per request with an escaping
//! formatter: every value a `{{ }}` prints is percent-encoded as one path segment or one
//! query component, so no conversation value can add a `/`, `?`, `#`, `&` or `@`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{AutoEscape, Environment, Expression, UndefinedBehavior, Value};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::secret::{self, Piece};

/// Template names that select the escaping of what `{{ }}` prints.
const TEXT: &str = "text";
const PATH: &str = "url-path";
const QUERY: &str = "url-query";

/// Instructions a single render or evaluation may spend: a loop over a huge array fails
/// fast as a render error instead of holding a worker.
const FUEL: u64 = 50_000;

/// Unreserved characters stay; everything else a conversation value holds is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a trusted (file-written, `context`) value may not hold raw in a path.
const TRUSTED_PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// What a trusted value may not hold raw in a query.
const TRUSTED_QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`');

/// The one template environment of the process. Its settings never change, so it is
/// built once and compiled templates borrow it for `'static` (no per-snapshot copies of
/// the builtin filter tables).
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    env.set_auto_escape_callback(|name| match name {
        PATH | QUERY => AutoEscape::Custom(std::borrow::Cow::Borrowed(if name == PATH {
            PATH
        } else {
            QUERY
        })),
        _ => AutoEscape::None,
    });
    env.set_formatter(format_value);
    env
});

self_cell::self_cell!(
    /// A compiled template that owns its source.
    struct OwnedTemplate {
        owner: (&'static str, Box<str>),
        #[covariant]
        dependent: CompiledTemplate,
    }
);

type CompiledTemplate<'a> = minijinja::Template<'a, 'a>;

impl std::fmt::Debug for OwnedTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template({:?})", self.borrow_owner().1)
    }
}

/// Converts any serializable value into template data.
pub fn value_of<T: serde::Serialize>(value: T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

/// A compiled expression (`{{ expr }}` leaves, Custom Variables). It owns its source.
pub type CompiledExpression = Expression<'static, 'static>;

/// How what a template prints is escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As is (headers, bodies, query values before encoding).
    Text,
    /// One path segment per printed value.
    Path,
    /// One query component per printed value.
    Query,
}

/// A text value of a file: literal text, templates and secrets, in order.
#[derive(Debug)]
pub struct TextTemplate {
    parts: Vec<TextPart>,
    source: String,
}

#[derive(Debug)]
enum TextPart {
    Literal(String),
    Template(OwnedTemplate),
    Secret(secret::Secret),
}

/// A rendered text value: the value to send, and, when it holds a secret, the same value
/// with the secret as `***` for anything shown to people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// What is sent.
    pub value: String,
    /// What is shown, when it differs from `value`.
    pub redacted: Option<String>,
}

/// A JSON body template: a tree whose string leaves are templates.
#[derive(Debug)]
pub enum JsonTemplate {
    /// A subtree with no template in it.
    Literal(serde_json::Value),
    /// A leaf that is exactly one `{{ expr }}`: keeps the value's JSON type.
    Expression(Box<CompiledExpression>),
    /// A leaf with text around its templates: a string.
    Text(TextTemplate),
    /// An array with templates in it.
    Array(Vec<JsonTemplate>),
    /// A table with templates in it.
    Object(Vec<(String, JsonTemplate)>),
}

/// A compiled URL: a fixed origin, and path and query templates.
#[derive(Debug)]
pub struct UrlTemplate {
    /// `scheme://host[:port]`, rendered at load time.
    pub origin: String,
    /// The host, for the destination policy.
    pub host: String,
    path: TextTemplate,
    query: Option<TextTemplate>,
}

/// The data every request template sees: the conversation's keys at the top level, plus
/// `context` and `webhook`; for Custom Variables also `response`, `status` and `headers`.
/// Cloning is cheap: every field is a reference-counted template value.
#[derive(Clone, Debug)]
pub struct TemplateData {
    /// The conversation object the bot sent.
    pub conversation: Value,
    /// The webhook's Context Values.
    pub context: Value,
    /// `{ name, company }`.
    pub webhook: Value,
    /// Set while mapping: `response`, `status` and `headers` of the upstream's answer.
    pub answer: Option<AnswerData>,
}

/// The upstream answer as variables see it.
#[derive(Clone, Debug)]
pub struct AnswerData {
    /// The parsed response body.
    pub response: Value,
    /// The HTTP status as a number.
    pub status: Value,
    /// Response headers by lower-case name.
    pub headers: Value,
}

impl Object for TemplateData {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        if let Some(answer) = &self.answer {
            match key {
                "response" => return Some(answer.response.clone()),
                "status" => return Some(answer.status.clone()),
                "headers" => return Some(answer.headers.clone()),
                _ => {}
            }
        }
        match key {
            "context" => Some(self.context.clone()),
            "webhook" => Some(self.webhook.clone()),
            _ => self
                .conversation
                .get_attr(key)
                .ok()
                .filter(|value| !value.is_undefined()),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<Value> = vec![Value::from("context"), Value::from("webhook")];
        if self.answer.is_some() {
            keys.extend(["response", "status", "headers"].map(Value::from));
        }
        if let Ok(iter) = self.conversation.try_iter() {
            keys.extend(iter);
        }
        Enumerator::Values(keys)
    }
}

impl TemplateData {
    /// Wraps the data as a template context value.
    pub fn into_value(self) -> Value {
        Value::from_object(self)
    }
}

/// Whether a string holds template syntax at all (literal strings are never compiled).
pub fn is_template(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{#")
}

/// Compiles a Jinja expression, written bare or inside one `{{ }}`.
pub fn compile_expression(source: &str) -> Result<CompiledExpression, String> {
    let bare = single_expression(source).unwrap_or(source);
    ENV.compile_expression_owned(bare.to_owned())
        .map_err(|err| describe(&err))
}

/// The inside of a string that is exactly one `{{ expr }}`, if it is.
pub fn single_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

/// Evaluates an expression; undefined stays undefined.
pub fn eval(expression: &CompiledExpression, data: &Value) -> Result<Value, String> {
    expression.eval(data).map_err(|err| describe(&err))
}

/// The names an expression reads, dotted (`context.region`).
pub fn expression_names(expression: &CompiledExpression) -> BTreeSet<String> {
    expression.undeclared_variables(true).into_iter().collect()
}

impl TextTemplate {
    /// Compiles a value whose secrets are already resolved.
    pub fn compile(pieces: Vec<Piece>, mode: Mode) -> Result<TextTemplate, String> {
        let source = secret::redact(&pieces);
        let mut parts = Vec::with_capacity(pieces.len());
        for piece in pieces {
            parts.push(match piece {
                Piece::Secret(secret) => TextPart::Secret(secret),
                Piece::Text(text) if !is_template(&text) => TextPart::Literal(text),
                Piece::Text(text) => {
                    let name = match mode {
                        Mode::Text => TEXT,
                        Mode::Path => PATH,
                        Mode::Query => QUERY,
                    };
                    let template = OwnedTemplate::try_new((name, text.into_boxed_str()), |owner| {
                        let env: &Environment<'_> = &ENV;
                        env.template_from_named_str(owner.0, &owner.1)
                    })
                    .map_err(|err| describe(&err))?;
                    TextPart::Template(template)
                }
            });
        }
        Ok(TextTemplate { parts, source })
    }

    /// Compiles a plain string (no secrets).
    pub fn from_str(source: &str, mode: Mode) -> Result<TextTemplate, String> {
        TextTemplate::compile(vec![Piece::Text(source.to_owned())], mode)
    }

    /// The value as written, secrets as `***`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether rendering can depend on data.
    pub fn is_literal(&self) -> bool {
        !self
            .parts
            .iter()
            .any(|p| matches!(p, TextPart::Template(_)))
    }

    /// The names its templates read, dotted (`context.region`).
    pub fn names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for part in &self.parts {
            if let TextPart::Template(template) = part {
                names.extend(template.borrow_dependent().undeclared_variables(true));
            }
        }
        names
    }

    /// Renders with `data`.
    pub fn render(&self, data: &Value) -> Result<Rendered, String> {
        let mut value = String::new();
        let mut redacted: Option<String> = None;
        for part in &self.parts {
            match part {
                TextPart::Literal(text) => {
                    value.push_str(text);
                    if let Some(shown) = redacted.as_mut() {
                        shown.push_str(text);
                    }
                }
                TextPart::Template(template) => {
                    let text = template
                        .borrow_dependent()
                        .render(data)
                        .map_err(|err| describe(&err))?;
                    value.push_str(&text);
                    if let Some(shown) = redacted.as_mut() {
                        shown.push_str(&text);
                    }
                }
                TextPart::Secret(secret) => {
                    redacted
                        .get_or_insert_with(|| value.clone())
                        .push_str("***");
                    value.push_str(&secret.value);
                }
            }
        }
        Ok(Rendered { value, redacted })
    }

    /// The secrets spliced into this value.
    pub fn secrets(&self) -> impl Iterator<Item = &secret::Secret> {
        self.parts.iter().filter_map(|part| match part {
            TextPart::Secret(secret) => Some(secret),
            _ => None,
        })
    }
}

impl Rendered {
    /// What may be shown to people.
    pub fn shown(&self) -> &str {
        self.redacted.as_deref().unwrap_or(&self.value)
    }
}

impl JsonTemplate {
    /// Compiles a `[body]` table (or any TOML value) into a JSON template.
    pub fn compile(value: &toml::Value) -> Result<JsonTemplate, String> {
        Ok(match value {
            toml::Value::String(text) if !is_template(text) => {
                JsonTemplate::Literal(serde_json::Value::String(text.clone()))
            }
            toml::Value::String(text) => match single_expression(text) {
                Some(_) => JsonTemplate::Expression(Box::new(compile_expression(text)?)),
                None => JsonTemplate::Text(TextTemplate::from_str(text, Mode::Text)?),
            },
            toml::Value::Integer(n) => JsonTemplate::Literal((*n).into()),
            toml::Value::Float(f) => JsonTemplate::Literal(
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
            ),
            toml::Value::Boolean(b) => JsonTemplate::Literal((*b).into()),
            toml::Value::Datetime(d) => JsonTemplate::Literal(d.to_string().into()),
            toml::Value::Array(items) => {
                let items = items
                    .iter()
                    .map(JsonTemplate::compile)
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|i| matches!(i, JsonTemplate::Literal(_))) {
                    JsonTemplate::Literal(
                        items.into_iter().map(JsonTemplate::into_literal).collect(),
                    )
                } else {
                    JsonTemplate::Array(items)
                }
            }
            toml::Value::Table(table) => {
                let entries = table
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), JsonTemplate::compile(v)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                if entries
                    .iter()
                    .all(|(_, v)| matches!(v, JsonTemplate::Literal(_)))
                {
                    JsonTemplate::Literal(serde_json::Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k, v.into_literal()))
                            .collect(),
                    ))
                } else {
                    JsonTemplate::Object(entries)
                }
            }
        })
    }

    fn into_literal(self) -> serde_json::Value {
        match self {
            JsonTemplate::Literal(value) => value,
            _ => serde_json::Value::Null,
        }
    }

    /// Renders the document; a missing value in a typed leaf is `null`.
    pub fn render(&self, data: &Value) -> Result<serde_json::Value, String> {
        Ok(match self {
            JsonTemplate::Literal(value) => value.clone(),
            JsonTemplate::Expression(expression) => to_json(&eval(expression, data)?)?,
            JsonTemplate::Text(template) => template.render(data)?.value.into(),
            JsonTemplate::Array(items) => items
                .iter()
                .map(|item| item.render(data))
                .collect::<Result<_, _>>()?,
            JsonTemplate::Object(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(data)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }

    /// The names its templates read, dotted.
    pub fn names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        self.collect_names(&mut names);
        names
    }

    fn collect_names(&self, names: &mut BTreeSet<String>) {
        match self {
            JsonTemplate::Literal(_) => {}
            JsonTemplate::Expression(expression) => names.extend(expression_names(expression)),
            JsonTemplate::Text(template) => names.extend(template.names()),
            JsonTemplate::Array(items) => items.iter().for_each(|i| i.collect_names(names)),
            JsonTemplate::Object(entries) => {
                entries.iter().for_each(|(_, v)| v.collect_names(names));
            }
        }
    }
}

/// Converts a template value to JSON: undefined becomes `null`.
pub fn to_json(value: &Value) -> Result<serde_json::Value, String> {
    if value.is_undefined() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::to_value(value).map_err(|err| format!("value is not JSON: {err}"))
}

impl UrlTemplate {
    /// Compiles a URL. `origin_data` holds only `context` and `webhook`: the origin is
    /// rendered with it now and may read nothing else.
    pub fn compile(url: &str, origin_data: &Value) -> Result<UrlTemplate, String> {
        let scheme_end = find_outside_tags(url, 0, &["://"])
            .ok_or("url: expected an absolute URL such as https://api.example/path")?;
        let authority_end =
            find_outside_tags(url, scheme_end + 3, &["/", "?", "#"]).unwrap_or(url.len());
        let query_start = find_outside_tags(url, authority_end, &["?", "#"]);
        if find_outside_tags(url, authority_end, &["#"]).is_some() {
            return Err("url: a #fragment is never sent to a server; remove it".into());
        }
        let origin_source = &url[..authority_end];
        let origin_template = TextTemplate::from_str(origin_source, Mode::Text)?;
        let foreign: Vec<String> = origin_template
            .names()
            .into_iter()
            .filter(|name| {
                let root = name.split('.').next().unwrap_or(name);
                root != "context" && root != "webhook"
            })
            .collect();
        if !foreign.is_empty() {
            return Err(format!(
                "url: the scheme, host and port may use only context values, not {}",
                foreign.join(", ")
            ));
        }
        let origin = origin_template.render(origin_data)?.value;
        let uri: http::Uri = format!("{origin}/")
            .parse()
            .map_err(|err| format!("url: {origin:?} is not a valid origin: {err}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(format!("url: scheme must be http or https in {origin:?}")),
        }
        let authority = uri.authority().ok_or("url: no host")?;
        if authority.as_str().contains('@') {
            return Err("url: credentials in the URL are not allowed; use [auth]".into());
        }
        if authority.host().is_empty() {
            return Err("url: no host".into());
        }
        let path_end = query_start.unwrap_or(url.len());
        let path_source = match &url[authority_end..path_end] {
            "" => "/",
            path => path,
        };
        let path = TextTemplate::from_str(path_source, Mode::Path)?;
        let query = match query_start {
            Some(start) if start + 1 < url.len() => {
                Some(TextTemplate::from_str(&url[start + 1..], Mode::Query)?)
            }
            _ => None,
        };
        Ok(UrlTemplate {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            origin,
            path,
            query,
        })
    }

    /// Renders path and query; `extra` parameters (already encoded pairs) are appended.
    pub fn render(&self, data: &Value, extra: &str) -> Result<String, String> {
        let mut url = String::with_capacity(self.origin.len() + 64);
        url.push_str(&self.origin);
        url.push_str(&self.path.render(data)?.value);
        let query = match &self.query {
            Some(template) => template.render(data)?.value,
            None => String::new(),
        };
        if !query.is_empty() || !extra.is_empty() {
            url.push('?');
            url.push_str(&query);
            if !query.is_empty() && !extra.is_empty() {
                url.push('&');
            }
            url.push_str(extra);
        }
        Ok(url)
    }

    /// The names the path and query templates read.
    pub fn names(&self) -> BTreeSet<String> {
        let mut names = self.path.names();
        if let Some(query) = &self.query {
            names.extend(query.names());
        }
        names
    }
}

/// Percent-encodes a query key or value (all but unreserved characters).
pub fn encode_component(out: &mut String, text: &str) {
    // `write!` to a String cannot fail.
    let _ = write!(out, "{}", utf8_percent_encode(text, COMPONENT));
}

/// Finds the first of `needles` at or after `from`, skipping `{{ }}`, `{% %}`, `{# #}`.
fn find_outside_tags(text: &str, from: usize, needles: &[&str]) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'{' && i + 1 < bytes.len() && matches!(bytes[i + 1], b'{' | b'%' | b'#') {
            let close = match bytes[i + 1] {
                b'{' => "}}",
                b'%' => "%}",
                _ => "#}",
            };
            i = text[i + 2..]
                .find(close)
                .map_or(bytes.len(), |end| i + 2 + end + 2);
            continue;
        }
        if needles.iter().any(|needle| text[i..].starts_with(needle)) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// How `{{ }}` prints: empty for undefined and none; percent-encoded in URL templates.
fn format_value(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(());
    }
    let set = match state.auto_escape() {
        AutoEscape::Custom(mode) if mode == PATH => Some(if value.is_safe() {
            TRUSTED_PATH
        } else {
            COMPONENT
        }),
        AutoEscape::Custom(mode) if mode == QUERY => Some(if value.is_safe() {
            TRUSTED_QUERY
        } else {
            COMPONENT
        }),
        _ => None,
    };
    let text;
    let text = match value.as_str() {
        Some(s) => s,
        None => {
            text = value.to_string();
            &text
        }
    };
    let written = match set {
        None => out.write_str(text),
        // A value of only dots would be a `.` or `..` segment: encode the dots too.
        Some(_) if !value.is_safe() && !text.is_empty() && text.bytes().all(|b| b == b'.') => {
            out.write_str(&"%2E".repeat(text.len()))
        }
        Some(set) => write!(out, "{}", utf8_percent_encode(text, set)),
    };
    written.map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "write failed"))
}

/// A template error as one line, without source dumps.
fn describe(err: &minijinja::Error) -> String {
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = err.line() {
        let _ = write!(message, " (template line {line})");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(conversation: serde_json::Value) -> Value {
        TemplateData {
            conversation: value_of(&conversation),
            context: value_of(json!({"region": "eu"})),
            webhook: value_of(json!({"name": "w", "company": "c"})),
            answer: None,
        }
        .into_value()
    }

    #[test]
    fn typed_leaves_keep_their_json_type() {
        let body: toml::Value = toml::from_str(
            r#"n = "{{ extractedData.n }}"
o = "{{ extractedData }}"
m = "{{ missing }}"
s = "id-{{ sessionId }}"
l = "plain"
"#,
        )
        .expect("toml");
        let template = JsonTemplate::compile(&body).expect("compiles");
        let rendered = template
            .render(&data(json!({"sessionId": 7, "extractedData": {"n": 3}})))
            .expect("renders");
        assert_eq!(
            rendered,
            json!({"n": 3, "o": {"n": 3}, "m": null, "s": "id-7", "l": "plain"})
        );
    }

    #[test]
    fn url_values_stay_inside_their_segment() {
        let origin_data = data(json!({}));
        let url = UrlTemplate::compile(
            "https://{{ context.region }}.api.example/v1/{{ id }}?q={{ q }}",
            &origin_data,
        )
        .expect("compiles");
        assert_eq!(url.origin, "https://eu.api.example");
        let rendered = url
            .render(
                &data(json!({"id": "../../admin?x=1#f", "q": "a&b=c"})),
                "k=v",
            )
            .expect("renders");
        assert_eq!(
            rendered,
            "https://eu.api.example/v1/..%2F..%2Fadmin%3Fx%3D1%23f?q=a%26b%3Dc&k=v"
        );
        let dots = url.render(&data(json!({"id": ".."})), "").expect("renders");
        assert_eq!(dots, "https://eu.api.example/v1/%2E%2E?q=");
    }

    #[test]
    fn origin_may_use_only_context() {
        let err = UrlTemplate::compile("https://{{ host }}/x", &data(json!({}))).unwrap_err();
        assert!(err.contains("only context"), "{err}");
        let err = UrlTemplate::compile("https://u:p@h.example/x", &data(json!({}))).unwrap_err();
        assert!(err.contains("credentials"), "{err}");
    }

    #[test]
    fn conversation_text_is_never_a_template() {
        let template = TextTemplate::from_str("{{ reply }}", Mode::Text).expect("compiles");
        let rendered = template
            .render(&data(json!({"reply": "{{ 7*7 }}"})))
            .expect("renders");
        assert_eq!(rendered.value, "{{ 7*7 }}");
    }

    #[test]
    fn fuel_stops_runaway_templates() {
        let template = TextTemplate::from_str(
            "{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}",
            Mode::Text,
        )
        .expect("compiles");
        assert!(template.render(&data(json!({}))).is_err());
    }
}
