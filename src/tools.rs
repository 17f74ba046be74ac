//! Prompt tools: compiled from tools.d at load (schemas, templates), and run the same
//! way for MCP and HTTP: validate arguments → render → route → validate the reply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::adapters::{ChatRequest, Message};
use crate::config::{ConfigError, Parsed, RawTool};
use crate::hub::Hub;
use crate::registry::{Registry, Status};
use crate::route::{self, RouteError};
use crate::template::Template;

/// Names the built-in MCP tools take; a tools.d file may not reuse them.
pub const BUILTIN_NAMES: [&str; 5] = [
    "chat_completion",
    "list_models",
    "get_model_info",
    "health_check",
    "list_active_tools",
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
    pub system: Option<Template>,
    pub prompt: Template,
    pub input_schema: Arc<Map<String, Value>>,
    input: Arc<jsonschema::Validator>,
    pub output_schema: Option<Arc<Map<String, Value>>>,
    output: Option<Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for PromptTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
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

    /// Whether the tool's model chain has an active provider; if not, why.
    pub fn availability(&self, registry: &Registry) -> Result<(), String> {
        let address = match self
            .model
            .as_deref()
            .or(registry.settings.default_model.as_deref())
        {
            Some(a) => a,
            None => return Err("no model set and routing.default_model is not set".into()),
        };
        let chain = route::chain(registry, address).map_err(|e| e.to_string())?;
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

    /// Environment variable names the tool's providers need, with whether each is set.
    pub fn env_keys(&self, registry: &Registry) -> Vec<(String, bool)> {
        let address = self
            .model
            .as_deref()
            .or(registry.settings.default_model.as_deref());
        let chain = address
            .and_then(|a| route::chain(registry, a).ok())
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
    errors: &mut Vec<ConfigError>,
) -> Option<PromptTool> {
    let raw = &parsed.raw;
    let src = &parsed.source;
    let before = errors.len();
    let name = parsed.name.clone();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
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
    let timeout = match raw.timeout_s {
        Some(t) if t.is_finite() && t > 0.0 && t < 86_400.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            errors.push(src.error_at(
                &["timeout_s"],
                format!("expected seconds above 0 and below 86400, found {t}"),
            ));
            None
        }
        None => None,
    };

    let input_schema = raw
        .input
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    let input = compile_schema(&input_schema, "input", src, errors);
    if input.is_some() && input_schema.get("type").and_then(Value::as_str) != Some("object") {
        errors.push(src.error_at(
            &["input", "type"],
            "expected `type = \"object\"`: tool arguments are an object",
        ));
    }
    let output_schema = raw.output.clone();
    let output = output_schema
        .as_ref()
        .and_then(|s| compile_schema(s, "output", src, errors));

    let declared: BTreeSet<String> = input_schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let mut templates = Vec::new();
    for (key, text) in [("system", &raw.system), ("prompt", &raw.prompt)] {
        let Some(text) = text else {
            if key == "prompt" {
                errors.push(src.error_at(
                    &[],
                    "missing key `prompt`: a prompt tool needs a prompt template",
                ));
            }
            templates.push(None);
            continue;
        };
        match Template::compile_optional(text, &declared) {
            Ok(t) => templates.push(Some(t)),
            Err(e) => {
                let message = if e.message.contains("undeclared variable") {
                    format!("{} (declare it under [input.properties])", e.message)
                } else {
                    e.message
                };
                errors.push(src.error_at(&[key], message));
                templates.push(None);
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    let mut templates = templates.into_iter();
    let system = templates.next().flatten();
    let prompt = templates.next().flatten()?;
    Some(PromptTool {
        name,
        description,
        model: raw.model.clone(),
        temperature: raw.temperature,
        max_tokens: raw.max_tokens,
        timeout,
        system,
        prompt,
        input_schema: Arc::new(input_schema.as_object().cloned().unwrap_or_default()),
        input: input?,
        output_schema: output_schema
            .and_then(|s| s.as_object().cloned())
            .map(Arc::new),
        output,
    })
}

fn compile_schema(
    schema: &Value,
    key: &str,
    src: &crate::config::SourceFile,
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

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("invalid arguments: {}", describe(.0))]
    InvalidArguments(Vec<ArgumentIssue>),
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot render the prompt: {0}")]
    Render(String),
    #[error("{0}")]
    Route(RouteError),
    #[error("no answer within {}s (the tool's timeout_s)", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("the model's reply does not match the output schema: {}", describe(.issues))]
    InvalidOutput {
        reply: String,
        issues: Vec<ArgumentIssue>,
    },
}

fn describe(issues: &[ArgumentIssue]) -> String {
    issues
        .iter()
        .map(|i| {
            format!(
                "{}: {}",
                if i.path.is_empty() { "(root)" } else { &i.path },
                i.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a run produced: the reply, and who answered with what usage.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub text: String,
    pub structured: Option<Value>,
    pub provider: String,
    pub model: String,
    pub usage: Value,
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

/// Checks the arguments' size and schema.
pub fn validate_arguments(tool: &PromptTool, args: &Value) -> Result<(), ToolError> {
    let size = serde_json::to_vec(args).map_or(0, |v| v.len());
    if size > MAX_ARGUMENT_BYTES {
        return Err(ToolError::InvalidArguments(vec![ArgumentIssue {
            path: String::new(),
            message: format!("arguments are {size} bytes, over the limit of {MAX_ARGUMENT_BYTES}"),
        }]));
    }
    let found = issues(&tool.input, args);
    if found.is_empty() {
        Ok(())
    } else {
        Err(ToolError::InvalidArguments(found))
    }
}

/// The system and user texts for valid arguments; also what `prompts/get` returns.
pub fn render(tool: &PromptTool, args: &Value) -> Result<(Option<String>, String), ToolError> {
    validate_arguments(tool, args)?;
    let system = tool
        .system
        .as_ref()
        .map(|t| t.render(args))
        .transpose()
        .map_err(ToolError::Render)?
        .filter(|s| !s.trim().is_empty());
    let prompt = tool.prompt.render(args).map_err(ToolError::Render)?;
    Ok((system, prompt))
}

/// Runs a tool: validate, render, route through the gateway, and check the reply
/// against the output schema when there is one.
pub async fn run(
    hub: &Hub,
    registry: &Registry,
    tool: &PromptTool,
    args: &Value,
) -> Result<ToolOutput, ToolError> {
    let (system, prompt) = render(tool, args)?;
    tool.availability(registry)
        .map_err(ToolError::Unavailable)?;
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(Message::text("system", system));
    }
    messages.push(Message::text("user", prompt));
    let mut extra = Map::new();
    if let Some(t) = tool.temperature {
        extra.insert("temperature".into(), json!(t));
    }
    if let Some(m) = tool.max_tokens {
        extra.insert("max_tokens".into(), json!(m));
    }
    if let Some(schema) = &tool.output_schema {
        extra.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {"name": tool.name, "schema": Value::Object((**schema).clone())}}),
        );
    }
    let request = ChatRequest {
        model: tool.model.clone().unwrap_or_default(),
        messages,
        stream: None,
        stream_options: None,
        extra,
    };
    let mut output = complete(hub, registry, &request, tool.timeout).await?;
    if let Some(validator) = &tool.output {
        let parsed: Value = match serde_json::from_str(strip_fences(&output.text)) {
            Ok(v) => v,
            Err(e) => {
                return Err(ToolError::InvalidOutput {
                    reply: output.text,
                    issues: vec![ArgumentIssue {
                        path: String::new(),
                        message: format!("not JSON: {e}"),
                    }],
                });
            }
        };
        let found = issues(validator, &parsed);
        if !found.is_empty() {
            return Err(ToolError::InvalidOutput {
                reply: output.text,
                issues: found,
            });
        }
        output.structured = Some(parsed);
    }
    Ok(output)
}

/// Models asked for JSON sometimes wrap it in a Markdown fence anyway.
fn strip_fences(text: &str) -> &str {
    let t = text.trim();
    t.strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .map_or(t, str::trim)
}

/// Sends a chat request through routing and reads the reply text and usage.
pub async fn complete(
    hub: &Hub,
    registry: &Registry,
    request: &ChatRequest,
    timeout: Option<Duration>,
) -> Result<ToolOutput, ToolError> {
    let call = route::chat(hub, registry, request);
    let answer = match timeout {
        Some(t) => tokio::time::timeout(t, call)
            .await
            .map_err(|_| ToolError::Timeout(t))?,
        None => call.await,
    }
    .map_err(ToolError::Route)?;
    let body: Value = serde_json::from_slice(&answer.value.body).unwrap_or(Value::Null);
    let message = &body["choices"][0]["message"];
    let mut text = message["content"].as_str().unwrap_or_default().to_string();
    if text.is_empty()
        && let Some(calls) = message.get("tool_calls")
    {
        text = calls.to_string();
    }
    Ok(ToolOutput {
        text,
        structured: None,
        provider: answer.target.provider,
        model: body["model"]
            .as_str()
            .map_or(answer.target.model, str::to_string),
        usage: body.get("usage").cloned().unwrap_or(Value::Null),
    })
}

/// The input schema of `chat_completion`, compiled once.
pub fn chat_completion_schema() -> &'static (Map<String, Value>, jsonschema::Validator) {
    static SCHEMA: OnceLock<(Map<String, Value>, jsonschema::Validator)> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = json!({
            "type": "object",
            "properties": {
                "model": {"type": "string", "description": "A model address: provider/model, a group, a provider, or a model id. Default: the gateway's default model."},
                "prompt": {"type": "string", "description": "A single user message; use this or `messages`."},
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "description": "OpenAI-style chat messages.",
                    "items": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
                            "content": {"type": "string"}
                        }
                    }
                },
                "system": {"type": "string", "description": "A system prompt put before the messages."},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "max_tokens": {"type": "integer", "minimum": 1},
                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                "stop": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                "response_format": {"type": "object", "description": "As in the OpenAI API: {\"type\": \"json_object\"} or {\"type\": \"json_schema\", \"json_schema\": {...}}."}
            },
            "additionalProperties": false
        });
        let validator = jsonschema::options()
            .build(&schema)
            .unwrap_or_else(|e| unreachable!("the built-in schema is valid: {e}"));
        (schema.as_object().cloned().unwrap_or_default(), validator)
    })
}

/// Runs `chat_completion`'s arguments through routing.
pub async fn chat_completion(
    hub: &Hub,
    registry: &Registry,
    args: &Value,
) -> Result<ToolOutput, ToolError> {
    let (_, validator) = chat_completion_schema();
    let mut found = issues(validator, args);
    match (args.get("prompt").is_some(), args.get("messages").is_some()) {
        (false, false) => found.push(ArgumentIssue {
            path: String::new(),
            message: "expected `prompt` (one user message) or `messages`".into(),
        }),
        (true, true) => found.push(ArgumentIssue {
            path: String::new(),
            message: "give `prompt` or `messages`, not both".into(),
        }),
        _ => {}
    }
    if !found.is_empty() {
        return Err(ToolError::InvalidArguments(found));
    }
    let mut messages = Vec::new();
    if let Some(system) = args["system"].as_str() {
        messages.push(Message::text("system", system.to_string()));
    }
    if let Some(prompt) = args["prompt"].as_str() {
        messages.push(Message::text("user", prompt.to_string()));
    }
    for m in args["messages"].as_array().into_iter().flatten() {
        messages.push(Message::text(
            m["role"].as_str().unwrap_or("user"),
            m["content"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let mut extra = Map::new();
    for key in [
        "temperature",
        "max_tokens",
        "top_p",
        "stop",
        "response_format",
    ] {
        if let Some(v) = args.get(key) {
            extra.insert(key.into(), v.clone());
        }
    }
    let request = ChatRequest {
        model: args["model"].as_str().unwrap_or_default().to_string(),
        messages,
        stream: None,
        stream_options: None,
        extra,
    };
    complete(hub, registry, &request, None).await
}
