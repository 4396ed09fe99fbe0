//! Custom Variables (the "Response Mapper"): each variable is a Jinja expression over
//! `response`, `status`, `headers` and the request data, or an RFC 9535 JSONPath over the
//! response body. Both are compiled when the file loads.
//!
//! What "found nothing" means, and so what lands in `missing`: an expression that is
//! undefined (a key the response lacks), a singular JSONPath with no match, a non-singular
//! JSONPath with an empty result. A JSON `null` that *was* found is a value, not missing.

use jsonpath_rust::parser::model::{JpQuery, Segment, Selector};
use serde::Serialize;

use crate::render::lookup::{Lookup, Step};
use crate::render::select::{Data, Phase, Reads, Selection};
use crate::render::{Scope, ValueExpr};

/// One compiled Custom Variable.
#[derive(Debug)]
pub struct Variable {
    /// The variable's name.
    pub name: String,
    /// The expression as written.
    pub source: String,
    /// The name as a JSON object key, colon included (`"eta":`), for the bot's answer.
    pub(crate) key: Box<str>,
    kind: VariableKind,
}

#[derive(Debug)]
enum VariableKind {
    Jinja(ValueExpr),
    JsonPath(JpQuery),
    /// A JSONPath of names and indices only (`$.order.items[0].sku`): followed on the
    /// JSON directly, like a plain lookup, with the same answer as the JSONPath engine.
    PlainPath(Lookup),
}

/// The outcome of one variable, with why it found nothing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The variable's name.
    pub name: String,
    /// The expression as written.
    pub expression: String,
    /// The value; `null` when missing.
    pub value: serde_json::Value,
    /// Why nothing was found, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// The most the values of one invocation's variables may hold together, as JSON text: a
/// variable copies what it finds, and a descent (`$..id`) copies each match whole, so
/// matches nested in each other, or many variables over one large value, hold the response
/// many times over (an upstream could shape 8 MiB into a gigabyte of answer). A variable
/// that does not fit is missing. See [`variables_budget`].
pub const VARIABLES_LIMIT: usize = 16 * 1024 * 1024;

/// The budget of one invocation's variables: [`VARIABLES_LIMIT`], or one and a half times
/// the response limit when that is larger (so a whole response can always be mapped once).
pub fn variables_budget(max_response_body: usize) -> usize {
    VARIABLES_LIMIT.max(max_response_body.saturating_add(max_response_body / 2))
}

/// Takes `value`'s size as JSON text from `budget` (a control character counts as its
/// six-character escape); false as soon as it runs out, without walking further.
fn spend(value: &serde_json::Value, budget: &mut usize) -> bool {
    use serde_json::Value;
    fn text_len(text: &str) -> usize {
        let escapes: usize = text
            .bytes()
            .map(|b| match b {
                0..0x20 => 5,
                b'"' | b'\\' => 1,
                _ => 0,
            })
            .sum();
        text.len() + 2 + escapes
    }
    let own = match value {
        Value::String(text) => text_len(text),
        Value::Array(items) => items.len() + 1,
        Value::Object(map) => map.keys().map(|key| text_len(key) + 1).sum::<usize>() + 1,
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
    };
    let Some(left) = budget.checked_sub(own) else {
        return false;
    };
    *budget = left;
    match value {
        Value::Array(items) => items.iter().all(|item| spend(item, budget)),
        Value::Object(map) => map.values().all(|item| spend(item, budget)),
        _ => true,
    }
}

/// A JSONPath parse error on one line. The parser's are pest's reports over several lines
/// (`--> 1:13`, the expression, a caret, `= expected comparable`).
fn jsonpath_error(err: impl std::fmt::Display) -> String {
    let text = err.to_string();
    let column = text
        .split_once("-->")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|position| position.split_once(':'))
        .map(|(_, column)| column.to_owned());
    let why = text
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("= "));
    match (why, column) {
        (Some(why), Some(column)) => format!("invalid JSONPath: {why} at character {column}"),
        _ => {
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            format!("invalid JSONPath: {}", lines.join(" "))
        }
    }
}

impl Variable {
    /// Compiles one variable: `$...` is JSONPath, anything else a Jinja expression.
    pub fn compile(name: &str, source: &str) -> Result<Variable, String> {
        let trimmed = source.trim();
        let kind = if trimmed.starts_with('$') {
            let query = jsonpath_rust::parser::parse_json_path(trimmed).map_err(jsonpath_error)?;
            let steps: Option<Vec<Step>> = query
                .segments
                .iter()
                .map(|segment| match segment {
                    Segment::Selector(Selector::Name(name)) => Some(Step::Key(name.clone())),
                    Segment::Selector(Selector::Index(index)) => Some(Step::Index(*index)),
                    _ => None,
                })
                .collect();
            match steps {
                Some(steps) => VariableKind::PlainPath(Lookup {
                    root: "response".to_owned(),
                    steps,
                    default: None,
                }),
                None => VariableKind::JsonPath(query),
            }
        } else {
            VariableKind::Jinja(ValueExpr::compile(trimmed).map_err(|err| {
                // Text around a `{{ }}`, or two of them: written as a template.
                let one_block = trimmed.starts_with("{{")
                    && trimmed.ends_with("}}")
                    && trimmed.matches("{{").count() == 1;
                if trimmed.contains("{{") && !one_block {
                    "a variable is one expression, bare or in one {{ }}; to join values and \
                     text, write them in one: {{ response.a ~ ' and ' ~ response.b }}"
                        .to_owned()
                } else {
                    format!("invalid expression: {err}")
                }
            })?)
        };
        Ok(Variable {
            name: name.to_owned(),
            source: source.to_owned(),
            key: format!("{}:", serde_json::Value::from(name)).into(),
            kind,
        })
    }

    /// Whether this is a JSONPath.
    pub fn is_json_path(&self) -> bool {
        matches!(
            self.kind,
            VariableKind::JsonPath(_) | VariableKind::PlainPath(_)
        )
    }

    /// The names a Jinja expression reads (empty for JSONPath).
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        match &self.kind {
            VariableKind::Jinja(expression) => expression.names(),
            VariableKind::JsonPath(_) | VariableKind::PlainPath(_) => Default::default(),
        }
    }

    /// Notes what it reads of the conversation and the response.
    pub fn note_reads(&self, reads: &mut Reads) {
        match &self.kind {
            VariableKind::Jinja(expression) => expression.note_reads(reads, Phase::Mapping),
            VariableKind::JsonPath(_) => reads.response = Selection::all(),
            VariableKind::PlainPath(lookup) => reads.lookup(lookup, Phase::Mapping),
        }
    }

    /// Evaluates against the response body (`response`) and `scope` (which holds
    /// `response`, `status`, `headers` and the request data). `budget`: what the values of
    /// the invocation's variables may still hold ([`variables_budget`]).
    pub fn evaluate(&self, response: Data<'_>, scope: &Scope<'_>, budget: &mut usize) -> Outcome {
        let (value, missing) = self.find(response, scope, budget);
        Outcome {
            name: self.name.clone(),
            expression: self.source.clone(),
            value,
            missing,
        }
    }

    /// The value alone (`null` when missing), and why it was not found, when it was not.
    /// What it holds is taken from `budget`; a value that does not fit is missing, and
    /// spends nothing.
    pub fn find(
        &self,
        response: Data<'_>,
        scope: &Scope<'_>,
        budget: &mut usize,
    ) -> (serde_json::Value, Option<String>) {
        let before = *budget;
        let too_large = |budget: &mut usize| {
            *budget = before;
            let why = format!(
                "what it found, with the other variables' values, would hold more than {} MiB \
                 of JSON (a `..` over objects nested in each other, or many variables over one \
                 large value, repeat the response)",
                VARIABLES_LIMIT / (1024 * 1024)
            );
            (serde_json::Value::Null, Some(why))
        };
        match &self.kind {
            VariableKind::PlainPath(lookup) => match response.find(None, &lookup.steps) {
                Some(found) if spend(found, budget) => (found.clone(), None),
                Some(_) => too_large(budget),
                None => (
                    serde_json::Value::Null,
                    Some("no match in the response".to_owned()),
                ),
            },
            VariableKind::JsonPath(query) => {
                // A JSONPath makes its webhook parse the response whole.
                let whole = response.whole().unwrap_or(&serde_json::Value::Null);
                match jsonpath_rust::query::js_path_process(query, whole) {
                    Ok(found) if found.is_empty() => (
                        serde_json::Value::Null,
                        Some("no match in the response".to_owned()),
                    ),
                    Ok(found) if found.iter().all(|hit| spend(hit.val, budget)) => (
                        serde_json::Value::Array(
                            found.into_iter().map(|hit| hit.val.clone()).collect(),
                        ),
                        None,
                    ),
                    Ok(_) => too_large(budget),
                    Err(err) => (
                        serde_json::Value::Null,
                        Some(format!("JSONPath failed: {err}")),
                    ),
                }
            }
            VariableKind::Jinja(expression) => match expression.eval(scope) {
                Ok(Some(value)) if spend(&value, budget) => (value, None),
                Ok(Some(_)) => too_large(budget),
                Ok(None) => (
                    serde_json::Value::Null,
                    Some("the expression is undefined for this response".to_owned()),
                ),
                Err(err) => (
                    serde_json::Value::Null,
                    Some(format!("expression failed: {err}")),
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{Answer, Fixed};
    use serde_json::json;

    fn run(source: &str, response: serde_json::Value) -> Outcome {
        let variable = Variable::compile("v", source).expect("compiles");
        let fixed = Fixed::new(&Default::default(), "w", "c");
        let conversation = json!({});
        let headers = http::HeaderMap::new();
        let scope = Scope::new(&fixed, &conversation).with_answer(Answer {
            response: Data::Whole(&response),
            status: 200,
            headers: &headers,
        });
        variable.evaluate(Data::Whole(&response), &scope, &mut VARIABLES_LIMIT.clone())
    }

    #[test]
    fn jinja_and_jsonpath_keep_types() {
        let response = json!({"a": {"b": [{"n": 2.5}, {"n": 7}]}, "s": "Shipped"});
        assert_eq!(run("response.a.b[0].n", response.clone()).value, json!(2.5));
        assert_eq!(
            run("{{ response.s | lower }}", response.clone()).value,
            json!("shipped")
        );
        assert_eq!(
            run("response.a.b | length", response.clone()).value,
            json!(2)
        );
        assert_eq!(run("$.a.b[1].n", response.clone()).value, json!(7));
        assert_eq!(run("$.a.b[?@.n > 3].n", response.clone()).value, json!([7]));
        assert_eq!(run("status", response.clone()).value, json!(200));
    }

    #[test]
    fn plain_paths_answer_as_the_jsonpath_engine_does() {
        let response = json!({"a": {"b": [{"n": 2.5}, {"n": 7}], "s p": "x"}, "c": null});
        for path in [
            "$",
            "$.a",
            "$.a.b[1].n",
            "$.a.b[-1]",
            "$.a.b[-3]",
            "$.a.b[5]",
            "$['a']['s p']",
            "$.a.nope",
            "$.c",
            "$.c.d",
            "$.a.b.n",
            "$.a[0]",
        ] {
            let variable = Variable::compile("v", path).expect("compiles");
            assert!(
                matches!(variable.kind, VariableKind::PlainPath(_)),
                "{path}"
            );
            let query = jsonpath_rust::parser::parse_json_path(path).expect("parses");
            let engine = jsonpath_rust::query::js_path_process(&query, &response)
                .expect("runs")
                .first()
                .map(|hit| hit.val.clone());
            let plain = run(path, response.clone());
            assert_eq!(
                (plain.missing.is_none(), plain.value),
                (engine.is_some(), engine.unwrap_or_default()),
                "{path}"
            );
        }
    }

    #[test]
    fn nothing_found_is_missing() {
        let response = json!({"a": null});
        assert!(
            run("response.nope.deeper", response.clone())
                .missing
                .is_some()
        );
        assert!(
            run("response.nope | lower", response.clone())
                .missing
                .is_none()
        );
        assert!(run("$.nope", response.clone()).missing.is_some());
        assert!(run("$..zzz", response.clone()).missing.is_some());
        let found_null = run("$.a", response);
        assert_eq!((found_null.value, found_null.missing), (json!(null), None));
    }

    #[test]
    fn matches_that_repeat_the_response_past_the_limit_are_missing() {
        // 80 objects nested in each other around 256 KiB: `$..id` would copy 20 MiB.
        let mut deep = json!("x".repeat(256 * 1024));
        for _ in 0..80 {
            deep = json!({ "id": deep });
        }
        let outcome = run("$..id", deep.clone());
        assert_eq!(outcome.value, json!(null));
        assert!(
            outcome
                .missing
                .as_deref()
                .is_some_and(|m| m.contains("would hold more than 16 MiB")),
            "{:?}",
            outcome.missing
        );
        // Twenty variables over one 1 MiB value (a JSONPath, a Jinja lookup, a JSONPath of
        // two matches, in turn): 16 MiB hold the first eleven; the twelfth (2 MiB) does not
        // fit, spends nothing, and the thirteenth (1 MiB) still does; then none.
        let big = json!({ "a": "y".repeat(1024 * 1024) });
        let fixed = Fixed::new(&Default::default(), "w", "c");
        let conversation = json!({});
        let headers = http::HeaderMap::new();
        let scope = Scope::new(&fixed, &conversation).with_answer(Answer {
            response: Data::Whole(&big),
            status: 200,
            headers: &headers,
        });
        let mut budget = variables_budget(10 * 1024 * 1024);
        let found: Vec<bool> = ["$.a", "response.a", "$['a','a']"]
            .iter()
            .cycle()
            .take(20)
            .map(|source| {
                let variable = Variable::compile("v", source).expect("compiles");
                variable
                    .evaluate(Data::Whole(&big), &scope, &mut budget)
                    .missing
                    .is_none()
            })
            .collect();
        let expected: Vec<bool> = (0..20).map(|i| i < 11 || i == 12).collect();
        assert_eq!(found, expected);
        // Under the limit, every match is there.
        let mut shallow = json!("x".repeat(1024));
        for _ in 0..64 {
            shallow = json!({ "id": shallow });
        }
        let outcome = run("$..id", shallow.clone());
        assert_eq!(
            outcome.value.as_array().map(Vec::len),
            Some(64),
            "{outcome:?}"
        );
        // One invocation's JSONPath variables share the limit; what fails spends nothing.
        // `$..id` over `shallow` copies about 66 KiB (64 times the 1 KiB string); `$.id.id`
        // about 1 KiB.
        let mut budget = 100 * 1024;
        let descent = Variable::compile("v", "$..id").expect("compiles");
        let small = Variable::compile("w", "$.id.id").expect("compiles");
        let fixed = Fixed::new(&Default::default(), "w", "c");
        let conversation = json!({});
        let headers = http::HeaderMap::new();
        let data = Data::Whole(&shallow);
        let scope = Scope::new(&fixed, &conversation).with_answer(Answer {
            response: data,
            status: 200,
            headers: &headers,
        });
        let first = descent.evaluate(data, &scope, &mut budget);
        assert_eq!(
            first.value.as_array().map(Vec::len),
            Some(64),
            "{:?}",
            first.missing
        );
        let second = descent.evaluate(data, &scope, &mut budget);
        assert!(second.missing.is_some(), "two copies do not fit");
        let third = small.evaluate(data, &scope, &mut budget);
        assert!(third.missing.is_none(), "{:?}", third.missing);
    }
}
