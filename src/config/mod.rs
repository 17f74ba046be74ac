//! Raw configuration: serde types of the files on disk and loading a folder tree.
//!
//! Nothing here touches the network or tokio. Loading never stops at the first
//! problem: every file is read, every top-level key of a broken file is tried on
//! its own, and all errors come back together with file, line, column and key.

mod error;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

pub use error::{ConfigError, SourceFile, line_col};

pub const PROVIDERS_DIR: &str = "providers.d";
pub const TOOLS_DIR: &str = "tools.d";
pub const SERVERS_DIR: &str = "servers.d";
pub const KEYS_DIR: &str = "keys.d";
pub const DOTENV: &str = ".env";

/// `hub.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHub {
    pub server: RawServer,
    pub routing: RawRouting,
    pub groups: BTreeMap<String, Vec<String>>,
    pub mcp: RawMcp,
    pub profiles: BTreeMap<String, RawProfile>,
    pub storage: RawStorage,
    pub projects: BTreeMap<String, RawProject>,
}

/// `[projects.NAME]`: limits summed over every key and agent of a project.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProject {
    pub budget_usd: Option<RawBudget>,
}

/// `budget_usd = { day = 5.0, month = 100.0 }`: spend caps per UTC day and month.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBudget {
    pub day: Option<f64>,
    pub month: Option<f64>,
}

/// `keys.d/NAME.toml`: one client key, known only by its SHA-256.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKey {
    pub sha256: Option<String>,
    pub project: Option<String>,
    pub description: Option<String>,
    pub models: Option<Vec<String>>,
    pub tools: Option<Vec<String>>,
    // Signed, so a negative value gets our message rather than serde's.
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub max_parallel: Option<i64>,
    pub budget_usd: Option<RawBudget>,
    pub expires: Option<toml_edit::Datetime>,
}

/// `[storage]`: where the usage ledger lives (restart-only).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub retention_days: Option<u32>,
    /// `false` turns the usage ledger off (nothing is recorded or reported).
    pub ledger: Option<bool>,
    /// The variable holding a `redis://` URL: rate and budget counters shared by instances.
    pub redis_url_env: Option<String>,
    /// `deny` (default) or `allow`: budgets while the counter store cannot be reached.
    pub limits_when_store_down: Option<String>,
}

/// `[profiles.NAME]`: the subset of MCP tools one client is given.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProfile {
    /// Globs over backend names: all their tools.
    pub servers: Vec<String>,
    /// Globs over exposed tool names (built-in, prompt or backend tools).
    pub tools: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Option<String>,
    pub api_keys_env: Vec<String>,
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRouting {
    pub default_model: Option<String>,
    pub timeout_s: Option<f64>,
    pub retries: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub circuit_breaker: RawCircuitBreaker,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCircuitBreaker {
    pub failures: Option<u32>,
    pub cooldown_s: Option<f64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMcp {
    pub http_path: Option<String>,
    pub tool_separator: Option<String>,
    pub description: Option<String>,
    /// Host headers `/mcp` accepts besides loopback (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// Browser origins `/mcp` accepts besides loopback ones, such as "https://app.example.com:443".
    pub allowed_origins: Vec<String>,
    /// How often a long tool call reports progress to clients that asked for it.
    pub progress_interval_s: Option<f64>,
    /// Longest `ttl_s` a per-session endpoint may ask for.
    pub session_max_ttl_s: Option<f64>,
    /// A session's own backend connections close after this long without a request.
    pub session_idle_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    Openai,
    Anthropic,
    Gemini,
    Echo,
}

impl AdapterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Echo => "echo",
        }
    }
}

/// Where a provider's `system_prompt` goes when the request already has a system message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemPromptMode {
    /// Put the provider's text first inside the existing system message.
    #[default]
    Merge,
    /// Always add a separate system message at the start.
    Prepend,
}

/// `providers.d/NAME.toml`. Every field is optional here; what is required is
/// checked by the registry so that a missing key is reported with the others.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProvider {
    pub adapter: Option<AdapterKind>,
    pub base_url: Option<String>,
    pub env_key: Option<String>,
    pub default_model: Option<String>,
    pub fallback_to: Option<String>,
    pub timeout_s: Option<f64>,
    pub retries: Option<u32>,
    pub headers: BTreeMap<String, String>,
    pub system_prompt: Option<String>,
    pub system_prompt_mode: SystemPromptMode,
    pub models: RawModels,
    pub enabled: Option<bool>,
}

/// `models = ["a", "b"]` or `[models.a]` tables with metadata.
#[derive(Debug, Default, Clone)]
pub struct RawModels(pub Vec<(String, RawModel)>);

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModel {
    pub aliases: Vec<String>,
    pub context_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub cost_input_per_1m: Option<f64>,
    pub cost_cached_input_per_1m: Option<f64>,
    pub cost_output_per_1m: Option<f64>,
    pub cost_cache_write_per_1m: Option<f64>,
    pub capabilities: Vec<String>,
}

impl<'de> Deserialize<'de> for RawModels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawModels;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of model ids or a table of [models.ID] tables")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawModels, A::Error> {
                let mut out = Vec::new();
                while let Some(id) = seq.next_element::<String>()? {
                    out.push((id, RawModel::default()));
                }
                Ok(RawModels(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawModels, A::Error> {
                let mut out = Vec::new();
                while let Some((id, model)) = map.next_entry::<String, RawModel>()? {
                    out.push((id, model));
                }
                Ok(RawModels(out))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `tools.d/NAME.toml`: a prompt tool, or (`kind`) a REST call or a read-only SQL query.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTool {
    /// `prompt` (the default), `http` or `sql`.
    pub kind: Option<String>,
    pub description: Option<String>,
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    pub timeout_s: Option<f64>,
    pub system: Option<String>,
    pub prompt: Option<String>,
    pub input: Option<serde_json::Value>,
    pub output: Option<serde_json::Value>,
    // kind = "http"
    pub method: Option<String>,
    pub url: Option<String>,
    pub query: Option<BTreeMap<String, String>>,
    pub headers: Option<BTreeMap<String, String>>,
    /// A template string, or a table rendered to JSON (each string in it a template).
    pub body: Option<serde_json::Value>,
    pub auth: Option<RawAuth>,
    pub result: Option<String>,
    pub fallback_to: Option<String>,
    pub max_response_bytes: Option<u64>,
    // kind = "sql"
    pub database_env: Option<String>,
    pub statement: Option<String>,
    pub free_query: Option<bool>,
    pub max_rows: Option<u64>,
}

/// `servers.d/NAME.toml`: a backend MCP server whose tools llmhub offers under a prefix.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackend {
    /// Streamable HTTP endpoint; or `command` for a child process over stdio.
    pub url: Option<String>,
    pub command: Option<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub auth: Option<RawAuth>,
    pub timeout_s: Option<f64>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub prefix: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum RawAuth {
    /// `Authorization: Bearer <value of env_key>`.
    Bearer { env_key: String },
    /// `<name>: <value of env_key>`.
    Header { name: String, env_key: String },
}

/// One parsed file: its name (the file stem), its source for error positions, and its content.
pub struct Parsed<T> {
    pub name: String,
    pub source: SourceFile,
    pub raw: T,
}

/// Everything read from one configuration folder.
pub struct ConfigTree {
    pub hub_path: PathBuf,
    pub dir: PathBuf,
    pub hub: Parsed<RawHub>,
    pub providers: Vec<Parsed<RawProvider>>,
    pub tools: Vec<Parsed<RawTool>>,
    pub backends: Vec<Parsed<RawBackend>>,
    pub keys: Vec<Parsed<RawKey>>,
    /// keys.d/ exists: the gateway needs keys even when the last file is deleted.
    pub keys_dir: bool,
    /// Files that exist but could not be parsed; references to them are not reported again.
    pub broken: BTreeSet<String>,
    /// hub.toml itself could not be parsed: its groups are unknown, so names that may be
    /// groups are not reported as unknown.
    pub hub_broken: bool,
    pub dotenv: BTreeMap<String, String>,
    /// Hash of every file read, so an event that changed nothing can be ignored.
    pub fingerprint: u64,
}

/// What loading produced: the tree (when hub.toml itself could be read) and every error met.
pub struct Loaded {
    pub tree: Option<ConfigTree>,
    pub errors: Vec<ConfigError>,
}

/// Reads hub.toml and the `.d` folders beside it.
pub fn load(hub_path: &Path) -> Loaded {
    let mut errors = Vec::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    // An empty parent (for `hub.toml`) keeps file names in messages short and relative.
    let dir = hub_path.parent().unwrap_or(Path::new("")).to_path_buf();

    if let Err(e) = std::fs::metadata(hub_path) {
        errors.push(ConfigError::whole_file(
            hub_path,
            format!("cannot read file: {e}"),
        ));
        return Loaded { tree: None, errors };
    }
    // A broken hub.toml is reported, and the other files are still read for their own errors.
    let parsed_hub = parse_file::<RawHub>(hub_path, &mut errors, &mut hasher);
    let hub_broken = parsed_hub.is_none();
    let hub = parsed_hub.unwrap_or_else(|| Parsed {
        name: file_stem(hub_path),
        source: SourceFile::empty(hub_path),
        raw: RawHub::default(),
    });
    let mut broken = BTreeSet::new();
    let providers = parse_dir::<RawProvider>(
        &dir.join(PROVIDERS_DIR),
        &mut errors,
        &mut broken,
        &mut hasher,
    );
    let tools = parse_dir::<RawTool>(&dir.join(TOOLS_DIR), &mut errors, &mut broken, &mut hasher);
    let backends = parse_dir::<RawBackend>(
        &dir.join(SERVERS_DIR),
        &mut errors,
        &mut broken,
        &mut hasher,
    );
    // Keys are no model address: their broken files must not hide address errors.
    let keys = parse_dir::<RawKey>(
        &dir.join(KEYS_DIR),
        &mut errors,
        &mut BTreeSet::new(),
        &mut hasher,
    );
    let keys_dir = dir.join(KEYS_DIR).is_dir();
    let dotenv = read_dotenv(&dir.join(DOTENV), &mut errors, &mut hasher);

    Loaded {
        tree: Some(ConfigTree {
            hub_path: hub_path.to_path_buf(),
            dir,
            hub,
            providers,
            tools,
            backends,
            keys,
            keys_dir,
            broken,
            hub_broken,
            dotenv,
            fingerprint: hasher.finish(),
        }),
        errors,
    }
}

fn parse_dir<T: DeserializeOwned + Default>(
    dir: &Path,
    errors: &mut Vec<ConfigError>,
    broken: &mut BTreeSet<String>,
    hasher: &mut impl Hasher,
) -> Vec<Parsed<T>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(ConfigError::whole_file(
                dir,
                format!("cannot read folder: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_config_file(p))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        match parse_file::<T>(&path, errors, hasher) {
            Some(parsed) => out.push(parsed),
            None => {
                broken.insert(file_stem(&path));
            }
        }
    }
    out
}

/// A `.toml` file that is not hidden or an editor's temporary copy.
pub fn is_config_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && name.ends_with(".toml") && path.is_file()
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parses one file; on a schema error, retries each top-level key alone so that
/// every bad key is reported, not only the first one serde meets.
fn parse_file<T: DeserializeOwned + Default>(
    path: &Path,
    errors: &mut Vec<ConfigError>,
    hasher: &mut impl Hasher,
) -> Option<Parsed<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            errors.push(ConfigError::whole_file(
                path,
                format!("cannot read file: {e}"),
            ));
            return None;
        }
    };
    path.hash(hasher);
    text.hash(hasher);
    let doc = match toml_edit::Document::parse(text.clone()) {
        Ok(doc) => doc,
        Err(e) => {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                position: e.span().map(|s| line_col(&text, s.start)),
                key: String::new(),
                message: format!("invalid TOML: {}", e.message().trim_end()),
            });
            return None;
        }
    };
    let source = SourceFile {
        path: path.to_path_buf(),
        text,
        doc,
    };
    match toml_edit::de::from_document::<T>(source.doc.clone()) {
        Ok(raw) => Some(Parsed {
            name: file_stem(path),
            source,
            raw,
        }),
        Err(first) => {
            let mut found = Vec::new();
            for (key, item) in source.doc.as_table().iter() {
                let mut single = toml_edit::DocumentMut::new();
                single.as_table_mut().insert(key, item.clone());
                if let Err(e) = toml_edit::de::from_document::<T>(single) {
                    let err = match (e.span(), unknown_field(e.message())) {
                        // Serde knows no place for an unknown key: find the key itself.
                        (None, Some(field)) => {
                            let mut path = vec![key.to_string()];
                            if field != key {
                                find_key(item, field, &mut path);
                            }
                            let path: Vec<&str> = path.iter().map(String::as_str).collect();
                            let message = e.message().trim_end().trim_end_matches('.');
                            source.error_at_key(&path, with_suggestion(message, field))
                        }
                        _ => source.error_from_de(&e),
                    };
                    if !found.contains(&err) {
                        found.push(err);
                    }
                }
            }
            if found.is_empty() {
                found.push(source.error_from_de(&first));
            }
            errors.extend(found);
            None
        }
    }
}

/// Serde's "unknown field `x`, expected one of `a`, `b`" with the nearest expected
/// name added, when one is close enough to be a typo.
fn with_suggestion(message: &str, field: &str) -> String {
    let expected = message
        .split_once("expected one of ")
        .or_else(|| message.split_once("expected "))
        .map(|(_, list)| list)
        .unwrap_or("");
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (edit_distance(field, name), name))
        .min();
    match best {
        Some((d, name)) if d > 0 && d <= 2.max(field.len() / 4) => {
            format!("{message}; did you mean `{name}`?")
        }
        _ => message.to_string(),
    }
}

/// Levenshtein distance, for suggestions among a few short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// Extends `path` down to the first key named `name` below `item`.
fn find_key(item: &toml_edit::Item, name: &str, path: &mut Vec<String>) -> bool {
    let children: Vec<(String, toml_edit::Item)> = match item {
        toml_edit::Item::Table(t) => t.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => t
            .iter()
            .map(|(k, v)| (k.to_string(), toml_edit::Item::Value(v.clone())))
            .collect(),
        _ => return false,
    };
    for (k, v) in children {
        path.push(k.clone());
        if k == name || find_key(&v, name, path) {
            return true;
        }
        path.pop();
    }
    false
}

/// `KEY=value` lines; blank lines and `#` comments are skipped, quotes around values removed.
fn read_dotenv(
    path: &Path,
    errors: &mut Vec<ConfigError>,
    hasher: &mut impl Hasher,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            errors.push(ConfigError::whole_file(
                path,
                format!("cannot read file: {e}"),
            ));
            return out;
        }
    };
    text.hash(hasher);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                position: Some((i + 1, 1)),
                key: String::new(),
                message: "expected KEY=value".to_string(),
            });
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        out.insert(key.trim().to_string(), value.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn every_bad_key_of_a_file_is_reported_with_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = write(dir.path(), "hub.toml", "");
        write(
            dir.path(),
            "providers.d/p.toml",
            "base_url = \"http://x\"\nbse_url = 1\ntimeout_s = \"slow\"\n",
        );
        let loaded = load(&hub);
        let text: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("p.toml:2:1: bse_url: unknown field `bse_url`"),
            "{text:?}"
        );
        assert!(
            text[1].contains("p.toml:3:13: timeout_s: invalid type"),
            "{text:?}"
        );
        assert!(loaded.tree.is_some_and(|t| t.broken.contains("p")));
    }

    #[test]
    fn models_take_the_short_and_the_long_form() {
        let short: RawProvider = toml_edit::de::from_str("models = [\"a\", \"b\"]").expect("short");
        assert_eq!(short.models.0.len(), 2);
        let long: RawProvider =
            toml_edit::de::from_str("[models.a]\naliases = [\"x\"]\ncontext_tokens = 10\n")
                .expect("long");
        assert_eq!(long.models.0[0].0, "a");
        assert_eq!(long.models.0[0].1.aliases, vec!["x"]);
    }

    #[test]
    fn dotenv_lines_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), ".env", "# c\nA=1\nexport B=\"two\"\nbad line\n");
        let mut errors = Vec::new();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let env = read_dotenv(&path, &mut errors, &mut h);
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert_eq!(env.get("B").map(String::as_str), Some("two"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].position, Some((4, 1)));
    }
}
