//! The Gemini API (`{base_url}/v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`): OpenAI chat requests translated to contents,
//! replies and streams translated back, errors into OpenAI's shape.

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

/// The value Gemini 3 accepts in place of a thought signature for tool calls it did not make.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

pub async fn chat(call: Call<'_>) -> Result<Completion, ProviderError> {
    let response = send(&call, "generateContent").await?;
    let reply = wire::json(response, call.provider.timeout).await?;
    let openai = from_wire(&reply, call.model, super::unix_now())?;
    Ok(Completion::of_value(&openai))
}

pub async fn chat_stream(call: Call<'_>) -> Result<ChunkStream, ProviderError> {
    let response = send(&call, "streamGenerateContent?alt=sse").await?;
    let translator =
        StreamTranslator::new(call.model, call.request.include_usage(), super::unix_now());
    Ok(super::sse::translate(response, call.provider, translator))
}

/// Translates and sends the request to `models/{model}:{method}`, key in a header (never
/// the `?key=` parameter: URLs end up in logs).
async fn send(call: &Call<'_>, method: &str) -> Result<crate::upstream::Response, ProviderError> {
    let request = call.prepared()?;
    let body = to_wire(&request, call.model)?;
    let url = wire::url(&format!(
        "{}/v1beta/models/{}:{method}",
        call.provider.base_url, call.model
    ))?;
    let builder = wire::post(call.http, &url, call.provider, "x-goog-api-key", "", &body);
    let stream = method.starts_with("stream");
    wire::send(builder, call.provider, stream, error_shape).await
}

/// `models/{model}:countTokens`, given the whole generateContent request so system
/// instructions and tools count too.
pub async fn count_tokens(call: Call<'_>) -> Result<u64, ProviderError> {
    let request = call.prepared()?;
    let mut inner = to_wire(&request, call.model)?;
    if let Some(fields) = inner.as_object_mut() {
        fields.insert("model".into(), json!(format!("models/{}", call.model)));
    }
    let body = json!({ "generateContentRequest": inner });
    let url = wire::url(&format!(
        "{}/v1beta/models/{}:countTokens",
        call.provider.base_url, call.model
    ))?;
    let builder = wire::post(call.http, &url, call.provider, "x-goog-api-key", "", &body);
    let response = wire::send(builder, call.provider, false, error_shape).await?;
    let reply = wire::json(response, call.provider.timeout).await?;
    reply["totalTokens"]
        .as_u64()
        .ok_or_else(|| ProviderError::Protocol("countTokens: expected `totalTokens`".to_string()))
}

/// Google's `{"error":{"code","message","status","details"}}` → OpenAI's shape, with the
/// retry delay that Gemini puts in the body (`RetryInfo.retryDelay`, such as "26s").
pub fn error_shape(body: &Value) -> Option<(Value, Option<Duration>)> {
    let error = body.get("error")?;
    let message = error.get("message").and_then(Value::as_str)?;
    let status = error
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN");
    let kind = match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND" | "OUT_OF_RANGE" => {
            "invalid_request_error"
        }
        "PERMISSION_DENIED" | "UNAUTHENTICATED" => "authentication_error",
        "RESOURCE_EXHAUSTED" => "rate_limit_error",
        _ => "api_error",
    };
    let delay = error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .and_then(|d| d.strip_suffix('s'))
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map(Duration::from_secs_f64);
    Some((
        json!({"error": {"message": message, "type": kind, "code": status.to_ascii_lowercase(), "param": null}}),
        delay,
    ))
}

/// The `generateContent` request body for an OpenAI chat request.
pub fn to_wire(request: &ChatRequest, model: &str) -> Result<Value, ProviderError> {
    let mut body = Map::new();
    if let Some(system) = request.system_text() {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system}]}),
        );
    }
    let strict_signatures = model.starts_with("gemini-3");
    body.insert(
        "contents".into(),
        Value::Array(contents(&request.messages, strict_signatures)?),
    );

    let mut config = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ] {
        if let Some(v) = request.param(from) {
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(max) = request.max_tokens() {
        config.insert("maxOutputTokens".into(), json!(max));
    }
    let stop = request.stop();
    if !stop.is_empty() {
        config.insert("stopSequences".into(), json!(stop));
    }
    match request.response_format()? {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        ResponseFormat::JsonSchema { schema, .. } => {
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseSchema".into(), schema_to_wire(&schema));
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }

    let declarations: Vec<Value> = request
        .functions("Gemini")?
        .into_iter()
        .map(|f| {
            let mut d = json!({"name": f.name});
            if let Some(desc) = f.description {
                d["description"] = desc;
            }
            if let Some(params) = f.parameters {
                d["parameters"] = schema_to_wire(&params);
            }
            d
        })
        .collect();
    if !declarations.is_empty() {
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
    }
    if let Some(choice) = request.tool_choice()? {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    Ok(Value::Object(body))
}

/// JSON Schema → Gemini's OpenAPI-subset schema: keywords it rejects are dropped and
/// `"type": ["T", "null"]` becomes `"type": "T", "nullable": true`.
pub fn schema_to_wire(schema: &Value) -> Value {
    /// The OpenAPI subset Gemini accepts; any other keyword is refused with a 400, so
    /// it is dropped (clients such as Claude Code send `$schema`, `propertyNames`, …).
    const KEEP: [&str; 19] = [
        "type",
        "format",
        "description",
        "nullable",
        "enum",
        "properties",
        "required",
        "items",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "anyOf",
        "title",
        "minLength",
        "maxLength",
        "pattern",
        "propertyOrdering",
        "default",
    ];
    match schema {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("properties", Value::Object(props)) => {
                        let props: Map<String, Value> = props
                            .iter()
                            .map(|(name, s)| (name.clone(), schema_to_wire(s)))
                            .collect();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    ("type", Value::Array(types)) => {
                        let real: Vec<&Value> = types
                            .iter()
                            .filter(|t| t.as_str() != Some("null"))
                            .collect();
                        if real.len() < types.len() {
                            out.insert("nullable".into(), json!(true));
                        }
                        out.insert(
                            k.clone(),
                            real.first().map_or(json!("string"), |t| (*t).clone()),
                        );
                    }
                    // `oneOf` means the same to a model; Gemini knows only `anyOf`.
                    ("items" | "anyOf" | "oneOf", _) => {
                        let key = if k == "oneOf" { "anyOf" } else { k.as_str() };
                        out.insert(key.to_string(), schema_to_wire(v));
                    }
                    ("const", c) => {
                        out.insert("enum".into(), json!([c]));
                    }
                    (key, _) if KEEP.contains(&key) => {
                        out.insert(k.clone(), v.clone());
                    }
                    (key, _) => {
                        tracing::debug!(
                            keyword = key,
                            "dropped a JSON Schema keyword Gemini refuses"
                        );
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(schema_to_wire).collect()),
        other => other.clone(),
    }
}

/// Messages → `contents`: assistant becomes `model`, tool results `functionResponse`
/// parts named after the call they answer, and consecutive roles are merged.
fn contents(messages: &[Message], strict_signatures: bool) -> Result<Vec<Value>, ProviderError> {
    let mut call_names: HashMap<String, String> = HashMap::new();
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let (role, parts) = match m.role.as_str() {
            "system" | "developer" => continue,
            "user" => ("user", parts(m.content.as_ref(), i)?),
            "assistant" => {
                let mut parts = parts(m.content.as_ref(), i)?;
                for (j, call) in m
                    .extra
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let (id, name, args) = super::tool_call_parts(call, i, j)?;
                    if !id.is_empty() {
                        call_names.insert(id.to_string(), name.to_string());
                    }
                    let mut part = json!({"functionCall": {"name": name, "args": args}});
                    match call.pointer("/extra_content/google/thought_signature") {
                        Some(signature) => part["thoughtSignature"] = signature.clone(),
                        // A history from another provider has none; Gemini 3 documents this
                        // value for exactly that case. Only a turn's first call needs one.
                        None if j == 0 && strict_signatures => {
                            part["thoughtSignature"] = json!(SKIP_SIGNATURE);
                        }
                        None => {}
                    }
                    parts.push(part);
                }
                ("model", parts)
            }
            "tool" => {
                let id = m
                    .extra
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = call_names.get(id).cloned().ok_or_else(|| {
                    ProviderError::BadRequest(format!(
                        "messages[{i}]: tool_call_id `{id}` matches no earlier assistant tool call"
                    ))
                })?;
                let text = m.text_content();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"content": text}),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => return Err(super::unknown_role(i, other)),
        };
        super::push_turn(&mut out, role, parts);
    }
    Ok(out
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect())
}

fn parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for (j, part) in list.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(json!({"text": part.get("text").and_then(Value::as_str).unwrap_or_default()})),
                    Some("image_url") => {
                        let url = super::image_url(part).unwrap_or_default();
                        let Some((mime, data)) = super::data_url(url) else {
                            return Err(ProviderError::Unsupported(format!(
                                "messages[{i}].content[{j}]: Gemini takes images as data: URLs (base64), not links"
                            )));
                        };
                        out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                    }
                    other => {
                        return Err(ProviderError::Unsupported(format!(
                            "messages[{i}].content[{j}]: content of type {} cannot be sent to Gemini",
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

/// finishReason → OpenAI finish_reason; a candidate with function calls ends in `tool_calls`.
pub fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    if has_tool_calls {
        return "tool_calls";
    }
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY"
            | "RECITATION"
            | "LANGUAGE"
            | "OTHER"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION"
            | "IMAGE_OTHER"
            | "NO_IMAGE",
        ) => "content_filter",
        _ => "stop",
    }
}

/// usageMetadata → usage. Thinking and tool-use tokens count as completion so the sum holds.
fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("promptTokenCount");
    let total = u
        .get("totalTokenCount")
        .and_then(Value::as_u64)
        .unwrap_or(prompt + n("candidatesTokenCount"));
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": total.saturating_sub(prompt),
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": n("cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": n("thoughtsTokenCount")},
    })
}

fn tool_call(part: &Value, id: String, index: Option<usize>) -> Option<Value> {
    let call = part.get("functionCall")?;
    let mut out = json!({
        "id": id,
        "type": "function",
        "function": {
            "name": call["name"],
            "arguments": call.get("args").cloned().unwrap_or(json!({})).to_string(),
        },
    });
    if let Some(i) = index {
        out["index"] = json!(i);
    }
    // Google's own OpenAI-compatible endpoint carries the signature here; clients that
    // send the history back keep it, and Gemini 3 refuses tool calls without it.
    if let Some(signature) = part.get("thoughtSignature") {
        out["extra_content"] = json!({"google": {"thought_signature": signature}});
    }
    Some(out)
}

/// A candidate's parts that belong to the answer (thought summaries are left out).
fn answer_parts(candidate: &Value) -> impl Iterator<Item = &Value> {
    candidate["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|part| part["thought"] != true)
}

/// Gemini gives calls no ids (before Gemini 3): make stable ones from the response id.
fn call_id(part: &Value, response_id: &str, n: usize) -> String {
    part["functionCall"]["id"]
        .as_str()
        .map_or_else(|| format!("call_{response_id}_{n}"), str::to_string)
}

/// A `generateContent` reply → a `chat.completion`.
pub fn from_wire(reply: &Value, model: &str, created: u64) -> Result<Value, ProviderError> {
    if let Some((body, _)) = error_shape(reply) {
        return Err(ProviderError::Protocol(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    let id = reply["responseId"].as_str().unwrap_or("gemini");
    let model = reply["modelVersion"].as_str().unwrap_or(model);
    let usage_value = reply.get("usageMetadata").map(usage);
    let Some(candidate) = reply["candidates"].as_array().and_then(|c| c.first()) else {
        // A prompt blocked before generation has no candidates, only promptFeedback.
        if reply["promptFeedback"]["blockReason"].is_string() {
            let message = json!({"role": "assistant", "content": ""});
            return Ok(super::completion_body(
                id,
                model,
                created,
                message,
                "content_filter",
                usage_value,
            ));
        }
        return Err(ProviderError::Protocol(
            "expected `candidates` in the reply".into(),
        ));
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in answer_parts(candidate) {
        if let Some(t) = part["text"].as_str() {
            text.push_str(t);
        }
        if let Some(call) = tool_call(part, call_id(part, id, calls.len()), None) {
            calls.push(call);
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(calls.clone());
    }
    let finish = finish_reason(candidate["finishReason"].as_str(), !calls.is_empty());
    Ok(super::completion_body(
        id,
        model,
        created,
        message,
        finish,
        usage_value,
    ))
}

/// Gemini's chunks (each a whole GenerateContentResponse) → OpenAI chunks.
pub struct StreamTranslator {
    chunker: Chunker,
    started: bool,
    include_usage: bool,
    calls: usize,
    finished: bool,
    usage: Option<Value>,
}

impl StreamTranslator {
    pub fn new(model: &str, include_usage: bool, created: u64) -> Self {
        Self {
            chunker: Chunker {
                id: "gemini".into(),
                model: model.into(),
                created,
            },
            started: false,
            include_usage,
            calls: 0,
            finished: false,
            usage: None,
        }
    }
}

impl Translator for StreamTranslator {
    fn event(&mut self, event: Event) -> Result<Step, ProviderError> {
        let data: Value = serde_json::from_str(&event.text())
            .map_err(|e| ProviderError::Protocol(format!("stream chunk is not JSON: {e}")))?;
        if let Some((body, retry_after)) = error_shape(&data) {
            let status = data["error"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            return Err(ProviderError::Status {
                status,
                body: Bytes::from(body.to_string()),
                retry_after,
                should_retry: None,
            });
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            if let Some(id) = data["responseId"].as_str() {
                self.chunker.id = id.to_string();
            }
            if let Some(m) = data["modelVersion"].as_str() {
                self.chunker.model = m.to_string();
            }
            out.push(
                self.chunker
                    .chunk(json!({"role": "assistant", "content": ""}), None),
            );
        }
        if let Some(u) = data.get("usageMetadata") {
            self.usage = Some(usage(u));
        }
        let Some(candidate) = data["candidates"].as_array().and_then(|c| c.first()) else {
            if data["promptFeedback"]["blockReason"].is_string() {
                self.finished = true;
                out.push(self.chunker.chunk(json!({}), Some("content_filter")));
            }
            return Ok(Step::Chunks(out));
        };
        for part in answer_parts(candidate) {
            if let Some(t) = part["text"].as_str().filter(|t| !t.is_empty()) {
                out.push(self.chunker.chunk(json!({"content": t}), None));
            }
            let id = call_id(part, &self.chunker.id, self.calls);
            if let Some(call) = tool_call(part, id, Some(self.calls)) {
                self.calls += 1;
                out.push(self.chunker.chunk(json!({"tool_calls": [call]}), None));
            }
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            self.finished = true;
            out.push(
                self.chunker
                    .chunk(json!({}), Some(finish_reason(Some(reason), self.calls > 0))),
            );
        }
        Ok(Step::Chunks(out))
    }

    /// Gemini ends a stream by closing it; only a stream that gave its finishReason is complete.
    fn closed(&mut self) -> Result<Vec<Bytes>, ProviderError> {
        if !self.finished {
            return Err(ProviderError::Connect(
                "the stream ended before Gemini gave a finishReason".to_string(),
            ));
        }
        Ok(match (&self.usage, self.include_usage) {
            (Some(u), true) => vec![self.chunker.usage(u)],
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_schemas_keep_only_what_gemini_accepts() {
        // As Claude Code sends a tool's input_schema.
        let schema = json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
            "additionalProperties": false, "propertyNames": {"pattern": "^[a-z]+$"},
            "properties": {
                "path": {"type": "string", "description": "file"},
                "limit": {"type": ["integer", "null"], "exclusiveMinimum": 0},
                "mode": {"const": "fast"},
                "target": {"oneOf": [{"type": "string"}, {"type": "number"}]}},
            "required": ["path"]});
        assert_eq!(
            schema_to_wire(&schema),
            json!({"type": "object", "required": ["path"], "properties": {
                "path": {"type": "string", "description": "file"},
                "limit": {"type": "integer", "nullable": true},
                "mode": {"enum": ["fast"]},
                "target": {"anyOf": [{"type": "string"}, {"type": "number"}]}}})
        );
    }

    #[test]
    fn nullable_types_and_unsupported_keywords_are_rewritten() {
        let s = json!({"type": "object", "additionalProperties": false, "properties": {
            "additionalProperties": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"type": "string", "$comment": "x"}}}});
        let w = schema_to_wire(&s);
        assert!(w.get("additionalProperties").is_none());
        assert_eq!(
            w["properties"]["additionalProperties"],
            json!({"type": "string", "nullable": true})
        );
        assert!(w["properties"]["tags"]["items"].get("$comment").is_none());
    }

    #[test]
    fn thought_signatures_survive_the_round_trip_through_an_openai_client() {
        let reply = json!({"responseId": "r1", "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "now", "args": {}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "later", "args": {}}}]}, "finishReason": "STOP"}]});
        let openai = from_wire(&reply, "gemini-3-pro", 0).expect("reply");
        let calls = openai["choices"][0]["message"]["tool_calls"].clone();
        assert_eq!(
            calls[0]["extra_content"]["google"]["thought_signature"],
            "c2ln"
        );
        // The client sends the history back with the assistant message as it got it.
        let request: ChatRequest = serde_json::from_value(json!({"messages": [
            {"role": "user", "content": "time?"},
            {"role": "assistant", "content": null, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_r1_0", "content": "noon"},
            {"role": "tool", "tool_call_id": "call_r1_1", "content": "later"}]}))
        .expect("request");
        let wire = to_wire(&request, "gemini-3-pro").expect("wire");
        let parts = &wire["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], "c2ln");
        assert!(
            parts[1].get("thoughtSignature").is_none(),
            "only the first parallel call carries one"
        );
    }

    #[test]
    fn a_history_from_another_provider_gets_the_documented_placeholder_on_gemini_3_only() {
        let request: ChatRequest = serde_json::from_value(json!({"messages": [
            {"role": "user", "content": "time?"},
            {"role": "assistant", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "now", "arguments": "{}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "later", "arguments": "{}"}}]}]}))
        .expect("request");
        let three = to_wire(&request, "gemini-3-flash").expect("wire");
        assert_eq!(
            three["contents"][1]["parts"][0]["thoughtSignature"],
            SKIP_SIGNATURE
        );
        assert!(
            three["contents"][1]["parts"][1]
                .get("thoughtSignature")
                .is_none()
        );
        let two = to_wire(&request, "gemini-2.5-flash").expect("wire");
        assert!(
            two["contents"][1]["parts"][0]
                .get("thoughtSignature")
                .is_none()
        );
    }

    #[test]
    fn retry_delay_is_read_from_the_body() {
        let body = json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34.5s"}]}});
        let (openai, delay) = error_shape(&body).expect("shape");
        assert_eq!(openai["error"]["type"], "rate_limit_error");
        assert_eq!(delay, Some(Duration::from_millis(34_500)));
    }
}
