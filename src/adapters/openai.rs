//! The generic adapter for every OpenAI-compatible API (OpenAI, Mistral, xAI, Groq,
//! DeepSeek, OpenRouter, Together, Ollama, vLLM…): the request goes out nearly
//! untouched and the reply comes back byte for byte.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Call, ChatRequest, ChunkStream, Completion, ProviderError};
use crate::registry::Provider;

pub async fn chat(call: Call<'_>) -> Result<Completion, ProviderError> {
    let mut request = call.prepared()?;
    request.stream = None;
    request.stream_options = None;
    let timeout = call.provider.timeout;
    let response = post(&call, &request)?
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| transport_error(e, timeout))?;
    if !response.status().is_success() {
        return Err(status_error(response, call.provider, timeout).await);
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(e, timeout))?;
    // A 200 carrying an HTML error page from a proxy must fall back, not reach the client.
    #[derive(Deserialize)]
    struct Shape {
        #[allow(dead_code)]
        choices: IgnoredAny,
    }
    serde_json::from_slice::<Shape>(&body)
        .map_err(|e| ProviderError::Protocol(format!("expected a chat.completion object: {e}")))?;
    Ok(Completion { body })
}

pub async fn chat_stream(call: Call<'_>) -> Result<ChunkStream, ProviderError> {
    let mut request = call.prepared()?;
    request.stream = Some(true);
    let timeout = call.provider.timeout;
    let response = tokio::time::timeout(timeout, post(&call, &request)?.send())
        .await
        .map_err(|_| ProviderError::Timeout(timeout))?
        .map_err(|e| transport_error(e, timeout))?;
    if !response.status().is_success() {
        return Err(status_error(response, call.provider, timeout).await);
    }
    let events = response.bytes_stream().eventsource();
    let stream =
        futures_util::stream::unfold((events, false), move |(mut events, done)| async move {
            if done {
                return None;
            }
            loop {
                // The timeout is per event: a long answer may stream for minutes, a silent one may not.
                let next = match tokio::time::timeout(timeout, events.next()).await {
                    Err(_) => return Some((Err(ProviderError::Timeout(timeout)), (events, true))),
                    Ok(None) => return None,
                    Ok(Some(next)) => next,
                };
                match next {
                    Ok(event) if event.data.trim() == "[DONE]" => return None,
                    Ok(event) if event.data.trim().is_empty() => continue,
                    Ok(event) => return Some((Ok(Bytes::from(event.data)), (events, false))),
                    Err(e) => {
                        let err = ProviderError::Connect(format!("stream broke: {e}"));
                        return Some((Err(err), (events, true)));
                    }
                }
            }
        });
    Ok(Box::pin(stream))
}

fn post(call: &Call<'_>, request: &ChatRequest) -> Result<reqwest::RequestBuilder, ProviderError> {
    let url = call.provider.chat_url.clone().ok_or_else(|| {
        ProviderError::Request(format!(
            "provider {} has no usable base_url",
            call.provider.name
        ))
    })?;
    let mut builder = call.http.post(url).json(request);
    if let Some(key) = &call.provider.key {
        builder = builder.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
    }
    for (name, value) in &call.provider.headers {
        builder = builder.header(name, value);
    }
    Ok(builder)
}

/// Describes a transport failure by its cause, never by URL (a URL may carry credentials).
pub(crate) fn transport_error(e: reqwest::Error, timeout: Duration) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout(timeout);
    }
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let e = e.without_url();
    let text = if cause.is_empty() {
        e.to_string()
    } else {
        cause
    };
    if e.is_connect() {
        ProviderError::Connect(text)
    } else if e.is_decode() || e.is_body() {
        ProviderError::Protocol(text)
    } else {
        ProviderError::Connect(text)
    }
}

/// Turns a non-2xx answer into an error, keeping its body (with the key scrubbed) and Retry-After.
pub(crate) async fn status_error(
    response: reqwest::Response,
    provider: &Provider,
    timeout: Duration,
) -> ProviderError {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = match tokio::time::timeout(timeout, response.bytes()).await {
        Ok(Ok(body)) => body,
        _ => Bytes::new(),
    };
    ProviderError::Status {
        status,
        body: scrub(body, provider),
        retry_after,
    }
}

/// Removes the provider's key from text the upstream sent back, should it echo it.
pub(crate) fn scrub(body: Bytes, provider: &Provider) -> Bytes {
    let Some(key) = provider.key.as_ref().map(|k| k.expose()) else {
        return body;
    };
    if key.is_empty() || !body.windows(key.len()).any(|w| w == key.as_bytes()) {
        return body;
    }
    Bytes::from(String::from_utf8_lossy(&body).replace(key, "[redacted]"))
}

/// `retry-after-ms` (OpenAI), then `Retry-After` in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut d = HeaderMap::new();
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        d.insert(RETRY_AFTER, later.parse().expect("header"));
        let got = retry_after(&d).expect("date");
        assert!(
            got > Duration::from_secs(25) && got <= Duration::from_secs(30),
            "{got:?}"
        );
        d.insert(RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(retry_after(&d), None);
    }
}
