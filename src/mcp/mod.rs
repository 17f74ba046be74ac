//! The MCP server (rmcp, a hand-written `ServerHandler` because the tool list changes at
//! runtime): built-in tools, prompt tools and prompts, list_changed after reloads, and
//! the stdio and streamable HTTP transports.

mod builtin;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, ListPromptsResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, Prompt, PromptArgument, PromptMessage, Role,
    ServerCapabilities, ServerConfig, SubscriptionFilter, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, ReloadEvent};
use crate::registry::Registry;
use crate::tools::{self, ToolError, ToolOutput};

/// What changed for clients after a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    pub tools: bool,
    pub prompts: bool,
}

/// Per process: the hub, the connected sessions to notify, and the change feed for
/// `subscriptions/listen` (2026-07-28 clients, which have no session).
pub struct Mcp {
    hub: Arc<Hub>,
    sessions: Mutex<Vec<Peer<RoleServer>>>,
    changes: broadcast::Sender<Changed>,
}

impl Mcp {
    /// Creates the MCP side of a hub and starts following its reloads.
    pub fn start(hub: Arc<Hub>) -> Arc<Mcp> {
        let (changes, _) = broadcast::channel(16);
        let mcp = Arc::new(Mcp {
            hub,
            sessions: Mutex::new(Vec::new()),
            changes,
        });
        tokio::spawn(follow_reloads(mcp.clone()));
        mcp
    }

    pub fn handler(self: &Arc<Self>) -> Handler {
        Handler { mcp: self.clone() }
    }

    /// Every change announced to clients from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Vec<Peer<RoleServer>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fingerprint of what `tools/list` and `prompts/list` would answer.
fn signatures(registry: &Registry) -> (u64, u64) {
    let mut t = DefaultHasher::new();
    serde_json::to_string(&list_tools(registry))
        .unwrap_or_default()
        .hash(&mut t);
    let mut p = DefaultHasher::new();
    serde_json::to_string(&list_prompts(registry))
        .unwrap_or_default()
        .hash(&mut p);
    (t.finish(), p.finish())
}

/// After each applied reload, tells connected clients what changed.
async fn follow_reloads(mcp: Arc<Mcp>) {
    let mut events = mcp.hub.subscribe();
    let mut last = signatures(&mcp.hub.snapshot());
    while events.changed().await.is_ok() {
        let applied = matches!(*events.borrow_and_update(), ReloadEvent::Applied { .. });
        if !applied {
            continue;
        }
        let now = signatures(&mcp.hub.snapshot());
        let changed = Changed {
            tools: now.0 != last.0,
            prompts: now.1 != last.1,
        };
        last = now;
        if !changed.tools && !changed.prompts {
            continue;
        }
        let peers: Vec<Peer<RoleServer>> = {
            let mut sessions = mcp.sessions();
            sessions.retain(|p| !p.is_transport_closed());
            sessions.clone()
        };
        tracing::info!(
            sessions = peers.len(),
            tools = changed.tools,
            prompts = changed.prompts,
            "announcing list changes"
        );
        for peer in peers {
            if changed.tools {
                let _ = peer.notify_tool_list_changed().await;
            }
            if changed.prompts {
                let _ = peer.notify_prompt_list_changed().await;
            }
        }
        let _ = mcp.changes.send(changed);
    }
}

/// The rmcp handler; cheap to clone, one per HTTP session.
#[derive(Clone)]
pub struct Handler {
    mcp: Arc<Mcp>,
}

fn object(v: &Value) -> Arc<Map<String, Value>> {
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

/// The tools a client sees: the built-ins, then every prompt tool whose model chain has an active provider.
pub fn list_tools(registry: &Registry) -> Vec<Tool> {
    let mut out = builtin::tools(registry);
    for tool in registry.tools.values() {
        if tool.availability(registry).is_err() {
            continue;
        }
        let mut t = Tool::new(
            tool.name.clone(),
            tool.description.clone(),
            tool.input_schema.clone(),
        );
        if let Some(schema) = &tool.output_schema {
            t = t.with_raw_output_schema(schema.clone());
        }
        out.push(t);
    }
    out
}

/// Each offered prompt tool is also an MCP prompt.
pub fn list_prompts(registry: &Registry) -> Vec<Prompt> {
    registry
        .tools
        .values()
        .filter(|t| t.availability(registry).is_ok())
        .map(|t| {
            let args = t
                .arguments()
                .into_iter()
                .map(|a| {
                    let mut arg = PromptArgument::new(a.name).with_required(a.required);
                    if let Some(d) = a.description {
                        arg = arg.with_description(d);
                    }
                    arg
                })
                .collect();
            Prompt::new(t.name.clone(), Some(t.description.clone()), Some(args))
        })
        .collect()
}

/// A tool failure the calling model should read: `isError` with the reason.
fn tool_error(message: String) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(message)]).into()
}

fn tool_failure(e: ToolError) -> CallToolResponse {
    let text = match &e {
        ToolError::InvalidArguments(issues) => {
            let lines: Vec<String> = issues
                .iter()
                .map(|i| {
                    format!(
                        "- {}: {}",
                        if i.path.is_empty() { "(root)" } else { &i.path },
                        i.message
                    )
                })
                .collect();
            format!("invalid arguments:\n{}", lines.join("\n"))
        }
        ToolError::InvalidOutput { reply, issues } => {
            let lines: Vec<String> = issues
                .iter()
                .map(|i| {
                    format!(
                        "- {}: {}",
                        if i.path.is_empty() { "(root)" } else { &i.path },
                        i.message
                    )
                })
                .collect();
            format!(
                "the model's reply does not match the tool's output schema:\n{}\n\nreply:\n{reply}",
                lines.join("\n")
            )
        }
        other => other.to_string(),
    };
    tool_error(text)
}

fn tool_success(out: ToolOutput, structured_tool: bool) -> CallToolResponse {
    let mut result = CallToolResult::success(vec![ContentBlock::text(out.text.clone())]);
    result.structured_content = Some(match out.structured {
        Some(v) if structured_tool => v,
        _ => {
            json!({"content": out.text, "model": out.model, "provider": out.provider, "usage": out.usage})
        }
    });
    result.into()
}

impl Handler {
    /// Runs `work`, sending progress notifications while it lasts when the client asked
    /// for them, and giving up if the client cancels the request.
    async fn with_progress<F, T>(
        &self,
        context: &RequestContext<RoleServer>,
        work: F,
    ) -> Result<T, McpError>
    where
        F: std::future::Future<Output = T>,
    {
        let token = context.meta.get_progress_token();
        let interval = self.mcp.hub.snapshot().settings.mcp_progress_interval;
        let peer = context.peer.clone();
        let ticker = async move {
            let Some(token) = token else {
                return std::future::pending::<()>().await;
            };
            let started = std::time::Instant::now();
            let mut n = 0u32;
            loop {
                tokio::time::sleep(interval).await;
                n += 1;
                let param = ProgressNotificationParam::new(token.clone(), f64::from(n))
                    .with_message(format!(
                        "waiting for the model ({:.0}s)",
                        started.elapsed().as_secs_f64()
                    ));
                let _ = peer.notify_progress(param).await;
            }
        };
        tokio::select! {
            out = work => Ok(out),
            () = ticker => unreachable!("the ticker never ends"),
            () = context.ct.cancelled() => Err(McpError::internal_error("the request was cancelled", None)),
        }
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        let registry = self.mcp.hub.snapshot();
        let mut instructions = String::from(
            "llmhub: one gateway to many LLM providers. Use chat_completion to ask any configured model \
             (see its description for the models and groups), list_models and get_model_info to choose, \
             and the prompt tools for ready-made tasks.",
        );
        if let Some(extra) = &registry.settings.mcp_description {
            instructions.push(' ');
            instructions.push_str(extra);
        }
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_prompts()
                .enable_prompts_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("llmhub", env!("CARGO_PKG_VERSION")))
        .with_instructions(instructions)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut sessions = self.mcp.sessions();
        sessions.retain(|p| !p.is_transport_closed());
        sessions.push(context.peer.clone());
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(list_tools(
            &self.mcp.hub.snapshot(),
        )))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let registry = self.mcp.hub.snapshot();
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let name = request.name.as_ref();
        if let Some(response) = builtin::call(&self.mcp.hub, &registry, name, &args) {
            return Ok(response);
        }
        if name == "chat_completion" {
            let run = tools::chat_completion(&self.mcp.hub, &registry, &args);
            return Ok(match self.with_progress(&context, run).await? {
                Ok(out) => tool_success(out, false),
                Err(e) => tool_failure(e),
            });
        }
        let Some(tool) = registry.tools.get(name).cloned() else {
            return Err(McpError::invalid_params(
                format!("unknown tool `{name}`; tools/list names the available ones"),
                None,
            ));
        };
        if let Err(why) = tool.availability(&registry) {
            return Ok(tool_error(format!("tool `{name}` is not available: {why}")));
        }
        let run = tools::run(&self.mcp.hub, &registry, &tool, &args);
        Ok(match self.with_progress(&context, run).await? {
            Ok(out) => tool_success(out, tool.output_schema.is_some()),
            Err(e) => tool_failure(e),
        })
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(list_prompts(
            &self.mcp.hub.snapshot(),
        )))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let registry = self.mcp.hub.snapshot();
        let Some(tool) = registry.tools.get(&request.name) else {
            return Err(McpError::invalid_params(
                format!("unknown prompt `{}`", request.name),
                None,
            ));
        };
        let args =
            coerce_prompt_arguments(&tool.input_schema, request.arguments.unwrap_or_default());
        let (system, prompt) = tools::render(tool, &args)
            .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
        let mut messages = Vec::new();
        if let Some(system) = system {
            // MCP prompt messages have no system role: the instructions go first, as the user's.
            messages.push(PromptMessage::new_text(Role::User, system));
        }
        messages.push(PromptMessage::new_text(Role::User, prompt));
        Ok(GetPromptResult::new(messages)
            .with_description(tool.description.clone())
            .into())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let mut changes = self.mcp.subscribe();
        let accepted = context.accepted().clone();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                change = changes.recv() => match change {
                    Ok(c) => {
                        if c.tools && accepted.tools_list_changed == Some(true) {
                            let _ = context.sink().notify_tool_list_changed().await;
                        }
                        if c.prompts && accepted.prompts_list_changed == Some(true) {
                            let _ = context.sink().notify_prompt_list_changed().await;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if accepted.tools_list_changed == Some(true) {
                            let _ = context.sink().notify_tool_list_changed().await;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }
}

/// MCP prompt pickers send every argument as a string: convert the ones the schema
/// declares as numbers or booleans so they validate.
fn coerce_prompt_arguments(schema: &Map<String, Value>, args: Map<String, Value>) -> Value {
    let props = schema.get("properties").and_then(Value::as_object);
    let coerced = args
        .into_iter()
        .map(|(k, v)| {
            let kind = props
                .and_then(|p| p.get(&k))
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str);
            let v = match (kind, &v) {
                (Some("integer" | "number" | "boolean"), Value::String(s)) => {
                    serde_json::from_str(s).unwrap_or(v)
                }
                _ => v,
            };
            (k, v)
        })
        .collect();
    Value::Object(coerced)
}

/// MCP over stdio until the client closes it; logs go to stderr.
pub async fn serve_stdio(hub: Arc<Hub>) -> anyhow::Result<()> {
    let mcp = Mcp::start(hub);
    let service = mcp.handler().serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}

/// The streamable HTTP service mounted at `[mcp] http_path`: loopback hosts and origins
/// are allowed, plus those configured.
pub fn http_service(
    mcp: Arc<Mcp>,
    ct: CancellationToken,
) -> StreamableHttpService<Handler, LocalSessionManager> {
    let registry = mcp.hub.snapshot();
    let settings = &registry.settings;
    let mut hosts: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
        "[::1]".into(),
    ];
    hosts.extend(settings.mcp_allowed_hosts.iter().cloned());
    let mut origins: Vec<String> = vec![
        "http://localhost:*".into(),
        "http://127.0.0.1:*".into(),
        "http://[::1]:*".into(),
    ];
    origins.extend(settings.mcp_allowed_origins.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .with_cancellation_token(ct);
    let handler = mcp.handler();
    StreamableHttpService::new(
        move || Ok(handler.clone()),
        LocalSessionManager::default().into(),
        config,
    )
}
