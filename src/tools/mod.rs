//! Tool execution shared by MCP and HTTP: a prompt tool's arguments validated,
//! rendered, routed through the gateway and its reply checked; REST and SQL tools run
//! by their own modules; `chat_completion`'s arguments turned into a routed request.

mod http;
mod sql;

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::chat::{ChatRequest, Message, Usage};
use crate::hub::{Caller, Hub, Record};
pub use crate::registry::tools::{
    ArgumentIssue, BUILTIN_NAMES, MAX_ARGUMENT_BYTES, PromptArgumentInfo, PromptTool, issues,
};
use crate::registry::{Registry, ToolKind};
use crate::route::{self, RouteError};

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
    /// A REST or SQL tool failed: which tool and why (keys scrubbed).
    #[error("{0}")]
    Failed(String),
    #[error("the reply does not match the output schema: {}", describe(.issues))]
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
    let ToolKind::Prompt { system, prompt } = &tool.kind else {
        return Err(ToolError::Render(format!(
            "`{}` calls a service; it has no prompt",
            tool.name
        )));
    };
    let system = system
        .as_ref()
        .map(|t| t.render(args))
        .transpose()
        .map_err(ToolError::Render)?
        .filter(|s| !s.trim().is_empty());
    let prompt = prompt.render(args).map_err(ToolError::Render)?;
    Ok((system, prompt))
}

/// Runs a tool: validate, render, route through the gateway, and check the reply
/// against the output schema when there is one.
pub async fn run(
    hub: &Hub,
    registry: &Registry,
    tool: &PromptTool,
    args: &Value,
    call: &Call,
) -> Result<ToolOutput, ToolError> {
    match &tool.kind {
        ToolKind::Http(_) => return http::run(registry, tool, args).await,
        ToolKind::Sql(sql) => {
            validate_arguments(tool, args)?;
            return sql::run(&tool.name, sql, args, tool.output.as_deref()).await;
        }
        ToolKind::Prompt { .. } => {}
    }
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
        text: None,
    };
    let mut output = complete(hub, registry, &request, tool.timeout, call).await?;
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

/// What a tool call may cost at most, for a budget's reservation: a prompt tool's model
/// and `max_tokens`, or `chat_completion`'s own arguments.
pub fn estimate(registry: &Registry, tool: Option<&PromptTool>, args: &Value) -> f64 {
    if tool.is_some_and(|t| !matches!(t.kind, ToolKind::Prompt { .. })) {
        return 0.0;
    }
    let (model, max_tokens, template) = match tool {
        // A prompt's templates are rarely longer than this; the reservation only errs high.
        Some(t) => (t.model.clone(), t.max_tokens, 4_096),
        None => (
            args.get("model")
                .and_then(Value::as_str)
                .map(str::to_string),
            args.get("max_tokens").and_then(Value::as_u64),
            0,
        ),
    };
    let Some(model) = model.or_else(|| registry.settings.default_model.clone()) else {
        return 0.0;
    };
    let mut extra = Map::new();
    if let Some(m) = max_tokens {
        extra.insert("max_tokens".into(), json!(m));
    }
    let request = ChatRequest {
        model,
        messages: Vec::new(),
        stream: None,
        stream_options: None,
        extra,
        text: None,
    };
    let bytes = serde_json::to_vec(args).map_or(0, |v| v.len());
    crate::limits::estimate(registry, &request, bytes + template)
}

/// Who called a tool and through which surface, for the ledger.
#[derive(Debug, Clone)]
pub struct Call {
    pub caller: Caller,
    /// `mcp_chat`, `mcp_tool` or `http_tool`.
    pub surface: &'static str,
}

/// Takes `project_id` and `agent_id` out of tool arguments (MCP's attribution, as the
/// LLM Gateway MCP server has it); a prompt tool's own schema never sees them.
pub fn caller_from_args(args: &mut Value, fallback: Caller) -> Caller {
    let mut take = |key: &str| match args.as_object_mut().and_then(|o| o.remove(key)) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let project = take("project_id");
    let agent = take("agent_id");
    if project.is_none() && agent.is_none() {
        return fallback;
    }
    let mut caller = Caller::new(
        project.as_deref().or(Some(fallback.project.as_str())),
        agent.as_deref().or(Some(fallback.agent.as_str())),
    );
    caller.key = fallback.key;
    caller
}

/// Sends a chat request through routing and reads the reply text and usage; the
/// outcome goes to the ledger either way.
pub async fn complete(
    hub: &Hub,
    registry: &Registry,
    request: &ChatRequest,
    timeout: Option<Duration>,
    call: &Call,
) -> Result<ToolOutput, ToolError> {
    let started = std::time::Instant::now();
    let routed = route::chat(hub, registry, request);
    let outcome = match timeout {
        Some(t) => tokio::time::timeout(t, routed)
            .await
            .map_err(|_| ToolError::Timeout(t))
            .and_then(|r| r.map_err(ToolError::Route)),
        None => routed.await.map_err(ToolError::Route),
    };
    let record =
        |provider: String, model: String, status: u16, tries: Vec<(String, &'static str)>| Record {
            surface: call.surface,
            caller: call.caller.clone(),
            requested: request.model.clone(),
            provider,
            model,
            status,
            attempts: u32::try_from(tries.len()).unwrap_or(u32::MAX),
            streamed: false,
            usage: Usage::default(),
            latency: started.elapsed(),
            ttft: None,
            error: None,
            tries,
        };
    let answer = match outcome {
        Ok(answer) => answer,
        Err(e) => {
            let (provider, model, status, tries) = match &e {
                ToolError::Route(r) => {
                    let (p, m) = r.last_target().unwrap_or_default();
                    (p.to_string(), m.to_string(), r.status(), r.tries())
                }
                _ => (String::new(), String::new(), 504, Vec::new()),
            };
            let mut row = record(provider, model, status, tries);
            row.error = Some(e.to_string());
            hub.record(registry, row);
            return Err(e);
        }
    };
    let mut row = record(
        answer.target.provider.clone(),
        answer.target.model.clone(),
        200,
        answer.tries(),
    );
    row.usage = answer.value.usage;
    hub.record(registry, row);
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

/// What to count: `{model, text}` or `{model, messages}` (OpenAI-style), as both
/// `POST /v1/count_tokens` and MCP's `count_tokens` take it.
pub fn count_request(args: &Value) -> Result<(ChatRequest, Option<String>), ArgumentIssue> {
    let issue = |path: &str, message: String| ArgumentIssue {
        path: path.to_string(),
        message,
    };
    let model = match args.get("model") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(m)) => m.clone(),
        Some(other) => {
            return Err(issue(
                "/model",
                format!("expected a string, found {}", crate::chat::found(other)),
            ));
        }
    };
    match (args.get("text"), args.get("messages")) {
        (Some(Value::String(text)), None) => Ok((
            ChatRequest {
                model,
                messages: vec![Message::text("user", text.clone())],
                stream: None,
                stream_options: None,
                extra: Map::new(),
                text: None,
            },
            Some(text.clone()),
        )),
        (Some(other), None) => Err(issue(
            "/text",
            format!("expected a string, found {}", crate::chat::found(other)),
        )),
        (None, Some(_)) => {
            let mut body = args.clone();
            if let Some(o) = body.as_object_mut() {
                o.insert("model".into(), json!(model));
            }
            let request: ChatRequest = serde_json::from_value(body.clone()).map_err(|_| {
                let e = crate::chat::shape_error(&body);
                issue(&format!("/{}", e.path.replace('.', "/")), e.message)
            })?;
            request
                .validate()
                .map_err(|e| issue(&format!("/{}", e.path), e.message))?;
            Ok((request, None))
        }
        (Some(_), Some(_)) => Err(issue("", "give `text` or `messages`, not both".into())),
        (None, None) => Err(issue(
            "",
            "expected `text` (a string) or `messages` (chat messages) to count".into(),
        )),
    }
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
                "response_format": {"type": "object", "description": "As in the OpenAI API: {\"type\": \"json_object\"} or {\"type\": \"json_schema\", \"json_schema\": {...}}."},
                "project_id": {"type": "string", "description": "The project this call's usage and cost are attributed to (default: `default`)."},
                "agent_id": {"type": "string", "description": "The agent this call's usage is attributed to."}
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
    call: &Call,
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
        text: None,
    };
    complete(hub, registry, &request, None, call).await
}
