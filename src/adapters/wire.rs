//! HTTP plumbing shared by the adapters: sending with the right timeout, describing
//! failures by cause (never by URL or key), Retry-After, and error bodies in OpenAI's shape.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use crate::chat::ProviderError;
use crate::registry::Provider;
use crate::upstream::{self, Url};

/// Rewrites a provider's error body into OpenAI's shape, with any retry delay it carries.
pub type ErrorShape = fn(&Value) -> Option<(Value, Option<Duration>)>;

/// OpenAI-compatible APIs already answer in OpenAI's shape.
pub fn same_shape(_: &Value) -> Option<(Value, Option<Duration>)> {
    None
}

/// Sends a request. A whole exchange is bounded by the provider's timeout; a stream
/// only until its headers arrive, after which each event has its own timeout.
pub async fn send(
    request: upstream::Request,
    provider: &Provider,
    stream: bool,
    shape: ErrorShape,
) -> Result<upstream::Response, ProviderError> {
    let timeout = provider.timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut response = tokio::time::timeout_at(deadline, request.send())
        .await
        .map_err(|_| ProviderError::Timeout(timeout))?
        .map_err(|e| transport_error(e, timeout))?;
    if !stream {
        response.set_deadline(deadline);
    }
    if !response.status().is_success() {
        return Err(status_error(response, provider, timeout, shape).await);
    }
    Ok(response)
}

/// A provider URL made of its base URL and a path.
pub fn url(text: &str) -> Result<Url, ProviderError> {
    Url::parse(text).map_err(|e| ProviderError::Request(format!("not a usable URL: {e}")))
}

/// A POST carrying the provider's key in `header` (after `prefix`, such as "Bearer ")
/// and the provider's own headers.
pub fn post(
    http: &upstream::Client,
    url: &Url,
    provider: &Provider,
    header: &str,
    prefix: &str,
    body: &impl serde::Serialize,
) -> upstream::Request {
    authorized(http.post_json(url, body), provider, header, prefix)
}

/// The provider's key (in `header`, after `prefix`) and its configured headers on a request.
pub fn authorized(
    mut request: upstream::Request,
    provider: &Provider,
    header: &str,
    prefix: &str,
) -> upstream::Request {
    if let Some(key) = &provider.key {
        request = request.header(header, format!("{prefix}{}", key.expose()));
    }
    for (name, value) in &provider.headers {
        request = request.header(name, value);
    }
    request
}

/// The whole body of a successful non-streaming answer.
pub async fn body(response: upstream::Response, timeout: Duration) -> Result<Bytes, ProviderError> {
    response
        .bytes()
        .await
        .map_err(|e| transport_error(e, timeout))
}

/// The body of a successful answer, parsed as JSON.
pub async fn json(response: upstream::Response, timeout: Duration) -> Result<Value, ProviderError> {
    let bytes = body(response, timeout).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ProviderError::Protocol(format!("expected JSON: {e}")))
}

/// A transport failure as the provider's error, by its cause (never by URL).
pub fn transport_error(e: upstream::Error, timeout: Duration) -> ProviderError {
    match e {
        upstream::Error::Timeout => ProviderError::Timeout(timeout),
        upstream::Error::Connect(text) => ProviderError::Connect(text),
        upstream::Error::Protocol(text) => ProviderError::Protocol(text),
        upstream::Error::Request(text) => ProviderError::Request(text),
    }
}

/// Turns a non-2xx answer into an error, keeping its body (with the key scrubbed) and Retry-After.
async fn status_error(
    response: upstream::Response,
    provider: &Provider,
    timeout: Duration,
    shape: ErrorShape,
) -> ProviderError {
    let status = response.status().as_u16();
    let mut retry_after = retry_after(response.headers());
    let should_retry = match response
        .headers()
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
    {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let mut body = match tokio::time::timeout(timeout, response.bytes()).await {
        Ok(Ok(body)) => body,
        _ => Bytes::new(),
    };
    if let Some((openai, delay)) = serde_json::from_slice::<Value>(&body)
        .ok()
        .as_ref()
        .and_then(shape)
    {
        body = Bytes::from(openai.to_string());
        retry_after = retry_after.or(delay);
    }
    ProviderError::Status {
        status,
        body: scrub(body, provider),
        retry_after,
        should_retry,
    }
}

/// Removes the provider's key from text the upstream sent back, should it echo it.
pub fn scrub(body: Bytes, provider: &Provider) -> Bytes {
    match &provider.key {
        Some(key) => crate::chat::scrub_bytes(body, key.expose()),
        None => body,
    }
}

/// `retry-after-ms` (OpenAI), then `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
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
