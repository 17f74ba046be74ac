//! Backend MCP servers (servers.d): one supervisor task per backend connects to it as an
//! MCP client (child process or streamable HTTP), keeps its tool and prompt lists,
//! reconnects with capped exponential backoff, and routes calls back by original name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    GetPromptRequestParams, GetPromptResult, Implementation, Prompt, ProtocolVersion, Tool,
};
use rmcp::service::NotificationContext;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse,
};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceExt};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::hub::BackendHealth;
use crate::registry::{Backend, Status, backends::Transport};
use crate::upstream;

/// First wait before reconnecting; doubles (with jitter) per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .without_max_times()
        .with_jitter()
        .build()
}

/// A backend tool or prompt as clients see it.
#[derive(Debug, Clone)]
pub struct Exposed<T> {
    pub name: String,
    pub backend: String,
    pub original: String,
    pub item: T,
}

/// Where a backend stands, as `/health` and `health_check` show it.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Inactive(String),
    Connecting,
    Connected,
    Down(String),
}

struct Live {
    phase: Phase,
    peer: Option<Peer<RoleClient>>,
    /// How calls reach a connected streamable HTTP backend without `peer`.
    route: Option<Arc<Route>>,
    tools: Vec<Tool>,
    prompts: Vec<Prompt>,
    connects: u32,
}

pub(super) struct State {
    spec: Mutex<Backend>,
    live: Mutex<Live>,
    cancel: CancellationToken,
    /// Shared by every backend: woken whenever one's phase changes.
    phases: Arc<Notify>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every backend's state, outside the snapshot: a reload only reconnects what changed.
pub struct Backends {
    states: Mutex<BTreeMap<String, Arc<State>>>,
    /// Wakes the MCP side to recompute and announce the lists.
    pub changed: Arc<Notify>,
    phases: Arc<Notify>,
}

impl Default for Backends {
    fn default() -> Self {
        Self {
            states: Mutex::new(BTreeMap::new()),
            changed: Arc::new(Notify::new()),
            phases: Arc::new(Notify::new()),
        }
    }
}

impl Backends {
    /// Connects new backends, reconnects changed ones, stops removed ones; the others'
    /// sessions are untouched (their filters and timeout update in place).
    pub fn sync(&self, specs: &BTreeMap<String, Backend>) {
        let mut states = lock(&self.states);
        let wanted: BTreeSet<&String> = specs.keys().collect();
        states.retain(|name, state| {
            let keep = wanted.contains(name);
            if !keep {
                tracing::info!(backend = %name, "backend removed; disconnecting");
                state.cancel.cancel();
            }
            keep
        });
        for spec in specs.values() {
            if let Some(state) = states.get(&spec.name) {
                let same = {
                    let old = lock(&state.spec);
                    old.fingerprint == spec.fingerprint && old.status == spec.status
                };
                if same {
                    *lock(&state.spec) = spec.clone();
                    continue;
                }
                tracing::info!(backend = %spec.name, "backend changed; reconnecting");
                state.cancel.cancel();
            }
            let phase = match &spec.status {
                Status::Active => Phase::Connecting,
                Status::Inactive(why) => Phase::Inactive(why.clone()),
            };
            let state = Arc::new(State {
                spec: Mutex::new(spec.clone()),
                live: Mutex::new(Live {
                    phase,
                    peer: None,
                    route: None,
                    tools: Vec::new(),
                    prompts: Vec::new(),
                    connects: 0,
                }),
                cancel: CancellationToken::new(),
                phases: self.phases.clone(),
            });
            if spec.status == Status::Active {
                tokio::spawn(supervise(state.clone(), self.changed.clone()));
            }
            states.insert(spec.name.clone(), state);
        }
        self.changed.notify_one();
    }

    /// Waits until no backend is still on its first connection attempt, for at most the
    /// longest `timeout_s` among those: a one-shot client's first `tools/list` then
    /// sees the backends that are up, not an empty list that fills a moment later.
    pub async fn first_connects(&self) {
        let pending = |states: &[(String, Arc<State>)]| -> Option<Duration> {
            states
                .iter()
                .filter(|(_, s)| lock(&s.live).phase == Phase::Connecting)
                .map(|(_, s)| lock(&s.spec).timeout)
                .max()
        };
        let Some(limit) = pending(&self.snapshot()) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let woken = self.phases.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if pending(&self.snapshot()).is_none() {
                return;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return;
            }
        }
    }

    fn snapshot(&self) -> Vec<(String, Arc<State>)> {
        lock(&self.states)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every backend, as the main endpoint and profiles offer them.
    pub fn view(&self) -> View {
        View(self.snapshot())
    }

    /// One backend's connection, for a session that shares the process's.
    pub(super) fn state(&self, name: &str) -> Option<(String, Arc<State>)> {
        lock(&self.states)
            .get(name)
            .map(|s| (name.to_string(), s.clone()))
    }

    pub fn tools(
        &self,
        separator: &str,
        taken: &dyn Fn(&str) -> bool,
    ) -> (Vec<Exposed<Tool>>, Vec<String>) {
        self.view().tools(separator, taken)
    }

    pub fn health(
        &self,
        separator: &str,
        taken: &dyn Fn(&str) -> bool,
    ) -> BTreeMap<String, BackendHealth> {
        self.view().health(separator, taken)
    }

    /// Stops every backend (on shutdown).
    pub fn stop(&self) {
        for (_, state) in self.snapshot() {
            state.cancel.cancel();
        }
    }
}

/// The backends one endpoint offers, in a fixed order: all of a process's, or a
/// session's pick (its own connections for the servers it brought credentials for,
/// the process's for the others).
pub struct View(Vec<(String, Arc<State>)>);

impl View {
    pub(super) fn of(states: Vec<(String, Arc<State>)>) -> View {
        View(states)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    /// The backend tools to offer, named `<prefix><separator><tool>`, and the reasons
    /// for any left out (a name outside `^[a-zA-Z0-9_-]{1,64}$`, or a collision).
    pub fn tools(
        &self,
        separator: &str,
        taken: &dyn Fn(&str) -> bool,
    ) -> (Vec<Exposed<Tool>>, Vec<String>) {
        self.expose(separator, taken, |live| {
            live.tools
                .iter()
                .map(|t| (t.name.to_string(), t.clone()))
                .collect()
        })
    }

    /// The backend tool offered as `name`, if one is: the same rules as [`View::tools`],
    /// without copying every tool's definition (a call looks one up each time).
    pub fn tool(
        &self,
        separator: &str,
        taken: &dyn Fn(&str) -> bool,
        name: &str,
    ) -> Option<Exposed<Tool>> {
        // What `tools` would offer under `name`, without exposing every tool to find one:
        // backends in the same order, so the first to offer a name keeps it.
        if taken(name) || !crate::registry::is_name(name, 64) {
            return None;
        }
        for (backend, state) in &self.0 {
            // Lock order: spec, then live.
            let spec = lock(&state.spec);
            let Some(original) = name
                .strip_prefix(spec.prefix.as_str())
                .and_then(|rest| rest.strip_prefix(separator))
            else {
                continue;
            };
            let live = lock(&state.live);
            if live.phase != Phase::Connected || !spec.wants(original) {
                continue;
            }
            if let Some(item) = live.tools.iter().find(|t| t.name == original) {
                return Some(Exposed {
                    name: name.to_string(),
                    backend: backend.clone(),
                    original: original.to_string(),
                    item: item.clone(),
                });
            }
        }
        None
    }

    pub fn prompts(
        &self,
        separator: &str,
        taken: &dyn Fn(&str) -> bool,
    ) -> (Vec<Exposed<Prompt>>, Vec<String>) {
        self.expose(separator, taken, |live| {
            live.prompts
                .iter()
                .map(|p| (p.name.clone(), p.clone()))
                .collect()
        })
    }

    fn expose<T: Clone>(
        &self,
        separator: &str,
        taken: &dyn Fn(&str) -> bool,
        items: impl Fn(&Live) -> Vec<(String, T)>,
    ) -> (Vec<Exposed<T>>, Vec<String>) {
        let mut out: Vec<Exposed<T>> = Vec::new();
        let mut problems = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (name, state) in &self.0 {
            // Lock order: spec, then live.
            let spec = lock(&state.spec);
            let live = lock(&state.live);
            if live.phase != Phase::Connected {
                continue;
            }
            for (original, item) in items(&live) {
                if !spec.wants(&original) {
                    continue;
                }
                let exposed = format!("{}{separator}{original}", spec.prefix);
                if !crate::registry::is_name(&exposed, 64) {
                    problems.push(format!(
                        "{name}: `{original}` left out: `{exposed}` is not 1 to 64 of a-z, A-Z, 0-9, '_' and '-'"
                    ));
                    continue;
                }
                if taken(&exposed) {
                    problems.push(format!("{name}: `{original}` left out: `{exposed}` is the name of one of llmhub's own tools"));
                    continue;
                }
                if let Some(first) = seen.get(&exposed) {
                    problems.push(format!("{name}: `{original}` left out: `{exposed}` is already offered by backend {first}"));
                    continue;
                }
                seen.insert(exposed.clone(), name.clone());
                out.push(Exposed {
                    name: exposed,
                    backend: name.clone(),
                    original,
                    item,
                });
            }
        }
        (out, problems)
    }

    fn peer(&self, backend: &str) -> Result<(Peer<RoleClient>, Duration), String> {
        let state = self
            .0
            .iter()
            .find(|(n, _)| n == backend)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| format!("backend {backend} is not configured"))?;
        let timeout = lock(&state.spec).timeout;
        let live = lock(&state.live);
        match (&live.peer, &live.phase) {
            (Some(peer), Phase::Connected) => Ok((peer.clone(), timeout)),
            (_, Phase::Down(why) | Phase::Inactive(why)) => {
                Err(format!("backend {backend} is not connected: {why}"))
            }
            _ => Err(format!("backend {backend} is still connecting")),
        }
    }

    /// Calls a backend tool by its original name; the result comes back unchanged.
    /// Failures the calling model should see (down, timeout) are `isError` results.
    pub async fn call_tool(
        &self,
        exposed: &Exposed<Tool>,
        arguments: Option<serde_json::Map<String, Value>>,
    ) -> CallToolResult {
        let error = |m: String| CallToolResult::error(vec![ContentBlock::text(m)]);
        let (peer, timeout) = match self.peer(&exposed.backend) {
            Ok(p) => p,
            Err(why) => return error(why),
        };
        let mut params = CallToolRequestParams::new(exposed.original.clone());
        params.arguments = arguments;
        match tokio::time::timeout(timeout, peer.call_tool(params)).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => error(format!("backend {} failed the call: {e}", exposed.backend)),
            Err(_) => error(format!(
                "backend {} did not answer `{}` within {}s (timeout_s)",
                exposed.backend,
                exposed.original,
                timeout.as_secs_f64()
            )),
        }
    }

    /// Calls a backend tool the way [`View::call_tool`] does, but sends the `tools/call`
    /// itself on the session rmcp's client opened, over the providers' HTTP client: no
    /// hand-off to the client's task and back, and a pooled connection (rmcp's client
    /// opens one per message). Ok is the `result` member's JSON text (a failure the model
    /// should see is an `isError` result, as with `call_tool`); `NotSent` when the call
    /// is rmcp's client's to make: a stdio backend, no session noted yet, or a POST the
    /// backend refused before acting on it (a 4xx, such as an expired session, which
    /// rmcp's client then re-opens). A call the backend may have acted on never falls
    /// back: a tool is not run twice.
    pub async fn call_direct(
        &self,
        http: &upstream::Client,
        exposed: &Exposed<Tool>,
        arguments: Option<&serde_json::Map<String, Value>>,
    ) -> Result<Vec<u8>, NotSent> {
        let state = self
            .0
            .iter()
            .find(|(n, _)| *n == exposed.backend)
            .map(|(_, s)| s)
            .ok_or(NotSent)?;
        let route = {
            let live = lock(&state.live);
            match (&live.phase, &live.route) {
                (Phase::Connected, Some(route)) => route.clone(),
                _ => return Err(NotSent),
            }
        };
        let (session, version) = lock(&route.session).clone().ok_or(NotSent)?;
        let (timeout, auth) = {
            let spec = lock(&state.spec);
            (spec.timeout, spec.auth.clone())
        };
        let on = OnSession {
            url: &route.url,
            session,
            version,
            auth,
        };
        let id = format!("llmhub-{}", CALLS.fetch_add(1, Ordering::Relaxed));
        let body = serde_json::to_vec(&DirectCall {
            jsonrpc: "2.0",
            id: &id,
            method: "tools/call",
            params: DirectParams {
                name: &exposed.original,
                arguments,
            },
        })
        .map_err(|_| NotSent)?;
        let request = on.post(http, body);
        let backend = exposed.backend.as_str();
        let exchange = async {
            let response = request.send().await.map_err(Failed::because)?;
            let status = response.status();
            if status.is_client_error() {
                return Err(Failed::Unseen);
            }
            if !status.is_success() {
                return Err(Failed::Because(format!("HTTP {status}")));
            }
            let is_json = response
                .headers()
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            let want = serde_json::to_string(&id).unwrap_or_default();
            if is_json {
                let bytes = response.bytes().await.map_err(Failed::because)?;
                return serde_json::from_slice::<Message<'_>>(&bytes)
                    .ok()
                    .and_then(|m| m.answer(&want))
                    .unwrap_or_else(|| {
                        Err(Failed::because(
                            "the answer is not the call's JSON-RPC response",
                        ))
                    });
            }
            let mut events = crate::adapters::sse::Events::new(response.bytes_stream());
            while let Some(event) = events.next().await {
                let event = event.map_err(Failed::because)?;
                let text = event.text();
                let Ok(message) = serde_json::from_str::<Message<'_>>(&text) else {
                    continue;
                };
                if let Some(out) = message.answer(&want) {
                    finish(events);
                    return out;
                }
                reply_to_backend(http, &on, message).await;
            }
            Err(Failed::because("the answer stream ended before the result"))
        };
        let failed = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(result)) => return Ok(result),
            Ok(Err(Failed::Unseen)) => return Err(NotSent),
            Ok(Err(Failed::Because(why))) => format!("backend {backend} failed the call: {why}"),
            Err(_) => format!(
                "backend {backend} did not answer `{}` within {}s (timeout_s)",
                exposed.original,
                timeout.as_secs_f64()
            ),
        };
        Ok(
            serde_json::to_vec(&CallToolResult::error(vec![ContentBlock::text(failed)]))
                .unwrap_or_default(),
        )
    }

    pub async fn get_prompt(
        &self,
        exposed: &Exposed<Prompt>,
        arguments: Option<serde_json::Map<String, Value>>,
    ) -> Result<GetPromptResult, String> {
        let (peer, timeout) = self.peer(&exposed.backend)?;
        let mut params = GetPromptRequestParams::new(exposed.original.clone());
        params.arguments = arguments;
        match tokio::time::timeout(timeout, peer.get_prompt(params)).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(format!("backend {}: {e}", exposed.backend)),
            Err(_) => Err(format!(
                "backend {} did not answer within {}s",
                exposed.backend,
                timeout.as_secs_f64()
            )),
        }
    }

    /// Each backend's state for `/health` and a session's status.
    pub fn health(
        &self,
        separator: &str,
        taken: &dyn Fn(&str) -> bool,
    ) -> BTreeMap<String, BackendHealth> {
        let (_, problems) = self.tools(separator, taken);
        let mut out = BTreeMap::new();
        for (name, state) in &self.0 {
            let spec = lock(&state.spec).clone();
            let live = lock(&state.live);
            let (status, reason) = match &live.phase {
                Phase::Inactive(why) => ("inactive", Some(why.clone())),
                Phase::Connecting => ("connecting", None),
                Phase::Connected => ("connected", None),
                Phase::Down(why) => ("down", Some(why.clone())),
            };
            let left_out = problems
                .iter()
                .filter(|p| p.starts_with(&format!("{name}: ")))
                .cloned()
                .collect();
            let view = BackendHealth {
                status: status.to_string(),
                reason,
                transport: match spec.transport {
                    Transport::Http { .. } => "http",
                    Transport::Stdio { .. } => "stdio",
                }
                .to_string(),
                prefix: spec.prefix.clone(),
                tools: live.tools.iter().filter(|t| spec.wants(&t.name)).count(),
                prompts: live.prompts.len(),
                connects: u64::from(live.connects),
                left_out,
            };
            out.insert(name.clone(), view);
        }
        out
    }
}

/// A call [`View::call_direct`] leaves to rmcp's client.
#[derive(Debug)]
pub struct NotSent;

/// Why a direct call failed.
enum Failed {
    /// The backend refused the request before acting on it (a 4xx).
    Unseen,
    Because(String),
}

impl Failed {
    fn because(why: impl std::fmt::Display) -> Failed {
        Failed::Because(why.to_string())
    }
}

/// Ids of direct calls: strings, so they never meet the numbers rmcp's client uses on
/// the same session.
static CALLS: AtomicU64 = AtomicU64::new(0);

#[derive(serde::Serialize)]
struct DirectCall<'a> {
    jsonrpc: &'static str,
    id: &'a str,
    method: &'static str,
    params: DirectParams<'a>,
}

#[derive(serde::Serialize)]
struct DirectParams<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a serde_json::Map<String, Value>>,
}

/// A message from the backend, as far as a direct call reads it.
#[derive(serde::Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    method: Option<String>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    error: Option<rmcp::ErrorData>,
}

impl Message<'_> {
    /// The call's outcome if this is its response (`want` is its id as JSON): the result
    /// object's text, or the backend's JSON-RPC error as the model sees it from rmcp.
    fn answer(&self, want: &str) -> Option<Result<Vec<u8>, Failed>> {
        if self.method.is_some() || self.id.map(RawValue::get) != Some(want) {
            return None;
        }
        Some(match (self.result, &self.error) {
            (Some(result), _) if result.get().starts_with('{') => {
                Ok(result.get().as_bytes().to_vec())
            }
            (_, Some(error)) => Err(Failed::because(rmcp::ServiceError::McpError(error.clone()))),
            _ => Err(Failed::because("the answer holds no tool result")),
        })
    }
}

/// Reads what is left of a call's stream (its end follows the answer), so its connection
/// goes back to the pool instead of closing: at once if it has arrived, else in the
/// background for up to [`DRAIN_LIMIT`].
fn finish<S>(mut events: crate::adapters::sse::Events<S>)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, upstream::Error>> + Unpin + Send + 'static,
{
    use futures_util::FutureExt;
    loop {
        match events.next().now_or_never() {
            Some(Some(_)) => continue,
            Some(None) => return,
            None => break,
        }
    }
    tokio::spawn(async move {
        let drain = async { while events.next().await.is_some() {} };
        let _ = tokio::time::timeout(DRAIN_LIMIT, drain).await;
    });
}

/// A backend that keeps a call's stream open after the answer loses the connection then.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// A request the backend sends on a direct call's stream gets an answer, as rmcp's client
/// would give it: llmhub declares no client capabilities, so only `ping` is served.
async fn reply_to_backend(http: &upstream::Client, on: &OnSession<'_>, message: Message<'_>) {
    let (Some(id), Some(method)) = (message.id, message.method) else {
        return;
    };
    let reply = if method == "ping" {
        json!({"jsonrpc": "2.0", "id": id, "result": {}})
    } else {
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("llmhub does not serve `{method}`")}})
    };
    if let Ok(response) = on.post(http, reply.to_string().into_bytes()).send().await {
        let _ = response.bytes().await;
    }
}

/// A backend's session as direct messages go on it.
struct OnSession<'a> {
    url: &'a upstream::Url,
    session: Arc<str>,
    version: Option<HeaderValue>,
    auth: Option<(HeaderName, crate::registry::Secret)>,
}

impl OnSession<'_> {
    fn post(&self, http: &upstream::Client, body: Vec<u8>) -> upstream::Request {
        let mut request = http
            .post_json_text(self.url, body.into())
            .header(ACCEPT, "application/json, text/event-stream")
            .header("mcp-session-id", &*self.session);
        if let Some(version) = &self.version {
            request = request.header("mcp-protocol-version", version.clone());
        }
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.expose());
        }
        request
    }
}

/// Where a streamable HTTP backend is, and the session rmcp's client has open there as it
/// last sent it (re-opened sessions replace it).
pub(super) struct Route {
    url: upstream::Url,
    session: Mutex<Option<(Arc<str>, Option<HeaderValue>)>>,
}

/// rmcp's HTTP client for a backend, noting the session id and protocol version each
/// message goes with, for [`View::call_direct`].
#[derive(Clone)]
struct Noting {
    inner: reqwest::Client,
    route: Arc<Route>,
}

impl Noting {
    fn new(route: Arc<Route>) -> Result<Noting, String> {
        // As rmcp's own client: no idle pooling (its SSE bodies are not always read to
        // their end), redirects only within the origin.
        let inner = crate::upstream::client_builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if attempt.previous().len() > 10 || !same {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Noting { inner, route })
    }

    fn note(&self, session: Option<&Arc<str>>, headers: &HashMap<HeaderName, HeaderValue>) {
        let Some(session) = session else {
            return;
        };
        // By `HeaderName`: a `&str` key hashes differently and is never found.
        let version = headers.get(&HeaderName::from_static("mcp-protocol-version"));
        let mut noted = lock(&self.route.session);
        if noted
            .as_ref()
            .is_none_or(|(s, v)| s != session || v.as_ref() != version)
        {
            *noted = Some((session.clone(), version.cloned()));
        }
    }
}

impl StreamableHttpClient for Noting {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: rmcp::model::ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>> {
        self.note(session_id.as_ref(), &custom_headers);
        self.inner
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: rmcp::model::ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>> {
        self.note(session_id.as_ref(), &custom_headers);
        self.inner
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<reqwest::Error>> {
        *lock(&self.route.session) = None;
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<
        rmcp::transport::common::client_side_sse::BoxedSseResponse,
        StreamableHttpError<reqwest::Error>,
    > {
        self.inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<
        rmcp::transport::common::client_side_sse::BoxedSseResponse,
        StreamableHttpError<reqwest::Error>,
    > {
        self.inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}

/// The client side llmhub shows a backend: it hears the backend's list changes.
#[derive(Clone)]
struct BackendClient {
    lists_changed: Arc<Notify>,
}

impl ClientHandler for BackendClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("llmhub", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.lists_changed.notify_one();
    }

    async fn on_prompt_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.lists_changed.notify_one();
    }
}

type Session = rmcp::service::RunningService<RoleClient, BackendClient>;

async fn connect(
    spec: &Backend,
    client: BackendClient,
) -> Result<(Session, Option<Arc<Route>>), String> {
    let connecting = async {
        match &spec.transport {
            Transport::Http { url } => {
                let route = Arc::new(Route {
                    url: upstream::Url::parse(url)
                        .map_err(|e| format!("`url` is not a URL: {e}"))?,
                    session: Mutex::new(None),
                });
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.clone());
                if let Some((name, value)) = &spec.auth {
                    if name == reqwest::header::AUTHORIZATION {
                        let token = value
                            .expose()
                            .strip_prefix("Bearer ")
                            .unwrap_or(value.expose());
                        config = config.auth_header(token.to_string());
                    } else if let Ok(v) = reqwest::header::HeaderValue::from_str(value.expose()) {
                        config = config.custom_headers([(name.clone(), v)].into_iter().collect());
                    }
                }
                let http = Noting::new(route.clone())?;
                let session = client
                    .serve(StreamableHttpClientTransport::with_client(http, config))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((session, Some(route)))
            }
            Transport::Stdio { command, args, env } => {
                let cmd = tokio::process::Command::new(command).configure(|c| {
                    c.args(args).envs(env).kill_on_drop(true);
                });
                let transport = TokioChildProcess::new(cmd)
                    .map_err(|e| format!("cannot start `{command}`: {e}"))?;
                let session = client.serve(transport).await.map_err(|e| e.to_string())?;
                Ok((session, None))
            }
        }
    };
    tokio::time::timeout(spec.timeout, connecting)
        .await
        .map_err(|_| format!("no MCP handshake within {}s", spec.timeout.as_secs_f64()))?
}

/// Reads a connected backend's tools and (if it has them) prompts.
async fn refresh(state: &State, peer: &Peer<RoleClient>) -> Result<(), String> {
    let tools = peer
        .list_all_tools()
        .await
        .map_err(|e| format!("tools/list failed: {e}"))?;
    let has_prompts = peer
        .peer_info()
        .is_some_and(|info| info.capabilities.prompts.is_some());
    let prompts = if has_prompts {
        peer.list_all_prompts().await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut live = lock(&state.live);
    live.tools = tools;
    live.prompts = prompts;
    Ok(())
}

fn set_phase(
    state: &State,
    phase: Phase,
    connection: Option<(Peer<RoleClient>, Option<Arc<Route>>)>,
) {
    let mut live = lock(&state.live);
    if phase != Phase::Connected {
        live.tools.clear();
        live.prompts.clear();
    }
    live.phase = phase;
    (live.peer, live.route) = match connection {
        Some((peer, route)) => (Some(peer), route),
        None => (None, None),
    };
    drop(live);
    state.phases.notify_waiters();
}

/// Keeps one backend connected until its state is cancelled.
async fn supervise(state: Arc<State>, announce: Arc<Notify>) {
    let mut delays = backoff();
    loop {
        let spec = lock(&state.spec).clone();
        let lists_changed = Arc::new(Notify::new());
        let client = BackendClient {
            lists_changed: lists_changed.clone(),
        };
        let outcome = tokio::select! {
            () = state.cancel.cancelled() => return,
            r = connect(&spec, client) => r,
        };
        let why = match outcome {
            Ok((session, route)) => {
                let peer = session.peer().clone();
                match refresh(&state, &peer).await {
                    Ok(()) => {
                        delays = backoff();
                        lock(&state.live).connects += 1;
                        set_phase(&state, Phase::Connected, Some((peer.clone(), route)));
                        tracing::info!(backend = %spec.name, tools = lock(&state.live).tools.len(), "backend connected");
                        announce.notify_one();
                        run_session(&state, session, &peer, &lists_changed, &announce).await
                    }
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        if state.cancel.is_cancelled() {
            return;
        }
        set_phase(&state, Phase::Down(why.clone()), None);
        // Also when it was never up: /health shows the reason.
        announce.notify_one();
        let backoff = delays.next().unwrap_or(MAX_BACKOFF);
        tracing::warn!(backend = %spec.name, reason = %why, retry_in_ms = backoff.as_millis() as u64, "backend unavailable");
        tokio::select! {
            () = state.cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
    }
}

/// Serves one live session until it ends; returns why it ended.
async fn run_session(
    state: &State,
    session: Session,
    peer: &Peer<RoleClient>,
    lists_changed: &Notify,
    announce: &Notify,
) -> String {
    let stop = session.cancellation_token();
    let waiting = session.waiting();
    tokio::pin!(waiting);
    loop {
        tokio::select! {
            () = state.cancel.cancelled() => {
                stop.cancel();
                let _ = waiting.await;
                return "stopped".into();
            }
            ended = &mut waiting => {
                return match ended {
                    Ok(reason) => format!("the backend closed the session ({reason:?})"),
                    Err(e) => format!("the session failed: {e}"),
                };
            }
            () = lists_changed.notified() => {
                match refresh(state, peer).await {
                    Ok(()) => {
                        tracing::info!(backend = %lock(&state.spec).name, "backend lists changed");
                        announce.notify_one();
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot refresh a backend's lists"),
                }
            }
        }
    }
}
