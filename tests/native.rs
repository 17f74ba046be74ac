//! Claude and Gemini through the real server, against mock Anthropic and Gemini
//! upstreams serving the recorded fixtures: same requests, same replies and streams as
//! for OpenAI models, errors mapped, fallbacks, and the circuit breaker across reloads.

mod common;

use common::*;
use llmhub::hub::ReloadEvent;
use serde_json::{Value, json};

const HUB: &str = "[routing]\nretries = 0\nbackoff_ms = 1\n";

fn host(mock: &Mock) -> String {
    mock.url.trim_end_matches("/v1").to_string()
}

fn anthropic_provider(cfg: &ConfigDir, name: &str, mock: &Mock, extra: &str) {
    cfg.write(
        &format!("providers.d/{name}.toml"),
        &format!(
            "adapter = \"anthropic\"\nbase_url = \"{}\"\nenv_key = \"{KEY_ENV}\"\n{extra}\n[models.claude-sonnet-4-5]\nmax_output_tokens = 2048\n",
            host(mock)
        ),
    );
}

fn gemini_provider(cfg: &ConfigDir, name: &str, mock: &Mock, extra: &str) {
    cfg.write(
        &format!("providers.d/{name}.toml"),
        &format!(
            "adapter = \"gemini\"\nbase_url = \"{}\"\nenv_key = \"{KEY_ENV}\"\nmodels = [\"gemini-2.5-flash\"]\n{extra}\n",
            host(mock)
        ),
    );
}

/// Replies with a fixture as Anthropic does: JSON, or SSE when the request streams.
async fn anthropic_mock(json_fixture: &'static str, sse_fixture: &'static str) -> Mock {
    Mock::start(move |_, body| async move {
        if body["stream"] == true {
            sse_response(fixture(sse_fixture))
        } else {
            json_response(200, &fixture(json_fixture))
        }
    })
    .await
}

fn chunks(text: &str) -> (Vec<Value>, Vec<String>) {
    let data = sse_data(text);
    let parsed = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk json"))
        .collect();
    (parsed, data)
}

#[tokio::test]
async fn claude_answers_an_openai_request_in_openai_shape() {
    let up = anthropic_mock("anthropic/chat.response.json", "anthropic/chat.stream.sse").await;
    let cfg = ConfigDir::new(HUB);
    anthropic_provider(&cfg, "anthropic", &up, "");
    let server = Server::start(&cfg).await;

    let resp = server
        .chat(json!({"model": "anthropic/claude-sonnet-4-5", "messages": [
            {"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmhub-provider"], "anthropic");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello! How can I assist you today?"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 15);
    assert_eq!(body["usage"]["completion_tokens"], 12);

    let seen = &up.seen()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.body["system"], "You are a helpful assistant.");
    assert_eq!(
        seen.body["max_tokens"], 2048,
        "the model's max_output_tokens when the client sets none"
    );
}

#[tokio::test]
async fn claude_streams_tool_calls_as_openai_chunks() {
    let up = anthropic_mock(
        "anthropic/tools.response.json",
        "anthropic/tools.stream.sse",
    )
    .await;
    let cfg = ConfigDir::new(HUB);
    anthropic_provider(&cfg, "anthropic", &up, "");
    let server = Server::start(&cfg).await;
    let request: Value = serde_json::from_str(&fixture("openai/tools.request.json")).expect("json");
    let mut request = request;
    request["model"] = json!("claude-sonnet-4-5");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let resp = server.chat(request).await;
    assert_eq!(resp.status(), 200);
    let (chunks, data) = chunks(&resp.text().await.expect("body"));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).expect("arguments"),
        json!({"location": "Boston, MA"})
    );
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, vec!["tool_calls"]);
    assert_eq!(
        chunks.last().expect("usage chunk")["usage"]["total_tokens"],
        472
    );

    let sent = &up.seen()[0].body;
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["tools"][0]["input_schema"]["required"][0], "location");
}

#[tokio::test]
async fn gemini_answers_and_streams_in_openai_shape() {
    let up =
        Mock::start(|_, _| async { json_response(200, &fixture("gemini/chat.response.json")) })
            .await;
    let cfg = ConfigDir::new(HUB);
    gemini_provider(&cfg, "gemini", &up, "");
    let server = Server::start(&cfg).await;
    let resp = server
        .chat(json!({"model": "gemini-2.5-flash", "messages": user("Hello!")}))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello! How can I assist you today?"
    );
    assert_eq!(body["usage"]["total_tokens"], 41);
    let seen = &up.seen()[0];
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen.headers["x-goog-api-key"], KEY);
    assert_eq!(seen.body["contents"][0]["parts"][0]["text"], "Hello!");

    let streaming =
        Mock::start(|_, _| async { sse_response(fixture("gemini/tools.stream.sse")) }).await;
    gemini_provider(&cfg, "gemini", &streaming, "");
    let server = Server::start(&cfg).await;
    let resp = server
        .chat(json!({"model": "gemini", "stream": true, "messages": user("What is the weather like in Boston today?")}))
        .await;
    assert_eq!(resp.status(), 200);
    let (chunks, data) = chunks(&resp.text().await.expect("body"));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let call = &chunks[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_current_weather");
    assert_eq!(call["index"], 0);
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_"))
    );
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        streaming.seen()[0].path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
}

#[tokio::test]
async fn a_stream_that_breaks_midway_ends_with_an_error_event_and_no_done() {
    let up = anthropic_mock(
        "anthropic/chat.response.json",
        "anthropic/error.midstream.sse",
    )
    .await;
    let cfg = ConfigDir::new(HUB);
    anthropic_provider(&cfg, "anthropic", &up, "");
    // Gemini cut off after its first event, before any finishReason.
    let first_event = fixture("gemini/chat.stream.sse");
    let first_event = first_event[..first_event.find("\r\n\r\n").expect("crlf") + 4].to_string();
    let cut = Mock::start(move |_, _| {
        let body = first_event.clone();
        async move { sse_response(body) }
    })
    .await;
    gemini_provider(&cfg, "gemini", &cut, "");
    let server = Server::start(&cfg).await;

    for (model, text, message) in [
        ("anthropic", "Hello", "Overloaded"),
        (
            "gemini",
            "Hello!",
            "the stream ended before Gemini gave a finishReason",
        ),
    ] {
        let resp = server
            .chat(json!({"model": model, "stream": true, "messages": user("Hello!")}))
            .await;
        assert_eq!(resp.status(), 200, "{model}: the stream had started");
        let (chunks, data) = chunks(&resp.text().await.expect("body"));
        assert_ne!(data.last().map(String::as_str), Some("[DONE]"), "{model}");
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, text, "{model}");
        let last = chunks.last().expect("error event");
        assert_eq!(last["error"]["code"], "upstream_stream_error", "{model}");
        let msg = last["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(message), "{model}: {msg}");
    }
}

#[tokio::test]
async fn a_529_from_anthropic_falls_back_to_another_provider() {
    let overloaded =
        Mock::start(|_, _| async { json_response(529, &fixture("anthropic/error.5xx.json")) })
            .await;
    let backup = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    anthropic_provider(&cfg, "anthropic", &overloaded, "fallback_to = \"openai\"");
    cfg.provider("openai", &backup.url, "models = [\"gpt-4o-mini\"]");
    let server = Server::start(&cfg).await;
    let resp = server
        .chat(json!({"model": "claude-sonnet-4-5", "messages": user("Hello!")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmhub-provider"], "openai");
    assert_eq!(overloaded.count(), 1);
    assert_eq!(backup.count(), 1);

    // With nowhere to fall back, the client sees the attempt and Anthropic's message.
    cfg.write(
        "providers.d/openai.toml",
        "adapter = \"echo\"\nenabled = false\n",
    );
    let server = Server::start(&cfg).await;
    let resp = server
        .chat(json!({"model": "claude-sonnet-4-5", "messages": user("Hello!")}))
        .await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["attempts"][0]["status"], 529);
    assert!(
        body["error"]["attempts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Overloaded"))
    );
}

#[tokio::test]
async fn provider_errors_reach_the_client_in_openai_shape() {
    let refused =
        Mock::start(|_, _| async { json_response(401, &fixture("anthropic/error.401.json")) })
            .await;
    let bad_key =
        Mock::start(|_, _| async { json_response(400, &fixture("gemini/error.401.json")) }).await;
    let cfg = ConfigDir::new(HUB);
    anthropic_provider(&cfg, "anthropic", &refused, "");
    gemini_provider(&cfg, "gemini", &bad_key, "");
    let server = Server::start(&cfg).await;

    let resp = server
        .chat(json!({"model": "anthropic", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["message"], "invalid x-api-key");
    assert_eq!(body["error"]["type"], "authentication_error");

    let resp = server
        .chat(json!({"model": "gemini", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_argument");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("API key not valid")),
        "{body}"
    );
}

#[tokio::test]
async fn a_gemini_quota_with_a_long_retry_delay_goes_down_the_chain_at_once() {
    let limited =
        Mock::start(|_, _| async { json_response(429, &fixture("gemini/error.429.json")) }).await;
    let backup = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    gemini_provider(
        &cfg,
        "gemini",
        &limited,
        "retries = 3\nfallback_to = \"openai\"",
    );
    cfg.provider("openai", &backup.url, "models = [\"gpt-4o-mini\"]");
    let server = Server::start(&cfg).await;
    let resp = server
        .chat(json!({"model": "gemini", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(limited.count(), 1, "a 26 s retryDelay is not waited for");
    assert_eq!(backup.count(), 1);
}

#[tokio::test]
async fn structured_output_works_on_every_adapter_or_is_refused_clearly() {
    let schema =
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
    let format =
        json!({"type": "json_schema", "json_schema": {"name": "person", "schema": schema}});

    let claude = Mock::start(|_, _| async {
        json_response(200, r#"{"id":"msg_1","model":"claude-sonnet-4-5","content":[{"type":"tool_use","id":"toolu_1","name":"structured_output","input":{"name":"Ada"}}],"stop_reason":"tool_use","usage":{"input_tokens":5,"output_tokens":5}}"#)
    })
    .await;
    let gem = Mock::start(|_, _| async {
        json_response(200, r#"{"candidates":[{"content":{"parts":[{"text":"{\"name\":\"Ada\"}"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"totalTokenCount":8}}"#)
    })
    .await;
    let oai = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    anthropic_provider(&cfg, "anthropic", &claude, "");
    gemini_provider(&cfg, "gemini", &gem, "");
    cfg.provider("openai", &oai.url, "models = [\"gpt-4o-mini\"]");
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    let server = Server::start(&cfg).await;

    for model in ["anthropic", "gemini"] {
        let resp = server
            .chat(json!({"model": model, "messages": user("Ada"), "response_format": format}))
            .await;
        assert_eq!(resp.status(), 200, "{model}");
        let body: Value = resp.json().await.expect("json");
        let content = body["choices"][0]["message"]["content"]
            .as_str()
            .expect("content");
        assert_eq!(
            serde_json::from_str::<Value>(content).expect("JSON content"),
            json!({"name": "Ada"}),
            "{model}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop", "{model}");
    }
    assert_eq!(
        claude.seen()[0].body["tool_choice"],
        json!({"type": "tool", "name": "structured_output"})
    );
    assert_eq!(
        gem.seen()[0].body["generationConfig"]["responseMimeType"],
        "application/json"
    );

    let resp = server
        .chat(json!({"model": "openai", "messages": user("Ada"), "response_format": format}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        oai.seen()[0].body["response_format"],
        format,
        "passed through unchanged"
    );

    let resp = server
        .chat(json!({"model": "echo", "messages": user("Ada"), "response_format": format}))
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unsupported_parameter");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot produce structured output"))
    );
}

#[tokio::test]
async fn the_breaker_stays_open_across_a_reload_and_half_opens_after_cooldown() {
    let failing =
        Mock::start(|_, _| async { json_response(529, &fixture("anthropic/error.5xx.json")) })
            .await;
    let backup = Mock::ok().await;
    let cfg = ConfigDir::new(
        "[routing]\nretries = 0\nbackoff_ms = 1\n[routing.circuit_breaker]\nfailures = 2\ncooldown_s = 600\n",
    );
    anthropic_provider(&cfg, "anthropic", &failing, "fallback_to = \"openai\"");
    cfg.provider("openai", &backup.url, "models = [\"gpt-4o-mini\"]");
    let server = Server::start_watching(&cfg).await;
    let mut events = server.hub.subscribe();
    for _ in 0..3 {
        assert_eq!(
            server
                .chat(json!({"model": "anthropic", "messages": user("hi")}))
                .await
                .status(),
            200
        );
    }
    assert_eq!(failing.count(), 2);

    cfg.provider(
        "openai",
        &backup.url,
        "models = [\"gpt-4o-mini\", \"gpt-4o\"]",
    );
    assert!(matches!(
        next_reload(&mut events).await,
        ReloadEvent::Applied { .. }
    ));
    let resp = server
        .chat(json!({"model": "anthropic", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(failing.count(), 2, "still skipped after the reload");
    let health = server.get_json("/health").await;
    assert_eq!(health["providers"]["anthropic"]["circuit"]["state"], "open");
    assert!(
        health["providers"]["anthropic"]["circuit"]["retry_in_s"]
            .as_f64()
            .is_some_and(|s| s > 500.0)
    );
}

#[tokio::test]
async fn after_the_cooldown_one_probe_goes_through_and_success_closes_the_circuit() {
    let flaky = Mock::start(|n, _| async move {
        if n < 2 {
            json_response(500, &fixture("anthropic/error.500.json"))
        } else {
            json_response(200, &fixture("anthropic/chat.response.json"))
        }
    })
    .await;
    let cfg = ConfigDir::new(
        "[routing]\nretries = 0\nbackoff_ms = 1\n[routing.circuit_breaker]\nfailures = 2\ncooldown_s = 0.2\n",
    );
    anthropic_provider(&cfg, "anthropic", &flaky, "");
    let server = Server::start(&cfg).await;
    for _ in 0..2 {
        assert_eq!(
            server
                .chat(json!({"model": "anthropic", "messages": user("hi")}))
                .await
                .status(),
            502
        );
    }
    let resp = server
        .chat(json!({"model": "anthropic", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 503, "open: skipped without a request");
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]["attempts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("circuit open"))
    );
    assert_eq!(flaky.count(), 2);

    // Wait out the cooldown by watching the breaker itself, not the clock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.get_json("/health").await["providers"]["anthropic"]["circuit"]["state"] == "open" {
        assert!(
            std::time::Instant::now() < deadline,
            "the cooldown never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        server
            .chat(json!({"model": "anthropic", "messages": user("hi")}))
            .await
            .status(),
        200
    );
    assert_eq!(flaky.count(), 3);
    let health = server.get_json("/health").await;
    assert_eq!(
        health["providers"]["anthropic"]["circuit"]["state"],
        "closed"
    );
}

#[tokio::test]
async fn llmhub_models_shows_the_running_servers_circuit_states() {
    let failing =
        Mock::start(|_, _| async { json_response(529, &fixture("anthropic/error.5xx.json")) })
            .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cfg = ConfigDir::new(&format!(
        "[server]\nlisten = \"{addr}\"\n[routing]\nretries = 0\n[routing.circuit_breaker]\nfailures = 1\ncooldown_s = 600\n"
    ));
    anthropic_provider(&cfg, "anthropic", &failing, "");
    let server = Server::start_on(&cfg, listener, false).await;
    assert_eq!(
        server
            .chat(json!({"model": "anthropic", "messages": user("hi")}))
            .await
            .status(),
        502
    );

    let hub = cfg.hub_path();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_llmhub"))
            .args(["models", "--config"])
            .arg(hub)
            .output()
            .expect("run llmhub models")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("anthropic (anthropic adapter) active, circuit open (next probe in"),
        "{text}"
    );
}
