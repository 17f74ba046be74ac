//! The usage ledger end to end, on SQLite and on a real PostgreSQL: exact token and
//! cost sums across surfaces, attribution, unpriced models, failures, restarts, streams
//! and a graceful stop under load.

mod common;

use common::*;
use serde_json::{Value, json};

const HUB: &str = "[routing]\nretries = 0\nbackoff_ms = 1\n";

/// Prices of the priced model, per million tokens.
const IN: f64 = 2.0;
const CACHED: f64 = 0.5;
const OUT: f64 = 8.0;

/// An upstream whose n-th answer reports `10 + n` input tokens (2 of them cached),
/// 5 output (1 of them reasoning); streams carry the usage chunk only when asked, and
/// then, as OpenAI's do, `"usage": null` in every other chunk.
async fn metered_upstream() -> Mock {
    Mock::start(|n, body| async move {
        let usage = json!({
            "prompt_tokens": 10 + n, "completion_tokens": 5, "total_tokens": 15 + n,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1}
        });
        let model = body["model"].as_str().unwrap_or("m").to_string();
        if body["stream"] == true {
            let asked = body["stream_options"]["include_usage"] == true;
            let chunk = |delta: Value, finish: Value| {
                let mut chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
                if asked {
                    chunk["usage"] = Value::Null;
                }
                chunk
            };
            let mut sse = format!(
                "data: {}\n\ndata: {}\n\n",
                chunk(json!({"role": "assistant", "content": "hi"}), Value::Null),
                chunk(json!({}), json!("stop"))
            );
            if asked {
                let u = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                               "model": model, "choices": [], "usage": usage});
                sse.push_str(&format!("data: {u}\n\n"));
            }
            sse.push_str("data: [DONE]\n\n");
            sse_response(sse)
        } else {
            json_response(
                200,
                &json!({"id": "c", "object": "chat.completion", "created": 1, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"ok\": true}"}, "finish_reason": "stop"}],
                        "usage": usage})
                .to_string(),
            )
        }
    })
    .await
}

fn config(up: &Mock, down: &str, hub_extra: &str, env_extra: &str) -> ConfigDir {
    let cfg = ConfigDir::new(&format!("{HUB}{hub_extra}"));
    cfg.write(".env", &format!("{KEY_ENV}={KEY}\n{env_extra}"));
    cfg.provider(
        "up",
        &up.url,
        &format!(
            "[models.priced]\ncost_input_per_1m = {IN}\ncost_cached_input_per_1m = {CACHED}\ncost_output_per_1m = {OUT}\n[models.free-ish]\ncontext_tokens = 1000\n"
        ),
    );
    cfg.provider("down", down, "models = [\"gone\"]");
    cfg.write(
        "tools.d/shout.toml",
        "description = \"Shout\"\nmodel = \"up/priced\"\nprompt = \"{{ text | upper }}\"\n[input]\ntype = \"object\"\nrequired = [\"text\"]\nproperties.text = { type = \"string\" }\nadditionalProperties = false\n",
    );
    cfg
}

fn cost(input: u64, cached: u64, output: u64) -> f64 {
    ((input - cached) as f64 * IN + cached as f64 * CACHED + output as f64 * OUT) / 1e6
}

async fn flushed(server: &Server) {
    server.hub.ledger().expect("the ledger runs").flush().await;
}

async fn usage(server: &Server, query: &str) -> Value {
    server.get_json(&format!("/v1/usage?{query}")).await
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

async fn chat(
    server: &Server,
    body: Value,
    project: Option<&str>,
    agent: Option<&str>,
) -> reqwest::Response {
    let mut req = server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&body);
    if let Some(p) = project {
        req = req.header("x-llmhub-project", p);
    }
    if let Some(a) = agent {
        req = req.header("x-llmhub-agent", a);
    }
    req.send().await.expect("send")
}

/// Every HTTP surface, an MCP session over stdio writing the same database, then the
/// sums: the scenario both stores must pass.
async fn every_surface_adds_up(hub_extra: &str, env_extra: &str) {
    let up = metered_upstream().await;
    let down = refused_url().await;
    let cfg = config(&up, &down, hub_extra, env_extra);
    let server = Server::start(&cfg).await;
    // 0: by headers.
    let r = chat(
        &server,
        json!({"model": "up/priced", "messages": user("a")}),
        Some("search"),
        Some("crawler"),
    )
    .await;
    assert_eq!(r.status(), 200);
    // 1: the agent from the OpenAI `user` field.
    let r = chat(
        &server,
        json!({"model": "up/priced", "messages": user("b"), "user": "u-7"}),
        Some("search"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    // 2: a stream whose client did not ask for usage: counted, and not shown.
    let r = chat(
        &server,
        json!({"model": "up/priced", "messages": user("c"), "stream": true}),
        Some("search"),
        Some("crawler"),
    )
    .await;
    let text = r.text().await.expect("body");
    // The counts are hidden; OpenAI's `"usage":null` in the other chunks passes as it came.
    assert!(
        !text.contains("\"usage\":{"),
        "the usage chunk is hidden: {text}"
    );
    assert_eq!(text.matches("data: {").count(), 2, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(up.seen()[2].body["stream_options"]["include_usage"], true);
    // 3: a stream that asked: shown.
    let r = chat(&server, json!({"model": "up/priced", "messages": user("d"), "stream": true, "stream_options": {"include_usage": true}}), None, None).await;
    assert!(r.text().await.expect("body").contains("\"usage\":{\""));
    // 4: an unpriced model.
    let r = chat(
        &server,
        json!({"model": "up/free-ish", "messages": user("e")}),
        Some("search"),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    // 5: a prompt tool over HTTP.
    let r = server
        .client
        .post(format!("{}/v1/tools/shout", server.url))
        .header("x-llmhub-project", "tools")
        .json(&json!({"text": "hey"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    // A failure: recorded with its status and attempts, costing nothing.
    let r = chat(
        &server,
        json!({"model": "down/gone", "messages": user("f")}),
        Some("search"),
        None,
    )
    .await;
    assert_eq!(r.status(), 502);

    // 6 and 7: MCP over stdio, another process writing the same ledger.
    let input = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"chat_completion","arguments":{"model":"up/priced","prompt":"g","project_id":"mcp","agent_id":"claude"}}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"shout","arguments":{"text":"h","project_id":"mcp"}}}"#,
    ]
    .join("\n")
        + "\n";
    let out = run_stdio(&cfg.hub_path(), &input).await;
    for id in [2, 3] {
        let reply = out.iter().find(|v| v["id"] == id).expect("a reply");
        assert_eq!(reply["result"]["isError"], false, "{reply}");
    }
    flushed(&server).await;

    let day = usage(&server, "period=day&group_by=project,model").await;
    let rows = day["data"].as_array().expect("data");
    let find = |project: &str, model: &str| {
        rows.iter()
            .find(|r| r["project"] == project && r["model"] == model)
            .unwrap_or_else(|| panic!("no {project}/{model} in {day}"))
            .clone()
    };
    let search = find("search", "priced");
    assert_eq!(search["requests"], 3);
    assert_eq!(search["input_tokens"], 10 + 11 + 12);
    assert_eq!(search["cached_tokens"], 6);
    assert_eq!(search["output_tokens"], 15);
    assert_eq!(search["reasoning_tokens"], 3);
    let expected = cost(10, 2, 5) + cost(11, 2, 5) + cost(12, 2, 5);
    assert!(
        close(search["cost_usd"].as_f64().expect("cost"), expected),
        "{search}"
    );
    assert_eq!(find("default", "priced")["input_tokens"], 13);
    let unpriced = find("search", "free-ish");
    assert_eq!(unpriced["unpriced"], 1);
    assert_eq!(unpriced["cost_usd"], 0.0);
    assert_eq!(find("tools", "priced")["input_tokens"], 15);
    let failed = find("search", "gone");
    assert_eq!(
        (failed["requests"].as_i64(), failed["failed"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(failed["cost_usd"], 0.0);
    let mcp = find("mcp", "priced");
    assert_eq!(mcp["requests"], 2);
    assert_eq!(mcp["input_tokens"], 16 + 17);
    let total = &day["total"];
    assert_eq!(total["requests"], 9);
    assert_eq!(total["failed"], 1);
    assert_eq!(total["unpriced"], 1);
    let all = expected + cost(13, 2, 5) + cost(15, 2, 5) + cost(16, 2, 5) + cost(17, 2, 5);
    assert!(
        close(total["cost_usd"].as_f64().expect("cost"), all),
        "{total}"
    );

    let agents = usage(&server, "period=month&project=search&group_by=agent").await;
    let by_agent: Vec<(String, i64)> = agents["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| {
            (
                r["agent"].as_str().unwrap_or("").to_string(),
                r["requests"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        by_agent,
        vec![("".into(), 2), ("crawler".into(), 2), ("u-7".into(), 1)]
    );

    let recent = server.get_json("/v1/usage/requests?limit=50").await;
    let recent = recent["data"].as_array().expect("data");
    assert_eq!(recent.len(), 9);
    assert!(
        recent
            .iter()
            .any(|r| r["streamed"] == true && r["input_tokens"] == 12)
    );
    let surfaces: std::collections::BTreeSet<&str> = recent
        .iter()
        .filter_map(|r| r["surface"].as_str())
        .collect();
    assert_eq!(
        surfaces.into_iter().collect::<Vec<_>>(),
        vec!["chat", "http_tool", "mcp_chat", "mcp_tool"]
    );
    let failure = recent
        .iter()
        .find(|r| r["model"] == "gone")
        .expect("the failure");
    assert_eq!(failure["status"], 502);
    assert_eq!(failure["attempts"], 1);
    let one = usage(&server, "period=day&group_by=agent&agent=claude").await;
    assert_eq!(one["total"]["requests"], 1);
}

#[tokio::test]
async fn every_surface_adds_up_on_sqlite() {
    every_surface_adds_up("", "").await;
}

#[tokio::test]
async fn every_surface_adds_up_on_postgres() {
    let url = pg::database("every_surface").await;
    every_surface_adds_up(
        "[storage]\nurl_env = \"LLMHUB_TEST_DATABASE_URL\"\n",
        &format!("LLMHUB_TEST_DATABASE_URL={url}\n"),
    )
    .await;
}

#[tokio::test]
async fn bad_report_parameters_list_the_valid_ones() {
    let up = metered_upstream().await;
    let cfg = config(&up, "http://127.0.0.1:9/v1", "", "");
    let server = Server::start(&cfg).await;
    for (query, needle) in [
        ("period=year", "expected one of day, week, month, all"),
        (
            "group_by=model,colour",
            "model, provider, project, agent, key, day",
        ),
    ] {
        let r = server.get(&format!("/v1/usage?{query}")).await;
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.expect("json");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{body}"
        );
    }
    let r = server.get("/v1/usage/requests?limit=0").await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_restart_keeps_the_ledger() {
    let up = metered_upstream().await;
    let cfg = config(&up, "http://127.0.0.1:9/v1", "", "");
    let server = Server::start(&cfg).await;
    for _ in 0..2 {
        let r = chat(
            &server,
            json!({"model": "up/priced", "messages": user("x")}),
            None,
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    // No flush here: a graceful stop must write what is queued.
    server.stop().await;
    assert!(
        cfg.path("llmhub.db").exists(),
        "the SQLite file lives beside hub.toml"
    );
    let again = Server::start(&cfg).await;
    let r = chat(
        &again,
        json!({"model": "up/priced", "messages": user("y")}),
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    flushed(&again).await;
    let total = usage(&again, "period=all").await["total"].clone();
    assert_eq!(total["requests"], 3);
    assert_eq!(total["input_tokens"], 10 + 11 + 12);
}

#[tokio::test]
async fn a_stream_the_client_abandons_is_recorded_with_what_it_received() {
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
    let gone_tx = std::sync::Mutex::new(Some(gone_tx));
    let gone_tx = std::sync::Arc::new(gone_tx);
    let up = Mock::start(move |_, _| {
        let gone_tx = gone_tx.clone();
        async move {
            // The first chunk, then nothing until llmhub hangs up; the guard says when.
            struct Hangup(Option<tokio::sync::oneshot::Sender<()>>);
            impl Drop for Hangup {
                fn drop(&mut self) {
                    if let Some(tx) = self.0.take() {
                        let _ = tx.send(());
                    }
                }
            }
            let guard = Hangup(gone_tx.lock().expect("lock").take());
            let first = futures_util::stream::once(async {
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(
                    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
                ))
            });
            let stalled = futures_util::stream::unfold(guard, |g| async move {
                std::future::pending::<()>().await;
                Some((Ok(bytes::Bytes::new()), g))
            });
            sse_response(axum::body::Body::from_stream(futures_util::StreamExt::chain(first, stalled)))
        }
    })
    .await;
    let cfg = config(&up, "http://127.0.0.1:9/v1", "", "");
    let server = Server::start(&cfg).await;
    let mut resp = chat(
        &server,
        json!({"model": "up/priced", "messages": user("x"), "stream": true}),
        Some("p"),
        None,
    )
    .await;
    let first = resp.chunk().await.expect("read").expect("a first chunk");
    assert!(String::from_utf8_lossy(&first).contains("Hel"));
    drop(resp);
    gone_rx.await.expect("llmhub hangs up on the upstream");
    flushed(&server).await;
    let rows = server.get_json("/v1/usage/requests?limit=5").await;
    let row = &rows["data"][0];
    assert_eq!(row["status"], 499, "{rows}");
    assert_eq!(row["streamed"], true);
    assert!(row["ttft_ms"].is_i64());
}

#[tokio::test]
async fn a_database_that_is_down_is_reported_and_never_fails_requests() {
    let up = metered_upstream().await;
    let refused = refused_url().await;
    let port = refused
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/v1");
    let cfg = config(
        &up,
        "http://127.0.0.1:9/v1",
        "[storage]\nurl_env = \"LLMHUB_TEST_DATABASE_URL\"\n",
        &format!("LLMHUB_TEST_DATABASE_URL=postgres://llmhub:secret-pw@127.0.0.1:{port}/none\n"),
    );
    let server = Server::start(&cfg).await;
    let r = chat(
        &server,
        json!({"model": "up/priced", "messages": user("x")}),
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), 200, "the request is served");
    server.hub.ledger().expect("ledger").first_attempt().await;
    let health = server.get_json("/health").await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["ledger"]["state"], "down", "{health}");
    assert_eq!(health["ledger"]["queued"], 1);
    assert!(!health.to_string().contains("secret-pw"), "{health}");
    let r = server.get("/v1/usage").await;
    assert_eq!(r.status(), 503);
}

/// `llmhub serve` under load, stopped by SIGTERM: every answered request has its row.
#[tokio::test]
async fn sigterm_under_load_loses_no_answered_request() {
    use std::io::{BufRead, BufReader};
    let cfg = ConfigDir::new(HUB);
    cfg.echo();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_llmhub"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(cfg.hub_path())
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("llmhub serving"))
        .expect("serving");
    std::thread::spawn(move || for _ in lines {});
    let client = llmhub::upstream::client_builder()
        .build()
        .expect("a reqwest client with the TLS provider installed");
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let (answered_tx, mut answered_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let client = client.clone();
        let url = url.clone();
        let answered = answered_tx.clone();
        tasks.push(tokio::spawn(async move {
            let ok = client
                .post(&url)
                .json(&json!({"model": "echo", "messages": user(&format!("n {i}"))}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let _ = answered.send(ok);
        }));
    }
    drop(answered_tx);
    // Stop once a quarter has been answered, with the rest in flight or still to come.
    let mut ok = 0;
    while ok < 100 {
        if answered_rx.recv().await == Some(true) {
            ok += 1;
        }
    }
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    while let Some(answer) = answered_rx.recv().await {
        ok += usize::from(answer);
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "a graceful stop exits 0: {status}");
    let store =
        llmhub::store::Store::open(&format!("sqlite://{}", cfg.path("llmhub.db").display()))
            .await
            .expect("open the ledger");
    let rows = store
        .usage(&llmhub::store::UsageQuery::default())
        .await
        .expect("usage");
    let answered_rows = rows[0].totals.requests - rows[0].totals.failed;
    assert_eq!(answered_rows, ok as i64, "every 2xx answer has its row");
}

#[tokio::test]
async fn count_tokens_asks_native_counters_and_estimates_the_rest() {
    let counter = Mock::start(|_, _| async {
        json_response(200, r#"{"input_tokens": 42, "totalTokens": 17}"#)
    })
    .await;
    let base = counter.url.trim_end_matches("/v1").to_string();
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &counter.url, "models = [\"gpt-4o\", \"llama\"]");
    for (name, adapter) in [("claude", "anthropic"), ("gem", "gemini")] {
        cfg.write(
            &format!("providers.d/{name}.toml"),
            &format!("adapter = \"{adapter}\"\nbase_url = \"{base}\"\nenv_key = \"{KEY_ENV}\"\nmodels = [\"m\"]\n"),
        );
    }
    let server = Server::start(&cfg).await;
    let count = |body: Value| {
        let server = &server;
        async move {
            let r = server
                .client
                .post(format!("{}/v1/count_tokens", server.url))
                .json(&body)
                .send()
                .await
                .expect("send");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };
    let (status, got) = count(json!({"model": "up/gpt-4o", "text": "hello world"})).await;
    assert_eq!(status, 200);
    assert_eq!(got["input_tokens"], 2);
    assert_eq!(got["method"], "estimate");
    let (_, got) = count(json!({"model": "up/llama", "messages": user("hello world")})).await;
    assert_eq!(
        (got["input_tokens"].as_u64(), got["method"].as_str()),
        (Some(9), Some("estimate"))
    );
    let (_, got) = count(json!({"model": "claude/m", "messages": user("hi")})).await;
    assert_eq!(
        (got["input_tokens"].as_u64(), got["method"].as_str()),
        (Some(42), Some("anthropic"))
    );
    let (_, got) = count(json!({"model": "gem/m", "text": "hi"})).await;
    assert_eq!(
        (got["input_tokens"].as_u64(), got["method"].as_str()),
        (Some(17), Some("gemini"))
    );
    assert_eq!(counter.count(), 2, "only the native counters were asked");
    let seen = counter.seen();
    let anthropic = seen
        .iter()
        .find(|s| s.path == "/v1/messages/count_tokens")
        .expect("anthropic");
    assert_eq!(anthropic.headers["x-api-key"], KEY);
    assert!(anthropic.body.get("max_tokens").is_none() && anthropic.body.get("stream").is_none());
    assert!(seen.iter().any(|s| s.path == "/v1beta/models/m:countTokens"
        && s.body["generateContentRequest"]["model"] == "models/m"));

    let (status, got) = count(json!({"model": "ghost", "text": "x"})).await;
    assert_eq!(status, 404);
    assert_eq!(got["error"]["code"], "model_not_found");
    let (status, got) = count(json!({"model": "up/gpt-4o"})).await;
    assert_eq!(status, 400);
    assert!(
        got["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`text`"))
    );

    let input = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"count_tokens","arguments":{"model":"up/gpt-4o","text":"hello world"}}}"#,
    ]
    .join("\n")
        + "\n";
    let out = run_stdio(&cfg.hub_path(), &input).await;
    let reply = out.iter().find(|v| v["id"] == 2).expect("reply");
    assert_eq!(
        reply["result"]["structuredContent"]["input_tokens"], 2,
        "{reply}"
    );
    assert_eq!(reply["result"]["structuredContent"]["method"], "estimate");
}

/// `name{labels} value` lines of a Prometheus text exposition.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn sum(samples: &[(String, f64)], prefix: &str, having: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(n, _)| n.starts_with(prefix) && having.iter().all(|h| n.contains(h)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_count_what_happened_with_labels_from_configuration_only() {
    let up = metered_upstream().await;
    let down = refused_url().await;
    let cfg = config(&up, &down, "", "");
    let server = Server::start(&cfg).await;
    for _ in 0..3 {
        let r = chat(
            &server,
            json!({"model": "up/priced", "messages": user("a")}),
            Some("secret-project"),
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let r = chat(
        &server,
        json!({"model": "up/priced", "messages": user("s"), "stream": true}),
        None,
        None,
    )
    .await;
    let _ = r.text().await;
    // A model name the client made up must not become a label value.
    let r = chat(
        &server,
        json!({"model": "up/client-made-this-up", "messages": user("b")}),
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = chat(
        &server,
        json!({"model": "down/gone", "messages": user("c")}),
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), 502);
    let text = server.get("/metrics").await.text().await.expect("text");
    assert!(
        !text.contains("secret-project") && !text.contains("client-made-this-up"),
        "{text}"
    );
    let s = samples(&text);
    assert_eq!(
        sum(&s, "llmhub_requests_total", &["status=\"2xx\""]),
        5.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &s,
            "llmhub_requests_total",
            &["model=\"priced\"", "status=\"2xx\""]
        ),
        4.0
    );
    assert_eq!(
        sum(&s, "llmhub_requests_total", &["model=\"unlisted\""]),
        1.0
    );
    assert_eq!(
        sum(
            &s,
            "llmhub_requests_total",
            &["provider=\"down\"", "status=\"5xx\""]
        ),
        1.0
    );
    // Input tokens: 10 + 11 + 12 (plain), 13 (stream, counted though not asked), 14.
    assert_eq!(sum(&s, "llmhub_tokens_total", &["kind=\"input\""]), 60.0);
    let cost: f64 = (10..=13).map(|n| cost(n, 2, 5)).sum();
    assert!(
        (sum(&s, "llmhub_cost_usd_total", &[]) - cost).abs() < 1e-9,
        "{text}"
    );
    assert_eq!(
        sum(
            &s,
            "llmhub_upstream_attempts_total",
            &["outcome=\"failed\"", "provider=\"down\""]
        ),
        1.0
    );
    assert_eq!(sum(&s, "llmhub_request_duration_seconds_count", &[]), 6.0);
    assert_eq!(
        sum(&s, "llmhub_time_to_first_token_seconds_count", &[]),
        1.0
    );
    assert_eq!(sum(&s, "llmhub_circuit_state", &["provider=\"up\""]), 0.0);
    assert_eq!(sum(&s, "llmhub_config_generation", &[]), 1.0);
    assert!(text.contains("llmhub_ledger_rows_dropped"), "{text}");
}

#[tokio::test]
async fn retention_deletes_old_rows_and_keeps_daily_totals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        llmhub::store::Store::open(&format!("sqlite://{}", dir.path().join("l.db").display()))
            .await
            .expect("open");
    let today = llmhub::store::days(llmhub::store::now_ms());
    let row = |id: &str, day: i64| llmhub::store::Row {
        id: id.to_string(),
        at_ms: day * 86_400_000,
        day: llmhub::store::civil_date(day),
        key: String::new(),
        project: "p".into(),
        agent: String::new(),
        surface: "chat".into(),
        requested: "m".into(),
        provider: "up".into(),
        model: "m".into(),
        status: 200,
        attempts: 1,
        streamed: false,
        input_tokens: 10,
        cached_tokens: 0,
        cache_write_tokens: 0,
        output_tokens: 1,
        reasoning_tokens: 0,
        cost_usd: Some(0.5),
        latency_ms: 1,
        ttft_ms: None,
        error: None,
    };
    store
        .write(&[row("old", today - 100), row("new", today)])
        .await
        .expect("write");
    let deleted = store
        .prune(&llmhub::store::civil_date(today - 90))
        .await
        .expect("prune");
    assert_eq!(deleted, 1);
    let recent = store.recent(10, None).await.expect("recent");
    assert_eq!(
        recent.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["new"]
    );
    let all = store
        .usage(&llmhub::store::UsageQuery::default())
        .await
        .expect("usage");
    assert_eq!(all[0].totals.requests, 2, "daily totals outlive their rows");
    assert_eq!(all[0].totals.cost_usd, 1.0);
}

#[tokio::test]
async fn mcp_over_http_is_attributed_by_the_sessions_headers() {
    let up = metered_upstream().await;
    let cfg = config(&up, "http://127.0.0.1:9/v1", "", "");
    let server = Server::start(&cfg).await;
    let post = |body: Value, session: Option<String>| {
        let mut req = server
            .client
            .post(format!("{}/mcp", server.url))
            .header("accept", "application/json, text/event-stream")
            .header("x-llmhub-project", "from-header")
            .header("x-llmhub-agent", "cursor")
            .json(&body);
        if let Some(s) = session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        req.send()
    };
    let init = post(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}), None)
        .await
        .expect("initialize");
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .expect("id")
        .to_string();
    let _ = init.text().await;
    let _ = post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(session.clone()),
    )
    .await
    .expect("initialized");
    let call = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "chat_completion", "arguments": {"model": "up/priced", "prompt": "hi"}}}),
        Some(session.clone()),
    )
    .await
    .expect("call");
    let body = call.text().await.expect("body");
    assert!(body.contains("\"isError\":false"), "{body}");
    // Arguments win over headers.
    let call = post(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "chat_completion", "arguments": {"model": "up/priced", "prompt": "hi", "project_id": "from-args"}}}), Some(session))
        .await
        .expect("call");
    let _ = call.text().await;
    flushed(&server).await;
    let report = usage(&server, "period=day&group_by=project,agent").await;
    let rows: Vec<(String, String)> = report["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| {
            (
                r["project"].as_str().unwrap_or("").into(),
                r["agent"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("from-args".into(), "cursor".into()),
            ("from-header".into(), "cursor".into())
        ]
    );
}
