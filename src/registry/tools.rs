//! tools.d tools as snapshot data: prompt, REST (`kind = "http"`) and read-only SQL
//! (`kind = "sql"`) tools compiled at load into validated JSON Schemas and templates,
//! with what the snapshot alone can say about them (their arguments, whether they can
//! run and why not, the env keys they need).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use reqwest::header::HeaderName;

use super::{Registry, Secret, Status, is_name, positive_duration};
use crate::config::{ConfigError, Parsed, RawTool, SourceFile};
use crate::template::Template;

/// Names the built-in MCP tools take; a tools.d file may not reuse them.
pub const BUILTIN_NAMES: [&str; 7] = [
    "count_tokens",
    "chat_completion",
    "list_models",
    "get_model_info",
    "health_check",
    "list_active_tools",
    "get_usage",
];
/// Arguments larger than this are refused before validation: templates copy them into prompts.
pub const MAX_ARGUMENT_BYTES: usize = 1 << 20;

/// A tools.d file, ready to run.
pub struct PromptTool {
    pub name: String,
    pub description: String,
    /// A model address; `None` means `routing.default_model`.
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    pub timeout: Option<Duration>,
    pub kind: ToolKind,
    pub input_schema: Arc<Map<String, Value>>,
    pub(crate) input: Arc<jsonschema::Validator>,
    pub output_schema: Option<Arc<Map<String, Value>>>,
    pub(crate) output: Option<Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for PromptTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What a tool does when called.
#[derive(Debug)]
pub enum ToolKind {
    /// Renders a prompt and asks a model.
    Prompt {
        system: Option<Template>,
        prompt: Template,
    },
    Http(Arc<HttpTool>),
    Sql(Arc<SqlTool>),
}

impl ToolKind {
    /// `prompt`, `http` or `sql`, as tools.d's `kind` says.
    pub fn name(&self) -> &'static str {
        match self {
            ToolKind::Prompt { .. } => "prompt",
            ToolKind::Http(_) => "http",
            ToolKind::Sql(_) => "sql",
        }
    }
}

/// A REST call: every part a template over the validated arguments; keys only in `auth`.
#[derive(Debug)]
pub struct HttpTool {
    pub method: reqwest::Method,
    pub url: Template,
    pub query: Vec<(String, Template)>,
    pub headers: Vec<(HeaderName, Template)>,
    pub body: Option<Body>,
    /// The header carrying the key, with its value from the environment.
    pub auth: Option<(HeaderName, Secret)>,
    pub env_key: Option<String>,
    /// Why the tool cannot run (its key is not set).
    pub missing: Option<String>,
    /// Over `response` (parsed JSON, or null), `text`, `status` and the arguments.
    pub result: Option<Template>,
    pub fallback_to: Option<String>,
    pub max_response_bytes: usize,
    pub timeout: Duration,
}

/// A request body: text, or JSON whose strings are templates.
#[derive(Debug)]
pub enum Body {
    Text(Template),
    Json(JsonTemplate),
}

/// A JSON value whose strings render; a string that is one `{{ expression }}` keeps the
/// expression's JSON type (`{{ max_results }}` stays a number).
#[derive(Debug)]
pub enum JsonTemplate {
    Literal(Value),
    Text(Template),
    Typed(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    pub fn render(&self, context: &Value) -> Result<Value, String> {
        Ok(match self {
            JsonTemplate::Literal(v) => v.clone(),
            JsonTemplate::Text(t) => Value::String(t.render(context)?),
            JsonTemplate::Typed(t) => {
                let text = t.render(context)?;
                serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?
            }
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.render(context))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(context)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

/// Default cap on a REST response body; past it the body is cut with a note.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1 << 20;
pub const DEFAULT_HTTP_TIMEOUT_S: f64 = 30.0;
pub const DEFAULT_MAX_ROWS: u64 = 200;

/// A read-only query on the database an environment variable names.
#[derive(Debug)]
pub struct SqlTool {
    /// `sqlite://…` or `postgres://…`; `None` when the variable is unset.
    pub url: Option<Secret>,
    pub env_key: String,
    /// The statement with `:name` parameters, or `None` for `free_query`.
    pub statement: Option<String>,
    /// Parameter names in the order they appear.
    pub params: Vec<String>,
    pub max_rows: usize,
    pub timeout: Duration,
}

/// `:name` parameters outside quotes and comments, in order (`::` casts are not
/// parameters), and the statement with each replaced by `$1`, `$2`…
pub fn named_params(sql: &str) -> (Vec<String>, String) {
    let mut names: Vec<String> = Vec::new();
    let mut out = String::with_capacity(sql.len());
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                let quote = c;
                out.push(c);
                i += 1;
                while i < chars.len() {
                    out.push(chars[i]);
                    i += 1;
                    if chars[i - 1] == quote {
                        break;
                    }
                }
                continue;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(chars[i]);
                    i += 1;
                }
                continue;
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                out.push_str("::");
                i += 2;
                continue;
            }
            ':' if chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_') =>
            {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                let index = match names.iter().position(|n| *n == name) {
                    Some(p) => p + 1,
                    None => {
                        names.push(name);
                        names.len()
                    }
                };
                out.push_str(&format!("${index}"));
                i = end;
                continue;
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    (names, out)
}

/// One argument as MCP prompts list them.
pub struct PromptArgumentInfo {
    pub name: String,
    pub description: Option<String>,
    pub required: bool,
}

impl PromptTool {
    pub fn arguments(&self) -> Vec<PromptArgumentInfo> {
        let required: BTreeSet<&str> = self
            .input_schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        self.input_schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, schema)| PromptArgumentInfo {
                name: name.clone(),
                description: schema
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                required: required.contains(name.as_str()),
            })
            .collect()
    }

    /// Whether the tool can run; if not, why. A REST tool can when it or a tool of its
    /// `fallback_to` chain has its key.
    pub fn availability(&self, registry: &Registry) -> Result<(), String> {
        match &self.kind {
            ToolKind::Prompt { .. } => self.model_availability(registry),
            ToolKind::Sql(sql) => match sql.url {
                Some(_) => Ok(()),
                None => Err(format!("{} is not set", sql.env_key)),
            },
            ToolKind::Http(_) => {
                let mut reasons = Vec::new();
                for tool in self.fallback_chain(registry) {
                    if let ToolKind::Http(h) = &tool.kind {
                        match &h.missing {
                            None => return Ok(()),
                            Some(why) => reasons.push(format!("{}: {why}", tool.name)),
                        }
                    }
                }
                Err(reasons.join("; "))
            }
        }
    }

    /// This tool, then each `fallback_to` in turn (cycles are refused at load).
    pub fn fallback_chain<'r>(&'r self, registry: &'r Registry) -> Vec<&'r PromptTool> {
        let mut chain = vec![self];
        let mut next = self.fallback_to();
        while let Some(name) = next {
            match registry.tools.get(name) {
                Some(t) if !chain.iter().any(|c| c.name == t.name) => {
                    chain.push(t);
                    next = t.fallback_to();
                }
                _ => break,
            }
        }
        chain
    }

    pub fn fallback_to(&self) -> Option<&str> {
        match &self.kind {
            ToolKind::Http(h) => h.fallback_to.as_deref(),
            _ => None,
        }
    }

    /// The description clients see: a REST tool with fallbacks names them.
    pub fn offered_description(&self, registry: &Registry) -> String {
        let chain = self.fallback_chain(registry);
        if chain.len() < 2 {
            return self.description.clone();
        }
        let names: Vec<&str> = chain.iter().map(|t| t.name.as_str()).collect();
        format!(
            "{} (served by {}, in that order, whichever has its key and answers)",
            self.description,
            names.join(", then ")
        )
    }

    fn model_availability(&self, registry: &Registry) -> Result<(), String> {
        let address = match self
            .model
            .as_deref()
            .or(registry.settings.default_model.as_deref())
        {
            Some(a) => a,
            None => return Err("no model set and routing.default_model is not set".into()),
        };
        let chain = registry.chain(address).map_err(|e| e.to_string())?;
        let mut reasons = Vec::new();
        for t in &chain {
            match registry.providers.get(&t.provider).map(|p| &p.status) {
                Some(Status::Active) => return Ok(()),
                Some(Status::Inactive(why)) => reasons.push(format!("{}: {why}", t.provider)),
                None => {}
            }
        }
        Err(format!(
            "no active provider for `{address}` ({})",
            reasons.join("; ")
        ))
    }

    /// Environment variable names the tool needs, with whether each is set.
    pub fn env_keys(&self, registry: &Registry) -> Vec<(String, bool)> {
        match &self.kind {
            ToolKind::Prompt { .. } => self.provider_env_keys(registry),
            ToolKind::Sql(sql) => vec![(sql.env_key.clone(), sql.url.is_some())],
            ToolKind::Http(_) => self
                .fallback_chain(registry)
                .iter()
                .filter_map(|t| match &t.kind {
                    ToolKind::Http(h) => h.env_key.clone().map(|k| (k, h.missing.is_none())),
                    _ => None,
                })
                .collect(),
        }
    }

    fn provider_env_keys(&self, registry: &Registry) -> Vec<(String, bool)> {
        let address = self
            .model
            .as_deref()
            .or(registry.settings.default_model.as_deref());
        let chain = address
            .and_then(|a| registry.chain(a).ok())
            .unwrap_or_default();
        let mut out: BTreeMap<String, bool> = BTreeMap::new();
        for t in chain {
            if let Some(p) = registry.providers.get(&t.provider)
                && let Some(key) = &p.env_key
            {
                let set = p.key.is_some();
                let entry = out.entry(key.clone()).or_insert(false);
                *entry |= set;
            }
        }
        out.into_iter().collect()
    }
}

/// Compiles one tools.d file, or records why it cannot be used.
pub fn compile(
    parsed: &Parsed<RawTool>,
    resolve: &dyn Fn(&str) -> Option<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<PromptTool> {
    let raw = &parsed.raw;
    let src = &parsed.source;
    let before = errors.len();
    let name = parsed.name.clone();
    if !is_name(&name, 64) {
        errors.push(ConfigError::whole_file(
            &src.path,
            format!(
                "tool name `{name}` (the file name) must be 1 to 64 of a-z, A-Z, 0-9, '_' and '-'"
            ),
        ));
    }
    if BUILTIN_NAMES.contains(&name.as_str()) {
        errors.push(ConfigError::whole_file(
            &src.path,
            format!("`{name}` is a built-in tool; rename the file"),
        ));
    }
    let kind = raw.kind.as_deref().unwrap_or("prompt");
    if !["prompt", "http", "sql"].contains(&kind) {
        errors.push(src.error_at(
            &["kind"],
            format!("expected \"prompt\", \"http\" or \"sql\", found \"{kind}\""),
        ));
        return None;
    }
    // A field of another kind is a mistake worth saying, not something to ignore.
    let fields: [(&str, bool, &[&str]); 17] = [
        ("model", raw.model.is_some(), &["prompt"]),
        ("temperature", raw.temperature.is_some(), &["prompt"]),
        ("max_tokens", raw.max_tokens.is_some(), &["prompt"]),
        ("system", raw.system.is_some(), &["prompt"]),
        ("prompt", raw.prompt.is_some(), &["prompt"]),
        ("method", raw.method.is_some(), &["http"]),
        ("url", raw.url.is_some(), &["http"]),
        ("query", raw.query.is_some(), &["http"]),
        ("headers", raw.headers.is_some(), &["http"]),
        ("body", raw.body.is_some(), &["http"]),
        ("auth", raw.auth.is_some(), &["http"]),
        ("result", raw.result.is_some(), &["http"]),
        ("fallback_to", raw.fallback_to.is_some(), &["http"]),
        (
            "max_response_bytes",
            raw.max_response_bytes.is_some(),
            &["http"],
        ),
        ("database_env", raw.database_env.is_some(), &["sql"]),
        ("statement", raw.statement.is_some(), &["sql"]),
        ("max_rows", raw.max_rows.is_some(), &["sql"]),
    ];
    for (field, set, kinds) in fields {
        if set && !kinds.contains(&kind) {
            errors.push(src.error_at(
                &[field],
                format!(
                    "`{field}` belongs to kind = \"{}\" tools; this tool is kind = \"{kind}\"",
                    kinds[0]
                ),
            ));
        }
    }
    if raw.free_query.is_some() && kind != "sql" {
        errors.push(src.error_at(
            &["free_query"],
            format!("`free_query` belongs to kind = \"sql\" tools; this tool is kind = \"{kind}\""),
        ));
    }
    if let Some(model) = &raw.model
        && let Some(problem) = resolve(model)
    {
        errors.push(src.error_at(&["model"], problem));
    }
    let description = raw.description.clone().unwrap_or_default();
    if description.trim().is_empty() {
        errors.push(src.error_at(
            &[],
            "missing key `description`: MCP clients show it to the model to pick the tool",
        ));
    }
    if let Some(t) = raw.temperature
        && !(0.0..=2.0).contains(&t)
    {
        errors.push(src.error_at(
            &["temperature"],
            format!("expected a number from 0 to 2, found {t}"),
        ));
    }
    if raw.max_tokens == Some(0) {
        errors.push(src.error_at(&["max_tokens"], "expected at least 1, found 0"));
    }
    let timeout = raw
        .timeout_s
        .map(|t| positive_duration(src, &["timeout_s"], t, errors));

    let mut input_schema = raw
        .input
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    if kind == "sql" && raw.free_query == Some(true) && raw.input.is_none() {
        input_schema = json!({"type": "object", "required": ["query"], "properties": {
            "query": {"type": "string", "description": "One read-only SQL statement"}}});
    }
    let input = compile_schema(&input_schema, "input", src, errors);
    if input.is_some() && input_schema.get("type").and_then(Value::as_str) != Some("object") {
        errors.push(src.error_at(
            &["input", "type"],
            "expected `type = \"object\"`: tool arguments are an object",
        ));
    }
    // A SQL tool's result always has this shape, so clients get it as structuredContent.
    let output_schema = raw.output.clone().or_else(|| {
        (kind == "sql").then(|| {
            json!({"type": "object", "required": ["columns", "rows", "truncated"], "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "rows": {"type": "array", "items": {"type": "array"}},
                "truncated": {"type": "boolean"}}})
        })
    });
    let output = output_schema
        .as_ref()
        .and_then(|s| compile_schema(s, "output", src, errors));

    let declared: BTreeSet<String> = input_schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let compiled = match kind {
        "http" => compile_http(raw, src, &declared, timeout, lookup, errors)
            .map(|h| ToolKind::Http(Arc::new(h))),
        "sql" => compile_sql(raw, src, &declared, timeout, lookup, errors)
            .map(|q| ToolKind::Sql(Arc::new(q))),
        _ => compile_prompt(raw, src, &declared, errors),
    };
    if errors.len() > before {
        return None;
    }
    Some(PromptTool {
        name,
        description,
        model: raw.model.clone(),
        temperature: raw.temperature,
        max_tokens: raw.max_tokens,
        timeout,
        kind: compiled?,
        input_schema: Arc::new(input_schema.as_object().cloned().unwrap_or_default()),
        input: input?,
        output_schema: output_schema
            .and_then(|s| s.as_object().cloned())
            .map(Arc::new),
        output,
    })
}

/// Compiles a template of the file at `key`, saying where an undeclared variable is.
fn template(
    src: &SourceFile,
    key: &[&str],
    text: &str,
    vars: &BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Template> {
    match Template::compile_optional(text, vars) {
        Ok(t) => Some(t),
        Err(e) => {
            let message = if e.message.contains("undeclared variable") {
                format!("{} (declare it under [input.properties])", e.message)
            } else {
                e.message
            };
            errors.push(src.error_at(key, message));
            None
        }
    }
}

fn compile_prompt(
    raw: &RawTool,
    src: &SourceFile,
    declared: &BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<ToolKind> {
    let system = match &raw.system {
        Some(text) => Some(template(src, &["system"], text, declared, errors)?),
        None => None,
    };
    let Some(text) = &raw.prompt else {
        errors.push(src.error_at(
            &[],
            "missing key `prompt`: a prompt tool needs a prompt template",
        ));
        return None;
    };
    let prompt = template(src, &["prompt"], text, declared, errors)?;
    Some(ToolKind::Prompt { system, prompt })
}

fn compile_http(
    raw: &RawTool,
    src: &SourceFile,
    declared: &BTreeSet<String>,
    timeout: Option<Duration>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<HttpTool> {
    let before = errors.len();
    let method_text = raw.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    let method = match method_text.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" => {
            reqwest::Method::from_bytes(method_text.as_bytes()).ok()
        }
        _ => {
            errors.push(src.error_at(
                &["method"],
                format!("expected GET, POST, PUT, PATCH, DELETE or HEAD, found \"{method_text}\""),
            ));
            None
        }
    };
    let url = match &raw.url {
        None => {
            errors.push(src.error_at(&[], "missing key `url`: an http tool needs the URL to call"));
            None
        }
        Some(text) => {
            let scheme_ok = text.starts_with("https://") || text.starts_with("http://");
            if !scheme_ok {
                errors.push(src.error_at(
                    &["url"],
                    format!("expected an http:// or https:// URL, found \"{text}\""),
                ));
            }
            template(src, &["url"], text, declared, errors)
        }
    };
    let mut query = Vec::new();
    for (k, v) in raw.query.iter().flatten() {
        if let Some(t) = template(src, &["query", k], v, declared, errors) {
            query.push((k.clone(), t));
        }
    }
    let mut headers = Vec::new();
    for (k, v) in raw.headers.iter().flatten() {
        match HeaderName::try_from(k.as_str()) {
            Ok(h) => {
                if let Some(t) = template(src, &["headers", k], v, declared, errors) {
                    headers.push((h, t));
                }
            }
            Err(_) => errors.push(src.error_at(
                &["headers", k],
                format!("`{k}` is not a valid HTTP header name"),
            )),
        }
    }
    let body = match &raw.body {
        None => None,
        Some(Value::String(text)) => {
            template(src, &["body"], text, declared, errors).map(Body::Text)
        }
        Some(value) => json_template(src, &mut vec!["body".to_string()], value, declared, errors)
            .map(Body::Json),
    };
    let (auth, env_key, missing) = match &raw.auth {
        Some(a) => super::backends::build_auth(src, a, lookup, errors),
        None => (None, None, None),
    };
    let mut result_vars = declared.clone();
    result_vars.extend(["response", "text", "status"].map(str::to_string));
    let result = match &raw.result {
        Some(text) => template(src, &["result"], text, &result_vars, errors),
        None => None,
    };
    let max_response_bytes = raw.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
    if max_response_bytes == 0 {
        errors.push(src.error_at(&["max_response_bytes"], "expected at least 1, found 0"));
    }
    if errors.len() > before {
        return None;
    }
    Some(HttpTool {
        method: method?,
        url: url?,
        query,
        headers,
        body,
        auth,
        env_key,
        missing,
        result,
        fallback_to: raw.fallback_to.clone(),
        max_response_bytes: usize::try_from(max_response_bytes).unwrap_or(usize::MAX),
        timeout: timeout.unwrap_or(Duration::from_secs_f64(DEFAULT_HTTP_TIMEOUT_S)),
    })
}

fn json_template(
    src: &SourceFile,
    at: &mut Vec<String>,
    value: &Value,
    declared: &BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<JsonTemplate> {
    Some(match value {
        Value::String(text) => {
            let key: Vec<&str> = at.iter().map(String::as_str).collect();
            let trimmed = text.trim();
            let sole = trimmed.starts_with("{{")
                && trimmed.ends_with("}}")
                && trimmed[2..trimmed.len() - 2].find("{{").is_none()
                && trimmed[2..trimmed.len() - 2].find("}}").is_none();
            if sole {
                let expr = &trimmed[2..trimmed.len() - 2];
                JsonTemplate::Typed(template(
                    src,
                    &key,
                    &format!("{{{{ ({expr}) | tojson }}}}"),
                    declared,
                    errors,
                )?)
            } else if text.contains("{{") || text.contains("{%") {
                JsonTemplate::Text(template(src, &key, text, declared, errors)?)
            } else {
                JsonTemplate::Literal(value.clone())
            }
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                at.push(i.to_string());
                let t = json_template(src, at, item, declared, errors);
                at.pop();
                out.push(t?);
            }
            JsonTemplate::Array(out)
        }
        Value::Object(fields) => {
            let mut out = Vec::new();
            for (k, v) in fields {
                at.push(k.clone());
                let t = json_template(src, at, v, declared, errors);
                at.pop();
                out.push((k.clone(), t?));
            }
            JsonTemplate::Object(out)
        }
        other => JsonTemplate::Literal(other.clone()),
    })
}

fn compile_sql(
    raw: &RawTool,
    src: &SourceFile,
    declared: &BTreeSet<String>,
    timeout: Option<Duration>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<SqlTool> {
    let before = errors.len();
    let Some(env_key) = raw.database_env.clone() else {
        errors.push(src.error_at(
            &[],
            "missing key `database_env`: the variable holding sqlite:///path.db or postgres://…",
        ));
        return None;
    };
    if !super::valid_env_name(&env_key) {
        errors.push(src.error_at(
            &["database_env"],
            format!("expected an environment variable name, found \"{env_key}\""),
        ));
    }
    let url = lookup(&env_key);
    if let Some(u) = &url
        && !(u.starts_with("sqlite:")
            || u.starts_with("postgres://")
            || u.starts_with("postgresql://"))
    {
        let scheme = u.split(':').next().unwrap_or("");
        errors.push(src.error_at(
            &["database_env"],
            format!("{env_key} must hold a sqlite:// or postgres:// URL, found scheme `{scheme}`"),
        ));
    }
    let free = raw.free_query == Some(true);
    let (statement, params) = match (&raw.statement, free) {
        (Some(_), true) => {
            errors.push(src.error_at(
                &["free_query"],
                "give `statement` or `free_query = true`, not both",
            ));
            (None, Vec::new())
        }
        (None, false) => {
            errors.push(src.error_at(
                &[],
                "missing key `statement` (with :name parameters), or set `free_query = true`",
            ));
            (None, Vec::new())
        }
        (None, true) => {
            if !declared.contains("query") {
                errors.push(src.error_at(
                    &["input"],
                    "a free_query tool takes its SQL in a `query` argument: declare [input.properties.query]",
                ));
            }
            (None, Vec::new())
        }
        (Some(sql), false) => {
            let (names, _) = named_params(sql);
            for n in &names {
                if !declared.contains(n) {
                    errors.push(src.error_at(
                        &["statement"],
                        format!(
                            "parameter :{n} is not an argument; declare it under [input.properties]"
                        ),
                    ));
                }
            }
            (Some(sql.clone()), names)
        }
    };
    let max_rows = raw.max_rows.unwrap_or(DEFAULT_MAX_ROWS);
    if max_rows == 0 {
        errors.push(src.error_at(&["max_rows"], "expected at least 1, found 0"));
    }
    if errors.len() > before {
        return None;
    }
    Some(SqlTool {
        url: url.map(Secret::new),
        env_key,
        statement,
        params,
        max_rows: usize::try_from(max_rows).unwrap_or(usize::MAX),
        timeout: timeout.unwrap_or(Duration::from_secs_f64(DEFAULT_HTTP_TIMEOUT_S)),
    })
}

/// Every `fallback_to` names another http tool, and no chain comes back on itself.
pub fn check_fallbacks(
    tree: &crate::config::ConfigTree,
    tools: &BTreeMap<String, Arc<PromptTool>>,
    errors: &mut Vec<ConfigError>,
) {
    for parsed in &tree.tools {
        let Some(first) = parsed.raw.fallback_to.as_deref() else {
            continue;
        };
        let src = &parsed.source;
        match tools.get(first).map(|t| &t.kind) {
            None if tree.broken.contains(first) => {}
            None => {
                let known: Vec<&str> = tools
                    .values()
                    .filter(|t| matches!(t.kind, ToolKind::Http(_)))
                    .map(|t| t.name.as_str())
                    .collect();
                errors.push(src.error_at(
                    &["fallback_to"],
                    format!(
                        "no tool `{first}` in tools.d; http tools: {}",
                        known.join(", ")
                    ),
                ));
                continue;
            }
            Some(ToolKind::Http(_)) => {}
            Some(_) => {
                errors.push(src.error_at(
                    &["fallback_to"],
                    format!("`{first}` is not an http tool; a fallback must be one"),
                ));
                continue;
            }
        }
        let mut seen = vec![parsed.name.as_str()];
        let mut next = Some(first);
        while let Some(name) = next {
            if seen.contains(&name) {
                seen.push(name);
                errors.push(src.error_at(
                    &["fallback_to"],
                    format!("fallback cycle: {}", seen.join(" → ")),
                ));
                break;
            }
            seen.push(name);
            next = tools.get(name).and_then(|t| t.fallback_to());
        }
    }
}

fn compile_schema(
    schema: &Value,
    key: &str,
    src: &SourceFile,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<jsonschema::Validator>> {
    if !schema.is_object() {
        errors.push(src.error_at(&[key], "expected a JSON Schema table"));
        return None;
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        // Point at the offending key itself: /properties/name/type is input.properties.name.type.
        let pointer = e.instance_path().to_string();
        let mut path = vec![key.to_string()];
        path.extend(
            pointer
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace("~1", "/").replace("~0", "~")),
        );
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        errors.push(src.error_at(&path, format!("invalid JSON Schema: {e}")));
        return None;
    }
    match jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
    {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            errors.push(src.error_at(&[key], format!("invalid JSON Schema: {e}")));
            None
        }
    }
}

/// One problem with the arguments: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ArgumentIssue {
    pub path: String,
    pub message: String,
}

/// Every way `instance` breaks `validator`, as JSON pointers and messages.
pub fn issues(validator: &jsonschema::Validator, instance: &Value) -> Vec<ArgumentIssue> {
    validator
        .iter_errors(instance)
        .map(|e| ArgumentIssue {
            path: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect()
}
