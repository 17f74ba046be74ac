//! The fault and bad-input battery: cut streams, upstream error events, invalid known
//! fields, non-JSON errors, MCP HTTP edges, OpenAI SDK gaps and `/health` with keys.

mod common;

use common::*;
use serde_json::{Value, json};

const HUB: &str = "[routing]\nretries = 0\nbackoff_ms = 1\n";

/// A streaming upstream that sends `body` (raw SSE) and closes the connection.
async fn streaming(body: &'static str) -> Mock {
    Mock::start(move |_, _| async move { sse_response(body) }).await
}

async fn stream_text(server: &Server, model: &str) -> String {
    let resp = server
        .chat(json!({"model": model, "messages": user("hi"), "stream": true}))
        .await;
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("body")
}

const CHUNK: &str = r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}

"#;

#[tokio::test]
async fn a_stream_cut_before_its_finish_reason_ends_in_an_error_not_done() {
    let cut = streaming(CHUNK).await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("cut", &cut.url, "models = [\"m\"]");
    let server = Server::start(&cfg).await;
    let data = sse_data(&stream_text(&server, "cut/m").await);
    assert_eq!(data.len(), 2, "{data:?}");
    assert!(data[0].contains("Hel"));
    let error: Value = serde_json::from_str(&data[1]).expect("an error event");
    assert_eq!(error["error"]["code"], "upstream_stream_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("before the answer was complete")),
        "{error}"
    );
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
}

/// An upstream stream paced by the mock: `CHUNK` every `gap`, `count` times, then
/// a finishing chunk (`then_finish`) or silence with the connection held open.
async fn paced(gap: std::time::Duration, count: usize, then_finish: bool) -> Mock {
    use futures_util::StreamExt;
    const LAST: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    Mock::start(move |_, _| async move {
        let chunks = futures_util::stream::iter(0..count).then(move |i| async move {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            Ok::<_, std::convert::Infallible>(CHUNK)
        });
        let end = if then_finish {
            futures_util::stream::iter([Ok(LAST)]).boxed()
        } else {
            futures_util::stream::pending().boxed()
        };
        sse_response(axum::body::Body::from_stream(chunks.chain(end)))
    })
    .await
}

#[tokio::test]
async fn a_stream_that_goes_silent_ends_with_a_timeout_error_after_what_it_sent() {
    let silent = paced(std::time::Duration::ZERO, 1, false).await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("silent", &silent.url, "models = [\"m\"]\ntimeout_s = 0.3");
    let server = Server::start(&cfg).await;
    // Bounded so that a deadline that never fires fails the test instead of hanging it.
    let text = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream_text(&server, "silent/m"),
    )
    .await
    .expect("the stream ends once the upstream is silent past its timeout");
    let data = sse_data(&text);
    assert_eq!(data.len(), 2, "{data:?}");
    assert!(data[0].contains("Hel"), "{data:?}");
    let error: Value = serde_json::from_str(&data[1]).expect("an error event");
    assert_eq!(error["error"]["code"], "upstream_stream_error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("silent/m") && m.contains("0.3")),
        "{error}"
    );
}

#[tokio::test]
async fn the_stream_timeout_is_per_event_so_a_long_steady_stream_completes() {
    // Five gaps of 100 ms: the stream lasts longer than the 0.5 s timeout, no event waits for it.
    let steady = paced(std::time::Duration::from_millis(100), 6, true).await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("steady", &steady.url, "models = [\"m\"]\ntimeout_s = 0.5");
    let server = Server::start(&cfg).await;
    let started = std::time::Instant::now();
    let data = sse_data(&stream_text(&server, "steady/m").await);
    assert!(started.elapsed() >= std::time::Duration::from_millis(500));
    assert_eq!(
        data.len(),
        8,
        "six chunks, the finishing one and [DONE]: {data:?}"
    );
    assert_eq!(data[7], "[DONE]");
}

#[tokio::test]
async fn a_stream_closed_after_its_finish_reason_is_complete() {
    const FINISHED: &str = r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason": "stop"}]}

"#;
    let up = streaming(FINISHED).await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &up.url, "models = [\"m\"]");
    let server = Server::start(&cfg).await;
    let data = sse_data(&stream_text(&server, "up/m").await);
    assert_eq!(data.len(), 3, "{data:?}");
    assert_eq!(data[2], "[DONE]");
}

#[tokio::test]
async fn an_upstream_error_event_is_scrubbed_of_the_key_and_gets_no_done() {
    let leaky = Mock::start(|_, _| async {
        sse_response(format!(
            "{CHUNK}data: {{\"error\":{{\"message\":\"quota for key {KEY} exhausted\",\"type\":\"server_error\",\"code\":\"overloaded\"}}}}\n\ndata: [DONE]\n\n"
        ))
    })
    .await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("leaky", &leaky.url, "models = [\"m\"]");
    let server = Server::start(&cfg).await;
    let text = stream_text(&server, "leaky/m").await;
    assert!(!text.contains(KEY), "{text}");
    let data = sse_data(&text);
    assert_eq!(data.len(), 2, "{data:?}");
    let error: Value = serde_json::from_str(&data[1]).expect("error event");
    assert_eq!(
        error["error"]["code"], "overloaded",
        "the upstream's own event"
    );
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[redacted]")),
        "{error}"
    );
}

#[tokio::test]
async fn an_error_event_before_any_chunk_falls_back() {
    let failing =
        streaming("data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n")
            .await;
    let backup = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider(
        "first",
        &failing.url,
        "models = [\"m\"]\nfallback_to = \"backup\"",
    );
    cfg.provider(
        "backup",
        &backup.url,
        "models = [\"gpt-4o-mini\"]\ndefault_model = \"gpt-4o-mini\"",
    );
    let server = Server::start(&cfg).await;
    let data = sse_data(&stream_text(&server, "first/m").await);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(backup.count(), 1);
}

#[tokio::test]
async fn invalid_known_fields_are_refused_with_their_path_on_every_adapter() {
    let up = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &up.url, "models = [\"m\"]");
    cfg.write(
        "providers.d/claude.toml",
        &format!(
            "adapter = \"anthropic\"\nbase_url = \"{}\"\nenv_key = \"{KEY_ENV}\"\nmodels = [\"c\"]\n",
            up.url
        ),
    );
    cfg.write(
        "providers.d/gem.toml",
        &format!(
            "adapter = \"gemini\"\nbase_url = \"{}\"\nenv_key = \"{KEY_ENV}\"\nmodels = [\"g\"]\n",
            up.url
        ),
    );
    let server = Server::start(&cfg).await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"max_tokens": -5}), "max_tokens", "the number -5"),
        (
            json!({"max_tokens": "100"}),
            "max_tokens",
            "the string \"100\"",
        ),
        (
            json!({"max_tokens": 1e30}),
            "max_tokens",
            "the number 1e+30",
        ),
        (
            json!({"max_completion_tokens": 0}),
            "max_completion_tokens",
            "the number 0",
        ),
        (
            json!({"temperature": "hot"}),
            "temperature",
            "the string \"hot\"",
        ),
        (json!({"temperature": 3}), "temperature", "from 0 to 2"),
        (json!({"top_p": 1.5}), "top_p", "from 0 to 1"),
        (json!({"n": 0}), "n", "at least 1"),
        (json!({"stop": [1]}), "stop", "array of strings"),
        (json!({"stream": "yes"}), "stream", "true or false"),
        (json!({"tools": {}}), "tools", "an array"),
        (
            json!({"tools": [{"type": "function", "function": {}}]}),
            "tools",
            "tools[0].function.name",
        ),
        (json!({"tool_choice": 7}), "tool_choice", "tool_choice"),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format",
            "\"xml\"",
        ),
        (
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            "messages",
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": 5, "content": "x"}]}),
            "messages",
            "messages[0].role: expected a string",
        ),
    ];
    for model in ["up/m", "claude/c", "gem/g"] {
        for (patch, param, needle) in &cases {
            let mut body = json!({"model": model, "messages": user("hi")});
            for (k, v) in patch.as_object().expect("object") {
                body[k] = v.clone();
            }
            let resp = server.chat(body.clone()).await;
            assert_eq!(resp.status(), 400, "{model} {patch}");
            let got: Value = resp.json().await.expect("json");
            let message = got["error"]["message"].as_str().unwrap_or_default();
            assert_eq!(got["error"]["param"], *param, "{model} {patch}: {got}");
            assert!(message.contains(needle), "{model} {patch}: {message}");
            for rust in ["struct", "u32", "u64", "ChatRequest", "sequence", "map"] {
                assert!(!message.contains(rust), "{model} {patch}: {message}");
            }
        }
    }
    assert_eq!(up.count(), 0, "nothing invalid reached an upstream");
    // Unknown fields still pass through.
    let resp = server
        .chat(json!({"model": "up/m", "messages": user("hi"), "seed": 7, "logit_bias": {"1": 2}}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.seen()[0].body["seed"], 7);
}

#[tokio::test]
async fn a_body_that_is_not_a_request_object_is_explained_in_plain_words() {
    let cfg = ConfigDir::new(HUB);
    cfg.echo();
    let server = Server::start(&cfg).await;
    for (body, needle) in [
        ("[]", "expected a JSON object"),
        ("\"hi\"", "expected a JSON object"),
        (
            r#"{"model": 5, "messages": []}"#,
            "model: expected a string",
        ),
        (
            r#"{"model":"echo","messages":["hi"]}"#,
            "messages[0]: expected an object",
        ),
        (
            "{\"model\":\"echo\",\"messages\":[{\"role\":\"user\",\"content\":\"\u{fffd}\"",
            "not valid JSON",
        ),
        (
            &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
            "not valid JSON",
        ),
    ] {
        let resp = server.chat_text(body.to_string()).await;
        assert_eq!(resp.status(), 400, "{body:.60}");
        let got: Value = resp.json().await.expect("a JSON error");
        let message = got["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body:.60}: {message}");
        assert!(!message.contains("ChatRequest"), "{message}");
    }
    let resp = server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let got: Value = resp.json().await.expect("a JSON error for invalid UTF-8");
    assert_eq!(got["error"]["code"], "invalid_json");
}

#[tokio::test]
async fn every_http_error_is_json() {
    let cfg = ConfigDir::new(&format!("{HUB}\n[profiles.dev]\ntools = [\"chat_*\"]\n"));
    cfg.echo();
    let server = Server::start(&cfg).await;
    let resp = server
        .client
        .post(format!("{}/v1/tools/r%ff", server.url))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let got: Value = resp.json().await.expect("JSON, not text/plain");
    assert_eq!(got["error"]["code"], "invalid_tool_name");

    let mcp = |body: &'static [u8]| {
        server
            .client
            .post(format!("{}/mcp", server.url))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
            .send()
    };
    for body in [&b"{not json"[..], &[b'{', 0xff, b'}'][..], &[b'['; 300][..]] {
        let resp = mcp(body).await.expect("send");
        assert_eq!(resp.status(), 400);
        let got: Value = resp.json().await.expect("a JSON-RPC error");
        assert_eq!(got["jsonrpc"], "2.0");
        assert_eq!(got["error"]["code"], -32700, "{got}");
        assert!(got["id"].is_null());
    }
    // Whatever else the transport refuses (here a missing Accept) is JSON too.
    let resp = server
        .client
        .post(format!("{}/mcp", server.url))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .expect("send");
    assert!(resp.status().is_client_error());
    let got: Value = resp.json().await.expect("a JSON-RPC error");
    assert!(got["error"]["message"].is_string(), "{got}");

    // An unknown profile is a 404 naming the profiles that exist.
    let resp = server
        .client
        .post(format!("{}/mcp/nope", server.url))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 404);
    let got: Value = resp.json().await.expect("json");
    assert!(
        got["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/mcp/dev")),
        "{got}"
    );
}

#[tokio::test]
async fn ending_an_mcp_session_is_204_and_an_unknown_one_is_404() {
    let cfg = ConfigDir::new(HUB);
    cfg.echo();
    let server = Server::start(&cfg).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let resp = server
        .client
        .post(format!("{}/mcp", server.url))
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .expect("initialize");
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .expect("id")
        .to_string();
    let delete = |id: String| {
        server
            .client
            .delete(format!("{}/mcp", server.url))
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
    };
    let resp = delete("made-up-session".into()).await.expect("send");
    assert_eq!(resp.status(), 404);
    let got: Value = resp.json().await.expect("json");
    assert!(got["error"]["message"].is_string());
    let resp = delete(session.clone()).await.expect("send");
    assert_eq!(resp.status(), 204);
    let resp = delete(session).await.expect("send");
    assert_eq!(resp.status(), 404, "a session ends once");
}

#[tokio::test]
async fn models_retrieve_unique_echo_ids_and_only_usable_groups() {
    let cfg = ConfigDir::new(&format!(
        "{HUB}\n[groups]\nlive = [\"echo/echo\"]\ndead = [\"keyless/k\"]\n"
    ));
    cfg.echo();
    cfg.keyless();
    let server = Server::start(&cfg).await;
    let got = server.get_json("/v1/models/echo/echo").await;
    assert_eq!(got["id"], "echo/echo");
    assert_eq!(got["object"], "model");
    assert_eq!(server.get_json("/v1/models/live").await["id"], "live");
    for id in ["ghost", "keyless/k", "dead"] {
        let resp = server.get(&format!("/v1/models/{id}")).await;
        assert_eq!(resp.status(), 404, "{id}");
        let got: Value = resp.json().await.expect("json");
        assert_eq!(got["error"]["code"], "model_not_found");
    }
    let list = server.get_json("/v1/models").await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"live") && !ids.contains(&"dead"), "{ids:?}");

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let body: Value = server
            .chat(json!({"model": "echo", "messages": user("same words")}))
            .await
            .json()
            .await
            .expect("json");
        assert!(seen.insert(body["id"].as_str().expect("id").to_string()));
    }
}

#[tokio::test]
async fn health_details_need_a_key_when_keys_are_configured() {
    let cfg = ConfigDir::new(&format!(
        "{HUB}\n[server]\napi_keys_env = [\"LLMHUB_TEST_GATEWAY_KEY\"]\n"
    ));
    cfg.write(".env", "LLMHUB_TEST_GATEWAY_KEY=gw-secret\n");
    cfg.echo();
    cfg.keyless();
    let server = Server::start(&cfg).await;
    let public = server.get_json("/health").await;
    assert_eq!(public["status"], "ok");
    let text = public.to_string();
    for secret in ["config", "providers", "LLMHUB_TEST_UNSET_KEY", "hub.toml"] {
        assert!(!text.contains(secret), "{text}");
    }
    let full: Value = server
        .client
        .get(format!("{}/health", server.url))
        .bearer_auth("gw-secret")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(full["config"]["generation"], 1);
    assert_eq!(
        full["providers"]["keyless"]["reason"],
        "LLMHUB_TEST_UNSET_KEY is not set"
    );
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

#[tokio::test]
async fn stdio_answers_every_bad_line_with_a_json_rpc_error_carrying_its_id() {
    let cfg = ConfigDir::new(HUB);
    cfg.echo();
    let input = [
        INIT,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        "{not json",
        r#"{"jsonrpc":"2.0","id":7,"method":"nope/nothing"}"#,
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":5}"#,
        r#"{"jsonrpc":"2.0","id":10,"method":"tools/call"}"#,
        r#"{"id":"eleven"}"#,
        r#"{"jsonrpc":"2.0","id":12,"method":"ping"}"#,
    ]
    .join("\n")
        + "\n";
    let out = run_stdio(&cfg.hub_path(), &input).await;
    let by_id = |id: Value| {
        out.iter()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("no reply for {id}: {out:?}"))
            .clone()
    };
    let parse = by_id(Value::Null);
    assert_eq!(parse["error"]["code"], -32700);
    let unknown = by_id(json!(7));
    assert_eq!(unknown["error"]["code"], -32601);
    assert_eq!(
        unknown["error"]["message"],
        "method `nope/nothing` is not supported by llmhub"
    );
    assert_eq!(by_id(json!(9))["error"]["code"], -32602);
    assert_eq!(by_id(json!(10))["error"]["code"], -32602);
    assert_eq!(by_id(json!("eleven"))["error"]["code"], -32600);
    assert!(
        by_id(json!(12))["result"].is_object(),
        "ping still answered"
    );
    assert_eq!(out.len(), 7, "one reply per request: {out:?}");
}

#[tokio::test]
async fn stdio_closed_before_initialize_exits_non_zero() {
    let cfg = ConfigDir::new(HUB);
    cfg.echo();
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_llmhub"))
        .args(["mcp", "--config"])
        .arg(cfg.hub_path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .expect("run");
    assert_eq!(status.code(), Some(1));
}
