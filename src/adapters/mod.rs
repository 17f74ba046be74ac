//! Wire formats behind one interface: a canonical request in, a completion or a stream
//! of chunks out; dispatch by adapter kind and the helpers translating adapters share.

pub mod anthropic;
pub mod echo;
pub mod gemini;
pub mod messages;
pub mod openai;
pub mod sse;
pub mod tokens;
pub mod wire;

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::Value;

use crate::chat::{ChatRequest, ChunkStream, Completion, ProviderError};
use crate::config::AdapterKind;
use crate::registry::Provider;

/// Everything one attempt needs: the shared HTTP client, the provider, the model id and the request.
pub struct Call<'a> {
    pub http: &'a crate::upstream::Client,
    pub provider: &'a Provider,
    pub model: &'a str,
    pub request: &'a ChatRequest,
}

impl<'a> Call<'a> {
    /// The request as this provider receives it, with its system prompt: the client's
    /// own, not a copy, when the provider adds none (a long context is not copied to be
    /// sent); a copy differs in its messages alone. The model id to send is
    /// `self.model`, never the request's.
    pub fn prepared(&self) -> Result<Cow<'a, ChatRequest>, ProviderError> {
        let Some(sp) = &self.provider.system_prompt else {
            return Ok(Cow::Borrowed(self.request));
        };
        let today = today();
        let text = sp
            .template
            .render(&serde_json::json!({
                "provider": self.provider.name,
                "model": self.model,
                "today": today,
            }))
            .map_err(|e| {
                ProviderError::Request(format!(
                    "system_prompt of provider {}: {e}",
                    self.provider.name
                ))
            })?;
        let mut request = self.request.clone();
        request.apply_system_prompt(text, sp.mode);
        Ok(Cow::Owned(request))
    }
}

/// Today's date in UTC as YYYY-MM-DD, for templates.
pub fn today() -> String {
    crate::store::civil_date(crate::store::days(crate::store::now_ms()))
}

/// A token count and how it was made: `anthropic` or `gemini` (the provider's own
/// counter) or `estimate` (a local BPE count).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenCount {
    pub input_tokens: u64,
    pub method: &'static str,
}

/// Counts the request's input tokens with the provider's own counter where it has one.
pub async fn count_tokens(call: Call<'_>) -> Result<TokenCount, ProviderError> {
    let native = |input_tokens, method| TokenCount {
        input_tokens,
        method,
    };
    match call.provider.adapter {
        AdapterKind::Anthropic => anthropic::count_tokens(call)
            .await
            .map(|n| native(n, "anthropic")),
        AdapterKind::Gemini => gemini::count_tokens(call)
            .await
            .map(|n| native(n, "gemini")),
        AdapterKind::Openai | AdapterKind::Echo => Ok(estimate(&call)),
    }
}

/// The local BPE count of what this call would send.
pub fn estimate(call: &Call<'_>) -> TokenCount {
    let request = call.prepared().unwrap_or(Cow::Borrowed(call.request));
    TokenCount {
        input_tokens: tokens::messages(call.model, &request),
        method: "estimate",
    }
}

/// Sends a non-streaming request through the provider's adapter.
pub async fn chat(call: Call<'_>) -> Result<Completion, ProviderError> {
    match call.provider.adapter {
        AdapterKind::Openai => openai::chat(call).await,
        AdapterKind::Anthropic => anthropic::chat(call).await,
        AdapterKind::Gemini => gemini::chat(call).await,
        AdapterKind::Echo => echo::chat(call),
    }
}

/// Opens a stream through the provider's adapter; returns once the upstream has answered.
pub async fn chat_stream(call: Call<'_>) -> Result<ChunkStream, ProviderError> {
    match call.provider.adapter {
        AdapterKind::Openai => openai::chat_stream(call).await,
        AdapterKind::Anthropic => anthropic::chat_stream(call).await,
        AdapterKind::Gemini => gemini::chat_stream(call).await,
        AdapterKind::Echo => echo::chat_stream(call),
    }
}

/// An assistant message's tool call: its id, function name and parsed arguments.
pub fn tool_call_parts(
    call: &Value,
    i: usize,
    j: usize,
) -> Result<(&str, &str, Value), ProviderError> {
    let at = || format!("messages[{i}].tool_calls[{j}]");
    let f = call.get("function").ok_or_else(|| {
        ProviderError::BadRequest(format!("{}: expected a `function` object", at()))
    })?;
    let arguments = f.get("arguments").and_then(Value::as_str).unwrap_or("");
    let args = if arguments.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(arguments).map_err(|e| {
            ProviderError::BadRequest(format!("{}.function.arguments: not valid JSON: {e}", at()))
        })?
    };
    Ok((
        call.get("id").and_then(Value::as_str).unwrap_or_default(),
        f.get("name").and_then(Value::as_str).unwrap_or_default(),
        args,
    ))
}

/// The URL of an `image_url` content part (`{"image_url": {"url": …}}` or the bare string form).
pub fn image_url(part: &Value) -> Option<&str> {
    part.get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
}

/// For APIs whose turns must alternate: appends `items` to the last turn when it has the
/// same role, else starts a new turn; empty items add nothing.
pub fn push_turn(turns: &mut Vec<(String, Vec<Value>)>, role: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if last == role => existing.extend(items),
        _ => turns.push((role.to_string(), items)),
    }
}

/// A message role no translated API has.
pub fn unknown_role(i: usize, role: &str) -> ProviderError {
    ProviderError::BadRequest(format!(
        "messages[{i}].role: expected system, developer, user, assistant or tool, found \"{role}\""
    ))
}

/// `data:image/png;base64,AAAA` → ("image/png", "AAAA").
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((
        if mime.is_empty() {
            "application/octet-stream"
        } else {
            mime
        },
        data,
    ))
}

/// Builds OpenAI chunks for adapters that translate another API's stream.
#[derive(Debug, Clone)]
pub struct Chunker {
    pub id: String,
    pub model: String,
    pub created: u64,
}

impl Chunker {
    pub fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let body = serde_json::json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        Bytes::from(body.to_string())
    }

    pub fn usage(&self, usage: &Value) -> Bytes {
        let body = serde_json::json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        });
        Bytes::from(body.to_string())
    }
}

/// Seconds since the epoch, for `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A whole `chat.completion` body from its parts.
pub fn completion_body(
    id: &str,
    model: &str,
    created: u64,
    message: Value,
    finish_reason: &str,
    usage: Option<Value>,
) -> Value {
    let mut body = serde_json::json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    });
    if let Some(usage) = usage {
        body["usage"] = usage;
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_date() {
        let t = today();
        assert_eq!(t.len(), 10);
        assert!(t.starts_with("20"));
    }
}
