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
    pub headers: HeaderMap,
    pub body: Value,
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
                        headers: parts.headers,
                        body: body.clone(),
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
            client: reqwest::Client::new(),
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
pub mod pg;
