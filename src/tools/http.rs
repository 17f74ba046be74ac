//! REST tools: a call rendered from the arguments, sent with the key from `auth`, its
//! body read up to a cap and shaped by the `result` template; on a skip (no key) or a
//! failure worth retrying elsewhere (connect error, timeout, 429, 5xx) the next tool of
//! the `fallback_to` chain is tried.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::{PromptTool, ToolError, ToolOutput, issues, validate_arguments};
use crate::registry::tools::{Body, HttpTool};
use crate::registry::{Registry, ToolKind};

/// Redirects followed at most, and only to the host the request went to.
const MAX_REDIRECTS: usize = 5;
/// How much of a failed response's body an error quotes.
const ERROR_SNIPPET: usize = 300;

/// One client for every REST tool: pooled, same-host redirects only.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let same_host = attempt
                .previous()
                .first()
                .is_some_and(|first| first.host_str() == attempt.url().host_str());
            if !same_host || attempt.previous().len() > MAX_REDIRECTS {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        crate::upstream::client_builder()
            .redirect(policy)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("llmhub/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    })
}

/// Why one tool of the chain gave no answer.
enum Failure {
    /// The next tool of the chain may answer instead.
    Retryable(String),
    /// The request itself is wrong (a 4xx): another service would say the same.
    Final(String),
}

struct Answer {
    status: u16,
    text: String,
    cut: bool,
}

pub async fn run(
    registry: &Registry,
    tool: &PromptTool,
    args: &Value,
) -> Result<ToolOutput, ToolError> {
    validate_arguments(tool, args)?;
    let mut tried = Vec::new();
    for t in tool.fallback_chain(registry) {
        let ToolKind::Http(http) = &t.kind else {
            continue;
        };
        if let Some(why) = &http.missing {
            tried.push(format!("{}: skipped, {why}", t.name));
            continue;
        }
        if t.name != tool.name
            && let Err(e) = validate_arguments(t, args)
        {
            tried.push(format!("{}: {e}", t.name));
            continue;
        }
        let secret = http.auth.as_ref().map_or("", |(_, v)| v.expose());
        match call(http, args).await {
            Ok(answer) => return finish(t, http, args, answer),
            Err(Failure::Final(why)) => {
                return Err(ToolError::Failed(scrub(
                    &format!("tool `{}`: {why}", t.name),
                    secret,
                )));
            }
            Err(Failure::Retryable(why)) => {
                tried.push(scrub(&format!("{}: {why}", t.name), secret))
            }
        }
    }
    Err(ToolError::Failed(format!(
        "tool `{}` got no answer: {}",
        tool.name,
        tried.join("; ")
    )))
}

fn scrub(text: &str, secret: &str) -> String {
    // The value alone, and without a `Bearer ` prefix, may be echoed back by a service.
    let bare = secret.strip_prefix("Bearer ").unwrap_or(secret);
    let mut out = text.to_string();
    for s in [secret, bare] {
        if !s.is_empty() {
            out = out.replace(s, crate::chat::REDACTED);
        }
    }
    out
}

async fn call(http: &HttpTool, args: &Value) -> Result<Answer, Failure> {
    let render = |what: &str, t: &crate::template::Template| {
        t.render(args)
            .map_err(|e| Failure::Final(format!("cannot render {what}: {e}")))
    };
    let url_text = render("url", &http.url)?;
    let mut url = reqwest::Url::parse(url_text.trim()).map_err(|e| {
        Failure::Final(format!("the rendered url \"{url_text}\" is not a URL: {e}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Failure::Final(format!(
            "the rendered url must be http or https, found `{}`",
            url.scheme()
        )));
    }
    {
        let mut pairs = url.query_pairs_mut();
        for (name, t) in &http.query {
            pairs.append_pair(name, &render(name, t)?);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let mut request = client()
        .request(http.method.clone(), url)
        .timeout(http.timeout);
    for (name, t) in &http.headers {
        request = request.header(name, render(name.as_str(), t)?);
    }
    if let Some((name, value)) = &http.auth {
        request = request.header(name, value.expose());
    }
    match &http.body {
        None => {}
        Some(Body::Text(t)) => request = request.body(render("body", t)?),
        Some(Body::Json(t)) => {
            let body = t
                .render(args)
                .map_err(|e| Failure::Final(format!("cannot render body: {e}")))?;
            request = request.json(&body);
        }
    }
    let response = request.send().await.map_err(|e| {
        Failure::Retryable(if e.is_timeout() {
            format!("no answer within {}s", http.timeout.as_secs_f64())
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            format!("request failed: {}", e.without_url())
        })
    })?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (bytes, cut) = read_capped(response, http.max_response_bytes)
        .await
        .map_err(Failure::Retryable)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let snippet = || {
        let s: String = text.chars().take(ERROR_SNIPPET).collect();
        if s.is_empty() {
            String::new()
        } else {
            format!(": {s}")
        }
    };
    match status {
        200..=299 => Ok(Answer { status, text, cut }),
        300..=399 => Err(Failure::Final(format!(
            "HTTP {status}: redirected to {}, not followed (redirects stay on the same host)",
            location.as_deref().unwrap_or("another place")
        ))),
        429 | 500..=599 => Err(Failure::Retryable(format!("HTTP {status}{}", snippet()))),
        _ => Err(Failure::Final(format!("HTTP {status}{}", snippet()))),
    }
}

/// The body up to `cap` bytes, and whether there was more.
async fn read_capped(response: reqwest::Response, cap: usize) -> Result<(Vec<u8>, bool), String> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the body broke off: {}", e.without_url()))?;
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

fn finish(
    tool: &PromptTool,
    http: &HttpTool,
    args: &Value,
    answer: Answer,
) -> Result<ToolOutput, ToolError> {
    let response: Value = if answer.cut {
        Value::Null
    } else {
        serde_json::from_str(&answer.text).unwrap_or(Value::Null)
    };
    let mut text = match &http.result {
        Some(t) => {
            let mut context: Map<String, Value> = args.as_object().cloned().unwrap_or_default();
            context.insert("response".into(), response.clone());
            context.insert("text".into(), json!(answer.text));
            context.insert("status".into(), json!(answer.status));
            t.render(&Value::Object(context)).map_err(|e| {
                ToolError::Failed(format!("tool `{}`: cannot render result: {e}", tool.name))
            })?
        }
        None => answer.text.clone(),
    };
    if answer.cut {
        text.push_str(&format!(
            "\n[response cut at {} bytes (max_response_bytes)]",
            http.max_response_bytes
        ));
    }
    let mut structured = None;
    if let Some(validator) = &tool.output {
        let value = if http.result.is_some() {
            serde_json::from_str(text.trim()).unwrap_or(Value::Null)
        } else {
            response
        };
        let found = issues(validator, &value);
        if !found.is_empty() {
            return Err(ToolError::InvalidOutput {
                reply: text,
                issues: found,
            });
        }
        structured = Some(value);
    }
    Ok(ToolOutput {
        text,
        structured,
        provider: tool.name.clone(),
        model: String::new(),
        usage: Value::Null,
    })
}
