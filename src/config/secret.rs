//! Secret references: `${env:NAME}` and `${file:PATH}` inside `[auth]`, `[headers]` and
//! `[query]` values and the config file's caller tokens.
//!
//! A value is split into literal text and secrets when its file loads; a secret's value
//! never reaches the template context, a log line or an error message. [`Secret`]'s
//! `Debug` prints `***` so that a stray `{:?}` cannot leak it either.

use std::fmt;
use std::path::Path;

/// One piece of a value that may hold secret references.
#[derive(Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text written in the file (it may still be a template).
    Text(String),
    /// A resolved secret.
    Secret(Secret),
}

/// A resolved secret value and where it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The secret itself. Never print it.
    pub value: String,
    /// The reference as written (`env:NAME` or `file:PATH`), safe to show.
    pub reference: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(${{{}}} = ***)", self.reference)
    }
}

impl fmt::Debug for Piece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Piece::Text(text) => write!(f, "Text({text:?})"),
            Piece::Secret(secret) => secret.fmt(f),
        }
    }
}

/// A value that names secrets, kept so that a reload can tell whether any of them changed
/// without parsing the file again.
#[derive(Clone, Debug)]
pub struct Watched {
    raw: String,
    base: std::path::PathBuf,
}

impl Watched {
    /// A value as written and the folder its `${file:...}` paths are relative to.
    pub fn new(raw: &str, base: &Path) -> Watched {
        Watched {
            raw: raw.to_owned(),
            base: base.to_path_buf(),
        }
    }
}

/// A hash of the current values of every watched secret (and of an extra file, a CA).
pub fn current_hash(watched: &[Watched], extra_file: Option<&Path>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for value in watched {
        match resolve(&value.raw, &value.base, true) {
            Ok(pieces) => reveal(&pieces).hash(&mut hasher),
            Err(message) => message.hash(&mut hasher),
        }
    }
    if let Some(path) = extra_file {
        super::source::read_at_most(path, super::source::MAX_CA_FILE)
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    hasher.finish()
}

/// Whether `raw` mentions a secret reference at all, or one misspelt (`${ENV:TOKEN}`):
/// where secrets are not resolved, either is refused.
pub fn has_reference(raw: &str) -> bool {
    raw.contains("${env:") || raw.contains("${file:") || lookalike(raw, false, true).is_some()
}

/// Splits `raw` into text and resolved secrets. Relative `${file:...}` paths are taken
/// from `base_dir` (the folder of the file that mentions them). The error message names
/// the reference, never a secret's value. `templated`: the value is a Jinja template (a
/// header, a query value), whose strings may hold `${...}` to send as written.
pub fn resolve(raw: &str, base_dir: &Path, templated: bool) -> Result<Vec<Piece>, String> {
    split(raw, templated, |reference| {
        resolve_one(reference, base_dir).map_err(|unresolved| unresolved.message)
    })
}

/// Like [`resolve`], but a secret that is not set here is replaced by a placeholder
/// (`unset-env-NAME`) and reported: `hookside check` runs where production secrets are not.
/// A secret file that is there but cannot be one (too large, not a regular file) is still
/// an error: serve would refuse it wherever it runs. (One that is not UTF-8 is taken as not
/// set here: a checkout may hold it encrypted, as git-crypt does.)
pub fn resolve_or_placeholder(
    raw: &str,
    base_dir: &Path,
    templated: bool,
) -> Result<(Vec<Piece>, Vec<String>), String> {
    let mut missing = Vec::new();
    let pieces = split(raw, templated, |reference| {
        match resolve_one(reference, base_dir) {
            Ok(secret) => Ok(secret),
            Err(Unresolved {
                message,
                not_here: true,
            }) => {
                missing.push(message);
                Ok(Secret {
                    value: format!("unset-{}", reference.replace([':', '/', '.'], "-")),
                    reference: reference.to_owned(),
                })
            }
            Err(Unresolved { message, .. }) => Err(message),
        }
    })?;
    Ok((pieces, missing))
}

fn split(
    raw: &str,
    templated: bool,
    mut resolve: impl FnMut(&str) -> Result<Secret, String>,
) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = raw;
    while let Some(start) = find_reference(rest) {
        if start > 0 {
            not_a_lookalike(&rest[..start], templated)?;
            pieces.push(Piece::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated secret reference `{}`", &rest[start..]))?;
        let reference = &after[..end];
        if reference.trim_end().ends_with(':') {
            return Err(format!(
                "secret reference `${{{reference}}}` names nothing: write `${{env:NAME}}` or `${{file:PATH}}`"
            ));
        }
        // `${env: X}`, `${env:X:-default}`: no variable is named so (and no default is
        // taken); `${file: x}`: no path begins or ends so.
        let name = reference
            .strip_prefix("env:")
            .or_else(|| reference.strip_prefix("file:"))
            .unwrap_or_default();
        // Names as Kubernetes allows them: letters, digits, `_`, `-` and `.`, no digit first.
        let env_name_ok = !reference.starts_with("env:")
            || (name.starts_with(|c: char| !c.is_ascii_digit())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')));
        if !env_name_ok || name.trim() != name {
            return Err(format!(
                "secret reference `${{{reference}}}`: `{name}` is not {} (no spaces, no default)",
                if reference.starts_with("env:") {
                    "an environment variable's name: letters, digits, _, - and ."
                } else {
                    "a path as written"
                }
            ));
        }
        pieces.push(Piece::Secret(resolve(reference)?));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        not_a_lookalike(rest, templated)?;
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

/// Words that name where a secret would come from, in a reference misspelt
/// (`${ENV:TOKEN}`, `${ file:key }`, `${secret:TOKEN}`).
const PROVIDERS: [&str; 5] = ["env", "file", "secret", "secrets", "vault"];

/// A look-alike reference in `text`, if any, with the spelling meant: `${ENV:TOKEN}`,
/// `${ env:TOKEN }`, `${secret:TOKEN}` and, where only secrets go (`shell_style`), a shell's
/// `${TOKEN}` in capitals. In a template (`templated`), text inside `{{ }}` or `{% %}` is
/// Jinja's (a string there is the way to send such text as written); `${name}` in lower
/// case is left alone: an upstream's own placeholders may be written so.
fn lookalike(text: &str, shell_style: bool, templated: bool) -> Option<String> {
    for (at, _) in text.match_indices("${") {
        if templated && inside_jinja(text, at) {
            continue;
        }
        let inside = &text[at + 2..];
        let word_start = inside.len() - inside.trim_start().len();
        let word_len = inside[word_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inside.len() - word_start);
        let word = &inside[word_start..word_start + word_len];
        let after = inside[word_start + word_len..].trim_start();
        let lower = word.to_ascii_lowercase();
        let written = inside.find('}').map_or(inside, |end| &inside[..end]);
        let hint = match after.strip_prefix(':') {
            Some(name) if lower == "env" || lower == "file" => format!(
                "did you mean `${{{lower}:{}}}`?",
                name.split('}').next().unwrap_or_default().trim()
            ),
            Some(_) if PROVIDERS.contains(&lower.as_str()) => {
                "a secret comes from `${env:NAME}` or `${file:PATH}`".to_owned()
            }
            None if shell_style
                && after.starts_with('}')
                && word.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
                && !word.contains(|c: char| c.is_ascii_lowercase()) =>
            {
                format!("did you mean `${{env:{word}}}`?")
            }
            _ => continue,
        };
        let escape = if templated {
            "; to send such text, write it in a Jinja string: {{ \"${...}\" }}"
        } else {
            ""
        };
        return Some(format!(
            "`${{{written}}}` is not a secret reference and would be taken as written: {hint} \
             (lowercase, no spaces{escape})"
        ));
    }
    None
}

/// Whether the byte at `at` lies inside a `{{ }}` or `{% %}` tag of `text`.
fn inside_jinja(text: &str, at: usize) -> bool {
    let before = &text[..at];
    [("{{", "}}"), ("{%", "%}")].iter().any(|(open, close)| {
        before
            .rfind(open)
            .is_some_and(|start| !before[start..].contains(close))
    })
}

/// Refuses text with a look-alike reference where secrets go ([`lookalike`]).
fn not_a_lookalike(text: &str, templated: bool) -> Result<(), String> {
    lookalike(text, true, templated).map_or(Ok(()), Err)
}

/// Joins pieces into the value to send (secrets in clear).
pub fn reveal(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|piece| match piece {
            Piece::Text(text) => text.as_str(),
            Piece::Secret(secret) => secret.value.as_str(),
        })
        .collect()
}

/// Joins pieces into a value safe to show (secrets as `***`).
pub fn redact(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|piece| match piece {
            Piece::Text(text) => text.as_str(),
            Piece::Secret(_) => "***",
        })
        .collect()
}

/// Replaces every secret reference in `raw` by `***`, without resolving anything.
pub fn mask_references(raw: &str) -> String {
    let mut shown = String::new();
    let mut rest = raw;
    while let Some(start) = find_reference(rest) {
        shown.push_str(&rest[..start]);
        shown.push_str("***");
        rest = rest[start..]
            .find('}')
            .map_or("", |end| &rest[start + end + 1..]);
    }
    shown.push_str(rest);
    shown
}

fn find_reference(s: &str) -> Option<usize> {
    match (s.find("${env:"), s.find("${file:")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Why a reference has no value.
struct Unresolved {
    /// Names the reference, never a value.
    message: String,
    /// Not set where this runs (an unset variable, a missing, unreadable or encrypted file,
    /// an empty value), as production secrets are not where `check` runs; otherwise the
    /// secret is there and wrong.
    not_here: bool,
}

fn resolve_one(reference: &str, base_dir: &Path) -> Result<Secret, Unresolved> {
    let not_here = |message| Unresolved {
        message,
        not_here: true,
    };
    let value = if let Some(name) = reference.strip_prefix("env:") {
        std::env::var(name).map_err(|err| {
            let why = match err {
                std::env::VarError::NotPresent => "is not set",
                std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
            };
            not_here(format!(
                "secret `${{{reference}}}`: environment variable {name} {why}"
            ))
        })?
    } else if let Some(path) = reference.strip_prefix("file:") {
        let path = base_dir.join(path);
        let mut text =
            super::source::read_text_at_most(&path, super::source::MAX_SECRET).map_err(|err| {
                use std::io::ErrorKind::{InvalidData, NotADirectory, NotFound, PermissionDenied};
                Unresolved {
                    not_here: matches!(
                        err.kind(),
                        NotFound | NotADirectory | PermissionDenied | InvalidData
                    ),
                    message: format!(
                        "secret `${{{reference}}}`: cannot read {}: {err}",
                        path.display()
                    ),
                }
            })?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        text
    } else {
        return Err(Unresolved {
            message: format!("unknown secret reference `${{{reference}}}` (use env: or file:)"),
            not_here: false,
        });
    };
    if value.is_empty() {
        return Err(not_here(format!("secret `${{{reference}}}` is empty")));
    }
    Ok(Secret {
        value,
        reference: reference.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_text_and_secrets_and_trims_one_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), "s3cr3t\n").expect("write");
        let pieces = resolve("Key ${file:key}!", dir.path(), false).expect("resolves");
        assert_eq!(reveal(&pieces), "Key s3cr3t!");
        assert_eq!(redact(&pieces), "Key ***!");
        assert!(!format!("{pieces:?}").contains("s3cr3t"));
    }

    #[test]
    fn lookalikes_and_empty_references_are_refused_with_a_hint() {
        let base = Path::new(".");
        for (raw, hint) in [
            (
                "Bearer ${ENV:ACME_TOKEN}",
                "did you mean `${env:ACME_TOKEN}`?",
            ),
            ("${ env:HOME }", "did you mean `${env:HOME}`?"),
            ("${File:key}x", "did you mean `${file:key}`?"),
            ("k-${ACME_KEY}", "did you mean `${env:ACME_KEY}`?"),
            (
                "${secret:X}",
                "a secret comes from `${env:NAME}` or `${file:PATH}`",
            ),
            (
                "${VAULT:X}",
                "a secret comes from `${env:NAME}` or `${file:PATH}`",
            ),
            ("${env:}", "names nothing"),
            ("${env: }", "names nothing"),
            ("${file:}", "names nothing"),
            (
                "${env:HOOKSIDE_TEST_SURELY_UNSET} ${Env:B}",
                "did you mean `${env:B}`?",
            ),
        ] {
            let err = resolve_or_placeholder(raw, base, true).unwrap_err();
            assert!(err.contains(hint), "{raw}: {err}");
        }
        // Jinja's text, an upstream's lower-case placeholders, and what is no reference.
        for fine in [
            "{{ \"${\" }}",
            "{{ \"${TOKEN}\" }}",
            "{% if x %}{{ \"${TOKEN}\" }}{% endif %}",
            "Hi ${name}",
            "p${ass}",
            "price > ${min}",
            "${user:id}",
            "${-}",
            "$ {x}",
            "${",
            "price: $5",
            "${ }",
        ] {
            assert!(resolve(fine, base, true).is_ok(), "{fine}");
        }
        // Where no template runs (`[auth]`, caller tokens), Jinja's braces are text too.
        let err = resolve("{{ \"${ENV:T}\" }}", base, false).unwrap_err();
        assert!(
            err.contains("did you mean `${env:T}`?") && !err.contains("Jinja"),
            "{err}"
        );
        // A name with spaces or a shell's default is no variable's name.
        for raw in [
            "${env: X}",
            "${env:X }",
            "${env:X:-d}",
            "${env:1X}",
            "${file: key}",
        ] {
            let err = resolve_or_placeholder(raw, base, true).unwrap_err();
            assert!(err.contains("no spaces, no default"), "{raw}: {err}");
        }
        // Kubernetes lets a variable's name hold `-` and `.`.
        let (_, unset) =
            resolve_or_placeholder("${env:ACME-TOKEN.v2}", base, true).expect("a name");
        assert!(unset[0].contains("ACME-TOKEN.v2 is not set"), "{unset:?}");
        // Where secrets are not resolved, only a provider's look-alike counts.
        assert!(has_reference("${ENV:T}"));
        assert!(!has_reference("Hello ${NAME}"));
    }

    #[test]
    fn missing_secret_names_the_reference() {
        let err = resolve("${env:HOOKSIDE_TEST_SURELY_UNSET}", Path::new("."), false).unwrap_err();
        assert!(err.contains("HOOKSIDE_TEST_SURELY_UNSET"), "{err}");
    }
}
