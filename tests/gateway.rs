//! The OpenAI-compatible API end to end: proxying, streaming, addressing, fallbacks,
//! retries, the circuit breaker, auth and every error status.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

const HUB: &str = "[routing]\nretries = 0\nbackoff_ms = 1\n";

#[tokio::test]
async fn non_stream_reply_is_forwarded_byte_for_byte_with_unknown_fields_passed_up() {
    let upstream = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &upstream.url, "models = [\"gpt-4o-mini\"]");
    let server = Server::start(&cfg).await;

    let resp = server
        .chat(json!({
            "model": "up/gpt-4o-mini",
            "messages": user("Hello!"),
            "seed": 42,
            "logit_bias": {"50256": -100},
            "x_vendor_option": {"deep": [1, 2]},
        }))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmhub-provider"], "up");
    assert_eq!(resp.headers()["x-llmhub-model"], "gpt-4o-mini");
    assert_eq!(
        resp.text().await.expect("body"),
        fixture("openai/chat.response.json")
    );

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(seen[0].body["model"], "gpt-4o-mini");
    assert_eq!(seen[0].body["seed"], 42);
    assert_eq!(seen[0].body["logit_bias"]["50256"], -100);
    assert_eq!(seen[0].body["x_vendor_option"]["deep"][1], 2);
    assert!(seen[0].body.get("stream").is_none());
}

#[tokio::test]
async fn stream_is_forwarded_chunk_by_chunk_as_it_arrives() {
    // The mock sends the first chunks, then holds the rest until the client has seen them:
    // a gateway that buffered the whole answer would never deliver the first chunk.
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = std::sync::Mutex::new(Some(release_rx));
    let fixture_sse = fixture("openai/chat.stream.sse");
    let events: Vec<String> = fixture_sse
        .split_inclusive("\n\n")
        .map(str::to_string)
        .collect();
    let upstream = Mock::start(move |_, _| {
        let events = events.clone();
        let release = release_rx.lock().expect("lock").take();
        async move {
            let (first, rest) = events.split_at(2);
            let first = first.concat();
            let rest = rest.concat();
            let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
                .chain(futures_util::stream::once(async move {
                    if let Some(r) = release {
                        let _ = r.await;
                    }
                    Ok(rest)
                }));
            sse_response(axum::body::Body::from_stream(body))
        }
    })
    .await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &upstream.url, "models = [\"gpt-4o-mini\"]");
    let server = Server::start(&cfg).await;

    let resp = server
        .chat(json!({"model": "up/gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}, "messages": user("Hello!")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-llmhub-provider"], "up");
    let mut body = resp.bytes_stream();
    let mut received = String::new();
    while sse_data(&received).len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("first chunks arrive while the upstream holds the rest")
            .expect("stream open")
            .expect("bytes");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    release_tx.send(()).expect("release");
    while let Some(chunk) = body.next().await {
        received.push_str(&String::from_utf8_lossy(&chunk.expect("bytes")));
    }
    assert_eq!(
        sse_data(&received),
        sse_data(&fixture_sse),
        "every event, in order, ending in [DONE]"
    );
    assert_eq!(
        sse_data(&received).last().map(String::as_str),
        Some("[DONE]")
    );

    let sent = &upstream.seen()[0].body;
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn echo_streams_and_honours_include_usage() {
    let cfg = ConfigDir::new(HUB);
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    let server = Server::start(&cfg).await;
    for include in [true, false] {
        let resp = server
            .chat(json!({"model": "echo", "stream": true, "stream_options": {"include_usage": include}, "messages": user("one two three")}))
            .await;
        let text = resp.text().await.expect("body");
        let data = sse_data(&text);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).expect("chunk json"))
            .collect();
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "one two three");
        let usage = chunks
            .last()
            .and_then(|c| c.get("usage"))
            .filter(|u| !u.is_null());
        assert_eq!(usage.is_some(), include, "{text}");
        if include {
            assert_eq!(usage.and_then(|u| u["completion_tokens"].as_u64()), Some(3));
        }
    }
}

#[tokio::test]
async fn every_addressing_form_reaches_the_right_provider() {
    let a = Mock::ok().await;
    let b = Mock::ok().await;
    let cfg = ConfigDir::new(&format!("{HUB}[groups]\nteam = [\"b/beta-1\", \"a\"]\n"));
    cfg.provider(
        "a",
        &a.url,
        "default_model = \"alpha-1\"\n[models.alpha-1]\naliases = [\"alpha\"]\n[models.shared]\n",
    );
    cfg.provider("b", &b.url, "models = [\"beta-1\", \"shared\"]");
    let server = Server::start(&cfg).await;

    let cases = [
        ("a/alpha-1", "a", "alpha-1"),
        ("a/anything-unlisted", "a", "anything-unlisted"),
        ("a/alpha", "a", "alpha-1"),
        ("team", "b", "beta-1"),
        ("a", "a", "alpha-1"),
        ("b", "b", "beta-1"),
        ("beta-1", "b", "beta-1"),
        ("alpha", "a", "alpha-1"),
    ];
    for (address, provider, model) in cases {
        let resp = server
            .chat(json!({"model": address, "messages": user("hi")}))
            .await;
        assert_eq!(resp.status(), 200, "{address}");
        assert_eq!(resp.headers()["x-llmhub-provider"], provider, "{address}");
        assert_eq!(resp.headers()["x-llmhub-model"], model, "{address}");
    }
    assert_eq!(
        a.seen().last().map(|s| s.body["model"].clone()),
        Some(json!("alpha-1"))
    );

    let resp = server
        .chat(json!({"model": "shared", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "model_ambiguous");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("a/shared") && msg.contains("b/shared"),
        "{msg}"
    );

    let resp = server
        .chat(json!({"model": "nope", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("team") && msg.contains("a/alpha-1") && msg.contains("b/beta-1"),
        "{msg}"
    );
}

async fn two_provider_server(first_url: &str, first_extra: &str) -> (Mock, Server, ConfigDir) {
    let backup = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider(
        "first",
        first_url,
        &format!("models = [\"m1\"]\nfallback_to = \"second\"\n{first_extra}"),
    );
    cfg.provider("second", &backup.url, "models = [\"m2\"]");
    let server = Server::start(&cfg).await;
    (backup, server, cfg)
}

#[tokio::test]
async fn falls_back_after_500_and_429_and_lists_the_attempt() {
    for status in [500, 429, 503] {
        let failing = Mock::failing(status).await;
        let (backup, server, _cfg) = two_provider_server(&failing.url, "").await;
        let resp = server
            .chat(json!({"model": "first", "messages": user("hi")}))
            .await;
        assert_eq!(resp.status(), 200, "after {status}");
        assert_eq!(resp.headers()["x-llmhub-provider"], "second");
        assert_eq!(resp.headers()["x-llmhub-model"], "m2");
        assert_eq!(failing.count(), 1);
        assert_eq!(backup.count(), 1);
        assert_eq!(backup.seen()[0].body["model"], "m2");
    }
}

#[tokio::test]
async fn falls_back_after_a_timeout() {
    let hanging = Mock::start(|_, _| std::future::pending::<axum::response::Response>()).await;
    let (backup, server, _cfg) = two_provider_server(&hanging.url, "timeout_s = 0.3").await;
    let resp = server
        .chat(json!({"model": "first", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmhub-provider"], "second");
    assert_eq!(backup.count(), 1);

    // Streams fall back too when the upstream says nothing before the timeout.
    let resp = server
        .chat(json!({"model": "first", "stream": true, "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmhub-provider"], "second");
}

#[tokio::test]
async fn falls_back_when_the_connection_is_refused() {
    let url = refused_url().await;
    let (backup, server, _cfg) = two_provider_server(&url, "").await;
    let resp = server
        .chat(json!({"model": "first/m1", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmhub-provider"], "second");
    assert_eq!(backup.count(), 1);
}

#[tokio::test]
async fn a_client_error_is_returned_as_the_upstream_said_without_fallback() {
    let body = r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#;
    let refusing = Mock::start(move |_, _| async move { json_response(400, body) }).await;
    let (backup, server, _cfg) = two_provider_server(&refusing.url, "").await;
    let resp = server
        .chat(json!({"model": "first", "frequency_penalty": 9, "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 400);
    let got: Value = resp.json().await.expect("json");
    assert_eq!(got["error"]["message"], "Invalid value for 'temperature'");
    assert_eq!(got["error"]["param"], "temperature");
    assert_eq!(backup.count(), 0, "a 400 must not fall back");
    assert_eq!(refusing.count(), 1, "a 400 must not be retried");
}

#[tokio::test]
async fn the_provider_key_never_reaches_the_client() {
    // An upstream that quotes the credential it was sent in its error message.
    let leaky = Mock::start(|_, _| async {
        json_response(401, &format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error","code":"invalid_api_key","param":null}}}}"#))
    })
    .await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("leaky", &leaky.url, "models = [\"m\"]");
    let server = Server::start(&cfg).await;
    let resp = server
        .chat(json!({"model": "leaky", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.expect("body");
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
    let health = server.get_json("/health").await.to_string();
    assert!(!health.contains(KEY));
}

#[tokio::test]
async fn retries_honour_retry_after_before_falling_back() {
    // First answer: 429 with retry-after-ms 300; then success. backoff_ms is 1, so the
    // gap between the two requests comes from the header, not from the backoff.
    let flaky = Mock::start(|n, _| async move {
        if n == 0 {
            let mut r = json_response(429, &fixture("openai/error.429.json"));
            r.headers_mut()
                .insert("retry-after-ms", "300".parse().expect("header"));
            r
        } else {
            json_response(200, &fixture("openai/chat.response.json"))
        }
    })
    .await;
    let (backup, server, _cfg) = two_provider_server(&flaky.url, "retries = 1").await;
    let resp = server
        .chat(json!({"model": "first", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmhub-provider"], "first");
    let seen = flaky.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(290), "waited only {gap:?}");
    assert_eq!(backup.count(), 0);
}

#[tokio::test]
async fn a_retry_after_too_long_to_wait_goes_down_the_chain_at_once() {
    let limited = Mock::start(|_, _| async {
        let mut r = json_response(429, &fixture("openai/error.429.json"));
        r.headers_mut()
            .insert("retry-after", "3600".parse().expect("header"));
        r
    })
    .await;
    let (backup, server, _cfg) = two_provider_server(&limited.url, "retries = 3").await;
    let resp = server
        .chat(json!({"model": "first", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llmhub-provider"], "second");
    assert_eq!(limited.count(), 1);
    assert_eq!(backup.count(), 1);
}

#[tokio::test]
async fn retries_with_backoff_on_server_errors() {
    let flaky = Mock::start(|n, _| async move {
        if n < 2 {
            json_response(502, &fixture("openai/error.5xx.json"))
        } else {
            json_response(200, &fixture("openai/chat.response.json"))
        }
    })
    .await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("flaky", &flaky.url, "models = [\"m\"]\nretries = 2");
    let server = Server::start(&cfg).await;
    let resp = server
        .chat(json!({"model": "flaky", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(flaky.count(), 3);
}

#[tokio::test]
async fn exhaustion_lists_every_attempt() {
    let one = Mock::failing(500).await;
    let two = Mock::failing(503).await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("one", &one.url, "models = [\"m1\"]\nfallback_to = \"two\"");
    cfg.provider(
        "two",
        &two.url,
        "models = [\"m2\"]\nfallback_to = \"three\"",
    );
    cfg.write(
        "providers.d/three.toml",
        "base_url = \"http://127.0.0.1:9/v1\"\nenv_key = \"LLMHUB_TEST_UNSET_KEY\"\nmodels = [\"m3\"]\n",
    );
    let server = Server::start(&cfg).await;
    let resp = server
        .chat(json!({"model": "one", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "upstream_error");
    let attempts = body["error"]["attempts"]
        .as_array()
        .expect("attempts")
        .clone();
    assert_eq!(attempts.len(), 3, "{body}");
    assert_eq!(attempts[0]["provider"], "one");
    assert_eq!(attempts[0]["model"], "m1");
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[1]["provider"], "two");
    assert_eq!(attempts[1]["status"], 503);
    assert_eq!(attempts[2]["provider"], "three");
    assert_eq!(attempts[2]["outcome"], "skipped");
    assert_eq!(attempts[2]["error"], "LLMHUB_TEST_UNSET_KEY is not set");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("one/m1 500") && msg.contains("two/m2 503"),
        "{msg}"
    );
}

#[tokio::test]
async fn timeouts_everywhere_give_504_and_no_active_provider_gives_503() {
    let hanging = Mock::start(|_, _| std::future::pending::<axum::response::Response>()).await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("slow", &hanging.url, "models = [\"m\"]\ntimeout_s = 0.2");
    cfg.write(
        "providers.d/off.toml",
        "base_url = \"http://127.0.0.1:9/v1\"\nenv_key = \"LLMHUB_TEST_UNSET_KEY\"\nmodels = [\"m-off\"]\n",
    );
    let server = Server::start(&cfg).await;
    let resp = server
        .chat(json!({"model": "slow", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 504);
    let resp = server
        .chat(json!({"model": "off", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "no_provider_available");
}

#[tokio::test]
async fn the_circuit_opens_and_requests_go_straight_down_the_chain() {
    let failing = Mock::failing(500).await;
    let backup = Mock::ok().await;
    let cfg = ConfigDir::new(
        "[routing]\nretries = 0\nbackoff_ms = 1\n[routing.circuit_breaker]\nfailures = 2\ncooldown_s = 600\n",
    );
    cfg.provider(
        "first",
        &failing.url,
        "models = [\"m1\"]\nfallback_to = \"second\"",
    );
    cfg.provider("second", &backup.url, "models = [\"m2\"]");
    let server = Server::start(&cfg).await;
    for _ in 0..4 {
        let resp = server
            .chat(json!({"model": "first", "messages": user("hi")}))
            .await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        failing.count(),
        2,
        "after two failures the provider is skipped"
    );
    assert_eq!(backup.count(), 4);
    let health = server.get_json("/health").await;
    assert_eq!(health["providers"]["first"]["circuit"]["state"], "open");
}

#[tokio::test]
async fn system_prompt_templates_are_merged_or_prepended() {
    let up = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider(
        "merge",
        &up.url,
        "models = [\"m\"]\nsystem_prompt = \"You are {{ model }} via {{ provider }}.\"",
    );
    cfg.provider(
        "prepend",
        &up.url,
        "models = [\"p\"]\nsystem_prompt = \"Rules for {{ model }}.\"\nsystem_prompt_mode = \"prepend\"",
    );
    let server = Server::start(&cfg).await;
    let messages =
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]);
    server
        .chat(json!({"model": "merge", "messages": messages}))
        .await;
    server
        .chat(json!({"model": "prepend", "messages": messages}))
        .await;
    server
        .chat(json!({"model": "merge", "messages": user("hi")}))
        .await;
    let seen = up.seen();
    assert_eq!(
        seen[0].body["messages"][0]["content"],
        "You are m via merge.\n\nBe brief."
    );
    assert_eq!(seen[0].body["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(seen[1].body["messages"][0]["content"], "Rules for p.");
    assert_eq!(seen[1].body["messages"][1]["content"], "Be brief.");
    assert_eq!(seen[2].body["messages"][0]["role"], "system");
    assert_eq!(
        seen[2].body["messages"][0]["content"],
        "You are m via merge."
    );
}

#[tokio::test]
async fn an_openai_compatible_upstream_gets_the_request_as_the_client_wrote_it() {
    let up = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &up.url, "models = [\"m\"]");
    cfg.provider(
        "ruled",
        &up.url,
        "models = [\"r\"]\nsystem_prompt = \"Rules.\"",
    );
    let server = Server::start(&cfg).await;
    // Escapes, a number past what f64 holds, a spelling of 0.7, member order: all as
    // written. Only the model id (the provider's) and the stream fields (llmhub's) change.
    let messages = r#"[{"role": "user", "content": "caf\u00e9 \"quoted\""}]"#;
    let rest = r#""seed": 123456789012345678901234567890, "temperature": 0.70, "metadata": {"b": 1, "a": 2}"#;
    // Between members the separators are llmhub's; a member is copied whole.
    let sent = format!(
        r#"{{"model":"m","messages": {messages},"seed": 123456789012345678901234567890,"temperature": 0.70,"metadata": {{"b": 1, "a": 2}}"#
    );
    let resp = server
        .chat_text(format!(
            r#"{{"model": "up/m", "messages": {messages}, {rest}, "stream": false}}"#
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let resp = server
        .chat_text(format!(
            r#"{{"stream": true, "model": "up/m", "messages": {messages}, {rest}}}"#
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .expect("body")
            .ends_with("data: [DONE]\n\n")
    );
    let seen = up.seen();
    let text = |i: usize| String::from_utf8(seen[i].text.to_vec()).expect("utf-8");
    assert_eq!(text(0), format!("{sent}}}"));
    assert_eq!(
        text(1),
        format!(r#"{sent},"stream":true,"stream_options":{{"include_usage":true}}}}"#)
    );
    // A provider's system prompt changes the messages: they alone are written anew.
    let resp = server
        .chat_text(r#"{"model": "ruled/r", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.70}"#)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        &up.seen()[2].text[..],
        br#"{"model":"r","messages":[{"role":"system","content":"Rules."},{"role":"user","content":"hi"}],"temperature": 0.70}"#
    );
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_errors_with_the_right_status() {
    let cfg = ConfigDir::new("[server]\nmax_body_bytes = 2048\n");
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    let server = Server::start(&cfg).await;
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        ("{not json".into(), 400, "invalid_json", None),
        (
            r#"{"model":"echo"}"#.into(),
            400,
            "invalid_request",
            Some("messages"),
        ),
        (
            r#"{"model":"echo","messages":[]}"#.into(),
            400,
            "invalid_request",
            Some("messages"),
        ),
        (
            r#"{"model":"echo","messages":"hi"}"#.into(),
            400,
            "invalid_request",
            Some("messages"),
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#.into(),
            400,
            "model_required",
            Some("model"),
        ),
        (
            r#"{"model":"ghost","messages":[{"role":"user","content":"x"}]}"#.into(),
            404,
            "model_not_found",
            Some("model"),
        ),
        (
            format!(
                r#"{{"model":"echo","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(4096)
            ),
            413,
            "request_too_large",
            None,
        ),
    ];
    for (body, status, code, param) in cases {
        let resp = server.chat_text(body.clone()).await;
        assert_eq!(resp.status().as_u16(), status, "{body:.80}");
        let got: Value = resp.json().await.expect("json error body");
        assert_eq!(got["error"]["code"], code, "{body:.80}");
        assert!(
            got["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(got["error"]["type"].is_string());
        if let Some(param) = param {
            assert_eq!(got["error"]["param"], param, "{body:.80}");
        }
    }
    let resp = server
        .client
        .get(format!("{}/v1/nothing", server.url))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 404);
    let got: Value = resp.json().await.expect("json");
    assert_eq!(got["error"]["code"], "not_found");
    let resp = server
        .client
        .get(format!("{}/v1/chat/completions", server.url))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn the_gateway_key_is_required_when_configured() {
    let cfg = ConfigDir::new(
        "[server]\napi_keys_env = [\"LLMHUB_TEST_GATEWAY_KEY\", \"LLMHUB_TEST_GATEWAY_KEY_2\"]\n",
    );
    cfg.write(
        ".env",
        "LLMHUB_TEST_GATEWAY_KEY=gw-one\nLLMHUB_TEST_GATEWAY_KEY_2=gw-two\n",
    );
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    let server = Server::start(&cfg).await;
    let send = |key: Option<&'static str>| {
        let mut req = server
            .client
            .post(format!("{}/v1/chat/completions", server.url))
            .json(&json!({"model": "echo", "messages": user("hi")}));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    let resp = send(None).await.expect("send");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "missing_api_key");
    let resp = send(Some("gw-wrong")).await.expect("send");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(send(Some("gw-one")).await.expect("send").status(), 200);
    assert_eq!(send(Some("gw-two")).await.expect("send").status(), 200);
    let models = server
        .client
        .get(format!("{}/v1/models", server.url))
        .send()
        .await
        .expect("send");
    assert_eq!(models.status(), 401);
    let health = server
        .client
        .get(format!("{}/health", server.url))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), 200, "health stays open for probes");
}

#[tokio::test]
async fn models_lists_active_models_and_groups_in_openai_shape() {
    let up = Mock::ok().await;
    let cfg = ConfigDir::new("[groups]\nteam = [\"on/a\", \"off/b\"]\n");
    cfg.provider("on", &up.url, "models = [\"a\"]");
    cfg.write(
        "providers.d/off.toml",
        "base_url = \"http://127.0.0.1:9/v1\"\nenv_key = \"LLMHUB_TEST_UNSET_KEY\"\nmodels = [\"b\"]\n",
    );
    let server = Server::start(&cfg).await;
    let list = server.get_json("/v1/models").await;
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["on/a", "team"]);
    assert_eq!(list["data"][0]["object"], "model");
    let health = server.get_json("/health").await;
    assert_eq!(health["providers"]["off"]["active"], false);
    assert_eq!(
        health["providers"]["off"]["reason"],
        "LLMHUB_TEST_UNSET_KEY is not set"
    );
}

#[tokio::test]
async fn the_upstreams_x_should_retry_verdict_wins_over_the_status() {
    let final_503 = Mock::start(|_, _| async {
        let mut r = json_response(503, &fixture("openai/error.503.json"));
        r.headers_mut()
            .insert("x-should-retry", "false".parse().expect("header"));
        r
    })
    .await;
    let (backup, server, _cfg) = two_provider_server(&final_503.url, "retries = 2").await;
    let resp = server
        .chat(json!({"model": "first", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 503, "returned as the upstream said it");
    assert_eq!(final_503.count(), 1, "not retried");
    assert_eq!(backup.count(), 0, "no fallback");

    let conflict = Mock::start(|n, _| async move {
        if n == 0 {
            let mut r = json_response(
                409,
                r#"{"error":{"message":"busy","type":"conflict","code":null,"param":null}}"#,
            );
            r.headers_mut()
                .insert("x-should-retry", "true".parse().expect("header"));
            r
        } else {
            json_response(200, &fixture("openai/chat.response.json"))
        }
    })
    .await;
    let (backup, server, _cfg) = two_provider_server(&conflict.url, "retries = 1").await;
    let resp = server
        .chat(json!({"model": "first", "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-llmhub-provider"],
        "first",
        "retried on the same provider"
    );
    assert_eq!(conflict.count(), 2);
    assert_eq!(backup.count(), 0);
}
