//! Wire formats behind one interface: the canonical OpenAI chat-completions shape in,
//! a completion or a stream of chunks out, and one error type that knows what is retryable.

pub mod echo;
pub mod openai;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{AdapterKind, SystemPromptMode};
use crate::registry::Provider;

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

/// A non-streaming reply: the chat.completion JSON as the client will receive it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub body: Bytes,
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
    },
    #[error("invalid response from upstream: {0}")]
    Protocol(String),
    #[error("{0}")]
    Request(String),
}

impl ProviderError {
    /// Connect errors, timeouts, 408, 429, 5xx and broken responses may succeed elsewhere or later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Timeout(_) | Self::Protocol(_) => true,
            Self::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            Self::Request(_) => false,
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

/// Everything one attempt needs: the shared HTTP client, the provider, the model id and the request.
pub struct Call<'a> {
    pub http: &'a reqwest::Client,
    pub provider: &'a Provider,
    pub model: &'a str,
    pub request: ChatRequest,
}

impl Call<'_> {
    /// The request as this provider receives it: its model id and its system prompt.
    pub fn prepared(&self) -> Result<ChatRequest, ProviderError> {
        let mut request = self.request.clone();
        request.model = self.model.to_string();
        if let Some(sp) = &self.provider.system_prompt {
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
            request.apply_system_prompt(text, sp.mode);
        }
        Ok(request)
    }
}

/// Today's date in UTC as YYYY-MM-DD, for templates.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm), so no date crate is needed for one string.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Sends a non-streaming request through the provider's adapter.
pub async fn chat(call: Call<'_>) -> Result<Completion, ProviderError> {
    match call.provider.adapter {
        AdapterKind::Openai => openai::chat(call).await,
        AdapterKind::Echo => echo::chat(call),
        AdapterKind::Anthropic | AdapterKind::Gemini => Err(unsupported(call.provider)),
    }
}

/// Opens a stream through the provider's adapter; returns once the upstream has answered.
pub async fn chat_stream(call: Call<'_>) -> Result<ChunkStream, ProviderError> {
    match call.provider.adapter {
        AdapterKind::Openai => openai::chat_stream(call).await,
        AdapterKind::Echo => echo::chat_stream(call),
        AdapterKind::Anthropic | AdapterKind::Gemini => Err(unsupported(call.provider)),
    }
}

fn unsupported(p: &Provider) -> ProviderError {
    ProviderError::Request(format!(
        "adapter {} is not available in this version",
        p.adapter.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Value) -> ChatRequest {
        serde_json::from_value(json).expect("request")
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
        };
        for s in [408, 429, 500, 502, 503, 529] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!status(s).is_retryable(), "{s}");
        }
        assert!(ProviderError::Timeout(Duration::from_secs(1)).is_retryable());
    }

    #[test]
    fn today_is_a_date() {
        let t = today();
        assert_eq!(t.len(), 10);
        assert!(t.starts_with("20"));
    }
}
