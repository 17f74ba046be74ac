//! Client keys (`keys.d/`) and project budgets (`[projects.*]`): who may call, what they
//! may use, and the limits they are held to. Keys are known by their SHA-256 only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wildmatch::WildMatch;

use super::{Registry, is_name};
use crate::config::{ConfigError, ConfigTree, Parsed, RawBudget, RawKey};

/// Prefix of every key `llmhub keys new` makes, so a leaked one is recognisable.
pub const KEY_PREFIX: &str = "llmhub-";
/// The project of requests that name none.
pub const DEFAULT_PROJECT: &str = "default";

/// Spend caps in USD per UTC day and calendar month.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    pub day: Option<f64>,
    pub month: Option<f64>,
}

impl Budget {
    pub fn is_set(&self) -> bool {
        self.day.is_some() || self.month.is_some()
    }
}

/// What one key is held to; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_parallel: Option<u32>,
    pub budget: Budget,
}

impl Limits {
    pub fn is_set(&self) -> bool {
        self.rpm.is_some()
            || self.tpm.is_some()
            || self.max_parallel.is_some()
            || self.budget.is_set()
    }
}

/// Globs over names; `None` allows everything.
#[derive(Debug, Clone, Default)]
pub struct Globs(Option<Vec<(String, WildMatch)>>);

impl Globs {
    fn new(globs: Option<&[String]>) -> Globs {
        Globs(globs.map(|g| g.iter().map(|s| (s.clone(), WildMatch::new(s))).collect()))
    }
    pub fn matches(&self, name: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|g| g.iter().any(|(_, m)| m.matches(name)))
    }
    pub fn patterns(&self) -> Option<Vec<&str>> {
        self.0
            .as_ref()
            .map(|g| g.iter().map(|(s, _)| s.as_str()).collect())
    }
}

#[derive(Debug)]
pub struct Key {
    /// The file stem: what the ledger and every report call it.
    pub name: String,
    digest: [u8; 32],
    pub project: String,
    pub description: Option<String>,
    pub models: Globs,
    pub tools: Globs,
    pub limits: Limits,
    /// Seconds since the epoch from which the key is refused, and the date as written.
    pub expires: Option<(i64, String)>,
}

impl Key {
    /// Whether the key may request `address`: the address itself matches a glob, or every
    /// target it resolves to does (so `openai/*` allows `gpt-4.1` and a group of openai
    /// models). Fallbacks the operator configured follow the allowed address.
    pub fn allows_model(&self, registry: &Registry, address: &str) -> bool {
        if self.models.matches(address) {
            return true;
        }
        registry.resolve(address).is_ok_and(|targets| {
            !targets.is_empty()
                && targets
                    .iter()
                    .all(|t| self.models.matches(&format!("{}/{}", t.provider, t.model)))
        })
    }
}

/// Who a request comes from, once its key is checked.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The gateway has no keys at all: everyone may call.
    Open,
    /// A `server.api_keys_env` key (or a local stdio client): no limits, sees everything.
    Admin,
    Key(Arc<Key>),
}

impl Principal {
    pub fn key(&self) -> Option<&Arc<Key>> {
        match self {
            Principal::Key(k) => Some(k),
            _ => None,
        }
    }
    pub fn allows_model(&self, registry: &Registry, address: &str) -> bool {
        self.key().is_none_or(|k| k.allows_model(registry, address))
    }
    pub fn allows_tool(&self, name: &str) -> bool {
        self.key().is_none_or(|k| k.tools.matches(name))
    }
    /// The project a usage report may cover: a client key sees its own project only.
    pub fn usage_project(&self, asked: Option<String>) -> Result<Option<String>, String> {
        match self.key() {
            None => Ok(asked),
            Some(k) => match asked {
                Some(p) if p != k.project => Err(format!(
                    "key `{}` sees the usage of project `{}` only, not `{p}`",
                    k.name, k.project
                )),
                _ => Ok(Some(k.project.clone())),
            },
        }
    }

    /// The name the ledger records: the key's, else empty.
    pub fn key_name(&self) -> &str {
        self.key().map_or("", |k| k.name.as_str())
    }
}

/// Why a presented key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Invalid,
    Expired { name: String, on: String },
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => f.write_str(
                "this gateway needs a key: send `Authorization: Bearer <key>` (or `x-api-key`)",
            ),
            AuthError::Invalid => f.write_str("the gateway key sent is not valid"),
            AuthError::Expired { name, on } => write!(f, "the key `{name}` expired on {on}"),
        }
    }
}

/// The SHA-256 of a key, as keys.d files hold it.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new key: the prefix and 256 random bits, URL-safe.
pub fn generate() -> std::io::Result<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The keys of a snapshot, found by digest.
#[derive(Debug, Default)]
pub struct Keys {
    by_digest: HashMap<[u8; 32], Arc<Key>>,
    pub by_name: BTreeMap<String, Arc<Key>>,
    /// keys.d/ exists. Deleting the last key file then refuses everyone rather than
    /// opening the gateway.
    required: bool,
}

impl Registry {
    /// Whether callers must present a key: admin keys or a keys.d/ folder exist.
    pub fn keys_required(&self) -> bool {
        !self.settings.api_keys.is_empty() || self.keys.required
    }

    /// Who presents `presented`; admin keys are compared in constant time, client keys by
    /// digest (the digest of a guess tells nothing about a real key).
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Principal, AuthError> {
        if !self.keys_required() {
            return Ok(Principal::Open);
        }
        let presented = presented
            .filter(|p| !p.is_empty())
            .ok_or(AuthError::Missing)?;
        let admin = self
            .settings
            .api_keys
            .iter()
            .fold(subtle::Choice::from(0), |acc, k| {
                acc | k.expose().as_bytes().ct_eq(presented.as_bytes())
            });
        if bool::from(admin) {
            return Ok(Principal::Admin);
        }
        let key = self
            .keys
            .by_digest
            .get(&digest(presented))
            .ok_or(AuthError::Invalid)?;
        if let Some((at, on)) = &key.expires
            && crate::store::now_ms() / 1000 >= *at
        {
            return Err(AuthError::Expired {
                name: key.name.clone(),
                on: on.clone(),
            });
        }
        Ok(Principal::Key(key.clone()))
    }
}

impl Registry {
    /// Who a per-session MCP endpoint acts as: whoever created it, as they stand now —
    /// a revoked or expired key ends its sessions' use, and a session made while the
    /// gateway was open stops once keys are required.
    pub fn session_principal(&self, owner: &str) -> Result<Principal, String> {
        if owner == SESSION_OWNER_ADMIN {
            return Ok(Principal::Admin);
        }
        if let Some(name) = owner.strip_prefix("key:") {
            let key = self.keys.by_name.get(name).ok_or_else(|| {
                format!("the key `{name}` that created this session no longer exists")
            })?;
            if let Some((at, on)) = &key.expires
                && crate::store::now_ms() / 1000 >= *at
            {
                return Err(format!(
                    "the key `{name}` that created this session expired on {on}"
                ));
            }
            return Ok(Principal::Key(key.clone()));
        }
        if self.keys_required() {
            return Err("this session was created while the gateway took no keys; create a new one with a key".to_string());
        }
        Ok(Principal::Open)
    }
}

pub const SESSION_OWNER_ADMIN: &str = "admin";

impl Principal {
    /// How a session created by this caller records its owner.
    pub fn session_owner(&self) -> String {
        match self {
            Principal::Open => "open".to_string(),
            Principal::Admin => SESSION_OWNER_ADMIN.to_string(),
            Principal::Key(k) => format!("key:{}", k.name),
        }
    }
}

/// `[projects.NAME]` budgets.
pub(crate) fn build_projects(
    hub: &Parsed<crate::config::RawHub>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Budget> {
    let mut out = BTreeMap::new();
    for (name, raw) in &hub.raw.projects {
        if !is_name(name, 64) {
            errors.push(hub.source.error_at(
                &["projects", name],
                format!("project name `{name}` must be 1 to 64 of a-z, A-Z, 0-9, '_' and '-'"),
            ));
            continue;
        }
        if let Some(b) = &raw.budget_usd {
            out.insert(
                name.clone(),
                budget(&hub.source, &["projects", name, "budget_usd"], b, errors),
            );
        }
    }
    out
}

fn budget(
    src: &crate::config::SourceFile,
    at: &[&str],
    raw: &RawBudget,
    errors: &mut Vec<ConfigError>,
) -> Budget {
    let mut check = |field: &str, v: Option<f64>| {
        v.filter(|v| {
            let ok = v.is_finite() && *v >= 0.0;
            if !ok {
                let mut path = at.to_vec();
                path.push(field);
                errors.push(src.error_at(
                    &path,
                    format!("expected an amount in USD of 0 or more, found {v}"),
                ));
            }
            ok
        })
    };
    Budget {
        day: check("day", raw.day),
        month: check("month", raw.month),
    }
}

/// Every keys.d file into a key, checking each glob against what the snapshot holds.
pub(crate) fn build_keys(
    tree: &ConfigTree,
    registry: &Registry,
    errors: &mut Vec<ConfigError>,
) -> Keys {
    let mut keys = Keys {
        required: tree.keys_dir,
        ..Keys::default()
    };
    let mut models: Vec<String> = registry.groups.keys().cloned().collect();
    for p in registry.providers.values() {
        models.push(p.name.clone());
        for m in &p.models {
            for name in std::iter::once(&m.id).chain(&m.aliases) {
                models.push(format!("{}/{name}", p.name));
                models.push(name.clone());
            }
        }
    }
    let mut tools: Vec<String> = super::tools::BUILTIN_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    tools.extend(registry.tools.keys().cloned());
    let separator = &registry.settings.mcp_tool_separator;
    // A backend's tools are known only once it is connected: a glob is about a backend
    // when it matches one of its tool names, whatever the tool is called.
    let backend_heads: Vec<String> = registry
        .backends
        .values()
        .map(|b| format!("{}{separator}", b.prefix))
        .collect();
    for parsed in &tree.keys {
        if let Some(key) = build_key(parsed, &models, &tools, &backend_heads, errors) {
            let key = Arc::new(key);
            if let Some(other) = keys.by_digest.insert(key.digest, key.clone()) {
                errors.push(parsed.source.error_at(
                    &["sha256"],
                    format!(
                        "the same key as keys.d/{}.toml; a key must have one file",
                        other.name
                    ),
                ));
            }
            keys.by_name.insert(key.name.clone(), key);
        }
    }
    keys
}

fn build_key(
    parsed: &Parsed<RawKey>,
    models: &[String],
    tools: &[String],
    backend_heads: &[String],
    errors: &mut Vec<ConfigError>,
) -> Option<Key> {
    let before = errors.len();
    let src = &parsed.source;
    let raw = &parsed.raw;
    let name = parsed.name.clone();
    if !is_name(&name, 64) {
        errors.push(ConfigError::whole_file(
            &src.path,
            format!(
                "key name `{name}` (the file name) must be 1 to 64 of a-z, A-Z, 0-9, '_' and '-'"
            ),
        ));
    }
    let mut digest = [0u8; 32];
    match raw.sha256.as_deref().map(str::trim) {
        None => errors.push(ConfigError::whole_file(
            &src.path,
            "missing `sha256`: the SHA-256 of the key in hex (`llmhub keys new` writes it)",
        )),
        Some(text) => {
            let ok = text.len() == 64
                && text.is_ascii()
                && (0..32).all(|i| match u8::from_str_radix(&text[2 * i..2 * i + 2], 16) {
                    Ok(b) => {
                        digest[i] = b;
                        true
                    }
                    Err(_) => false,
                });
            if !ok {
                let shown: String = text.chars().take(16).collect();
                let more = if text.chars().count() > 16 { "…" } else { "" };
                errors.push(src.error_at(
                    &["sha256"],
                    format!(
                        "expected 64 hexadecimal digits (the SHA-256 of the key), found {} characters \"{shown}{more}\"",
                        text.chars().count()
                    ),
                ));
            }
        }
    }
    let project = raw
        .project
        .clone()
        .unwrap_or_else(|| DEFAULT_PROJECT.to_string());
    if !is_name(&project, 64) {
        errors.push(src.error_at(
            &["project"],
            format!("expected a project name of 1 to 64 of a-z, A-Z, 0-9, '_' and '-', found \"{project}\""),
        ));
    }
    let mut check_globs =
        |field: &str, globs: &Option<Vec<String>>, known: &[String], what: &str| {
            for (i, glob) in globs.iter().flatten().enumerate() {
                let m = WildMatch::new(glob);
                let about_backend = field == "tools"
                    && backend_heads
                        .iter()
                        .any(|h| glob.starts_with(h.as_str()) || m.matches(&format!("{h}x")));
                if !about_backend && !known.iter().any(|k| m.matches(k)) {
                    errors.push(src.error_at(
                        &[field, &i.to_string()],
                        format!("`{glob}` matches no {what}; known: {}", shortlist(known)),
                    ));
                }
            }
        };
    check_globs(
        "models",
        &raw.models,
        models,
        "model address (group, provider, provider/model or model)",
    );
    check_globs(
        "tools",
        &raw.tools,
        tools,
        "tool (built-in, tools.d or servers.d prefix)",
    );
    let mut count = |field: &str, v: Option<i64>| -> Option<i64> {
        v.filter(|v| {
            if *v < 1 {
                errors.push(src.error_at(
                    &[field],
                    format!("expected a limit of 1 or more, found {v}"),
                ));
            }
            *v >= 1
        })
    };
    let rpm = count("rpm", raw.rpm);
    let tpm = count("tpm", raw.tpm);
    let max_parallel = count("max_parallel", raw.max_parallel);
    let budget = raw
        .budget_usd
        .as_ref()
        .map(|b| budget(src, &["budget_usd"], b, errors))
        .unwrap_or_default();
    let expires = raw.expires.as_ref().and_then(|d| match expiry(d) {
        Some(at) => Some((at, d.to_string())),
        None => {
            errors.push(src.error_at(
                &["expires"],
                format!("expected a date such as 2027-01-01 or a date-time, found {d}"),
            ));
            None
        }
    });
    if errors.len() > before {
        return None;
    }
    Some(Key {
        name,
        digest,
        project,
        description: raw.description.clone(),
        models: Globs::new(raw.models.as_deref()),
        tools: Globs::new(raw.tools.as_deref()),
        limits: Limits {
            rpm: rpm.map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            tpm: tpm.map(|v| v as u64),
            max_parallel: max_parallel.map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            budget,
        },
        expires,
    })
}

/// Seconds since the epoch of a TOML date (its first second, UTC) or date-time (a time
/// without an offset is UTC).
fn expiry(d: &toml_edit::Datetime) -> Option<i64> {
    let date = d.date?;
    let days = crate::store::days_from_civil(
        i64::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    );
    let mut secs = days * 86_400;
    if let Some(t) = d.time {
        secs +=
            i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second.unwrap_or(0));
    }
    if let Some(toml_edit::Offset::Custom { minutes }) = d.offset {
        secs -= i64::from(minutes) * 60;
    }
    Some(secs)
}

fn shortlist(known: &[String]) -> String {
    let mut names: Vec<&str> = known.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let shown = names
        .iter()
        .take(12)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 12 {
        format!("{shown}, … ({} in all)", names.len())
    } else {
        shown
    }
}
