//! MCP end to end with rmcp's client: `llmhub mcp` as a child process over stdio, and
//! `/mcp` over streamable HTTP (both protocol generations), against a mock upstream.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, GetPromptRequestParams,
    ProgressNotificationParam, ProtocolVersion, RequestMetaObject, ServerNotification,
    SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};

/// Records the notifications a client receives.
#[derive(Clone)]
struct Recorder {
    tools_changed: Arc<Notify>,
    prompts_changed: Arc<Notify>,
    progress: mpsc::UnboundedSender<ProgressNotificationParam>,
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::default().with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }

    async fn on_prompt_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.prompts_changed.notify_one();
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let _ = self.progress.send(params);
    }
}

fn recorder() -> (Recorder, mpsc::UnboundedReceiver<ProgressNotificationParam>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Recorder {
            tools_changed: Arc::new(Notify::new()),
            prompts_changed: Arc::new(Notify::new()),
            progress: tx,
        },
        rx,
    )
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .unwrap_or_else(|_| panic!("{what} within 15s"))
}

/// A chat.completion whose content is `content`.
fn completion(content: &str) -> axum::response::Response {
    json_response(
        200,
        &json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        .to_string(),
    )
}

/// An upstream that answers each request with "reply to: <last user message>", or, when
/// JSON is asked for, with `json_reply`.
async fn upstream(json_reply: &'static str) -> Mock {
    Mock::start(move |_, body| async move {
        if body.get("response_format").is_some() {
            return completion(json_reply);
        }
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string();
        completion(&format!("reply to: {last}"))
    })
    .await
}

const HUB: &str = r#"[routing]
default_model = "up/gpt-4o-mini"
retries = 0
[groups]
smart = ["up/gpt-4o-mini"]
[mcp]
description = "Test hub for MCP."
progress_interval_s = 0.05
"#;

/// The shipped tools.d files, with a provider pointing at `mock`.
fn config(mock: &Mock) -> ConfigDir {
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &mock.url, "models = [\"gpt-4o-mini\"]");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools.d");
    for entry in std::fs::read_dir(shipped).expect("tools.d") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        cfg.write(
            &format!("tools.d/{name}"),
            &std::fs::read_to_string(&path).expect("read"),
        );
    }
    cfg
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn call(
    client: &RunningService<RoleClient, Recorder>,
    name: &'static str,
    a: Value,
) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(name).with_arguments(args(a)))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn stdio_client(cfg: &ConfigDir, handler: Recorder) -> RunningService<RoleClient, Recorder> {
    let hub = cfg.hub_path();
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_llmhub")).configure(|c| {
            c.arg("mcp")
                .arg("--config")
                .arg(&hub)
                .env("RUST_LOG", "warn");
        }),
    )
    .expect("spawn llmhub mcp");
    within("the MCP handshake", handler.serve(transport))
        .await
        .expect("initialize")
}

/// `llmhub mcp` as a child process over the shipped tools, its upstream answering JSON
/// requests with `json_reply`.
struct StdioSession {
    mock: Mock,
    cfg: ConfigDir,
    client: RunningService<RoleClient, Recorder>,
    tools_changed: Arc<Notify>,
    prompts_changed: Arc<Notify>,
}

impl StdioSession {
    async fn close(self) {
        self.client.cancel().await.expect("close");
    }
}

async fn stdio_session(json_reply: &'static str) -> StdioSession {
    let mock = upstream(json_reply).await;
    let cfg = config(&mock);
    let (handler, _) = recorder();
    let tools_changed = handler.tools_changed.clone();
    let prompts_changed = handler.prompts_changed.clone();
    let client = stdio_client(&cfg, handler).await;
    StdioSession {
        mock,
        cfg,
        client,
        tools_changed,
        prompts_changed,
    }
}

async fn http_client(server: &Server, handler: Recorder) -> RunningService<RoleClient, Recorder> {
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", server.url));
    within("the MCP handshake", handler.serve(transport))
        .await
        .expect("initialize")
}

#[tokio::test]
async fn stdio_serves_builtin_and_prompt_tools_and_prompts() {
    // Bound whole: dropping a field would stop its mock or delete its folder.
    let session =
        stdio_session(r#"{"entities": [{"name": "Ada Lovelace", "type": "person"}]}"#).await;
    let (mock, client) = (&session.mock, &session.client);

    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "chat_completion",
        "list_models",
        "get_model_info",
        "health_check",
        "list_active_tools",
        "code_review",
        "translate",
        "summarize",
        "extract_entities",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let chat = tools
        .iter()
        .find(|t| t.name == "chat_completion")
        .expect("chat_completion");
    let description = chat.description.as_deref().unwrap_or_default();
    assert!(description.contains("- up/gpt-4o-mini"), "{description}");
    assert!(
        description.contains("- smart: up/gpt-4o-mini"),
        "{description}"
    );
    assert!(description.ends_with("Test hub for MCP."), "{description}");
    let extract = tools
        .iter()
        .find(|t| t.name == "extract_entities")
        .expect("extract_entities");
    assert!(
        extract.output_schema.is_some(),
        "outputSchema is advertised"
    );

    // chat_completion goes through routing: the reply, and who answered.
    let result = call(
        client,
        "chat_completion",
        json!({"prompt": "hello", "system": "be brief"}),
    )
    .await;
    assert_eq!(result.is_error, Some(false));
    assert_eq!(text(&result), "reply to: hello");
    let structured = result.structured_content.expect("structured");
    assert_eq!(structured["provider"], "up");
    assert_eq!(structured["model"], "gpt-4o-mini");
    assert_eq!(structured["usage"]["total_tokens"], 5);
    let sent = &mock.seen()[0].body;
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );

    // Each shipped prompt tool renders its templates and routes.
    let result = call(
        client,
        "code_review",
        json!({"code": "fn main() {}", "language": "Rust", "focus": "bugs"}),
    )
    .await;
    assert_eq!(result.is_error, Some(false));
    assert_eq!(
        text(&result),
        "reply to: Review this code, focusing on bugs:\n\nfn main() {}"
    );
    let seen = mock.seen();
    let sent = &seen.last().expect("sent").body;
    assert!(
        sent["messages"][0]["content"]
            .as_str()
            .is_some_and(|s| s.starts_with("You are an expert Rust reviewer"))
    );
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["max_tokens"], 2000);

    let result = call(
        client,
        "translate",
        json!({"text": "Hello", "target_language": "French", "tone": "formal"}),
    )
    .await;
    assert_eq!(
        text(&result),
        "reply to: Translate the following text into French, in a formal tone:\n\nHello"
    );
    let result = call(client, "summarize", json!({"text": "A long story."})).await;
    assert_eq!(
        text(&result),
        "reply to: Summarize the following text:\n\nA long story."
    );

    // Structured output: the model is asked for JSON and the reply comes back validated.
    let result = call(
        client,
        "extract_entities",
        json!({"text": "Ada Lovelace wrote notes."}),
    )
    .await;
    assert_eq!(result.is_error, Some(false), "{}", text(&result));
    assert_eq!(
        result.structured_content,
        Some(json!({"entities": [{"name": "Ada Lovelace", "type": "person"}]}))
    );
    let seen = mock.seen();
    let sent = &seen.last().expect("sent").body;
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(
        sent["response_format"]["json_schema"]["schema"]["required"][0],
        "entities"
    );

    // Prompts: the same tools, rendered without a model call.
    let prompts = client.list_all_prompts().await.expect("prompts/list");
    let translate = prompts
        .iter()
        .find(|p| p.name == "translate")
        .expect("translate prompt");
    let required: Vec<(String, bool)> = translate
        .arguments
        .iter()
        .flatten()
        .map(|a| (a.name.clone(), a.required == Some(true)))
        .collect();
    assert!(
        required.contains(&("text".into(), true)) && required.contains(&("tone".into(), false)),
        "{required:?}"
    );
    let calls_before = mock.count();
    let prompt = client
        .get_prompt(
            GetPromptRequestParams::new("translate")
                .with_arguments(args(json!({"text": "Hi", "target_language": "German"}))),
        )
        .await
        .expect("prompts/get");
    assert_eq!(prompt.messages.len(), 2);
    let rendered = serde_json::to_value(&prompt.messages).expect("json");
    assert_eq!(
        rendered[1]["content"]["text"],
        "Translate the following text into German:\n\nHi"
    );
    assert_eq!(
        mock.count(),
        calls_before,
        "prompts/get makes no model call"
    );

    let health = call(client, "health_check", json!({})).await;
    assert_eq!(
        health.structured_content.expect("health")["providers"]["up"]["active"],
        true
    );
    let info = call(client, "get_model_info", json!({"model": "smart"})).await;
    assert_eq!(
        info.structured_content.expect("info")["chain"][0]["id"],
        "up/gpt-4o-mini"
    );
    let listed = call(client, "list_models", json!({"group": "smart"})).await;
    // The model reads the same JSON as text, without indentation to pay tokens for.
    let listed_text = text(&listed);
    let models = listed.structured_content.expect("models");
    assert_eq!(models["models"][0]["provider"], "up");
    assert_eq!(listed_text, models.to_string());
    assert!(!listed_text.contains('\n'), "compact: {listed_text}");
    let active = call(client, "list_active_tools", json!({})).await;
    let active = active.structured_content.expect("tools");
    let review = active["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["name"] == "code_review")
        .expect("code_review")
        .clone();
    assert_eq!(review["env_keys"], json!([{"name": KEY_ENV, "set": true}]));
    assert!(!active.to_string().contains(KEY), "never a key's value");

    session.close().await;
}

#[tokio::test]
async fn bad_arguments_are_tool_errors_with_json_paths_and_unknown_tools_are_protocol_errors() {
    let session = stdio_session("{}").await;
    let (mock, client) = (&session.mock, &session.client);

    let result = call(
        client,
        "code_review",
        json!({"language": 7, "focus": "vibes", "extra": true}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let message = text(&result);
    assert!(message.starts_with("invalid arguments:"), "{message}");
    assert!(
        message.contains("- (root): \"code\" is a required property"),
        "{message}"
    );
    assert!(
        message.contains("- /language: 7 is not of type \"string\""),
        "{message}"
    );
    assert!(
        message.contains("- /focus: \"vibes\" is not one of"),
        "{message}"
    );
    assert!(message.contains("'extra' was unexpected"), "{message}");

    let result = call(
        client,
        "chat_completion",
        json!({"prompt": "x", "temperature": 5}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).contains("- /temperature: 5 is greater than the maximum of 2"),
        "{}",
        text(&result)
    );
    let result = call(
        client,
        "chat_completion",
        json!({"model": "nope", "prompt": "x"}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).contains("model `nope` does not exist"),
        "{}",
        text(&result)
    );
    assert_eq!(mock.count(), 0, "nothing invalid reaches the upstream");

    let err = client
        .call_tool(CallToolRequestParams::new("no_such_tool").with_arguments(Map::new()))
        .await
        .expect_err("unknown tool is a protocol error");
    assert!(
        err.to_string().contains("unknown tool `no_such_tool`"),
        "{err}"
    );
    session.close().await;
}

#[tokio::test]
async fn a_reply_that_breaks_the_output_schema_is_an_error_result_saying_why() {
    let session = stdio_session(r#"{"entities": [{"name": "Ada", "type": "wizard"}]}"#).await;
    let client = &session.client;
    let result = call(client, "extract_entities", json!({"text": "Ada"})).await;
    assert_eq!(result.is_error, Some(true));
    let message = text(&result);
    assert!(
        message.contains("does not match the tool's output schema"),
        "{message}"
    );
    assert!(
        message.contains("- /entities/0/type: \"wizard\" is not one of"),
        "{message}"
    );
    assert!(
        message.contains(r#""type": "wizard""#),
        "the reply is shown: {message}"
    );
    session.close().await;
}

#[tokio::test]
async fn editing_tools_d_notifies_connected_stdio_sessions() {
    let session = stdio_session("{}").await;
    let (cfg, client) = (&session.cfg, &session.client);
    let (tools_changed, prompts_changed) = (&session.tools_changed, &session.prompts_changed);
    assert!(
        client
            .list_all_tools()
            .await
            .expect("list")
            .iter()
            .all(|t| t.name != "haiku")
    );

    cfg.write(
        "tools.d/haiku.toml",
        "description = \"Write a haiku\"\nprompt = \"A haiku about {{ topic }}\"\n[input]\ntype = \"object\"\nrequired = [\"topic\"]\nproperties.topic = { type = \"string\" }\n",
    );
    within("tools/list_changed", tools_changed.notified()).await;
    within("prompts/list_changed", prompts_changed.notified()).await;
    let tools = client.list_all_tools().await.expect("list");
    assert!(tools.iter().any(|t| t.name == "haiku"));
    let result = call(client, "haiku", json!({"topic": "rust"})).await;
    assert_eq!(text(&result), "reply to: A haiku about rust");

    // The provider's key goes away: every tool that needs it disappears.
    cfg.write(".env", "");
    within("tools/list_changed", tools_changed.notified()).await;
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("list")
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        !names.contains(&"haiku".to_string()) && !names.contains(&"code_review".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"chat_completion".to_string()));
    let active = call(client, "list_active_tools", json!({}))
        .await
        .structured_content
        .expect("tools");
    let haiku = active["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["name"] == "haiku")
        .expect("haiku")
        .clone();
    assert_eq!(haiku["active"], false);
    assert_eq!(haiku["env_keys"], json!([{"name": KEY_ENV, "set": false}]));
    assert!(
        haiku["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("{KEY_ENV} is not set"))),
        "{haiku}"
    );
    session.close().await;
}

#[tokio::test]
async fn http_sessions_get_tools_progress_and_list_changed() {
    // The upstream holds its answer until the client has seen a progress notification.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mock = Mock::start(move |_, _| {
        let mut release = release_rx.clone();
        async move {
            let _ = release.wait_for(|go| *go).await;
            completion("finally")
        }
    })
    .await;
    let cfg = config(&mock);
    let server = Server::start_watching(&cfg).await;
    let (handler, mut progress) = recorder();
    let tools_changed = handler.tools_changed.clone();
    let client = http_client(&server, handler).await;
    assert!(
        client
            .list_all_tools()
            .await
            .expect("list")
            .iter()
            .any(|t| t.name == "code_review")
    );

    // rmcp's client puts its own progress token in the request when it has a meta object.
    let mut params = CallToolRequestParams::new("chat_completion")
        .with_arguments(args(json!({"prompt": "slow"})));
    params.meta = Some(RequestMetaObject::default());
    let pending = {
        let peer = client.peer().clone();
        tokio::spawn(async move { peer.call_tool(params).await })
    };
    let first = within("a progress notification", progress.recv())
        .await
        .expect("progress");
    assert!(
        first
            .message
            .as_deref()
            .is_some_and(|m| m.contains("waiting for the model"))
    );
    release_tx.send(true).expect("release");
    let result = pending.await.expect("join").expect("call");
    assert_eq!(text(&result), "finally");

    let mut events = server.hub.subscribe();
    std::fs::remove_file(cfg.path("tools.d/summarize.toml")).expect("remove");
    assert!(matches!(
        next_reload(&mut events).await,
        llmhub::hub::ReloadEvent::Applied { .. }
    ));
    within("tools/list_changed over HTTP", tools_changed.notified()).await;
    assert!(
        client
            .list_all_tools()
            .await
            .expect("list")
            .iter()
            .all(|t| t.name != "summarize")
    );
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn stateless_2026_clients_list_call_and_hear_changes_through_listen() {
    let mock = upstream("{}").await;
    let cfg = config(&mock);
    let server = Server::start_watching(&cfg).await;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", server.url)),
    );
    let client = within(
        "server/discover",
        ClientConfig::default().serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        ),
    )
    .await
    .expect("discover");
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "translate"));
    let result = client
        .call_tool(
            CallToolRequestParams::new("chat_completion")
                .with_arguments(args(json!({"prompt": "hi"}))),
        )
        .await
        .expect("call");
    assert_eq!(text(&result), "reply to: hi");

    let mut subscription = client
        .listen(
            SubscriptionFilter::builder()
                .tools_list_changed()
                .prompts_list_changed()
                .build(),
        )
        .await
        .expect("subscriptions/listen");
    cfg.write(
        "tools.d/shout.toml",
        "description = \"Shout\"\nprompt = \"{{ text | upper }}\"\n[input]\ntype = \"object\"\nproperties.text = { type = \"string\" }\n",
    );
    let note = within("a list_changed notification", subscription.next())
        .await
        .expect("next")
        .expect("notification");
    assert!(
        matches!(
            note,
            ServerNotification::ToolListChangedNotification(_)
                | ServerNotification::PromptListChangedNotification(_)
        ),
        "{note:?}"
    );
    assert!(
        client
            .list_all_tools()
            .await
            .expect("list")
            .iter()
            .any(|t| t.name == "shout")
    );
}

#[tokio::test]
async fn mcp_over_http_checks_host_origin_and_the_gateway_key() {
    let mock = upstream("{}").await;
    let cfg = ConfigDir::new(&format!(
        "{HUB}\n[server]\napi_keys_env = [\"LLMHUB_TEST_GATEWAY_KEY\"]\n"
    ));
    cfg.write(
        ".env",
        &format!("{KEY_ENV}={KEY}\nLLMHUB_TEST_GATEWAY_KEY=gw-secret\n"),
    );
    cfg.provider("up", &mock.url, "models = [\"gpt-4o-mini\"]");
    let server = Server::start(&cfg).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let post =
        |host: Option<&'static str>, origin: Option<&'static str>, key: Option<&'static str>| {
            let mut req = server
                .client
                .post(format!("{}/mcp", server.url))
                .header("accept", "application/json, text/event-stream")
                .json(&init);
            if let Some(h) = host {
                req = req.header("host", h);
            }
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            req.send()
        };
    let cases = [
        (None, None, None, 401),
        (None, None, Some("wrong"), 401),
        (None, None, Some("gw-secret"), 200),
        (Some("evil.example.com"), None, Some("gw-secret"), 403),
        (
            None,
            Some("https://evil.example.com"),
            Some("gw-secret"),
            403,
        ),
        (None, Some("http://localhost:3000"), Some("gw-secret"), 200),
    ];
    for (host, origin, key, status) in cases {
        let got = post(host, origin, key).await.expect("send").status();
        assert_eq!(got, status, "host {host:?}, origin {origin:?}, key {key:?}");
    }
}

#[tokio::test]
async fn prompt_tools_over_plain_http() {
    let mock = upstream(r#"{"entities": []}"#).await;
    let cfg = config(&mock);
    let server = Server::start(&cfg).await;
    let list = server.get_json("/v1/tools").await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["code_review", "extract_entities", "summarize", "translate"]
    );
    assert_eq!(list["data"][0]["input_schema"]["required"][0], "code");

    let post = |name: &str, body: Value| {
        server
            .client
            .post(format!("{}/v1/tools/{name}", server.url))
            .json(&body)
            .send()
    };
    let resp = post("summarize", json!({"text": "Story.", "length": "short"}))
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body["content"],
        "reply to: Summarize the following text in a short summary:\n\nStory."
    );
    assert_eq!(body["provider"], "up");

    let resp = post("extract_entities", json!({"text": "Nobody."}))
        .await
        .expect("send");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["structured"], json!({"entities": []}));

    let resp = post("translate", json!({"text": 3})).await.expect("send");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_arguments");
    let issues = body["error"]["issues"].as_array().expect("issues");
    assert!(issues.iter().any(|i| i["path"] == "/text"), "{body}");
    assert!(
        issues.iter().any(|i| i["path"] == ""
            && i["message"]
                .as_str()
                .is_some_and(|m| m.contains("target_language"))),
        "{body}"
    );

    let resp = post("nope", json!({})).await.expect("send");
    assert_eq!(resp.status(), 404);
    let resp = server
        .client
        .post(format!("{}/v1/tools/summarize", server.url))
        .body("{oops")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
}
