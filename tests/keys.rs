//! Client keys, allow-lists, rate limits and budgets, counted in process: every limit
//! trips at its count with OpenAI's status, headers and body, on HTTP and MCP; key
//! files are hot-reloaded; spend survives a restart.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value, json};

const ADMIN_ENV: &str = "LLMHUB_TEST_ADMIN_KEY";
const ADMIN: &str = "admin-secret-for-tests";

/// An upstream answering with 12 input and 5 output tokens.
async fn upstream() -> Mock {
    completion_upstream("ok", 12, 5).await
}

/// `up` (priced: $1000 per million tokens both ways, so a request costs $0.017), `echo`,
/// a `fast` group, an admin key, and a prompt tool.
fn config(up: &Mock, hub_extra: &str) -> ConfigDir {
    let cfg = ConfigDir::new(&format!(
        "[routing]\nretries = 0\n[server]\napi_keys_env = [\"{ADMIN_ENV}\"]\n[groups]\nfast = [\"up/priced\"]\n{hub_extra}"
    ));
    cfg.write(".env", &format!("{KEY_ENV}={KEY}\n{ADMIN_ENV}={ADMIN}\n"));
    cfg.provider(
        "up",
        &up.url,
        "[models.priced]\ncost_input_per_1m = 1000.0\ncost_output_per_1m = 1000.0\n",
    );
    cfg.echo();
    cfg.write(
        "tools.d/summarize.toml",
        "description = \"Summarize\"\nmodel = \"up/priced\"\nmax_tokens = 5\nprompt = \"Summarize: {{ text }}\"\n[input]\ntype = \"object\"\nrequired = [\"text\"]\n[input.properties.text]\ntype = \"string\"\n",
    );
    cfg
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", r.headers()))
        .to_str()
        .expect("ascii")
        .to_string()
}

async fn error_of(r: reqwest::Response) -> Value {
    let body: Value = r.json().await.expect("json");
    body["error"].clone()
}

#[tokio::test]
async fn a_new_key_works_after_a_reload_and_deleting_its_file_revokes_it() {
    let up = upstream().await;
    let cfg = config(&up, "");
    let server = Server::start_watching(&cfg).await;
    let mut reloads = server.hub.subscribe();
    let key = new_key(&cfg, "search-bot", "search");
    assert!(key.starts_with("llmhub-") && key.len() >= 7 + 43, "{key}");
    let file = std::fs::read_to_string(cfg.path("keys.d/search-bot.toml")).expect("file");
    assert!(!file.contains(&key[7..]), "the key itself is never written");
    for setting in [
        "models",
        "tools",
        "rpm",
        "tpm",
        "max_parallel",
        "budget_usd",
        "expires",
    ] {
        assert!(
            file.contains(&format!("# {setting} =")),
            "{setting} example in {file}"
        );
    }
    assert!(matches!(
        next_reload(&mut reloads).await,
        llmhub::hub::ReloadEvent::Applied { .. }
    ));

    let ok = chat_as(&server, &key, "up/priced").await;
    assert_eq!(ok.status(), 200);
    let no_key = server
        .chat(json!({"model": "echo", "messages": [user("hi")]}))
        .await;
    assert_eq!(no_key.status(), 401);
    assert_eq!(error_of(no_key).await["code"], "missing_api_key");
    let wrong = chat_as(&server, "llmhub-not-a-real-key", "echo").await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(error_of(wrong).await["code"], "invalid_api_key");

    // The ledger knows the key by name; its project is the key's, whatever headers say.
    server.hub.ledger().expect("ledger").flush().await;
    let by_key = get_as(&server, ADMIN, "/v1/usage?group_by=key,project").await;
    let by_key: Value = by_key.json().await.expect("json");
    assert_eq!(by_key["data"][0]["key"], "search-bot", "{by_key}");
    assert_eq!(by_key["data"][0]["project"], "search", "{by_key}");

    std::fs::remove_file(cfg.path("keys.d/search-bot.toml")).expect("delete");
    assert!(matches!(
        next_reload(&mut reloads).await,
        llmhub::hub::ReloadEvent::Applied { .. }
    ));
    let revoked = chat_as(&server, &key, "echo").await;
    assert_eq!(revoked.status(), 401, "a deleted key is refused");
    // With keys.d/ still there, no key file left does not open the gateway.
    let open = server
        .chat(json!({"model": "echo", "messages": [user("hi")]}))
        .await;
    assert_eq!(open.status(), 401);
    assert_eq!(chat_as(&server, ADMIN, "echo").await.status(), 200);
}

#[tokio::test]
async fn rpm_trips_at_its_count_with_openai_headers_and_mcp_says_which_limit() {
    let up = upstream().await;
    let cfg = config(&up, "");
    let key = new_key(&cfg, "bot", "search");
    limit_key(&cfg, "bot", "rpm = 3");
    let server = Server::start(&cfg).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = chat_as(&server, &key, "up/priced").await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "3");
        remaining.push(header(&r, "x-ratelimit-remaining-requests"));
        assert!(header(&r, "x-ratelimit-reset-requests").ends_with('s'));
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = chat_as(&server, &key, "up/priced").await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = header(&refused, "retry-after").parse().expect("seconds");
    assert!(
        (1..=20).contains(&retry),
        "one request comes back every 20 s: {retry}"
    );
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
    let error = error_of(refused).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["type"], "requests");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("3 requests per minute"),
        "{error}"
    );
    assert_eq!(
        up.count(),
        3,
        "a refused request never reaches the upstream"
    );

    // The same key over MCP is refused too, as a tool result saying which limit.
    let mut mcp = McpHttp::connect(&server, &key).await;
    let result = mcp
        .call(
            "chat_completion",
            json!({"model": "up/priced", "prompt": "hi"}),
        )
        .await;
    assert_eq!(result["isError"], true, "{result}");
    let text = result["content"][0]["text"].as_str().unwrap_or("");
    assert!(
        text.contains("requests per minute") && text.contains("retry in"),
        "{text}"
    );

    // Admin keys are held to nothing.
    assert_eq!(chat_as(&server, ADMIN, "up/priced").await.status(), 200);
    let metrics = get_as(&server, ADMIN, "/metrics")
        .await
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("llmhub_limited_total{limit=\"requests\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_spent_rpm_window_comes_back_after_the_retry_after_it_named() {
    let up = upstream().await;
    let cfg = config(&up, "");
    let key = new_key(&cfg, "bot", "default");
    // One request back every 0.5 s.
    limit_key(&cfg, "bot", "rpm = 120");
    let server = Server::start(&cfg).await;
    let mut refused = None;
    for _ in 0..200 {
        let r = chat_as(&server, &key, "echo").await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("120 rpm runs out within 200 quick requests");
    let wait: u64 = header(&refused, "retry-after-ms").parse().expect("ms");
    assert!(wait <= 500, "{wait}");
    tokio::time::sleep(std::time::Duration::from_millis(wait + 20)).await;
    assert_eq!(chat_as(&server, &key, "echo").await.status(), 200);
}

#[tokio::test]
async fn tpm_counts_real_tokens_and_max_parallel_counts_requests_in_flight() {
    let up = upstream().await;
    let cfg = config(&up, "");
    let key = new_key(&cfg, "tok", "default");
    // 17 tokens a request: the second one overdraws, the third finds nothing left.
    limit_key(&cfg, "tok", "tpm = 30");
    let server = Server::start(&cfg).await;
    let first = chat_as(&server, &key, "up/priced").await;
    assert_eq!(header(&first, "x-ratelimit-limit-tokens"), "30");
    assert_eq!(header(&first, "x-ratelimit-remaining-tokens"), "30");
    let second = chat_as(&server, &key, "up/priced").await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-ratelimit-remaining-tokens"), "13");
    let third = chat_as(&server, &key, "up/priced").await;
    assert_eq!(third.status(), 429);
    assert_eq!(header(&third, "x-ratelimit-remaining-tokens"), "0");
    let error = error_of(third).await;
    assert_eq!(
        (error["code"].as_str(), error["type"].as_str()),
        (Some("rate_limit_exceeded"), Some("tokens"))
    );

    // max_parallel: a slow upstream holds the first request until the test lets it go.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let slow = {
        let gate = gate.clone();
        Mock::start(move |_, _| {
            let gate = gate.clone();
            let arrived = arrived_tx.clone();
            async move {
                let _ = arrived.send(());
                let _permit = gate.acquire().await;
                json_response(200, &json!({"id": "c", "object": "chat.completion", "created": 1, "model": "s",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}).to_string())
            }
        })
        .await
    };
    cfg.provider("slow", &slow.url, "models = [\"s\"]");
    let key = new_key(&cfg, "one", "default");
    limit_key(&cfg, "one", "max_parallel = 1");
    let server = Server::start(&cfg).await;
    let first = {
        let server_url = server.url.clone();
        let client = server.client.clone();
        let key = key.clone();
        tokio::spawn(async move {
            client
                .post(format!("{server_url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "slow/s", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .expect("request")
                .status()
        })
    };
    arrived
        .recv()
        .await
        .expect("the first request reached the upstream");
    let second = chat_as(&server, &key, "echo").await;
    assert_eq!(second.status(), 429);
    assert!(
        error_of(second).await["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_parallel")
    );
    gate.add_permits(1);
    assert_eq!(first.await.expect("first"), 200);
    assert_eq!(
        chat_as(&server, &key, "echo").await.status(),
        200,
        "the slot came back"
    );
}

#[tokio::test]
async fn budgets_stop_spend_for_the_key_and_the_project_and_survive_a_restart() {
    let up = upstream().await;
    let cfg = config(&up, "[projects.search]\nbudget_usd = { day = 0.2 }\n");
    let a = new_key(&cfg, "a", "search");
    let b = new_key(&cfg, "b", "search");
    let c = new_key(&cfg, "c", "other");
    limit_key(&cfg, "c", "budget_usd = { day = 0.05, month = 10.0 }");
    let server = Server::start(&cfg).await;

    // Key budget: $0.017 a request; the next is refused before the spend passes $0.05.
    let mut ok = 0;
    let refused = loop {
        let r = chat_as(&server, &c, "up/priced").await;
        if r.status() != 200 {
            break r;
        }
        ok += 1;
        assert!(ok < 10, "the budget never stopped the key");
    };
    assert!(ok >= 1, "the first request fits the budget");
    assert_eq!(refused.status(), 429);
    let retry: u64 = header(&refused, "retry-after").parse().expect("seconds");
    assert!(retry <= 86_400, "renews at the next UTC midnight: {retry}");
    let error = error_of(refused).await;
    assert_eq!(error["code"], "insufficient_quota");
    assert_eq!(error["type"], "insufficient_quota");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("daily budget of key `c`"),
        "{error}"
    );
    let spent_c = f64::from(ok) * 0.017;
    assert!(spent_c <= 0.05, "never past the budget: {spent_c}");

    // Project budget: keys a and b share $0.2 a day.
    let mut ok = 0;
    let mut turn = 0;
    let refused = loop {
        let key = if turn % 2 == 0 { &a } else { &b };
        turn += 1;
        let r = chat_as(&server, key, "up/priced").await;
        if r.status() != 200 {
            break r;
        }
        ok += 1;
        assert!(ok < 30, "the project budget never stopped its keys");
    };
    assert!(f64::from(ok) * 0.017 <= 0.2 && ok >= 5, "{ok} requests");
    let error = error_of(refused).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("project `search`"),
        "{error}"
    );
    let other = if turn % 2 == 0 { &a } else { &b };
    assert_eq!(
        chat_as(&server, other, "up/priced").await.status(),
        429,
        "both keys stop"
    );
    // A model without prices costs nothing that a budget can count; the key still works.
    assert_eq!(chat_as(&server, &c, "echo").await.status(), 200);

    // A restart reads spend back from the ledger: the keys stay stopped.
    server.stop().await;
    let server = Server::start(&cfg).await;
    let again = chat_as(&server, &c, "up/priced").await;
    assert_eq!(again.status(), 429, "a restart never resets spend");
    assert_eq!(chat_as(&server, &a, "up/priced").await.status(), 429);
    let health = get_as(&server, ADMIN, "/health")
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(health["limits"]["store"], "memory");
    assert_eq!(health["limits"]["spend_loaded"], true);
}

#[tokio::test]
async fn allow_lists_hold_on_http_models_tools_and_mcp() {
    let up = upstream().await;
    let cfg = config(&up, "");
    let key = new_key(&cfg, "narrow", "search");
    limit_key(
        &cfg,
        "narrow",
        "models = [\"up/*\"]\ntools = [\"summarize\", \"list_models\"]",
    );
    let server = Server::start(&cfg).await;

    let models = get_as(&server, &key, "/v1/models")
        .await
        .json::<Value>()
        .await
        .expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["up/priced", "fast"],
        "only what the key may use; `fast` is all up/*"
    );
    assert_eq!(chat_as(&server, &key, "fast").await.status(), 200);
    assert_eq!(
        chat_as(&server, &key, "priced").await.status(),
        200,
        "a bare id of up/*"
    );
    let denied = chat_as(&server, &key, "echo").await;
    assert_eq!(denied.status(), 403);
    let error = error_of(denied).await;
    assert_eq!(
        (error["code"].as_str(), error["param"].as_str()),
        (Some("model_not_allowed"), Some("model"))
    );
    assert_eq!(
        get_as(&server, &key, "/v1/models/echo/echo").await.status(),
        403
    );
    assert_eq!(up.count(), 2);

    let tools = get_as(&server, &key, "/v1/tools")
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(tools["data"][0]["name"], "summarize");
    let call = |name: &'static str| {
        server
            .client
            .post(format!("{}/v1/tools/{name}", server.url))
            .bearer_auth(&key)
            .json(&json!({"text": "a long story"}))
            .send()
    };
    assert_eq!(call("summarize").await.expect("call").status(), 200);

    let mut mcp = McpHttp::connect(&server, &key).await;
    let mut names = mcp.tool_names().await;
    names.sort();
    assert_eq!(names, ["list_models", "summarize"]);
    let prompts = mcp.request("prompts/list", json!({})).await;
    let prompts: Vec<&str> = prompts["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(prompts, ["summarize"]);
    let refused = mcp
        .call("chat_completion", json!({"model": "echo", "prompt": "hi"}))
        .await;
    assert_eq!(refused["isError"], true);
    assert!(
        refused["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("may not call tool `chat_completion`")
    );
    let listed = mcp.call("list_models", json!({})).await;
    let listed: Value =
        serde_json::from_str(listed["content"][0]["text"].as_str().unwrap_or("")).expect("json");
    let listed: Vec<&str> = listed["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["address"].as_str().or(m["id"].as_str()))
        .collect();
    assert!(
        !listed.is_empty() && !listed.iter().any(|m| m.contains("echo")),
        "{listed:?}"
    );
    let allowed = mcp.call("summarize", json!({"text": "x"})).await;
    assert_eq!(allowed["isError"], false, "{allowed}");

    // /v1/keys: a client key sees itself, an admin every key; never key material.
    let own: Value = get_as(&server, &key, "/v1/keys")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(own["data"].as_array().map(Vec::len), Some(1), "{own}");
    assert_eq!(own["data"][0]["name"], "narrow");
    assert_eq!(own["data"][0]["models"], json!(["up/*"]));
    let file = std::fs::read_to_string(cfg.path("keys.d/narrow.toml")).expect("file");
    let digest = file.split('"').nth(1).expect("sha256 value");
    assert!(!own.to_string().contains(digest) && !own.to_string().contains(&key));
    let all: Value = get_as(&server, ADMIN, "/v1/keys")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(all["data"].as_array().map(Vec::len), Some(1));

    // Usage: a key sees its own project only; an admin key sees all.
    server.hub.ledger().expect("ledger").flush().await;
    let other = get_as(&server, &key, "/v1/usage?project=default").await;
    assert_eq!(other.status(), 403);
    let own = get_as(&server, &key, "/v1/usage?group_by=project")
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(own["data"].as_array().map(Vec::len), Some(1), "{own}");
    assert_eq!(own["data"][0]["project"], "search");
    let rows = get_as(&server, &key, "/v1/usage/requests")
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert!(
        rows["data"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["project"] == "search" && r["key"] == "narrow"),
        "{rows}"
    );
    // /health's details and /metrics need a key; without one, the status only.
    let health: Value = get_as(&server, "", "/health")
        .await
        .json()
        .await
        .expect("json");
    assert!(health.get("providers").is_none() && health.get("limits").is_none());
    assert_eq!(get_as(&server, "", "/metrics").await.status(), 401);
    assert_eq!(get_as(&server, &key, "/metrics").await.status(), 200);
}

#[tokio::test]
async fn a_bad_key_file_is_reported_with_its_place_and_the_old_keys_keep_working() {
    let up = upstream().await;
    let cfg = config(&up, "");
    let key = new_key(&cfg, "good", "default");
    let server = Server::start_watching(&cfg).await;
    let mut reloads = server.hub.subscribe();
    let cases = [
        (
            "sha256 = \"abc\"\n",
            "keys.d/bad.toml:1:10",
            "expected 64 hexadecimal digits",
        ),
        (
            "sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nrpm = -5\n",
            "keys.d/bad.toml:2:7",
            "expected a limit of 1 or more, found -5",
        ),
        (
            "sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nmodels = [\"nothing/*\"]\n",
            "keys.d/bad.toml:2:11",
            "`nothing/*` matches no model address",
        ),
        (
            "sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nrmp = 5\n",
            "keys.d/bad.toml:2:1",
            "unknown field `rmp`",
        ),
        (
            "sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\ntools = [\"nope_*\"]\n",
            "keys.d/bad.toml:2:10",
            "`nope_*` matches no tool",
        ),
    ];
    for (text, place, message) in cases {
        cfg.write("keys.d/bad.toml", text);
        match next_reload(&mut reloads).await {
            llmhub::hub::ReloadEvent::Failed { errors } => {
                let all = errors.join("\n");
                assert!(
                    all.contains(place) && all.contains(message),
                    "{place} {message} in:\n{all}"
                );
            }
            other => panic!("{text}: {other:?}"),
        }
        assert_eq!(
            chat_as(&server, &key, "echo").await.status(),
            200,
            "the old keys keep working"
        );
    }
    // An expired key is refused saying so.
    cfg.write(
        "keys.d/bad.toml",
        &format!(
            "sha256 = \"{}\"\nexpires = 2020-01-01\n",
            llmhub::registry::keys::hex(&llmhub::registry::keys::digest("llmhub-old"))
        ),
    );
    assert!(matches!(
        next_reload(&mut reloads).await,
        llmhub::hub::ReloadEvent::Applied { .. }
    ));
    let expired = chat_as(&server, "llmhub-old", "echo").await;
    assert_eq!(expired.status(), 401);
    let error = error_of(expired).await;
    assert_eq!(error["code"], "expired_api_key");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("expired on 2020-01-01")
    );
}
