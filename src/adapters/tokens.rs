//! Local token counts with OpenAI's BPE encodings (tiktoken's ranks, embedded in the
//! binary): o200k for the gpt-4o, gpt-4.1, gpt-5 and o-series families, cl100k for
//! everything else, where it is an estimate of another vendor's tokenizer.

use tiktoken_rs::CoreBPE;

use crate::chat::ChatRequest;

/// Tokens every chat message costs besides its content, and those that prime the
/// reply: OpenAI's published accounting for its chat models.
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

fn encoding(model: &str) -> &'static CoreBPE {
    let id = model.rsplit('/').next().unwrap_or(model);
    let o200k = [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "chatgpt-4o",
        "o1",
        "o3",
        "o4",
    ]
    .iter()
    .any(|prefix| id.starts_with(prefix));
    if o200k {
        tiktoken_rs::o200k_base_singleton()
    } else {
        tiktoken_rs::cl100k_base_singleton()
    }
}

fn count(bpe: &CoreBPE, text: &str) -> u64 {
    bpe.encode_ordinary(text).len() as u64
}

/// A plain text's tokens.
pub fn text(model: &str, text: &str) -> u64 {
    count(encoding(model), text)
}

/// A chat request's input tokens: each message's role, text parts and name, the tool
/// definitions, and the fixed overheads.
pub fn messages(model: &str, request: &ChatRequest) -> u64 {
    let bpe = encoding(model);
    let mut total = REPLY_PRIMING;
    for m in &request.messages {
        total += PER_MESSAGE + count(bpe, &m.role) + count(bpe, &m.text_content());
        if let Some(name) = m.extra.get("name").and_then(|v| v.as_str()) {
            total += 1 + count(bpe, name);
        }
        if let Some(calls) = m.extra.get("tool_calls") {
            total += count(bpe, &calls.to_string());
        }
    }
    if let Some(tools) = request.param("tools") {
        total += count(bpe, &tools.to_string());
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_pick_their_encoding_and_counts_are_stable() {
        assert!(std::ptr::eq(
            encoding("openai/gpt-4o-mini"),
            tiktoken_rs::o200k_base_singleton()
        ));
        assert!(std::ptr::eq(
            encoding("o3-mini"),
            tiktoken_rs::o200k_base_singleton()
        ));
        assert!(std::ptr::eq(
            encoding("mistral-large"),
            tiktoken_rs::cl100k_base_singleton()
        ));
        assert_eq!(text("gpt-4o", "hello world"), 2);
        let request: ChatRequest = serde_json::from_value(serde_json::json!({
            "messages": [{"role": "user", "content": "hello world"}]
        }))
        .expect("request");
        // 3 priming + 3 per message + "user" (1) + "hello world" (2).
        assert_eq!(messages("gpt-4o", &request), 9);
    }
}
