//! The offline `echo` provider: answers with the last user message, deterministically,
//! so a fresh install works with no keys and tests need no upstream.

use bytes::Bytes;
use serde_json::{Value, json};

use super::Call;
use crate::chat::{ChunkStream, Completion, ProviderError};

struct Reply {
    id: String,
    model: String,
    text: String,
    prompt_tokens: usize,
    completion_tokens: usize,
}

/// A completion id no other answer of this process or another has: the start time
/// in nanoseconds (per process) and a counter.
fn completion_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static STARTED: OnceLock<u128> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let started = STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("chatcmpl-echo-{started:x}-{n}")
}

/// Word counts stand in for tokens: stable, cheap and good enough for an offline provider.
fn reply(call: &Call<'_>) -> Result<Reply, ProviderError> {
    let request = call.prepared()?;
    if request.response_format()? != crate::chat::ResponseFormat::Text {
        return Err(ProviderError::Unsupported(
            "the echo provider cannot produce structured output (response_format)".to_string(),
        ));
    }
    let text = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.text_content())
        .unwrap_or_default();
    let prompt_tokens = request
        .messages
        .iter()
        .map(|m| m.text_content().split_whitespace().count())
        .sum();
    Ok(Reply {
        id: completion_id(),
        model: call.model.to_string(),
        completion_tokens: text.split_whitespace().count(),
        prompt_tokens,
        text,
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage(r: &Reply) -> Value {
    json!({
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
    })
}

pub fn chat(call: Call<'_>) -> Result<Completion, ProviderError> {
    let r = reply(&call)?;
    let body = json!({
        "id": r.id,
        "object": "chat.completion",
        "created": now(),
        "model": r.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": r.text},
            "finish_reason": "stop",
        }],
        "usage": usage(&r),
    });
    Ok(Completion::of_value(&body))
}

pub fn chat_stream(call: Call<'_>) -> Result<ChunkStream, ProviderError> {
    let r = reply(&call)?;
    let include_usage = call.request.include_usage();
    let created = now();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": r.id, "object": "chat.completion.chunk", "created": created, "model": r.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        Ok(Bytes::from(c.to_string()))
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for word in r.text.split_inclusive(char::is_whitespace) {
        chunks.push(chunk(json!({"content": word}), Value::Null));
    }
    chunks.push(chunk(json!({}), json!("stop")));
    if include_usage {
        let last = json!({
            "id": r.id, "object": "chat.completion.chunk", "created": created, "model": r.model,
            "choices": [], "usage": usage(&r),
        });
        chunks.push(Ok(Bytes::from(last.to_string())));
    }
    Ok(Box::pin(futures_util::stream::iter(chunks)))
}
