//! Routing: a model address becomes a chain of (provider, model) targets, walked in
//! order with retries, jittered backoff that honours Retry-After, per-provider
//! timeouts and circuit breakers, until one answers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;

use crate::adapters::{self, Call};
use crate::chat::{ChatRequest, ChunkStream, Completion, ProviderError};
use crate::hub::Hub;
use crate::registry::{Provider, Registry, ResolveError, Target};

/// Backoff never grows past this between two tries of one provider.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A Retry-After longer than this sends the request down the chain instead of waiting.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// One try at one provider, as the client sees it in error bodies.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    /// `failed` or `skipped`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub error: String,
}

/// A successful answer and the road taken to it.
pub struct Answer<T> {
    pub value: T,
    pub target: Target,
    pub attempts: Vec<Attempt>,
}

impl<T> Answer<T> {
    /// Every attempt's provider and outcome, the answering one last.
    pub fn tries(&self) -> Vec<(String, &'static str)> {
        self.attempts
            .iter()
            .map(|a| (a.provider.clone(), a.outcome))
            .chain(std::iter::once((self.target.provider.clone(), "answered")))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no model given and routing.default_model is not set")]
    NoModel,
    #[error("{0}")]
    Resolve(ResolveError),
    /// Every target was skipped or failed with a retryable error.
    #[error("{}", exhausted_message(.attempts))]
    Exhausted {
        attempts: Vec<Attempt>,
        last: Option<ProviderError>,
    },
    /// The upstream refused the request itself (a 4xx other than 408/429): the client's to fix.
    #[error("{provider} answered {status}")]
    Rejected {
        provider: String,
        model: String,
        status: u16,
        body: Bytes,
        attempts: Vec<Attempt>,
    },
    /// The request cannot be translated for the provider: the client's to fix.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Internal(String),
}

impl RouteError {
    /// The attempts made before the failure.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            Self::Exhausted { attempts, .. } | Self::Rejected { attempts, .. } => attempts,
            _ => &[],
        }
    }

    /// Every attempt's provider and outcome.
    pub fn tries(&self) -> Vec<(String, &'static str)> {
        self.attempts()
            .iter()
            .map(|a| (a.provider.clone(), a.outcome))
            .collect()
    }

    /// The HTTP status this failure answers with (and the ledger records).
    pub fn status(&self) -> u16 {
        match self {
            Self::NoModel | Self::BadRequest(_) => 400,
            Self::Resolve(ResolveError::Unknown { .. } | ResolveError::UnknownProvider { .. }) => {
                404
            }
            Self::Resolve(_) => 400,
            Self::Rejected { status, .. } => *status,
            Self::Internal(_) => 500,
            Self::Exhausted { attempts, last } => {
                let all_skipped = attempts.iter().all(|a| a.outcome == "skipped");
                match last {
                    // Every provider was asked for something it cannot do: the request must change.
                    Some(ProviderError::Unsupported(_)) if all_skipped => 400,
                    _ if all_skipped => 503,
                    Some(ProviderError::Timeout(_)) => 504,
                    Some(e) if e.status() == Some(429) => 429,
                    _ => 502,
                }
            }
        }
    }

    /// The provider and model that last failed, if any was tried.
    pub fn last_target(&self) -> Option<(&str, &str)> {
        match self {
            Self::Rejected {
                provider, model, ..
            } => Some((provider, model)),
            _ => self
                .attempts()
                .last()
                .map(|a| (a.provider.as_str(), a.model.as_str())),
        }
    }
}

fn exhausted_message(attempts: &[Attempt]) -> String {
    if attempts.iter().all(|a| a.outcome == "skipped") {
        let parts: Vec<String> = attempts
            .iter()
            .map(|a| format!("{}/{} ({})", a.provider, a.model, a.error))
            .collect();
        return format!(
            "no provider of the chain can take this request: {}",
            parts.join("; ")
        );
    }
    let parts: Vec<String> = attempts
        .iter()
        .map(|a| match a.status {
            Some(s) => format!("{}/{} {}: {}", a.provider, a.model, s, a.error),
            None => format!("{}/{}: {}", a.provider, a.model, a.error),
        })
        .collect();
    format!(
        "all {} attempts failed: {}",
        attempts.len(),
        parts.join("; ")
    )
}

/// The model address a request names, or the configured default.
fn address<'a>(registry: &'a Registry, request: &'a ChatRequest) -> Result<&'a str, RouteError> {
    if !request.model.is_empty() {
        return Ok(&request.model);
    }
    registry
        .settings
        .default_model
        .as_deref()
        .ok_or(RouteError::NoModel)
}

/// Sends a non-streaming request down its chain.
pub async fn chat(
    hub: &Hub,
    registry: &Registry,
    request: &ChatRequest,
) -> Result<Answer<Completion>, RouteError> {
    let address = address(registry, request)?;
    run(hub, registry, address, |provider, model| async move {
        adapters::chat(Call {
            http: &hub.http,
            provider: &provider,
            model: &model,
            request,
        })
        .await
    })
    .await
}

/// Opens a stream down the chain. A target counts as answering once its first chunk
/// arrives, so a failure before the first byte still falls back.
pub async fn chat_stream(
    hub: &Hub,
    registry: &Registry,
    request: &ChatRequest,
) -> Result<Answer<ChunkStream>, RouteError> {
    let address = address(registry, request)?;
    run(hub, registry, address, |provider, model| async move {
        let stream = adapters::chat_stream(Call {
            http: &hub.http,
            provider: &provider,
            model: &model,
            request,
        })
        .await?;
        first_chunk(stream).await
    })
    .await
}

/// What answered a Messages API request: an Anthropic provider, natively (its body or
/// its event stream, bytes as they came), or another provider in the canonical shape.
pub enum MessagesReply {
    NativeBody(Bytes),
    /// The provider's server-sent events as raw bytes (the same stream type as chunks).
    NativeStream(ChunkStream),
    Completion(Completion),
    Chunks(ChunkStream),
}

/// Sends a Messages API request down its chain: Anthropic targets get `body` as it came
/// (thinking blocks, signatures, cache_control and unknown fields intact), others the
/// translated `request`. A stream counts as answering once its first bytes arrive.
pub async fn messages(
    hub: &Hub,
    registry: &Registry,
    body: &serde_json::Value,
    request: &ChatRequest,
    version: Option<&str>,
    beta: Option<&str>,
) -> Result<Answer<MessagesReply>, RouteError> {
    let address = address(registry, request)?;
    let stream = request.is_stream();
    let native_only = adapters::messages::native_only(body);
    let native_only = native_only.as_deref();
    run(hub, registry, address, |provider, model| async move {
        let call = Call {
            http: &hub.http,
            provider: &provider,
            model: &model,
            request,
        };
        if provider.adapter != crate::config::AdapterKind::Anthropic {
            if let Some(why) = native_only {
                return Err(ProviderError::Unsupported(why.to_string()));
            }
            return if stream {
                first_chunk(adapters::chat_stream(call).await?)
                    .await
                    .map(MessagesReply::Chunks)
            } else {
                adapters::chat(call).await.map(MessagesReply::Completion)
            };
        }
        let response = adapters::messages::native(&call, body, version, beta, stream).await?;
        let timeout = provider.timeout;
        if !stream {
            let bytes = adapters::wire::body(response, timeout).await?;
            return Ok(MessagesReply::NativeBody(adapters::wire::scrub(
                bytes, &provider,
            )));
        }
        let key = provider.key.clone();
        let raw = response.bytes_stream();
        // Each piece must come within the provider's timeout, as the SSE driver's events do.
        let bytes: ChunkStream = Box::pin(futures_util::stream::unfold(
            (raw, key),
            move |(mut raw, key)| async move {
                match tokio::time::timeout(timeout, raw.next()).await {
                    Ok(Some(Ok(b))) => {
                        let b = match &key {
                            Some(k) => crate::chat::scrub_bytes(b, k.expose()),
                            None => b,
                        };
                        Some((Ok(b), (raw, key)))
                    }
                    Ok(Some(Err(e))) => {
                        Some((Err(adapters::wire::transport_error(e, timeout)), (raw, key)))
                    }
                    Ok(None) => None,
                    Err(_) => Some((Err(ProviderError::Timeout(timeout)), (raw, key))),
                }
            },
        ));
        first_chunk(bytes).await.map(MessagesReply::NativeStream)
    })
    .await
}

/// Waits for a stream's first item, so that a failure before it can still fall back.
async fn first_chunk(mut stream: ChunkStream) -> Result<ChunkStream, ProviderError> {
    match stream.next().await {
        Some(Err(e)) => Err(e),
        Some(Ok(first)) => Ok(Box::pin(
            futures_util::stream::once(async move { Ok(first) }).chain(stream),
        )),
        None => Err(ProviderError::Protocol(
            "the stream ended before its first chunk".to_string(),
        )),
    }
}

/// A token count for a request, and whose tokenizer made it.
#[derive(Debug, Clone, Serialize)]
pub struct Counted {
    pub input_tokens: u64,
    /// `anthropic`, `gemini` or `estimate`.
    pub method: &'static str,
    /// `provider/model` the count is for.
    pub model: String,
    /// Why the provider's own counter was not used, when it should have been.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Counts a request's input tokens for the first active target of its model address:
/// the provider's own counter (Anthropic, Gemini), else a local BPE estimate; a
/// counter that fails falls back to the estimate and says why. `text` counts a bare
/// text, without chat message overheads, when estimating.
pub async fn count_tokens(
    hub: &Hub,
    registry: &Registry,
    request: &ChatRequest,
    text: Option<&str>,
) -> Result<Counted, RouteError> {
    let address = address(registry, request)?;
    let chain = registry.chain(address).map_err(RouteError::Resolve)?;
    let active = chain.iter().find_map(|t| {
        let p = registry.providers.get(&t.provider)?;
        p.is_active().then(|| (p.clone(), t.clone()))
    });
    let Some((provider, target)) = active.or_else(|| {
        let t = chain.first()?;
        Some((registry.providers.get(&t.provider)?.clone(), t.clone()))
    }) else {
        return Err(RouteError::Exhausted {
            attempts: Vec::new(),
            last: None,
        });
    };
    let call = Call {
        http: &hub.http,
        provider: &provider,
        model: &target.model,
        request,
    };
    let estimate = |call: &Call<'_>| match text {
        Some(t) => adapters::TokenCount {
            input_tokens: adapters::tokens::text(call.model, t),
            method: "estimate",
        },
        None => adapters::estimate(call),
    };
    let (count, note) = if !provider.is_active() {
        (
            estimate(&call),
            Some(format!("{} is not active; counted locally", provider.name)),
        )
    } else {
        match adapters::count_tokens(Call { request, ..call }).await {
            Ok(c) if c.method == "estimate" => (estimate(&call), None),
            Ok(c) => (c, None),
            Err(e) => {
                tracing::warn!(provider = %provider.name, error = %e, "token counter failed; estimating");
                (
                    estimate(&call),
                    Some(format!(
                        "{}'s counter failed ({e}); counted locally",
                        provider.name
                    )),
                )
            }
        }
    };
    Ok(Counted {
        input_tokens: count.input_tokens,
        method: count.method,
        model: format!("{}/{}", target.provider, target.model),
        note,
    })
}

async fn run<T, F, Fut>(
    hub: &Hub,
    registry: &Registry,
    address: &str,
    mut op: F,
) -> Result<Answer<T>, RouteError>
where
    F: FnMut(Arc<Provider>, String) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let targets = registry.chain(address).map_err(RouteError::Resolve)?;
    let settings = &registry.settings;
    let mut attempts = Vec::new();
    let mut last = None;
    for target in targets {
        let Some(provider) = registry.providers.get(&target.provider).cloned() else {
            continue;
        };
        if let crate::registry::Status::Inactive(reason) = &provider.status {
            attempts.push(skipped(&target, reason.clone()));
            continue;
        }
        let mut delays = backon::ExponentialBuilder::new()
            .with_min_delay(settings.backoff)
            .with_factor(2.0)
            .with_max_delay(MAX_BACKOFF)
            .with_max_times(provider.retries as usize)
            .with_jitter()
            .build();
        loop {
            let permit = match hub.breakers.admit(&provider.name, Instant::now()) {
                Ok(permit) => permit,
                Err(reason) => {
                    attempts.push(skipped(&target, reason));
                    break;
                }
            };
            match op(provider.clone(), target.model.clone()).await {
                Ok(value) => {
                    permit.success();
                    if !attempts.is_empty() {
                        tracing::info!(provider = %target.provider, model = %target.model, earlier = attempts.len(), "answered after fallback");
                    }
                    return Ok(Answer {
                        value,
                        target,
                        attempts,
                    });
                }
                Err(ProviderError::Request(message)) => {
                    drop(permit);
                    return Err(RouteError::Internal(message));
                }
                Err(ProviderError::BadRequest(message)) => {
                    drop(permit);
                    return Err(RouteError::BadRequest(message));
                }
                Err(ProviderError::Unsupported(reason)) => {
                    // Another provider of the chain may support what this one cannot.
                    drop(permit);
                    attempts.push(skipped(&target, reason.clone()));
                    last = Some(ProviderError::Unsupported(reason));
                    break;
                }
                Err(e @ ProviderError::Status { .. }) if !e.is_retryable() => {
                    let ProviderError::Status { status, body, .. } = e else {
                        unreachable!("matched as Status above")
                    };
                    permit.success();
                    tracing::info!(provider = %target.provider, model = %target.model, status, "upstream refused the request");
                    return Err(RouteError::Rejected {
                        provider: target.provider,
                        model: target.model,
                        status,
                        body,
                        attempts,
                    });
                }
                Err(e) => {
                    let opened = permit.failure(
                        settings.breaker_failures,
                        settings.breaker_cooldown,
                        Instant::now(),
                    );
                    tracing::warn!(provider = %target.provider, model = %target.model, error = %e, "attempt failed");
                    if opened {
                        tracing::warn!(provider = %target.provider, cooldown_s = settings.breaker_cooldown.as_secs_f64(), "circuit opened");
                    }
                    attempts.push(Attempt {
                        provider: target.provider.clone(),
                        model: target.model.clone(),
                        outcome: "failed",
                        status: e.status(),
                        error: e.to_string(),
                    });
                    let retry_after = e.retry_after();
                    last = Some(e);
                    if opened {
                        break;
                    }
                    let Some(backoff) = delays.next() else { break };
                    let wait = match retry_after {
                        Some(ra) if ra > MAX_RETRY_AFTER => break,
                        Some(ra) => ra,
                        None => backoff,
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    Err(RouteError::Exhausted { attempts, last })
}

fn skipped(target: &Target, reason: String) -> Attempt {
    Attempt {
        provider: target.provider.clone(),
        model: target.model.clone(),
        outcome: "skipped",
        status: None,
        error: reason,
    }
}
