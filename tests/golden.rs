//! Golden tests: canonical OpenAI requests translated to each native wire format, and
//! each provider's fixture replies and streams translated back, compared with checked-in
//! files under tests/golden/. Run with `LLMHUB_BLESS=1` to rewrite them after a reviewed change.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use llmhub::adapters::sse::{Events, Step, Translator};
use llmhub::adapters::{anthropic, gemini};
use llmhub::chat::{ChatRequest, ProviderError};
use serde_json::Value;

const REQUESTS: [&str; 5] = ["plain", "system", "tools", "images", "response_format"];
/// A fixed `created`, so translated replies are byte-stable.
const CREATED: u64 = 1_760_000_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `actual` with the checked-in file, or writes it when blessing.
fn golden(rel: &str, actual: &str) {
    let path = root().join("golden").join(rel);
    if std::env::var_os("LLMHUB_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = read(&path);
    assert_eq!(
        actual, expected,
        "{rel} differs from the golden file (LLMHUB_BLESS=1 rewrites it)"
    );
}

fn pretty(v: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).expect("json"))
}

fn canonical(name: &str) -> ChatRequest {
    serde_json::from_str(&read(&root().join(format!("golden/requests/{name}.json"))))
        .expect("request")
}

#[test]
fn canonical_requests_translate_to_anthropic() {
    for name in REQUESTS {
        let wire =
            anthropic::to_wire(&canonical(name), "claude-sonnet-4-5", 4096, false).expect(name);
        golden(&format!("anthropic/{name}.request.json"), &pretty(&wire));
    }
}

#[test]
fn canonical_requests_translate_to_gemini() {
    for name in REQUESTS {
        let wire = gemini::to_wire(&canonical(name), "gemini-2.5-flash").expect(name);
        golden(&format!("gemini/{name}.request.json"), &pretty(&wire));
    }
}

#[test]
fn the_fixture_chat_requests_come_out_as_the_providers_document_them() {
    // The shared scenario: the canonical system request reduced to the fixture's content.
    let request: ChatRequest =
        serde_json::from_str(&read(&root().join("fixtures/openai/chat.request.json")))
            .expect("request");
    let wire = anthropic::to_wire(&request, "claude-sonnet-4-5", 1024, false).expect("anthropic");
    let expected: Value =
        serde_json::from_str(&read(&root().join("fixtures/anthropic/chat.request.json")))
            .expect("json");
    assert_eq!(wire, expected);
    let stream: ChatRequest = serde_json::from_str(&read(
        &root().join("fixtures/openai/chat.stream.request.json"),
    ))
    .expect("request");
    let wire = anthropic::to_wire(&stream, "claude-sonnet-4-5", 1024, true).expect("anthropic");
    let expected: Value = serde_json::from_str(&read(
        &root().join("fixtures/anthropic/chat.stream.request.json"),
    ))
    .expect("json");
    assert_eq!(wire, expected);

    let wire = gemini::to_wire(&request, "gemini-2.5-flash").expect("gemini");
    let expected: Value =
        serde_json::from_str(&read(&root().join("fixtures/gemini/chat.request.json")))
            .expect("json");
    assert_eq!(wire, expected);

    let tools: ChatRequest =
        serde_json::from_str(&read(&root().join("fixtures/openai/tools.request.json")))
            .expect("request");
    let wire = anthropic::to_wire(&tools, "claude-sonnet-4-5", 1024, false).expect("anthropic");
    let expected: Value =
        serde_json::from_str(&read(&root().join("fixtures/anthropic/tools.request.json")))
            .expect("json");
    assert_eq!(wire, expected);
    let wire = gemini::to_wire(&tools, "gemini-2.5-flash").expect("gemini");
    let expected: Value =
        serde_json::from_str(&read(&root().join("fixtures/gemini/tools.request.json")))
            .expect("json");
    assert_eq!(wire, expected);
}

#[test]
fn linked_images_go_to_anthropic_as_urls_and_are_refused_for_gemini() {
    let request: ChatRequest = serde_json::from_value(
        serde_json::json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
    )
    .expect("request");
    let wire = anthropic::to_wire(&request, "m", 10, false).expect("anthropic");
    assert_eq!(
        wire["messages"][0]["content"][0]["source"],
        serde_json::json!({"type": "url", "url": "https://example.com/cat.png"})
    );
    let err = gemini::to_wire(&request, "gemini-2.5-flash").expect_err("gemini needs data URLs");
    assert!(
        matches!(err, ProviderError::Unsupported(ref m) if m.contains("messages[0].content[0]")),
        "{err}"
    );
}

#[test]
fn anthropic_replies_translate_back() {
    for (fixture, json_mode) in [("chat", false), ("tools", false)] {
        let reply: Value = serde_json::from_str(&read(
            &root().join(format!("fixtures/anthropic/{fixture}.response.json")),
        ))
        .expect("json");
        let openai = anthropic::from_wire(&reply, CREATED, json_mode).expect(fixture);
        golden(
            &format!("anthropic/{fixture}.response.openai.json"),
            &pretty(&openai),
        );
    }
    // Structured output comes back as the forced tool's input, returned as content.
    let reply = serde_json::json!({"id": "msg_1", "model": "claude-sonnet-4-5", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": anthropic::JSON_TOOL, "input": {"name": "Ada Lovelace", "born": 1815}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 20, "output_tokens": 12}});
    let openai = anthropic::from_wire(&reply, CREATED, true).expect("json mode");
    golden(
        "anthropic/response_format.response.openai.json",
        &pretty(&openai),
    );
}

#[test]
fn gemini_replies_translate_back() {
    for fixture in ["chat", "tools"] {
        let reply: Value = serde_json::from_str(&read(
            &root().join(format!("fixtures/gemini/{fixture}.response.json")),
        ))
        .expect("json");
        let openai = gemini::from_wire(&reply, "gemini-2.5-flash", CREATED).expect(fixture);
        golden(
            &format!("gemini/{fixture}.response.openai.json"),
            &pretty(&openai),
        );
    }
}

/// Feeds a recorded SSE body through a translator as the live driver does; each chunk
/// becomes one JSON line, an error becomes a final `{"error": ...}` line.
async fn translate_stream<T: Translator>(sse: &str, mut translator: T) -> String {
    let mut events = Events::new(futures_util::stream::iter([Ok::<
        _,
        std::convert::Infallible,
    >(Bytes::from(
        sse.to_string(),
    ))]));
    let mut lines = Vec::new();
    let mut finished = false;
    while let Some(event) = events.next().await {
        let event = event.expect("well-formed SSE");
        match translator.event(event) {
            Ok(Step::Chunk(chunk)) => lines.push(chunk),
            Ok(Step::Chunks(chunks)) => lines.extend(chunks),
            Ok(Step::Finished(chunks)) => {
                lines.extend(chunks);
                finished = true;
                break;
            }
            Err(e) => {
                lines.push(Bytes::from(
                    serde_json::json!({"error": e.to_string(), "retryable": e.is_retryable()})
                        .to_string(),
                ));
                finished = true;
                break;
            }
        }
    }
    if !finished {
        match translator.closed() {
            Ok(chunks) => lines.extend(chunks),
            Err(e) => lines.push(Bytes::from(
                serde_json::json!({"error": e.to_string(), "retryable": e.is_retryable()})
                    .to_string(),
            )),
        }
    }
    let mut out = String::new();
    for line in lines {
        // Normalise each chunk's key order so the file diffs well.
        let v: Value = serde_json::from_slice(&line).expect("chunk json");
        out.push_str(&serde_json::to_string(&v).expect("json"));
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn anthropic_streams_translate_back() {
    for fixture in ["chat.stream", "tools.stream", "error.midstream"] {
        let sse = read(&root().join(format!("fixtures/anthropic/{fixture}.sse")));
        let out =
            translate_stream(&sse, anthropic::StreamTranslator::new(true, false, CREATED)).await;
        golden(&format!("anthropic/{fixture}.openai.jsonl"), &out);
    }
    // A stream cut before message_stop is an error, not a short answer.
    let sse = read(&root().join("fixtures/anthropic/chat.stream.sse"));
    let cut = &sse[..sse.find("event: message_delta").expect("message_delta")];
    let out = translate_stream(cut, anthropic::StreamTranslator::new(false, false, CREATED)).await;
    assert!(out.trim_end().ends_with(r#""retryable":true}"#), "{out}");
    assert!(
        out.contains("the stream ended before the answer was complete"),
        "{out}"
    );
}

#[tokio::test]
async fn gemini_streams_translate_back() {
    for fixture in ["chat.stream", "tools.stream"] {
        let sse = read(&root().join(format!("fixtures/gemini/{fixture}.sse")));
        let out = translate_stream(
            &sse,
            gemini::StreamTranslator::new("gemini-2.5-flash", true, CREATED),
        )
        .await;
        golden(&format!("gemini/{fixture}.openai.jsonl"), &out);
    }
    for verbatim in [
        "streaming-success-basic-reply-short.firebase",
        "streaming-thinking-function-call.firebase",
    ] {
        let sse = read(&root().join(format!("fixtures/gemini/verbatim/{verbatim}.sse")));
        let out = translate_stream(
            &sse,
            gemini::StreamTranslator::new("gemini-2.5-flash", false, CREATED),
        )
        .await;
        golden(&format!("gemini/{verbatim}.openai.jsonl"), &out);
    }
    let sse = read(&root().join("fixtures/gemini/chat.stream.sse"));
    let first_event_only = &sse[..sse.find("\r\n\r\n").expect("crlf framing") + 4];
    let out = translate_stream(
        first_event_only,
        gemini::StreamTranslator::new("m", false, CREATED),
    )
    .await;
    assert!(
        out.contains("the stream ended before Gemini gave a finishReason"),
        "{out}"
    );
}

/// Anthropic Messages requests (as the SDKs send them) into the canonical shape, and on
/// to Gemini's wire format (tool schemas cleaned for Gemini on the way).
#[test]
fn messages_requests_translate_to_openai_and_gemini() {
    use llmhub::adapters::messages;
    for name in ["chat", "tools"] {
        let body: Value = serde_json::from_str(&read(
            &root().join(format!("fixtures/anthropic/{name}.request.json")),
        ))
        .expect("json");
        let canonical = messages::to_chat(&body).expect(name);
        golden(
            &format!("messages/{name}.request.openai.json"),
            &pretty(&serde_json::to_value(&canonical).expect("json")),
        );
        let wire = gemini::to_wire(&canonical, "gemini-2.5-flash").expect(name);
        golden(
            &format!("messages/{name}.request.gemini.json"),
            &pretty(&wire),
        );
    }
}

#[test]
fn openai_and_gemini_replies_translate_to_messages() {
    use llmhub::adapters::messages;
    let openai: Value =
        serde_json::from_str(&read(&root().join("fixtures/openai/chat.response.json")))
            .expect("json");
    golden(
        "messages/openai.chat.response.json",
        &pretty(&messages::from_completion(
            &openai,
            &[],
            "openai/gpt-4o-mini",
        )),
    );
    for fixture in ["chat", "tools"] {
        let reply: Value = serde_json::from_str(&read(
            &root().join(format!("fixtures/gemini/{fixture}.response.json")),
        ))
        .expect("json");
        let completion = gemini::from_wire(&reply, "gemini-2.5-flash", CREATED).expect(fixture);
        let mut message = messages::from_completion(&completion, &[], "gemini/gemini-2.5-flash");
        message["id"] = Value::from("msg_golden");
        golden(
            &format!("messages/gemini.{fixture}.response.json"),
            &pretty(&message),
        );
    }
}

/// OpenAI chunks → Anthropic events, with the random message id fixed.
fn to_events(chunks: &str) -> String {
    use llmhub::adapters::messages::EventWriter;
    let mut writer = EventWriter::new("gateway-model", 15, Vec::new());
    let mut frames = Vec::new();
    for line in chunks.lines().filter(|l| !l.trim().is_empty()) {
        frames.extend(writer.chunk(line.as_bytes()));
    }
    frames.extend(writer.finish());
    let mut out = String::new();
    for frame in frames {
        let text = String::from_utf8_lossy(&frame).into_owned();
        let (name, data) = text.trim_end().split_once('\n').expect("event and data");
        let mut data: Value =
            serde_json::from_str(data.trim_start_matches("data: ")).expect("data json");
        if data["type"] == "message_start" {
            data["message"]["id"] = Value::from("msg_golden");
        }
        out.push_str(&format!("{name}\ndata: {data}\n\n"));
    }
    out
}

#[tokio::test]
async fn openai_and_gemini_streams_translate_to_messages_events() {
    let openai: String = read(&root().join("fixtures/openai/chat.stream.sse"))
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| format!("{d}\n"))
        .collect();
    golden("messages/openai.chat.stream.sse", &to_events(&openai));
    for fixture in ["chat.stream", "tools.stream"] {
        let sse = read(&root().join(format!("fixtures/gemini/{fixture}.sse")));
        let chunks = translate_stream(
            &sse,
            gemini::StreamTranslator::new("gemini-2.5-flash", true, CREATED),
        )
        .await;
        golden(
            &format!("messages/gemini.{fixture}.sse"),
            &to_events(&chunks),
        );
    }
}
