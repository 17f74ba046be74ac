//! `GET /v1/tools` and `POST /v1/tools/{name}`: the prompt tools MCP serves, over plain HTTP.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::{ApiError, route_error_response};
use crate::hub::{Caller, Hub};
use crate::registry::{Principal, ToolKind};
use crate::tools::{self, ToolError};

pub async fn list(
    State(hub): State<Arc<Hub>>,
    axum::Extension(principal): axum::Extension<Principal>,
) -> Response {
    let registry = hub.snapshot();
    let data: Vec<Value> = registry
        .tools
        .values()
        .filter(|t| t.availability(&registry).is_ok() && principal.allows_tool(&t.name))
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.offered_description(&registry),
                "kind": t.kind.name(),
                "model": match t.kind {
                    ToolKind::Prompt { .. } => t.model.as_deref().or(registry.settings.default_model.as_deref()),
                    _ => None,
                },
                "input_schema": *t.input_schema,
                "output_schema": t.output_schema.as_deref(),
            })
        })
        .collect();
    // The MCP built-ins, for clients (the console) that show everything MCP serves.
    let builtin: Vec<&str> = crate::tools::BUILTIN_NAMES
        .iter()
        .copied()
        .filter(|n| principal.allows_tool(n))
        .collect();
    axum::Json(json!({"object": "list", "data": data, "builtin": builtin})).into_response()
}

pub async fn call(
    State(hub): State<Arc<Hub>>,
    name: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(e) => {
            return ApiError::invalid_request(
                "invalid_tool_name",
                format!("the tool name in the path is not valid: {}", e.body_text()),
            )
            .into_response();
        }
    };
    let registry = hub.snapshot();
    let (parts, body) = request.into_parts();
    let principal = super::access::principal(&parts.extensions);
    if !principal.allows_tool(&name) {
        return super::access::tool_not_allowed(&principal, &name).into_response();
    }
    let args = match super::read_json(&registry, &parts.headers, body).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let Some(tool) = registry.tools.get(&name).cloned() else {
        let known: Vec<&str> = registry.tools.keys().map(String::as_str).collect();
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "tool_not_found",
            if known.is_empty() {
                format!("no tool `{name}`: tools.d holds no tools")
            } else {
                format!("no tool `{name}`; tools: {}", known.join(", "))
            },
        )
        .into_response();
    };
    if let Err(why) = tool.availability(&registry) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "tool_unavailable",
            format!("tool `{name}` is not available: {why}"),
        )
        .into_response();
    }
    let mut args = args;
    let mut call = tools::Call {
        caller: Caller::of(
            &principal,
            tools::caller_from_args(&mut args, super::usage::caller(&parts.headers, None)),
        ),
        surface: "http_tool",
    };
    let estimate = || tools::estimate(&registry, Some(&tool), &args);
    if let Err(refusal) = hub
        .admit(&registry, &principal, &mut call.caller, estimate)
        .await
    {
        return super::access::refusal_response(&refusal);
    }
    let mut response = run(&hub, &registry, &tool, &name, &args, &call).await;
    super::access::add_rate_headers(&mut response, super::access::rate_headers(&call.caller));
    response
}

async fn run(
    hub: &Hub,
    registry: &crate::registry::Registry,
    tool: &crate::registry::PromptTool,
    name: &str,
    args: &Value,
    call: &tools::Call,
) -> Response {
    match tools::run(hub, registry, tool, args, call).await {
        Ok(out) => axum::Json(json!({
            "tool": name,
            "content": out.text,
            "structured": out.structured,
            "model": out.model,
            "provider": out.provider,
            "usage": out.usage,
        }))
        .into_response(),
        Err(ToolError::Route(e)) => route_error_response(e),
        Err(e) => tool_error_response(e),
    }
}

fn tool_error_response(e: ToolError) -> Response {
    let message = e.to_string();
    let (status, kind, code, extra) = match e {
        ToolError::InvalidArguments(issues) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_arguments",
            json!({"issues": issues}),
        ),
        ToolError::InvalidOutput { reply, issues } => (
            StatusCode::BAD_GATEWAY,
            "api_error",
            "invalid_output",
            json!({"issues": issues, "reply": reply}),
        ),
        ToolError::Timeout(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            "tool_timeout",
            json!({}),
        ),
        ToolError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "tool_unavailable",
            json!({}),
        ),
        ToolError::Render(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "tool_render_failed",
            json!({}),
        ),
        ToolError::Route(_) => (
            StatusCode::BAD_GATEWAY,
            "api_error",
            "upstream_error",
            json!({}),
        ),
        ToolError::Failed(_) => (
            StatusCode::BAD_GATEWAY,
            "api_error",
            "tool_failed",
            json!({}),
        ),
    };
    let mut body = ApiError::new(status, kind, code, message).body();
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body["error"][k] = v;
        }
    }
    (status, axum::Json(body)).into_response()
}
