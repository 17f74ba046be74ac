//! The Anthropic Messages API inbound (`POST /v1/messages`): a Messages request into the
//! canonical (OpenAI) shape for providers that are not Anthropic, and their answers and
//! streams back into Messages, event by event in Anthropic's order. Anthropic providers
//! get the request as it came (see `native`).

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::Call;
use crate::chat::{ChatRequest, ProviderError};

/// The first problem found in a Messages request: where (a JSON path) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// Why a Messages request can go only to Anthropic, if it can: a server tool or a
/// content block no other API takes. Other providers are then skipped, saying this.
pub fn native_only(body: &Value) -> Option<String> {
    for (i, t) in body["tools"].as_array().into_iter().flatten().enumerate() {
        if let Some(ty) = t.get("type").and_then(Value::as_str)
            && ty != "custom"
        {
            return Some(format!(
                "tools[{i}] is the Anthropic server tool `{ty}`, which only Anthropic models run"
            ));
        }
    }
    const TRANSLATED: [&str; 6] = [
        "text",
        "image",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
    ];
    for (i, m) in body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for (j, b) in m["content"].as_array().into_iter().flatten().enumerate() {
            if let Some(ty) = b.get("type").and_then(Value::as_str)
                && !TRANSLATED.contains(&ty)
            {
                return Some(format!(
                    "messages[{i}].content[{j}] is a `{ty}` block, which only Anthropic models read"
                ));
            }
        }
    }
    None
}

/// Joins the text of a string or of an array of text blocks.
fn text_of(value: &Value, path: &str) -> Result<String, Invalid> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(b["text"].as_str().unwrap_or_default().to_string()),
                    other => {
                        return Err(invalid(
                            format!("{path}[{i}].type"),
                            format!("expected a text block here, found {}", found(other)),
                        ));
                    }
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(invalid(
            path,
            "expected a string or an array of text blocks",
        )),
    }
}

fn found(kind: Option<&str>) -> String {
    kind.map_or("no type".to_string(), |k| format!("\"{k}\""))
}

/// An image block's source as an OpenAI `image_url` part.
fn image_part(block: &Value, path: &str) -> Result<Value, Invalid> {
    let source = &block["source"];
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source["media_type"].as_str().unwrap_or("image/png"),
            source["data"].as_str().unwrap_or_default()
        ),
        Some("url") => source["url"].as_str().unwrap_or_default().to_string(),
        other => {
            return Err(invalid(
                format!("{path}.source.type"),
                format!("expected \"base64\" or \"url\", found {}", found(other)),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A Messages request → the canonical chat request. Thinking blocks stay behind (only
/// Anthropic reads them, and Anthropic targets get the request as it came).
pub fn to_chat(body: &Value) -> Result<ChatRequest, Invalid> {
    let Some(object) = body.as_object() else {
        return Err(invalid("", "expected a JSON object"));
    };
    let model = object
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("model", "expected a model name"))?;
    let mut messages = Vec::new();
    if let Some(system) = object.get("system") {
        messages.push(json!({"role": "system", "content": text_of(system, "system")?}));
    }
    let turns = object
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "expected an array of messages"))?;
    for (i, turn) in turns.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = turn.get("role").and_then(Value::as_str);
        let content = turn.get("content").unwrap_or(&Value::Null);
        let blocks: Vec<Value> = match content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(b) => b.clone(),
            _ => {
                return Err(invalid(
                    format!("{path}.content"),
                    "expected a string or an array of content blocks",
                ));
            }
        };
        match role {
            Some("user") => user_turn(&blocks, &path, &mut messages)?,
            Some("assistant") => messages.push(assistant_turn(&blocks, &path)?),
            other => {
                return Err(invalid(
                    format!("{path}.role"),
                    format!("expected \"user\" or \"assistant\", found {}", found(other)),
                ));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    for (from, to) in [
        ("max_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stop_sequences", "stop"),
        ("stream", "stream"),
    ] {
        if let Some(v) = object.get(from) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(user) = body.pointer("/metadata/user_id").and_then(Value::as_str) {
        out.insert("user".into(), json!(user));
    }
    if let Some(tools) = object.get("tools").and_then(Value::as_array) {
        let mut list = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return Err(invalid(format!("tools[{i}].name"), "expected a tool name"));
            };
            // Server tools (web_search_…, bash_…) run at Anthropic alone: see `native_only`.
            if t.get("type")
                .and_then(Value::as_str)
                .is_some_and(|ty| ty != "custom")
            {
                continue;
            }
            let mut function = json!({
                "name": name,
                "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
            });
            if let Some(d) = t.get("description") {
                function["description"] = d.clone();
            }
            list.push(json!({"type": "function", "function": function}));
        }
        out.insert("tools".into(), Value::Array(list));
    }
    if let Some(choice) = object.get("tool_choice") {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
            other => {
                return Err(invalid(
                    "tool_choice.type",
                    format!(
                        "expected \"auto\", \"any\", \"tool\" or \"none\", found {}",
                        found(other)
                    ),
                ));
            }
        };
        out.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use") == Some(&json!(true)) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    let request: ChatRequest = serde_json::from_value(Value::Object(out))
        .map_err(|e| invalid("", format!("cannot read the request: {e}")))?;
    request
        .validate()
        .map_err(|e| invalid(e.path.clone(), e.message.clone()))?;
    Ok(request)
}

/// A user turn: its tool results become `tool` messages (they answer the assistant's
/// calls, so they come first), the rest one user message.
fn user_turn(blocks: &[Value], path: &str, out: &mut Vec<Value>) -> Result<(), Invalid> {
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("{path}.content[{j}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
            Some("image") => parts.push(image_part(b, &at)?),
            Some("tool_result") => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        invalid(
                            format!("{at}.tool_use_id"),
                            "expected the id of the tool_use it answers",
                        )
                    })?;
                let mut text = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::Array(items)) => {
                        let mut texts = Vec::new();
                        for (k, item) in items.iter().enumerate() {
                            match item.get("type").and_then(Value::as_str) {
                                Some("text") => texts
                                    .push(item["text"].as_str().unwrap_or_default().to_string()),
                                Some("image") => texts.push("[image]".to_string()),
                                other => {
                                    return Err(invalid(
                                        format!("{at}.content[{k}].type"),
                                        format!(
                                            "expected a text or image block, found {}",
                                            found(other)
                                        ),
                                    ));
                                }
                            }
                        }
                        texts.join("\n")
                    }
                    Some(other) => text_of(other, &format!("{at}.content"))?,
                };
                if b.get("is_error") == Some(&json!(true)) {
                    text = format!("Error: {text}");
                }
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            Some("thinking" | "redacted_thinking") => {}
            // Blocks only Anthropic reads (documents, server tool results…): see `native_only`.
            Some(_) => {}
            None => {
                return Err(invalid(
                    format!("{at}.type"),
                    "expected a content block with a `type`",
                ));
            }
        }
    }
    if !parts.is_empty() {
        let all_text = parts.iter().all(|p| p["type"] == "text");
        let content = if all_text {
            json!(
                parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        } else {
            Value::Array(parts)
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn assistant_turn(blocks: &[Value], path: &str) -> Result<Value, Invalid> {
    let mut text = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push(b["text"].as_str().unwrap_or_default().to_string()),
            Some("tool_use") => calls.push(json!({
                "id": b["id"],
                "type": "function",
                "function": {
                    "name": b["name"],
                    "arguments": b.get("input").cloned().unwrap_or(json!({})).to_string(),
                },
            })),
            Some("thinking" | "redacted_thinking") => {}
            Some(_) => {}
            None => {
                return Err(invalid(
                    format!("{path}.content[{j}].type"),
                    "expected a content block with a `type`",
                ));
            }
        }
    }
    let mut message = json!({"role": "assistant", "content": text.join("")});
    if !calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`, as `finish_reasons.json` pairs them.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Takes the stop sequences out of a translated request: llmhub finds them in the reply
/// itself, since OpenAI-compatible APIs cut a sequence and say only "stop", and
/// Anthropic's `stop_reason: "stop_sequence"` must name the one that matched.
pub fn take_stops(request: &mut ChatRequest) -> Vec<String> {
    match request.extra.remove("stop") {
        Some(Value::Array(stops)) => stops
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s],
        _ => Vec::new(),
    }
}

/// Where the earliest stop sequence begins in `text`, and which one.
fn first_stop<'a>(text: &str, stops: &'a [String]) -> Option<(usize, &'a str)> {
    stops
        .iter()
        .filter_map(|s| text.find(s.as_str()).map(|i| (i, s.as_str())))
        .min_by_key(|(i, _)| *i)
}

/// Anthropic's usage from OpenAI's: input excludes cache reads, as Anthropic counts it.
pub fn usage_of(openai: Option<&Value>) -> Value {
    let n = |p: &str| {
        openai
            .and_then(|u| u.pointer(p))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = n("/prompt_tokens_details/cached_tokens");
    json!({
        "input_tokens": n("/prompt_tokens").saturating_sub(cached),
        "output_tokens": n("/completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    })
}

/// A `chat.completion` → a Messages reply, cut at the first of `stops`.
pub fn from_completion(completion: &Value, stops: &[String], model: &str) -> Value {
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    let finish = choice["finish_reason"].as_str();
    let mut content = Vec::new();
    let reasoning = message
        .get("reasoning_content")
        .or_else(|| message.get("reasoning"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
    }
    let mut text = message["content"].as_str().unwrap_or_default();
    let stop_sequence = first_stop(text, stops).map(|(i, s)| {
        text = &text[..i];
        s.to_string()
    });
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|_| stop_sequence.is_none())
    {
        let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
        content.push(json!({
            "type": "tool_use",
            "id": call["id"],
            "name": call["function"]["name"],
            "input": serde_json::from_str::<Value>(arguments).unwrap_or(json!({})),
        }));
    }
    json!({
        "id": message_id(completion["id"].as_str()),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": if stop_sequence.is_some() { "stop_sequence" } else { stop_reason(finish) },
        "stop_sequence": stop_sequence,
        "usage": usage_of(completion.get("usage")),
    })
}

fn message_id(upstream: Option<&str>) -> String {
    match upstream {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => format!("msg_{}", crate::store::unique_id()),
    }
}

/// One server-sent event in Anthropic's framing.
pub fn sse(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `{"type": "error", "error": {"type", "message"}}`.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The Anthropic error type for an HTTP status, as Anthropic's API uses them.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    Tool(u64),
}

/// OpenAI chunks → Anthropic events: `message_start` (usage filled), each block opened
/// before its deltas and closed once, `message_delta` with the stop reason and usage,
/// `message_stop`.
pub struct EventWriter {
    id: String,
    model: String,
    input_tokens: u64,
    started: bool,
    open: Option<(usize, Block)>,
    next_index: usize,
    finish: Option<String>,
    usage: Option<Value>,
    stops: Vec<String>,
    /// Text held back while it may be the start of a stop sequence.
    pending: String,
    /// The stop sequence the reply ended on; nothing after it is sent.
    stopped: Option<String>,
    /// Text sent, for counting output tokens when the stream is cut at a stop sequence.
    sent: String,
}

impl EventWriter {
    /// `input_tokens` is the count `message_start` carries before the upstream's own
    /// usage arrives at the end.
    pub fn new(model: &str, input_tokens: u64, stops: Vec<String>) -> EventWriter {
        EventWriter {
            id: message_id(None),
            model: model.to_string(),
            input_tokens,
            started: false,
            open: None,
            next_index: 0,
            finish: None,
            usage: None,
            stops,
            pending: String::new(),
            stopped: None,
            sent: String::new(),
        }
    }

    /// Whether the reply reached a stop sequence: the stream ends here.
    pub fn stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// The text sent so far.
    pub fn sent_text(&self) -> &str {
        &self.sent
    }

    fn send_text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        if text.is_empty() {
            return;
        }
        let index = self.open(Block::Text, json!({"type": "text", "text": ""}), out);
        self.sent.push_str(text);
        out.push(Self::delta(
            index,
            json!({"type": "text_delta", "text": text}),
        ));
    }

    /// Sends held-back text: nothing more can complete a stop sequence.
    fn flush(&mut self, out: &mut Vec<Bytes>) {
        let pending = std::mem::take(&mut self.pending);
        self.send_text(&pending, out);
    }

    /// Adds text, sending what can no longer be the start of a stop sequence.
    fn text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        if self.stops.is_empty() {
            self.send_text(text, out);
            return;
        }
        self.pending.push_str(text);
        if let Some((i, stop)) =
            first_stop(&self.pending, &self.stops).map(|(i, s)| (i, s.to_string()))
        {
            let before = self.pending[..i].to_string();
            self.pending.clear();
            self.send_text(&before, out);
            self.stopped = Some(stop);
            return;
        }
        let hold = self
            .stops
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(1)
            - 1;
        let keep_from = self
            .pending
            .char_indices()
            .rev()
            .nth(hold.saturating_sub(1))
            .map_or(0, |(i, _)| i);
        let keep_from = if hold == 0 {
            self.pending.len()
        } else {
            keep_from
        };
        let ready = self.pending[..keep_from].to_string();
        self.pending.drain(..keep_from);
        self.send_text(&ready, out);
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(sse(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": 0,
                          "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}}),
        ));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some((index, _)) = self.open.take() {
            out.push(sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    /// Opens `kind` unless it is the open block; returns its index.
    fn open(&mut self, kind: Block, start: Value, out: &mut Vec<Bytes>) -> usize {
        if let Some((index, open)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        out.push(sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        index
    }

    fn delta(index: usize, delta: Value) -> Bytes {
        sse(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    }

    /// The events one OpenAI chunk makes (none for a chunk with nothing to say).
    pub fn chunk(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let Ok(value) = serde_json::from_slice::<Value>(chunk) else {
            return out;
        };
        if self.stopped.is_some() {
            return out;
        }
        self.start(&mut out);
        if let Some(u) = value.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = value["choices"].get(0) else {
            return out;
        };
        let delta = &choice["delta"];
        let reasoning = delta
            .get("reasoning_content")
            .or_else(|| delta.get("reasoning"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !reasoning.is_empty() {
            self.flush(&mut out);
            let index = self.open(
                Block::Thinking,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                &mut out,
            );
            out.push(Self::delta(
                index,
                json!({"type": "thinking_delta", "thinking": reasoning}),
            ));
        }
        if let Some(text) = delta.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            self.text(text, &mut out);
            if self.stopped.is_some() {
                return out;
            }
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.flush(&mut out);
            let k = call["index"].as_u64().unwrap_or(0);
            let index = match self.open {
                Some((index, Block::Tool(open))) if open == k => index,
                _ => self.open(
                    Block::Tool(k),
                    json!({"type": "tool_use", "id": call["id"].as_str().unwrap_or_default(),
                           "name": call["function"]["name"].as_str().unwrap_or_default(), "input": {}}),
                    &mut out,
                ),
            };
            if let Some(args) = call["function"]["arguments"].as_str()
                && !args.is_empty()
            {
                out.push(Self::delta(
                    index,
                    json!({"type": "input_json_delta", "partial_json": args}),
                ));
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
        out
    }

    /// The closing events, once the upstream stream has ended.
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.start(&mut out);
        if self.stopped.is_none() {
            self.flush(&mut out);
        }
        self.close(&mut out);
        let usage = usage_of(self.usage.as_ref());
        let finish = self.finish.as_deref();
        let stop_sequence = self.stopped.clone();
        out.push(sse(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": if stop_sequence.is_some() { "stop_sequence" } else { stop_reason(finish) },
                              "stop_sequence": stop_sequence},
                    "usage": usage}),
        ));
        out.push(sse("message_stop", &json!({"type": "message_stop"})));
        out
    }

    /// The OpenAI usage seen so far, for the ledger.
    pub fn usage(&self) -> Option<&Value> {
        self.usage.as_ref()
    }
}

/// Sends a Messages request to an Anthropic provider as it came, with the target's model
/// and the client's `anthropic-version` / `anthropic-beta`.
pub async fn native(
    call: &Call<'_>,
    body: &Value,
    version: Option<&str>,
    beta: Option<&str>,
    stream: bool,
) -> Result<crate::upstream::Response, ProviderError> {
    let mut body = body.clone();
    body["model"] = json!(call.model);
    super::anthropic::post(call, "/v1/messages", &body, version, beta, stream).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(frames: &[Bytes]) -> Vec<(String, Value)> {
        frames
            .iter()
            .map(|f| {
                let text = String::from_utf8_lossy(f);
                let mut lines = text.lines();
                let name = lines
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("event: ")
                    .to_string();
                let data = lines.next().unwrap_or("").trim_start_matches("data: ");
                (name, serde_json::from_str(data).unwrap_or(Value::Null))
            })
            .collect()
    }

    #[test]
    fn tool_results_come_before_the_rest_of_a_user_turn() {
        let body = json!({"model": "m", "max_tokens": 10, "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "text", "text": "checking"},
                    {"type": "tool_use", "id": "t1", "name": "get", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny", "is_error": false},
                    {"type": "text", "text": "thanks"}]}],
            "tool_choice": {"type": "any"}, "stop_sequences": ["END"], "metadata": {"user_id": "u1"}});
        let request = to_chat(&body).expect("valid");
        let v = serde_json::to_value(&request).expect("json");
        assert_eq!(
            v["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            v["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(
            v["messages"][3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "sunny"})
        );
        assert_eq!(
            v["messages"][4],
            json!({"role": "user", "content": "thanks"})
        );
        assert_eq!(
            (
                v["tool_choice"].clone(),
                v["stop"].clone(),
                v["user"].clone()
            ),
            (json!("required"), json!(["END"]), json!("u1"))
        );
    }

    #[test]
    fn a_bad_block_is_named_by_its_path_and_anthropic_only_blocks_are_flagged() {
        let body =
            json!({"model": "m", "messages": [{"role": "user", "content": [{"text": "no type"}]}]});
        let e = to_chat(&body).expect_err("invalid");
        assert_eq!(e.path, "messages[0].content[0].type");
        let body = json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "read this"}, {"type": "document", "source": {}}]}]});
        assert!(to_chat(&body).is_ok());
        assert!(
            native_only(&body).is_some_and(
                |why| why.contains("messages[0].content[1]") && why.contains("document")
            )
        );
    }

    #[test]
    fn every_delta_lands_in_a_block_opened_before_it_and_closed_once() {
        let mut w = EventWriter::new("m", 7, Vec::new());
        let mut frames = Vec::new();
        for chunk in [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "lo"}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}),
        ] {
            frames.extend(w.chunk(chunk.to_string().as_bytes()));
        }
        frames.extend(w.finish());
        let events = events(&frames);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 7);
        assert_eq!(events[5].1["content_block"]["type"], "tool_use");
        assert_eq!(events[9].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[9].1["usage"]["output_tokens"], 3);
    }

    #[test]
    fn a_stop_sequence_split_across_chunks_ends_the_reply_before_it() {
        let mut w = EventWriter::new("m", 1, vec!["END".to_string()]);
        let mut frames = Vec::new();
        for text in ["one two E", "N", "D three"] {
            frames.extend(
                w.chunk(
                    json!({"choices": [{"index": 0, "delta": {"content": text}}]})
                        .to_string()
                        .as_bytes(),
                ),
            );
        }
        assert!(w.stopped());
        frames.extend(w.finish());
        let events = events(&frames);
        let text: String = events
            .iter()
            .filter_map(|(_, e)| e["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "one two ");
        let delta = events
            .iter()
            .find(|(n, _)| n == "message_delta")
            .expect("message_delta");
        assert_eq!(
            (
                delta.1["delta"]["stop_reason"].as_str(),
                delta.1["delta"]["stop_sequence"].as_str()
            ),
            (Some("stop_sequence"), Some("END"))
        );
    }
}
