//! REST tools (`kind = "http"`) against mock services written here: rendering, auth,
//! fallback chains, the size cap, the redirect rule, and their config errors.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const SEARCH_KEY_ENV: &str = "LLMHUB_TEST_SEARCH_KEY";
const SEARCH_KEY: &str = "search-key-0123456789-secret";

/// A search service: its results echo the query it got.
async fn search_service() -> Mock {
    Mock::start(|_, _| async move {
        json_response(
            200,
            &json!({"web": {"results": [
                {"title": "First", "url": "https://one.example", "description": "one"},
                {"title": "Second", "url": "https://two.example", "description": "two"}]}})
            .to_string(),
        )
    })
    .await
}

fn search_tool(url: &str, env_key: &str, extra: &str) -> String {
    format!(
        r#"kind = "http"
description = "Search"
url = "{url}/search/{{{{ query | urlencode }}}}"
query = {{ q = "{{{{ query }}}}", count = "{{{{ max_results | default(5) }}}}" }}
headers = {{ Accept = "application/json", X-Trace = "t-{{{{ query | length }}}}" }}
auth = {{ type = "header", name = "X-Subscription-Token", env_key = "{env_key}" }}
timeout_s = 1
result = "{{% for r in response.web.results %}}{{{{ r.title }}}} {{{{ r.url }}}};{{% endfor %}}"
{extra}
[input]
type = "object"
required = ["query"]
properties.query = {{ type = "string" }}
properties.max_results = {{ type = "integer", minimum = 1 }}
"#
    )
}

fn post_tool(url: &str, extra: &str) -> String {
    format!(
        r#"kind = "http"
description = "Search, the second way"
method = "POST"
url = "{url}/search"
body = {{ query = "{{{{ query }}}}", max_results = "{{{{ max_results | default(3) }}}}", fixed = true }}
auth = {{ type = "bearer", env_key = "{SEARCH_KEY_ENV}" }}
timeout_s = 1
{extra}
[input]
type = "object"
required = ["query"]
properties.query = {{ type = "string" }}
properties.max_results = {{ type = "integer" }}
"#
    )
}

fn config() -> ConfigDir {
    let cfg = ConfigDir::new("[routing]\nretries = 0\n");
    cfg.write(
        ".env",
        &format!("{KEY_ENV}={KEY}\n{SEARCH_KEY_ENV}={SEARCH_KEY}\n"),
    );
    cfg.echo();
    cfg
}

async fn call(server: &Server, tool: &str, args: Value) -> (u16, Value) {
    let r = server
        .client
        .post(format!("{}/v1/tools/{tool}", server.url))
        .json(&args)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test]
async fn a_rest_tool_renders_its_call_sends_its_key_and_shapes_the_result() {
    let service = search_service().await;
    let cfg = config();
    cfg.write(
        "tools.d/search.toml",
        &search_tool(&service.url, SEARCH_KEY_ENV, ""),
    );
    cfg.write("tools.d/ask.toml", &post_tool(&service.url, ""));
    let server = Server::start(&cfg).await;

    let (status, body) = call(
        &server,
        "search",
        json!({"query": "rust & tokio", "max_results": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["content"],
        "First https://one.example;Second https://two.example;"
    );
    let seen = &service.seen()[0];
    assert_eq!(seen.path, "/v1/search/rust%20%26%20tokio");
    assert_eq!(seen.query, "count=2&q=rust+%26+tokio");
    assert_eq!(seen.headers["x-subscription-token"], SEARCH_KEY);
    assert_eq!(seen.headers["accept"], "application/json");
    assert_eq!(seen.headers["x-trace"], "t-12");

    // A table body is JSON; a value that is one expression keeps its type.
    let (status, body) = call(&server, "ask", json!({"query": "q1"})).await;
    assert_eq!(status, 200, "{body}");
    let seen = &service.seen()[1];
    assert_eq!(
        seen.body,
        json!({"query": "q1", "max_results": 3, "fixed": true})
    );
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {SEARCH_KEY}")
    );
    // Without `result`, the body comes back as it came.
    assert!(
        body["content"].as_str().unwrap_or("").contains("\"web\""),
        "{body}"
    );

    // Over MCP: listed with its schema, bad arguments are isError with a JSON path.
    let mut mcp = McpHttp::connect(&server, "").await;
    assert!(mcp.tool_names().await.contains(&"search".to_string()));
    let bad = mcp
        .call("search", json!({"query": "x", "max_results": 0}))
        .await;
    assert_eq!(bad["isError"], true);
    assert!(
        bad["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("/max_results"),
        "{bad}"
    );
    assert_eq!(
        service.count(),
        2,
        "invalid arguments never reach the service"
    );
}

#[tokio::test]
async fn fallback_follows_a_missing_key_a_5xx_and_a_timeout_but_not_a_4xx() {
    let backup = search_service().await;
    let failing = Mock::start(|n, _| async move {
        match n {
            0 => json_response(
                503,
                &format!("{{\"error\": \"overloaded, key {SEARCH_KEY}\"}}"),
            ),
            1 => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                json_response(200, "{}")
            }
            _ => json_response(
                400,
                &format!("{{\"error\": \"bad query for key {SEARCH_KEY}\"}}"),
            ),
        }
    })
    .await;
    let cfg = config();
    cfg.write(
        "tools.d/primary.toml",
        &search_tool(&failing.url, SEARCH_KEY_ENV, "fallback_to = \"backup\""),
    );
    cfg.write(
        "tools.d/backup.toml",
        &search_tool(&backup.url, SEARCH_KEY_ENV, ""),
    );
    cfg.write(
        "tools.d/keyless.toml",
        &search_tool(
            &failing.url,
            "LLMHUB_TEST_UNSET_SEARCH_KEY",
            "fallback_to = \"backup\"",
        ),
    );
    let server = Server::start(&cfg).await;
    let answered =
        |body: &Value| body["content"] == "First https://one.example;Second https://two.example;";

    // 503 → backup answers.
    let (status, body) = call(&server, "primary", json!({"query": "a"})).await;
    assert!(status == 200 && answered(&body), "{body}");
    // A timeout (the tool's timeout_s is 1) → backup answers.
    let (status, body) = call(&server, "primary", json!({"query": "b"})).await;
    assert!(status == 200 && answered(&body), "{body}");
    // A 400 is the request's fault: no fallback, and the key is not in the error.
    let (status, body) = call(&server, "primary", json!({"query": "c"})).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("HTTP 400") && message.contains("primary"),
        "{message}"
    );
    assert!(
        !body.to_string().contains(SEARCH_KEY),
        "the key is scrubbed: {body}"
    );
    assert_eq!(backup.count(), 2);
    // No key → skipped straight to the backup, never calling the service.
    let before = failing.count();
    let (status, body) = call(&server, "keyless", json!({"query": "d"})).await;
    assert!(status == 200 && answered(&body), "{body}");
    assert_eq!(failing.count(), before);

    // The description says who stands behind the tool.
    let tools: Value = server.get_json("/v1/tools").await;
    let primary = tools["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|t| t["name"] == "primary")
        .cloned()
        .expect("primary");
    assert!(
        primary["description"]
            .as_str()
            .unwrap_or("")
            .contains("primary, then backup"),
        "{primary}"
    );
}

#[tokio::test]
async fn a_tool_whose_whole_chain_lacks_keys_is_not_offered_and_says_why() {
    let service = search_service().await;
    let cfg = config();
    cfg.write(
        "tools.d/lonely.toml",
        &search_tool(&service.url, "LLMHUB_TEST_UNSET_SEARCH_KEY", ""),
    );
    let server = Server::start(&cfg).await;
    let tools: Value = server.get_json("/v1/tools").await;
    assert!(!tools.to_string().contains("lonely"), "{tools}");
    let mut mcp = McpHttp::connect(&server, "").await;
    assert!(!mcp.tool_names().await.contains(&"lonely".to_string()));
    let active = mcp.call("list_active_tools", json!({})).await;
    let text = active["content"][0]["text"].as_str().unwrap_or("");
    assert!(
        text.contains("LLMHUB_TEST_UNSET_SEARCH_KEY is not set"),
        "{text}"
    );
    let (status, body) = call(&server, "lonely", json!({"query": "x"})).await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn big_bodies_are_cut_and_redirects_stay_on_the_host() {
    let big = Mock::start(|_, _| async move { json_response(200, &"x".repeat(5000)) }).await;
    let elsewhere = search_service().await;
    // `localhost` and 127.0.0.1 are the same machine but not the same host name.
    let elsewhere_url = elsewhere.url.replace("127.0.0.1", "localhost");
    let redirecting = {
        let elsewhere_url = elsewhere_url.clone();
        Mock::start(move |n, _| {
            let target = if n == 0 {
                format!("{elsewhere_url}/search/x")
            } else {
                "/v1/search/here".to_string()
            };
            async move {
                let mut r = json_response(302, "{}");
                r.headers_mut()
                    .insert("location", target.parse().expect("header"));
                *r.status_mut() = axum::http::StatusCode::FOUND;
                r
            }
        })
        .await
    };
    let cfg = config();
    cfg.write(
        "tools.d/big.toml",
        &format!(
            "kind = \"http\"\ndescription = \"Big\"\nurl = \"{}/big\"\nmax_response_bytes = 1000\n",
            big.url
        ),
    );
    cfg.write(
        "tools.d/hop.toml",
        &search_tool(&redirecting.url, SEARCH_KEY_ENV, ""),
    );
    let server = Server::start(&cfg).await;
    let (status, body) = call(&server, "big", json!({})).await;
    assert_eq!(status, 200);
    let content = body["content"].as_str().unwrap_or("");
    assert!(content.starts_with(&"x".repeat(1000)) && !content.contains(&"x".repeat(1001)));
    assert!(content.contains("response cut at 1000 bytes"), "{content}");

    let (status, body) = call(&server, "hop", json!({"query": "x"})).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not followed"),
        "{body}"
    );
    assert_eq!(
        elsewhere.count(),
        0,
        "a redirect to another host is never followed"
    );
    // A redirect on the same host is followed (it lands on the redirecting mock again,
    // which redirects once more, until the limit).
    let (status, _) = call(&server, "hop", json!({"query": "y"})).await;
    assert_eq!(status, 502);
    assert!(redirecting.count() > 2, "same-host redirects were followed");
}

#[tokio::test]
async fn bad_rest_and_sql_tool_files_are_config_errors_with_their_place() {
    let cases: [(&str, &str, &str); 6] = [
        (
            "kind = \"ftp\"\ndescription = \"x\"\n",
            "t.toml:1:8",
            "expected \"prompt\", \"http\" or \"sql\"",
        ),
        (
            "kind = \"http\"\ndescription = \"x\"\nurl = \"http://h/{{ nope }}\"\n",
            "t.toml:3:7",
            "undeclared variable nope",
        ),
        (
            "kind = \"http\"\ndescription = \"x\"\nurl = \"ftp://h/\"\n",
            "t.toml:3:7",
            "expected an http:// or https:// URL",
        ),
        (
            "kind = \"http\"\ndescription = \"x\"\nurl = \"http://h/\"\nfallback_to = \"t\"\n",
            "t.toml:4:15",
            "fallback cycle: t → t",
        ),
        (
            "kind = \"http\"\ndescription = \"x\"\nurl = \"http://h/\"\nfallback_to = \"ghost\"\n",
            "t.toml:4:15",
            "no tool `ghost`",
        ),
        (
            "kind = \"sql\"\ndescription = \"x\"\ndatabase_env = \"DBX\"\nstatement = \"SELECT * FROM t WHERE a = :who\"\n",
            "t.toml:4:13",
            "parameter :who is not an argument",
        ),
    ];
    for (text, place, message) in cases {
        let cfg = config();
        cfg.write("tools.d/t.toml", text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmhub"))
            .args(["check", "--config"])
            .arg(cfg.hub_path())
            .output()
            .expect("run check");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(place) && err.contains(message),
            "{place} {message} in:\n{err}"
        );
    }
}
