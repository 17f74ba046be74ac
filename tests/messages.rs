//! `POST /v1/messages` end to end: Anthropic SDK-shaped requests to OpenAI-compatible
//! and Anthropic mock upstreams, streams read the way the SDK's accumulator reads them,
//! tool round trips, native pass-through, fallback, errors and count_tokens.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};

fn host(mock: &Mock) -> String {
    mock.url.trim_end_matches("/v1").to_string()
}

fn config() -> ConfigDir {
    let cfg = ConfigDir::new("[routing]\nretries = 0\nbackoff_ms = 1\n");
    cfg.echo();
    cfg
}

fn anthropic_provider(cfg: &ConfigDir, mock: &Mock, extra: &str) {
    cfg.write(
        "providers.d/claude.toml",
        &format!(
            "adapter = \"anthropic\"\nbase_url = \"{}\"\nenv_key = \"{KEY_ENV}\"\n{extra}\n[models.claude-sonnet-4-5]\nmax_output_tokens = 2048\n",
            host(mock)
        ),
    );
}

async fn post(server: &Server, path: &str, body: Value) -> reqwest::Response {
    server
        .client
        .post(format!("{}{path}", server.url))
        .header("x-api-key", "ignored-without-keys")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// Events of an Anthropic stream as (name, data).
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            (name, serde_json::from_str(data).unwrap_or(Value::Null))
        })
        .collect()
}

/// Rebuilds the message the way the Anthropic SDK's stream accumulator does, failing
/// where it would ("content block not found", a block closed twice, events out of order).
fn accumulate(events: &[(String, Value)]) -> Value {
    let mut message = Value::Null;
    let mut open: BTreeMap<u64, bool> = BTreeMap::new();
    let mut json_parts: BTreeMap<u64, String> = BTreeMap::new();
    let mut stopped = false;
    for (name, data) in events {
        assert!(!stopped, "{name} after message_stop");
        match name.as_str() {
            "message_start" => {
                assert!(message.is_null(), "two message_start");
                message = data["message"].clone();
            }
            "content_block_start" => {
                let i = data["index"].as_u64().expect("index");
                assert_eq!(
                    i as usize,
                    message["content"].as_array().expect("content").len(),
                    "indices in order"
                );
                open.insert(i, true);
                message["content"]
                    .as_array_mut()
                    .expect("content")
                    .push(data["content_block"].clone());
            }
            "content_block_delta" => {
                let i = data["index"].as_u64().expect("index");
                assert_eq!(open.get(&i), Some(&true), "content block not found: {i}");
                let block = &mut message["content"][i as usize];
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let t = format!(
                            "{}{}",
                            block["text"].as_str().unwrap_or(""),
                            delta["text"].as_str().unwrap_or("")
                        );
                        block["text"] = json!(t);
                    }
                    Some("input_json_delta") => json_parts
                        .entry(i)
                        .or_default()
                        .push_str(delta["partial_json"].as_str().unwrap_or("")),
                    Some("thinking_delta") => {
                        let t = format!(
                            "{}{}",
                            block["thinking"].as_str().unwrap_or(""),
                            delta["thinking"].as_str().unwrap_or("")
                        );
                        block["thinking"] = json!(t);
                    }
                    other => panic!("unknown delta {other:?}"),
                }
            }
            "content_block_stop" => {
                let i = data["index"].as_u64().expect("index");
                assert_eq!(
                    open.insert(i, false),
                    Some(true),
                    "block {i} closed twice or never opened"
                );
                if let Some(j) = json_parts.remove(&i) {
                    message["content"][i as usize]["input"] =
                        serde_json::from_str(&j).expect("tool input JSON");
                }
            }
            "message_delta" => {
                assert!(
                    open.values().all(|o| !o),
                    "a block still open at message_delta"
                );
                message["stop_reason"] = data["delta"]["stop_reason"].clone();
                message["stop_sequence"] = data["delta"]["stop_sequence"].clone();
                message["usage"]["output_tokens"] = data["usage"]["output_tokens"].clone();
            }
            "message_stop" => stopped = true,
            "ping" => {}
            other => panic!("unexpected event {other}: {data}"),
        }
    }
    assert!(stopped, "no message_stop");
    message
}

#[tokio::test]
async fn an_openai_upstream_answers_in_anthropic_shape_text_images_and_tools() {
    let up = Mock::start(|n, _| async move {
        let message = if n == 0 {
            json!({"role": "assistant", "content": "Sunny in Oslo."})
        } else {
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]})
        };
        let finish = if n == 0 { "stop" } else { "tool_calls" };
        json_response(200, &json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26,
                      "prompt_tokens_details": {"cached_tokens": 4}}}).to_string())
    })
    .await;
    let cfg = config();
    cfg.provider("openai", &up.url, "models = [\"gpt-4.1\"]");
    let server = Server::start(&cfg).await;

    let r = post(&server, "/v1/messages", json!({
        "model": "openai/gpt-4.1", "max_tokens": 100, "temperature": 0.2,
        "system": [{"type": "text", "text": "Be brief."}],
        "metadata": {"user_id": "claude-code-user"},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmhub-provider"], "openai");
    let reply: Value = r.json().await.expect("json");
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["role"], "assistant");
    assert_eq!(
        reply["content"],
        json!([{"type": "text", "text": "Sunny in Oslo."}])
    );
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(reply["usage"]["input_tokens"], 16);
    assert_eq!(reply["usage"]["cache_read_input_tokens"], 4);
    assert_eq!(reply["usage"]["output_tokens"], 6);
    let sent = &up.seen()[0].body;
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        sent["messages"][1]["content"][1]["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgo="
    );
    assert_eq!(
        (sent["max_tokens"].clone(), sent["user"].clone()),
        (json!(100), json!("claude-code-user"))
    );

    // A tool turn: tool_use out, tool_result back in.
    let r = post(&server, "/v1/messages", json!({
        "model": "openai/gpt-4.1", "max_tokens": 100,
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [{"role": "user", "content": "Weather in Oslo?"}]})).await;
    let reply: Value = r.json().await.expect("json");
    assert_eq!(reply["stop_reason"], "tool_use");
    assert_eq!(
        reply["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}})
    );
    let sent = &up.seen()[1].body;
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(
        sent["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
        "string"
    );
    let _ = post(&server, "/v1/messages", json!({
        "model": "openai/gpt-4.1", "max_tokens": 100,
        "messages": [{"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "timeout", "is_error": true}]}]})).await;
    let sent = &up.seen()[2].body;
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "Error: timeout"})
    );

    // Recorded with the surface `messages`.
    server.hub.ledger().expect("ledger").flush().await;
    let rows: Value = server.get_json("/v1/usage/requests").await;
    assert!(
        rows["data"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["surface"] == "messages"),
        "{rows}"
    );
}

#[tokio::test]
async fn streams_follow_anthropic_event_order_with_usage_in_message_start() {
    let up = Mock::start(|_, body| async move {
        assert_eq!(body["stream_options"]["include_usage"], true);
        let chunk = |delta: Value, finish: Value| json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4.1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        let mut sse = String::new();
        for c in [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Let me "}), Value::Null),
            chunk(json!({"content": "check."}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"rust\"}"}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1", "choices": [],
                   "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}}),
        ] {
            sse.push_str(&format!("data: {c}\n\n"));
        }
        sse.push_str("data: [DONE]\n\n");
        sse_response(sse)
    })
    .await;
    let cfg = config();
    cfg.provider("openai", &up.url, "models = [\"gpt-4.1\"]");
    let server = Server::start(&cfg).await;
    let r = post(
        &server,
        "/v1/messages",
        json!({"model": "openai/gpt-4.1", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "look up rust"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.expect("body");
    let events = events(&text);
    assert_eq!(events[0].0, "message_start");
    assert!(
        events[0].1["message"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "input tokens filled: {text}"
    );
    let message = accumulate(&events);
    assert_eq!(
        message["content"][0],
        json!({"type": "text", "text": "Let me check."})
    );
    assert_eq!(
        message["content"][1],
        json!({"type": "tool_use", "id": "call_9", "name": "lookup", "input": {"q": "rust"}})
    );
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["usage"]["output_tokens"], 12);
}

#[tokio::test]
async fn stop_sequences_are_found_and_named() {
    let up = Mock::start(|_, body| async move {
        assert!(body.get("stop").is_none(), "llmhub finds stop sequences itself");
        json_response(200, &json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "alpha beta STOP gamma"}, "finish_reason": "stop"}]}).to_string())
    })
    .await;
    let cfg = config();
    cfg.provider("openai", &up.url, "models = [\"m\"]");
    let server = Server::start(&cfg).await;
    let reply: Value = post(
        &server,
        "/v1/messages",
        json!({"model": "openai/m", "max_tokens": 50,
        "stop_sequences": ["STOP", "NEVER"], "messages": [{"role": "user", "content": "go"}]}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(reply["content"][0]["text"], "alpha beta ");
    assert_eq!(reply["stop_reason"], "stop_sequence");
    assert_eq!(reply["stop_sequence"], "STOP");
}

#[tokio::test]
async fn anthropic_targets_get_the_request_as_it_came_and_fall_back_translated() {
    let claude = Mock::start(|n, body| async move {
        if n == 0 {
            return json_response(200, &json!({"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig-abc"}, {"type": "text", "text": "Hi!"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 9, "output_tokens": 3, "cache_read_input_tokens": 2}}).to_string());
        }
        json_response(529, &fixture("anthropic/error.5xx.json"))
    })
    .await;
    let openai = Mock::start(|_, _| async move {
        json_response(200, &json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "From the fallback."}, "finish_reason": "stop"}]}).to_string())
    })
    .await;
    let cfg = config();
    anthropic_provider(&cfg, &claude, "fallback_to = \"openai\"");
    cfg.provider(
        "openai",
        &openai.url,
        "models = [\"gpt-4.1\"]\ndefault_model = \"gpt-4.1\"",
    );
    let server = Server::start(&cfg).await;
    let request = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 1024,
        "thinking": {"type": "enabled", "budget_tokens": 512},
        "system": [{"type": "text", "text": "cached", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "earlier", "signature": "sig-0"},
                                              {"type": "text", "text": "hello"}]},
            {"role": "user", "content": "again"}],
        "some_future_field": {"kept": true}});
    let r = post(&server, "/v1/messages", request.clone()).await;
    assert_eq!(r.status(), 200);
    let reply: Value = r.json().await.expect("json");
    assert_eq!(
        reply["content"][0]["signature"], "sig-abc",
        "the native reply as it came"
    );
    let seen = &claude.seen()[0];
    let mut expected = request.clone();
    expected["model"] = json!("claude-sonnet-4-5");
    assert_eq!(
        seen.body, expected,
        "thinking, signatures, cache_control and unknown fields pass through"
    );
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        seen.headers["anthropic-beta"],
        "interleaved-thinking-2025-05-14"
    );
    assert_eq!(seen.headers["x-api-key"], KEY);

    // Claude overloaded → the OpenAI fallback answers, translated.
    let r = post(&server, "/v1/messages", request).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llmhub-provider"], "openai");
    let reply: Value = r.json().await.expect("json");
    assert_eq!(reply["content"][0]["text"], "From the fallback.");
    let sent = &openai.seen()[0].body;
    assert_eq!(
        sent["messages"][2],
        json!({"role": "assistant", "content": "hello"}),
        "thinking stays with Anthropic"
    );
}

#[tokio::test]
async fn native_streams_pass_through_and_count_usage() {
    let claude =
        Mock::start(|_, _| async move { sse_response(fixture("anthropic/chat.stream.sse")) }).await;
    let cfg = config();
    anthropic_provider(&cfg, &claude, "");
    let server = Server::start(&cfg).await;
    let r = post(
        &server,
        "/v1/messages",
        json!({"model": "claude/claude-sonnet-4-5", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let text = r.text().await.expect("body");
    assert_eq!(text, fixture("anthropic/chat.stream.sse"), "byte for byte");
    accumulate(&events(&text));
    server.hub.ledger().expect("ledger").flush().await;
    let rows: Value = server.get_json("/v1/usage/requests").await;
    assert_eq!(rows["data"][0]["surface"], "messages");
    assert!(
        rows["data"][0]["input_tokens"].as_i64().unwrap_or(0) >= 15,
        "{rows}"
    );
}

#[tokio::test]
async fn errors_are_anthropic_shaped_with_anthropic_status_codes() {
    let cfg = config();
    cfg.keyless();
    let server = Server::start(&cfg).await;
    let cases = [
        (
            json!({"model": "echo", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}),
            400,
            "invalid_request_error",
            "messages[0].role",
        ),
        (
            json!({"model": "nope/x", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found_error",
            "nope",
        ),
        (
            json!({"model": "keyless/k", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            529,
            "overloaded_error",
            "LLMHUB_TEST_UNSET_KEY",
        ),
    ];
    for (body, status, kind, says) in cases {
        let r = post(&server, "/v1/messages", body.clone()).await;
        assert_eq!(r.status().as_u16(), status, "{body}");
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["type"], kind, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap_or("").contains(says),
            "{e}"
        );
    }
    let r = server
        .client
        .post(format!("{}/v1/messages", server.url))
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["type"], "invalid_request_error");

    // With keys, a missing key is Anthropic's authentication_error; x-api-key works.
    let cfg = ConfigDir::new("[server]\napi_keys_env = [\"LLMHUB_TEST_GW\"]\n");
    cfg.write(".env", &format!("{KEY_ENV}={KEY}\nLLMHUB_TEST_GW=gw-key\n"));
    cfg.echo();
    let server = Server::start(&cfg).await;
    let body =
        json!({"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let r = server
        .client
        .post(format!("{}/v1/messages", server.url))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["type"], "authentication_error");
    let r = server
        .client
        .post(format!("{}/v1/messages", server.url))
        .header("x-api-key", "gw-key")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn count_tokens_asks_anthropic_and_counts_others_locally() {
    let claude =
        Mock::start(|_, _| async move { json_response(200, "{\"input_tokens\": 42}") }).await;
    let cfg = config();
    anthropic_provider(&cfg, &claude, "");
    let server = Server::start(&cfg).await;
    let body = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "How many tokens is this sentence?"}]});
    let mut native = body("claude/claude-sonnet-4-5");
    native["messages"][0]["content"] = json!([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a memo"}},
        {"type": "text", "text": "Summarize"}]);
    let counted: Value = post(&server, "/v1/messages/count_tokens", native)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(counted["input_tokens"], 42);
    assert_eq!(counted["method"], "anthropic");
    let seen = &claude.seen()[0];
    assert_eq!(seen.path, "/v1/messages/count_tokens");
    assert_eq!(
        seen.body["messages"][0]["content"][0]["type"], "document",
        "counted as it came"
    );
    assert!(seen.body.get("max_tokens").is_none());
    let counted: Value = post(&server, "/v1/messages/count_tokens", body("echo"))
        .await
        .json()
        .await
        .expect("json");
    assert!(
        counted["input_tokens"].as_u64().unwrap_or(0) > 5,
        "a real local count, never 0: {counted}"
    );
    assert_eq!(counted["method"], "estimate");
}
