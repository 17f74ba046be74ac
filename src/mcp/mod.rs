//! The MCP server (rmcp, a hand-written `ServerHandler` because the tool list changes at
//! runtime): built-in tools, prompt tools and prompts, aggregated backend servers,
//! profiles, list_changed after reloads, and the stdio and streamable HTTP transports.

pub mod backends;
mod builtin;
pub mod sessions;
mod stdio;

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

use crate::hub::{Caller, Hub};
use crate::registry::Principal;
use crate::registry::{Profile, Registry};
use crate::tools::{self, ToolError, ToolOutput};
use backends::{Backends, Exposed, View};
use sessions::{Session, Sessions};

/// What changed for clients after a reload or a backend's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    pub tools: bool,
    pub prompts: bool,
}

/// Per process: the hub, the backends, the connected clients to notify, the change
/// feed for `subscriptions/listen` (2026-07-28 clients, which have no session), and
/// the per-session endpoints in use.
pub struct Mcp {
    hub: Arc<Hub>,
    pub backends: Backends,
    pub sessions: Sessions,
    peers: Mutex<Vec<Peer<RoleServer>>>,
    changes: broadcast::Sender<Changed>,
    last: Mutex<(u64, u64)>,
}

impl Mcp {
    /// Creates the MCP side of a hub, connects its backends, and follows reloads.
    pub fn start(hub: Arc<Hub>) -> Arc<Mcp> {
        let (changes, _) = broadcast::channel(16);
        let mcp = Arc::new(Mcp {
            hub,
            backends: Backends::default(),
            sessions: Sessions::default(),
            peers: Mutex::new(Vec::new()),
            changes,
            last: Mutex::new((0, 0)),
        });
        let registry = mcp.hub.snapshot();
        *lock(&mcp.last) = mcp.signatures(&registry);
        mcp.backends.sync(&registry.backends);
        tokio::spawn(follow(mcp.clone()));
        tokio::spawn(sweep(mcp.clone()));
        mcp
    }

    /// A handler serving everything, or only a profile's subset.
    pub fn handler(self: &Arc<Self>, profile: Option<String>) -> Handler {
        Handler {
            mcp: self.clone(),
            scope: match profile {
                None => Scope::All,
                Some(name) => Scope::Profile(name),
            },
        }
    }

    /// The handler of `/mcp/s/<id>`: the session comes with each request.
    pub fn session_handler(self: &Arc<Self>) -> Handler {
        Handler {
            mcp: self.clone(),
            scope: Scope::Session,
        }
    }

    /// Everything, as the main endpoint offers it.
    fn everything(&self) -> Offer<'static> {
        Offer {
            view: self.backends.view(),
            own: true,
            profile: None,
        }
    }

    /// Whether a name is taken by one of llmhub's own tools (built-in or a configured
    /// prompt tool): backend tools never take it.
    pub(crate) fn own_names(registry: &Registry) -> impl Fn(&str) -> bool + '_ {
        |name| tools::BUILTIN_NAMES.contains(&name) || registry.tools.contains_key(name)
    }

    /// The tools a client sees: built-ins, offered prompt tools, then backend tools;
    /// with a profile, only what it allows.
    fn tools(&self, registry: &Registry, offer: &Offer<'_>, principal: &Principal) -> Vec<Tool> {
        let own = if offer.own {
            list_tools(registry)
        } else {
            Vec::new()
        };
        let own = own.into_iter().map(|t| (t, None));
        let (backend, _) = offer.view.tools(
            &registry.settings.mcp_tool_separator,
            &Self::own_names(registry),
        );
        let backend = backend.into_iter().map(|e| {
            let mut tool = e.item;
            tool.name = e.name.into();
            (tool, Some(e.backend))
        });
        own.chain(backend)
            .filter(|(t, server)| {
                offer
                    .profile
                    .is_none_or(|p| p.allows(server.as_deref(), &t.name))
                    && principal.allows_tool(&t.name)
            })
            .map(|(t, _)| t)
            .collect()
    }

    fn prompts(&self, registry: &Registry, offer: &Offer<'_>) -> Vec<Prompt> {
        let own = if offer.own {
            list_prompts(registry)
        } else {
            Vec::new()
        };
        let own = own.into_iter().map(|p| (p, None));
        let (backend, _) = offer.view.prompts(
            &registry.settings.mcp_tool_separator,
            &Self::own_names(registry),
        );
        let backend = backend.into_iter().map(|e| {
            let mut prompt = e.item;
            prompt.name = e.name;
            (prompt, Some(e.backend))
        });
        own.chain(backend)
            .filter(|(p, server)| {
                offer
                    .profile
                    .is_none_or(|f| f.allows(server.as_deref(), &p.name))
            })
            .map(|(p, _)| p)
            .collect()
    }

    fn backend_of(registry: &Registry, view: &View, exposed: &str) -> Option<String> {
        let (tools, _) = view.tools(
            &registry.settings.mcp_tool_separator,
            &Self::own_names(registry),
        );
        if let Some(e) = tools.into_iter().find(|e| e.name == exposed) {
            return Some(e.backend);
        }
        let (prompts, _) = view.prompts(
            &registry.settings.mcp_tool_separator,
            &Self::own_names(registry),
        );
        prompts
            .into_iter()
            .find(|e| e.name == exposed)
            .map(|e| e.backend)
    }

    /// A fingerprint of what `tools/list` and `prompts/list` would answer.
    fn signatures(&self, registry: &Registry) -> (u64, u64) {
        self.signature(registry, &self.everything(), &Principal::Admin)
    }

    fn signature(
        &self,
        registry: &Registry,
        offer: &Offer<'_>,
        principal: &Principal,
    ) -> (u64, u64) {
        let mut t = DefaultHasher::new();
        serde_json::to_string(&self.tools(registry, offer, principal))
            .unwrap_or_default()
            .hash(&mut t);
        let mut p = DefaultHasher::new();
        serde_json::to_string(&self.prompts(registry, offer))
            .unwrap_or_default()
            .hash(&mut p);
        (t.finish(), p.finish())
    }

    /// Opens a session's own connections on its first request after being idle, and
    /// follows their changes until they close.
    fn enter(self: &Arc<Self>, session: &Arc<Session>, registry: &Registry) {
        if let Some(stop) = session.start(registry) {
            self.sessions.wake.notify_one();
            let (mcp, session) = (self.clone(), session.clone());
            tokio::spawn(async move {
                let changed = session.changed();
                // Compare once connected, not while connecting: what clients saw before it
                // idled out is what it offers again.
                session.first_connects(&mcp.backends).await;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = changed.notified() => mcp.announce_session(&session).await,
                    }
                }
            });
        }
    }

    /// Tells one session's clients what changed in what they see, if anything. An idle
    /// session's clients hear of changes when it next opens.
    async fn announce_session(&self, session: &Session) {
        if !session.is_open() {
            return;
        }
        let registry = self.hub.snapshot();
        let principal = registry
            .session_principal(session.owner())
            .unwrap_or(Principal::Admin);
        let offer = Offer {
            view: session.view(&self.backends),
            own: session.builtin(),
            profile: None,
        };
        let now = self.signature(&registry, &offer, &principal);
        let changed = {
            let mut last = lock(&session.listed);
            let c = Changed {
                tools: now.0 != last.0,
                prompts: now.1 != last.1,
            };
            *last = now;
            c
        };
        let peers: Vec<Peer<RoleServer>> = {
            let mut peers = lock(&session.peers);
            peers.retain(|p| !p.is_transport_closed());
            peers.clone()
        };
        if !peers.is_empty() && (changed.tools || changed.prompts) {
            tracing::info!(session = %session.label, tools = changed.tools, prompts = changed.prompts, "announcing list changes to a session");
        }
        notify(&peers, changed).await;
    }

    /// Tells connected clients what changed since the last announcement, if anything.
    async fn announce(&self) {
        for session in self.sessions.in_use() {
            self.announce_session(&session).await;
        }
        let registry = self.hub.snapshot();
        let separator = registry.settings.mcp_tool_separator.clone();
        let own = Self::own_names(&registry);
        let (_, problems) = self.backends.tools(&separator, &own);
        for p in &problems {
            tracing::warn!("{p}");
        }
        self.hub
            .set_backends_report(self.backends.health(&separator, &own));
        let now = self.signatures(&registry);
        let changed = {
            let mut last = lock(&self.last);
            let c = Changed {
                tools: now.0 != last.0,
                prompts: now.1 != last.1,
            };
            *last = now;
            c
        };
        if !changed.tools && !changed.prompts {
            return;
        }
        let peers: Vec<Peer<RoleServer>> = {
            let mut peers = self.peers();
            peers.retain(|p| !p.is_transport_closed());
            peers.clone()
        };
        tracing::info!(
            sessions = peers.len(),
            tools = changed.tools,
            prompts = changed.prompts,
            "announcing list changes"
        );
        notify(&peers, changed).await;
        let _ = self.changes.send(changed);
    }

    /// Every change announced to clients from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Vec<Peer<RoleServer>>> {
        lock(&self.peers)
    }
}

async fn notify(peers: &[Peer<RoleServer>], changed: Changed) {
    for peer in peers {
        if changed.tools {
            let _ = peer.notify_tool_list_changed().await;
        }
        if changed.prompts {
            let _ = peer.notify_prompt_list_changed().await;
        }
    }
}

/// What one endpoint offers a request: which backends, whether llmhub's own tools and
/// prompts, and a profile's filter.
struct Offer<'r> {
    view: View,
    own: bool,
    profile: Option<&'r Profile>,
}

impl Offer<'_> {
    /// Whether the tool or prompt `name` passes this offer's profile.
    fn allows(&self, registry: &Registry, name: &str) -> bool {
        self.profile
            .is_none_or(|p| p.allows(Mcp::backend_of(registry, &self.view, name).as_deref(), name))
    }
}

/// Removes expired sessions and closes idle ones' connections, as their deadlines come.
async fn sweep(mcp: Arc<Mcp>) {
    loop {
        let wait = mcp.sessions.sweep(&mcp.hub).await;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = mcp.sessions.wake.notified() => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reconnects backends after each applied reload and announces every change, whether
/// it came from a reload or from a backend.
async fn follow(mcp: Arc<Mcp>) {
    let mut events = mcp.hub.subscribe();
    // Compare generations rather than trusting each event: a watch channel keeps only
    // the latest value, and two reloads in a row must not hide the first.
    let mut synced = mcp.hub.snapshot().generation;
    loop {
        tokio::select! {
            changed = events.changed() => {
                if changed.is_err() {
                    return;
                }
                events.borrow_and_update();
                let registry = mcp.hub.snapshot();
                if registry.generation != synced {
                    synced = registry.generation;
                    mcp.backends.sync(&registry.backends);
                    for session in mcp.sessions.in_use() {
                        session.resync(&registry);
                    }
                    mcp.announce().await;
                }
            }
            () = mcp.backends.changed.notified() => mcp.announce().await,
        }
    }
}

/// The rmcp handler; cheap to clone, one per HTTP session.
#[derive(Clone)]
pub struct Handler {
    mcp: Arc<Mcp>,
    scope: Scope,
}

/// Which endpoint a handler serves.
#[derive(Clone)]
enum Scope {
    All,
    Profile(String),
    /// `/mcp/s/<id>`: the HTTP side puts the session in each request's extensions.
    Session,
}

fn object(v: &Value) -> Arc<Map<String, Value>> {
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

/// llmhub's own tools: the built-ins, then every prompt tool whose model chain has an active provider.
pub fn list_tools(registry: &Registry) -> Vec<Tool> {
    let mut out = builtin::tools(registry);
    for tool in registry.tools.values() {
        if tool.availability(registry).is_err() {
            continue;
        }
        let mut t = Tool::new(
            tool.name.clone(),
            tool.offered_description(registry),
            tool.input_schema.clone(),
        );
        if let Some(schema) = &tool.output_schema {
            t = t.with_raw_output_schema(schema.clone());
        }
        out.push(t);
    }
    out
}

/// Each offered prompt tool is also an MCP prompt (REST and SQL tools have no prompt).
fn list_prompts(registry: &Registry) -> Vec<Prompt> {
    registry
        .tools
        .values()
        .filter(|t| {
            matches!(t.kind, crate::registry::ToolKind::Prompt { .. })
                && t.availability(registry).is_ok()
        })
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

fn unknown_tool(name: &str) -> McpError {
    McpError::invalid_params(
        format!("unknown tool `{name}`; tools/list names the available ones"),
        None,
    )
}

/// A `tools/call`'s answer: a result built here, or a backend's result as its JSON text
/// (which the HTTP short way passes on without reading it again).
enum Answer {
    Typed(CallToolResponse),
    Json { backend: String, result: Vec<u8> },
}

impl Answer {
    /// The answer as rmcp sends it.
    fn into_response(self) -> CallToolResponse {
        match self {
            Answer::Typed(response) => response,
            Answer::Json { backend, result } => {
                match serde_json::from_slice::<CallToolResult>(&result) {
                    Ok(result) => result.into(),
                    Err(e) => tool_error(format!(
                        "backend {backend} failed the call: its result is not a tool result ({e})"
                    )),
                }
            }
        }
    }

    /// The JSON text of the `result` member.
    fn into_json(self) -> Vec<u8> {
        match self {
            Answer::Typed(response) => {
                // As rmcp writes it for the sessions this path serves (revisions before
                // 2026-07-28): without the newer `resultType: complete`.
                let mut result = rmcp::model::ServerResult::from(response);
                result.strip_result_type_for_legacy_peer();
                serde_json::to_vec(&result).unwrap_or_default()
            }
            Answer::Json { result, .. } => result,
        }
    }
}

/// A `tools/call`'s params, read as rmcp reads them, for the HTTP side to run.
pub struct PlainRequest(CallToolRequestParams);

impl PlainRequest {
    pub fn parse(params: &str) -> Option<PlainRequest> {
        serde_json::from_str(params).ok().map(PlainRequest)
    }
}

/// A backend tool's result as JSON text: the backend reached with [`View::call_direct`],
/// or through rmcp's client when that cannot take the call.
async fn call_backend(
    http: &crate::upstream::Client,
    view: &View,
    exposed: &Exposed<Tool>,
    arguments: Option<Map<String, Value>>,
) -> Vec<u8> {
    match view.call_direct(http, exposed, arguments.as_ref()).await {
        Ok(result) => result,
        Err(backends::NotSent) => {
            serde_json::to_vec(&view.call_tool(exposed, arguments).await).unwrap_or_default()
        }
    }
}

/// A progress notification's text, for a call started at `started`.
pub fn progress_message(started: std::time::Instant) -> String {
    format!(
        "waiting for the model ({:.0}s)",
        started.elapsed().as_secs_f64()
    )
}

/// A `tools/call` past its checks: what the endpoint offers, who calls (with the HTTP
/// request's attribution), and the backend tool it names, if it names one.
struct Allowed<'r> {
    offer: Offer<'r>,
    principal: Principal,
    caller: Caller,
    backend: Option<Exposed<Tool>>,
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
    /// The checks every `tools/call` passes before it runs, whichever path carries it:
    /// the endpoint offers the tool and the caller's key may call it. `Err` is the answer
    /// instead: a protocol error, or an `isError` result the model reads.
    async fn allow<'r>(
        &self,
        registry: &'r Registry,
        parts: Option<&http::request::Parts>,
        name: &str,
    ) -> Result<Allowed<'r>, Result<CallToolResponse, McpError>> {
        let session = self.session(parts, registry).map_err(Err)?;
        if let Some(session) = &session {
            session.first_connects(&self.mcp.backends).await;
        }
        let offer = self.offer(registry, session.as_deref()).map_err(Err)?;
        let backend = offer.view.tool(
            &registry.settings.mcp_tool_separator,
            &Mcp::own_names(registry),
            name,
        );
        let server = backend.as_ref().map(|e| e.backend.as_str());
        if offer.profile.is_some_and(|p| !p.allows(server, name)) {
            return Err(Err(unknown_tool(name)));
        }
        let principal = principal(parts);
        if !principal.allows_tool(name) {
            return Err(Ok(tool_error(format!(
                "key `{}` may not call tool `{name}`",
                principal.key_name()
            ))));
        }
        let caller = Caller::of(&principal, http_caller(parts));
        Ok(Allowed {
            offer,
            principal,
            caller,
            backend,
        })
    }

    /// [`Handler::call`] for the HTTP side: the JSON text of the `result` member, or of
    /// the `error` object.
    pub async fn call_json(
        &self,
        parts: &http::request::Parts,
        request: PlainRequest,
    ) -> Result<Vec<u8>, Vec<u8>> {
        match self.call(Some(parts), request.0).await {
            Ok(answer) => Ok(answer.into_json()),
            Err(error) => Err(serde_json::to_vec(&error).unwrap_or_default()),
        }
    }

    /// How often a call that asked for progress hears of it.
    pub fn progress_interval(&self) -> std::time::Duration {
        self.mcp.hub.snapshot().settings.mcp_progress_interval
    }

    /// A `tools/call` on any transport: the checks, the limits and the tool's answer.
    /// Progress and cancellation are the transport's (rmcp's session, or the HTTP short
    /// way).
    async fn call(
        &self,
        parts: Option<&http::request::Parts>,
        request: CallToolRequestParams,
    ) -> Result<Answer, McpError> {
        let registry = self.mcp.hub.snapshot();
        let name = request.name.as_ref();
        let Allowed {
            offer,
            principal,
            mut caller,
            backend,
        } = match self.allow(&registry, parts, name).await {
            Ok(allowed) => allowed,
            Err(answer) => return answer.map(Answer::Typed),
        };
        let hub = &self.mcp.hub;
        if let Some(exposed) = backend {
            // The key's own limits hold every call that does work (not the cheap built-ins).
            if let Err(refusal) = hub.admit(&registry, &principal, &mut caller, || 0.0).await {
                return Ok(Answer::Typed(refused(&refusal)));
            }
            let result = call_backend(&hub.http, &offer.view, &exposed, request.arguments).await;
            drop(caller);
            return Ok(Answer::Json {
                backend: exposed.backend,
                result,
            });
        }
        self.call_own(&registry, offer, principal, caller, request)
            .await
            .map(Answer::Typed)
    }

    /// `tools/call` of one of llmhub's own tools, once allowed.
    async fn call_own(
        &self,
        registry: &Registry,
        offer: Offer<'_>,
        principal: Principal,
        caller: Caller,
        request: CallToolRequestParams,
    ) -> Result<CallToolResponse, McpError> {
        let hub = &self.mcp.hub;
        let name = request.name.as_ref();
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        if !offer.own {
            return Err(unknown_tool(name));
        }
        if let Some(response) = builtin::call(hub, registry, &principal, name, &args) {
            return Ok(response);
        }
        if name == "get_usage" {
            return Ok(get_usage(hub, &principal, &args).await);
        }
        if name == "count_tokens" {
            return Ok(match tools::count_request(&args) {
                Err(issue) => tool_failure(ToolError::InvalidArguments(vec![issue])),
                Ok((request, text)) => {
                    match crate::route::count_tokens(
                        &self.mcp.hub,
                        registry,
                        &request,
                        text.as_deref(),
                    )
                    .await
                    {
                        Ok(counted) => {
                            let value = serde_json::to_value(&counted).unwrap_or_default();
                            let mut result = CallToolResult::success(vec![ContentBlock::text(
                                value.to_string(),
                            )]);
                            result.structured_content = Some(value);
                            result.into()
                        }
                        Err(e) => tool_error(e.to_string()),
                    }
                }
            });
        }
        let mut args = args;
        // Over streamable HTTP the session's headers attribute too; arguments win, but a
        // key's project is the key's.
        let mut call = tools::Call {
            caller: Caller::of(&principal, tools::caller_from_args(&mut args, caller)),
            surface: if name == "chat_completion" {
                "mcp_chat"
            } else {
                "mcp_tool"
            },
        };
        let tool = registry.tools.get(name).cloned();
        if name == "chat_completion" {
            let model = args
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| registry.settings.default_model.clone())
                .unwrap_or_default();
            if !principal.allows_model(registry, &model) {
                return Ok(tool_error(format!(
                    "key `{}` may not use model `{model}`",
                    principal.key_name()
                )));
            }
        }
        if name == "chat_completion" || tool.is_some() {
            let estimate = || tools::estimate(registry, tool.as_deref(), &args);
            if let Err(refusal) = hub
                .admit(registry, &principal, &mut call.caller, estimate)
                .await
            {
                return Ok(refused(&refusal));
            }
        }
        if name == "chat_completion" {
            let run = tools::chat_completion(&self.mcp.hub, registry, &args, &call);
            return Ok(match run.await {
                Ok(out) => tool_success(out, false),
                Err(e) => tool_failure(e),
            });
        }
        let Some(tool) = tool else {
            return Err(unknown_tool(name));
        };
        if let Err(why) = tool.availability(registry) {
            return Ok(tool_error(format!("tool `{name}` is not available: {why}")));
        }
        let run = tools::run(&self.mcp.hub, registry, &tool, &args, &call);
        Ok(match run.await {
            Ok(out) => tool_success(out, tool.output_schema.is_some()),
            Err(e) => tool_failure(e),
        })
    }

    /// The session a `/mcp/s/<id>` request belongs to (opening its connections if they
    /// were idle); `None` on the other endpoints.
    fn session(
        &self,
        parts: Option<&http::request::Parts>,
        registry: &Registry,
    ) -> Result<Option<Arc<Session>>, McpError> {
        if !matches!(self.scope, Scope::Session) {
            return Ok(None);
        }
        let session = parts
            .and_then(|p| p.extensions.get::<Arc<Session>>())
            .cloned()
            .ok_or_else(|| McpError::internal_error("no MCP session on this request", None))?;
        self.mcp.enter(&session, registry);
        Ok(Some(session))
    }

    /// What this handler's endpoint offers, from the current snapshot; `Err` if its
    /// profile was removed.
    fn offer<'r>(
        &self,
        registry: &'r Registry,
        session: Option<&Session>,
    ) -> Result<Offer<'r>, McpError> {
        Ok(match (&self.scope, session) {
            (Scope::Session, Some(session)) => Offer {
                view: session.view(&self.mcp.backends),
                own: session.builtin(),
                profile: None,
            },
            (Scope::Profile(name), _) => Offer {
                view: self.mcp.backends.view(),
                own: true,
                profile: Some(registry.profiles.get(name).ok_or_else(|| {
                    McpError::invalid_params(
                        format!("profile `{name}` is no longer configured"),
                        None,
                    )
                })?),
            },
            _ => self.mcp.everything(),
        })
    }

    /// Waits for first connection attempts, so a new client's first list is complete.
    async fn first_connects(&self, session: Option<&Session>) {
        match session {
            Some(session) => session.first_connects(&self.mcp.backends).await,
            None => self.mcp.backends.first_connects().await,
        }
    }

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
                    .with_message(progress_message(started));
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
        let registry = self.mcp.hub.snapshot();
        let mut peers = match self.session(parts(&context.extensions), &registry) {
            Ok(Some(session)) => {
                let mut peers = lock(&session.peers);
                peers.retain(|p| !p.is_transport_closed());
                peers.push(context.peer.clone());
                return;
            }
            _ => self.mcp.peers(),
        };
        peers.retain(|p| !p.is_transport_closed());
        peers.push(context.peer.clone());
    }

    /// Methods rmcp does not route here are either unknown, or known ones whose params
    /// did not parse; say which, naming the method.
    async fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CustomResult, McpError> {
        Err(unsupported_method(&request.method))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let registry = self.mcp.hub.snapshot();
        let session = self.session(parts(&context.extensions), &registry)?;
        self.first_connects(session.as_deref()).await;
        let offer = self.offer(&registry, session.as_deref())?;
        Ok(ListToolsResult::with_all_items(self.mcp.tools(
            &registry,
            &offer,
            &principal(parts(&context.extensions)),
        )))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let parts = parts(&context.extensions);
        let answer = self
            .with_progress(&context, self.call(parts, request))
            .await??;
        Ok(answer.into_response())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let registry = self.mcp.hub.snapshot();
        let session = self.session(parts(&context.extensions), &registry)?;
        let offer = self.offer(&registry, session.as_deref())?;
        let principal = principal(parts(&context.extensions));
        let mut prompts = self.mcp.prompts(&registry, &offer);
        prompts.retain(|p| principal.allows_tool(&p.name));
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let registry = self.mcp.hub.snapshot();
        let unknown =
            || McpError::invalid_params(format!("unknown prompt `{}`", request.name), None);
        let session = self.session(parts(&context.extensions), &registry)?;
        let offer = self.offer(&registry, session.as_deref())?;
        // A key's tool globs cover the prompts of the same names.
        if !offer.allows(&registry, &request.name)
            || !principal(parts(&context.extensions)).allows_tool(&request.name)
        {
            return Err(unknown());
        }
        let (backend_prompts, _) = offer.view.prompts(
            &registry.settings.mcp_tool_separator,
            &Mcp::own_names(&registry),
        );
        if let Some(exposed) = backend_prompts.iter().find(|e| e.name == request.name) {
            return offer
                .view
                .get_prompt(exposed, request.arguments)
                .await
                .map(Into::into)
                .map_err(|e| McpError::internal_error(e, None));
        }
        let Some(tool) = registry.tools.get(&request.name).filter(|_| offer.own) else {
            return Err(unknown());
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

/// Who the HTTP request carrying this MCP message comes from; a stdio client is local,
/// so it is an admin.
/// The HTTP request an MCP message came in (none over stdio).
fn parts(extensions: &rmcp::model::Extensions) -> Option<&http::request::Parts> {
    extensions.get::<http::request::Parts>()
}

fn principal(parts: Option<&http::request::Parts>) -> Principal {
    parts.map_or(Principal::Admin, |p| {
        p.extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or(Principal::Open)
    })
}

fn http_caller(parts: Option<&http::request::Parts>) -> Caller {
    parts.map_or_else(
        || Caller::new(None, None),
        |p| Caller::from_headers(&p.headers, None),
    )
}

/// A limit's refusal as a tool result: which limit, and when to retry.
fn refused(refusal: &crate::limits::Refusal) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(refusal.message.clone())]).into()
}

/// `get_usage`: the same report as `GET /v1/usage`, as a tool result.
async fn get_usage(hub: &Hub, principal: &Principal, args: &Value) -> CallToolResponse {
    let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
    let project = match principal.usage_project(text("project_id")) {
        Ok(p) => p,
        Err(message) => return tool_error(message),
    };
    let group_by: Vec<&str> = args
        .get("group_by")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let parsed = crate::store::report_query(
        args.get("period").and_then(Value::as_str),
        Some(&group_by.join(",")),
        project,
        text("agent_id"),
        None,
    );
    let (period, query) = match parsed {
        Ok(q) => q,
        Err(message) => return tool_error(message),
    };
    let store = match hub.usage_store() {
        Ok(store) => store,
        Err(why) => return tool_error(why),
    };
    match store.usage(&query).await {
        Ok(rows) => builtin::json_result(crate::store::report_json(period, &query, &rows)),
        Err(e) => tool_error(e.to_string()),
    }
}

/// MCP methods llmhub serves: a request for one of them that rmcp could not parse
/// has bad params, not an unknown method.
const SERVED_METHODS: [&str; 9] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "server/discover",
    "subscriptions/listen",
    "logging/setLevel",
];

fn unsupported_method(method: &str) -> McpError {
    if SERVED_METHODS.contains(&method) {
        McpError::invalid_params(format!("`{method}`: missing or malformed `params`"), None)
    } else {
        McpError::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            format!("method `{method}` is not supported by llmhub"),
            None,
        )
    }
}

/// MCP over stdio until the client closes it; logs go to stderr.
pub async fn serve_stdio(hub: Arc<Hub>, profile: Option<String>) -> anyhow::Result<()> {
    if let Some(name) = &profile
        && !hub.snapshot().profiles.contains_key(name)
    {
        let known: Vec<String> = hub.snapshot().profiles.keys().cloned().collect();
        anyhow::bail!(
            "no profile `{name}` in [profiles]; profiles: {}",
            known.join(", ")
        );
    }
    hub.start_ledger(std::time::Duration::from_secs(5)).await;
    let mcp = Mcp::start(hub.clone());
    let (stdio, transport) = stdio::Stdio::start(tokio::io::stdin(), tokio::io::stdout());
    let served = match mcp.handler(profile).serve(transport).await {
        Ok(service) => service
            .waiting()
            .await
            .map(drop)
            .map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    mcp.backends.stop();
    stdio.finish().await;
    hub.flush_ledger().await;
    served
}

/// One streamable HTTP endpoint and its sessions, so the HTTP side can tell a live
/// session from a made-up id.
pub struct HttpEndpoint {
    pub service: HttpService,
    pub sessions: LiveSessions,
    /// The service's handler, for calls the HTTP side answers itself.
    pub handler: Handler,
    /// `Host` values the service accepts.
    pub allowed_hosts: Vec<String>,
}

/// rmcp's streamable HTTP service, shared. As a route's `tower` service it was cloned for
/// every request by axum and again by its own `call`, each clone copying the config's
/// host and origin lists (nearly a third of an MCP call's instructions); `handle` needs
/// only `&self`.
#[derive(Clone)]
pub struct HttpService(Arc<StreamableHttpService<Handler, LocalSessionManager>>);

impl HttpService {
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
    ) -> http::Response<http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Error: std::fmt::Display,
    {
        self.0.handle(request).await
    }
}

#[derive(Clone)]
pub struct LiveSessions(Arc<LocalSessionManager>);

impl LiveSessions {
    pub async fn exists(&self, id: &str) -> bool {
        use rmcp::transport::streamable_http_server::SessionManager;
        self.0
            .has_session(&id.to_string().into())
            .await
            .unwrap_or(false)
    }
}

/// The streamable HTTP service mounted at `[mcp] http_path` (or a profile's path):
/// loopback hosts and origins are allowed, plus those configured.
pub fn http_service(mcp: Arc<Mcp>, profile: Option<String>, ct: CancellationToken) -> HttpEndpoint {
    let handler = mcp.handler(profile);
    service_of(&mcp, handler, ct)
}

/// The service behind every `/mcp/s/<id>`: the HTTP side resolves the id and puts the
/// session in the request.
pub fn session_http_service(mcp: Arc<Mcp>, ct: CancellationToken) -> HttpEndpoint {
    let handler = mcp.session_handler();
    service_of(&mcp, handler, ct)
}

fn service_of(mcp: &Mcp, handler: Handler, ct: CancellationToken) -> HttpEndpoint {
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
        .with_allowed_hosts(hosts.clone())
        .with_allowed_origins(origins)
        .with_cancellation_token(ct);
    let sessions = Arc::new(LocalSessionManager::default());
    let factory = handler.clone();
    HttpEndpoint {
        service: HttpService(Arc::new(StreamableHttpService::new(
            move || Ok(factory.clone()),
            sessions.clone(),
            config,
        ))),
        sessions: LiveSessions(sessions),
        handler,
        allowed_hosts: hosts,
    }
}
