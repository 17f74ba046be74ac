//! Per-session MCP endpoints: `POST /v1/mcp/sessions` picks servers.d backends and
//! brings credentials; `/mcp/s/<id>` offers exactly those, connected with the
//! session's token; sessions live in the store (sealed), survive restarts, are shared
//! by instances on one PostgreSQL, and end on DELETE or expiry.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::mcp::*;
use common::*;
use rmcp::model::Tool;
use serde_json::{Value, json};

const SECRET: &str = "LLMHUB_SECRET_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
const TOKEN_ONE: &str = "ghp-session-one-7f3a9c";
const TOKEN_TWO: &str = "ghp-session-two-51b2e8";

/// Everything the server logs in this test binary, to look for secrets in.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("llmhub=debug,info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    })
}

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().expect("lock")).to_string()
}

fn search_tools(names: &[&str]) -> Vec<Tool> {
    names.iter().map(|n| tool(n, "Search")).collect()
}

/// A config with `github` (bearer auth from an unset variable: inactive for the main
/// endpoint), `docs` and `other` (no auth).
fn config(github: &str, docs: &str, other: &str, env: &str) -> ConfigDir {
    let cfg = ConfigDir::new("[mcp]\nsession_max_ttl_s = 604800\n");
    cfg.echo()
        .write(
            "servers.d/github.toml",
            &format!("url = \"{github}\"\nprefix = \"gh\"\nauth = {{ type = \"bearer\", env_key = \"LLMHUB_TEST_GITHUB_TOKEN\" }}\n"),
        )
        .write(
            "servers.d/docs.toml",
            &format!("url = \"{docs}\"\nauth = {{ type = \"header\", name = \"x-docs-key\", env_key = \"LLMHUB_TEST_DOCS_KEY\" }}\n"),
        )
        .write("servers.d/other.toml", &format!("url = \"{other}\"\n"))
        .write(".env", &format!("{KEY_ENV}={KEY}\nLLMHUB_TEST_DOCS_KEY=docs-server-key\n{env}"));
    cfg
}

async fn create(server: &Server, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = server
        .client
        .post(format!("{}/v1/mcp/sessions", server.url))
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

async fn session_request(
    server: &Server,
    method: reqwest::Method,
    key: Option<&str>,
    id: &str,
) -> (u16, String) {
    let mut request = server
        .client
        .request(method, format!("{}/v1/mcp/sessions/{id}", server.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

/// Waits up to 15 s for `ok` to hold, saying `what` if it never does.
async fn until<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count_sessions(cfg: &ConfigDir) -> i64 {
    let db = rusqlite::Connection::open(cfg.path("llmhub.db")).expect("open db");
    db.query_row("SELECT COUNT(*) FROM llmhub_mcp_sessions", [], |r| r.get(0))
        .expect("count")
}

/// An MCP `initialize` POSTed by hand: the status the endpoint answers with.
async fn initialize_status(server: &Server, endpoint: &str) -> u16 {
    server
        .client
        .post(format!("{}{endpoint}", server.url))
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_session_sees_only_its_backends_and_sends_its_own_token() {
    logs();
    let github = Backend::new(search_tools(&["search_repos"]));
    let docs = Backend::new(search_tools(&["lookup"]));
    let other = Backend::new(search_tools(&["secret_tool"]));
    let (github_url, _, _g) = start_backend(github.clone()).await;
    let (docs_url, _, _d) = start_backend(docs.clone()).await;
    let (other_url, _, _o) = start_backend(other.clone()).await;
    let cfg = config(&github_url, &docs_url, &other_url, SECRET);
    let alice = new_key(&cfg, "alice", "team-a");
    let bob = new_key(&cfg, "bob", "team-b");
    let server = Server::start(&cfg).await;

    // Creating needs a gateway key once keys exist.
    let (status, body) = create(&server, None, json!({"servers": ["docs"]})).await;
    assert_eq!(status, 401, "{body}");

    let (status, one) = create(
        &server,
        Some(&alice),
        json!({"servers": ["github", "docs"], "credentials": {"github": {"token": TOKEN_ONE}}, "builtin": false, "ttl_s": 3600}),
    )
    .await;
    assert_eq!(status, 201, "{one}");
    let id_one = one["session_id"].as_str().expect("id").to_string();
    assert!(id_one.len() >= 43, "256 bits at least: {id_one}");
    assert_eq!(one["mcp_endpoint"], format!("/mcp/s/{id_one}"));
    assert!(one["expires_at"].as_str().expect("expiry").ends_with('Z'));
    assert_eq!(one["servers"][0]["name"], "github");
    assert_eq!(one["servers"][0]["status"], "idle", "{one}");
    assert_eq!(one["servers"][0]["credentials"], true);
    assert_eq!(one["servers"][1]["name"], "docs");
    assert_eq!(one["servers"][1]["credentials"], false);
    assert!(!one.to_string().contains(TOKEN_ONE));

    let (status, two) = create(
        &server,
        Some(&bob),
        json!({"servers": ["github"], "credentials": {"github": {"token": TOKEN_TWO}}}),
    )
    .await;
    assert_eq!(status, 201, "{two}");
    let endpoint_two = two["mcp_endpoint"].as_str().expect("endpoint").to_string();

    // The endpoint needs no gateway key: the id is the capability.
    let (client_one, _) = connect(&server, one["mcp_endpoint"].as_str().expect("endpoint")).await;
    assert_eq!(
        names(&client_one).await,
        ["docs__lookup", "gh__search_repos"],
        "only its backends, no built-ins (builtin: false)"
    );
    let (client_two, _) = connect(&server, &endpoint_two).await;
    let two_names = names(&client_two).await;
    assert!(two_names.contains(&"gh__search_repos".to_string()));
    assert!(
        two_names.contains(&"chat_completion".to_string()),
        "built-ins by default: {two_names:?}"
    );
    assert!(
        !two_names
            .iter()
            .any(|n| n.starts_with("docs__") || n.starts_with("other__"))
    );

    let result = call(&client_one, "gh__search_repos", json!({"query": "llmhub"})).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let result = call(&client_two, "gh__search_repos", json!({"query": "two"})).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let result = call(&client_one, "docs__lookup", json!({"query": "x"})).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let auth = github.call_auth.lock().expect("lock").clone();
    assert_eq!(
        auth,
        [
            (
                "search_repos".to_string(),
                Some(format!("Bearer {TOKEN_ONE}"))
            ),
            (
                "search_repos".to_string(),
                Some(format!("Bearer {TOKEN_TWO}"))
            ),
        ],
        "each session's call carries its own token and no other"
    );
    // A session without a credential for a backend shares the server's own connection.
    let docs_keys: Vec<String> = docs
        .headers
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|h| {
            h.get("x-docs-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .collect();
    assert!(!docs_keys.is_empty() && docs_keys.iter().all(|k| k == "docs-server-key"));
    // Another session's tools are unknown here; so is a built-in when builtin is false.
    assert!(
        client_one
            .call_tool(rmcp::model::CallToolRequestParams::new(
                "other__secret_tool"
            ))
            .await
            .is_err()
    );
    assert!(
        client_one
            .call_tool(rmcp::model::CallToolRequestParams::new("list_models"))
            .await
            .is_err()
    );
    assert!(other.calls().is_empty());

    // The main endpoint has no github token: the backend is inactive there.
    let health: Value = get_as(&server, &alice, "/health")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        health["backends"]["github"]["status"], "inactive",
        "{health}"
    );

    // GET shows servers and status to its creator, never credentials; others get 404.
    let (status, shown) =
        session_request(&server, reqwest::Method::GET, Some(&alice), &id_one).await;
    assert_eq!(status, 200, "{shown}");
    let shown_json: Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown_json["servers"][0]["status"], "connected", "{shown}");
    assert_eq!(shown_json["servers"][0]["tools"], 1);
    assert!(shown_json.get("session_id").is_none());
    assert!(!shown.contains(TOKEN_ONE));
    let (status, _) = session_request(&server, reqwest::Method::GET, Some(&bob), &id_one).await;
    assert_eq!(status, 404, "another key does not see it");
    let (status, _) = session_request(&server, reqwest::Method::DELETE, Some(&bob), &id_one).await;
    assert_eq!(status, 404, "nor end it");

    // The plaintext credential is nowhere in the database files or the logs, nor is
    // the full session id.
    client_one.cancel().await.expect("close");
    client_two.cancel().await.expect("close");
    server.stop().await;
    for file in ["llmhub.db", "llmhub.db-wal"] {
        if let Ok(bytes) = std::fs::read(cfg.path(file)) {
            let haystack = String::from_utf8_lossy(&bytes);
            assert!(!haystack.contains(TOKEN_ONE), "{file} holds the token");
            assert!(!haystack.contains(TOKEN_TWO), "{file} holds the token");
            assert!(!haystack.contains(&id_one), "{file} holds the session id");
        }
    }
    let logged = log_text();
    assert!(logged.contains("MCP session created"), "logs were captured");
    assert!(
        !logged.contains(TOKEN_ONE) && !logged.contains(TOKEN_TWO),
        "a token was logged"
    );
    assert!(!logged.contains(&id_one), "the full session id was logged");
    assert_eq!(count_sessions(&cfg), 2);
}

#[tokio::test]
async fn bad_requests_are_400s_naming_the_problem_and_store_nothing() {
    logs();
    let github = Backend::new(search_tools(&["search_repos"]));
    let (url, _, _g) = start_backend(github).await;
    let cfg = config(&url, &url, &url, SECRET);
    cfg.write(
        "servers.d/local.toml",
        "command = \"/bin/true\"\nenabled = false\n",
    );
    let server = Server::start(&cfg).await;
    let cases = [
        (
            json!({"servers": ["github", "nope"]}),
            "servers[1]",
            "unknown server `nope`; servers.d has: docs, github, local, other",
        ),
        (json!({}), "servers", "missing field `servers`"),
        (
            json!({"servers": []}),
            "servers",
            "expected at least one servers.d name",
        ),
        (
            json!({"servers": "github"}),
            "servers",
            "expected an array of names, found a string",
        ),
        (
            json!({"servers": ["docs"], "credentials": {"github": {"token": "t"}}}),
            "credentials.github",
            "`github` is not one of this session's `servers`",
        ),
        (
            json!({"servers": ["github"], "credentials": {"github": {"value": "t"}}}),
            "credentials.github",
            "backend `github` takes a bearer token: expected {\"token\": \"…\"}, found an object with `value`",
        ),
        (
            json!({"servers": ["docs"], "credentials": {"docs": {"token": "t"}}}),
            "credentials.docs",
            "backend `docs` takes its key in header `x-docs-key`: expected {\"value\": \"…\"}",
        ),
        (
            json!({"servers": ["other"], "credentials": {"other": {"token": "t"}}}),
            "credentials.other",
            "declares no `auth` in servers.d",
        ),
        (
            json!({"servers": ["local"], "credentials": {"local": {"token": "t"}}}),
            "credentials.local",
            "command (stdio) backend",
        ),
        (
            json!({"servers": ["github"], "credentials": {"github": {"token": "a\nb"}}}),
            "credentials.github.token",
            "cannot carry",
        ),
        (
            json!({"servers": ["github"], "ttl_s": 604801}),
            "ttl_s",
            "ttl_s 604801 is over the maximum of 604800 seconds ([mcp] session_max_ttl_s)",
        ),
        (
            json!({"servers": ["github"], "ttl_s": -5}),
            "ttl_s",
            "expected a whole number of seconds above 0",
        ),
        (
            json!({"servers": ["github"], "builtin": "no"}),
            "builtin",
            "expected true or false, found a string",
        ),
        (
            json!({"servers": ["github"], "server": ["x"]}),
            "server",
            "unknown field `server`",
        ),
    ];
    for (body, param, message) in cases {
        let (status, answer) = create(&server, None, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{body}: {answer}");
        let got = answer["error"]["message"].as_str().expect("message");
        assert!(got.contains(message), "{body}: {got}");
        assert_eq!(answer["error"]["type"], "invalid_request_error");
    }
    let response = server
        .client
        .post(format!("{}/v1/mcp/sessions", server.url))
        .header("content-type", "application/json")
        .body("{\"servers\": [\"github\"")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "invalid_json", "{answer}");
    assert_eq!(count_sessions(&cfg), 0, "nothing stored");

    // Made-up, malformed and deleted ids are all the same 404.
    for id in ["x", &"A".repeat(43), "../../v1/models"] {
        let (status, _) = session_request(&server, reqwest::Method::GET, None, id).await;
        assert_eq!(status, 404, "{id}");
    }
    assert_eq!(
        initialize_status(&server, &format!("/mcp/s/{}", "A".repeat(43))).await,
        404
    );
}

#[tokio::test]
async fn without_a_secret_key_credentials_are_refused_and_plain_sessions_work() {
    logs();
    let github = Backend::new(search_tools(&["search_repos"]));
    let (url, _, _g) = start_backend(github).await;
    let cfg = config(&url, &url, &url, "");
    let server = Server::start(&cfg).await;
    let (status, answer) = create(
        &server,
        None,
        json!({"servers": ["github"], "credentials": {"github": {"token": TOKEN_ONE}}}),
    )
    .await;
    assert_eq!(status, 400);
    let message = answer["error"]["message"].as_str().expect("message");
    assert!(message.contains("need LLMHUB_SECRET_KEY"), "{message}");
    assert!(message.contains("openssl rand -base64 32"), "{message}");
    assert_eq!(count_sessions(&cfg), 0);

    let (status, plain) = create(&server, None, json!({"servers": ["other"]})).await;
    assert_eq!(status, 201, "{plain}");
    let (client, _) = connect(&server, plain["mcp_endpoint"].as_str().expect("endpoint")).await;
    let tools = names(&client).await;
    assert!(
        tools.contains(&"other__search_repos".to_string()),
        "{tools:?}"
    );
    assert!(!tools.iter().any(|t| t.starts_with("gh__")));

    // A malformed key is a config error naming the variable, and the old config serves.
    let bad = ConfigDir::new("");
    bad.echo().write(".env", "LLMHUB_SECRET_KEY=c2hvcnQ=\n");
    let errors = llmhub::hub::Hub::load(&bad.hub_path())
        .err()
        .expect("refused");
    let text = format!("{errors:?}");
    assert!(
        text.contains("LLMHUB_SECRET_KEY holds 5 bytes, not 32"),
        "{text}"
    );
}

#[tokio::test]
async fn a_session_survives_a_restart_and_ends_on_delete_or_expiry() {
    logs();
    let github = Backend::new(search_tools(&["search_repos"]));
    let (url, _, _g) = start_backend(github.clone()).await;
    let cfg = config(&url, &url, &url, SECRET);
    let server = Server::start(&cfg).await;
    let (status, made) = create(
        &server,
        None,
        json!({"servers": ["github"], "credentials": {"github": {"token": TOKEN_ONE}}}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["session_id"].as_str().expect("id").to_string();
    let endpoint = made["mcp_endpoint"].as_str().expect("endpoint").to_string();
    let (client, _) = connect(&server, &endpoint).await;
    assert_ne!(
        call(&client, "gh__search_repos", json!({})).await.is_error,
        Some(true)
    );
    client.cancel().await.expect("close");
    server.stop().await;

    // A new process on the same database: the same endpoint, the same token.
    let server = Server::start(&cfg).await;
    let (client, _) = connect(&server, &endpoint).await;
    let result = call(
        &client,
        "gh__search_repos",
        json!({"query": "after restart"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let auth = github.call_auth.lock().expect("lock").clone();
    assert_eq!(
        auth.last().map(|a| a.1.clone()),
        Some(Some(format!("Bearer {TOKEN_ONE}")))
    );
    client.cancel().await.expect("close");

    let (status, _) = session_request(&server, reqwest::Method::DELETE, None, &id).await;
    assert_eq!(status, 204);
    assert_eq!(initialize_status(&server, &endpoint).await, 404);
    let (status, _) = session_request(&server, reqwest::Method::GET, None, &id).await;
    assert_eq!(status, 404);
    assert_eq!(count_sessions(&cfg), 0);

    // A one-second session stops answering, and the sweeper removes its row.
    let (status, short) = create(&server, None, json!({"servers": ["github"], "ttl_s": 2})).await;
    assert_eq!(status, 201, "{short}");
    let short_endpoint = short["mcp_endpoint"]
        .as_str()
        .expect("endpoint")
        .to_string();
    assert_eq!(initialize_status(&server, &short_endpoint).await, 200);
    assert_eq!(count_sessions(&cfg), 1);
    until("the expired session's row is removed", || async {
        count_sessions(&cfg) == 0
    })
    .await;
    assert_eq!(initialize_status(&server, &short_endpoint).await, 404);
}

#[tokio::test]
async fn reloads_reconnect_and_remove_a_sessions_backends() {
    logs();
    let github = Backend::new(search_tools(&["search_repos"]));
    let moved = Backend::new(search_tools(&["search_code"]));
    let docs = Backend::new(search_tools(&["lookup"]));
    let (github_url, _, _g) = start_backend(github.clone()).await;
    let (moved_url, _, _m) = start_backend(moved.clone()).await;
    let (docs_url, _, _d) = start_backend(docs).await;
    let cfg = config(&github_url, &docs_url, &docs_url, SECRET);
    let server = Server::start_watching(&cfg).await;
    let (status, made) = create(
        &server,
        None,
        json!({"servers": ["github", "docs"], "credentials": {"github": {"token": TOKEN_TWO}}, "builtin": false}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["session_id"].as_str().expect("id").to_string();
    let (client, changed) =
        connect(&server, made["mcp_endpoint"].as_str().expect("endpoint")).await;
    assert_eq!(names(&client).await, ["docs__lookup", "gh__search_repos"]);

    // Moving github to another server reconnects the session there, with its token.
    let mut events = server.hub.subscribe();
    let notified = changed.notified();
    cfg.write(
        "servers.d/github.toml",
        &format!("url = \"{moved_url}\"\nprefix = \"gh\"\nauth = {{ type = \"bearer\", env_key = \"LLMHUB_TEST_GITHUB_TOKEN\" }}\n"),
    );
    assert!(matches!(
        next_reload(&mut events).await,
        llmhub::hub::ReloadEvent::Applied { .. }
    ));
    tokio::time::timeout(Duration::from_secs(15), notified)
        .await
        .expect("list_changed after the move");
    until("the moved backend's tool is offered", || async {
        names(&client)
            .await
            .contains(&"gh__search_code".to_string())
    })
    .await;
    assert_ne!(
        call(&client, "gh__search_code", json!({})).await.is_error,
        Some(true)
    );
    let auth = moved.call_auth.lock().expect("lock").clone();
    assert_eq!(
        auth,
        [(
            "search_code".to_string(),
            Some(format!("Bearer {TOKEN_TWO}"))
        )]
    );

    // Removing docs: gone from tools/list (clients told), unavailable in the status.
    let notified = changed.notified();
    std::fs::remove_file(cfg.path("servers.d/docs.toml")).expect("remove");
    assert!(matches!(
        next_reload(&mut events).await,
        llmhub::hub::ReloadEvent::Applied { .. }
    ));
    tokio::time::timeout(Duration::from_secs(15), notified)
        .await
        .expect("list_changed after the removal");
    assert_eq!(names(&client).await, ["gh__search_code"]);
    let (_, shown) = session_request(&server, reqwest::Method::GET, None, &id).await;
    let shown: Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["servers"][1]["name"], "docs");
    assert_eq!(shown["servers"][1]["status"], "unavailable", "{shown}");
    assert_eq!(shown["servers"][1]["reason"], "removed from servers.d");
}

#[tokio::test]
async fn two_instances_on_one_postgres_serve_the_same_session() {
    logs();
    let github = Backend::new(search_tools(&["search_repos"]));
    let (url, _, _g) = start_backend(github.clone()).await;
    let database = pg::database("mcp_sessions").await;
    let make = || {
        let cfg = config(
            &url,
            &url,
            &url,
            &format!("{SECRET}LLMHUB_TEST_DATABASE_URL={database}\n"),
        );
        cfg.write(
            "hub.toml",
            "[storage]\nurl_env = \"LLMHUB_TEST_DATABASE_URL\"\n",
        );
        cfg
    };
    let (cfg_a, cfg_b) = (make(), make());
    let a = Server::start(&cfg_a).await;
    let b = Server::start(&cfg_b).await;
    let (status, made) = create(
        &a,
        None,
        json!({"servers": ["github"], "credentials": {"github": {"token": TOKEN_ONE}}}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["session_id"].as_str().expect("id").to_string();
    let endpoint = made["mcp_endpoint"].as_str().expect("endpoint").to_string();

    let (client, _) = connect(&b, &endpoint).await;
    let result = call(&client, "gh__search_repos", json!({"query": "on b"})).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    assert_eq!(
        github.call_auth.lock().expect("lock").clone(),
        [(
            "search_repos".to_string(),
            Some(format!("Bearer {TOKEN_ONE}"))
        )]
    );
    let (status, _) = session_request(&b, reqwest::Method::GET, None, &id).await;
    assert_eq!(status, 200);
    client.cancel().await.expect("close");

    // Ended on A, refused on B once B reads the store again (within seconds).
    let (status, _) = session_request(&a, reqwest::Method::DELETE, None, &id).await;
    assert_eq!(status, 204);
    until("instance B refuses the deleted session", || async {
        initialize_status(&b, &endpoint).await == 404
    })
    .await;
}

#[tokio::test]
async fn a_sessions_own_connections_close_when_idle_and_reopen_on_use() {
    logs();
    let github = Backend::new(search_tools(&["search_repos"]));
    let (url, _, _g) = start_backend(github.clone()).await;
    let cfg = config(&url, &url, &url, SECRET);
    cfg.write("hub.toml", "[mcp]\nsession_idle_s = 0.3\n");
    let server = Server::start(&cfg).await;
    let (status, made) = create(
        &server,
        None,
        json!({"servers": ["github"], "credentials": {"github": {"token": TOKEN_ONE}}}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["session_id"].as_str().expect("id").to_string();
    let status_of = || async {
        let (_, shown) = session_request(&server, reqwest::Method::GET, None, &id).await;
        let shown: Value = serde_json::from_str(&shown).expect("json");
        shown["servers"][0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        status_of().await,
        "idle",
        "nothing is opened before first use"
    );
    let (client, _) = connect(&server, made["mcp_endpoint"].as_str().expect("endpoint")).await;
    assert_ne!(
        call(&client, "gh__search_repos", json!({})).await.is_error,
        Some(true)
    );
    until("the connection idles out", || async {
        status_of().await == "idle"
    })
    .await;
    let result = call(&client, "gh__search_repos", json!({"query": "again"})).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    assert_eq!(github.call_auth.lock().expect("lock").len(), 2);
}
