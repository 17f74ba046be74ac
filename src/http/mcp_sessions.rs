//! `POST /v1/mcp/sessions`, `GET` and `DELETE /v1/mcp/sessions/{id}`: per-session MCP
//! endpoints as a REST resource, behind the gateway key check.

use std::sync::Arc;

use axum::extract::{Extension, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiError, access, read_json};
use crate::hub::Hub;
use crate::mcp::Mcp;
use crate::mcp::sessions::{NewSession, SessionError};

fn failure(e: SessionError) -> Response {
    match e {
        SessionError::Invalid { param, message } => {
            let error = ApiError::invalid_request("invalid_session_request", message);
            if param.is_empty() {
                error
            } else {
                error.with_param(param)
            }
        }
        SessionError::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "session_not_found",
            "no MCP session with this id: it never existed, was deleted or expired, or another key created it",
        ),
        SessionError::Unavailable(why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "sessions_unavailable",
            why,
        ),
    }
    .into_response()
}

pub async fn create(
    State(hub): State<Arc<Hub>>,
    Extension(mcp): Extension<Arc<Mcp>>,
    request: Request,
) -> Response {
    let principal = access::principal(request.extensions());
    let registry = hub.snapshot();
    let (parts, body) = request.into_parts();
    let body = match read_json(&registry, &parts.headers, body).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let new = match NewSession::parse(&body, &registry) {
        Ok(new) => new,
        Err(e) => return failure(e),
    };
    match mcp
        .sessions
        .create(&hub, &registry, &principal, &mcp.backends, new)
        .await
    {
        Ok(view) => (StatusCode::CREATED, axum::Json(view)).into_response(),
        Err(e) => failure(e),
    }
}

pub async fn show(
    State(hub): State<Arc<Hub>>,
    Extension(mcp): Extension<Arc<Mcp>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let principal = access::principal(request.extensions());
    let registry = hub.snapshot();
    match mcp
        .sessions
        .find_for(&hub, &registry, &principal, &id)
        .await
    {
        Ok(session) => axum::Json(session.status(&registry, &mcp.backends)).into_response(),
        Err(e) => failure(e),
    }
}

pub async fn delete(
    State(hub): State<Arc<Hub>>,
    Extension(mcp): Extension<Arc<Mcp>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let principal = access::principal(request.extensions());
    let registry = hub.snapshot();
    match mcp.sessions.delete(&hub, &registry, &principal, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => failure(e),
    }
}
