//! The HTTP surface: OpenAI-compatible routes, `/health`, gateway-key auth and body limits.
//! Only this module knows axum.

mod error;
mod tools;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

pub use error::ApiError;
use error::route_error_response;

use crate::chat::{ChatRequest, ChunkStream};
use crate::hub::Hub;
use crate::mcp::Mcp;
use crate::registry::Registry;
use crate::route::{self, Answer};
use tokio_util::sync::CancellationToken;

pub const PROVIDER_HEADER: &str = "x-llmhub-provider";
pub const MODEL_HEADER: &str = "x-llmhub-model";

/// The gateway's routes over a shared hub, with MCP's streamable HTTP at `[mcp] http_path`.
pub fn router(hub: Arc<Hub>, mcp: Arc<Mcp>, mcp_cancel: CancellationToken) -> Router {
    let mcp_path = hub.snapshot().settings.mcp_http_path.clone();
    let keyed = middleware::from_fn_with_state(hub.clone(), require_key);
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/v1/tools", get(tools::list))
        .route("/v1/tools/{name}", post(tools::call))
        .route_layer(keyed.clone());
    let mut mcp_routes = Router::new().nest_service(
        &mcp_path,
        crate::mcp::http_service(mcp.clone(), None, mcp_cancel.clone()),
    );
    // Profiles present at start get their own endpoint; one added later needs a restart.
    for name in hub.snapshot().profiles.keys() {
        mcp_routes = mcp_routes.nest_service(
            &format!("{mcp_path}/{name}"),
            crate::mcp::http_service(mcp.clone(), Some(name.clone()), mcp_cancel.clone()),
        );
    }
    let mcp_routes = mcp_routes.layer(keyed);
    Router::new()
        .merge(api)
        .merge(mcp_routes)
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(hub)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish (MCP streams,
/// which would otherwise hold the shutdown open, are closed first).
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Replies are written whole; Nagle's delay would only add latency to small ones.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let mcp = Mcp::start(hub.clone());
    let cancel = CancellationToken::new();
    let on_shutdown = {
        let cancel = cancel.clone();
        let mcp = mcp.clone();
        async move {
            shutdown.await;
            cancel.cancel();
            mcp.backends.stop();
        }
    };
    axum::serve(listener, router(hub, mcp, cancel))
        .with_graceful_shutdown(on_shutdown)
        .await
}

async fn require_key(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    match check_key(&hub.snapshot(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Whether the request may pass: the gateway has no keys, or it presents one of them.
fn check_key(registry: &Registry, headers: &HeaderMap) -> Result<(), ApiError> {
    let keys = &registry.settings.api_keys;
    if keys.is_empty() {
        return Ok(());
    }
    let Some(presented) = presented_key(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing_api_key",
            "this gateway needs a key: send `Authorization: Bearer <key>`",
        ));
    };
    // Compare against every key without stopping early, so timing says nothing about which matched.
    let matched = keys.iter().fold(subtle::Choice::from(0), |acc, k| {
        acc | k.expose().as_bytes().ct_eq(presented.as_bytes())
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "the gateway key sent in `Authorization` is not valid",
        ))
    }
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

/// Reads the body within the snapshot's size limit.
pub(crate) async fn read_body(
    registry: &Registry,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let limit = usize::try_from(registry.settings.max_body_bytes).unwrap_or(usize::MAX);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!(
                "request body is larger than the limit of {limit} bytes (server.max_body_bytes)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > registry.settings.max_body_bytes) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let length_limited = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if length_limited {
            too_large()
        } else {
            ApiError::invalid_request(
                "body_read_failed",
                format!("cannot read the request body: {e}"),
            )
        }
    })
}

fn parse_request(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
    let request: ChatRequest = match serde_json::from_slice(bytes) {
        Ok(request) => request,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(ApiError::invalid_request(
                "invalid_json",
                format!("request body is not valid JSON: {e}"),
            ));
        }
        // Parse again, only on this slow path, to learn where in the body the problem is.
        Err(e) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let (path, inner) = match serde_path_to_error::deserialize::<_, ChatRequest>(&mut de) {
                Err(pe) => (pe.path().to_string(), pe.into_inner().to_string()),
                Ok(_) => (String::new(), e.to_string()),
            };
            let field = path.split(['.', '[']).next().unwrap_or("");
            let param = ["messages", "model", "stream", "stream_options"]
                .into_iter()
                .find(|p| *p == field)
                .or_else(|| inner.contains("`messages`").then_some("messages"));
            let place = if path.is_empty() || path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            let api = ApiError::invalid_request(
                "invalid_request",
                format!("request body does not match the chat completions schema: {place}{inner}"),
            );
            return Err(match param {
                Some(p) => api.with_param(p),
                None => api,
            });
        }
    };
    if request.messages.is_empty() {
        return Err(ApiError::invalid_request(
            "invalid_request",
            "expected `messages` to hold at least one message, found an empty list",
        )
        .with_param("messages"));
    }
    Ok(request)
}

async fn chat_completions(State(hub): State<Arc<Hub>>, request: Request) -> Response {
    let started = Instant::now();
    let registry = hub.snapshot();
    let (parts, body) = request.into_parts();
    let bytes = match read_body(&registry, &parts.headers, body).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let request = match parse_request(&bytes) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    if request.is_stream() {
        match route::chat_stream(&hub, &registry, &request).await {
            Ok(answer) => sse_response(answer),
            Err(e) => {
                tracing::info!(model = %request.model, error = %e, "request failed");
                route_error_response(e)
            }
        }
    } else {
        match route::chat(&hub, &registry, &request).await {
            Ok(answer) => {
                tracing::debug!(provider = %answer.target.provider, model = %answer.target.model, elapsed_us = started.elapsed().as_micros() as u64, "answered");
                let mut response = Response::new(Body::from(answer.value.body));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                name_answerer(
                    response.headers_mut(),
                    &answer.target.provider,
                    &answer.target.model,
                );
                response
            }
            Err(e) => {
                tracing::info!(model = %request.model, error = %e, "request failed");
                route_error_response(e)
            }
        }
    }
}

fn name_answerer(headers: &mut HeaderMap, provider: &str, model: &str) {
    if let Ok(v) = HeaderValue::from_str(provider) {
        headers.insert(PROVIDER_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(model) {
        headers.insert(MODEL_HEADER, v);
    }
}

/// Server-sent events, one per upstream chunk as it arrives. A failure mid-stream
/// becomes an error event and ends the stream without `[DONE]`, so clients see it failed.
fn sse_response(answer: Answer<ChunkStream>) -> Response {
    let provider = answer.target.provider.clone();
    let model = answer.target.model.clone();
    let events = futures_util::stream::unfold(
        (answer.value, false),
        move |(mut chunks, finished)| {
            let provider = provider.clone();
            let model = model.clone();
            async move {
                if finished {
                    return None;
                }
                match chunks.next().await {
                    Some(Ok(chunk)) => Some((
                        Ok::<Bytes, std::convert::Infallible>(event(&chunk)),
                        (chunks, false),
                    )),
                    Some(Err(e)) => {
                        tracing::warn!(%provider, %model, error = %e, "stream failed after it started");
                        let body = ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "api_error",
                            "upstream_stream_error",
                            format!("{provider}/{model} failed mid-stream: {e}"),
                        )
                        .body();
                        Some((Ok(event(body.to_string().as_bytes())), (chunks, true)))
                    }
                    None => Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), (chunks, true))),
                }
            }
        },
    );
    let mut response = Response::new(Body::from_stream(events));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    name_answerer(headers, &answer.target.provider, &answer.target.model);
    response
}

fn event(data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 8);
    buf.put_slice(b"data: ");
    buf.put_slice(data);
    buf.put_slice(b"\n\n");
    buf.freeze()
}

async fn list_models(State(hub): State<Arc<Hub>>) -> Response {
    let registry = hub.snapshot();
    let created = crate::hub::unix(registry.loaded_at);
    let mut data = Vec::new();
    for p in registry.providers.values().filter(|p| p.is_active()) {
        for m in &p.models {
            data.push(json!({"id": format!("{}/{}", p.name, m.id), "object": "model", "created": created, "owned_by": p.name}));
        }
    }
    for name in registry.groups.keys() {
        data.push(
            json!({"id": name, "object": "model", "created": created, "owned_by": "llmhub-group"}),
        );
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// Load balancers probe without a key: they get the status; the details (paths, env
/// key names, reload errors) need a gateway key when keys are configured.
async fn health(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let health = hub.health();
    let health = match check_key(&hub.snapshot(), &headers) {
        Ok(()) => health,
        Err(_) => health.public(),
    };
    axum::Json(health).into_response()
}

async fn not_found(request: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}
