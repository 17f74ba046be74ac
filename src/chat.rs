//! The canonical chat shapes every layer shares: the OpenAI chat-completions request
//! (with a pass-through map for fields llmhub does not model) and its accessors, the
//! reply and chunk stream an adapter returns, and `ProviderError`, which knows what is
//! retryable.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::SystemPromptMode;

/// A chat-completions request. Fields llmhub does not model stay in `extra` and
/// reach OpenAI-compatible upstreams unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The client's JSON text this request was read from, while the fields still say
    /// what it says (the model id and the stream fields aside, which every adapter sets
    /// itself): OpenAI-compatible upstreams get this text with just those replaced (and
    /// the messages, when a system prompt changed them), so a long context is not
    /// escaped and written again. A change to any other field clears it.
    #[serde(skip)]
    pub text: Option<Bytes>,
}

impl ChatRequest {
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }

    /// Adds the provider's system prompt, as its file says: merged into the first
    /// system message, or prepended as a message of its own.
    pub fn apply_system_prompt(&mut self, text: String, mode: SystemPromptMode) {
        self.text = None;
        let existing = self
            .messages
            .iter_mut()
            .find(|m| m.role == "system" || m.role == "developer");
        match (mode, existing) {
            (SystemPromptMode::Merge, Some(message)) => {
                message.content = Some(match message.content.take() {
                    Some(Value::String(s)) if !s.is_empty() => {
                        Value::String(format!("{text}\n\n{s}"))
                    }
                    Some(Value::Array(mut parts)) => {
                        parts.insert(0, serde_json::json!({"type": "text", "text": text}));
                        Value::Array(parts)
                    }
                    _ => Value::String(text),
                });
            }
            _ => self.messages.insert(0, Message::text("system", text)),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn text(role: &str, text: String) -> Self {
        Self {
            role: role.to_string(),
            content: Some(Value::String(text)),
            extra: Map::new(),
        }
    }

    /// The text of the message: a string content, or its text parts joined.
    pub fn text_content(&self) -> String {
        match &self.content {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}

/// A non-streaming reply: the chat.completion JSON as the client will receive it, and
/// its `usage`, read once where the body was made or received.
#[derive(Debug, Clone)]
pub struct Completion {
    pub body: Bytes,
    pub usage: Usage,
}

impl Completion {
    /// A reply an adapter wrote in OpenAI's shape.
    pub fn of_value(reply: &Value) -> Completion {
        Completion {
            body: Bytes::from(reply.to_string()),
            usage: reply
                .get("usage")
                .and_then(Usage::from_openai)
                .unwrap_or_default(),
        }
    }

    /// An upstream's `chat.completion` passed on byte for byte: one pass checks that it is
    /// one (a 200 carrying a proxy's HTML page must fall back, not reach the client) and
    /// finds its usage, without building the rest.
    pub fn passed_through(body: Bytes) -> Result<Completion, serde_json::Error> {
        #[derive(Deserialize)]
        struct Shape<'a> {
            #[allow(dead_code)]
            choices: serde::de::IgnoredAny,
            #[serde(default, borrow)]
            usage: Option<&'a serde_json::value::RawValue>,
        }
        // serde reads a struct from an array too; a completion is an object.
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(serde::de::Error::custom("the body is not a JSON object"));
        }
        let shape: Shape<'_> = serde_json::from_slice(&body)?;
        let usage = shape.usage.and_then(Usage::of_raw).unwrap_or_default();
        Ok(Completion { body, usage })
    }
}

/// The JSON text of each `chat.completion.chunk`, in order; `[DONE]` is not included.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send>>;

/// What went wrong talking to a provider.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("no response within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("upstream answered {status}: {}", summary(.body))]
    Status {
        status: u16,
        body: Bytes,
        retry_after: Option<Duration>,
        /// The upstream's own `x-should-retry` verdict, which overrides the status rule.
        should_retry: Option<bool>,
    },
    #[error("invalid response from upstream: {0}")]
    Protocol(String),
    /// The upstream's own error event inside a stream, in OpenAI's shape.
    #[error("upstream error event: {}", summary(.body))]
    StreamError { body: Bytes },
    /// The request is malformed for this API; the client has to fix it.
    #[error("{0}")]
    BadRequest(String),
    /// This provider cannot honour a feature the request asks for; another provider may.
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Request(String),
}

impl ProviderError {
    /// Connect errors, timeouts, 408, 429, 5xx and broken responses may succeed elsewhere or later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Timeout(_) | Self::Protocol(_) | Self::StreamError { .. } => {
                true
            }
            Self::Status {
                should_retry: Some(verdict),
                ..
            } => *verdict,
            Self::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            Self::Request(_) | Self::BadRequest(_) | Self::Unsupported(_) => false,
        }
    }

    /// The same error with `secret` removed from every text the upstream sent back.
    pub fn scrubbed(self, secret: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        let text = |s: String| {
            if s.contains(secret) {
                s.replace(secret, REDACTED)
            } else {
                s
            }
        };
        let bytes = |b: Bytes| scrub_bytes(b, secret);
        match self {
            Self::Connect(s) => Self::Connect(text(s)),
            Self::Protocol(s) => Self::Protocol(text(s)),
            Self::BadRequest(s) => Self::BadRequest(text(s)),
            Self::Unsupported(s) => Self::Unsupported(text(s)),
            Self::Request(s) => Self::Request(text(s)),
            Self::StreamError { body } => Self::StreamError { body: bytes(body) },
            Self::Status {
                status,
                body,
                retry_after,
                should_retry,
            } => Self::Status {
                status,
                body: bytes(body),
                retry_after,
                should_retry,
            },
            e @ Self::Timeout(_) => e,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What a provider key is replaced with when an upstream echoes it.
pub const REDACTED: &str = "[redacted]";

/// `body` with every occurrence of `secret` replaced by [`REDACTED`].
pub fn scrub_bytes(body: Bytes, secret: &str) -> Bytes {
    if secret.is_empty() || !body.windows(secret.len()).any(|w| w == secret.as_bytes()) {
        return body;
    }
    Bytes::from(String::from_utf8_lossy(&body).replace(secret, REDACTED))
}

/// The upstream's own error message when the body is OpenAI-shaped, else its first 200 characters.
fn summary(body: &Bytes) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(msg) = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
    {
        return msg.to_string();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text.to_string()
    }
}

/// What `response_format` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { name: String, schema: Value },
}

impl ChatRequest {
    pub fn param(&self, key: &str) -> Option<&Value> {
        self.extra.get(key).filter(|v| !v.is_null())
    }

    /// `max_completion_tokens`, else `max_tokens`.
    pub fn max_tokens(&self) -> Option<u64> {
        self.param("max_completion_tokens")
            .or_else(|| self.param("max_tokens"))
            .and_then(Value::as_u64)
    }

    /// `stop` as a list, whether the client sent a string or an array.
    pub fn stop(&self) -> Vec<String> {
        match self.param("stop") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn response_format(&self) -> Result<ResponseFormat, ProviderError> {
        let Some(rf) = self.param("response_format") else {
            return Ok(ResponseFormat::Text);
        };
        let bad = |what: &str| ProviderError::BadRequest(format!("response_format: {what}"));
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => Ok(ResponseFormat::Text),
            Some("json_object") => Ok(ResponseFormat::JsonObject),
            Some("json_schema") => {
                let js = rf
                    .get("json_schema")
                    .ok_or_else(|| bad("expected a `json_schema` object"))?;
                let schema = js
                    .get("schema")
                    .cloned()
                    .ok_or_else(|| bad("expected `json_schema.schema`"))?;
                let name = js
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_string();
                Ok(ResponseFormat::JsonSchema { name, schema })
            }
            Some(other) => Err(bad(&format!(
                "expected type \"text\", \"json_object\" or \"json_schema\", found \"{other}\""
            ))),
            None => Err(bad("expected an object with a `type`")),
        }
    }

    /// The system and developer messages' text, joined: the separate field of APIs
    /// that have no system role.
    pub fn system_text(&self) -> Option<String> {
        let parts: Vec<String> = self
            .messages
            .iter()
            .filter(|m| m.role == "system" || m.role == "developer")
            .map(Message::text_content)
            .filter(|t| !t.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }
}

/// A function tool from the request's `tools`.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub description: Option<Value>,
    pub parameters: Option<Value>,
}

/// What `tool_choice` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

impl ChatRequest {
    /// The request's function tools; `api` names the provider in errors about other kinds.
    pub fn functions(&self, api: &str) -> Result<Vec<Function>, ProviderError> {
        let mut out = Vec::new();
        for (i, tool) in self
            .param("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ProviderError::Unsupported(format!(
                    "tools[{i}]: only `function` tools can be sent to {api}"
                )));
            }
            let f = tool.get("function").ok_or_else(|| {
                ProviderError::BadRequest(format!("tools[{i}]: expected a `function` object"))
            })?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                ProviderError::BadRequest(format!("tools[{i}].function: expected a `name`"))
            })?;
            out.push(Function {
                name: name.to_string(),
                description: f.get("description").cloned(),
                parameters: f.get("parameters").cloned(),
            });
        }
        Ok(out)
    }

    pub fn tool_choice(&self) -> Result<Option<ToolChoice>, ProviderError> {
        let Some(choice) = self.param("tool_choice") else {
            return Ok(None);
        };
        Ok(Some(match choice {
            Value::String(s) if s == "auto" => ToolChoice::Auto,
            Value::String(s) if s == "none" => ToolChoice::None,
            Value::String(s) if s == "required" => ToolChoice::Required,
            Value::Object(o) => match o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            {
                Some(name) => ToolChoice::Function(name.to_string()),
                None => {
                    return Err(ProviderError::BadRequest(
                        "tool_choice: expected `function.name`".into(),
                    ));
                }
            },
            other => {
                return Err(ProviderError::BadRequest(format!(
                    "tool_choice: expected \"auto\", \"none\", \"required\" or a function, found {other}"
                )));
            }
        }))
    }
}

/// Token counts of one answer, from OpenAI's `usage` object (which every adapter
/// produces): `input` includes cached and cache-written tokens, `output` includes
/// reasoning tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

impl Usage {
    pub fn from_openai(usage: &Value) -> Option<Usage> {
        if !usage.is_object() {
            return None;
        }
        let n = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
        let detail = |object: &str, key: &str| {
            usage
                .get(object)
                .and_then(|d| d.get(key))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Some(Usage {
            input: n("prompt_tokens"),
            cached: detail("prompt_tokens_details", "cached_tokens"),
            cache_write: detail("prompt_tokens_details", "cache_creation_tokens"),
            output: n("completion_tokens"),
            reasoning: detail("completion_tokens_details", "reasoning_tokens"),
        })
    }

    /// A `usage` object as JSON text: read into counts directly when it has the usual
    /// shape (no tree of values on every answer), as `from_openai` reads it otherwise.
    fn of_raw(raw: &serde_json::value::RawValue) -> Option<Usage> {
        #[derive(Deserialize)]
        struct Wire {
            prompt_tokens: Option<u64>,
            completion_tokens: Option<u64>,
            prompt_tokens_details: Option<Prompt>,
            completion_tokens_details: Option<Completion>,
        }
        #[derive(Deserialize)]
        struct Prompt {
            cached_tokens: Option<u64>,
            cache_creation_tokens: Option<u64>,
        }
        #[derive(Deserialize)]
        struct Completion {
            reasoning_tokens: Option<u64>,
        }
        match serde_json::from_str::<Wire>(raw.get()) {
            Ok(w) => {
                let prompt = w.prompt_tokens_details.as_ref();
                Some(Usage {
                    input: w.prompt_tokens.unwrap_or(0),
                    cached: prompt.and_then(|p| p.cached_tokens).unwrap_or(0),
                    cache_write: prompt.and_then(|p| p.cache_creation_tokens).unwrap_or(0),
                    output: w.completion_tokens.unwrap_or(0),
                    reasoning: w
                        .completion_tokens_details
                        .and_then(|c| c.reasoning_tokens)
                        .unwrap_or(0),
                })
            }
            // Counts written as floats, strings or other oddities: read what can be read.
            Err(_) => Usage::from_openai(&serde_json::from_str(raw.get()).ok()?),
        }
    }
}

/// A request field that is present but unusable: where (a path such as
/// `messages[2].role`) and what was expected and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The top-level request field at fault, for OpenAI's `param`.
    pub fn param(&self) -> &str {
        self.path.split(['.', '[']).next().unwrap_or("")
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A JSON value named the way a person would: `the string "100"`, `the number -5`.
pub fn found(v: &Value) -> String {
    let text = v.to_string();
    let text = if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    };
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(_) => format!("the boolean {text}"),
        Value::Number(_) => format!("the number {text}"),
        Value::String(_) => format!("the string {text}"),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Roles a chat message may have.
pub const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

impl ChatRequest {
    /// Checks the fields llmhub reads for type and range, so no adapter has to guess
    /// what an invalid value meant; fields it does not model pass through unchecked.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.messages.is_empty() {
            return Err(FieldError::new(
                "messages",
                "expected at least one message, found an empty list",
            ));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(FieldError::new(
                    format!("messages[{i}].role"),
                    format!("expected one of {}, found \"{}\"", ROLES.join(", "), m.role),
                ));
            }
            if let Some(c) = &m.content
                && !matches!(c, Value::String(_) | Value::Array(_) | Value::Null)
            {
                return Err(FieldError::new(
                    format!("messages[{i}].content"),
                    format!(
                        "expected a string or an array of content parts, found {}",
                        found(c)
                    ),
                ));
            }
        }
        for key in ["max_tokens", "max_completion_tokens", "n"] {
            if let Some(v) = self.param(key)
                && v.as_u64().is_none_or(|n| n == 0 || n > u64::from(u32::MAX))
            {
                return Err(FieldError::new(
                    key,
                    format!("expected a whole number of at least 1, found {}", found(v)),
                ));
            }
        }
        for (key, max) in [("temperature", 2.0), ("top_p", 1.0)] {
            if let Some(v) = self.param(key)
                && v.as_f64().is_none_or(|x| !(0.0..=max).contains(&x))
            {
                return Err(FieldError::new(
                    key,
                    format!("expected a number from 0 to {max}, found {}", found(v)),
                ));
            }
        }
        if let Some(v) = self.param("stop") {
            let ok = match v {
                Value::String(_) => true,
                Value::Array(items) => items.iter().all(Value::is_string),
                _ => false,
            };
            if !ok {
                return Err(FieldError::new(
                    "stop",
                    format!(
                        "expected a string or an array of strings, found {}",
                        found(v)
                    ),
                ));
            }
        }
        if let Some(v) = self.param("tools") {
            let Some(tools) = v.as_array() else {
                return Err(FieldError::new(
                    "tools",
                    format!("expected an array of tools, found {}", found(v)),
                ));
            };
            for (i, t) in tools.iter().enumerate() {
                let kind = t.get("type").and_then(Value::as_str);
                if kind.is_none() {
                    return Err(FieldError::new(
                        format!("tools[{i}]"),
                        "expected an object with a string `type` such as \"function\"",
                    ));
                }
                if kind == Some("function")
                    && t.pointer("/function/name")
                        .and_then(Value::as_str)
                        .is_none()
                {
                    return Err(FieldError::new(
                        format!("tools[{i}].function.name"),
                        "expected the function's name as a string",
                    ));
                }
            }
        }
        if self.param("tool_choice").is_some() {
            self.tool_choice()
                .map_err(|e| FieldError::new("tool_choice", strip_prefix(&e, "tool_choice: ")))?;
        }
        if let Some(v) = self.param("response_format") {
            if !v.is_object() {
                return Err(FieldError::new(
                    "response_format",
                    format!("expected an object with a `type`, found {}", found(v)),
                ));
            }
            self.response_format().map_err(|e| {
                FieldError::new("response_format", strip_prefix(&e, "response_format: "))
            })?;
        }
        Ok(())
    }
}

fn strip_prefix(e: &ProviderError, prefix: &str) -> String {
    let text = e.to_string();
    text.strip_prefix(prefix)
        .map_or(text.clone(), str::to_string)
}

/// Where a body that does not deserialise as a chat request goes wrong, in the user's
/// terms. Only the slow path of a failed parse calls this.
pub fn shape_error(body: &Value) -> FieldError {
    let Some(object) = body.as_object() else {
        return FieldError::new(
            "",
            format!(
                "expected a JSON object with `model` and `messages`, found {}",
                found(body)
            ),
        );
    };
    if let Some(v) = object.get("model")
        && !v.is_string()
    {
        return FieldError::new("model", format!("expected a string, found {}", found(v)));
    }
    let Some(messages) = object.get("messages") else {
        return FieldError::new("messages", "missing: expected an array of messages");
    };
    let Some(messages) = messages.as_array() else {
        return FieldError::new(
            "messages",
            format!("expected an array of messages, found {}", found(messages)),
        );
    };
    for (i, m) in messages.iter().enumerate() {
        let Some(m) = m.as_object() else {
            return FieldError::new(
                format!("messages[{i}]"),
                format!(
                    "expected an object with `role` and `content`, found {}",
                    found(m)
                ),
            );
        };
        match m.get("role") {
            None => {
                return FieldError::new(format!("messages[{i}].role"), "missing: expected a role");
            }
            Some(r) if !r.is_string() => {
                return FieldError::new(
                    format!("messages[{i}].role"),
                    format!("expected a string, found {}", found(r)),
                );
            }
            _ => {}
        }
    }
    if let Some(v) = object.get("stream")
        && !v.is_boolean()
        && !v.is_null()
    {
        return FieldError::new(
            "stream",
            format!("expected true or false, found {}", found(v)),
        );
    }
    if let Some(v) = object.get("stream_options")
        && !v.is_object()
        && !v.is_null()
    {
        return FieldError::new(
            "stream_options",
            format!("expected an object, found {}", found(v)),
        );
    }
    if let Some(v) = body.pointer("/stream_options/include_usage")
        && !v.is_boolean()
        && !v.is_null()
    {
        return FieldError::new(
            "stream_options.include_usage",
            format!("expected true or false, found {}", found(v)),
        );
    }
    FieldError::new(
        "",
        "the body does not match the chat completions request format",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Value) -> ChatRequest {
        serde_json::from_value(json).expect("request")
    }

    #[test]
    fn a_passed_through_reply_keeps_its_bytes_and_yields_its_usage() {
        let body = r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4,"cache_creation_tokens":2},"completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":0},"total_tokens":17}}"#;
        let c = Completion::passed_through(Bytes::from(body)).expect("a completion");
        assert_eq!(c.body, body.as_bytes());
        let expected = Usage {
            input: 12,
            cached: 4,
            cache_write: 2,
            output: 5,
            reasoning: 3,
        };
        assert_eq!(c.usage, expected);
        // The same counts whichever way the object is read.
        let value: Value = serde_json::from_str(body).expect("json");
        assert_eq!(Usage::from_openai(&value["usage"]), Some(expected));
    }

    #[test]
    fn odd_usage_objects_are_read_as_far_as_they_can_be() {
        let usage = |text: &str| {
            let body = format!(r#"{{"choices":[{{}}],"usage":{text}}}"#);
            Completion::passed_through(Bytes::from(body))
                .expect("a completion")
                .usage
        };
        // A float count, null details and details that are not objects lose only what they garble.
        let odd = usage(
            r#"{"prompt_tokens":7.0,"completion_tokens":2,"prompt_tokens_details":"n/a","completion_tokens_details":null}"#,
        );
        assert_eq!((odd.input, odd.output, odd.cached), (0, 2, 0));
        assert_eq!(usage("null"), Usage::default());
        assert_eq!(usage(r#""lots""#), Usage::default());
        let none =
            Completion::passed_through(Bytes::from(r#"{"choices":[]}"#)).expect("completion");
        assert_eq!(none.usage, Usage::default());
    }

    #[test]
    fn a_body_without_choices_is_not_a_completion() {
        for body in [
            "<html>bad gateway</html>",
            r#"{"error":{"message":"x"}}"#,
            r#"[1]"#,
        ] {
            assert!(
                Completion::passed_through(Bytes::from(body)).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let r = request(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "hi", "name": "bob"}],
            "logit_bias": {"50256": -100}, "seed": 7,
            "stream_options": {"include_usage": true, "future": 1}
        }));
        let back = serde_json::to_value(&r).expect("serialize");
        assert_eq!(back["logit_bias"]["50256"], -100);
        assert_eq!(back["seed"], 7);
        assert_eq!(back["messages"][0]["name"], "bob");
        assert_eq!(back["stream_options"]["future"], 1);
        assert!(r.include_usage());
    }

    #[test]
    fn system_prompt_merges_or_prepends() {
        let base = serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});
        let mut merged = request(base.clone());
        merged.apply_system_prompt("House rules.".into(), SystemPromptMode::Merge);
        assert_eq!(merged.messages.len(), 2);
        assert_eq!(
            merged.messages[0].text_content(),
            "House rules.\n\nBe brief."
        );
        let mut prepended = request(base);
        prepended.apply_system_prompt("House rules.".into(), SystemPromptMode::Prepend);
        assert_eq!(prepended.messages.len(), 3);
        assert_eq!(prepended.messages[0].text_content(), "House rules.");
        let mut none =
            request(serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}));
        none.apply_system_prompt("House rules.".into(), SystemPromptMode::Merge);
        assert_eq!(none.messages[0].role, "system");
    }

    #[test]
    fn retryable_errors_are_the_ones_that_may_pass_elsewhere() {
        let status = |s| ProviderError::Status {
            status: s,
            body: Bytes::new(),
            retry_after: None,
            should_retry: None,
        };
        for s in [408, 429, 500, 502, 503, 529] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!status(s).is_retryable(), "{s}");
        }
        assert!(ProviderError::Timeout(Duration::from_secs(1)).is_retryable());
        let overruled = |s, verdict| ProviderError::Status {
            status: s,
            body: Bytes::new(),
            retry_after: None,
            should_retry: Some(verdict),
        };
        assert!(!overruled(500, false).is_retryable());
        assert!(overruled(409, true).is_retryable());
    }
}
