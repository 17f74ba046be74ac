//! OpenAI-shaped error bodies, and the one place where internal errors get an HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::registry::ResolveError;
use crate::route::{Attempt, RouteError};

/// `{"error": {"message", "type", "code", "param"}}` with a status, plus the attempts made when routing failed.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: &'static str,
    pub param: Option<String>,
    pub attempts: Vec<Attempt>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code,
            param: None,
            attempts: Vec::new(),
        }
    }

    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn body(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "param": self.param,
        });
        if !self.attempts.is_empty() {
            error["attempts"] = json!(self.attempts);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A route failure as the client sees it. A request the upstream refused is returned
/// with the upstream's status and, when it is OpenAI-shaped, the upstream's own body.
pub(crate) fn route_error_response(err: RouteError) -> Response {
    let api = match err {
        RouteError::NoModel => {
            ApiError::invalid_request("model_required", err.to_string()).with_param("model")
        }
        RouteError::Resolve(
            ref e @ (ResolveError::Unknown { .. } | ResolveError::UnknownProvider { .. }),
        ) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            e.to_string(),
        )
        .with_param("model"),
        RouteError::Resolve(ref e @ ResolveError::NoDefault { .. }) => {
            ApiError::invalid_request("model_required", e.to_string()).with_param("model")
        }
        RouteError::Resolve(ref e) => {
            ApiError::invalid_request("model_ambiguous", e.to_string()).with_param("model")
        }
        RouteError::BadRequest(message) => ApiError::invalid_request("invalid_request", message),
        RouteError::Rejected {
            provider,
            model,
            status,
            body,
            attempts,
        } => return rejected(provider, model, status, body, attempts),
        RouteError::Exhausted { ref attempts, .. } => {
            let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_GATEWAY);
            let (kind, code) = match status {
                StatusCode::BAD_REQUEST => ("invalid_request_error", "unsupported_parameter"),
                StatusCode::SERVICE_UNAVAILABLE => ("api_error", "no_provider_available"),
                StatusCode::GATEWAY_TIMEOUT => ("api_error", "upstream_timeout"),
                StatusCode::TOO_MANY_REQUESTS => ("rate_limit_error", "rate_limit_exceeded"),
                _ => ("api_error", "upstream_error"),
            };
            let mut api = ApiError::new(status, kind, code, err.to_string());
            api.attempts = attempts.clone();
            api
        }
        RouteError::Internal(message) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal_error",
            message,
        ),
    };
    api.into_response()
}

fn rejected(
    provider: String,
    model: String,
    status: u16,
    body: Bytes,
    attempts: Vec<Attempt>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let upstream: Option<Value> = serde_json::from_slice(&body).ok();
    let mut out = match upstream {
        Some(v) if v.get("error").is_some_and(Value::is_object) => v,
        _ => {
            let text = String::from_utf8_lossy(&body);
            let message = format!(
                "{provider}/{model} refused the request ({}): {}",
                status.as_u16(),
                text.trim()
            );
            ApiError::new(
                status,
                "invalid_request_error",
                "upstream_rejected",
                message,
            )
            .body()
        }
    };
    if !attempts.is_empty() {
        out["error"]["attempts"] = json!(attempts);
    }
    let mut response = (status, axum::Json(out)).into_response();
    super::name_answerer(response.headers_mut(), &provider, &model);
    response
}
