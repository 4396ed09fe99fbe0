//! Where things are: a loaded file's text, byte offsets turned into line and column, and
//! [`Problem`], the one error type every loading step reports with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

/// A file's text with its line starts, so that byte spans become `LINE:COL`.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as found under the directory (or given on the command line).
    pub path: Arc<Path>,
    line_starts: Vec<usize>,
    text: String,
}

/// A position in a file, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: Arc<Path>,
    /// 1-based line and column, when known.
    pub line_col: Option<(usize, usize)>,
}

/// A value and where it was written.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where the value was written.
    pub at: Location,
}

/// One problem with one file: what `hookside check` prints as `PATH:LINE:COL: message`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong; names the field, never holds a secret.
    pub message: String,
}

impl SourceFile {
    /// Wraps a file's text.
    pub fn new(path: Arc<Path>, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            path,
            line_starts,
            text,
        }
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The line (from 1) of a byte offset: what [`SourceFile::locate`] finds without the
    /// column, which takes counting the characters before it.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|&start| start <= offset.min(self.text.len()))
            .max(1)
    }

    /// The location of a byte offset.
    pub fn locate(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line.saturating_sub(1)];
        let column = self
            .text
            .get(start..offset)
            .map_or(1, |prefix| prefix.chars().count() + 1);
        Location {
            path: Arc::clone(&self.path),
            line_col: Some((line.max(1), column)),
        }
    }

    /// Wraps a spanned value with its location.
    pub fn located<T>(&self, spanned: toml::Spanned<T>) -> Located<T> {
        let at = self.locate(spanned.span().start);
        Located {
            value: spanned.into_inner(),
            at,
        }
    }

    /// A location naming only the file.
    pub fn whole(&self) -> Location {
        Location::file(Arc::clone(&self.path))
    }
}

impl Location {
    /// A location in no file: of a value hookside put in place of a missing one.
    pub fn nowhere() -> Self {
        Location {
            path: Arc::from(Path::new("")),
            line_col: None,
        }
    }

    /// A location naming only a file.
    pub fn file(path: Arc<Path>) -> Self {
        Location {
            path,
            line_col: None,
        }
    }

    /// A problem at this location.
    pub fn problem(&self, message: impl Into<String>) -> Problem {
        Problem {
            path: self.path.to_path_buf(),
            line: self.line_col.map(|(line, _)| line),
            column: self.line_col.map(|(_, column)| column),
            message: message.into(),
        }
    }

    /// The folder of the file, against which relative paths in it are resolved.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

impl<T> Located<T> {
    /// A problem at this value's location.
    pub fn problem(&self, message: impl Into<String>) -> Problem {
        self.at.problem(message)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", printable(&self.path.display().to_string()))?;
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(column) = self.column {
                write!(f, "{column}:")?;
            }
        }
        // One line per problem, whatever a parser's message looks like.
        for line in self
            .message
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            write!(f, " {}", printable(line))?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

/// Points problems about templates at the templates' own lines: a template error in a
/// multi-line string says `(template line N)` (which stays in the message: a webhook's
/// problem is matched to its template's by the message), and a value of the JSON body
/// would otherwise point at its `[body]` table. Each file with such a problem is read and
/// parsed again, once (on this error path only); a problem is left as it was unless the
/// field its message names is a string there that the problem's location points at.
pub fn pinpoint(problems: &mut [Problem]) {
    let wanted = |problem: &Problem| {
        problem.line.is_some()
            && (problem.message.starts_with("body.") || problem.message.ends_with(')'))
            && problem.message.contains(": ")
    };
    let mut paths: Vec<PathBuf> = problems
        .iter()
        .filter(|problem| wanted(problem))
        .map(|problem| problem.path.clone())
        .collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let Ok(text) = read_text_at_most(&path, MAX_FILE) else {
            continue;
        };
        let Ok(document) = toml::de::DeTable::parse(&text) else {
            continue;
        };
        let file = SourceFile::new(Arc::from(path.as_path()), text.clone());
        // Messages name a header in lower case.
        let headers: std::collections::HashMap<String, &toml::Spanned<toml::de::DeValue<'_>>> =
            match document
                .get_ref()
                .get("headers")
                .map(toml::Spanned::get_ref)
            {
                Some(toml::de::DeValue::Table(headers)) => headers
                    .iter()
                    .map(|(name, value)| (name.get_ref().to_ascii_lowercase(), value))
                    .collect(),
                _ => Default::default(),
            };
        let document = (document.get_ref(), &headers);
        for problem in problems.iter_mut() {
            if problem.path == path
                && wanted(problem)
                && let Some((line, column)) = located_template(problem, document, &file)
            {
                problem.line = Some(line);
                problem.column = Some(column);
            }
        }
    }
}

/// A parsed file, and its `[headers]` by lower-case name.
type Document<'a, 'i> = (
    &'a toml::de::DeTable<'i>,
    &'a std::collections::HashMap<String, &'a toml::Spanned<toml::de::DeValue<'i>>>,
);

fn located_template(
    problem: &Problem,
    (document, headers): Document<'_, '_>,
    file: &SourceFile,
) -> Option<(usize, usize)> {
    let (field, _) = problem.message.split_once(": ")?;
    let (table, key) = field.split_once('.').unwrap_or((field, ""));
    let template_line: usize = match problem.message.rsplit_once(" (template line ") {
        Some((_, n)) => n.strip_suffix(')')?.parse().ok()?,
        None if table == "body" => 1,
        None => return None,
    };
    let top = document.get(table)?;
    let value = if key.is_empty() {
        top
    } else if table == "headers" {
        headers.get(key).copied()?
    } else if table != "body" {
        // A query name may hold a `.`.
        match top.get_ref() {
            toml::de::DeValue::Table(fields) => fields.get(key)?,
            _ => return None,
        }
    } else {
        // A body path, `items[0].name`: unless a key of the body holds the same text
        // (`"a.b"` beside `a.b`), which the message cannot tell apart.
        let quoted = match top.get_ref() {
            toml::de::DeValue::Table(fields) => fields.get(key),
            _ => None,
        };
        match (quoted, body_value(top, key)) {
            (Some(one), None) | (None, Some(one)) => one,
            (Some(one), Some(other)) if std::ptr::eq(one, other) => one,
            _ => return None,
        }
    };
    // The problem is about this value (or, for the body, its table): a file changed since
    // it was loaded is left alone.
    let first_line = |offset: usize| file.locate(offset).line_col.map(|(line, _)| line);
    let pointed = if table == "body" { top } else { value };
    if first_line(pointed.span().start) != problem.line {
        return None;
    }
    let toml::de::DeValue::String(text) = value.get_ref() else {
        return None;
    };
    // A value with a secret is compiled piece by piece, each counting its own lines.
    if text.contains("${env:") || text.contains("${file:") {
        return None;
    }
    // An expression is compiled without the blank lines and `{{` around it.
    let expression = match table {
        "variables" => Some(crate::render::single_expression(text).unwrap_or(text.trim())),
        "body" if text.contains("{{") || text.contains("{%") => {
            crate::render::single_expression(text)
        }
        _ => None,
    };
    let skipped = expression.map_or(0, |bare| {
        let before = (bare.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        text.get(..before)
            .map_or(0, |before| before.matches('\n').count())
    });
    let line = template_line + skipped;
    let offset = template_line_start(file.text(), value.span(), line)?;
    let at = file.locate(offset).line_col?;
    // The first line, on the value's own line: the value's start says it as well.
    (table == "body" || line > 1 || Some(at.0) != problem.line).then_some(at)
}

/// The value at `path` (`items[0].name`) under `top`, through nested tables and arrays.
fn body_value<'a, 'i>(
    top: &'a toml::Spanned<toml::de::DeValue<'i>>,
    path: &str,
) -> Option<&'a toml::Spanned<toml::de::DeValue<'i>>> {
    let mut value = top;
    for step in path.split('.') {
        let (name, indexes) = step.split_once('[').unwrap_or((step, ""));
        if !name.is_empty() {
            let toml::de::DeValue::Table(fields) = value.get_ref() else {
                return None;
            };
            value = fields.get(name)?;
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            let index: usize = index.strip_suffix(']')?.parse().ok()?;
            let toml::de::DeValue::Array(items) = value.get_ref() else {
                return None;
            };
            value = items.get(index)?;
        }
    }
    Some(value)
}

/// Whether hex digits name U+000A.
fn is_line_feed(hex: &str) -> bool {
    u32::from_str_radix(hex, 16) == Ok(0x0A)
}

/// The byte offset in `text` where line `wanted` (1-based) of the TOML string at `span`
/// begins, as its value counts lines: escapes (`\n`, a line-ending backslash) and the
/// newline right after an opening `"""` are taken as TOML reads them.
fn template_line_start(text: &str, span: std::ops::Range<usize>, wanted: usize) -> Option<usize> {
    let token = text.get(span.clone())?;
    let (quote, escapes) = [("\"\"\"", true), ("'''", false), ("\"", true), ("'", false)]
        .into_iter()
        .find(|(quote, _)| token.starts_with(quote))?;
    let end = span.end.checked_sub(quote.len())?;
    let mut at = span.start + quote.len();
    if quote.len() == 3 {
        for newline in ["\n", "\r\n"] {
            if text.get(at..).is_some_and(|rest| rest.starts_with(newline)) {
                at += newline.len();
            }
        }
    }
    let mut line = 1;
    while line < wanted && at < end {
        // `get`: never a panic, should an escape end inside a character.
        let rest = text.get(at..end)?;
        let c = rest.chars().next()?;
        if escapes && c == '\\' {
            let after = &rest[1..];
            let blank = after.trim_start_matches([' ', '\t']);
            if quote.len() == 3 && (blank.starts_with('\n') || blank.starts_with("\r\n")) {
                // A line-ending backslash: what follows, up to the next text, is not read.
                at += 1 + after.len() - after.trim_start_matches([' ', '\t', '\r', '\n']).len();
                continue;
            }
            // `\n`, and a line feed written as `\u000A` or `\U0000000A`.
            let (newline, length) = match after.as_bytes().first() {
                Some(b'n') => (true, 1),
                Some(b'u') => (after.get(1..5).is_some_and(is_line_feed), 5),
                Some(b'U') => (after.get(1..9).is_some_and(is_line_feed), 9),
                _ => (false, after.chars().next().map_or(0, char::len_utf8)),
            };
            line += usize::from(newline);
            at += 1 + length.min(after.len());
            continue;
        }
        if c == '\n' {
            line += 1;
        }
        at += c.len_utf8();
    }
    (line == wanted).then_some(at)
}

/// `text` with its control characters escaped (`\u{1b}`, `\t`), and the characters that
/// reorder or break lines (bidi overrides, U+2028): a file name may hold an escape
/// sequence or a line break, which would repaint a terminal, forge a log line, or show a
/// reviewer another name than the file's.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
    };
    if text.chars().any(hidden) {
        text.chars()
            .map(|c| {
                if hidden(c) {
                    c.escape_debug().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// The most a webhook file or the config file may hold.
pub const MAX_FILE: usize = 1024 * 1024;

/// The most a `${file:...}` secret may hold: a token or a password, not a log file.
pub const MAX_SECRET: usize = 64 * 1024;

/// The most a `[tls] ca_file` may hold (Mozilla's whole bundle is about 230 KB).
pub const MAX_CA_FILE: usize = 4 * 1024 * 1024;

/// Reads at most `limit` bytes of `path`: a larger file is an error, read no further, and
/// so is what is not a regular file (a path given by mistake).
pub fn read_at_most(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    // A FIFO or a device (`/dev/stdin`, `/dev/zero`) would block the reload, or never end:
    // opened without blocking, what was opened is checked (a path swapped for a FIFO
    // between a check and the open would block it otherwise).
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            if limit.is_multiple_of(1024 * 1024) {
                format!("the file is larger than {} MiB", limit / (1024 * 1024))
            } else {
                format!("the file is larger than {} KiB", limit / 1024)
            },
        ));
    }
    Ok(bytes)
}

/// [`read_at_most`], as UTF-8 text.
pub fn read_text_at_most(path: &Path, limit: usize) -> std::io::Result<String> {
    String::from_utf8(read_at_most(path, limit)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// How far down [`deserialize`] looks for more than one type error: a top-level key, the
/// entries of its table or array, theirs (the keys of one `[[examples]]` entry), and theirs
/// (the keys of an example's `request`).
const TYPE_ERROR_DEPTH: usize = 3;

/// The most problems [`deserialize`] lists for one file; one more line says how many it
/// left out.
pub const MAX_TOML_PROBLEMS: usize = 50;

/// The largest file whose syntax errors [`deserialize`] lists past the first.
const MAX_RECOVERED: usize = 64 * 1024;

/// Reads a file's text into `T`, as `toml::from_str` does, but when it fails, with the
/// problems a reader can fix in one go rather than the first, in the order of the file (at
/// most [`MAX_TOML_PROBLEMS`]):
/// - the syntax errors TOML reads on past, the first of each line, up to the first that
///   leaves an array or inline table open (a missing `]` or `}`, which TOML reports as a
///   missing comma): past it, every line reads as more of the open value (in a file over
///   [`MAX_RECOVERED`], the first only);
/// - else, when the syntax is sound, the first type error of each key, down to the keys of
///   an example's `request`.
///
/// The search runs only for a file that failed.
pub fn deserialize<T: serde::de::DeserializeOwned>(source: &SourceFile) -> Result<T, Vec<Problem>> {
    let text = source.text();
    let first = match toml::from_str(text) {
        Ok(value) => return Ok(value),
        Err(err) => err,
    };
    // Each syntax error TOML reads on past is kept until the end: a megabyte of junk makes
    // hundreds of megabytes of them. A larger file gets its first only.
    let (document, mut errors) = if text.len() <= MAX_RECOVERED {
        toml::de::DeTable::parse_recoverable(text)
    } else {
        match toml::de::DeTable::parse(text) {
            Ok(document) => (document, Vec::new()),
            Err(err) => (
                toml::Spanned::new(0..0, toml::de::DeTable::new()),
                vec![err],
            ),
        }
    };
    let syntax = !errors.is_empty();
    if !syntax {
        let span = document.span();
        for (key, entry) in document.get_ref().iter() {
            let alone = |value| {
                let mut table = toml::de::DeTable::new();
                table.insert(key.clone(), value);
                toml::Spanned::new(span.clone(), table)
            };
            type_errors::<T>(&alone, entry, TYPE_ERROR_DEPTH, &mut errors);
        }
    }
    if errors.is_empty() {
        errors.push(first);
    }
    let start = |err: &toml::de::Error| err.span().map(|span| span.start);
    errors.sort_by_key(start);
    // A table or array that does not fit fails again with each of its entries: once.
    errors.dedup_by(|later, earlier| {
        start(later) == start(earlier) && later.message() == earlier.message()
    });
    if syntax {
        let line = |err: &toml::de::Error| start(err).map(|offset| source.line_of(offset));
        errors.dedup_by(|later, earlier| line(later) == line(earlier));
        if let Some(open) = errors
            .iter()
            .position(|err| err.message().starts_with("missing comma between"))
        {
            errors.truncate(open + 1);
        }
    }
    let at = |err: &toml::de::Error| {
        start(err).map_or_else(|| source.whole(), |offset| source.locate(offset))
    };
    let mut problems: Vec<Problem> = errors
        .iter()
        .take(MAX_TOML_PROBLEMS)
        .map(|err| at(err).problem(toml_message(err, text)))
        .collect();
    if let Some(next) = errors.get(MAX_TOML_PROBLEMS) {
        let more = errors.len() - MAX_TOML_PROBLEMS;
        problems.push(at(next).problem(format!(
            "{more} more problems from here on, not listed (only the first \
             {MAX_TOML_PROBLEMS} of a file are)"
        )));
    }
    Err(problems)
}

/// The type errors `value` holds, where `place` puts it back as the one thing in a document
/// of its own: the first of each entry of a table or item of an array, `depth` levels down,
/// or the value's own when none of its parts fails alone.
fn type_errors<'i, T: serde::de::DeserializeOwned>(
    place: &dyn Fn(toml::Spanned<toml::de::DeValue<'i>>) -> toml::Spanned<toml::de::DeTable<'i>>,
    value: &toml::Spanned<toml::de::DeValue<'i>>,
    depth: usize,
    errors: &mut Vec<toml::de::Error>,
) {
    use toml::de::{DeArray, DeTable, DeValue};
    let Err(error) = T::deserialize(toml::de::Deserializer::from(place(value.clone()))) else {
        return;
    };
    let found = errors.len();
    if depth > 0 {
        let span = value.span();
        match value.get_ref() {
            DeValue::Table(table) => {
                for (key, entry) in table.iter() {
                    let alone = |inner| {
                        let mut table = DeTable::new();
                        table.insert(key.clone(), inner);
                        place(toml::Spanned::new(span.clone(), DeValue::Table(table)))
                    };
                    type_errors::<T>(&alone, entry, depth - 1, errors);
                }
            }
            DeValue::Array(array) => {
                for item in array.iter() {
                    let alone = |inner| {
                        let mut array = DeArray::new();
                        array.push(inner);
                        place(toml::Spanned::new(span.clone(), DeValue::Array(array)))
                    };
                    type_errors::<T>(&alone, item, depth - 1, errors);
                }
            }
            _ => {}
        }
    }
    if errors.len() == found {
        errors.push(error);
    }
}

/// A TOML or type error's message without the value it quotes: `invalid type: integer
/// \`123456789\`, expected a string` could be a token written in the file, and problems are
/// printed and logged. The location already points at the value.
pub fn toml_message(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().trim();
    // A key is no secret: name the one written twice.
    if message == "duplicate key"
        && let Some(key) = err.span().and_then(|span| text.get(span))
        && !key.is_empty()
        && key.len() <= 200
        && !key.contains(['\n', '='])
    {
        return format!("duplicate key {}", key.trim());
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((found, expected)) = rest.split_once(", expected ") else {
            continue;
        };
        // `integer \`5\``, `string "abc"`: the kind, without the value.
        let kind = found
            .find([' ', '`', '"'])
            .map_or(found, |end| &found[..end]);
        // In TOML's words: serde's maps are tables, its sequences arrays.
        let kind = match kind {
            "floating" => "floating point number",
            "map" => "table",
            "sequence" => "array",
            other => other,
        };
        // `struct RawAuth` and `u16` are names of the code, not of the file. A value out of
        // range says the range.
        let out_of_range = prefix == "invalid value: ";
        let expected = match expected {
            _ if expected.starts_with("struct ") => "a table",
            "a map" => "a table",
            "a sequence" => "an array",
            "u8" if out_of_range => "an integer from 0 to 255",
            "u16" if out_of_range => "an integer from 0 to 65535",
            "u32" if out_of_range => "an integer from 0 to 4294967295",
            "u64" | "usize" if out_of_range => "an integer from 0 up",
            "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" => "an integer",
            other => other,
        };
        let start = err.span().map(|span| span.start);
        let key = start.and_then(|start| key_before(text, start));
        // `timeout` of the webhook or of the config file's `[defaults]`, not a query key.
        let duration = key == Some("timeout")
            && start.is_some_and(|start| matches!(table_at(text, start), None | Some("defaults")));
        let hint = match (duration, kind, expected) {
            (true, "integer" | "floating point number", _) => {
                " (a duration, in quotes: \"5s\", \"1500ms\")"
            }
            (_, "integer" | "floating point number" | "boolean", "a string") => {
                " (write it in quotes)"
            }
            (_, "string", "an integer") if quoted_integer(err, text) => {
                " (write it without quotes)"
            }
            _ => "",
        };
        return format!("{prefix}{kind}, expected {expected}{hint}");
    }
    message.to_owned()
}

/// Whether the value an error points at is a string that holds an integer (`"200"`).
fn quoted_integer(err: &toml::de::Error, text: &str) -> bool {
    err.span()
        .and_then(|span| text.get(span))
        .map(|value| value.trim().trim_matches(['"', '\'']))
        .is_some_and(|inner| inner.parse::<i64>().is_ok())
}

/// The table whose header (`[name]`) is the last before `offset`, if any.
fn table_at(text: &str, offset: usize) -> Option<&str> {
    text.get(..offset)?.lines().rev().find_map(|line| {
        let line = line.trim();
        line.strip_prefix('[')
            .and_then(|rest| rest.split(']').next())
            .filter(|_| !line.starts_with("[["))
            .map(str::trim)
            .or_else(|| line.starts_with("[[").then_some(""))
    })
}

/// The key written before the value at `offset` on its line (`timeout` in `timeout = 5`,
/// `type` in `auth = { type = 5 }`), if any.
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |at| at + 1)..];
    let key = line.trim_end().strip_suffix('=')?.trim_end();
    let key = key.rsplit([' ', '\t', '{', ',']).next()?;
    Some(key.trim_matches(['"', '\'']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_one_printable_line_whatever_its_file_is_named() {
        let problem = Problem {
            path: PathBuf::from("d/e\u{1b}[2J\nFAKE LOG LINE.toml"),
            line: Some(1),
            column: Some(2),
            message: "name: \u{7}bad \u{202e}lmth.exe".to_owned(),
        };
        assert_eq!(
            problem.to_string(),
            "d/e\\u{1b}[2J\\nFAKE LOG LINE.toml:1:2: name: \\u{7}bad \\u{202e}lmth.exe"
        );
    }

    #[test]
    fn a_template_line_is_found_in_the_string_as_toml_reads_it() {
        // Each case: the file, the string's token in it, and where line 3 of its value starts.
        let cases = [
            ("v = \"\"\"\r\none\r\ntwo\r\nTHREE\"\"\"\n", "THREE"),
            ("v = '''\none \\\ntwo\nTHREE'''\n", "THREE"),
            (
                "v = \"\"\"one \\\n   still one\ntwo\nTHREE\"\"\"\n",
                "THREE",
            ),
            ("v = \"a\\\"\\n\\\\n\\nTHREE\"\n", "THREE"),
            ("v = \"\"\"\n\u{e9}\u{e9}\ntwo\nTHREE\"\"\"\n", "THREE"),
            ("v = \"one\\u000Atwo\\U0000000aTHREE \\u0041\"\n", "THREE"),
        ];
        for (text, marker) in cases {
            let start = text.find(['"', '\'']).expect("a string");
            let end = text.trim_end().len();
            let found = template_line_start(text, start..end, 3);
            assert_eq!(found, text.find(marker), "{text:?}");
            // Line 1 starts past the quotes (and a newline right after `"""`).
            let first = template_line_start(text, start..end, 1).expect("line 1");
            assert!(
                !text[first..].starts_with(['"', '\'', '\r', '\n']),
                "{text:?}"
            );
            assert_eq!(template_line_start(text, start..end, 9), None, "{text:?}");
        }
    }

    #[test]
    fn files_are_read_up_to_their_limit_and_no_further() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'a'; 2048]).expect("write");
        assert_eq!(read_at_most(&path, 2048).expect("at the limit").len(), 2048);
        let err = read_at_most(&path, 1024).expect_err("over the limit");
        assert_eq!(err.to_string(), "the file is larger than 1 KiB");
        let err = read_text_at_most(Path::new("/dev/zero"), MAX_FILE).expect_err("endless");
        assert_eq!(err.to_string(), "not a regular file");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.expect("mkfifo runs").success());
        // With no writer, a blocking open would wait forever.
        let err = read_at_most(&fifo, MAX_FILE).expect_err("a FIFO, at once");
        assert_eq!(err.to_string(), "not a regular file");
        std::fs::write(&path, [0xff, 0xfe]).expect("write");
        assert!(read_text_at_most(&path, MAX_FILE).is_err(), "not UTF-8");
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        let file = SourceFile::new(Path::new("a.toml").into(), "a = 1\nbé = 2\n".into());
        assert_eq!(file.locate(0).line_col, Some((1, 1)));
        assert_eq!(file.locate(6).line_col, Some((2, 1)));
        assert_eq!(file.locate(10).line_col, Some((2, 4)));
        let problem = file.locate(6).problem("bad");
        assert_eq!(problem.to_string(), "a.toml:2:1: bad");
    }
}
