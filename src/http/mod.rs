//! The HTTP surface: OpenAI-compatible routes, `/health`, gateway-key auth and body limits.
//! Only this module knows axum.

mod access;
mod console;
mod cores;
mod error;
mod mcp_direct;
mod mcp_http;
mod mcp_sessions;
mod messages;
mod tools;
mod usage;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;

pub use cores::set_housekeeping;
pub use error::ApiError;

use crate::chat::{ChatRequest, ChunkStream, ProviderError};
use crate::hub::{Caller, Hub};
use crate::mcp::Mcp;
use crate::registry::{Principal, Registry};
use crate::route::{self, Answer};
use tokio_util::sync::CancellationToken;

/// Which provider and model answered; names made once, not parsed on every answer.
const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-llmhub-provider");
const MODEL_HEADER: HeaderName = HeaderName::from_static("x-llmhub-model");

/// The gateway's routes over a shared hub, with MCP's streamable HTTP at `[mcp] http_path`.
pub fn router(hub: Arc<Hub>, mcp: Arc<Mcp>, mcp_cancel: CancellationToken) -> Router {
    let mcp_path = hub.snapshot().settings.mcp_http_path.clone();
    let keyed = middleware::from_fn_with_state(hub.clone(), access::require_key);
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(retrieve_model))
        .route("/v1/tools", get(tools::list))
        .route("/v1/tools/{name}", post(tools::call))
        .route("/v1/usage", get(usage::report))
        .route("/v1/count_tokens", post(usage::count_tokens))
        .route("/v1/usage/requests", get(usage::requests))
        .route("/v1/keys", get(access::list_keys))
        .route("/v1/messages", post(messages::create))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/mcp/sessions", post(mcp_sessions::create))
        .route(
            "/v1/mcp/sessions/{id}",
            get(mcp_sessions::show).delete(mcp_sessions::delete),
        )
        .route_layer(keyed.clone())
        .layer(axum::Extension(mcp.clone()));
    let endpoint = |profile: Option<String>| {
        mcp_http::endpoint(
            hub.clone(),
            crate::mcp::http_service(mcp.clone(), profile, mcp_cancel.clone()),
        )
    };
    let mut mcp_routes = Router::new()
        .route(&mcp_path, endpoint(None))
        .route(&format!("{mcp_path}/{{*rest}}"), any(mcp_http::no_profile));
    // Profiles present at start get their own endpoint; one added later needs a restart.
    for name in hub.snapshot().profiles.keys() {
        mcp_routes = mcp_routes.route(&format!("{mcp_path}/{name}"), endpoint(Some(name.clone())));
    }
    let mcp_routes = mcp_routes.layer(keyed);
    // The session's id is its capability: no gateway key is asked for here.
    let session_routes = Router::new().route(
        &format!("{mcp_path}/s/{{id}}"),
        mcp_http::session_endpoint(
            hub.clone(),
            mcp.clone(),
            crate::mcp::session_http_service(mcp.clone(), mcp_cancel.clone()),
        ),
    );
    Router::new()
        .merge(api)
        .merge(mcp_routes)
        .merge(session_routes)
        .route("/health", get(health))
        .route("/ui", get(console::index))
        .route("/ui/", get(console::index))
        .route("/ui/app.js", get(console::script))
        .route("/ui/app.css", get(console::style))
        .route("/metrics", get(metrics))
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
    hub.start_ledger(std::time::Duration::from_secs(5)).await;
    let mcp = Mcp::start(hub.clone());
    let cancel = CancellationToken::new();
    let router = router(hub.clone(), mcp.clone(), cancel.clone());
    let stop = {
        let cancel = cancel.clone();
        async move {
            shutdown.await;
            cancel.cancel();
            mcp.backends.stop();
        }
    };
    let (served, ()) = tokio::join!(cores::serve(listener, router, cancel), stop);
    // Every answered request has queued its row by now: write them all before exiting.
    hub.flush_ledger().await;
    served
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

/// Reads a JSON body within the size limit; an empty body is `{}`.
pub(crate) async fn read_json(
    registry: &Registry,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Value, ApiError> {
    let bytes = read_body(registry, headers, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| invalid_json(&e))
}

fn parse_request(bytes: &Bytes) -> Result<ChatRequest, ApiError> {
    let mut request: ChatRequest = match serde_json::from_slice(bytes) {
        Ok(request) => request,
        Err(e) if e.is_syntax() || e.is_eof() => return Err(invalid_json(&e)),
        // Only on this slow path: read the body as plain JSON to say where and what.
        Err(_) => {
            let shape = match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(value) => crate::chat::shape_error(&value),
                Err(e) => return Err(invalid_json(&e)),
            };
            return Err(field_error(&shape));
        }
    };
    request.validate().map_err(|e| field_error(&e))?;
    request.text = Some(bytes.clone());
    Ok(request)
}

fn invalid_json(e: &serde_json::Error) -> ApiError {
    let what = if e.is_eof() {
        "it ends early"
    } else {
        "a syntax error"
    };
    ApiError::invalid_request(
        "invalid_json",
        format!(
            "request body is not valid JSON: {what} at line {} column {}",
            e.line(),
            e.column()
        ),
    )
}

fn field_error(e: &crate::chat::FieldError) -> ApiError {
    let api = ApiError::invalid_request("invalid_request", e.to_string());
    match e.param() {
        "" => api,
        param => api.with_param(param),
    }
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
    let principal = access::principal(&parts.extensions);
    if !principal.allows_model(&registry, &request.model) {
        return access::model_not_allowed(&principal, &request.model).into_response();
    }
    let mut caller = Caller::of(
        &principal,
        usage::caller(&parts.headers, request.extra.get("user")),
    );
    let estimate = || crate::limits::estimate(&registry, &request, bytes.len());
    if let Err(refusal) = hub
        .admit(&registry, &principal, &mut caller, estimate)
        .await
    {
        return access::refusal_response(&refusal);
    }
    let rate = access::rate_headers(&caller);
    let mut response = answer_chat(&hub, &registry, request, caller, started).await;
    access::add_rate_headers(&mut response, rate);
    response
}

async fn answer_chat(
    hub: &Arc<Hub>,
    registry: &Arc<Registry>,
    mut request: ChatRequest,
    caller: Caller,
    started: Instant,
) -> Response {
    let requested = request.model.clone();
    if request.is_stream() {
        // Usage is counted for every stream; clients that did not ask never see it.
        let client_wants_usage = request.include_usage();
        request
            .stream_options
            .get_or_insert_with(Default::default)
            .include_usage = Some(true);
        match route::chat_stream(hub, registry, &request).await {
            Ok(answer) => {
                let meter = usage::Meter::new(
                    "chat",
                    hub.clone(),
                    registry.clone(),
                    caller,
                    requested,
                    &answer,
                    started,
                    client_wants_usage,
                );
                sse_response(answer, meter)
            }
            Err(e) => {
                tracing::info!(model = %request.model, error = %e, "request failed");
                usage::record_failure(hub, registry, caller, requested, true, e, started)
            }
        }
    } else {
        match route::chat(hub, registry, &request).await {
            Ok(answer) => {
                tracing::debug!(provider = %answer.target.provider, model = %answer.target.model, elapsed_us = started.elapsed().as_micros() as u64, "answered");
                usage::record_answer(hub, registry, caller, requested, &answer, started);
                let mut response = json_response(answer.value.body);
                name_answerer(
                    response.headers_mut(),
                    &answer.target.provider,
                    &answer.target.model,
                );
                response
            }
            Err(e) => {
                tracing::info!(model = %request.model, error = %e, "request failed");
                usage::record_failure(hub, registry, caller, requested, false, e, started)
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
/// The meter sees every chunk (usage, time to first token) and records the stream when
/// it ends, fails, or is abandoned by the client; it sits first in the state so that it
/// records before the upstream connection is dropped.
fn sse_response(answer: Answer<ChunkStream>, meter: usage::Meter) -> Response {
    let state = Relay {
        provider: answer.target.provider.clone(),
        model: answer.target.model.clone(),
        meter,
        chunks: answer.value,
        peeked: None,
        started: false,
        flushed: false,
        finished: false,
    };
    let events = futures_util::stream::unfold(state, |mut relay| async move {
        if relay.finished {
            return None;
        }
        if relay.started && !relay.flushed {
            // hyper writes the head and the frames that are ready together, flushing
            // only when the body waits: waiting once here sends the first token now
            // even when the upstream's whole answer is already read.
            relay.flushed = true;
            tokio::task::yield_now().await;
        }
        let mut out = BytesMut::new();
        loop {
            let next = match relay.peeked.take() {
                Some(next) => next,
                // The first chunk goes alone, so the first token is not held back.
                None if !out.is_empty() && !relay.started => break,
                // Chunks already read go out together, as one body frame and one write.
                None if !out.is_empty() => match relay.chunks.next().now_or_never() {
                    Some(next) if out.len() < MAX_FRAME => {
                        // A batch: room for the whole frame at once, rather than
                        // growing (and copying) it chunk by chunk.
                        if out.capacity() < MAX_FRAME {
                            out.reserve(MAX_FRAME + BATCH_SLACK - out.len());
                        }
                        next
                    }
                    Some(next) => {
                        relay.peeked = Some(next);
                        break;
                    }
                    None => break,
                },
                None => relay.chunks.next().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    if relay.meter.chunk(&chunk) {
                        put_event(&mut out, &chunk);
                    }
                }
                // An error or the end goes after what was read before it.
                end if !out.is_empty() => {
                    relay.peeked = Some(end);
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(provider = %relay.provider, model = %relay.model, error = %e, "stream failed after it started");
                    relay.meter.failed(&e);
                    let body = match e {
                        // The upstream's own error event (already scrubbed of the key) goes
                        // out as it came, so clients see the upstream's code and message.
                        ProviderError::StreamError { body } => body,
                        e => Bytes::from(
                            ApiError::new(
                                StatusCode::BAD_GATEWAY,
                                "api_error",
                                "upstream_stream_error",
                                format!(
                                    "{}/{} failed mid-stream: {e}",
                                    relay.provider, relay.model
                                ),
                            )
                            .body()
                            .to_string(),
                        ),
                    };
                    relay.finished = true;
                    return Some((Ok::<Bytes, std::convert::Infallible>(event(&body)), relay));
                }
                None => {
                    relay.meter.finished();
                    relay.finished = true;
                    return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), relay));
                }
            }
        }
        relay.started = true;
        Some((Ok(out.freeze()), relay))
    });
    let mut response = event_stream(Body::from_stream(events));
    let headers = response.headers_mut();
    name_answerer(headers, &answer.target.provider, &answer.target.model);
    response
}

/// A response carrying JSON text as it is.
fn json_response(body: impl Into<Bytes>) -> Response {
    let mut response = Response::new(Body::from(body.into()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A response streaming server-sent events, which proxies must pass on as they come.
fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn event(data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 8);
    put_event(&mut buf, data);
    buf.freeze()
}

fn put_event(buf: &mut BytesMut, data: &[u8]) {
    buf.reserve(data.len() + 8);
    buf.put_slice(b"data: ");
    buf.put_slice(data);
    buf.put_slice(b"\n\n");
}

/// A stream being relayed to the client: the meter first, so that it records before the
/// upstream connection is dropped; a chunk read ahead while batching waits in `peeked`.
struct Relay {
    /// What answered, for a failure's log line and error event: held by the stream, not
    /// copied for every frame.
    provider: String,
    model: String,
    meter: usage::Meter,
    chunks: ChunkStream,
    peeked: Option<Option<Result<Bytes, ProviderError>>>,
    /// The first frame has gone out.
    started: bool,
    /// The task has yielded once after the first frame.
    flushed: bool,
    finished: bool,
}

/// Bytes of events batched into one body frame at most.
const MAX_FRAME: usize = 64 * 1024;
/// Room past `MAX_FRAME` for the event that crosses it, so a batch is allocated once.
const BATCH_SLACK: usize = 4 * 1024;

/// Every model a client can use: active providers' `provider/model` addresses and the
/// groups with an active provider, as OpenAI's model objects.
fn model_objects(registry: &Registry) -> Vec<serde_json::Value> {
    let created = crate::hub::unix(registry.loaded_at);
    let mut data = Vec::new();
    for p in registry.providers.values().filter(|p| p.is_active()) {
        for m in &p.models {
            // OpenAI's fields, then llmhub's own (clients ignore what they do not know).
            data.push(json!({"id": format!("{}/{}", p.name, m.id), "object": "model", "created": created, "owned_by": p.name,
                "context_window": m.context_tokens, "max_output_tokens": m.max_output_tokens,
                "pricing": {"input_per_1m": m.cost_input_per_1m, "cached_input_per_1m": m.cost_cached_input_per_1m,
                            "output_per_1m": m.cost_output_per_1m, "cache_write_per_1m": m.cost_cache_write_per_1m}}));
        }
    }
    for (name, _) in registry.usable_groups() {
        data.push(
            json!({"id": name, "object": "model", "created": created, "owned_by": "llmhub-group"}),
        );
    }
    data
}

/// Only what the caller's key may use.
fn allowed_models(registry: &Registry, principal: &Principal) -> Vec<serde_json::Value> {
    let mut data = model_objects(registry);
    data.retain(|m| {
        m["id"]
            .as_str()
            .is_some_and(|id| principal.allows_model(registry, id))
    });
    data
}

async fn list_models(State(hub): State<Arc<Hub>>, request: Request) -> Response {
    let principal = access::principal(request.extensions());
    let data = allowed_models(&hub.snapshot(), &principal);
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`: ids hold a `/` (`openai/gpt-4.1`), so the path is a wildcard.
/// Any address that resolves to an active provider is found, listed or not.
async fn retrieve_model(
    State(hub): State<Arc<Hub>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Extension(principal): axum::Extension<Principal>,
) -> Response {
    let registry = hub.snapshot();
    if !principal.allows_model(&registry, &id) {
        return access::model_not_allowed(&principal, &id).into_response();
    }
    if let Some(found) = model_objects(&registry)
        .into_iter()
        .find(|m| m["id"] == id.as_str())
    {
        return axum::Json(found).into_response();
    }
    let active = registry.chain(&id).map(|chain| {
        chain.into_iter().find(|t| {
            registry
                .providers
                .get(&t.provider)
                .is_some_and(|p| p.is_active())
        })
    });
    match active {
        Ok(Some(target)) => axum::Json(json!({
            "id": id,
            "object": "model",
            "created": crate::hub::unix(registry.loaded_at),
            "owned_by": target.provider,
        }))
        .into_response(),
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("model `{id}` exists but no provider of it is active (see /health)"),
        )
        .with_param("model")
        .into_response(),
        Err(e) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            e.to_string(),
        )
        .with_param("model")
        .into_response(),
    }
}

/// Load balancers probe without a key: they get the status; the details (paths, env
/// key names, reload errors) need a key when keys are configured.
async fn health(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    let health = hub.health();
    let health = match access::authenticate(&hub.snapshot(), &headers) {
        Ok(_) => health,
        Err(_) => health.public(),
    };
    axum::Json(health).into_response()
}

/// Prometheus text exposition; behind a key like `/health`'s details (its labels name
/// providers and models, never projects or keys).
async fn metrics(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    if let Err(e) = access::authenticate(&hub.snapshot(), &headers) {
        return e.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        hub.metrics_text(),
    )
        .into_response()
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
