//! Parsing only what a webhook reads. When every template of a webhook is a plain lookup
//! (`{{ extractedData.orderId }}`, `response.order.status`, `$.order.delivery.eta`), the
//! paths they follow are known when the file loads. The conversation and the response are
//! then parsed in one validating pass that keeps only the values where those paths end:
//! every other value is checked and skipped, never allocated, and no object on the way is
//! built either. Each kept value has a numbered slot of a [`Document`]; a lookup walks the
//! [`Selection`]'s tree (a few keys per level, known at load time) to its slot.
//!
//! A [`Document`] answers every one of those lookups exactly as the whole document would:
//! where a path ends (or steps into an array) the whole subtree is kept, and a repeated key
//! replaces what an earlier one kept, as it does in a parsed object. Any Jinja template
//! makes the selection [`Selection::all`]: one slot, the whole document.

use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::lookup::{Lookup, Step};

/// The parts of a JSON document that lookups read.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    root: Node,
    /// How many slots a document parsed under it has.
    slots: usize,
}

/// What is kept of one value.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// The whole value, in this slot.
    All(usize),
    /// Of an object, these keys (each with what is kept of its value); nothing of another
    /// value. The slots of the nodes below are `slots`, numbered in order.
    Keys {
        keys: Vec<(String, Node)>,
        slots: Range<usize>,
    },
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

/// A JSON document as parsed under a [`Selection`]: the values its paths end at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document {
    slots: Vec<Option<Json>>,
}

/// A document that lookups read: parsed whole, or parsed under a selection.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    /// The whole document.
    Whole(&'a Json),
    /// What a selection kept of it.
    Picked(&'a Selection, &'a Document),
}

impl Selection {
    /// Keeps nothing (the top-level value is still validated).
    pub fn nothing() -> Selection {
        Selection {
            root: Node::Keys {
                keys: Vec::new(),
                slots: 0..0,
            },
            slots: 0,
        }
    }

    /// Keeps everything.
    pub fn all() -> Selection {
        Selection {
            root: Node::All(0),
            slots: 1,
        }
    }

    /// Whether everything is kept.
    pub fn is_all(&self) -> bool {
        matches!(self.root, Node::All(_))
    }

    /// Keeps what `steps` reach from the top.
    pub fn add(&mut self, steps: &[Step]) {
        self.root.add(steps);
        self.number();
    }

    /// Keeps what `steps` reach from the top-level key `key`.
    pub fn add_under(&mut self, key: &str, steps: &[Step]) {
        if let Some(child) = self.root.child(key) {
            child.add(steps);
        }
        self.number();
    }

    /// Frees the spare capacity of the tree (it is built once, then only read).
    pub fn shrink(&mut self) {
        self.root.shrink();
    }

    /// Numbers the slots in tree order.
    fn number(&mut self) {
        self.slots = self.root.number(0);
    }

    /// Parses `text` (the whole of it, validated as JSON) keeping only the selection.
    pub fn parse(&self, text: &str) -> serde_json::Result<Document> {
        let mut slots = vec![None; self.slots];
        let mut deserializer = serde_json::Deserializer::from_str(text);
        Pick {
            node: &self.root,
            slots: &mut slots,
        }
        .deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(Document { slots })
    }
}

impl Document {
    /// The document of [`Selection::all`] for a whole value.
    pub fn whole(value: Json) -> Document {
        Document {
            slots: vec![Some(value)],
        }
    }

    /// The whole value, when the document kept all of it: `selection`, the one it was
    /// parsed under, is [`Selection::all`]. (A selection of one path has one slot too.)
    pub fn into_whole(mut self, selection: &Selection) -> Option<Json> {
        if selection.is_all() {
            self.slots.pop().flatten()
        } else {
            None
        }
    }
}

impl<'a> Data<'a> {
    /// The value of `key` (or of the top-level value with `None`) and then `steps`, if
    /// there is one.
    pub fn find(self, key: Option<&str>, steps: &[Step]) -> Option<&'a Json> {
        match self {
            Data::Whole(value) => {
                let start = match key {
                    Some(key) => value.get(key)?,
                    None => value,
                };
                follow(start, steps)
            }
            Data::Picked(selection, document) => {
                let slot = |slot: &usize| document.slots.get(*slot)?.as_ref();
                let mut node = &selection.root;
                if let Some(key) = key {
                    match node {
                        Node::All(at) => return follow(slot(at)?.get(key)?, steps),
                        Node::Keys { keys, .. } => node = kept(keys, key)?,
                    }
                }
                let mut rest = steps;
                loop {
                    match node {
                        Node::All(at) => return follow(slot(at)?, rest),
                        Node::Keys { keys, .. } => match rest.split_first() {
                            Some((Step::Key(name), after)) => {
                                node = kept(keys, name)?;
                                rest = after;
                            }
                            // A path that ends or indexes under a `Keys` node was not
                            // noted (a noted one keeps the whole value there).
                            _ => return None,
                        },
                    }
                }
            }
        }
    }

    /// The whole document, when it was parsed whole (as every Jinja template needs it).
    pub fn whole(self) -> Option<&'a Json> {
        match self {
            Data::Whole(value) => Some(value),
            Data::Picked(selection, document) if selection.is_all() => {
                document.slots.first()?.as_ref()
            }
            Data::Picked(..) => None,
        }
    }
}

fn follow<'v>(start: &'v Json, steps: &[Step]) -> Option<&'v Json> {
    steps
        .iter()
        .try_fold(start, |value, step| step.apply(value))
}

fn kept<'s>(keys: &'s [(String, Node)], name: &str) -> Option<&'s Node> {
    keys.iter()
        .find(|(kept, _)| kept == name)
        .map(|(_, node)| node)
}

impl Node {
    /// The node of `key` below this one, made when missing; `None` under `All`.
    fn child(&mut self, key: &str) -> Option<&mut Node> {
        let Node::Keys { keys, .. } = self else {
            return None;
        };
        let position = match keys.iter().position(|(name, _)| name == key) {
            Some(position) => position,
            None => {
                keys.push((
                    key.to_owned(),
                    Node::Keys {
                        keys: Vec::new(),
                        slots: 0..0,
                    },
                ));
                keys.len() - 1
            }
        };
        keys.get_mut(position).map(|(_, node)| node)
    }

    fn shrink(&mut self) {
        if let Node::Keys { keys, .. } = self {
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
            None | Some((Step::Index(_), _)) => *self = Node::All(0),
        }
    }

    /// Numbers the slots from `first` on; returns the next free number.
    fn number(&mut self, first: usize) -> usize {
        match self {
            Node::All(slot) => {
                *slot = first;
                first + 1
            }
            Node::Keys { keys, slots } => {
                let end = keys
                    .iter_mut()
                    .fold(first, |next, (_, node)| node.number(next));
                *slots = first..end;
                end
            }
        }
    }

    /// The slots at and below this node.
    fn slots(&self) -> Range<usize> {
        match self {
            Node::All(slot) => *slot..*slot + 1,
            Node::Keys { slots, .. } => slots.clone(),
        }
    }
}

/// The visitor methods of a value kept for nothing but its type: every scalar, read (and
/// so checked) and dropped.
macro_rules! ignore_scalars {
    () => {
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
    };
}

/// Deserializes one value into the slots of what `node` keeps.
struct Pick<'s, 'd> {
    node: &'s Node,
    slots: &'d mut [Option<Json>],
}

impl<'de> DeserializeSeed<'de> for Pick<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.node {
            Node::All(slot) => {
                let value = serde::Deserialize::deserialize(deserializer)?;
                if let Some(kept) = self.slots.get_mut(*slot) {
                    *kept = Some(value);
                }
                Ok(())
            }
            Node::Keys { keys, .. } => deserializer.deserialize_any(PickKeys {
                keys,
                slots: self.slots,
            }),
        }
    }
}

/// The visitor of a value of which only some keys are kept.
struct PickKeys<'s, 'd> {
    keys: &'s [(String, Node)],
    slots: &'d mut [Option<Json>],
}

impl<'de> Visitor<'de> for PickKeys<'_, '_> {
    type Value = ();

    ignore_scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        // No lookup indexes an array under a `Keys` node; its items are only validated.
        Skip.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(found) = map.next_key_seed(KeyOf(self.keys))? {
            match found {
                Some((_, node)) => {
                    // A repeated key replaces what the earlier one kept.
                    if let Some(kept) = self.slots.get_mut(node.slots()) {
                        kept.fill(None);
                    }
                    map.next_value_seed(Pick {
                        node,
                        slots: self.slots,
                    })?;
                }
                None => map.next_value_seed(Skip)?,
            }
        }
        Ok(())
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

    ignore_scalars!();

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

    /// What `source` finds in the conversation `data`.
    fn find<'a>(data: Data<'a>, source: &str) -> Option<&'a Json> {
        let lookup = Lookup::parse(source).expect("a lookup");
        data.find(Some(&lookup.root), &lookup.steps)
    }

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
        // Only the values where the paths end, in tree order (a.b.c, a.f, a.e,
        // a.nope.deeper, h, j.k, i); nothing else is built.
        assert_eq!(
            pruned.slots,
            [
                Some(json!(1)),
                Some(json!([{"g": 2}])),
                Some(json!("x")),
                None,
                Some(json!("yesé")),
                Some(json!(null)),
                Some(json!([3])),
            ]
        );
        let picked = Data::Picked(&selection, &pruned);
        for source in lookups {
            assert_eq!(
                find(picked, source),
                find(Data::Whole(&whole), source),
                "{source}"
            );
        }
        assert_eq!(find(picked, "a.b.c"), Some(&json!(1)));
        assert_eq!(find(picked, "i[-1]"), Some(&json!(3)));
        assert_eq!(find(picked, "a.nope.deeper"), None);
    }

    #[test]
    fn a_repeated_key_replaces_what_the_earlier_one_kept() {
        let selection = reads(&["a.b"], Phase::Request).conversation;
        for text in [
            r#"{"a": {"b": 1}, "a": 5}"#,
            r#"{"a": {"b": 1}, "a": {"c": 2}}"#,
            r#"{"a": 5, "a": {"b": 1}}"#,
            r#"{"a": {"b": 1, "b": [2]}}"#,
            r#"[{"a": {"b": 1}}]"#,
            r#""a""#,
        ] {
            let whole: Json = serde_json::from_str(text).expect("json");
            let pruned = selection.parse(text).expect("parses");
            assert_eq!(
                find(Data::Picked(&selection, &pruned), "a.b"),
                find(Data::Whole(&whole), "a.b"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_path_ending_early_keeps_the_whole_subtree() {
        let selection = reads(&["a.b", "a.b.c"], Phase::Request).conversation;
        let pruned = selection.parse(DOCUMENT).expect("parses");
        let picked = Data::Picked(&selection, &pruned);
        assert_eq!(find(picked, "a.b"), Some(&json!({"c": 1, "d": [1, 2]})));
        assert_eq!(find(picked, "a.b.d[1]"), Some(&json!(2)));
        assert_eq!(pruned.slots.len(), 1);
    }

    #[test]
    fn mapping_reads_the_response_and_jinja_reads_all() {
        let mut reads = reads(&["response.x.y", "sessionId", "status"], Phase::Mapping);
        let response = reads
            .response
            .parse(r#"{"x": {"y": 1, "z": 2}, "w": 3}"#)
            .expect("parses");
        assert_eq!(response.slots, [Some(json!(1))]);
        // One slot, but not the whole document.
        assert_eq!(response.clone().into_whole(&reads.response), None);
        let steps = [Step::Key("x".into()), Step::Key("y".into())];
        assert_eq!(
            Data::Picked(&reads.response, &response).find(None, &steps),
            Some(&json!(1))
        );
        assert_eq!(
            reads
                .conversation
                .parse(r#"{"sessionId": "s", "reply": "r"}"#)
                .expect("parses")
                .slots,
            [Some(json!("s"))]
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
        let whole = reads.response.parse(DOCUMENT).expect("parses");
        let document = serde_json::from_str::<Json>(DOCUMENT).expect("json");
        assert_eq!(
            Data::Picked(&reads.response, &whole).whole(),
            Some(&document)
        );
        assert_eq!(whole.into_whole(&reads.response), Some(document));
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
            Document::default()
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
