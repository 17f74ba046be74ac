//! Usage on the HTTP surface: attribution from headers, recording answers, failures and
//! streams (metered chunk by chunk, usage hidden from clients that did not ask), and
//! `GET /v1/usage` and `GET /v1/usage/requests`.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, route_error_response};
use crate::chat::{Completion, ProviderError, Usage};
use crate::hub::{Caller, Hub, Record};
use crate::registry::{Principal, Registry};
use crate::route::{Answer, RouteError};
use crate::store::{report_json, report_query};

/// Who is calling, from the request's headers and its OpenAI `user` field.
pub fn caller(headers: &HeaderMap, user: Option<&Value>) -> Caller {
    Caller::from_headers(headers, user.and_then(Value::as_str))
}

pub fn record_answer(
    hub: &Hub,
    registry: &Registry,
    caller: Caller,
    requested: String,
    answer: &Answer<Completion>,
    started: Instant,
) {
    let mut record = answered("chat", caller, requested, answer);
    record.usage = answer.value.usage;
    record.latency = started.elapsed();
    hub.record(registry, record);
}

/// The record of an answered request, before its usage and timings are known.
pub fn answered<T>(
    surface: &'static str,
    caller: Caller,
    requested: String,
    answer: &Answer<T>,
) -> Record {
    let tries = answer.tries();
    Record {
        surface,
        caller,
        requested,
        provider: answer.target.provider.clone(),
        model: answer.target.model.clone(),
        status: 200,
        attempts: u32::try_from(tries.len()).unwrap_or(u32::MAX),
        streamed: false,
        usage: Usage::default(),
        latency: Duration::ZERO,
        ttft: None,
        error: None,
        tries,
    }
}

/// Records a request that got no answer and returns the client's error response.
pub fn record_failure(
    hub: &Hub,
    registry: &Registry,
    caller: Caller,
    requested: String,
    streamed: bool,
    error: RouteError,
    started: Instant,
) -> Response {
    let (record, response) = failure("chat", caller, requested, streamed, error, started);
    hub.record(registry, record);
    response
}

/// A routing failure's ledger record and its OpenAI-shaped response (whose status the
/// record carries).
pub fn failure(
    surface: &'static str,
    caller: Caller,
    requested: String,
    streamed: bool,
    error: RouteError,
    started: Instant,
) -> (Record, Response) {
    let (provider, model) = error
        .last_target()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .unwrap_or_default();
    let tried = u32::try_from(error.attempts().len()).unwrap_or(u32::MAX);
    let message = error.to_string();
    let tries = error.tries();
    let response = route_error_response(error);
    let record = Record {
        surface,
        caller,
        requested,
        provider,
        model,
        status: response.status().as_u16(),
        attempts: tried,
        streamed,
        usage: Usage::default(),
        latency: started.elapsed(),
        ttft: None,
        error: Some(message),
        tries,
    };
    (record, response)
}

/// Watches a stream on its way to the client and records it once, however it ends.
pub struct Meter {
    hub: Arc<Hub>,
    registry: Arc<Registry>,
    record: Option<Record>,
    started: Instant,
    client_wants_usage: bool,
}

impl Meter {
    #[allow(clippy::too_many_arguments)]
    pub fn new<T>(
        surface: &'static str,
        hub: Arc<Hub>,
        registry: Arc<Registry>,
        caller: Caller,
        requested: String,
        answer: &Answer<T>,
        started: Instant,
        client_wants_usage: bool,
    ) -> Meter {
        let record = Some(Record {
            streamed: true,
            ..answered(surface, caller, requested, answer)
        });
        Meter {
            hub,
            registry,
            record,
            started,
            client_wants_usage,
        }
    }

    /// A meter for a record made by the caller (streamed, with its surface).
    pub fn of(hub: Arc<Hub>, registry: Arc<Registry>, record: Record, started: Instant) -> Meter {
        Meter {
            hub,
            registry,
            record: Some(record),
            started,
            client_wants_usage: true,
        }
    }

    /// Notes a chunk; `false` when the client must not see it (the usage-only chunk
    /// llmhub asked for on its own).
    pub fn chunk(&mut self, chunk: &Bytes) -> bool {
        let Some(record) = self.record.as_mut() else {
            return true;
        };
        if record.ttft.is_none() {
            record.ttft = Some(self.started.elapsed());
        }
        // Only the last chunk or two carry usage; skip parsing the rest. OpenAI writes
        // `"usage":null` into every other chunk once usage is asked for (llmhub always
        // asks), so the key alone does not mean a count is there.
        if !has_usage_object(chunk) {
            return true;
        }
        let Ok(parsed) = serde_json::from_slice::<Value>(chunk) else {
            return true;
        };
        if let Some(usage) = parsed.get("usage").and_then(Usage::from_openai) {
            record.usage = usage;
            let usage_only = parsed
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
            return self.client_wants_usage || !usage_only;
        }
        true
    }

    /// Notes the usage and first byte of a stream read by someone else (Anthropic's
    /// own events, passed through as they came).
    pub fn observe(&mut self, usage: Option<Usage>) {
        if let Some(record) = self.record.as_mut() {
            if record.ttft.is_none() {
                record.ttft = Some(self.started.elapsed());
            }
            if let Some(u) = usage {
                record.usage = u;
            }
        }
    }

    pub fn failed(&mut self, error: &ProviderError) {
        if let Some(record) = self.record.as_mut() {
            record.status = StatusCode::BAD_GATEWAY.as_u16();
            record.error = Some(error.to_string());
        }
        self.finish();
    }

    pub fn finished(&mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.latency = self.started.elapsed();
            self.hub.record(&self.registry, record);
        }
    }
}

/// Whether a chunk's JSON text has a `"usage"` member whose value is an object.
fn has_usage_object(chunk: &[u8]) -> bool {
    static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
    crate::adapters::sse::member_starts_with(chunk, &USAGE, b'{')
}

impl Drop for Meter {
    /// The client went away mid-stream: record what it received, as nginx's 499.
    fn drop(&mut self) {
        if let Some(record) = self.record.as_mut() {
            record.status = 499;
            record.error = Some("the client closed the stream before it ended".into());
        }
        self.finish();
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct UsageParams {
    period: Option<String>,
    project: Option<String>,
    agent: Option<String>,
    key: Option<String>,
    group_by: Option<String>,
}

fn query_params<T>(
    params: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    params
        .map(|Query(p)| p)
        .map_err(|e| ApiError::invalid_request("invalid_request", e.body_text()))
}

fn usage_unavailable(why: String) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        "usage_unavailable",
        why,
    )
    .into_response()
}

fn project_forbidden(message: String) -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        "project_not_allowed",
        message,
    )
    .with_param("project")
    .into_response()
}

/// `GET /v1/usage?period=&project=&agent=&key=&group_by=`.
pub async fn report(
    State(hub): State<Arc<Hub>>,
    axum::Extension(principal): axum::Extension<Principal>,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let p = match query_params(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let project = match principal.usage_project(p.project) {
        Ok(project) => project,
        Err(message) => return project_forbidden(message),
    };
    let (period, query) = match report_query(
        p.period.as_deref(),
        p.group_by.as_deref(),
        project,
        p.agent,
        p.key,
    ) {
        Ok(q) => q,
        Err(message) => {
            let param = message.split(':').next().unwrap_or("").to_string();
            return ApiError::invalid_request("invalid_request", message)
                .with_param(param)
                .into_response();
        }
    };
    let store = match hub.usage_store() {
        Ok(store) => store,
        Err(why) => return usage_unavailable(why),
    };
    match store.usage(&query).await {
        Ok(rows) => axum::Json(report_json(period, &query, &rows)).into_response(),
        Err(e) => usage_unavailable(e.to_string()),
    }
}

/// `POST /v1/count_tokens`: `{model, messages}` or `{model, text}` →
/// `{input_tokens, method, model}`.
pub async fn count_tokens(
    State(hub): State<Arc<Hub>>,
    request: axum::extract::Request,
) -> Response {
    let registry = hub.snapshot();
    let (parts, body) = request.into_parts();
    let args = match super::read_json(&registry, &parts.headers, body).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let (request, text) = match crate::tools::count_request(&args) {
        Ok(r) => r,
        Err(issue) => {
            let param = issue
                .path
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            let where_ = if issue.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", issue.path.trim_start_matches('/').replace('/', "."))
            };
            let api =
                ApiError::invalid_request("invalid_request", format!("{where_}{}", issue.message));
            return if param.is_empty() {
                api
            } else {
                api.with_param(param)
            }
            .into_response();
        }
    };
    match crate::route::count_tokens(&hub, &registry, &request, text.as_deref()).await {
        Ok(counted) => axum::Json(counted).into_response(),
        Err(e) => route_error_response(e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RequestsParams {
    limit: Option<u32>,
    project: Option<String>,
}

/// Rows at most one page returns.
const MAX_LIMIT: u32 = 1000;

/// `GET /v1/usage/requests?limit=&project=`: the newest rows first.
pub async fn requests(
    State(hub): State<Arc<Hub>>,
    axum::Extension(principal): axum::Extension<Principal>,
    params: Result<Query<RequestsParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let mut p = match query_params(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    p.project = match principal.usage_project(p.project) {
        Ok(project) => project,
        Err(message) => return project_forbidden(message),
    };
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return ApiError::invalid_request(
            "invalid_request",
            format!("limit: expected 1 to {MAX_LIMIT}, found {limit}"),
        )
        .with_param("limit")
        .into_response();
    }
    let store = match hub.usage_store() {
        Ok(store) => store,
        Err(why) => return usage_unavailable(why),
    };
    match store.recent(limit, p.project.as_deref()).await {
        Ok(rows) => axum::Json(json!({"object": "list", "data": rows})).into_response(),
        Err(e) => usage_unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::has_usage_object;

    #[test]
    fn only_a_usage_object_counts_as_usage() {
        let with = |usage: &str| format!(r#"{{"id":"c","choices":[],"usage":{usage}}}"#);
        assert!(has_usage_object(with(r#"{"prompt_tokens":1}"#).as_bytes()));
        assert!(has_usage_object(
            br#"{"usage" : 
 {"prompt_tokens":1}}"#
        ));
        assert!(!has_usage_object(with("null").as_bytes()));
        assert!(!has_usage_object(
            br#"{"choices":[{"delta":{"content":"\"usage\" is a word"}}]}"#
        ));
        // A later member named usage still counts after an earlier string mentioning it.
        assert!(has_usage_object(
            br#"{"choices":[{"delta":{"content":"\"usage\""}}],"usage":{"completion_tokens":2}}"#
        ));
        assert!(!has_usage_object(b"{}"));
    }
}
