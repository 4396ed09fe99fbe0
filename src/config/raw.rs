//! The raw shape of a webhook file, exactly as written (serde, `deny_unknown_fields`), and
//! [`Def`]: the same fields with their locations, ready for `extends` to merge.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::source::{Located, Location, Problem, SourceFile};

/// A hookside webhook file (`webhooks.d/**/*.toml`): one webhook, or a template
/// (`kind = "template"`) that webhooks extend. See hookside's README.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "hookside webhook file")]
pub struct RawFile {
    /// `"webhook"` (default) or `"template"`.
    #[schemars(with = "Option<KindSchema>")]
    pub kind: Option<Spanned<String>>,
    /// The webhook's name; defaults to the file's stem.
    #[schemars(with = "Option<NameSchema>")]
    pub name: Option<Spanned<String>>,
    /// The Company the webhook is assigned to.
    #[schemars(with = "Option<CompanySchema>")]
    pub company: Option<Spanned<String>>,
    /// Free text for people.
    #[schemars(with = "Option<String>")]
    pub description: Option<Spanned<String>>,
    /// A template's name to inherit from.
    #[schemars(with = "Option<String>")]
    pub extends: Option<Spanned<String>>,
    /// HTTP method, any case.
    #[schemars(with = "Option<MethodSchema>")]
    pub method: Option<Spanned<String>>,
    /// The URL template.
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// `"json"` only, for now.
    #[schemars(with = "Option<ResponseTypeSchema>")]
    pub response_type: Option<Spanned<String>>,
    /// `"sync"` only, for now.
    #[schemars(with = "Option<ExecutionSchema>")]
    pub execution: Option<Spanned<String>>,
    /// A duration such as `"5s"` or `"1500ms"`.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Context Values.
    #[schemars(with = "Option<BTreeMap<String, ContextValueSchema>>")]
    pub context: Option<BTreeMap<String, Spanned<toml::Value>>>,
    /// Upstream authentication.
    pub auth: Option<RawAuth>,
    /// Header name -> template.
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
    /// Query parameter -> template, or an array of templates.
    #[schemars(with = "Option<BTreeMap<String, RawQueryValue>>")]
    pub query: Option<BTreeMap<String, Spanned<RawQueryValue>>>,
    /// A JSON body template (table) or a text body template (string).
    #[schemars(with = "Option<BodySchema>")]
    pub body: Option<Spanned<toml::Value>>,
    /// Extra trust roots for the upstream.
    pub tls: Option<RawTls>,
    /// Custom Variables: name -> expression.
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub variables: Option<BTreeMap<String, Spanned<String>>>,
    /// Offline examples for `hookside check`.
    #[schemars(with = "Option<Vec<RawExample>>")]
    pub examples: Option<Vec<Spanned<RawExample>>>,
}

/// `[auth]` as written.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `"none"`, `"basic"` or `"bearer"`.
    #[serde(rename = "type")]
    #[schemars(with = "Option<AuthTypeSchema>")]
    pub kind: Option<Spanned<String>>,
    /// Basic auth user name.
    #[schemars(with = "Option<String>")]
    pub username: Option<Spanned<String>>,
    /// Basic auth password.
    #[schemars(with = "Option<String>")]
    pub password: Option<Spanned<String>>,
    /// Bearer token.
    #[schemars(with = "Option<String>")]
    pub token: Option<Spanned<String>>,
}

/// `[tls]` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// A PEM file of extra trust roots.
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Spanned<String>>,
}

/// A query value: one template, or an array that repeats the key.
#[derive(Clone, Debug, JsonSchema)]
#[serde(untagged)]
pub enum RawQueryValue {
    /// One value.
    One(String),
    /// The key repeated once per value.
    Many(Vec<String>),
}

// By hand rather than `untagged`, whose error ("data did not match any variant") does not
// say what to write.
impl<'de> Deserialize<'de> for RawQueryValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawQueryValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings (quote numbers and booleans: \"5\")")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RawQueryValue, E> {
                Ok(RawQueryValue::One(value.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawQueryValue, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<String>()? {
                    values.push(value);
                }
                Ok(RawQueryValue::Many(values))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One `[[examples]]` entry as written.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawExample {
    /// The conversation object the bot would send.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub conversation: Option<toml::Value>,
    /// The upstream's status (default 200).
    #[schemars(range(min = 100, max = 599))]
    pub status: Option<u16>,
    /// The upstream's body: a JSON string, or a TOML table or array.
    #[schemars(with = "Option<serde_json::Value>")]
    pub response: Option<toml::Value>,
    /// Expected Custom Variables.
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub expect: Option<toml::Table>,
    /// Expectations on the rendered request.
    pub request: Option<RawExpectedRequest>,
}

/// `[examples.request]`: what the rendered request must be (every key optional).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawExpectedRequest {
    /// The method.
    pub method: Option<String>,
    /// The whole URL, with secrets as `***`.
    pub url: Option<String>,
    /// Headers that must be present with these values (secrets as `***`).
    pub headers: Option<BTreeMap<String, String>>,
    /// The body: a table for a JSON body, a string for a text body.
    #[schemars(with = "Option<serde_json::Value>")]
    pub body: Option<toml::Value>,
}

/// Schema-only: `kind`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "describes the schema only")]
enum KindSchema {
    /// Served under its name.
    Webhook,
    /// Not served; other files extend it.
    Template,
}

/// Schema-only: a webhook or template name.
#[derive(JsonSchema)]
#[schemars(transparent)]
#[expect(dead_code, reason = "describes the schema only")]
struct NameSchema(#[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"))] String);

/// Schema-only: a Company's name, not empty nor only spaces.
#[derive(JsonSchema)]
#[schemars(transparent)]
#[expect(dead_code, reason = "describes the schema only")]
struct CompanySchema(#[schemars(regex(pattern = r"\S"))] String);

/// Schema-only: an HTTP method, any case.
#[derive(JsonSchema)]
#[schemars(transparent)]
#[expect(dead_code, reason = "describes the schema only")]
struct MethodSchema(
    #[schemars(regex(
        pattern = r"^([Gg][Ee][Tt]|[Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee]|[Hh][Ee][Aa][Dd]|[Oo][Pp][Tt][Ii][Oo][Nn][Ss])$"
    ))]
    String,
);

/// Schema-only: `response_type`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "describes the schema only")]
enum ResponseTypeSchema {
    /// The response body is JSON.
    Json,
}

/// Schema-only: `execution`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "describes the schema only")]
enum ExecutionSchema {
    /// The conversation waits for the webhook.
    Sync,
}

/// Schema-only: `[auth] type`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "describes the schema only")]
enum AuthTypeSchema {
    /// No authentication.
    None,
    /// `username` and `password`.
    Basic,
    /// `token`.
    Bearer,
}

/// Schema-only: a Context Value.
#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "describes the schema only")]
enum ContextValueSchema {
    /// Text.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// A number.
    Float(f64),
    /// A boolean.
    Boolean(bool),
}

/// Schema-only: `body`, a JSON body table or a text template.
#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "describes the schema only")]
enum BodySchema {
    /// A text body template.
    Text(String),
    /// A JSON body: string leaves are templates.
    Json(serde_json::Map<String, serde_json::Value>),
}

/// The JSON Schema of a webhook file, generated from the types that parse it.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RawFile)).unwrap_or(serde_json::Value::Null)
}

/// `kind = ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Served.
    Webhook,
    /// Only extended.
    Template,
}

/// A parsed file: its kind, name and fields with locations.
#[derive(Clone, Debug)]
pub struct Def {
    /// Where the file is.
    pub file: Location,
    /// Webhook or template.
    pub kind: Kind,
    /// The name (explicit or the file's stem).
    pub name: Located<String>,
    /// The template this file extends.
    pub extends: Option<Located<String>>,
    /// The mergeable fields.
    pub fields: Fields,
}

/// The fields that `extends` merges: scalars are inherited when unset, tables key by key.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    /// See [`RawFile::company`].
    pub company: Option<Located<String>>,
    /// See [`RawFile::description`].
    pub description: Option<Located<String>>,
    /// See [`RawFile::method`].
    pub method: Option<Located<String>>,
    /// See [`RawFile::url`].
    pub url: Option<Located<String>>,
    /// See [`RawFile::response_type`].
    pub response_type: Option<Located<String>>,
    /// See [`RawFile::execution`].
    pub execution: Option<Located<String>>,
    /// See [`RawFile::timeout`].
    pub timeout: Option<Located<String>>,
    /// Context Values by name.
    pub context: BTreeMap<String, Located<toml::Value>>,
    /// `[auth]` keys.
    pub auth: AuthFields,
    /// Headers by lower-case name.
    pub headers: BTreeMap<String, Located<String>>,
    /// Query parameters by name, each with one or more values.
    pub query: BTreeMap<String, Located<Vec<String>>>,
    /// The body: a table merges key by key with an inherited table.
    pub body: Option<Located<toml::Value>>,
    /// `[tls] ca_file`.
    pub ca_file: Option<Located<String>>,
    /// Custom Variables by name.
    pub variables: BTreeMap<String, Located<String>>,
    /// Examples; a file with none inherits its template's.
    pub examples: Vec<Located<RawExample>>,
}

/// `[auth]` keys, each inherited on its own.
#[derive(Clone, Debug, Default)]
pub struct AuthFields {
    /// `type`.
    pub kind: Option<Located<String>>,
    /// `username`.
    pub username: Option<Located<String>>,
    /// `password`.
    pub password: Option<Located<String>>,
    /// `token`.
    pub token: Option<Located<String>>,
}

/// Parses one file's text into a [`Def`]. Each TOML or type error points at its line.
pub fn parse(source: &SourceFile) -> Result<Def, Vec<Problem>> {
    let raw: RawFile = super::source::deserialize(source)?;
    let mut problems = Vec::new();
    let kind = match raw.kind.as_ref().map(|k| (k.get_ref().as_str(), k)) {
        None | Some(("webhook", _)) => Kind::Webhook,
        Some(("template", _)) => Kind::Template,
        Some((other, spanned)) => {
            problems.push(source.locate(spanned.span().start).problem(format!(
                "kind: expected \"webhook\" or \"template\", found {other:?}"
            )));
            Kind::Webhook
        }
    };
    let name = match raw.name {
        Some(name) => source.located(name),
        None => Located {
            value: source
                .path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default(),
            at: source.whole(),
        },
    };
    if let Err(message) = check_name(&name.value) {
        problems.push(name.problem(format!("name: {message}")));
    }
    let one = |field: Option<Spanned<String>>| field.map(|s| source.located(s));
    // Header names are case-insensitive: two spellings of one would silently become one.
    let mut headers: BTreeMap<String, Located<String>> = BTreeMap::new();
    for (name, value) in raw.headers.unwrap_or_default() {
        let value = source.located(value);
        let lower = name.to_ascii_lowercase();
        if headers.contains_key(&lower) {
            problems.push(value.problem(format!(
                "headers: {name} is set twice (header names ignore case)"
            )));
        }
        headers.insert(lower, value);
    }
    let auth = raw.auth.unwrap_or_default();
    let fields = Fields {
        company: one(raw.company),
        description: one(raw.description),
        method: one(raw.method),
        url: one(raw.url),
        response_type: one(raw.response_type),
        execution: one(raw.execution),
        timeout: one(raw.timeout),
        context: located_map(source, raw.context),
        auth: AuthFields {
            kind: one(auth.kind),
            username: one(auth.username),
            password: one(auth.password),
            token: one(auth.token),
        },
        headers,
        query: raw
            .query
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| {
                let value = source.located(value);
                let values = match value.value {
                    RawQueryValue::One(one) => vec![one],
                    RawQueryValue::Many(many) => many,
                };
                (
                    name,
                    Located {
                        value: values,
                        at: value.at,
                    },
                )
            })
            .collect(),
        body: raw.body.map(|body| source.located(body)),
        ca_file: raw.tls.and_then(|tls| one(tls.ca_file)),
        variables: located_map(source, raw.variables),
        examples: raw
            .examples
            .unwrap_or_default()
            .into_iter()
            .map(|example| source.located(example))
            .collect(),
    };
    let def = Def {
        file: source.whole(),
        kind,
        name,
        extends: one(raw.extends),
        fields,
    };
    if problems.is_empty() {
        Ok(def)
    } else {
        Err(problems)
    }
}

/// Checks a name against `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: use 1 to 128 of A-Z a-z 0-9 _ . -, starting with a letter or digit"
        ))
    }
}

impl Fields {
    /// Applies `extends`: `self` (the extending file) wins; tables merge key by key.
    pub fn inherit(mut self, parent: &Fields) -> Fields {
        fn scalar<T: Clone>(child: &mut Option<T>, parent: &Option<T>) {
            if child.is_none() {
                child.clone_from(parent);
            }
        }
        fn table<V: Clone>(child: &mut BTreeMap<String, V>, parent: &BTreeMap<String, V>) {
            for (key, value) in parent {
                child.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        scalar(&mut self.company, &parent.company);
        scalar(&mut self.description, &parent.description);
        scalar(&mut self.method, &parent.method);
        scalar(&mut self.url, &parent.url);
        scalar(&mut self.response_type, &parent.response_type);
        scalar(&mut self.execution, &parent.execution);
        scalar(&mut self.timeout, &parent.timeout);
        scalar(&mut self.auth.kind, &parent.auth.kind);
        scalar(&mut self.auth.username, &parent.auth.username);
        scalar(&mut self.auth.password, &parent.auth.password);
        scalar(&mut self.auth.token, &parent.auth.token);
        scalar(&mut self.ca_file, &parent.ca_file);
        table(&mut self.context, &parent.context);
        table(&mut self.headers, &parent.headers);
        table(&mut self.query, &parent.query);
        table(&mut self.variables, &parent.variables);
        self.body = match (self.body.take(), &parent.body) {
            (
                Some(Located {
                    value: toml::Value::Table(mut child),
                    at,
                }),
                Some(Located {
                    value: toml::Value::Table(parent),
                    ..
                }),
            ) => {
                for (key, value) in parent {
                    child.entry(key.clone()).or_insert_with(|| value.clone());
                }
                Some(Located {
                    value: toml::Value::Table(child),
                    at,
                })
            }
            (child, parent) => child.or_else(|| parent.clone()),
        };
        if self.examples.is_empty() {
            self.examples.clone_from(&parent.examples);
        }
        self
    }
}

fn located_map<V>(
    source: &SourceFile,
    map: Option<BTreeMap<String, Spanned<V>>>,
) -> BTreeMap<String, Located<V>> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, source.located(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::MAX_TOML_PROBLEMS as MAX;
    use std::path::Path;

    fn def(path: &str, text: &str) -> Result<Def, Vec<Problem>> {
        parse(&SourceFile::new(Path::new(path).into(), text.to_owned()))
    }

    #[test]
    fn name_defaults_to_the_stem_and_is_checked() {
        assert_eq!(
            def("dir/order-status.toml", "").expect("parses").name.value,
            "order-status"
        );
        let problems = def("dir/x.toml", "name = '-bad'").unwrap_err();
        assert_eq!(problems[0].line, Some(1));
        assert!(problems[0].message.contains("not a valid name"));
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let problems = def("x.toml", "company = 'a'\nurll = 'http://x'\n").unwrap_err();
        assert_eq!(problems[0].line, Some(2), "{problems:?}");
        assert!(problems[0].message.contains("urll"), "{problems:?}");
    }

    #[test]
    fn every_type_error_of_a_file_is_reported_in_file_order() {
        let text = "company = 'a'\nurll = 'x'\ntimeout = 5\n[auth]\ntype = 'bearer'\ntokn = 't'\nusername = 3\n\
                    [headers]\nA = '1'\nB = 2\n[[examples]]\nstatus = 'ok'\n[[examples]]\nstatus = 200\n\
                    [[examples]]\nstauts = 200\nresponse = 1\n";
        let problems = def("x.toml", text).unwrap_err();
        let found: Vec<_> = problems
            .iter()
            .map(|p| (p.line.unwrap_or(0), p.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    2,
                    "unknown field `urll`, expected one of `kind`, `name`, `company`, `description`, `extends`, `method`, `url`, `response_type`, `execution`, `timeout`, `context`, `auth`, `headers`, `query`, `body`, `tls`, `variables`, `examples`"
                ),
                (
                    3,
                    "invalid type: integer, expected a string (a duration, in quotes: \"5s\", \"1500ms\")"
                ),
                (
                    6,
                    "unknown field `tokn`, expected one of `type`, `username`, `password`, `token`"
                ),
                (
                    7,
                    "invalid type: integer, expected a string (write it in quotes)"
                ),
                (
                    10,
                    "invalid type: integer, expected a string (write it in quotes)"
                ),
                (12, "invalid type: string, expected an integer"),
                (
                    16,
                    "unknown field `stauts`, expected one of `conversation`, `status`, `response`, `expect`, `request`"
                ),
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn every_syntax_error_toml_reads_past_is_reported() {
        let problems = def(
            "x.toml",
            "company = 'a\nurl = 'http://x'\nmethod = = 'GET'\n",
        )
        .unwrap_err();
        let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(1), Some(3)], "{problems:#?}");
    }

    #[test]
    fn an_array_or_inline_table_left_open_is_one_problem_not_one_a_line() {
        for text in [
            "company = 'a'\n[query]\nids = ['1', '2'\nurl = 'http://x/'\nmethod = 'GET'\n[auth]\ntype = 'bearer'\n",
            "company = 'a'\nbody = { a = 'x', b = 'y'\nurl = 'http://x/'\nmethod = 'GET'\n",
        ] {
            let problems = def("x.toml", text).unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:#?}");
            assert!(
                problems[0].message.starts_with("missing comma"),
                "{problems:#?}"
            );
        }
    }

    #[test]
    fn a_large_file_gets_its_first_syntax_error_only() {
        let padding = format!("# {}\n", "x".repeat(99)).repeat(700);
        let text = format!("{padding}company = 'a\nurl = = 'http://x/'\n");
        let problems = def("x.toml", &text).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        // The one `toml::from_str` stops at.
        let first = toml::from_str::<toml::Table>(&text).unwrap_err();
        assert_eq!(problems[0].message, first.message().trim());
        assert!(matches!(problems[0].line, Some(701 | 702)), "{problems:#?}");
        let small = def("x.toml", "company = 'a\nurl = = 'http://x/'\n").unwrap_err();
        assert_eq!(small.len(), 2, "{small:#?}");
    }

    #[test]
    fn a_misspelt_table_is_one_problem_whatever_it_holds() {
        let text =
            "company = 'a'\n[auht]\ntype = 'bearer'\ntoken = 't'\n[headers]\nA = ['1', '2', '3']\n";
        let problems = def("x.toml", text).unwrap_err();
        let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(2), Some(6)], "{problems:#?}");
    }

    #[test]
    fn a_file_lists_its_first_problems_and_counts_the_rest() {
        let mut text = String::from("company = 'a'\n[headers]\n");
        for i in 0..(MAX + 10) {
            text.push_str(&format!("H{i:03} = {i}\n"));
        }
        let problems = def("x.toml", &text).unwrap_err();
        assert_eq!(problems.len(), MAX + 1, "{problems:#?}");
        assert_eq!(problems[MAX - 1].line, Some(MAX + 2));
        let last = &problems[MAX];
        assert_eq!(last.line, Some(MAX + 3));
        assert_eq!(
            last.message,
            format!(
                "10 more problems from here on, not listed (only the first {MAX} of a file are)"
            )
        );
    }

    #[test]
    fn the_keys_of_an_examples_request_are_checked_one_by_one() {
        let text = "company = 'a'\n[[examples]]\n[examples.request]\nmethod = 1\nheaders = 2\n";
        let lines: Vec<_> = def("x.toml", text)
            .unwrap_err()
            .iter()
            .map(|p| p.line)
            .collect();
        assert_eq!(lines, [Some(4), Some(5)]);
    }

    #[test]
    fn extends_merges_tables_key_by_key() {
        let parent = def(
            "p.toml",
            "method = 'POST'\n[headers]\nA = '1'\nB = '2'\n[body]\nx = 1\n",
        )
        .expect("parent");
        let child = def("c.toml", "[headers]\nb = '3'\n[body]\ny = 2\n").expect("child");
        let merged = child.fields.inherit(&parent.fields);
        assert_eq!(merged.method.expect("inherited").value, "POST");
        assert_eq!(merged.headers["a"].value, "1");
        assert_eq!(merged.headers["b"].value, "3");
        let body = merged.body.expect("body").value;
        assert_eq!(body.get("x").and_then(toml::Value::as_integer), Some(1));
        assert_eq!(body.get("y").and_then(toml::Value::as_integer), Some(2));
    }
}
