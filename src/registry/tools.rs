//! Prompt tools as snapshot data: tools.d files compiled at load into validated JSON
//! Schemas and templates, with what the snapshot alone can say about them (their
//! arguments, whether their model chain is usable, the env keys it needs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Registry, Status, is_name, positive_duration};
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
    pub system: Option<Template>,
    pub prompt: Template,
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

    /// Environment variable names the tool's providers need, with whether each is set.
    pub fn env_keys(&self, registry: &Registry) -> Vec<(String, bool)> {
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
