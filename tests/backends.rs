//! Aggregated backend MCP servers: a real rmcp server over HTTP (written here) and
//! `llmhub mcp` itself as a child process over stdio, behind the hub's `/mcp`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::mcp::*;
use common::*;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, GetPromptRequestParams};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

/// Waits, up to 15 s, until `/health` satisfies `ok` (backends connect in the background).
async fn until_health(server: &Server, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let health = server.get_json("/health").await;
        if ok(&health) {
            return health;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {}",
            health["backends"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status<'a>(h: &'a Value, backend: &str) -> &'a str {
    h["backends"][backend]["status"].as_str().unwrap_or("")
}

const HUB: &str = "[routing]\ndefault_model = \"echo\"\n";

fn base_config() -> ConfigDir {
    let cfg = ConfigDir::new(HUB);
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    cfg
}

/// A second llmhub, run as `llmhub mcp` over stdio, whose pid lands in `pidfile`.
fn stdio_backend(cfg: &ConfigDir) -> (String, std::path::PathBuf) {
    let inner = ConfigDir::new(HUB);
    inner.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    inner.write(
        "tools.d/shout.toml",
        "description = \"Shout\"\nprompt = \"{{ text | upper }}\"\n[input]\ntype = \"object\"\nrequired = [\"text\"]\nproperties.text = { type = \"string\" }\n",
    );
    let pidfile = cfg.path("backend.pid");
    let script = format!(
        "echo $$ > '{}'; RUST_LOG=warn exec '{}' mcp --config '{}'",
        pidfile.display(),
        env!("CARGO_BIN_EXE_llmhub"),
        inner.hub_path().display()
    );
    let toml = format!(
        "command = \"sh\"\nargs = [\"-c\", {}]\n",
        toml_string(&script)
    );
    // The inner config must outlive the test: keep its folder.
    std::mem::forget(inner);
    (toml, pidfile)
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[tokio::test]
async fn backend_tools_are_offered_under_prefixes_and_calls_reach_them_by_original_name() {
    let gh = Backend::new(vec![
        tool("search_issues", "Search the issues"),
        tool("fail", "Always fails"),
    ]);
    let (url, _, _h) = start_backend(gh.clone()).await;
    let cfg = base_config();
    cfg.write(
        "servers.d/github.toml",
        &format!("url = \"{url}\"\nprefix = \"gh\"\n"),
    );
    let (local, _) = stdio_backend(&cfg);
    cfg.write("servers.d/local.toml", &local);
    let server = Server::start(&cfg).await;
    until_health(&server, "both backends connected", |h| {
        status(h, "github") == "connected" && status(h, "local") == "connected"
    })
    .await;

    let (client, _) = connect(&server, "/mcp").await;
    let all = client.list_all_tools().await.expect("tools/list");
    let listed: Vec<&str> = all.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "chat_completion",
        "gh__search_issues",
        "gh__fail",
        "local__shout",
        "local__chat_completion",
    ] {
        assert!(listed.contains(&expected), "{expected} in {listed:?}");
    }
    let search = all
        .iter()
        .find(|t| t.name == "gh__search_issues")
        .expect("search");
    assert_eq!(search.description.as_deref(), Some("Search the issues"));
    assert_eq!(
        search.input_schema,
        tool("search_issues", "").input_schema,
        "schema passed through unchanged"
    );

    let result = call(&client, "gh__search_issues", json!({"query": "panic"})).await;
    assert_eq!(result.is_error, Some(false));
    assert_eq!(
        result.structured_content,
        Some(json!({"tool": "search_issues", "args": {"query": "panic"}}))
    );
    assert_eq!(
        gh.calls(),
        vec![("search_issues".to_string(), json!({"query": "panic"}))]
    );
    let result = call(&client, "gh__fail", json!({})).await;
    assert_eq!(result.is_error, Some(true), "isError passes through");
    assert_eq!(text(&result), "the backend says no");

    let result = call(&client, "local__shout", json!({"text": "hi"})).await;
    assert_eq!(
        text(&result),
        "HI",
        "the stdio backend's own tool, via its echo model"
    );
    let result = call(
        &client,
        "local__chat_completion",
        json!({"prompt": "through two hubs"}),
    )
    .await;
    assert_eq!(text(&result), "through two hubs");

    let prompts = client.list_all_prompts().await.expect("prompts/list");
    assert!(
        prompts.iter().any(|p| p.name == "gh__triage"),
        "backend prompts are aggregated too"
    );
    let got = client
        .get_prompt(GetPromptRequestParams::new("gh__triage"))
        .await
        .expect("prompts/get");
    assert_eq!(
        serde_json::to_value(&got.messages).expect("json")[0]["content"]["text"],
        "triage via triage"
    );
}

#[tokio::test]
async fn filters_the_name_rule_and_collisions_leave_tools_out_with_a_reason() {
    let one = Backend::new(vec![
        tool("search_issues", ""),
        tool("search_secrets", ""),
        tool("delete_repo", ""),
        tool("bad name!", ""),
        tool("b__c", ""),
    ]);
    let two = Backend::new(vec![tool("c", "")]);
    let (url1, _, _h1) = start_backend(one).await;
    let (url2, _, _h2) = start_backend(two).await;
    let cfg = base_config();
    cfg.write(
        "servers.d/a.toml",
        &format!("url = \"{url1}\"\ninclude = [\"search_*\", \"bad*\", \"b__*\"]\nexclude = [\"search_secrets\"]\n"),
    );
    cfg.write(
        "servers.d/z.toml",
        &format!("url = \"{url2}\"\nprefix = \"a__b\"\n"),
    );
    let server = Server::start(&cfg).await;
    let health = until_health(&server, "connected", |h| {
        status(h, "a") == "connected" && status(h, "z") == "connected"
    })
    .await;
    let (client, _) = connect(&server, "/mcp").await;
    let listed = names(&client).await;
    assert!(listed.contains(&"a__search_issues".to_string()));
    assert!(
        !listed
            .iter()
            .any(|n| n.contains("secrets") || n.contains("delete")),
        "{listed:?}"
    );
    assert_eq!(
        listed.iter().filter(|n| *n == "a__b__c").count(),
        1,
        "a collision is never offered twice"
    );
    let left_out = health["backends"]["a"]["left_out"].to_string()
        + &health["backends"]["z"]["left_out"].to_string();
    assert!(
        left_out.contains("`bad name!` left out: `a__bad name!` is not 1 to 64 of a-z"),
        "{left_out}"
    );
    assert!(
        left_out.contains("z: `c` left out: `a__b__c` is already offered by backend a"),
        "{left_out}"
    );
    // Calls go where the list says: the colliding name to the backend that offers it,
    // and names left out are unknown.
    let routed = call(&client, "a__b__c", json!({})).await;
    assert_eq!(text(&routed), "b__c got {}", "{routed:?}");
    for hidden in ["a__search_secrets", "a__delete_repo", "z__c"] {
        let refused = client
            .call_tool(CallToolRequestParams::new(hidden).with_arguments(Map::new()))
            .await
            .expect_err(hidden)
            .to_string();
        assert!(refused.contains("unknown tool"), "{hidden}: {refused}");
    }
    let offered = call(&client, "a__search_issues", json!({"q": 1})).await;
    assert_eq!(
        text(&offered),
        r#"search_issues got {"q":1}"#,
        "{offered:?}"
    );
}

#[tokio::test]
async fn auth_headers_reach_the_backend_and_a_missing_key_makes_it_inactive() {
    let bearer = Backend::new(vec![tool("ping", "")]);
    let header = Backend::new(vec![tool("ping", "")]);
    let (url1, _, _h1) = start_backend(bearer.clone()).await;
    let (url2, _, _h2) = start_backend(header.clone()).await;
    let cfg = base_config();
    cfg.write(
        ".env",
        "LLMHUB_TEST_GH_TOKEN=ghp-test-token\nLLMHUB_TEST_X_KEY=x-test-key\n",
    );
    cfg.write(
        "servers.d/one.toml",
        &format!(
            "url = \"{url1}\"\nauth = {{ type = \"bearer\", env_key = \"LLMHUB_TEST_GH_TOKEN\" }}\n"
        ),
    );
    cfg.write(
        "servers.d/two.toml",
        &format!("url = \"{url2}\"\nauth = {{ type = \"header\", name = \"x-api-key\", env_key = \"LLMHUB_TEST_X_KEY\" }}\n"),
    );
    cfg.write(
        "servers.d/three.toml",
        &format!(
            "url = \"{url2}\"\nauth = {{ type = \"bearer\", env_key = \"LLMHUB_TEST_UNSET\" }}\n"
        ),
    );
    let server = Server::start(&cfg).await;
    let health = until_health(&server, "connected", |h| {
        status(h, "one") == "connected" && status(h, "two") == "connected"
    })
    .await;
    let seen = bearer.headers.lock().expect("lock").clone();
    assert!(
        seen.iter().all(|h| h
            .get("authorization")
            .is_some_and(|v| v == "Bearer ghp-test-token")),
        "{seen:?}"
    );
    let seen = header.headers.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .any(|h| h.get("x-api-key").is_some_and(|v| v == "x-test-key")),
        "{seen:?}"
    );
    assert_eq!(status(&health, "three"), "inactive");
    assert_eq!(
        health["backends"]["three"]["reason"],
        "LLMHUB_TEST_UNSET is not set"
    );
    assert!(!health.to_string().contains("ghp-test-token"));
}

#[tokio::test]
async fn a_backend_down_at_start_comes_up_later_and_clients_hear_of_it() {
    let reserved = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = reserved.local_addr().expect("addr");
    drop(reserved);
    let cfg = base_config();
    cfg.write(
        "servers.d/late.toml",
        &format!("url = \"http://{addr}/mcp\"\ntimeout_s = 2\n"),
    );
    let server = Server::start(&cfg).await;
    let health = until_health(&server, "marked down", |h| status(h, "late") == "down").await;
    assert!(
        health["backends"]["late"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    let (client, changed) = connect(&server, "/mcp").await;
    assert!(!names(&client).await.iter().any(|n| n.starts_with("late__")));
    // The rest of the hub works while the backend is down.
    assert_eq!(
        text(&call(&client, "chat_completion", json!({"prompt": "still here"})).await),
        "still here"
    );

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind the reserved port");
    let _h = serve_backend(Backend::new(vec![tool("hello", "")]), listener).await;
    tokio::time::timeout(Duration::from_secs(15), changed.notified())
        .await
        .expect("tools/list_changed");
    assert!(names(&client).await.contains(&"late__hello".to_string()));
}

#[tokio::test]
async fn a_crashed_stdio_backend_is_restarted() {
    let cfg = base_config();
    let (local, pidfile) = stdio_backend(&cfg);
    cfg.write("servers.d/local.toml", &local);
    let server = Server::start(&cfg).await;
    until_health(&server, "connected", |h| status(h, "local") == "connected").await;
    let (client, _) = connect(&server, "/mcp").await;
    assert_eq!(
        text(&call(&client, "local__shout", json!({"text": "one"})).await),
        "ONE"
    );

    let pid = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .to_string();
    std::fs::remove_file(&pidfile).expect("rm pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let health = until_health(&server, "restarted", |h| {
        h["backends"]["local"]["connects"] == 2 && status(h, "local") == "connected"
    })
    .await;
    assert_eq!(health["backends"]["local"]["transport"], "stdio");
    let new_pid = std::fs::read_to_string(&pidfile).expect("new pid");
    assert_ne!(new_pid.trim(), pid);
    assert_eq!(
        text(&call(&client, "local__shout", json!({"text": "two"})).await),
        "TWO"
    );
}

#[tokio::test]
async fn a_call_that_times_out_is_an_error_result_naming_the_backend() {
    let slow = Backend::new(vec![tool("slow", "Never answers")]);
    let (url, _, _h) = start_backend(slow).await;
    let cfg = base_config();
    cfg.write(
        "servers.d/slowpoke.toml",
        &format!("url = \"{url}\"\ntimeout_s = 0.5\n"),
    );
    let server = Server::start(&cfg).await;
    until_health(&server, "connected", |h| {
        status(h, "slowpoke") == "connected"
    })
    .await;
    let (client, _) = connect(&server, "/mcp").await;
    let result = call(&client, "slowpoke__slow", json!({})).await;
    assert_eq!(result.is_error, Some(true));
    assert_eq!(
        text(&result),
        "backend slowpoke did not answer `slow` within 0.5s (timeout_s)"
    );
}

#[tokio::test]
async fn a_backends_list_change_reaches_connected_clients() {
    let gh = Backend::new(vec![tool("one", "")]);
    let (url, _, _h) = start_backend(gh.clone()).await;
    let cfg = base_config();
    cfg.write("servers.d/gh.toml", &format!("url = \"{url}\"\n"));
    let server = Server::start(&cfg).await;
    until_health(&server, "connected", |h| status(h, "gh") == "connected").await;
    let (client, changed) = connect(&server, "/mcp").await;
    assert!(names(&client).await.contains(&"gh__one".to_string()));
    gh.set_tools(vec![tool("one", ""), tool("two", "")]).await;
    tokio::time::timeout(Duration::from_secs(15), changed.notified())
        .await
        .expect("list_changed relayed");
    assert!(names(&client).await.contains(&"gh__two".to_string()));
}

#[tokio::test]
async fn profiles_serve_only_their_subset_over_http_and_stdio() {
    let gh = Backend::new(vec![tool("search_issues", "")]);
    let (url, _, _h) = start_backend(gh).await;
    let cfg = ConfigDir::new(&format!(
        "{HUB}[profiles.review]\nservers = [\"gh\"]\ntools = [\"chat_*\"]\n[profiles.tools-only]\ntools = [\"list_models\"]\n"
    ));
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    cfg.write("servers.d/gh.toml", &format!("url = \"{url}\"\n"));
    let server = Server::start(&cfg).await;
    until_health(&server, "connected", |h| status(h, "gh") == "connected").await;

    let (review, _) = connect(&server, "/mcp/review").await;
    assert_eq!(
        names(&review).await,
        vec!["chat_completion", "gh__search_issues"]
    );
    let err = review
        .call_tool(CallToolRequestParams::new("list_models").with_arguments(Map::new()))
        .await
        .expect_err("outside the profile");
    assert!(
        err.to_string().contains("unknown tool `list_models`"),
        "{err}"
    );
    let (everything, _) = connect(&server, "/mcp").await;
    assert!(names(&everything).await.len() > 3);

    let hub = cfg.hub_path();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_llmhub"));
    command
        .args(["mcp", "--profile", "tools-only", "--config"])
        .arg(&hub);
    let transport = rmcp::transport::TokioChildProcess::new(command).expect("spawn");
    let stdio = Client {
        tools_changed: Arc::new(Notify::new()),
    }
    .serve(transport)
    .await
    .expect("initialize");
    assert_eq!(names(&stdio).await, vec!["list_models"]);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmhub"))
        .args(["mcp", "--profile", "nope", "--config"])
        .arg(&hub)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no profile `nope` in [profiles]; profiles: review, tools-only")
    );
}

#[tokio::test]
async fn editing_servers_d_touches_only_that_backend() {
    let a = Backend::new(vec![tool("alpha", ""), tool("beta", "")]);
    let b = Backend::new(vec![tool("gamma", "")]);
    let (url_a, _, _ha) = start_backend(a).await;
    let (url_b, _, _hb) = start_backend(b).await;
    let cfg = base_config();
    cfg.write("servers.d/a.toml", &format!("url = \"{url_a}\"\n"));
    let server = Server::start_watching(&cfg).await;
    until_health(&server, "connected", |h| status(h, "a") == "connected").await;
    let (client, changed) = connect(&server, "/mcp").await;
    assert!(names(&client).await.contains(&"a__beta".to_string()));

    // A filter change applies in place: no reconnection.
    cfg.write(
        "servers.d/a.toml",
        &format!("url = \"{url_a}\"\nexclude = [\"beta\"]\n"),
    );
    tokio::time::timeout(Duration::from_secs(15), changed.notified())
        .await
        .expect("list_changed");
    assert!(!names(&client).await.contains(&"a__beta".to_string()));

    // A new file connects just that backend; a removed one disconnects it.
    cfg.write("servers.d/b.toml", &format!("url = \"{url_b}\"\n"));
    until_health(&server, "b connected", |h| status(h, "b") == "connected").await;
    tokio::time::timeout(Duration::from_secs(15), changed.notified())
        .await
        .expect("list_changed");
    assert!(names(&client).await.contains(&"b__gamma".to_string()));
    std::fs::remove_file(cfg.path("servers.d/b.toml")).expect("rm");
    let health = until_health(&server, "b gone", |h| h["backends"].get("b").is_none()).await;
    assert_eq!(
        health["backends"]["a"]["connects"], 1,
        "a's session was never touched"
    );
    assert!(!names(&client).await.contains(&"b__gamma".to_string()));
}

#[tokio::test]
async fn a_restarted_http_backend_is_reinitialised_transparently() {
    let first = Backend::new(vec![tool("hello", "")]);
    let (url, addr, handle) = start_backend(first).await;
    let cfg = base_config();
    cfg.write(
        "servers.d/gh.toml",
        &format!("url = \"{url}\"\ntimeout_s = 2\n"),
    );
    let server = Server::start(&cfg).await;
    until_health(&server, "connected", |h| status(h, "gh") == "connected").await;
    let (client, _) = connect(&server, "/mcp").await;
    assert_eq!(
        call(&client, "gh__hello", json!({})).await.is_error,
        Some(false)
    );

    // The backend restarts and forgets every session (it would answer 404 to the old one).
    handle.abort();
    let _ = handle.await;
    let second = Backend::new(vec![tool("hello", "")]);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let _h2 = serve_backend(second.clone(), listener).await;
    // The next call re-initialises the session behind the scenes and succeeds.
    let result = call(&client, "gh__hello", json!({})).await;
    assert_eq!(result.is_error, Some(false), "{}", text(&result));
    assert_eq!(second.calls().len(), 1);
}

#[test]
fn servers_d_errors_are_reported_with_their_place() {
    let cfg = base_config();
    cfg.write(
        "servers.d/both.toml",
        "url = \"http://x/mcp\"\ncommand = \"x\"\n",
    );
    cfg.write("servers.d/neither.toml", "timeout_s = 3\n");
    cfg.write("servers.d/badurl.toml", "url = \"ftp://x\"\n");
    cfg.write(
        "servers.d/typo.toml",
        "url = \"http://x/mcp\"\nincldue = [\"a\"]\n",
    );
    cfg.write(
        "servers.d/auth.toml",
        "url = \"http://x/mcp\"\nauth = { type = \"basic\", env_key = \"X\" }\n",
    );
    cfg.write("hub.toml", &format!("{HUB}[profiles.empty]\n"));
    let errors: Vec<String> = match llmhub::hub::load_registry(&cfg.hub_path(), 1) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    };
    let joined = errors.join("\n");
    assert!(
        joined.contains("servers.d/both.toml:2:11: command: expected `url` or `command`, not both"),
        "{joined}"
    );
    assert!(joined.contains("servers.d/neither.toml: missing key: expected `url` (streamable HTTP) or `command` (stdio)"), "{joined}");
    assert!(
        joined.contains(
            "servers.d/badurl.toml:1:7: url: expected an http or https URL, found \"ftp://x\""
        ),
        "{joined}"
    );
    assert!(
        joined.contains("servers.d/typo.toml:2:1: incldue: unknown field `incldue`"),
        "{joined}"
    );
    assert!(joined.contains("servers.d/auth.toml:2:"), "{joined}");
    assert!(
        joined.contains("hub.toml:3:1: profiles.empty: expected `servers` or `tools` globs"),
        "{joined}"
    );
}

#[tokio::test]
async fn a_one_shot_stdio_client_sees_backend_tools_in_its_first_list() {
    let cfg = base_config();
    let (toml, _) = stdio_backend(&cfg);
    cfg.write("servers.d/inner.toml", &toml);
    // Everything at once, as a one-shot client sends it: the backend is still starting.
    let input = concat!(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        "\n",
    );
    let out = common::run_stdio(&cfg.hub_path(), input).await;
    let list = out
        .iter()
        .find(|v| v["id"] == 2)
        .unwrap_or_else(|| panic!("no tools/list reply: {out:?}"));
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"inner__shout"), "{names:?}");
}

// ---- the short way: a plain `tools/call` answered from the backend directly ----------

/// A POST on `mcp`'s session; the response as it came.
async fn send(mcp: &McpHttp, body: Value) -> reqwest::Response {
    mcp.builder(&body).send().await.expect("mcp request")
}

/// The answer's media type and its JSON-RPC response (the last event of a stream).
async fn call_raw(mcp: &McpHttp, body: Value) -> (String, Value) {
    read_answer(send(mcp, body).await).await
}

/// The same call as a browser sends it (an `Origin`), which rmcp's session answers.
async fn call_through_rmcp(mcp: &McpHttp, body: &Value) -> (String, Value) {
    let response = mcp
        .builder(body)
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .expect("call");
    read_answer(response).await
}

async fn read_answer(response: reqwest::Response) -> (String, Value) {
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .expect("content type")
        .to_string();
    let text = response.text().await.expect("body");
    let value = if kind.starts_with("application/json") {
        serde_json::from_str(&text).expect("JSON answer")
    } else {
        let events: Vec<Value> = sse_data(&text)
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        events.last().cloned().unwrap_or(Value::Null)
    };
    (kind, value)
}

async fn aggregating(backend: &Backend, extra: &str) -> (Server, ConfigDir) {
    // Dropping the handle detaches the backend's task: it serves until the test ends.
    let (url, _, _) = start_backend(backend.clone()).await;
    let cfg = ConfigDir::new(&format!("{HUB}{extra}"));
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    cfg.write(
        "servers.d/gh.toml",
        &format!("url = \"{url}\"\ntimeout_s = 30\n"),
    );
    let server = Server::start(&cfg).await;
    until_health(&server, "connected", |h| status(h, "gh") == "connected").await;
    (server, cfg)
}

#[tokio::test]
async fn a_plain_call_is_answered_as_json_from_the_backend_on_the_hubs_own_session() {
    let gh = Backend::new(vec![tool("search", "Search")]);
    let (server, _cfg) = aggregating(&gh, "").await;
    let mcp = McpHttp::connect(&server, "").await;

    let (kind, answer) = call_raw(
        &mcp,
        json!({"jsonrpc": "2.0", "id": "call-α", "method": "tools/call",
            "params": {"name": "gh__search", "arguments": {"query": "panic"}}}),
    )
    .await;
    assert_eq!(kind, "application/json", "{answer}");
    assert_eq!(answer["id"], "call-α", "the client's id comes back");
    assert_eq!(answer["result"]["isError"], false);
    assert_eq!(
        answer["result"]["structuredContent"],
        json!({"tool": "search", "args": {"query": "panic"}}),
        "the backend's result, unchanged"
    );
    let (kind, answer) = call_raw(
        &mcp,
        json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call",
            "params": {"name": "gh__search", "_meta": {"progressToken": "p"}}}),
    )
    .await;
    assert_eq!(kind, "application/json", "{answer}");
    assert_eq!(answer["id"], 41);
    assert_eq!(answer["result"]["structuredContent"]["args"], json!({}));

    // A browser's request (an Origin) is rmcp's to vet: same answer, as its stream.
    let mut with_origin = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {"name": "gh__search", "arguments": {"query": "origin"}}});
    let (kind, answer) = call_through_rmcp(&mcp, &with_origin).await;
    assert_eq!(kind, "text/event-stream");
    assert_eq!(answer["id"], 42);
    assert_eq!(
        answer["result"]["structuredContent"]["args"]["query"],
        "origin"
    );
    // So is a host that is not allowed: refused the same way on both paths.
    with_origin["id"] = json!(43);
    let refused = mcp
        .builder(&with_origin)
        .header("host", "evil.example")
        .send()
        .await
        .expect("call");
    assert_eq!(refused.status(), 403);

    assert_eq!(
        gh.calls()
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["search", "search", "search"],
        "called by the original name, once each"
    );
    let sessions: std::collections::BTreeSet<String> = gh
        .headers
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|h| h.get("mcp-session-id"))
        .map(|v| v.to_str().expect("id").to_string())
        .collect();
    assert_eq!(
        sessions.len(),
        1,
        "every call went on the hub's one session with the backend: {sessions:?}"
    );

    // The same calls answered both ways are the same answers, errors included.
    for params in [
        json!({"name": "gh__search", "arguments": {"query": "same"}}),
        json!({"name": "list_models", "arguments": {}}),
        json!({"name": "chat_completion", "arguments": {"prompt": 5}}),
        json!({"name": "gh__nothing", "arguments": {}}),
    ] {
        let body = json!({"jsonrpc": "2.0", "id": 50, "method": "tools/call", "params": params});
        let (short, plain) = call_raw(&mcp, body.clone()).await;
        let (long, through_rmcp) = call_through_rmcp(&mcp, &body).await;
        assert_eq!(
            (short.as_str(), long.as_str()),
            ("application/json", "text/event-stream")
        );
        assert_eq!(plain, through_rmcp, "{params}");
    }
    let (_, answer) = call_raw(
        &mcp,
        json!({"jsonrpc": "2.0", "id": 44, "method": "tools/call",
            "params": {"name": "gh__nothing", "arguments": {}}}),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
}

#[tokio::test]
async fn a_long_call_streams_progress_and_a_cancelled_one_stops() {
    let gh = Backend::new(vec![tool("gated", "Waits"), tool("slow", "Never answers")]);
    let (server, _cfg) = aggregating(&gh, "[mcp]\nprogress_interval_s = 0.05\n").await;
    let mcp = McpHttp::connect(&server, "").await;

    // Still running at its first tick: progress notifications, then the answer, as SSE.
    let response = send(
        &mcp,
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "gh__gated", "arguments": {}, "_meta": {"progressToken": "tok"}}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    use futures_util::StreamExt;
    while !text.contains("notifications/progress") {
        let piece = body.next().await.expect("a progress event").expect("read");
        text.push_str(&String::from_utf8_lossy(&piece));
    }
    gh.gate.notify_one();
    while let Some(piece) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&piece.expect("read")));
    }
    let events: Vec<Value> = sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str(d).expect("JSON event"))
        .collect();
    assert_eq!(events[0]["params"]["progressToken"], "tok");
    assert_eq!(events[0]["params"]["progress"], 1);
    let last = events.last().expect("the answer");
    assert_eq!(last["id"], 5);
    assert_eq!(last["result"]["content"][0]["text"], "let through");

    // A call the client cancels ends with rmcp's cancellation error, long before the
    // backend's 30 s timeout.
    // The gated call's arrival left a wake-up stored: take it first.
    gh.called.notified().await;
    let call = send(
        &mcp,
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "gh__slow", "arguments": {}}}),
    );
    let arrived = gh.called.notified();
    let (answer, ()) = tokio::join!(call, async {
        arrived.await;
        let cancel = send(
            &mcp,
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": 9, "reason": "the user pressed Esc"}}),
        )
        .await;
        assert_eq!(cancel.status(), 202);
    });
    let (kind, answer) = read_answer(answer).await;
    assert_eq!(kind, "application/json");
    assert_eq!(answer["id"], 9);
    assert_eq!(answer["error"]["message"], "the request was cancelled");
}

/// A backend written against the wire (no rmcp): it answers with JSON where rmcp streams,
/// fails a call with a JSON-RPC error, and pings its client in the middle of another.
#[derive(Clone, Default)]
struct WireBackend {
    /// The session id and protocol version of every `tools/call`.
    calls: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    pong: Arc<Notify>,
    /// Replies to the backend's own requests, with the session they came on.
    pongs: Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

async fn wire_backend(
    axum::extract::State(b): axum::extract::State<WireBackend>,
    headers: axum::http::HeaderMap,
    axum::Json(m): axum::Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use futures_util::StreamExt;
    let json = |v: Value| axum::Json(v).into_response();
    let id = m["id"].clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    match m["method"].as_str() {
        Some("initialize") => {
            let mut r = json(json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "wire", "version": "1"}}}));
            r.headers_mut()
                .insert("mcp-session-id", "wire-1".parse().expect("header"));
            r
        }
        Some("tools/list") => json(json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
            {"name": "quota", "inputSchema": {"type": "object"}},
            {"name": "pinged", "inputSchema": {"type": "object"}}]}})),
        Some("tools/call") => {
            b.calls
                .lock()
                .expect("lock")
                .push((header("mcp-session-id"), header("mcp-protocol-version")));
            if m["params"]["name"] == "quota" {
                return json(json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32000, "message": "quota exhausted"}}));
            }
            let ping = json!({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"});
            let events = futures_util::stream::iter([format!("data: {ping}\n\n")])
                .chain(futures_util::stream::once(async move {
                    b.pong.notified().await;
                    let done = json!({"jsonrpc": "2.0", "id": id, "result": {
                        "content": [{"type": "text", "text": "pong seen"}], "isError": false}});
                    format!("data: {done}\n\n")
                }))
                .map(Ok::<_, std::convert::Infallible>);
            let mut r = axum::body::Body::from_stream(events).into_response();
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("header"));
            r
        }
        Some(_) => axum::http::StatusCode::ACCEPTED.into_response(),
        None => {
            b.pongs
                .lock()
                .expect("lock")
                .push((header("mcp-session-id"), m));
            b.pong.notify_one();
            axum::http::StatusCode::ACCEPTED.into_response()
        }
    }
}

#[tokio::test]
async fn backends_answering_json_failing_or_pinging_are_served_on_the_short_way() {
    let wire = WireBackend::default();
    let app = axum::Router::new()
        .route(
            "/mcp",
            axum::routing::post(wire_backend)
                .get(|| async { axum::http::StatusCode::METHOD_NOT_ALLOWED }),
        )
        .with_state(wire.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let cfg = base_config();
    cfg.write(
        "servers.d/wire.toml",
        &format!("url = \"http://{addr}/mcp\"\ntimeout_s = 30\n"),
    );
    let server = Server::start(&cfg).await;
    until_health(&server, "connected", |h| status(h, "wire") == "connected").await;
    let mcp = McpHttp::connect(&server, "").await;

    let (kind, answer) = call_raw(
        &mcp,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "wire__quota", "arguments": {}}}),
    )
    .await;
    assert_eq!(kind, "application/json");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let said = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("");
    assert!(
        said.starts_with("backend wire failed the call: ") && said.contains("quota exhausted"),
        "{said}"
    );

    let (_, answer) = call_raw(
        &mcp,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "wire__pinged", "arguments": {}}}),
    )
    .await;
    assert_eq!(answer["id"], 2);
    assert_eq!(
        answer["result"]["content"][0]["text"], "pong seen",
        "{answer}"
    );
    assert_eq!(
        *wire.pongs.lock().expect("lock"),
        [(
            "wire-1".to_string(),
            json!({"jsonrpc": "2.0", "id": "srv-1", "result": {}})
        )],
        "the backend's ping was answered"
    );
    assert_eq!(
        *wire.calls.lock().expect("lock"),
        [
            ("wire-1".to_string(), "2025-11-25".to_string()),
            ("wire-1".to_string(), "2025-11-25".to_string())
        ],
        "calls go on the session the hub opened, in its negotiated revision"
    );
}
