//! Request templates: text templates (with secrets spliced in after rendering), typed
//! JSON bodies, value expressions, and the URL rule.
//!
//! Everything here is compiled when a file loads; the request path only evaluates.
//! Conversation data is only ever template *data*: it is never compiled as a template, and
//! secrets are never in the data (they are joined to the rendered text afterwards).
//! Plain lookups (`{{ extractedData.orderId }}`) run on the JSON directly ([`lookup`]);
//! everything else runs on minijinja ([`jinja`]).
//!
//! The URL rule: the scheme and authority are rendered once, at load time, from `context`
//! and `webhook` alone. The path and the query are rendered per request, and every value a
//! `{{ }}` prints is percent-encoded as one path segment or one query component, so no
//! conversation value can add a `/`, `?`, `#`, `&` or `@`.

pub mod jinja;
pub mod lookup;
pub mod scope;
pub mod select;

use std::borrow::Cow;
use std::collections::BTreeSet;

use minijinja::Value;
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use serde_json::Value as Json;

use crate::config::secret::{self, Piece};
pub use jinja::CompiledExpression;
use jinja::OwnedTemplate;
use lookup::Lookup;
pub use scope::{Answer, Fixed, Scope};
use select::{Phase, Reads};

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

/// A text value of a file: literal text, lookups, Jinja templates and secrets, in order.
#[derive(Debug)]
pub struct TextTemplate {
    parts: Vec<TextPart>,
    mode: Mode,
}

#[derive(Debug)]
enum TextPart {
    Literal(String),
    Lookup(Lookup),
    Jinja(OwnedTemplate),
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

/// An expression that yields a typed value: a `{{ expr }}` body leaf or a Jinja variable.
#[derive(Debug)]
pub enum ValueExpr {
    /// A plain lookup on the JSON.
    Lookup(Lookup),
    /// Any other Jinja expression.
    Jinja(Box<CompiledExpression>),
}

/// A JSON body template: a tree whose string leaves are templates.
#[derive(Debug)]
pub enum JsonTemplate {
    /// A subtree with no template in it.
    Literal(Json),
    /// A leaf that is exactly one `{{ expr }}`: keeps the value's JSON type.
    Expression(ValueExpr),
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
    /// The host as an address, when it is a literal one (parsed once, at load time: such
    /// a host never goes through the resolver that polices names).
    pub host_ip: Option<std::net::IpAddr>,
    /// The origin's scheme and authority, parsed once: a request only adds its target.
    pub scheme: http::uri::Scheme,
    /// See `scheme`.
    pub authority: http::uri::Authority,
    /// A path the origin's context values carried (`/v1`), or empty.
    origin_path: String,
    /// The names the origin read (`context.*`, `webhook.*`).
    origin_names: Box<[String]>,
    path: TextTemplate,
    query: Option<TextTemplate>,
}

/// Converts any serializable value into template data.
pub fn value_of<T: serde::Serialize>(value: T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

/// Whether a string holds template syntax at all (literal strings are never compiled).
pub fn is_template(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{#")
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

/// Writes `text` escaped for `mode`: as is in text; percent-encoded in URLs (a value made
/// only of dots is encoded too; a path segment it fills alone is refused when the URL is
/// rendered).
pub fn escape_into(out: &mut String, text: &str, mode: Mode, trusted: bool) {
    match jinja::set_for(mode, trusted) {
        None => out.push_str(text),
        Some(_) if !trusted && !text.is_empty() && text.bytes().all(|b| b == b'.') => {
            for _ in 0..text.len() {
                out.push_str("%2E");
            }
        }
        Some(set) => jinja::encode_with(out, text, set),
    }
}

/// Refuses a rendered path in which a value holds a `.` or `..` segment. A value is
/// percent-encoded into one segment (`..` as `%2E%2E`, `../../admin` as `..%2F..%2Fadmin`),
/// but servers and proxies that normalise paths decode `%2E`, `%2F` and `%5C` first (RFC
/// 3986 6.2.2.2 makes `%2E` a dot; nginx decodes `%2F` before it resolves `..`) and would
/// take the request to another path. Only a segment with an encoded character is looked at:
/// the file's own `.` and `..` are its author's to write.
fn refuse_dot_segments(path: &str) -> Result<(), String> {
    for segment in path.split('/') {
        if !segment.contains('%') {
            continue;
        }
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        if decoded
            .split(['/', '\\'])
            .any(|piece| piece == "." || piece == "..")
        {
            return Err(format!(
                "a value made the path segment {segment:?}, which a server that normalises paths reads as {decoded:?}: another path"
            ));
        }
    }
    Ok(())
}

/// Percent-encodes a query key or value (all but unreserved characters).
pub fn encode_component(out: &mut String, text: &str) {
    jinja::encode_with(out, text, COMPONENT);
}

impl ValueExpr {
    /// Compiles an expression written bare or inside one `{{ }}`.
    pub fn compile(source: &str) -> Result<ValueExpr, String> {
        let bare = single_expression(source).unwrap_or(source.trim());
        match Lookup::parse(bare) {
            Some(lookup) => Ok(ValueExpr::Lookup(lookup)),
            None => jinja::compile_expression(bare).map(|e| ValueExpr::Jinja(Box::new(e))),
        }
    }

    /// Evaluates; `None` is undefined.
    pub fn eval(&self, scope: &Scope<'_>) -> Result<Option<Json>, String> {
        self.eval_cow(scope).map(|value| value.map(Cow::into_owned))
    }

    /// Evaluates without copying what a plain lookup finds; `None` is undefined.
    pub fn eval_cow<'s>(&'s self, scope: &'s Scope<'_>) -> Result<Option<Cow<'s, Json>>, String> {
        match self {
            ValueExpr::Lookup(lookup) => Ok(scope.lookup(lookup).0),
            ValueExpr::Jinja(expression) => {
                let value = jinja::eval(expression, scope.jinja())?;
                if value.is_undefined() {
                    return Ok(None);
                }
                serde_json::to_value(&value)
                    .map(|value| Some(Cow::Owned(value)))
                    .map_err(|err| format!("value is not JSON: {err}"))
            }
        }
    }

    /// Notes what it reads of the conversation and the response.
    pub fn note_reads(&self, reads: &mut Reads, phase: Phase) {
        match self {
            ValueExpr::Lookup(lookup) => reads.lookup(lookup, phase),
            ValueExpr::Jinja(_) => reads.jinja(phase),
        }
    }

    /// The names it reads, dotted.
    pub fn names(&self) -> BTreeSet<String> {
        match self {
            ValueExpr::Lookup(lookup) => BTreeSet::from([lookup.name()]),
            ValueExpr::Jinja(expression) => jinja::expression_names(expression),
        }
    }
}

impl TextTemplate {
    /// Compiles a value whose secrets are already resolved.
    pub fn compile(pieces: Vec<Piece>, mode: Mode) -> Result<TextTemplate, String> {
        let mut parts = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Secret(secret) => parts.push(TextPart::Secret(secret)),
                Piece::Text(text) if !is_template(&text) => {
                    parts.push(TextPart::Literal(literal(text, mode)))
                }
                Piece::Text(text) => match split_lookups(&text, mode) {
                    Some(simple) => parts.extend(simple.into_iter().map(|part| match part {
                        TextPart::Literal(text) => TextPart::Literal(literal(text, mode)),
                        other => other,
                    })),
                    None => parts.push(TextPart::Jinja(OwnedTemplate::compile(&text, mode)?)),
                },
            }
        }
        Ok(TextTemplate { parts, mode })
    }

    /// Compiles a plain string (no secrets).
    pub fn from_str(source: &str, mode: Mode) -> Result<TextTemplate, String> {
        TextTemplate::compile(vec![Piece::Text(source.to_owned())], mode)
    }

    /// The names its templates read, dotted (`context.region`).
    pub fn names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for part in &self.parts {
            match part {
                TextPart::Lookup(lookup) => {
                    names.insert(lookup.name());
                }
                TextPart::Jinja(template) => names.extend(template.names()),
                TextPart::Literal(_) | TextPart::Secret(_) => {}
            }
        }
        names
    }

    /// Notes what it reads of the conversation (request templates see no response).
    pub fn note_reads(&self, reads: &mut Reads) {
        for part in &self.parts {
            match part {
                TextPart::Lookup(lookup) => reads.lookup(lookup, Phase::Request),
                TextPart::Jinja(_) => reads.jinja(Phase::Request),
                TextPart::Literal(_) | TextPart::Secret(_) => {}
            }
        }
    }

    /// Renders with `scope`.
    pub fn render(&self, scope: &Scope<'_>) -> Result<Rendered, String> {
        // Literals and a guess for the rest: most values are written without growing.
        let size = self
            .parts
            .iter()
            .map(|part| match part {
                TextPart::Literal(text) => text.len(),
                _ => 24,
            })
            .sum();
        let mut value = String::with_capacity(size);
        let mut redacted: Option<String> = None;
        let mut plain = String::new();
        for part in &self.parts {
            let start = value.len();
            match part {
                TextPart::Literal(text) => value.push_str(text),
                TextPart::Lookup(lookup) => {
                    let (found, trusted) = scope.lookup(lookup);
                    let text = match found.as_deref() {
                        Some(Json::String(text)) => text,
                        other => {
                            plain.clear();
                            lookup::write_text(&mut plain, other);
                            &plain
                        }
                    };
                    escape_into(&mut value, text, self.mode, trusted);
                }
                TextPart::Jinja(template) => value.push_str(&template.render(scope.jinja())?),
                TextPart::Secret(secret) => {
                    redacted
                        .get_or_insert_with(|| value.clone())
                        .push_str("***");
                    value.push_str(&secret.value);
                    continue;
                }
            }
            if let Some(shown) = redacted.as_mut() {
                shown.push_str(&value[start..]);
            }
        }
        Ok(Rendered { value, redacted })
    }

    /// What of the file's own text can never be in an HTTP header field: a literal part
    /// (`"literal"`) or the secret named (`${env:NAME}`) holding a CR, LF, NUL or another
    /// control character (a tab is allowed). Values from the conversation are checked when
    /// rendered.
    pub fn invalid_in_header(&self) -> Option<String> {
        let invalid = |text: &str| text.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f);
        self.parts.iter().find_map(|part| match part {
            TextPart::Literal(text) if invalid(text) => Some("the text".to_owned()),
            TextPart::Secret(secret) if invalid(&secret.value) => {
                Some(format!("the secret ${{{}}}", secret.reference))
            }
            _ => None,
        })
    }

    /// The secrets spliced into this value.
    pub fn secrets(&self) -> impl Iterator<Item = &secret::Secret> {
        self.parts.iter().filter_map(|part| match part {
            TextPart::Secret(secret) => Some(secret),
            _ => None,
        })
    }
}

/// A literal of a URL template, with what a URL cannot hold raw (spaces, non-ASCII...)
/// percent-encoded, as the file's own text: `/`, `?`, `&`, `=` and `%` stay as written.
fn literal(text: String, mode: Mode) -> String {
    if mode == Mode::Text {
        return text;
    }
    let mut encoded = String::with_capacity(text.len());
    escape_into(&mut encoded, &text, mode, true);
    encoded
}

/// Splits `a {{ x.y }} b` into literal and lookup parts, or `None` when any part needs
/// minijinja as a whole (statements, comments, whitespace control). Any other expression
/// needs minijinja too: in text, the whole value is then one template; in a URL, it is a
/// template of its own, so that a plain `{{ context.NAME }}` beside it still prints as
/// written (as the file's own text), whatever its neighbours.
fn split_lookups(text: &str, mode: Mode) -> Option<Vec<TextPart>> {
    if text.contains("{%") || text.contains("{#") {
        return None;
    }
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(TextPart::Literal(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        let inner = &after[..end];
        if inner.starts_with('-') || inner.ends_with('-') || inner.contains('{') {
            return None;
        }
        let part = match Lookup::parse(inner) {
            Some(lookup) => TextPart::Lookup(lookup),
            None if mode != Mode::Text => {
                // Not compiling is not an error here: the whole value is compiled then.
                TextPart::Jinja(OwnedTemplate::compile(&format!("{{{{{inner}}}}}"), mode).ok()?)
            }
            None => return None,
        };
        parts.push(part);
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(TextPart::Literal(rest.to_owned()));
    }
    Some(parts)
}

impl Rendered {
    /// What may be shown to people.
    pub fn shown(&self) -> &str {
        self.redacted.as_deref().unwrap_or(&self.value)
    }
}

impl JsonTemplate {
    /// Compiles a `[body]` table (or any TOML value) into a JSON template. An error names
    /// the leaf it is in (`body.customer.name: ...`).
    pub fn compile(value: &toml::Value) -> Result<JsonTemplate, String> {
        JsonTemplate::compile_at(value, &mut "body".to_owned())
    }

    fn compile_at(value: &toml::Value, path: &mut String) -> Result<JsonTemplate, String> {
        let at = |path: &str, err: String| format!("{path}: {err}");
        Ok(match value {
            toml::Value::String(text) if !is_template(text) => {
                JsonTemplate::Literal(Json::String(text.clone()))
            }
            toml::Value::String(text) => match single_expression(text) {
                Some(_) => {
                    JsonTemplate::Expression(ValueExpr::compile(text).map_err(|err| at(path, err))?)
                }
                None => JsonTemplate::Text(
                    TextTemplate::from_str(text, Mode::Text).map_err(|err| at(path, err))?,
                ),
            },
            toml::Value::Array(items) => {
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| {
                        let len = path.len();
                        path.push_str(&format!("[{index}]"));
                        let compiled = JsonTemplate::compile_at(item, path);
                        path.truncate(len);
                        compiled
                    })
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
                let mut entries = table
                    .iter()
                    .map(|(k, v)| {
                        let len = path.len();
                        path.push('.');
                        path.push_str(k);
                        let compiled = JsonTemplate::compile_at(v, path);
                        path.truncate(len);
                        Ok((k.clone(), compiled?))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                // In the order of a JSON object's keys: `write` matches `render`.
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                if entries
                    .iter()
                    .all(|(_, v)| matches!(v, JsonTemplate::Literal(_)))
                {
                    JsonTemplate::Literal(Json::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k, v.into_literal()))
                            .collect(),
                    ))
                } else {
                    JsonTemplate::Object(entries)
                }
            }
            scalar => JsonTemplate::Literal(crate::config::compile::toml_to_json(scalar)),
        })
    }

    fn into_literal(self) -> Json {
        match self {
            JsonTemplate::Literal(value) => value,
            _ => Json::Null,
        }
    }

    /// Renders the document; a missing value in a typed leaf is `null`.
    pub fn render(&self, scope: &Scope<'_>) -> Result<Json, String> {
        Ok(match self {
            JsonTemplate::Literal(value) => value.clone(),
            JsonTemplate::Expression(expression) => expression.eval(scope)?.unwrap_or(Json::Null),
            JsonTemplate::Text(template) => template.render(scope)?.value.into(),
            JsonTemplate::Array(items) => items
                .iter()
                .map(|item| item.render(scope))
                .collect::<Result<_, _>>()?,
            JsonTemplate::Object(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(scope)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }

    /// Renders straight into JSON text: the bytes `serde_json` writes for
    /// [`JsonTemplate::render`]'s value (keys in the same sorted order), without building
    /// that value or copying what lookups find.
    pub fn write(&self, scope: &Scope<'_>, out: &mut Vec<u8>) -> Result<(), String> {
        fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), String> {
            serde_json::to_writer(out, value).map_err(|err| err.to_string())
        }
        match self {
            JsonTemplate::Literal(value) => json(out, value),
            JsonTemplate::Expression(expression) => match expression.eval_cow(scope)? {
                Some(value) => json(out, &*value),
                None => json(out, &Json::Null),
            },
            JsonTemplate::Text(template) => json(out, &template.render(scope)?.value),
            JsonTemplate::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(scope, out)?;
                }
                out.push(b']');
                Ok(())
            }
            JsonTemplate::Object(entries) => {
                out.push(b'{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json(out, key)?;
                    out.push(b':');
                    value.write(scope, out)?;
                }
                out.push(b'}');
                Ok(())
            }
        }
    }

    /// The names its templates read, dotted.
    pub fn names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        self.collect_names(&mut names);
        names
    }

    /// Notes what it reads of the conversation.
    pub fn note_reads(&self, reads: &mut Reads) {
        match self {
            JsonTemplate::Literal(_) => {}
            JsonTemplate::Expression(expression) => expression.note_reads(reads, Phase::Request),
            JsonTemplate::Text(template) => template.note_reads(reads),
            JsonTemplate::Array(items) => items.iter().for_each(|i| i.note_reads(reads)),
            JsonTemplate::Object(entries) => entries.iter().for_each(|(_, v)| v.note_reads(reads)),
        }
    }

    fn collect_names(&self, names: &mut BTreeSet<String>) {
        match self {
            JsonTemplate::Literal(_) => {}
            JsonTemplate::Expression(expression) => names.extend(expression.names()),
            JsonTemplate::Text(template) => names.extend(template.names()),
            JsonTemplate::Array(items) => items.iter().for_each(|i| i.collect_names(names)),
            JsonTemplate::Object(entries) => {
                entries.iter().for_each(|(_, v)| v.collect_names(names));
            }
        }
    }
}

impl UrlTemplate {
    /// Compiles a URL. The origin is rendered now from `fixed` and may read nothing else.
    pub fn compile(url: &str, fixed: &Fixed) -> Result<UrlTemplate, String> {
        let scheme_end = find_outside_tags(url, 0, &["://"])
            .ok_or("url: expected an absolute URL such as https://api.example/path")?;
        let authority_end =
            find_outside_tags(url, scheme_end + 3, &["/", "?", "#"]).unwrap_or(url.len());
        let query_start = find_outside_tags(url, authority_end, &["?", "#"]);
        if find_outside_tags(url, authority_end, &["#"]).is_some() {
            return Err("url: a #fragment is never sent to a server; remove it".into());
        }
        let origin_template = TextTemplate::from_str(&url[..authority_end], Mode::Text)?;
        let origin_names = origin_template.names();
        let foreign: Vec<&str> = origin_names
            .iter()
            .map(String::as_str)
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
        let origin = origin_template
            .render(&Scope::new(fixed, &Json::Null))?
            .value;
        let uri: http::Uri = format!("{origin}/")
            .parse()
            .map_err(|err| format!("url: {origin:?} is not a valid origin: {err}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(format!("url: scheme must be http or https in {origin:?}")),
        }
        if origin.contains(['?', '#']) {
            return Err(format!(
                "url: the scheme, host and port ({origin:?}) may not hold a query or a fragment"
            ));
        }
        let authority = uri.authority().ok_or("url: no host")?;
        if authority.as_str().contains('@') {
            return Err("url: credentials in the URL are not allowed; use [auth]".into());
        }
        if authority.host().is_empty() {
            return Err("url: no host".into());
        }
        // `http` reads a port it cannot parse as none at all: the call would go to 80 or 443.
        let after_host = authority.as_str().strip_prefix(authority.host());
        if let Some(port) = after_host.and_then(|rest| rest.strip_prefix(':'))
            && !matches!(port.parse::<u16>(), Ok(1..))
        {
            return Err(format!(
                "url: the port {port:?} in {origin:?} is not a port number (1 to 65535)"
            ));
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
        let scheme = uri.scheme().cloned().ok_or("url: no scheme")?;
        let authority_parsed = authority.clone();
        // A context value may carry a path into the origin (`base = "api.example/v1"`):
        // it prefixes every request's path, as it did when the URL was one string.
        // (`api.example/` ends in a slash the path's own first one would double.)
        let origin_path = uri.path().trim_end_matches('/').to_owned();
        if origin_path.is_empty() && path_source.starts_with("//") {
            return Err(
                "url: the path begins with `//`, which a server may read as a host; write one `/`"
                    .into(),
            );
        }
        // A path made of the file's own values only (`[context]`) is known now: one that
        // begins with `//` is the file's error, not every call's.
        let fixed_only = path.names().iter().all(|name| {
            let root = name.split('.').next().unwrap_or(name);
            root == "context" || root == "webhook"
        });
        if fixed_only {
            let rendered = path.render(&Scope::new(fixed, &Json::Null))?.value;
            let target = format!("{origin_path}{rendered}");
            if target.starts_with("//") {
                return Err(format!(
                    "url: the path {target:?}, made of context values, begins with `//`, which a server may read as a host"
                ));
            }
        }
        Ok(UrlTemplate {
            scheme,
            authority: authority_parsed,
            origin_path,
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            host_ip: authority.host().trim_matches(['[', ']']).parse().ok(),
            origin_names: origin_names.into_iter().collect(),
            origin,
            path,
            query,
        })
    }

    /// Renders the whole URL; `extra` parameters (already encoded pairs) are appended.
    pub fn render(&self, scope: &Scope<'_>, extra: &str) -> Result<String, String> {
        Ok(self.absolute(&self.render_target(scope, extra)?))
    }

    /// `scheme://authority` followed by `target`.
    pub fn absolute(&self, target: &str) -> String {
        format!("{}://{}{target}", self.scheme, self.authority)
    }

    /// Renders the path and query only (`/orders/7?x=1`), as a request line carries them.
    pub fn render_target(&self, scope: &Scope<'_>, extra: &str) -> Result<String, String> {
        let path = self.path.render(scope)?.value;
        refuse_dot_segments(&path)?;
        let mut url = if self.origin_path.is_empty() {
            path
        } else {
            format!("{}{path}", self.origin_path)
        };
        // `//evil.example/x` as a request target reads as a host to a server that splits
        // it as a URL: an empty value at the path's start (`/{{ mode }}/{{ id }}`). A path
        // of the file's own values never begins so (refused when it loads).
        if url.starts_with("//") {
            return Err(format!(
                "the path {url:?} begins with `//` (an empty value at its start?), which a server may read as a host"
            ));
        }
        let query = match &self.query {
            Some(template) => template.render(scope)?.value,
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

    /// Notes what the path and query read of the conversation (the origin reads none).
    pub fn note_reads(&self, reads: &mut Reads) {
        self.path.note_reads(reads);
        if let Some(query) = &self.query {
            query.note_reads(reads);
        }
    }

    /// The names the URL reads (origin, path and query).
    pub fn names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.origin_names.iter().cloned().collect();
        names.extend(self.path.names());
        if let Some(query) = &self.query {
            names.extend(query.names());
        }
        names
    }
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
        // Bytes, not `str` slices: `i` may fall inside a multi-byte character.
        if needles
            .iter()
            .any(|needle| bytes[i..].starts_with(needle.as_bytes()))
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixed() -> Fixed {
        let context = [("region".to_owned(), "eu".to_owned())]
            .into_iter()
            .collect();
        Fixed::new(&context, "w", "c")
    }

    fn text(source: &str, mode: Mode, conversation: Json) -> String {
        let fixed = fixed();
        let template = TextTemplate::from_str(source, mode).expect("compiles");
        template
            .render(&Scope::new(&fixed, &conversation))
            .expect("renders")
            .value
    }

    #[test]
    fn writing_a_body_gives_the_bytes_of_its_rendered_value() {
        let body: toml::Value = toml::from_str(
            r#"zeta = "{{ extractedData.n }}"
alpha = "{{ extractedData }}"
"k\"ey" = "{{ missing }}"
calc = "{{ extractedData.n * 1.5 }}"
text = "id-{{ sessionId }} \u00e9\n"
items = ["{{ sessionId }}", 2.5, {b = "{{ reply }}", a = [true, "x"]}]
plain = {nested = "literal", n = 1}
"#,
        )
        .expect("toml");
        let template = JsonTemplate::compile(&body).expect("compiles");
        let fixed = fixed();
        let conversation = json!({
            "sessionId": "s\"1", "reply": "a\u{0}b", "extractedData": {"n": 3, "z": [1, {"q": null}]}
        });
        let scope = Scope::new(&fixed, &conversation);
        let mut written = Vec::new();
        template.write(&scope, &mut written).expect("writes");
        let rendered = template.render(&scope).expect("renders");
        assert_eq!(
            String::from_utf8(written).expect("utf-8"),
            serde_json::to_string(&rendered).expect("json")
        );
    }

    #[test]
    fn typed_leaves_keep_their_json_type() {
        let body: toml::Value = toml::from_str(
            r#"n = "{{ extractedData.n }}"
o = "{{ extractedData }}"
m = "{{ missing }}"
j = "{{ extractedData.n + 1 }}"
s = "id-{{ sessionId }}"
l = "plain"
"#,
        )
        .expect("toml");
        let template = JsonTemplate::compile(&body).expect("compiles");
        let fixed = fixed();
        let conversation = json!({"sessionId": 7, "extractedData": {"n": 3}});
        let rendered = template
            .render(&Scope::new(&fixed, &conversation))
            .expect("renders");
        assert_eq!(
            rendered,
            json!({"n": 3, "o": {"n": 3}, "m": null, "j": 4, "s": "id-7", "l": "plain"})
        );
    }

    #[test]
    fn jinja2s_python_methods_and_positional_truncate_work() {
        let conversation = json!({
            "reply": "Hello big world of things",
            "customVariables": {"vip": true, "tier": "gold"},
        });
        for (source, expected) in [
            ("{{ customVariables.get('tier') }}", "gold"),
            ("{{ customVariables.get('nope', 'none') }}", "none"),
            ("{{ customVariables.keys() | join(',') }}", "tier,vip"),
            ("{{ reply.split(' ')[1] }}", "big"),
            ("{{ reply.upper() }}", "HELLO BIG WORLD OF THINGS"),
            ("{{ reply.startswith('Hello') }}", "true"),
            ("{{ reply | truncate(9) }}", "Hello..."),
            ("{{ reply | truncate(9, true) }}", "Hello ..."),
            ("{{ reply | truncate(length=9, end='~') }}", "Hello~"),
            ("{{ customVariables.values() }}", "[\"gold\",true]"),
            // Methods of what is not there chain as lookups do; `get` gives its default.
            ("{{ nothing.get('lang', 'en') }}", "en"),
            ("{{ nothing.upper() }}-{{ nothing.get('x') }}", "-"),
            (
                "{{ customVariables.keys() | reverse }}",
                "[\"vip\",\"tier\"]",
            ),
        ] {
            assert_eq!(
                text(source, Mode::Text, conversation.clone()),
                expected,
                "{source}"
            );
        }
        // `str.format` pads to any width without paying fuel: refused, when the file loads
        // (the template renders once then) and at a call.
        let padded = TextTemplate::from_str("{{ '{:>99999999999}'.format('') }}", Mode::Text);
        assert!(padded.is_err_and(|e| e.contains("str.format is not available")));
        let fixed = fixed();
        let late = TextTemplate::from_str("{{ reply.format('') }}", Mode::Text)
            .expect("compiles: no data when it loads")
            .render(&Scope::new(&fixed, &conversation));
        assert!(late.is_err_and(|e| e.contains("str.format is not available")));
    }

    #[test]
    fn lookups_and_jinja_print_alike() {
        let conversation = json!({
            "a": "x y", "n": 2.5, "b": true, "f": false, "z": null, "i": 42, "e": 1e20,
            "o": {"k": [1, null, "s", 2.5, true]}, "l": [1, "two", null],
        });
        let statement = |inner: &str| format!("{{% if true %}}{inner}{{% endif %}}");
        let printed = [
            "{{ b }}",
            "{{ f }}",
            "{{ e }}",
            "{{ o }}",
            "{{ l }}",
            "{{ o.k }}",
        ];
        for (fast, slow) in printed
            .iter()
            .map(|fast| (fast.to_string(), statement(fast)))
            .chain(
                [
                    ("{{ a }}", "{{ a ~ '' }}"),
                    ("{{ n }}", "{{ n | string }}"),
                    ("{{ i }}", "{{ i | string }}"),
                    (
                        "{{ z }}-{{ nope }}",
                        "{% if true %}{{ z }}-{{ nope }}{% endif %}",
                    ),
                    ("{{ a }}", "{{ a | string }}"),
                    (
                        "{{ missing | default('d') }}",
                        "{{ missing | default('d') | string }}",
                    ),
                ]
                .map(|(fast, slow)| (fast.to_owned(), slow.to_owned())),
            )
        {
            for mode in [Mode::Text, Mode::Path, Mode::Query] {
                assert_eq!(
                    text(&fast, mode, conversation.clone()),
                    text(&slow, mode, conversation.clone()),
                    "{fast} vs {slow} in {mode:?}"
                );
            }
        }
    }

    #[test]
    fn url_values_stay_inside_their_segment() {
        let fixed = fixed();
        let url = UrlTemplate::compile(
            "https://{{ context.region }}.api.example/v1/{{ id }}/{{ id | string }}?q={{ q }}",
            &fixed,
        )
        .expect("compiles");
        assert_eq!(url.origin, "https://eu.api.example");
        let conversation = json!({"id": "a/b?x=1#f", "q": "a&b=c"});
        let rendered = url
            .render(&Scope::new(&fixed, &conversation), "k=v")
            .expect("renders");
        assert_eq!(
            rendered,
            "https://eu.api.example/v1/a%2Fb%3Fx%3D1%23f/a%2Fb%3Fx%3D1%23f?q=a%26b%3Dc&k=v"
        );
        // `..%2F..%2Fadmin` is `/admin` to nginx, which decodes `%2F` before `..`.
        for hostile in ["../../admin", "a/..", "..\\x", "./x"] {
            let data = json!({"id": hostile, "q": ""});
            let refused = url.render(&Scope::new(&fixed, &data), "");
            assert!(
                refused.is_err_and(|e| e.contains("another path")),
                "{hostile}"
            );
        }
        // Dots alone are encoded; as a whole segment (`%2E` is `.`) they are refused.
        let dots = json!({"id": "..", "q": ".."});
        let refused = url.render(&Scope::new(&fixed, &dots), "");
        assert!(refused.is_err_and(|e| e.contains("another path")));
        let inside = UrlTemplate::compile("https://api.example/v1/x{{ id }}?q={{ q }}", &fixed)
            .expect("compiles")
            .render(&Scope::new(&fixed, &dots), "")
            .expect("renders");
        assert_eq!(inside, "https://api.example/v1/x%2E%2E?q=%2E%2E");
    }

    #[test]
    fn a_path_that_an_empty_value_starts_with_two_slashes_is_refused() {
        let fixed = fixed();
        let url = UrlTemplate::compile("https://api.example/{{ mode }}/{{ id }}", &fixed)
            .expect("compiles");
        let hostile = json!({"mode": "", "id": "evil.example"});
        let refused = url.render(&Scope::new(&fixed, &hostile), "");
        assert!(refused.is_err_and(|e| e.contains("begins with `//`")));
        let fine = json!({"mode": "live", "id": "7"});
        let rendered = url.render(&Scope::new(&fixed, &fine), "").expect("renders");
        assert_eq!(rendered, "https://api.example/live/7");
        // Further in, an empty value makes `//` that no server reads as a host.
        let inner = json!({"mode": "live", "id": ""});
        assert!(url.render(&Scope::new(&fixed, &inner), "").is_ok());
        // Written in the file, it is refused when the file loads.
        let written = UrlTemplate::compile("https://api.example//v1/x", &fixed);
        assert!(written.is_err_and(|e| e.contains("begins with `//`")));
        // Made of context values only, it is refused when the file loads.
        let context = [("p".to_owned(), String::new())].into_iter().collect();
        let fixed_empty = Fixed::new(&context, "w", "c");
        let of_context =
            UrlTemplate::compile("https://api.example/{{ context.p }}/v1", &fixed_empty);
        assert!(of_context.is_err_and(|e| e.contains("made of context values, begins with `//`")));
        // An origin that ends in a slash does not double the path's first one.
        let context = [("host".to_owned(), "api.example/".to_owned())]
            .into_iter()
            .collect();
        let fixed_slash = Fixed::new(&context, "w", "c");
        for (url, target) in [
            (
                "https://{{ context.host }}/v1/x",
                "https://api.example/v1/x",
            ),
            ("https://{{ context.host }}", "https://api.example/"),
        ] {
            let rendered = UrlTemplate::compile(url, &fixed_slash)
                .expect("compiles")
                .render(&Scope::new(&fixed_slash, &fine), "")
                .expect("renders");
            assert_eq!(rendered, target);
        }
    }

    #[test]
    fn non_ascii_urls_load() {
        // Found by the load_file fuzz target: a multi-byte character after the origin.
        let url = UrlTemplate::compile("https://api.example/v0/{{ id }}?src˝ot=é", &fixed())
            .expect("compiles");
        let conversation = json!({"id": "ü"});
        let rendered = url
            .render(&Scope::new(&fixed(), &conversation), "")
            .expect("renders");
        assert_eq!(rendered, "https://api.example/v0/%C3%BC?src%CB%9Dot=%C3%A9");
    }

    #[test]
    fn safe_strings_are_encoded_in_urls_too() {
        let fixed = fixed();
        let url = UrlTemplate::compile(
            "https://api.example/{{ id | tojson }}/{{ id | safe }}/{{ context.region ~ '/x' }}",
            &fixed,
        )
        .expect("compiles");
        let conversation = json!({"id": "x/a?b"});
        let rendered = url
            .render(&Scope::new(&fixed, &conversation), "")
            .expect("renders");
        assert_eq!(
            rendered,
            "https://api.example/%22x%2Fa%3Fb%22/x%2Fa%3Fb/eu%2Fx"
        );
        // Through `safe` or `tojson` too, `..` between encoded slashes is refused.
        let hostile = json!({"id": "x/../../admin"});
        assert!(url.render(&Scope::new(&fixed, &hostile), "").is_err());
    }

    #[test]
    fn autoescape_false_does_not_turn_off_encoding_in_urls() {
        let fixed = fixed();
        let url = UrlTemplate::compile(
            "https://api.example/au/{% autoescape false %}{{ a }}{% endautoescape %}?q={% autoescape false %}{{ b }}{% endautoescape %}",
            &fixed,
        )
        .expect("compiles");
        let conversation = json!({"a": "x/a?b#c", "b": "1&role=admin#f"});
        let rendered = url
            .render(&Scope::new(&fixed, &conversation), "")
            .expect("renders");
        assert_eq!(
            rendered,
            "https://api.example/au/x%2Fa%3Fb%23c?q=1%26role%3Dadmin%23f"
        );
        let hostile = json!({"a": "../../admin", "b": "1"});
        assert!(url.render(&Scope::new(&fixed, &hostile), "").is_err());
    }

    #[test]
    fn origin_may_use_only_context() {
        let err = UrlTemplate::compile("https://{{ host }}/x", &fixed()).unwrap_err();
        assert!(err.contains("only context"), "{err}");
        let err = UrlTemplate::compile("https://u:p@h.example/x", &fixed()).unwrap_err();
        assert!(err.contains("credentials"), "{err}");
    }

    #[test]
    fn conversation_text_is_never_a_template() {
        let rendered = text(
            "{{ reply }}|{{ reply | upper }}",
            Mode::Text,
            json!({"reply": "{{ 7*7 }}"}),
        );
        assert_eq!(rendered, "{{ 7*7 }}|{{ 7*7 }}");
    }

    #[test]
    fn fuel_stops_runaway_templates() {
        let fixed = fixed();
        let template = TextTemplate::from_str(
            "{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}",
            Mode::Text,
        )
        .expect("compiles");
        assert!(template.render(&Scope::new(&fixed, &Json::Null)).is_err());
    }
}
