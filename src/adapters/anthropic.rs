//! The Anthropic Messages API (`POST {base_url}/v1/messages`): OpenAI chat requests
//! translated to messages, replies and streams translated back, errors into OpenAI's shape.

use std::collections::HashMap;
use std::time::Duration;

use super::sse::Event;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::sse::{Step, Translator};
use super::{Call, Chunker, wire};
use crate::chat::{
    ChatRequest, ChunkStream, Completion, Message, ProviderError, ResponseFormat, ToolChoice,
};

pub const API_VERSION: &str = "2023-06-01";
/// Sent when neither the request nor the model's `max_output_tokens` says: the API requires one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The forced tool that carries structured output; its input is returned as the message content.
pub const JSON_TOOL: &str = "structured_output";

pub async fn chat(call: Call<'_>) -> Result<Completion, ProviderError> {
    let response = send(&call, false).await?;
    let json_mode = call.request.response_format()? != ResponseFormat::Text;
    let reply = wire::json(response, call.provider.timeout).await?;
    let openai = from_wire(&reply, super::unix_now(), json_mode)?;
    Ok(Completion::of_value(&openai))
}

pub async fn chat_stream(call: Call<'_>) -> Result<ChunkStream, ProviderError> {
    let response = send(&call, true).await?;
    let json_mode = call.request.response_format()? != ResponseFormat::Text;
    let translator =
        StreamTranslator::new(call.request.include_usage(), json_mode, super::unix_now());
    Ok(super::sse::translate(response, call.provider, translator))
}

/// Translates and sends the request.
async fn send(call: &Call<'_>, stream: bool) -> Result<crate::upstream::Response, ProviderError> {
    let request = call.prepared()?;
    let body = to_wire(&request, call.model, default_max_tokens(call), stream)?;
    post(call, "/v1/messages", &body, None, None, stream).await
}

/// POSTs `body` to one of the provider's Messages API paths with its key and the
/// API version (the client's, when it named one, else ours).
pub async fn post(
    call: &Call<'_>,
    path: &str,
    body: &Value,
    version: Option<&str>,
    beta: Option<&str>,
    stream: bool,
) -> Result<crate::upstream::Response, ProviderError> {
    let url = wire::url(&format!("{}{path}", call.provider.base_url))?;
    let mut builder = wire::post(call.http, &url, call.provider, "x-api-key", "", body)
        .header("anthropic-version", version.unwrap_or(API_VERSION));
    if let Some(beta) = beta {
        builder = builder.header("anthropic-beta", beta);
    }
    wire::send(builder, call.provider, stream, error_shape).await
}

/// `POST /v1/messages/count_tokens` with the fields that endpoint takes from `body`.
pub async fn count(
    call: &Call<'_>,
    body: &Value,
    version: Option<&str>,
) -> Result<u64, ProviderError> {
    let mut body = body.clone();
    if let Some(fields) = body.as_object_mut() {
        fields.retain(|k, _| {
            matches!(
                k.as_str(),
                "messages" | "system" | "tools" | "tool_choice" | "thinking" | "mcp_servers"
            )
        });
        fields.insert("model".into(), json!(call.model));
    }
    let response = post(
        call,
        "/v1/messages/count_tokens",
        &body,
        version,
        None,
        false,
    )
    .await?;
    let reply = wire::json(response, call.provider.timeout).await?;
    reply["input_tokens"]
        .as_u64()
        .ok_or_else(|| ProviderError::Protocol("count_tokens: expected `input_tokens`".to_string()))
}

/// `POST /v1/messages/count_tokens`: the fields that endpoint takes, from the same
/// translation a real request gets.
pub async fn count_tokens(call: Call<'_>) -> Result<u64, ProviderError> {
    let request = call.prepared()?;
    let body = to_wire(&request, call.model, default_max_tokens(&call), false)?;
    count(&call, &body, None).await
}

fn default_max_tokens(call: &Call<'_>) -> u64 {
    call.provider
        .model(call.model)
        .and_then(|m| m.max_output_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS)
}

/// `{"type":"error","error":{"type","message"}}` → OpenAI's error shape.
pub fn error_shape(body: &Value) -> Option<(Value, Option<Duration>)> {
    let error = body.get("error")?;
    let message = error.get("message").and_then(Value::as_str)?;
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("api_error");
    Some((
        json!({"error": {"message": message, "type": kind, "code": kind, "param": null}}),
        None,
    ))
}

/// The Messages API request for an OpenAI chat request.
pub fn to_wire(
    request: &ChatRequest,
    model: &str,
    default_max_tokens: u64,
    stream: bool,
) -> Result<Value, ProviderError> {
    if request
        .param("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(ProviderError::Unsupported(
            "Anthropic returns one choice; `n` above 1 is not supported".into(),
        ));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(request.max_tokens().unwrap_or(default_max_tokens)),
    );
    if let Some(system) = request.system_text() {
        body.insert("system".into(), json!(system));
    }
    body.insert(
        "messages".into(),
        Value::Array(messages(&request.messages)?),
    );
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
    ] {
        if let Some(v) = request.param(from) {
            body.insert(to.into(), v.clone());
        }
    }
    let stop = request.stop();
    if !stop.is_empty() {
        body.insert("stop_sequences".into(), json!(stop));
    }
    if let Some(user) = request.param("user").and_then(Value::as_str) {
        body.insert("metadata".into(), json!({"user_id": user}));
    }

    let mut tools: Vec<Value> = request
        .functions("Anthropic")?
        .into_iter()
        .map(|f| {
            let mut out = json!({
                "name": f.name,
                "input_schema": f.parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(d) = f.description {
                out["description"] = d;
            }
            out
        })
        .collect();
    let mut tool_choice = request.tool_choice()?.map(|c| match c {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
    });
    if request.param("parallel_tool_calls") == Some(&Value::Bool(false)) && !tools.is_empty() {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = json!(true);
    }
    match request.response_format()? {
        ResponseFormat::Text => {}
        format => {
            let (description, schema) = match format {
                ResponseFormat::JsonSchema { name, schema } => {
                    if schema.get("type").and_then(Value::as_str) != Some("object") {
                        return Err(ProviderError::Unsupported(
                            "Anthropic structured output needs a schema whose root is an object"
                                .into(),
                        ));
                    }
                    (
                        format!("Respond with the `{name}` JSON object, as this tool's input."),
                        schema,
                    )
                }
                _ => (
                    "Respond with a JSON object, as this tool's input.".to_string(),
                    json!({"type": "object"}),
                ),
            };
            tools.push(
                json!({"name": JSON_TOOL, "description": description, "input_schema": schema}),
            );
            tool_choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
        }
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice {
        body.insert("tool_choice".into(), choice);
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

/// Messages with the system ones removed, tool results as `tool_result` blocks, and
/// consecutive messages of one role merged, as the API requires.
fn messages(input: &[Message]) -> Result<Vec<Value>, ProviderError> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, m) in input.iter().enumerate() {
        let (role, blocks) = match m.role.as_str() {
            "system" | "developer" => continue,
            "user" => ("user", content_blocks(m.content.as_ref(), i)?),
            "assistant" => {
                let mut blocks = content_blocks(m.content.as_ref(), i)?;
                if let Some(calls) = m.extra.get("tool_calls").and_then(Value::as_array) {
                    for (j, call) in calls.iter().enumerate() {
                        blocks.push(tool_use_block(call, i, j)?);
                    }
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = m
                    .extra
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ProviderError::BadRequest(format!(
                            "messages[{i}]: a tool message needs `tool_call_id`"
                        ))
                    })?;
                (
                    "user",
                    vec![
                        json!({"type": "tool_result", "tool_use_id": id, "content": m.text_content()}),
                    ],
                )
            }
            other => return Err(super::unknown_role(i, other)),
        };
        super::push_turn(&mut out, role, blocks);
    }
    Ok(out
        .into_iter()
        .map(|(role, blocks)| {
            // A lone text block is sent as a plain string, as the API's own examples do.
            let content = match blocks.as_slice() {
                [b] if b["type"] == "text" => b["text"].clone(),
                _ => Value::Array(blocks),
            };
            json!({"role": role, "content": content})
        })
        .collect())
}

fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
                        if !text.is_empty() {
                            out.push(json!({"type": "text", "text": text}));
                        }
                    }
                    Some("image_url") => {
                        let url = super::image_url(part).ok_or_else(|| {
                            ProviderError::BadRequest(format!(
                                "messages[{i}].content[{j}]: expected `image_url.url`"
                            ))
                        })?;
                        let source = match super::data_url(url) {
                            Some((mime, data)) => {
                                json!({"type": "base64", "media_type": mime, "data": data})
                            }
                            None => json!({"type": "url", "url": url}),
                        };
                        out.push(json!({"type": "image", "source": source}));
                    }
                    other => {
                        return Err(ProviderError::Unsupported(format!(
                            "messages[{i}].content[{j}]: content of type {} cannot be sent to Anthropic",
                            other.unwrap_or("(none)")
                        )));
                    }
                }
            }
            Ok(out)
        }
        Some(other) => Err(ProviderError::BadRequest(format!(
            "messages[{i}].content: expected a string or a list of parts, found {other}"
        ))),
    }
}

fn tool_use_block(call: &Value, i: usize, j: usize) -> Result<Value, ProviderError> {
    let (id, name, input) = super::tool_call_parts(call, i, j)?;
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// Stop reason → OpenAI finish_reason, as `finish_reasons.json` pairs them.
pub fn finish_reason(stop_reason: Option<&str>, json_mode: bool) -> &'static str {
    match stop_reason {
        Some("tool_use") if json_mode => "stop",
        Some("tool_use") => "tool_calls",
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Anthropic's usage → OpenAI's (input counts cache reads and writes, as OpenAI's does).
pub fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt =
        n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens");
    let completion = n("output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": n("cache_read_input_tokens"),
            "cache_creation_tokens": n("cache_creation_input_tokens"),
        },
    })
}

/// A Messages API reply → a `chat.completion`.
pub fn from_wire(reply: &Value, created: u64, json_mode: bool) -> Result<Value, ProviderError> {
    let blocks = reply
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("expected a message with `content`".into()))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            Some("tool_use") if json_mode && block["name"] == JSON_TOOL => {
                text = block.get("input").cloned().unwrap_or(json!({})).to_string();
            }
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {
                    "name": block["name"],
                    "arguments": block.get("input").cloned().unwrap_or(json!({})).to_string(),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !tool_calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let finish = finish_reason(reply.get("stop_reason").and_then(Value::as_str), json_mode);
    Ok(super::completion_body(
        reply.get("id").and_then(Value::as_str).unwrap_or("msg"),
        reply
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        created,
        message,
        finish,
        reply.get("usage").map(usage),
    ))
}

/// Anthropic's named events → OpenAI chunks, with tool-call indices counted per tool block.
pub struct StreamTranslator {
    chunker: Chunker,
    include_usage: bool,
    json_mode: bool,
    /// Content block index → tool-call index.
    tools: HashMap<u64, usize>,
    json_block: Option<u64>,
    usage: Map<String, Value>,
}

impl StreamTranslator {
    pub fn new(include_usage: bool, json_mode: bool, created: u64) -> Self {
        Self {
            chunker: Chunker {
                id: String::new(),
                model: String::new(),
                created,
            },
            include_usage,
            json_mode,
            tools: HashMap::new(),
            json_block: None,
            usage: Map::new(),
        }
    }

    fn merge_usage(&mut self, u: Option<&Value>) {
        if let Some(Value::Object(u)) = u {
            for (k, v) in u {
                if v.is_u64() {
                    self.usage.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

impl Translator for StreamTranslator {
    fn event(&mut self, event: Event) -> Result<Step, ProviderError> {
        let data: Value = serde_json::from_str(&event.text()).map_err(|e| {
            ProviderError::Protocol(format!("event `{}` is not JSON: {e}", event.event))
        })?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(&event.event);
        let chunk = |this: &Self, delta: Value| Step::Chunks(vec![this.chunker.chunk(delta, None)]);
        Ok(match kind {
            "message_start" => {
                let message = &data["message"];
                self.chunker.id = message["id"].as_str().unwrap_or("msg").to_string();
                self.chunker.model = message["model"].as_str().unwrap_or_default().to_string();
                self.merge_usage(message.get("usage"));
                chunk(self, json!({"role": "assistant", "content": ""}))
            }
            "content_block_start" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") if self.json_mode && block["name"] == JSON_TOOL => {
                        self.json_block = Some(index);
                        Step::Chunks(Vec::new())
                    }
                    Some("tool_use") => {
                        let n = self.tools.len();
                        self.tools.insert(index, n);
                        chunk(
                            self,
                            json!({"tool_calls": [{"index": n, "id": block["id"], "type": "function",
                                "function": {"name": block["name"], "arguments": ""}}]}),
                        )
                    }
                    Some("text") if block["text"].as_str().is_some_and(|t| !t.is_empty()) => {
                        chunk(self, json!({"content": block["text"]}))
                    }
                    _ => Step::Chunks(Vec::new()),
                }
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => chunk(self, json!({"content": delta["text"]})),
                    Some("input_json_delta") => {
                        let partial = delta["partial_json"].as_str().unwrap_or_default();
                        if partial.is_empty() {
                            Step::Chunks(Vec::new())
                        } else if self.json_block == Some(index) {
                            chunk(self, json!({"content": partial}))
                        } else if let Some(n) = self.tools.get(&index) {
                            chunk(
                                self,
                                json!({"tool_calls": [{"index": n, "function": {"arguments": partial}}]}),
                            )
                        } else {
                            Step::Chunks(Vec::new())
                        }
                    }
                    _ => Step::Chunks(Vec::new()),
                }
            }
            "message_delta" => {
                self.merge_usage(data.get("usage"));
                let finish = finish_reason(data["delta"]["stop_reason"].as_str(), self.json_mode);
                Step::Chunks(vec![self.chunker.chunk(json!({}), Some(finish))])
            }
            "message_stop" => {
                let mut last = Vec::new();
                if self.include_usage {
                    last.push(
                        self.chunker
                            .usage(&usage(&Value::Object(self.usage.clone()))),
                    );
                }
                Step::Finished(last)
            }
            "error" => {
                let (body, _) = error_shape(&data)
                    .unwrap_or((json!({"error": {"message": "stream error"}}), None));
                let status = match data["error"]["type"].as_str() {
                    Some("overloaded_error") => 529,
                    Some("rate_limit_error") => 429,
                    Some("invalid_request_error") => 400,
                    _ => 500,
                };
                return Err(ProviderError::Status {
                    status,
                    body: Bytes::from(body.to_string()),
                    retry_after: None,
                    should_retry: None,
                });
            }
            // ping, content_block_stop, and event types added after this was written.
            _ => Step::Chunks(Vec::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> ChatRequest {
        serde_json::from_value(v).expect("request")
    }

    #[test]
    fn consecutive_roles_merge_and_tool_results_become_blocks() {
        let r = request(json!({"model": "m", "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "42"},
            {"role": "user", "content": "thanks"}
        ]}));
        let wire = to_wire(&r, "claude", 100, false).expect("wire");
        assert_eq!(wire["system"], "S");
        let msgs = wire["messages"].as_array().expect("messages");
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0]["content"][1]["text"], "b");
        assert_eq!(msgs[1]["content"][0]["input"]["x"], 1);
        assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[2]["content"][1]["text"], "thanks");
        assert_eq!(wire["max_tokens"], 100);
    }

    #[test]
    fn bad_tool_arguments_are_the_clients_to_fix() {
        let r = request(json!({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}));
        let err = to_wire(&r, "m", 1, false).expect_err("bad json");
        assert!(
            matches!(err, ProviderError::BadRequest(ref m) if m.contains("messages[0].tool_calls[0].function.arguments"))
        );
    }
}
