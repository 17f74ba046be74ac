//! The short way through `/mcp` for a plain `tools/call`: run here by `Handler::call` and
//! answered as JSON, instead of through rmcp's session worker (a hand-off between tasks,
//! often threads, each way; most of a call's time, bench/README.md "MCP aggregation").
//! Only a request rmcp would certainly accept takes it; anything else, or any doubt, goes
//! to rmcp unchanged.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header, request::Parts};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::mcp::{Handler, LiveSessions, PlainRequest};

/// rmcp ends a session after 300 s without a message from its client; a session that
/// rmcp's worker has not seen for this long sends its next call that way, so a client
/// busy only with short-way calls never loses its session.
const SEEN_WITHIN: Duration = Duration::from_secs(60);
/// Revisions whose sessions rmcp serves as this path assumes (an `initialize`, a session
/// id, no per-request version or standard headers).
const VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// The top of a JSON-RPC message, as far as routing it needs.
#[derive(Deserialize)]
struct Peek<'a> {
    jsonrpc: &'a str,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    method: Option<&'a str>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// `tools/call` params as the short way takes them: a name, arguments, and a `_meta` with
/// nothing of MCP's own but a progress token (a per-request version is rmcp's to check);
/// anything else, such as a task, is rmcp's to handle.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallParams<'a> {
    #[serde(rename = "name")]
    _name: IgnoredAny,
    #[serde(rename = "arguments")]
    _arguments: Option<IgnoredAny>,
    #[serde(rename = "_meta", borrow)]
    meta: Option<HashMap<&'a str, &'a RawValue>>,
}

#[derive(Deserialize)]
struct CancelParams<'a> {
    #[serde(rename = "requestId", borrow)]
    request_id: &'a RawValue,
}

/// A host allowed in `Host` (rmcp's rule: a name, and a port if one is given).
struct Host {
    name: String,
    port: Option<u16>,
}

fn host_name(host: &str) -> String {
    host.trim_matches(['[', ']']).to_ascii_lowercase()
}

/// Per endpoint: its handler, its allowed hosts, when rmcp last saw each session, and the
/// short-way calls in flight (by session and request id), which `notifications/cancelled`
/// stops.
pub struct Shortcut {
    handler: Handler,
    hosts: Vec<Host>,
    seen: Mutex<HashMap<String, Instant>>,
    calls: Calls,
}

type Calls = Arc<Mutex<HashMap<(String, String), CancellationToken>>>;

/// A short-way call in flight; leaves the table when it ends, however it ends.
struct Running {
    calls: Calls,
    key: (String, String),
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.calls).remove(&self.key);
    }
}

/// A `tools/call` the short way takes, read from its body.
struct PlainCall {
    session: String,
    id: Box<RawValue>,
    params: PlainRequest,
    progress: Option<Box<RawValue>>,
}

/// A call's outcome as JSON text: its `result` member, or its `error` object.
type Outcome = Result<Vec<u8>, Vec<u8>>;

type Work = Pin<Box<dyn Future<Output = Outcome> + Send>>;

fn cancelled() -> Outcome {
    Err(CANCELLED.as_bytes().to_vec())
}

/// The error a cancelled call is answered with, as rmcp answers its own.
const CANCELLED: &str = r#"{"code":-32603,"message":"the request was cancelled"}"#;

/// One JSON-RPC response's text: a `result`, or an `error` object.
fn response_text(id: &RawValue, outcome: Outcome) -> Bytes {
    let mut body = BytesMut::with_capacity(64);
    body.put_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    body.put_slice(id.get().as_bytes());
    match outcome {
        Ok(result) => {
            body.put_slice(b",\"result\":");
            body.put_slice(&result);
        }
        Err(error) => {
            body.put_slice(b",\"error\":");
            body.put_slice(&error);
        }
    }
    body.put_u8(b'}');
    body.freeze()
}

fn json_answer(id: &RawValue, outcome: Outcome) -> Response {
    super::json_response(response_text(id, outcome))
}

/// A call still running at its first progress tick: a stream of progress notifications,
/// one per interval, then the answer.
fn progress_stream(
    id: Box<RawValue>,
    progress: Option<Box<RawValue>>,
    started: Instant,
    interval: Duration,
    work: Work,
    stop: CancellationToken,
    running: Running,
) -> Response {
    let token = progress.unwrap_or_else(|| id.clone());
    let progress = move |n: u32| {
        let note = serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": &*token, "progress": n, "message": crate::mcp::progress_message(started)},
        });
        super::event(note.to_string().as_bytes())
    };
    let first = progress(1);
    let rest = futures_util::stream::unfold(
        (Some(work), 1u32, stop, running),
        move |(work, n, stop, running)| {
            let progress = progress.clone();
            let id = id.clone();
            async move {
                let mut work = work?;
                tokio::select! {
                    result = &mut work => {
                        Some((super::event(&response_text(&id, result)), (None, n, stop, running)))
                    }
                    () = stop.cancelled() => {
                        Some((super::event(&response_text(&id, cancelled())), (None, n, stop, running)))
                    }
                    () = tokio::time::sleep(interval) => {
                        Some((progress(n + 1), (Some(work), n + 1, stop, running)))
                    }
                }
            }
        },
    );
    let events = futures_util::stream::once(async move { first })
        .chain(rest)
        .map(Ok::<Bytes, std::convert::Infallible>);
    super::event_stream(Body::from_stream(events))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("mcp-session-id").and_then(|v| v.to_str().ok())
}

impl Shortcut {
    pub fn new(handler: Handler, allowed_hosts: &[String]) -> Shortcut {
        let hosts = allowed_hosts
            .iter()
            .map(|h| match axum::http::uri::Authority::try_from(h.trim()) {
                Ok(a) => Host {
                    name: host_name(a.host()),
                    port: a.port_u16(),
                },
                Err(_) => Host {
                    name: host_name(h.trim()),
                    port: None,
                },
            })
            .collect();
        Shortcut {
            handler,
            hosts,
            seen: Mutex::new(HashMap::new()),
            calls: Calls::default(),
        }
    }

    /// A request rmcp accepted on session `id`: its session's worker has seen it.
    pub fn seen(&self, id: &str) {
        let now = Instant::now();
        let mut seen = lock(&self.seen);
        if let Some(at) = seen.get_mut(id) {
            *at = now;
            return;
        }
        if seen.len() >= 4096 {
            // Ended sessions' entries; rmcp has closed anything idle this long.
            seen.retain(|_, at| now.duration_since(*at) < Duration::from_secs(600));
        }
        seen.insert(id.to_string(), now);
    }

    pub fn ended(&self, id: &str) {
        lock(&self.seen).remove(id);
    }

    /// Stops the short-way call a `notifications/cancelled` names, if one is running; the
    /// notification still goes on to rmcp, which stops its own.
    fn cancel(&self, headers: &HeaderMap, message: &Peek<'_>) {
        if message.method != Some("notifications/cancelled") {
            return;
        }
        let (Some(session), Some(params)) = (session_id(headers), message.params) else {
            return;
        };
        let Ok(params) = serde_json::from_str::<CancelParams<'_>>(params.get()) else {
            return;
        };
        let key = (session.to_string(), params.request_id.get().to_string());
        if let Some(token) = lock(&self.calls).get(&key) {
            token.cancel();
        }
    }

    /// Answers a POST that takes the short way, or gives it back to go on to rmcp.
    pub async fn take(
        &self,
        parts: Parts,
        body: Bytes,
        sessions: &LiveSessions,
    ) -> Result<Response, (Parts, Bytes)> {
        let Some(call) = self.plain_call(&parts, &body, sessions).await else {
            return Err((parts, body));
        };
        let started = Instant::now();
        let handler = self.handler.clone();
        let params = call.params;
        let work = async move { handler.call_json(&parts, params).await };
        let stop = CancellationToken::new();
        let key = (call.session, call.id.get().to_string());
        lock(&self.calls).insert(key.clone(), stop.clone());
        let running = Running {
            calls: self.calls.clone(),
            key,
        };
        let mut work: Work = Box::pin(work);
        let interval = self.handler.progress_interval();
        let first_tick = async {
            match &call.progress {
                Some(_) => tokio::time::sleep(interval).await,
                None => std::future::pending().await,
            }
        };
        // A call that ends before its first progress tick is answered as JSON; a longer
        // one as a stream of progress notifications ending in the answer.
        tokio::select! {
            outcome = &mut work => Ok(json_answer(&call.id, outcome)),
            () = stop.cancelled() => Ok(json_answer(&call.id, cancelled())),
            () = first_tick => Ok(progress_stream(
                call.id,
                call.progress,
                started,
                interval,
                work,
                stop,
                running,
            )),
        }
    }

    /// The call `body` asks for, if it is a `tools/call` the short way takes.
    async fn plain_call(
        &self,
        parts: &Parts,
        body: &[u8],
        sessions: &LiveSessions,
    ) -> Option<PlainCall> {
        let message: Peek<'_> = serde_json::from_slice(body).ok()?;
        if message.method != Some("tools/call") || message.jsonrpc != "2.0" {
            self.cancel(&parts.headers, &message);
            return None;
        }
        let id = message.id.filter(|id| id.get() != "null")?;
        let raw = message.params?.get();
        let params: CallParams<'_> = serde_json::from_str(raw).ok()?;
        let meta = params.meta.unwrap_or_default();
        if meta
            .keys()
            .any(|k| k.starts_with("io.modelcontextprotocol/"))
        {
            return None;
        }
        let session = self.plain(&parts.headers)?;
        let fresh = lock(&self.seen)
            .get(session)
            .is_some_and(|at| at.elapsed() < SEEN_WITHIN);
        if !fresh || !sessions.exists(session).await {
            return None;
        }
        Some(PlainCall {
            session: session.to_string(),
            id: id.to_owned(),
            // As rmcp reads them: params it cannot read are its error to report.
            params: PlainRequest::parse(raw)?,
            progress: meta.get("progressToken").map(|t| (*t).to_owned()),
        })
    }

    /// The session id of a request whose headers rmcp would accept as they are: a known
    /// revision, JSON in, JSON and SSE accepted, an allowed `Host` and no `Origin` (a
    /// browser's request is rmcp's to vet).
    fn plain<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        if headers.contains_key(header::ORIGIN) {
            return None;
        }
        if let Some(version) = headers.get("mcp-protocol-version") {
            let version = version.to_str().ok()?;
            if !VERSIONS.contains(&version) {
                return None;
            }
        }
        let essence = |v: &str| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        };
        if essence(text(header::CONTENT_TYPE)?) != "application/json" {
            return None;
        }
        let accepts: Vec<String> = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(essence)
            .collect();
        if !accepts.iter().any(|a| a == "application/json")
            || !accepts.iter().any(|a| a == "text/event-stream")
        {
            return None;
        }
        let host = axum::http::uri::Authority::try_from(text(header::HOST)?).ok()?;
        let (name, port) = (host_name(host.host()), host.port_u16());
        if !self
            .hosts
            .iter()
            .any(|h| h.name == name && h.port.is_none_or(|p| Some(p) == port))
        {
            return None;
        }
        session_id(headers)
    }
}
