//! The validated, immutable configuration snapshot that every request reads once.
//!
//! `build` turns a loaded [`ConfigTree`] into a [`Registry`] or into every error it
//! found; it is the only step allowed to fail. Keys are read from the environment
//! here, never on the request path, and are held as [`Secret`]s that cannot be printed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderName, HeaderValue};

use crate::config::{
    AdapterKind, ConfigError, ConfigTree, Parsed, RawModel, RawProvider, SourceFile,
    SystemPromptMode,
};
use crate::template::Template;

pub mod backends;
pub mod keys;
pub mod tools;
pub use backends::{Backend, Profile};
pub use keys::{AuthError, Budget, Key, Limits, Principal};
pub use tools::{PromptTool, ToolKind};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
pub const DEFAULT_TIMEOUT_S: f64 = 60.0;
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_BACKOFF_MS: u64 = 250;
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
pub const DEFAULT_BREAKER_COOLDOWN_S: f64 = 30.0;

/// Variables a provider `system_prompt` template may read.
pub const SYSTEM_PROMPT_VARS: [&str; 3] = ["provider", "model", "today"];

/// A value read from the environment that must never be shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Settings from hub.toml, with defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Accepted gateway keys; empty means the gateway is open.
    pub api_keys: Vec<Secret>,
    pub max_body_bytes: u64,
    pub default_model: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub mcp_http_path: String,
    pub mcp_tool_separator: String,
    pub mcp_description: Option<String>,
    pub mcp_allowed_hosts: Vec<String>,
    pub mcp_allowed_origins: Vec<String>,
    pub mcp_progress_interval: Duration,
    pub mcp_session_max_ttl: Duration,
    pub mcp_session_idle: Duration,
    /// The ledger's database URL (may hold a password), `None` when the ledger is off.
    pub storage_url: Option<Secret>,
    pub retention_days: u32,
    /// `[storage] redis_url_env`: where limit counters are shared by instances.
    pub redis_url: Option<Secret>,
    /// Whether budgets are enforced (`false`) or waived while Redis is unreachable.
    pub allow_when_store_down: bool,
    /// `LLMHUB_SECRET_KEY` (from the environment or `.env`), already checked to be 32
    /// bytes: what per-session MCP credentials are sealed with.
    pub secret_key: Option<Arc<[u8; 32]>>,
}

pub const SECRET_KEY_ENV: &str = "LLMHUB_SECRET_KEY";

/// The 32 bytes in a base64 `LLMHUB_SECRET_KEY`, or what is wrong with it.
pub fn secret_key_bytes(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let how = "expected 32 random bytes in base64, such as `openssl rand -base64 32` prints";
    let text = text.trim();
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(text))
        .map_err(|_| format!("{SECRET_KEY_ENV} is not base64: {how}"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "{SECRET_KEY_ENV} holds {} bytes, not 32: {how}",
            bytes.len()
        )
    })
}

/// Whether a provider takes requests, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Active,
    Inactive(String),
}

#[derive(Debug, Clone)]
pub struct Model {
    pub id: String,
    pub aliases: Vec<String>,
    pub context_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub cost_input_per_1m: Option<f64>,
    pub cost_cached_input_per_1m: Option<f64>,
    pub cost_output_per_1m: Option<f64>,
    pub cost_cache_write_per_1m: Option<f64>,
    pub capabilities: Vec<String>,
}

impl Model {
    /// What `usage` cost in USD, or `None` when the model has no input or output price
    /// (unpriced is never free). Cached input is billed at the cached price where there
    /// is one, cache writes at theirs, the rest of the input at the input price.
    pub fn cost(&self, usage: &crate::chat::Usage) -> Option<f64> {
        let input = self.cost_input_per_1m?;
        let output = self.cost_output_per_1m?;
        let cached = usage.cached.min(usage.input);
        let written = usage.cache_write.min(usage.input - cached);
        let plain = usage.input - cached - written;
        let per = |tokens: u64, price: f64| tokens as f64 * price / 1_000_000.0;
        Some(
            per(plain, input)
                + per(cached, self.cost_cached_input_per_1m.unwrap_or(input))
                + per(written, self.cost_cache_write_per_1m.unwrap_or(input))
                + per(usage.output, output),
        )
    }
}

#[derive(Debug, Clone)]
pub struct SystemPrompt {
    pub template: Template,
    pub mode: SystemPromptMode,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub adapter: AdapterKind,
    /// Without a trailing slash, so paths can be appended.
    pub base_url: String,
    /// Parsed once here: URL parsing showed up in request-path profiles.
    pub chat_url: Option<reqwest::Url>,
    pub env_key: Option<String>,
    pub key: Option<Secret>,
    pub status: Status,
    pub default_model: Option<String>,
    pub fallback_to: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub system_prompt: Option<SystemPrompt>,
    pub models: Vec<Model>,
    /// Alias → model id.
    pub aliases: HashMap<String, String>,
}

impl Provider {
    pub fn is_active(&self) -> bool {
        self.status == Status::Active
    }

    /// The upstream id for a model name given by a client: aliases map to their model.
    pub fn canonical_model<'a>(&'a self, name: &'a str) -> &'a str {
        self.aliases.get(name).map_or(name, String::as_str)
    }

    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id == id)
    }
}

/// One step of a chain: a provider and the model id to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub provider: String,
    pub model: String,
}

/// Why a model address did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    Unknown {
        address: String,
        known: Vec<String>,
    },
    UnknownProvider {
        address: String,
        provider: String,
        providers: Vec<String>,
    },
    Ambiguous {
        address: String,
        candidates: Vec<String>,
    },
    NoDefault {
        provider: String,
    },
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown { address, known } => write!(
                f,
                "model `{address}` does not exist; expected a group, a provider, `provider/model` or a listed model id: {}",
                known.join(", ")
            ),
            Self::UnknownProvider {
                address,
                provider,
                providers,
            } => write!(
                f,
                "model `{address}` names provider `{provider}`, which does not exist; providers: {}",
                providers.join(", ")
            ),
            Self::Ambiguous {
                address,
                candidates,
            } => write!(
                f,
                "model `{address}` is ambiguous: it is listed by {}; address it as one of those",
                candidates.join(", ")
            ),
            Self::NoDefault { provider } => write!(
                f,
                "provider `{provider}` has no default_model; address it as `{provider}/MODEL`"
            ),
        }
    }
}

#[derive(Debug)]
pub struct Registry {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub fingerprint: u64,
    pub settings: Settings,
    pub providers: BTreeMap<String, Arc<Provider>>,
    pub groups: BTreeMap<String, Vec<Target>>,
    /// Model id or alias → every provider that lists it.
    bare: HashMap<String, Vec<Target>>,
    pub tools: BTreeMap<String, Arc<PromptTool>>,
    pub backends: BTreeMap<String, Backend>,
    pub profiles: BTreeMap<String, Profile>,
    pub keys: keys::Keys,
    /// `[projects.NAME] budget_usd`.
    pub projects: BTreeMap<String, Budget>,
}

impl Registry {
    /// Resolves a model address to its targets, following DESIGN's four rules in order.
    pub fn resolve(&self, address: &str) -> Result<Vec<Target>, ResolveError> {
        self.resolve_inner(address, true)
    }

    fn resolve_inner(&self, address: &str, groups: bool) -> Result<Vec<Target>, ResolveError> {
        if let Some((first, rest)) = address.split_once('/')
            && let Some(provider) = self.providers.get(first)
            && !rest.is_empty()
        {
            return Ok(vec![Target {
                provider: provider.name.clone(),
                model: provider.canonical_model(rest).to_string(),
            }]);
        }
        if groups && let Some(chain) = self.groups.get(address) {
            return Ok(chain.clone());
        }
        if let Some(provider) = self.providers.get(address) {
            return match &provider.default_model {
                Some(model) => Ok(vec![Target {
                    provider: provider.name.clone(),
                    model: model.clone(),
                }]),
                None => Err(ResolveError::NoDefault {
                    provider: provider.name.clone(),
                }),
            };
        }
        if let Some(candidates) = self.bare.get(address) {
            if candidates.len() == 1 {
                return Ok(candidates.clone());
            }
            let active: Vec<&Target> = candidates
                .iter()
                .filter(|t| {
                    self.providers
                        .get(&t.provider)
                        .is_some_and(|p| p.is_active())
                })
                .collect();
            if active.len() == 1 {
                return Ok(vec![active[0].clone()]);
            }
            return Err(ResolveError::Ambiguous {
                address: address.to_string(),
                candidates: candidates
                    .iter()
                    .map(|t| format!("{}/{}", t.provider, t.model))
                    .collect(),
            });
        }
        if let Some((first, _)) = address.split_once('/')
            && !first.is_empty()
            && !self.bare.keys().any(|k| k.starts_with(first))
        {
            return Err(ResolveError::UnknownProvider {
                address: address.to_string(),
                provider: first.to_string(),
                providers: self.providers.keys().cloned().collect(),
            });
        }
        Err(ResolveError::Unknown {
            address: address.to_string(),
            known: self.known_addresses(),
        })
    }

    /// The resolved targets, each followed by its provider's `fallback_to` walk, without repeats.
    pub fn chain(&self, address: &str) -> Result<Vec<Target>, ResolveError> {
        let mut out: Vec<Target> = Vec::new();
        for target in self.resolve(address)? {
            let mut next = Some(target);
            while let Some(t) = next.take() {
                let fallback = self
                    .providers
                    .get(&t.provider)
                    .and_then(|p| p.fallback_to.clone());
                if out.contains(&t) {
                    // Already walked from here: its fallbacks are in the chain too.
                    continue;
                }
                out.push(t);
                next = fallback.and_then(|name| {
                    let p = self.providers.get(&name)?;
                    Some(Target {
                        provider: p.name.clone(),
                        model: p.default_model.clone()?,
                    })
                });
            }
        }
        Ok(out)
    }

    /// Groups with at least one active provider in their chain: the ones offered to
    /// clients (`/v1/models`, `chat_completion`'s description, `list_models`).
    pub fn usable_groups(&self) -> impl Iterator<Item = (&String, &Vec<Target>)> {
        self.groups.iter().filter(|(name, _)| {
            self.chain(name).is_ok_and(|chain| {
                chain.iter().any(|t| {
                    self.providers
                        .get(&t.provider)
                        .is_some_and(|p| p.is_active())
                })
            })
        })
    }

    /// Groups and active `provider/model` addresses, for error messages and `/v1/models`.
    pub fn known_addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = self.groups.keys().cloned().collect();
        for p in self.providers.values().filter(|p| p.is_active()) {
            out.extend(p.models.iter().map(|m| format!("{}/{}", p.name, m.id)));
        }
        out
    }
}

/// Reads a variable from the process environment (`.env` beside hub.toml fills gaps).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as `build` is called outside tests.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Validates a loaded tree into a snapshot, or returns every error found.
pub fn build(
    tree: &ConfigTree,
    generation: u64,
    env: EnvLookup,
) -> Result<Registry, Vec<ConfigError>> {
    // The process environment wins: in production the keys come from the orchestrator,
    // and a stray .env must not override them.
    let lookup = |name: &str| -> Option<String> {
        env(name)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| tree.dotenv.get(name).cloned())
            .filter(|v| !v.trim().is_empty())
    };
    let mut errors = Vec::new();
    let hub = &tree.hub;
    let settings = build_settings(hub, &lookup, &mut errors);

    let mut providers = BTreeMap::new();
    // Files already reported as wrong; references to them would only repeat the news.
    let mut broken = tree.broken.clone();
    // With no provider at all, every model address fails the same way: say it once.
    let no_providers = tree.providers.is_empty() && tree.broken.is_empty();
    let mut reported_no_providers = false;
    let mut no_provider_error = |errors: &mut Vec<ConfigError>| {
        if !reported_no_providers {
            reported_no_providers = true;
            errors.push(ConfigError::whole_file(
                &tree.dir.join(crate::config::PROVIDERS_DIR),
                format!(
                    "no providers: {}/ is missing or holds no .toml files, so no model address can resolve; `llmhub init` writes a starter set",
                    crate::config::PROVIDERS_DIR
                ),
            ));
        }
    };
    for parsed in &tree.providers {
        match build_provider(parsed, &settings, &lookup, &mut errors) {
            Some(p) => {
                providers.insert(p.name.clone(), Arc::new(p));
            }
            None => {
                broken.insert(parsed.name.clone());
            }
        }
    }
    check_fallbacks(tree, &providers, &mut errors);

    let mut bare: HashMap<String, Vec<Target>> = HashMap::new();
    for p in providers.values() {
        for m in &p.models {
            for name in std::iter::once(&m.id).chain(&m.aliases) {
                bare.entry(name.clone()).or_default().push(Target {
                    provider: p.name.clone(),
                    model: m.id.clone(),
                });
            }
        }
    }

    let mut registry = Registry {
        generation,
        loaded_at: SystemTime::now(),
        fingerprint: tree.fingerprint,
        settings,
        providers,
        groups: BTreeMap::new(),
        bare,
        tools: BTreeMap::new(),
        backends: BTreeMap::new(),
        profiles: backends::build_profiles(&hub.raw.profiles, &hub.source, &mut errors),
        keys: keys::Keys::default(),
        projects: keys::build_projects(hub, &mut errors),
    };
    for parsed in &tree.backends {
        if let Some(b) = backends::build_backend(parsed, &lookup, &mut errors) {
            registry.backends.insert(b.name.clone(), b);
        }
    }
    let mut prefixes: BTreeMap<&str, &str> = BTreeMap::new();
    for b in registry.backends.values() {
        if let Some(other) = prefixes.insert(&b.prefix, &b.name) {
            let src = tree
                .backends
                .iter()
                .find(|p| p.name == b.name)
                .map(|p| &p.source);
            if let Some(src) = src {
                // Point at `prefix`, or at the first line when the prefix is the file name.
                let mut err = src.error_at(
                    &["prefix"],
                    format!(
                        "prefix `{}` is also the prefix of backend `{other}`; give one a `prefix`",
                        b.prefix
                    ),
                );
                err.position.get_or_insert((1, 1));
                errors.push(err);
            }
        }
    }

    let mut groups = BTreeMap::new();
    for (name, entries) in &hub.raw.groups {
        if registry.providers.contains_key(name) {
            errors.push(hub.source.error_at(
                &["groups", name],
                format!("group `{name}` has the name of a provider; rename one of them"),
            ));
            continue;
        }
        if entries.is_empty() {
            errors.push(hub.source.error_at(
                &["groups", name],
                "expected at least one model address, found an empty list",
            ));
            continue;
        }
        let mut chain = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            if hub.raw.groups.contains_key(entry) {
                errors.push(hub.source.error_at(
                    &["groups", name, &i.to_string()],
                    format!("`{entry}` is a group; a group lists models, providers or `provider/model` addresses"),
                ));
                continue;
            }
            match registry.resolve_inner(entry, false) {
                Ok(targets) => chain.extend(targets),
                Err(_) if no_providers => no_provider_error(&mut errors),
                Err(e) if !refers_to_broken(&broken, entry) => errors.push(
                    hub.source
                        .error_at(&["groups", name, &i.to_string()], e.to_string()),
                ),
                Err(_) => {}
            }
        }
        groups.insert(name.clone(), chain);
    }
    registry.groups = groups;

    if let Some(model) = &registry.settings.default_model
        && let Err(e) = registry.resolve(model)
        && !refers_to_broken(&broken, model)
    {
        if no_providers {
            no_provider_error(&mut errors);
        } else {
            errors.push(
                hub.source
                    .error_at(&["routing", "default_model"], e.to_string()),
            );
        }
    }

    if no_providers
        && tree.tools.iter().any(|t| {
            t.raw
                .model
                .as_deref()
                .is_some_and(|m| registry.resolve(m).is_err())
        })
    {
        no_provider_error(&mut errors);
    }
    let resolve = |address: &str| -> Option<String> {
        match registry.resolve(address) {
            Err(_) if no_providers => None,
            Err(e) if !refers_to_broken(&broken, address) && !tree.hub_broken => {
                Some(e.to_string())
            }
            _ => None,
        }
    };
    let mut tools = BTreeMap::new();
    for parsed in &tree.tools {
        if let Some(tool) = tools::compile(parsed, &resolve, &lookup, &mut errors) {
            tools.insert(tool.name.clone(), Arc::new(tool));
        }
    }
    tools::check_fallbacks(tree, &tools, &mut errors);
    registry.tools = tools;
    registry.keys = keys::build_keys(tree, &registry, &mut errors);

    if errors.is_empty() {
        Ok(registry)
    } else {
        Err(errors)
    }
}

/// Whether an address names a file that failed to parse, whose error is already reported.
fn refers_to_broken(broken: &BTreeSet<String>, address: &str) -> bool {
    let first = address.split('/').next().unwrap_or(address);
    broken.contains(first)
}

pub(crate) fn positive_duration(
    source: &SourceFile,
    key: &[&str],
    value: f64,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    if value.is_finite() && value > 0.0 && value < 86_400.0 {
        Duration::from_secs_f64(value)
    } else {
        errors.push(source.error_at(
            key,
            format!("expected a number of seconds above 0 and below 86400, found {value}"),
        ));
        Duration::from_secs(1)
    }
}

/// 1 to `max` of a-z, A-Z, 0-9, `_` and `-`: the rule for every name that becomes part
/// of an MCP tool name or a URL path (tools, profiles, prefixes, separators).
pub fn is_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

fn build_settings(
    hub: &Parsed<crate::config::RawHub>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Settings {
    let raw = &hub.raw;
    let src = &hub.source;
    let listen_text = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse().unwrap_or_else(|_| {
        errors.push(src.error_at(
            &["server", "listen"],
            format!("expected an address such as \"127.0.0.1:8080\", found \"{listen_text}\""),
        ));
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let mut api_keys = Vec::new();
    for (i, name) in raw.server.api_keys_env.iter().enumerate() {
        let key = ["server", "api_keys_env", &i.to_string()];
        if !valid_env_name(name) {
            errors.push(src.error_at(
                &key,
                format!("expected an environment variable name, found \"{name}\""),
            ));
        } else if let Some(value) = lookup(name) {
            api_keys.push(Secret::new(value));
        } else {
            errors.push(src.error_at(
                &key,
                format!(
                    "environment variable {name} is not set; the gateway would refuse every request"
                ),
            ));
        }
    }
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        errors.push(src.error_at(
            &["server", "max_body_bytes"],
            "expected a size above 0, found 0",
        ));
    }
    let timeout = positive_duration(
        src,
        &["routing", "timeout_s"],
        raw.routing.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S),
        errors,
    );
    let failures = raw
        .routing
        .circuit_breaker
        .failures
        .unwrap_or(DEFAULT_BREAKER_FAILURES);
    if failures == 0 {
        errors.push(src.error_at(
            &["routing", "circuit_breaker", "failures"],
            "expected at least 1, found 0",
        ));
    }
    let breaker_cooldown = positive_duration(
        src,
        &["routing", "circuit_breaker", "cooldown_s"],
        raw.routing
            .circuit_breaker
            .cooldown_s
            .unwrap_or(DEFAULT_BREAKER_COOLDOWN_S),
        errors,
    );
    let mcp_http_path = raw
        .mcp
        .http_path
        .clone()
        .unwrap_or_else(|| "/mcp".to_string());
    if !mcp_http_path.starts_with('/') || mcp_http_path.len() < 2 {
        errors.push(src.error_at(
            &["mcp", "http_path"],
            format!("expected a path such as \"/mcp\", found \"{mcp_http_path}\""),
        ));
    }
    let mcp_tool_separator = raw
        .mcp
        .tool_separator
        .clone()
        .unwrap_or_else(|| "__".to_string());
    if !is_name(&mcp_tool_separator, 16) {
        errors.push(src.error_at(
            &["mcp", "tool_separator"],
            format!(
                "expected one or more of a-z, A-Z, 0-9, _ and -, found \"{mcp_tool_separator}\""
            ),
        ));
    }
    let (storage_url, retention_days) = build_storage(hub, lookup, errors);
    let (redis_url, allow_when_store_down) = build_redis(hub, lookup, errors);
    let secret_key = lookup(SECRET_KEY_ENV).and_then(|text| match secret_key_bytes(&text) {
        Ok(bytes) => Some(Arc::new(bytes)),
        Err(why) => {
            errors.push(src.error_at(&[], why));
            None
        }
    });
    Settings {
        storage_url,
        retention_days,
        redis_url,
        allow_when_store_down,
        secret_key,
        listen,
        api_keys,
        max_body_bytes,
        default_model: raw.routing.default_model.clone(),
        timeout,
        retries: raw.routing.retries.unwrap_or(DEFAULT_RETRIES),
        backoff: Duration::from_millis(raw.routing.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS)),
        breaker_failures: failures.max(1),
        breaker_cooldown,
        mcp_http_path,
        mcp_tool_separator,
        mcp_description: raw.mcp.description.clone(),
        mcp_allowed_hosts: raw.mcp.allowed_hosts.clone(),
        mcp_allowed_origins: raw.mcp.allowed_origins.clone(),
        mcp_progress_interval: match raw.mcp.progress_interval_s {
            Some(s) => positive_duration(src, &["mcp", "progress_interval_s"], s, errors),
            None => Duration::from_secs(5),
        },
        mcp_session_max_ttl: match raw.mcp.session_max_ttl_s {
            Some(s) if (1.0..=MAX_SESSION_TTL_S).contains(&s) => Duration::from_secs_f64(s),
            Some(s) => {
                errors.push(src.error_at(
                    &["mcp", "session_max_ttl_s"],
                    format!("expected a number of seconds from 1 to {MAX_SESSION_TTL_S} (a year), found {s}"),
                ));
                Duration::from_secs(1)
            }
            None => Duration::from_secs(DEFAULT_SESSION_MAX_TTL_S),
        },
        mcp_session_idle: match raw.mcp.session_idle_s {
            Some(s) => positive_duration(src, &["mcp", "session_idle_s"], s, errors),
            None => Duration::from_secs(300),
        },
    }
}

/// `[mcp] session_max_ttl_s`: its default (30 days) and its ceiling (a year).
const DEFAULT_SESSION_MAX_TTL_S: u64 = 30 * 86_400;
const MAX_SESSION_TTL_S: f64 = 365.0 * 86_400.0;

/// `[storage] redis_url_env` and `limits_when_store_down`.
fn build_redis(
    hub: &Parsed<crate::config::RawHub>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> (Option<Secret>, bool) {
    let raw = &hub.raw.storage;
    let src = &hub.source;
    let allow = match raw.limits_when_store_down.as_deref() {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            errors.push(src.error_at(
                &["storage", "limits_when_store_down"],
                format!("expected \"deny\" or \"allow\", found \"{other}\""),
            ));
            false
        }
    };
    let Some(name) = &raw.redis_url_env else {
        return (None, allow);
    };
    let key = ["storage", "redis_url_env"];
    if !valid_env_name(name) {
        errors.push(src.error_at(
            &key,
            format!("expected an environment variable name, found \"{name}\""),
        ));
        return (None, allow);
    }
    match lookup(name) {
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            (Some(Secret::new(url)), allow)
        }
        Some(url) => {
            let scheme = url.split("://").next().unwrap_or("");
            errors.push(src.error_at(
                &key,
                format!("{name} must hold a redis:// or rediss:// URL, found scheme `{scheme}`"),
            ));
            (None, allow)
        }
        None => {
            errors.push(src.error_at(
                &key,
                format!("environment variable {name} is not set; it must hold the Redis URL"),
            ));
            (None, allow)
        }
    }
}

pub const DEFAULT_STORAGE_URL: &str = "sqlite://llmhub.db";
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

/// `[storage]`: a `sqlite://` path (relative to hub.toml's folder) or a `postgres://`
/// URL, given inline or through an environment variable.
fn build_storage(
    hub: &Parsed<crate::config::RawHub>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> (Option<Secret>, u32) {
    let raw = &hub.raw.storage;
    let src = &hub.source;
    let retention = raw.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
    if retention == 0 {
        errors.push(src.error_at(
            &["storage", "retention_days"],
            "expected at least 1 day, found 0",
        ));
    }
    if raw.ledger == Some(false) {
        return (None, retention);
    }
    let (url, key): (String, &[&str]) = match (&raw.url, &raw.url_env) {
        (Some(_), Some(_)) => {
            errors.push(src.error_at(&["storage", "url_env"], "give `url` or `url_env`, not both"));
            return (None, retention);
        }
        (_, Some(name)) if !valid_env_name(name) => {
            errors.push(src.error_at(
                &["storage", "url_env"],
                format!("expected an environment variable name, found \"{name}\""),
            ));
            return (None, retention);
        }
        (_, Some(name)) => match lookup(name) {
            Some(v) => (v, &["storage", "url_env"]),
            None => {
                errors.push(src.error_at(
                    &["storage", "url_env"],
                    format!(
                        "environment variable {name} is not set; it must hold the database URL"
                    ),
                ));
                return (None, retention);
            }
        },
        (Some(url), None) => (url.clone(), &["storage", "url"]),
        (None, None) => (DEFAULT_STORAGE_URL.to_string(), &["storage"]),
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            errors.push(src.error_at(
                key,
                "expected a file after sqlite://, such as sqlite://llmhub.db",
            ));
            return (None, retention);
        }
        let file = std::path::Path::new(path);
        let file = if file.is_absolute() {
            file.to_path_buf()
        } else {
            src.path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .join(file)
        };
        return (
            Some(Secret::new(format!("sqlite://{}", file.display()))),
            retention,
        );
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return (Some(Secret::new(url)), retention);
    }
    let scheme = url.split("://").next().unwrap_or("");
    errors.push(src.error_at(
        key,
        format!("expected a sqlite:// or postgres:// URL, found scheme `{scheme}`"),
    ));
    (None, retention)
}

fn valid_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
}

fn build_provider(
    parsed: &Parsed<RawProvider>,
    settings: &Settings,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Provider> {
    let raw = &parsed.raw;
    let src = &parsed.source;
    let name = parsed.name.clone();
    let before = errors.len();
    if !valid_provider_name(&name) {
        errors.push(ConfigError::whole_file(
            &src.path,
            format!(
                "provider name `{name}` (the file name) must use only a-z, 0-9, '-', '_' and '.'"
            ),
        ));
    }
    let adapter = raw.adapter.unwrap_or(AdapterKind::Openai);
    let base_url = match (&raw.base_url, adapter) {
        (Some(url), _) => match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                url.trim_end_matches('/').to_string()
            }
            Ok(u) => {
                errors.push(src.error_at(
                    &["base_url"],
                    format!(
                        "expected an http or https URL, found scheme `{}` in \"{url}\"",
                        u.scheme()
                    ),
                ));
                String::new()
            }
            Err(e) => {
                errors.push(src.error_at(
                    &["base_url"],
                    format!("expected an http or https URL, found \"{url}\" ({e})"),
                ));
                String::new()
            }
        },
        (None, AdapterKind::Echo) => String::new(),
        (None, _) => {
            errors.push(src.error_at(
                &[],
                format!(
                    "missing key `base_url`: adapter `{}` needs the API's address",
                    adapter.as_str()
                ),
            ));
            String::new()
        }
    };
    let mut status = Status::Active;
    let mut key = None;
    if let Some(env_key) = &raw.env_key {
        if !valid_env_name(env_key) {
            errors.push(src.error_at(
                &["env_key"],
                format!("expected an environment variable name, found \"{env_key}\""),
            ));
        } else if let Some(value) = lookup(env_key) {
            key = Some(Secret::new(value));
        } else {
            status = Status::Inactive(format!("{env_key} is not set"));
        }
    }
    if raw.enabled == Some(false) {
        status = Status::Inactive("disabled by `enabled = false`".to_string());
    }

    let mut models = Vec::new();
    let mut aliases = HashMap::new();
    let mut seen = BTreeSet::new();
    for (id, m) in &raw.models.0 {
        if id.trim().is_empty() {
            errors.push(src.error_at(&["models"], "expected a model id, found an empty string"));
            continue;
        }
        if !seen.insert(id.clone()) {
            errors.push(src.error_at(&["models"], format!("model `{id}` is listed twice")));
        }
        for (key, price) in [
            ("cost_input_per_1m", m.cost_input_per_1m),
            ("cost_cached_input_per_1m", m.cost_cached_input_per_1m),
            ("cost_output_per_1m", m.cost_output_per_1m),
            ("cost_cache_write_per_1m", m.cost_cache_write_per_1m),
        ] {
            if let Some(p) = price
                && !(p.is_finite() && p >= 0.0)
            {
                errors.push(src.error_at(
                    &["models", id, key],
                    format!("expected a price of 0 or more (USD per million tokens), found {p}"),
                ));
            }
        }
        if m.cost_input_per_1m.is_some() != m.cost_output_per_1m.is_some() {
            errors.push(src.error_at(
                &["models", id],
                "give both cost_input_per_1m and cost_output_per_1m, or neither (the model is then unpriced)",
            ));
        }
        models.push(model_from_raw(id, m));
    }
    for m in &models {
        for alias in &m.aliases {
            if seen.contains(alias) || aliases.insert(alias.clone(), m.id.clone()).is_some() {
                errors.push(src.error_at(
                    &["models", &m.id, "aliases"],
                    format!("alias `{alias}` is already a model id or alias of this provider"),
                ));
            }
        }
    }
    if let Some(m) = &raw.default_model
        && !models.is_empty()
        && !seen.contains(m)
        && !aliases.contains_key(m)
    {
        let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
        errors.push(src.error_at(
            &["default_model"],
            format!(
                "default_model `{m}` is not in this provider's models; expected one of: {}",
                ids.join(", ")
            ),
        ));
    }
    let default_model = raw
        .default_model
        .as_ref()
        .map(|m| aliases.get(m).cloned().unwrap_or_else(|| m.clone()))
        .or_else(|| models.first().map(|m| m.id.clone()));

    let timeout = match raw.timeout_s {
        Some(t) => positive_duration(src, &["timeout_s"], t, errors),
        None => settings.timeout,
    };
    let mut headers = Vec::new();
    for (k, v) in &raw.headers {
        match (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(k), Ok(v)) => headers.push((k, v)),
            (Err(_), _) => errors.push(src.error_at(
                &["headers", k],
                format!("`{k}` is not a valid HTTP header name"),
            )),
            (_, Err(_)) => errors.push(src.error_at(
                &["headers", k],
                "expected a header value of visible ASCII characters",
            )),
        }
    }
    let system_prompt = raw.system_prompt.as_ref().and_then(|text| {
        let allowed = SYSTEM_PROMPT_VARS.iter().map(|s| s.to_string()).collect();
        match Template::compile(text, &allowed) {
            Ok(template) => Some(SystemPrompt {
                template,
                mode: raw.system_prompt_mode,
            }),
            Err(e) => {
                let mut err = src.error_at(&["system_prompt"], e.message);
                if let (Some(line), Some((l, c))) = (e.line, err.position) {
                    // Multi-line strings start on the line after the opening quotes.
                    let first = if text_starts_multiline(src, l) { 1 } else { 0 };
                    err.position = Some((l + line - 1 + first, if line == 1 { c } else { 1 }));
                }
                errors.push(err);
                None
            }
        }
    });
    if errors.len() > before {
        return None;
    }
    let chat_url = reqwest::Url::parse(&format!("{base_url}/chat/completions")).ok();
    Some(Provider {
        name,
        adapter,
        chat_url,
        base_url,
        env_key: raw.env_key.clone(),
        key,
        status,
        default_model,
        fallback_to: raw.fallback_to.clone(),
        timeout,
        retries: raw.retries.unwrap_or(settings.retries),
        headers,
        system_prompt,
        models,
        aliases,
    })
}

fn text_starts_multiline(src: &SourceFile, line: usize) -> bool {
    src.text
        .lines()
        .nth(line - 1)
        .is_some_and(|l| l.trim_end().ends_with("\"\"\"") || l.trim_end().ends_with("'''"))
}

fn model_from_raw(id: &str, m: &RawModel) -> Model {
    Model {
        id: id.to_string(),
        aliases: m.aliases.clone(),
        context_tokens: m.context_tokens,
        max_output_tokens: m.max_output_tokens,
        cost_input_per_1m: m.cost_input_per_1m,
        cost_cached_input_per_1m: m.cost_cached_input_per_1m,
        cost_output_per_1m: m.cost_output_per_1m,
        cost_cache_write_per_1m: m.cost_cache_write_per_1m,
        capabilities: m.capabilities.clone(),
    }
}

/// Unknown `fallback_to` targets and cycles, each reported at the file that starts it.
fn check_fallbacks(
    tree: &ConfigTree,
    providers: &BTreeMap<String, Arc<Provider>>,
    errors: &mut Vec<ConfigError>,
) {
    for parsed in &tree.providers {
        let Some(target) = &parsed.raw.fallback_to else {
            continue;
        };
        if tree.broken.contains(target) {
            continue;
        }
        if !providers.contains_key(target) && !tree.providers.iter().any(|p| &p.name == target) {
            let mut known: Vec<&str> = tree.providers.iter().map(|p| p.name.as_str()).collect();
            known.sort();
            errors.push(parsed.source.error_at(
                &["fallback_to"],
                format!(
                    "unknown provider `{target}`; expected one of: {}",
                    known.join(", ")
                ),
            ));
            continue;
        }
        let mut path = vec![parsed.name.as_str()];
        let mut next = Some(target.as_str());
        while let Some(name) = next {
            if name == parsed.name {
                path.push(name);
                // Report each cycle once, at its alphabetically first member.
                if path[..path.len() - 1]
                    .iter()
                    .all(|p| *p >= parsed.name.as_str())
                {
                    errors.push(parsed.source.error_at(
                        &["fallback_to"],
                        format!("fallback_to forms a cycle: {}", path.join(" → ")),
                    ));
                }
                break;
            }
            if path.contains(&name) {
                break;
            }
            path.push(name);
            next = tree
                .providers
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.raw.fallback_to.as_deref());
        }
    }
}
