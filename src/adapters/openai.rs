//! The generic adapter for every OpenAI-compatible API (OpenAI, Mistral, xAI, Groq,
//! DeepSeek, OpenRouter, Together, Ollama, vLLM…): the request goes out nearly
//! untouched and the reply comes back byte for byte.

use super::{Call, wire};
use crate::chat::{ChatRequest, ChunkStream, Completion, ProviderError};

pub async fn chat(call: Call<'_>) -> Result<Completion, ProviderError> {
    let mut request = call.prepared()?;
    request.stream = None;
    request.stream_options = None;
    let response = wire::send(
        post(&call, &request)?,
        call.provider,
        false,
        wire::same_shape,
    )
    .await?;
    let body = wire::body(response, call.provider.timeout).await?;
    Completion::passed_through(body)
        .map_err(|e| ProviderError::Protocol(format!("expected a chat.completion object: {e}")))
}

pub async fn chat_stream(call: Call<'_>) -> Result<ChunkStream, ProviderError> {
    let mut request = call.prepared()?;
    request.stream = Some(true);
    let response = wire::send(
        post(&call, &request)?,
        call.provider,
        true,
        wire::same_shape,
    )
    .await?;
    Ok(super::sse::translate(
        response,
        call.provider,
        super::sse::Passthrough::default(),
    ))
}

fn post(call: &Call<'_>, request: &ChatRequest) -> Result<crate::upstream::Request, ProviderError> {
    let url = call.provider.chat_url.as_ref().ok_or_else(|| {
        ProviderError::Request(format!(
            "provider {} has no usable base_url",
            call.provider.name
        ))
    })?;
    Ok(wire::post(
        call.http,
        url,
        call.provider,
        "authorization",
        "Bearer ",
        request,
    ))
}
