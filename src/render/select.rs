//! Parsing only what a webhook reads. When every template of a webhook is a plain lookup
//! (`{{ extractedData.orderId }}`, `response.order.status`, `$.order.delivery.eta`), the
//! paths they follow are known when the file loads. The conversation and the response are
//! then parsed in one validating pass that builds only the objects on those paths: every
//! other value is checked and skipped, never allocated.
//!
//! The pruned document answers every one of those lookups exactly as the whole document
//! would: the objects on a path keep the keys the paths name, and where a path ends (or
//! steps into an array) the whole subtree is kept. Any Jinja template makes the selection
//! [`Selection::all`], and the document is parsed whole.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::lookup::{Lookup, Step};

/// The parts of a JSON document that lookups read.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    root: Node,
}

/// What is kept of one value.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// The whole value.
    All,
    /// Of an object, these keys (each with what is kept of its value); other values keep
    /// only their type (an array under here is never indexed: an index selects `All`).
    Keys(Vec<(String, Node)>),
}

/// What the templates of one webhook read of the conversation and of the response.
#[derive(Clone, Debug, PartialEq)]
pub struct Reads {
    /// Of the conversation the bot sends.
    pub conversation: Selection,
    /// Of the upstream's JSON answer.
    pub response: Selection,
    /// Whether a request or mapping template reads `context` (the URL's origin, rendered
    /// at load time, does not count).
    pub context: bool,
    /// Whether one reads `webhook` (`webhook.name`, `webhook.company`).
    pub identity: bool,
    /// Whether a mapping reads the answer's `headers`.
    pub headers: bool,
}

impl Default for Reads {
    fn default() -> Reads {
        Reads {
            conversation: Selection::nothing(),
            response: Selection::nothing(),
            context: false,
            identity: false,
            headers: false,
        }
    }
}

/// Where a template runs: rendering the request, or mapping the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Method, URL, headers and body: the conversation and the fixed data.
    Request,
    /// Custom Variables: the same plus `response`, `status` and `headers`.
    Mapping,
}

impl Reads {
    /// Notes a plain lookup.
    pub fn lookup(&mut self, lookup: &Lookup, phase: Phase) {
        match (lookup.root.as_str(), phase) {
            ("context", _) => self.context = true,
            ("webhook", _) => self.identity = true,
            ("status", Phase::Mapping) => {}
            ("headers", Phase::Mapping) => self.headers = true,
            ("response", Phase::Mapping) => self.response.add(&lookup.steps),
            (root, _) => self.conversation.add_under(root, &lookup.steps),
        }
    }

    /// Notes a Jinja template: it may read anything of the data it sees.
    pub fn jinja(&mut self, phase: Phase) {
        self.conversation = Selection::all();
        self.context = true;
        self.identity = true;
        if phase == Phase::Mapping {
            self.response = Selection::all();
            self.headers = true;
        }
    }
}

impl Selection {
    /// Keeps nothing but the type of the top-level value.
    pub fn nothing() -> Selection {
        Selection {
            root: Node::Keys(Vec::new()),
        }
    }

    /// Keeps everything.
    pub fn all() -> Selection {
        Selection { root: Node::All }
    }

    /// Whether everything is kept.
    pub fn is_all(&self) -> bool {
        self.root == Node::All
    }

    /// Keeps what `steps` reach from the top.
    pub fn add(&mut self, steps: &[Step]) {
        self.root.add(steps);
    }

    /// Keeps what `steps` reach from the top-level key `key`.
    pub fn add_under(&mut self, key: &str, steps: &[Step]) {
        let child = self.root.child(key);
        if let Some(child) = child {
            child.add(steps);
        }
    }

    /// Frees the spare capacity of the tree (it is built once, then only read).
    pub fn shrink(&mut self) {
        self.root.shrink();
    }

    /// Parses `text` (the whole of it, validated as JSON) keeping only the selection.
    pub fn parse(&self, text: &str) -> serde_json::Result<Json> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Pick(&self.root).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }
}

impl Node {
    /// The node of `key` below this one, made when missing; `None` under `All`.
    fn child(&mut self, key: &str) -> Option<&mut Node> {
        let Node::Keys(keys) = self else {
            return None;
        };
        let position = match keys.iter().position(|(name, _)| name == key) {
            Some(position) => position,
            None => {
                keys.push((key.to_owned(), Node::Keys(Vec::new())));
                keys.len() - 1
            }
        };
        keys.get_mut(position).map(|(_, node)| node)
    }

    fn shrink(&mut self) {
        if let Node::Keys(keys) = self {
            keys.shrink_to_fit();
            keys.iter_mut().for_each(|(_, node)| node.shrink());
        }
    }

    fn add(&mut self, steps: &[Step]) {
        match steps.split_first() {
            Some((Step::Key(key), rest)) => {
                if let Some(child) = self.child(key) {
                    child.add(rest);
                }
            }
            // The end of a path, or an index (negative ones count from the end): all of it.
            None | Some((Step::Index(_), _)) => *self = Node::All,
        }
    }
}

/// Deserializes one value, keeping what `.0` selects.
struct Pick<'s>(&'s Node);

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        match self.0 {
            Node::All => serde::Deserialize::deserialize(deserializer),
            Node::Keys(keys) => deserializer.deserialize_any(PickKeys(keys)),
        }
    }
}

/// The visitor of a value of which only some keys are kept.
struct PickKeys<'s>(&'s [(String, Node)]);

impl<'de> Visitor<'de> for PickKeys<'_> {
    type Value = Json;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Json, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Json, E> {
        Ok(Json::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Json, E> {
        Ok(Json::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Json, E> {
        Ok(Json::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Json, E> {
        Ok(Json::String(value.to_owned()))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        // No lookup indexes an array under a `Keys` node; its items are only validated.
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(Json::Array(Vec::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut kept = serde_json::Map::new();
        while let Some(found) = map.next_key_seed(KeyOf(self.0))? {
            match found {
                Some((name, node)) => {
                    let value = map.next_value_seed(Pick(node))?;
                    kept.insert(name.clone(), value);
                }
                None => map.next_value_seed(Skip)?,
            }
        }
        Ok(Json::Object(kept))
    }
}

/// Reads a value and keeps nothing, checking it as a full parse does: strings (escapes,
/// surrogates), numbers (range) and depth. (`IgnoredAny` would let serde_json skip with
/// looser checks: a lone `\ud800`, `1e400` or 1,000 nested arrays would pass.)
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KeyOf(&[]))?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// Reads an object key without allocating: which of the kept keys it is, if any.
struct KeyOf<'s>(&'s [(String, Node)]);

impl<'de, 's> DeserializeSeed<'de> for KeyOf<'s> {
    type Value = Option<&'s (String, Node)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 's> Visitor<'de> for KeyOf<'s> {
    type Value = Option<&'s (String, Node)>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|(name, _)| name == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reads(sources: &[&str], phase: Phase) -> Reads {
        let mut reads = Reads::default();
        for source in sources {
            reads.lookup(&Lookup::parse(source).expect("a lookup"), phase);
        }
        reads
    }

    const DOCUMENT: &str = r#"{"a": {"b": {"c": 1, "d": [1, 2]}, "e": "x", "f": [{"g": 2}]},
        "h": "yes\u00e9", "i": [3], "j": {"k": null}, "a2": 5}"#;

    #[test]
    fn keeps_what_lookups_read_and_answers_them_alike() {
        let whole: Json = serde_json::from_str(DOCUMENT).expect("json");
        let lookups = [
            "a.b.c",
            "a.f[0].g",
            "h",
            "a['e']",
            "j.k",
            "a.nope.deeper",
            "i[-1]",
        ];
        let selection = reads(&lookups, Phase::Request).conversation;
        let pruned = selection.parse(DOCUMENT).expect("parses");
        assert_eq!(
            pruned,
            json!({"a": {"b": {"c": 1}, "e": "x", "f": [{"g": 2}]}, "h": "yesé", "i": [3], "j": {"k": null}})
        );
        for source in lookups {
            let lookup = Lookup::parse(source).expect("lookup");
            let follow = |doc: &Json| {
                lookup
                    .follow(doc.get(&lookup.root).map(std::borrow::Cow::Borrowed))
                    .map(std::borrow::Cow::into_owned)
            };
            assert_eq!(follow(&pruned), follow(&whole), "{source}");
        }
    }

    #[test]
    fn a_path_ending_early_keeps_the_whole_subtree() {
        let selection = reads(&["a.b", "a.b.c"], Phase::Request).conversation;
        assert_eq!(
            selection.parse(DOCUMENT).expect("parses")["a"]["b"],
            json!({"c": 1, "d": [1, 2]})
        );
    }

    #[test]
    fn mapping_reads_the_response_and_jinja_reads_all() {
        let mut reads = reads(&["response.x.y", "sessionId", "status"], Phase::Mapping);
        assert_eq!(
            reads
                .response
                .parse(r#"{"x": {"y": 1, "z": 2}, "w": 3}"#)
                .expect("parses"),
            json!({"x": {"y": 1}})
        );
        assert_eq!(
            reads
                .conversation
                .parse(r#"{"sessionId": "s", "reply": "r"}"#)
                .expect("parses"),
            json!({"sessionId": "s"})
        );
        assert!(!reads.context && !reads.identity && !reads.headers);
        let fixed = self::reads(&["context.region", "webhook.name"], Phase::Request);
        assert!(fixed.context && fixed.identity);
        reads.jinja(Phase::Request);
        assert!(reads.conversation.is_all() && !reads.response.is_all());
        assert!(reads.context && reads.identity);
        assert!(!reads.headers);
        reads.jinja(Phase::Mapping);
        assert!(reads.response.is_all() && reads.headers);
        let looked = self::reads(&["headers['x-total']"], Phase::Mapping);
        assert!(looked.headers && !looked.response.is_all());
        // In a request template, `headers` is a key of the conversation.
        let conversation = self::reads(&["headers.x"], Phase::Request);
        assert!(!conversation.headers && !conversation.conversation.is_all());
    }

    #[test]
    fn skipped_values_are_still_validated() {
        let selection = Selection::nothing();
        assert_eq!(
            selection
                .parse(r#"{"a": [1, {"b": "c"}]}"#)
                .expect("parses"),
            json!({})
        );
        let deep = format!(r#"{{"a": {}1{}}}"#, "[".repeat(200), "]".repeat(200));
        for bad in [
            r#"{"a": [1, {"b": "c"]}"#,
            r#"{"a": "\x"}"#,
            r#"{"a": 1} trailing"#,
            r#"{"a": 01}"#,
            r#"{"a": "\ud800"}"#,
            r#"{"a": ["\udc00x"]}"#,
            r#"{"a": 1e400}"#,
            r#"{"a": {"\ud800": 1}}"#,
            &deep,
        ] {
            let error = selection.parse(bad).expect_err(bad).to_string();
            let full = serde_json::from_str::<Json>(bad)
                .expect_err(bad)
                .to_string();
            assert_eq!(error, full, "{bad}");
        }
    }
}
