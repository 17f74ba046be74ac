//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: the Anthropic Messages API
//! on every model address, for the Anthropic SDKs and Claude Code. Errors here are in
//! Anthropic's shape and status codes, never OpenAI's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{access, usage};
use crate::adapters::messages::{self as wire, EventWriter};
use crate::chat::{ChunkStream, ProviderError, Usage};
use crate::hub::{Caller, Hub};
use crate::limits::{LimitKind, Refusal};
use crate::registry::Registry;
use crate::route::{self, MessagesReply, RouteError};

/// A stream quiet for this long gets a `ping` event, as Anthropic's own streams do.
const PING_AFTER: Duration = Duration::from_secs(10);

/// An Anthropic-shaped error response.
pub fn error(status: u16, kind: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(wire::error_body(kind, message))).into_response()
}

/// An OpenAI-shaped error from the shared checks (key, body size), reshaped.
fn reshape(e: super::ApiError) -> Response {
    let status = e.status.as_u16();
    error(status, wire::error_type(status), &e.message)
}

fn refused(refusal: &Refusal) -> Response {
    let openai = access::refusal_response(refusal);
    let status = openai.status().as_u16();
    let kind = match refusal.kind {
        LimitKind::StoreDown => "api_error",
        _ => "rate_limit_error",
    };
    let mut response = error(status, kind, &refusal.message);
    for (name, value) in openai.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

/// A routing failure in Anthropic's terms: the upstream's message when it sent one,
/// `overloaded_error` (529) when no provider could take the request.
fn route_error(e: &RouteError) -> (u16, Response) {
    let mut status = e.status();
    let mut message = e.to_string();
    let mut kind = None;
    if let RouteError::Rejected { body, provider, .. } = e
        && let Ok(v) = serde_json::from_slice::<Value>(body)
    {
        if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
            message = format!("{provider}: {m}");
        }
        kind = v
            .pointer("/error/type")
            .and_then(Value::as_str)
            .filter(|t| t.ends_with("_error"))
            .map(str::to_string);
    }
    if status == 503 {
        status = 529;
    }
    let kind = kind.unwrap_or_else(|| wire::error_type(status).to_string());
    (status, error(status, &kind, &message))
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads a Messages body within the size limit, translates it, and checks the caller may
/// use its model: the raw bytes, the body as sent, its translation and the caller.
async fn parse(
    registry: &Registry,
    parts: &axum::http::request::Parts,
    body: Body,
    counting: bool,
) -> Result<
    (
        Bytes,
        Value,
        crate::chat::ChatRequest,
        crate::registry::Principal,
    ),
    Response,
> {
    let bytes = super::read_body(registry, &parts.headers, body)
        .await
        .map_err(reshape)?;
    let mut body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        error(
            400,
            "invalid_request_error",
            &format!(
                "request body is not valid JSON: line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    // count_tokens takes no max_tokens; the translation wants one.
    if counting
        && body.get("max_tokens").is_none()
        && let Some(o) = body.as_object_mut()
    {
        o.insert("max_tokens".into(), json!(1));
    }
    let request =
        wire::to_chat(&body).map_err(|e| error(400, "invalid_request_error", &e.to_string()))?;
    let principal = access::principal(&parts.extensions);
    if !principal.allows_model(registry, &request.model) {
        return Err(reshape(access::model_not_allowed(
            &principal,
            &request.model,
        )));
    }
    Ok((bytes, body, request, principal))
}

pub async fn create(State(hub): State<Arc<Hub>>, request: Request) -> Response {
    let started = Instant::now();
    let registry = hub.snapshot();
    let (parts, body) = request.into_parts();
    let (bytes, body, mut request, principal) = match parse(&registry, &parts, body, false).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    let mut caller = Caller::of(
        &principal,
        usage::caller(&parts.headers, request.extra.get("user")),
    );
    let estimate = || crate::limits::estimate(&registry, &request, bytes.len());
    if let Err(refusal) = hub
        .admit(&registry, &principal, &mut caller, estimate)
        .await
    {
        return refused(&refusal);
    }
    let rate = access::rate_headers(&caller);
    let stops = wire::take_stops(&mut request);
    if request.is_stream() {
        request
            .stream_options
            .get_or_insert_with(Default::default)
            .include_usage = Some(true);
    }
    let version = header_text(&parts.headers, "anthropic-version");
    let beta = header_text(&parts.headers, "anthropic-beta");
    let requested = request.model.clone();
    let routed = route::messages(&hub, &registry, &body, &request, version, beta).await;
    let mut response = match routed {
        Err(e) => {
            tracing::info!(model = %requested, error = %e, "request failed");
            let (status, response) = route_error(&e);
            let (mut record, _) = usage::failure(
                "messages",
                caller,
                requested,
                request.is_stream(),
                e,
                started,
            );
            record.status = status;
            hub.record(&registry, record);
            response
        }
        Ok(answer) => {
            let target = answer.target.clone();
            let mut record = usage::answered("messages", caller, requested.clone(), &answer);
            match answer.value {
                MessagesReply::NativeBody(b) => {
                    record.usage = anthropic_usage(&b).unwrap_or_default();
                    record.latency = started.elapsed();
                    hub.record(&registry, record);
                    super::json_response(b)
                }
                MessagesReply::Completion(c) => {
                    let value: Value = serde_json::from_slice(&c.body).unwrap_or(Value::Null);
                    record.usage = c.usage;
                    record.latency = started.elapsed();
                    hub.record(&registry, record);
                    super::json_response(Bytes::from(
                        wire::from_completion(&value, &stops, &requested).to_string(),
                    ))
                }
                MessagesReply::NativeStream(s) => {
                    record.streamed = true;
                    let meter = usage::Meter::of(hub.clone(), registry.clone(), record, started);
                    sse(native_events(s, meter))
                }
                MessagesReply::Chunks(s) => {
                    record.streamed = true;
                    let meter = usage::Meter::of(hub.clone(), registry.clone(), record, started);
                    let input = input_estimate(&hub, &registry, &request, &target);
                    let writer = EventWriter::new(&requested, input, stops);
                    sse(translated_events(s, writer, meter))
                }
            }
            .tap_headers(&target.provider, &target.model)
        }
    };
    access::add_rate_headers(&mut response, rate);
    response
}

trait TapHeaders {
    fn tap_headers(self, provider: &str, model: &str) -> Self;
}

impl TapHeaders for Response {
    fn tap_headers(mut self, provider: &str, model: &str) -> Self {
        super::name_answerer(self.headers_mut(), provider, model);
        self
    }
}

fn sse(events: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> Response {
    super::event_stream(Body::from_stream(
        events.map(Ok::<Bytes, std::convert::Infallible>),
    ))
}

/// Usage of a native reply: Anthropic's counts in the canonical shape.
fn anthropic_usage(body: &[u8]) -> Option<Usage> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Usage::from_openai(&crate::adapters::anthropic::usage(v.get("usage")?))
}

/// `message_start` carries input tokens before the upstream counts them: the local count.
fn input_estimate(
    hub: &Hub,
    registry: &Registry,
    request: &crate::chat::ChatRequest,
    target: &crate::registry::Target,
) -> u64 {
    let Some(provider) = registry.providers.get(&target.provider) else {
        return 0;
    };
    crate::adapters::estimate(&crate::adapters::Call {
        http: &hub.http,
        provider,
        model: &target.model,
        request,
    })
    .input_tokens
}

/// An Anthropic provider's events, passed through as they came; usage read on the way.
fn native_events(
    stream: ChunkStream,
    meter: usage::Meter,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    futures_util::stream::unfold(
        (stream, meter, String::new(), Usage::default(), false),
        |(mut stream, mut meter, mut line, mut seen, done)| async move {
            if done {
                return None;
            }
            match stream.next().await {
                Some(Ok(bytes)) => {
                    // Usage lives in `message_start` (input) and `message_delta` (output).
                    line.push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(end) = line.find('\n') {
                        let l: String = line.drain(..=end).collect();
                        if let Some(data) = l.trim().strip_prefix("data:")
                            && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                        {
                            let u = v.pointer("/message/usage").or_else(|| v.get("usage"));
                            if let Some(u) = u
                                && let Some(found) =
                                    Usage::from_openai(&crate::adapters::anthropic::usage(u))
                            {
                                seen.input = seen.input.max(found.input);
                                seen.cached = seen.cached.max(found.cached);
                                seen.output = seen.output.max(found.output);
                            }
                        }
                    }
                    meter.observe(Some(seen));
                    Some((bytes, (stream, meter, line, seen, false)))
                }
                Some(Err(e)) => {
                    meter.failed(&e);
                    let event = wire::sse(
                        "error",
                        &wire::error_body("api_error", &format!("the stream broke off: {e}")),
                    );
                    Some((event, (stream, meter, line, seen, true)))
                }
                None => {
                    meter.finished();
                    None
                }
            }
        },
    )
}

/// Another provider's chunks as Anthropic events, with a `ping` when the upstream is quiet.
fn translated_events(
    stream: ChunkStream,
    writer: EventWriter,
    meter: usage::Meter,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    futures_util::stream::unfold(
        (stream, writer, meter, false),
        |(mut stream, mut writer, mut meter, done)| async move {
            if done {
                return None;
            }
            let next = match tokio::time::timeout(PING_AFTER, stream.next()).await {
                Err(_) => {
                    let ping = wire::sse("ping", &json!({"type": "ping"}));
                    return Some((ping, (stream, writer, meter, false)));
                }
                Ok(next) => next,
            };
            match next {
                Some(Ok(chunk)) => {
                    meter.chunk(&chunk);
                    let frames = writer.chunk(&chunk);
                    if writer.stopped() {
                        // Cut at a stop sequence: end now; the upstream is dropped.
                        let mut all = frames;
                        all.extend(writer.finish());
                        meter.observe(stop_usage(&writer));
                        meter.finished();
                        return Some((Bytes::from(all.concat()), (stream, writer, meter, true)));
                    }
                    Some((Bytes::from(frames.concat()), (stream, writer, meter, false)))
                }
                Some(Err(e)) => {
                    meter.failed(&e);
                    let (kind, message) = match &e {
                        ProviderError::StreamError { body } => {
                            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                            (
                                v.pointer("/error/type")
                                    .and_then(Value::as_str)
                                    .unwrap_or("api_error")
                                    .to_string(),
                                v.pointer("/error/message")
                                    .and_then(Value::as_str)
                                    .map_or_else(|| e.to_string(), str::to_string),
                            )
                        }
                        _ => (
                            "api_error".to_string(),
                            format!("the upstream failed mid-stream: {e}"),
                        ),
                    };
                    let event = wire::sse("error", &wire::error_body(&kind, &message));
                    Some((event, (stream, writer, meter, true)))
                }
                None => {
                    let frames = writer.finish();
                    meter.finished();
                    Some((Bytes::from(frames.concat()), (stream, writer, meter, true)))
                }
            }
        },
    )
}

/// A stream cut at a stop sequence never gets the upstream's usage: the text sent, counted.
fn stop_usage(writer: &EventWriter) -> Option<Usage> {
    writer.usage().and_then(Usage::from_openai).or_else(|| {
        Some(Usage {
            output: crate::adapters::tokens::text("gpt-4o", writer.sent_text()),
            ..Usage::default()
        })
    })
}

/// The first active provider of an address's chain, and its model.
fn first_active(
    registry: &Registry,
    address: &str,
) -> Option<(Arc<crate::registry::Provider>, String)> {
    registry.chain(address).ok()?.into_iter().find_map(|t| {
        let p = registry.providers.get(&t.provider)?;
        p.is_active().then(|| (p.clone(), t.model))
    })
}

/// `POST /v1/messages/count_tokens`: Anthropic targets are asked, others counted locally.
pub async fn count_tokens(State(hub): State<Arc<Hub>>, request: Request) -> Response {
    let registry = hub.snapshot();
    let (parts, body) = request.into_parts();
    let (_, body, request, _) = match parse(&registry, &parts, body, true).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    // An Anthropic target counts the request as it came (documents, server tools and
    // thinking included); a failure falls back to the translated count below.
    if let Some((provider, model)) = first_active(&registry, &request.model)
        && provider.adapter == crate::config::AdapterKind::Anthropic
    {
        let call = crate::adapters::Call {
            http: &hub.http,
            provider: &provider,
            model: &model,
            request: &request,
        };
        match crate::adapters::anthropic::count(
            &call,
            &body,
            header_text(&parts.headers, "anthropic-version"),
        )
        .await
        {
            Ok(n) => {
                return axum::Json(json!({
                    "input_tokens": n,
                    "method": "anthropic",
                    "model": format!("{}/{model}", provider.name),
                }))
                .into_response();
            }
            Err(e) => {
                tracing::warn!(provider = %provider.name, error = %e, "count_tokens failed natively; counting the translation")
            }
        }
    }
    match route::count_tokens(&hub, &registry, &request, None).await {
        Ok(counted) => axum::Json(json!({
            "input_tokens": counted.input_tokens,
            "method": counted.method,
            "model": counted.model,
        }))
        .into_response(),
        Err(e) => route_error(&e).1,
    }
}
