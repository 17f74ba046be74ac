//! What the HTTP side adds around rmcp's streamable HTTP service: every error is JSON
//! (a JSON-RPC error object), malformed JSON is a `-32700` parse error, ending an
//! unknown session is a 404, an unknown profile path names the profiles that exist, and
//! a per-session endpoint's id is resolved to its session (the id is the capability).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use bytes::Bytes;
use serde_json::json;

use super::mcp_direct::{Shortcut, session_id};
use crate::hub::Hub;
use crate::mcp::sessions::SessionError;
use crate::mcp::{HttpEndpoint, HttpService, LiveSessions, Mcp};

/// JSON-RPC's codes for a body that is not JSON, and for a request the server refuses.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
/// Longest plain-text error from the transport that is carried over into JSON.
const MAX_TEXT: usize = 2048;

#[derive(Clone)]
struct Guard {
    hub: Arc<Hub>,
    sessions: LiveSessions,
    shortcut: Arc<Shortcut>,
    service: HttpService,
}

/// The endpoint behind the guard.
pub fn endpoint(hub: Arc<Hub>, endpoint: HttpEndpoint) -> MethodRouter<Arc<Hub>> {
    let guard = Guard {
        hub,
        sessions: endpoint.sessions,
        shortcut: Arc::new(Shortcut::new(endpoint.handler, &endpoint.allowed_hosts)),
        service: endpoint.service,
    };
    axum::routing::any(check).with_state(guard)
}

#[derive(Clone)]
struct SessionGate {
    hub: Arc<Hub>,
    mcp: Arc<Mcp>,
}

/// `/mcp/s/{id}`: no gateway key is asked for; the session found by its id says who
/// the requests act as.
pub fn session_endpoint(
    hub: Arc<Hub>,
    mcp: Arc<Mcp>,
    endpoint: HttpEndpoint,
) -> MethodRouter<Arc<Hub>> {
    let gate = SessionGate {
        hub: hub.clone(),
        mcp,
    };
    self::endpoint(hub, endpoint).layer(middleware::from_fn_with_state(gate, open_session))
}

async fn open_session(
    State(gate): State<SessionGate>,
    axum::extract::Path(id): axum::extract::Path<String>,
    mut request: Request,
    next: Next,
) -> Response {
    let registry = gate.hub.snapshot();
    let session = match gate.mcp.sessions.find(&gate.hub, &registry, &id).await {
        Ok(session) => session,
        Err(SessionError::Unavailable(why)) => {
            return rpc_error(StatusCode::SERVICE_UNAVAILABLE, INVALID_REQUEST, why);
        }
        Err(_) => {
            return rpc_error(
                StatusCode::NOT_FOUND,
                INVALID_REQUEST,
                "no MCP session at this endpoint: it never existed, was deleted or expired; create one with POST /v1/mcp/sessions",
            );
        }
    };
    let principal = match registry.session_principal(session.owner()) {
        Ok(p) => p,
        Err(why) => return rpc_error(StatusCode::FORBIDDEN, INVALID_REQUEST, why),
    };
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(session);
    next.run(request).await
}

fn rpc_error(status: StatusCode, code: i64, message: impl Into<String>) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message.into()},
    });
    (status, axum::Json(body)).into_response()
}

async fn check(State(guard): State<Guard>, request: Request) -> Response {
    let request = match *request.method() {
        Method::POST => {
            let (parts, bytes) = match read(&guard.hub, request).await {
                Ok(read) => read,
                Err(response) => return response,
            };
            let (parts, bytes) = match guard.shortcut.take(parts, bytes, &guard.sessions).await {
                Ok(response) => return response,
                Err(request) => request,
            };
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    PARSE_ERROR,
                    format!("Parse error: the body is not valid JSON ({e})"),
                );
            }
            Request::from_parts(parts, Body::from(bytes))
        }
        Method::DELETE => {
            let id = request
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let Some(id) = id
                && !guard.sessions.exists(&id).await
            {
                return rpc_error(
                    StatusCode::NOT_FOUND,
                    INVALID_REQUEST,
                    format!(
                        "no MCP session `{}`: it never existed, has ended or expired",
                        crate::mcp::sessions::label(&id)
                    ),
                );
            }
            request
        }
        _ => request,
    };
    let deleting = request.method() == Method::DELETE;
    let session = session_id(request.headers()).map(str::to_string);
    let response = guard.service.handle(request).await.into_response();
    // Only sessions rmcp accepted are noted: made-up ids must not fill the table.
    if let Some(id) = session
        .as_deref()
        .or_else(|| session_id(response.headers()))
        && response.status().is_success()
    {
        if deleting {
            guard.shortcut.ended(id);
        } else {
            guard.shortcut.seen(id);
        }
    }
    if deleting && response.status() == StatusCode::ACCEPTED {
        return StatusCode::NO_CONTENT.into_response();
    }
    as_json(response).await
}

/// The POST body, within the configured limit. It is checked to be JSON before rmcp sees
/// it: rmcp answers a plain-text 415.
async fn read(hub: &Hub, request: Request) -> Result<(Parts, Bytes), Response> {
    let (parts, body) = request.into_parts();
    let registry = hub.snapshot();
    match super::read_body(&registry, &parts.headers, body).await {
        Ok(bytes) => Ok((parts, bytes)),
        Err(e) => Err(rpc_error(e.status, INVALID_REQUEST, e.message)),
    }
}

/// A transport error in plain text becomes a JSON-RPC error with the same status.
async fn as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = rpc_error(status, INVALID_REQUEST, message);
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

/// `/mcp/NAME` where NAME is no profile the server started with.
pub async fn no_profile(State(hub): State<Arc<Hub>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let known = &hub.started_profiles;
    let message = if known.is_empty() {
        format!("no MCP endpoint at {path}: no [profiles] are configured")
    } else {
        let base = &hub.started.mcp_http_path;
        let list: Vec<String> = known.iter().map(|p| format!("{base}/{p}")).collect();
        format!(
            "no MCP endpoint at {path}: no such profile; profiles: {}",
            list.join(", ")
        )
    };
    rpc_error(StatusCode::NOT_FOUND, INVALID_REQUEST, message)
}
