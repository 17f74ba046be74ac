//! MCP on both sides for tests: a backend MCP server over HTTP (written here) that
//! records what it receives, and a client of the hub's MCP endpoints.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientConfig, ContentBlock,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, ListPromptsResult, ListToolsResult,
    PaginatedRequestParams, Prompt, PromptMessage, ProtocolVersion, Role, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ClientHandler, ErrorData, Peer, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::Server;

// ---- a backend MCP server over HTTP ---------------------------------------------------

pub fn tool(name: &str, description: &str) -> Tool {
    let schema = json!({"type": "object", "properties": {"query": {"type": "string", "description": "what to look for"}}});
    Tool::new(
        name.to_string(),
        description.to_string(),
        Arc::new(schema.as_object().cloned().unwrap_or_default()),
    )
}

/// A tool called, and the `Authorization` header it came with.
pub type CallAuth = (String, Option<String>);

#[derive(Clone)]
pub struct Backend {
    pub tools: Arc<Mutex<Vec<Tool>>>,
    pub peers: Arc<Mutex<Vec<Peer<RoleServer>>>>,
    pub calls: Arc<Mutex<Vec<(String, Value)>>>,
    pub headers: Arc<Mutex<Vec<HeaderMap>>>,
    /// Each call's tool and the `Authorization` header of the request that carried it.
    pub call_auth: Arc<Mutex<Vec<CallAuth>>>,
    /// Signalled as each call arrives.
    pub called: Arc<Notify>,
    /// The `gated` tool answers once this is signalled.
    pub gate: Arc<Notify>,
}

impl Backend {
    pub fn new(tools: Vec<Tool>) -> Backend {
        Backend {
            tools: Arc::new(Mutex::new(tools)),
            peers: Arc::new(Mutex::new(Vec::new())),
            calls: Arc::new(Mutex::new(Vec::new())),
            headers: Arc::new(Mutex::new(Vec::new())),
            call_auth: Arc::new(Mutex::new(Vec::new())),
            called: Arc::new(Notify::new()),
            gate: Arc::new(Notify::new()),
        }
    }

    /// Changes the tool list and tells connected clients, as a real server would.
    pub async fn set_tools(&self, tools: Vec<Tool>) {
        *self.tools.lock().expect("lock") = tools;
        let peers = self.peers.lock().expect("lock").clone();
        for p in peers {
            let _ = p.notify_tool_list_changed().await;
        }
    }

    pub fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().expect("lock").clone()
    }
}

impl ServerHandler for Backend {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_prompts()
                .build(),
        )
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.peers.lock().expect("lock").push(context.peer.clone());
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.tools.lock().expect("lock").clone(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let auth = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.headers.get("authorization"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.call_auth
            .lock()
            .expect("lock")
            .push((request.name.to_string(), auth));
        self.calls
            .lock()
            .expect("lock")
            .push((request.name.to_string(), args.clone()));
        self.called.notify_one();
        match request.name.as_ref() {
            "slow" => std::future::pending().await,
            "gated" => {
                self.gate.notified().await;
                Ok(CallToolResult::success(vec![ContentBlock::text("let through")]).into())
            }
            "fail" => {
                Ok(CallToolResult::error(vec![ContentBlock::text("the backend says no")]).into())
            }
            name => {
                let mut result =
                    CallToolResult::success(vec![ContentBlock::text(format!("{name} got {args}"))]);
                result.structured_content = Some(json!({"tool": name, "args": args}));
                Ok(result.into())
            }
        }
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "triage",
            Some("Triage an issue"),
            None,
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("triage via {}", request.name),
        )])
        .into())
    }
}

/// Serves `backend` at http://addr/mcp until the returned handle is aborted.
pub async fn serve_backend(
    backend: Backend,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    let service = StreamableHttpService::new(
        {
            let b = backend.clone();
            move || Ok(b.clone())
        },
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let headers = backend.headers.clone();
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let headers = headers.clone();
                async move {
                    headers.lock().expect("lock").push(req.headers().clone());
                    next.run(req).await
                }
            },
        ));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

pub async fn start_backend(backend: Backend) -> (String, SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = serve_backend(backend, listener).await;
    (format!("http://{addr}/mcp"), addr, handle)
}

// ---- the hub's side ---------------------------------------------------------------------

#[derive(Clone)]
pub struct Client {
    pub tools_changed: Arc<Notify>,
}

impl ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::default().with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }
}

pub async fn connect(
    server: &Server,
    path: &str,
) -> (RunningService<RoleClient, Client>, Arc<Notify>) {
    let changed = Arc::new(Notify::new());
    let client = Client {
        tools_changed: changed.clone(),
    };
    let transport = StreamableHttpClientTransport::from_uri(format!("{}{path}", server.url));
    let running = tokio::time::timeout(Duration::from_secs(15), client.serve(transport))
        .await
        .expect("handshake in time")
        .expect("initialize");
    (running, changed)
}

pub async fn names(client: &RunningService<RoleClient, Client>) -> Vec<String> {
    let mut n: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    n.sort();
    n
}

pub async fn call(
    client: &RunningService<RoleClient, Client>,
    name: &str,
    args: Value,
) -> CallToolResult {
    client
        .call_tool(
            CallToolRequestParams::new(name.to_string())
                .with_arguments(args.as_object().cloned().unwrap_or_default()),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
