//! Test harness: a configuration folder in a temp dir, the real server on 127.0.0.1:0,
//! and mock upstreams (axum apps) that record what they receive.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use llmhub::hub::{Hub, ReloadEvent};
use serde_json::Value;
use tokio::sync::oneshot;

pub const KEY_ENV: &str = "LLMHUB_TEST_UPSTREAM_KEY";
pub const KEY: &str = "sk-test-upstream-secret-0123456789";

pub fn fixture(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// One request as a mock upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// The query string, `""` when there is none.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body as it was written.
    pub text: bytes::Bytes,
    pub at: Instant,
}

type Handler =
    Arc<dyn Fn(usize, Value) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// An upstream that answers with `handler(n, body)` for its n-th request (from 0).
pub struct Mock {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: oneshot::Sender<()>,
}

impl Mock {
    pub async fn start<F, Fut>(handler: F) -> Mock
    where
        F: Fn(usize, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |n, body| Box::pin(handler(n, body)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let app = {
            let seen = seen.clone();
            axum::Router::new().fallback(move |request: axum::extract::Request| {
                let seen = seen.clone();
                let handler = handler.clone();
                let count = count.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let bytes = axum::body::to_bytes(body, usize::MAX)
                        .await
                        .unwrap_or_default();
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    seen.lock().expect("lock").push(Seen {
                        path: parts.uri.path().to_string(),
                        query: parts.uri.query().unwrap_or("").to_string(),
                        headers: parts.headers,
                        body: body.clone(),
                        text: bytes,
                        at: Instant::now(),
                    });
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    handler(n, body).await
                }
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Mock {
            url: format!("http://{addr}/v1"),
            seen,
            _stop: stop,
        }
    }

    /// Always answers with the OpenAI fixture completion, streamed when asked.
    pub async fn ok() -> Mock {
        Mock::start(|_, body| async move {
            if body["stream"] == true {
                sse_response(fixture("openai/chat.stream.sse"))
            } else {
                json_response(200, &fixture("openai/chat.response.json"))
            }
        })
        .await
    }

    /// Always answers with `status` and an OpenAI-shaped error body.
    pub async fn failing(status: u16) -> Mock {
        Mock::start(
            move |_, _| async move { json_response(status, &fixture("openai/error.5xx.json")) },
        )
        .await
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

/// An OpenAI-compatible upstream answering every request with `content` and these token
/// counts, in the model the request named.
pub async fn completion_upstream(
    content: &'static str,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> Mock {
    Mock::start(move |_, body| async move {
        let model = body["model"].as_str().unwrap_or("m").to_string();
        json_response(
            200,
            &serde_json::json!({"id": "c", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens}})
            .to_string(),
        )
    })
    .await
}

pub fn json_response(status: u16, body: &str) -> Response {
    (
        StatusCode::from_u16(status).expect("status"),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub fn sse_response(body: impl Into<Body>) -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/event-stream")],
        body.into(),
    )
        .into_response()
}

/// A base URL where nothing listens: connections are refused.
pub async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/v1")
}

/// A configuration folder with hub.toml, providers.d/ and tools.d/.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new(hub_toml: &str) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("providers.d")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("tools.d")).expect("mkdir");
        std::fs::write(dir.path().join("hub.toml"), hub_toml).expect("write hub");
        std::fs::write(dir.path().join(".env"), format!("{KEY_ENV}={KEY}\n")).expect("write env");
        ConfigDir { dir }
    }

    pub fn hub_path(&self) -> PathBuf {
        self.dir.path().join("hub.toml")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
        self
    }

    /// The offline `echo` provider with its one model, `echo`.
    pub fn echo(&self) -> &Self {
        self.write(
            "providers.d/echo.toml",
            "adapter = \"echo\"\nmodels = [\"echo\"]\n",
        )
    }

    /// A provider `keyless` whose key variable is never set: inactive, for the reason.
    pub fn keyless(&self) -> &Self {
        self.write(
            "providers.d/keyless.toml",
            "base_url = \"http://127.0.0.1:9/v1\"\nenv_key = \"LLMHUB_TEST_UNSET_KEY\"\nmodels = [\"k\"]\n",
        )
    }

    /// An OpenAI-compatible provider at `url` that needs the test key.
    pub fn provider(&self, name: &str, url: &str, extra: &str) -> &Self {
        self.write(
            &format!("providers.d/{name}.toml"),
            &format!("base_url = \"{url}\"\nenv_key = \"{KEY_ENV}\"\n{extra}\n"),
        )
    }
}

/// The real server, started in-process on 127.0.0.1:0.
pub struct Server {
    pub url: String,
    pub hub: Arc<Hub>,
    pub client: reqwest::Client,
    _stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
    _watch: Option<llmhub::reload::Watch>,
}

impl Server {
    pub async fn start(config: &ConfigDir) -> Server {
        Self::start_inner(config, false).await
    }

    /// Also watches the files, as `llmhub serve` does.
    pub async fn start_watching(config: &ConfigDir) -> Server {
        Self::start_inner(config, true).await
    }

    async fn start_inner(config: &ConfigDir, watch: bool) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::start_on(config, listener, watch).await
    }

    /// Serves on a listener the test bound itself (to put its address in hub.toml first).
    pub async fn start_on(
        config: &ConfigDir,
        listener: tokio::net::TcpListener,
        watch: bool,
    ) -> Server {
        let hub = match Hub::load(&config.hub_path()) {
            Ok(hub) => hub,
            Err(errors) => panic!("config: {errors:#?}"),
        };
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = hub.clone();
        let served = tokio::spawn(async move {
            let _ = llmhub::http::serve(listener, served, async move {
                let _ = stopped.await;
            })
            .await;
        });
        let watch = watch.then(|| llmhub::reload::watch(hub.clone()).expect("watch"));
        Server {
            url: format!("http://{addr}"),
            hub,
            client: llmhub::upstream::client_builder()
                .build()
                .expect("a reqwest client with the TLS provider installed"),
            _stop: stop,
            served,
            _watch: watch,
        }
    }

    /// A graceful stop, as on SIGTERM: returns once the server has finished, the
    /// ledger flushed.
    pub async fn stop(self) {
        let _ = self._stop.send(());
        let _ = self.served.await;
    }

    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// A chat request whose JSON text is exactly `body`.
    pub async fn chat_text(&self, body: impl Into<String>) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.url))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }
}

/// Waits for the reload that follows a file change: the next Applied or Failed event.
pub async fn next_reload(rx: &mut tokio::sync::watch::Receiver<ReloadEvent>) -> ReloadEvent {
    let wait = async {
        loop {
            rx.changed().await.expect("hub alive");
            let event = rx.borrow_and_update().clone();
            if matches!(
                event,
                ReloadEvent::Applied { .. } | ReloadEvent::Failed { .. }
            ) {
                return event;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a reload within 10s of the change")
}

pub fn user(text: &str) -> Value {
    serde_json::json!([{"role": "user", "content": text}])
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(|d| d.trim().to_string())
        })
        .collect()
}

/// Runs `llmhub mcp` with `input` on stdin (then closes it) and returns every JSON line
/// it wrote to stdout.
pub async fn run_stdio(hub: &Path, input: &str) -> Vec<Value> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_llmhub"))
        .args(["mcp", "--config"])
        .arg(hub)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn llmhub mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("llmhub mcp exits after stdin closes")
        .expect("output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}
pub mod mcp;
pub mod pg;

/// One MCP session over streamable HTTP, with a gateway key, spoken as raw JSON-RPC.
pub struct McpHttp {
    url: String,
    client: reqwest::Client,
    key: String,
    session: Option<String>,
    next_id: u64,
}

impl McpHttp {
    /// Initializes a session at `{server}/mcp` with `key` (empty: none).
    pub async fn connect(server: &Server, key: &str) -> McpHttp {
        let mut mcp = McpHttp {
            url: format!("{}/mcp", server.url),
            client: server.client.clone(),
            key: key.to_string(),
            session: None,
            next_id: 1,
        };
        let (status, init) = mcp
            .post(
                serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}}),
            )
            .await;
        assert_eq!(status, 200, "initialize: {init}");
        mcp.post(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        mcp
    }

    /// A POST of `body` on this session, as a client sends it; the caller may add to it.
    pub fn builder(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if !self.key.is_empty() {
            req = req.bearer_auth(&self.key);
        }
        if let Some(s) = &self.session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        req
    }

    async fn post(&mut self, body: Value) -> (u16, Value) {
        let response = self.builder(&body).send().await.expect("mcp request");
        if let Some(s) = response.headers().get("mcp-session-id") {
            self.session = Some(s.to_str().expect("session id").to_string());
        }
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or_else(|_| {
            sse_data(&text)
                .iter()
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find(|v| v.get("id").is_some())
                .unwrap_or(Value::Null)
        });
        (status, value)
    }

    /// A request's `result` (or its `error`, whole).
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let (_, reply) = self
            .post(serde_json::json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}))
            .await;
        reply.get("result").cloned().unwrap_or(reply)
    }

    pub async fn tool_names(&mut self) -> Vec<String> {
        let listed = self.request("tools/list", serde_json::json!({})).await;
        listed["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list: {listed}"))
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect()
    }

    pub async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request(
            "tools/call",
            serde_json::json!({"name": tool, "arguments": arguments}),
        )
        .await
    }
}

/// A chat request with `key` as the bearer, asking for at most 5 tokens.
pub async fn chat_as(server: &Server, key: &str, model: &str) -> reqwest::Response {
    server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(key)
        .json(&serde_json::json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request")
}

/// A GET with `key` as the bearer (empty: an empty bearer, i.e. no key).
pub async fn get_as(server: &Server, key: &str, path: &str) -> reqwest::Response {
    server
        .client
        .get(format!("{}{path}", server.url))
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
}

/// `llmhub keys new NAME --project P` in `cfg`: the key it printed.
pub fn new_key(cfg: &ConfigDir, name: &str, project: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmhub"))
        .args(["keys", "new", name, "--project", project, "--config"])
        .arg(cfg.hub_path())
        .output()
        .expect("run llmhub keys new");
    assert!(
        out.status.success(),
        "keys new: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Appends settings to a key's file (as an operator would uncomment them).
pub fn limit_key(cfg: &ConfigDir, name: &str, settings: &str) {
    let path = cfg.path(&format!("keys.d/{name}.toml"));
    let mut text = std::fs::read_to_string(&path).expect("key file");
    // Settings go before the commented examples, at the top level.
    text = text.replacen(
        "\n# Every setting",
        &format!("\n{settings}\n\n# Every setting"),
        1,
    );
    std::fs::write(path, text).expect("write key file");
}
pub mod redis;
