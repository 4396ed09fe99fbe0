//! The optional config file (`--config`): defaults, limits, the destination policy and the
//! companies' caller tokens. Loaded at start (an error here stops `serve` before any port
//! is bound); every reload reads the caller tokens again.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::secret::{self, Secret};
use super::source::{Problem, SourceFile};

/// The longest timeout a webhook may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Process-wide settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A webhook's timeout when its file sets none.
    pub default_timeout: Duration,
    /// The largest conversation body accepted from the bot.
    pub max_request_body: usize,
    /// The largest upstream response accepted.
    pub max_response_body: usize,
    /// Connections served at once per listener; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (slowloris).
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub request_body_timeout: Duration,
    /// Hosts a webhook's URL may name; empty: any.
    pub allowed_hosts: Vec<String>,
    /// Networks no upstream address may fall in (checked on resolved addresses).
    pub deny_networks: Vec<IpNet>,
    /// Caller tokens per company.
    pub companies: HashMap<String, Company>,
    /// Set by `hookside check`, not by the config file: a secret that cannot be resolved
    /// is a warning and a placeholder stands in (checks run where production secrets are
    /// not); `serve` and `run` need every secret.
    pub secrets_optional: bool,
}

/// A company's settings.
#[derive(Clone, Debug, Default)]
pub struct Company {
    /// Bearer tokens a caller of this company's webhooks must present (any one of them).
    pub caller_tokens: Vec<Secret>,
}

/// The config file's text, or why it cannot be read.
fn read(path: &Path) -> Result<SourceFile, Vec<Problem>> {
    let text = super::source::read_text_at_most(path, super::source::MAX_FILE).map_err(|err| {
        vec![Problem {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read the config file: {err}"),
        }]
    })?;
    Ok(SourceFile::new(Arc::from(path), text))
}

/// A host that is an IP address, as a URL writes it (IPv6 in brackets) or bare.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The company of `companies` whose name differs from `company` only in case, when
/// `company` itself has no caller tokens there and that one has. Names are compared
/// exactly, so a webhook of `company = "acme"` is open to any caller while
/// `[companies.ACME]` holds tokens: almost surely not what was meant.
pub fn case_variant<'a>(companies: &'a HashMap<String, Company>, company: &str) -> Option<&'a str> {
    let has_tokens = |c: &Company| !c.caller_tokens.is_empty();
    if companies.get(company).is_some_and(has_tokens) {
        return None;
    }
    // Both ways: `ß` upper-cases to `SS`, which lower-cases to `ss`.
    let (lower, upper) = (company.to_lowercase(), company.to_uppercase());
    companies
        .iter()
        .filter(|(name, c)| {
            has_tokens(c) && (name.to_lowercase() == lower || name.to_uppercase() == upper)
        })
        .map(|(name, _)| name.as_str())
        .min()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    defaults: Option<RawDefaults>,
    limits: Option<RawLimits>,
    security: Option<RawSecurity>,
    companies: Option<BTreeMap<String, RawCompany>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_request_body: Option<Spanned<String>>,
    max_response_body: Option<Spanned<String>>,
    max_connections: Option<Spanned<u32>>,
    header_read_timeout: Option<Spanned<String>>,
    request_body_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    allowed_hosts: Option<Vec<Spanned<String>>>,
    deny_networks: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompany {
    #[serde(default)]
    caller_tokens: Vec<Spanned<String>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_timeout: Duration::from_secs(5),
            max_request_body: 1 << 20,
            max_response_body: 10 << 20,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(10),
            allowed_hosts: Vec::new(),
            deny_networks: default_deny_networks(),
            companies: HashMap::new(),
            secrets_optional: false,
        }
    }
}

/// Link-local (which holds the cloud metadata address 169.254.169.254) and the IPv6
/// metadata address some clouds use.
pub fn default_deny_networks() -> Vec<IpNet> {
    ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"]
        .iter()
        .filter_map(|net| net.parse().ok())
        .collect()
}

impl Settings {
    /// Reads and validates a config file, reporting every problem.
    pub fn load(path: &Path) -> Result<Settings, Vec<Problem>> {
        Settings::parse(&read(path)?)
    }

    /// Loads the config file for `hookside check`, which runs where production secrets
    /// are not (a pull request's CI): a caller token that cannot be resolved is a warning,
    /// returned beside the settings, and a placeholder stands in.
    pub fn load_for_check(path: &Path) -> Result<(Settings, Vec<Problem>), Vec<Problem>> {
        Settings::parse_with(&read(path)?, true)
    }

    /// Validates a config file's text.
    pub fn parse(source: &SourceFile) -> Result<Settings, Vec<Problem>> {
        Settings::parse_with(source, false).map(|(settings, _)| settings)
    }

    /// Validates a config file's text; with `secrets_optional`, a caller token that cannot
    /// be resolved is a warning (returned) rather than a problem.
    fn parse_with(
        source: &SourceFile,
        secrets_optional: bool,
    ) -> Result<(Settings, Vec<Problem>), Vec<Problem>> {
        let raw: RawSettings = super::source::deserialize(source)?;
        let mut settings = Settings::default();
        let mut problems = Vec::new();
        let at = |spanned: &Spanned<String>, message: String| {
            source.locate(spanned.span().start).problem(message)
        };
        if let Some(timeout) = raw.defaults.and_then(|d| d.timeout) {
            match parse_timeout(timeout.get_ref()) {
                Ok(duration) => settings.default_timeout = duration,
                Err(message) => problems.push(at(&timeout, format!("defaults.timeout: {message}"))),
            }
        }
        if let Some(limits) = raw.limits {
            if let Some(max) = limits.max_connections {
                if *max.get_ref() == 0 {
                    problems.push(
                        source
                            .locate(max.span().start)
                            .problem("limits.max_connections: must be more than 0"),
                    );
                } else {
                    settings.max_connections = *max.get_ref() as usize;
                }
            }
            for (field, value, target) in [
                (
                    "header_read_timeout",
                    limits.header_read_timeout,
                    &mut settings.header_read_timeout,
                ),
                (
                    "request_body_timeout",
                    limits.request_body_timeout,
                    &mut settings.request_body_timeout,
                ),
            ] {
                if let Some(value) = value {
                    match parse_timeout(value.get_ref()) {
                        Ok(duration) => *target = duration,
                        Err(message) => {
                            problems.push(at(&value, format!("limits.{field}: {message}")))
                        }
                    }
                }
            }
            for (field, value, target) in [
                (
                    "max_request_body",
                    limits.max_request_body,
                    &mut settings.max_request_body,
                ),
                (
                    "max_response_body",
                    limits.max_response_body,
                    &mut settings.max_response_body,
                ),
            ] {
                if let Some(value) = value {
                    match parse_size(value.get_ref()) {
                        Ok(size) => *target = size,
                        Err(message) => {
                            problems.push(at(&value, format!("limits.{field}: {message}")))
                        }
                    }
                }
            }
        }
        if let Some(security) = raw.security {
            for host in security.allowed_hosts.unwrap_or_default() {
                let pattern = host.get_ref().trim().to_ascii_lowercase();
                let bare = pattern.strip_prefix("*.").unwrap_or(&pattern);
                let address = ip_literal(&pattern).is_some();
                if !address && (bare.is_empty() || bare.contains(['*', '/', ':', '@'])) {
                    problems.push(at(
                        &host,
                        format!(
                            "security.allowed_hosts: {pattern:?} is not a host name, \
                             *.domain pattern or IP address"
                        ),
                    ));
                } else {
                    settings.allowed_hosts.push(pattern);
                }
            }
            if let Some(networks) = security.deny_networks {
                settings.deny_networks.clear();
                for network in networks {
                    match parse_network(network.get_ref()) {
                        Ok(net) => settings.deny_networks.push(net),
                        Err(message) => {
                            problems
                                .push(at(&network, format!("security.deny_networks: {message}")));
                        }
                    }
                }
            }
        }
        let mut warnings = Vec::new();
        for (name, company) in raw.companies.unwrap_or_default() {
            let mut tokens = Vec::new();
            for token in company.caller_tokens {
                let whole = source.whole();
                let base = whole.base_dir();
                let resolved = if secrets_optional {
                    secret::resolve_or_placeholder(token.get_ref(), base, false).map(
                        |(pieces, unset)| {
                            for message in unset {
                                warnings.push(at(
                                    &token,
                                    format!(
                                        "companies.{name}.caller_tokens: {message} \
                                     (a placeholder stands in; serve needs it set)"
                                    ),
                                ));
                            }
                            secret::reveal(&pieces)
                        },
                    )
                } else {
                    secret::resolve(token.get_ref(), base, false)
                        .map(|pieces| secret::reveal(&pieces))
                };
                match resolved {
                    // `Authorization: Bearer TOKEN` carries visible ASCII, trimmed: no caller
                    // could present another token, and the company would be shut.
                    Ok(value)
                        if value.is_empty()
                            || value.trim() != value
                            || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
                    {
                        problems.push(at(
                            &token,
                            format!(
                                "companies.{name}.caller_tokens: a token must be visible ASCII, \
                                 not empty and without spaces at its ends (no caller could present it)"
                            ),
                        ));
                    }
                    Ok(value) => tokens.push(Secret {
                        value,
                        reference: format!("companies.{name}.caller_tokens"),
                    }),
                    Err(message) => problems.push(at(
                        &token,
                        format!("companies.{name}.caller_tokens: {message}"),
                    )),
                }
            }
            settings.companies.insert(
                name,
                Company {
                    caller_tokens: tokens,
                },
            );
        }
        if problems.is_empty() {
            warnings.sort_by_key(|w| (w.line, w.column));
            Ok((settings, warnings))
        } else {
            Err(problems)
        }
    }

    /// Whether a URL's host is allowed by `allowed_hosts`.
    pub fn host_allowed(&self, host: &str) -> bool {
        if self.allowed_hosts.is_empty() {
            return true;
        }
        if let Some(address) = ip_literal(host) {
            // `::1`, `[::1]` and `0:0::1` are one address.
            return self
                .allowed_hosts
                .iter()
                .any(|pattern| ip_literal(pattern) == Some(address));
        }
        let host = host.to_ascii_lowercase();
        self.allowed_hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
                None => *pattern == host,
            })
    }

    /// Whether an address falls in `deny_networks` (IPv4-mapped IPv6 is checked as IPv4).
    pub fn address_denied(&self, address: IpAddr) -> bool {
        let canonical = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        self.deny_networks
            .iter()
            .any(|net| net.contains(&canonical) || net.contains(&address))
    }
}

/// Parses a webhook or default timeout: a positive duration of at most 120 s.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|err| format!("{text:?} is not a duration such as \"5s\" or \"1500ms\": {err}"))?;
    if duration.is_zero() {
        return Err("must be more than 0".into());
    }
    if duration > MAX_TIMEOUT {
        return Err(format!("{text:?} is over the maximum of 120s"));
    }
    Ok(duration)
}

/// Parses a size such as `1MiB`, `512KiB`, `10MB` or `1048576`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as \"1MiB\""))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .filter(|size| *size > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a network such as 169.254.0.0/16"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_timeouts() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_timeout("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_timeout("121s").is_err());
        assert!(parse_timeout("0s").is_err());
    }

    #[test]
    fn host_patterns_and_networks() {
        let settings = Settings {
            allowed_hosts: vec!["*.acme.example".into(), "api.partner.example".into()],
            ..Settings::default()
        };
        assert!(settings.host_allowed("eu.acme.example"));
        assert!(!settings.host_allowed("acme.example"));
        assert!(!settings.host_allowed("evilacme.example"));
        assert!(settings.host_allowed("API.partner.example"));
        assert!(!settings.host_allowed("[::1]"));
        let addresses = Settings {
            allowed_hosts: vec!["[::1]".into(), "127.0.0.1".into(), "fd00::a".into()],
            ..Settings::default()
        };
        assert!(addresses.host_allowed("[::1]"));
        assert!(addresses.host_allowed("[0:0::1]"));
        assert!(addresses.host_allowed("127.0.0.1"));
        assert!(addresses.host_allowed("[fd00:0::A]"));
        assert!(!addresses.host_allowed("[::2]"));
        assert!(!addresses.host_allowed("127.0.0.2"));
        assert!(settings.address_denied("169.254.169.254".parse().expect("ip")));
        assert!(settings.address_denied("::ffff:169.254.169.254".parse().expect("ip")));
        assert!(!settings.address_denied("127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn a_company_named_in_another_case_is_found_both_ways() {
        let token = Secret {
            value: "t".into(),
            reference: "companies.x.caller_tokens".into(),
        };
        let companies: HashMap<String, Company> = ["ACME", "STRASSE", "open"]
            .into_iter()
            .map(|name| {
                let caller_tokens = if name == "open" {
                    vec![]
                } else {
                    vec![token.clone()]
                };
                (name.to_owned(), Company { caller_tokens })
            })
            .collect();
        assert_eq!(case_variant(&companies, "acme"), Some("ACME"));
        assert_eq!(case_variant(&companies, "straße"), Some("STRASSE"));
        assert_eq!(case_variant(&companies, "ACME"), None, "its own tokens");
        assert_eq!(case_variant(&companies, "OPEN"), None, "no tokens to miss");
        assert_eq!(case_variant(&companies, "globex"), None);
    }

    #[test]
    fn config_errors_have_lines() {
        let source = SourceFile::new(
            Path::new("hookside.toml").into(),
            "[limits]\nmax_request_body = \"lots\"\n".into(),
        );
        let problems = Settings::parse(&source).unwrap_err();
        assert_eq!(problems[0].line, Some(2));
    }

    #[test]
    fn a_caller_token_no_caller_could_present_is_an_error() {
        for token in ["", " padded ", "caf\u{e9}"] {
            let source = SourceFile::new(
                Path::new("hookside.toml").into(),
                format!("[companies.acme]\ncaller_tokens = [\"good-token\", {token:?}]\n"),
            );
            let problems = Settings::parse(&source).expect_err(token);
            assert_eq!(problems.len(), 1, "{token:?}");
            assert_eq!(problems[0].line, Some(2), "{token:?}");
            assert!(problems[0].message.contains("no caller could present it"));
        }
    }
}
