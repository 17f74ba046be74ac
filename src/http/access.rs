//! Who calls, on every HTTP route: the key check that admits a [`Principal`] into the
//! request's extensions, and the answers for refused keys, models, tools and limits.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::hub::{Caller, Hub};
use crate::limits::{LimitKind, RateHeaders, Refusal};
use crate::registry::{AuthError, Principal, Registry};

/// Checks the key and hands the principal to the handler (and, over `/mcp`, to the MCP
/// session through the request's parts).
pub async fn require_key(
    State(hub): State<Arc<Hub>>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&hub.snapshot(), request.headers()) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        // Anthropic SDK clients read Anthropic's error shape.
        Err(e) if request.uri().path().starts_with("/v1/messages") => {
            let status = e.status.as_u16();
            super::messages::error(
                status,
                crate::adapters::messages::error_type(status),
                &e.message,
            )
        }
        Err(e) => e.into_response(),
    }
}

pub fn authenticate(registry: &Registry, headers: &HeaderMap) -> Result<Principal, ApiError> {
    registry.authenticate(presented_key(headers)).map_err(|e| {
        let code = match e {
            AuthError::Missing => "missing_api_key",
            AuthError::Invalid => "invalid_api_key",
            AuthError::Expired { .. } => "expired_api_key",
        };
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            code,
            e.to_string(),
        )
    })
}

/// The principal the key check admitted; `Open` on routes it does not guard.
pub fn principal(extensions: &axum::http::Extensions) -> Principal {
    extensions
        .get::<Principal>()
        .cloned()
        .unwrap_or(Principal::Open)
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        return Some(token.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `GET /v1/keys`: names, projects, limits and spend against budget, never key
/// material; a client key sees itself only.
pub async fn list_keys(
    State(hub): State<Arc<Hub>>,
    axum::Extension(principal): axum::Extension<Principal>,
) -> Response {
    let registry = hub.snapshot();
    let data: Vec<serde_json::Value> = registry
        .keys
        .by_name
        .values()
        .filter(|k| principal.key().is_none_or(|own| own.name == k.name))
        .map(|k| {
            let (day, month) = hub.limiter.key_spend(&k.name);
            let l = &k.limits;
            serde_json::json!({
                "name": k.name,
                "project": k.project,
                "description": k.description,
                "models": k.models.patterns(),
                "tools": k.tools.patterns(),
                "rpm": l.rpm,
                "tpm": l.tpm,
                "max_parallel": l.max_parallel,
                "budget_usd": {"day": l.budget.day, "month": l.budget.month},
                "spent_usd": {"day": day, "month": month},
                "expires": k.expires.as_ref().map(|(_, on)| on),
            })
        })
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

pub fn model_not_allowed(principal: &Principal, model: &str) -> ApiError {
    let patterns = principal
        .key()
        .and_then(|k| k.models.patterns())
        .map(|p| p.join(", "))
        .unwrap_or_default();
    ApiError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        "model_not_allowed",
        format!(
            "key `{}` may not use model `{model}`; it may use: {patterns}",
            principal.key_name()
        ),
    )
    .with_param("model")
}

pub fn tool_not_allowed(principal: &Principal, tool: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        "tool_not_allowed",
        format!("key `{}` may not call tool `{tool}`", principal.key_name()),
    )
}

/// A limit's refusal in OpenAI's shape: 429 `rate_limit_exceeded` or
/// `insufficient_quota`, with `retry-after` and the `x-ratelimit-*` headers.
pub fn refusal_response(refusal: &Refusal) -> Response {
    let (status, kind, code) = match refusal.kind {
        LimitKind::Requests | LimitKind::Parallel => (
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "rate_limit_exceeded",
        ),
        LimitKind::Tokens => (
            StatusCode::TOO_MANY_REQUESTS,
            "tokens",
            "rate_limit_exceeded",
        ),
        LimitKind::StoreDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "limits_unavailable",
        ),
        _ => (
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "insufficient_quota",
        ),
    };
    let mut response = ApiError::new(status, kind, code, refusal.message.clone()).into_response();
    let headers = response.headers_mut();
    let wait = refusal.retry_after;
    let secs = wait.as_millis().div_ceil(1000).max(1);
    insert(headers, "retry-after", secs.to_string());
    insert(
        headers,
        "retry-after-ms",
        wait.as_millis().max(1).to_string(),
    );
    for (name, value) in refusal.headers.pairs() {
        insert(headers, name, value);
    }
    response
}

/// What a limited caller's answers carry: its permit's `x-ratelimit-*` values.
pub fn rate_headers(caller: &Caller) -> Option<RateHeaders> {
    caller.permit.as_ref().map(|p| p.headers)
}

/// The key's `x-ratelimit-*` headers on an answer.
pub fn add_rate_headers(response: &mut Response, rate: Option<RateHeaders>) {
    for (name, value) in rate.iter().flat_map(RateHeaders::pairs) {
        insert(response.headers_mut(), name, value);
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}
