//! The generic adapter for every OpenAI-compatible API (OpenAI, Mistral, xAI, Groq,
//! DeepSeek, OpenRouter, Together, Ollama, vLLM…): the request goes out nearly
//! untouched and the reply comes back byte for byte.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Call, wire};
use crate::chat::{ChunkStream, Completion, Message, ProviderError, StreamOptions};

/// The body this provider receives: the client's request with this call's model id,
/// stream fields and (when the provider adds a system prompt) messages.
fn outgoing(call: &Call<'_>, stream: bool) -> Result<Bytes, ProviderError> {
    let prepared = call.prepared()?;
    // `prepared` differs from the client's request in its messages alone, and only when
    // it is a copy.
    let messages = match &prepared {
        Cow::Borrowed(_) => None,
        Cow::Owned(request) => Some(&request.messages[..]),
    };
    let stream_options = prepared.stream_options.as_ref().filter(|_| stream);
    if let Some(body) = call
        .request
        .text
        .as_deref()
        .and_then(|text| spliced(text, call.model, messages, stream, stream_options))
    {
        return Ok(body);
    }
    let body = Outgoing {
        model: call.model,
        messages: &prepared.messages,
        stream: stream.then_some(true),
        stream_options,
        extra: &prepared.extra,
    };
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|e| ProviderError::Request(format!("cannot write the request as JSON: {e}")))
}

/// The request written from its fields, when there is no client text to pass on.
#[derive(Serialize)]
struct Outgoing<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<&'a StreamOptions>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

/// The client's JSON text with `model`, the stream fields and, when given, `messages`
/// replaced, and every other member copied as it came, in its order, spelled as it was:
/// copying is all a long context costs. `None` if the text is not a JSON object.
fn spliced(
    text: &[u8],
    model: &str,
    messages: Option<&[Message]>,
    stream: bool,
    stream_options: Option<&StreamOptions>,
) -> Option<Bytes> {
    let members = members(text)?;
    let mut out = Vec::with_capacity(text.len() + model.len() + 64);
    out.extend_from_slice(b"{\"model\":");
    serde_json::to_writer(&mut out, model).ok()?;
    let mut messages_written = messages.is_none();
    for (at, value) in members {
        let name = &text[at.clone()];
        if is_one_of(name, &["model", "stream", "stream_options"]) {
            continue;
        }
        out.push(b',');
        match messages {
            Some(messages) if is_one_of(name, &["messages"]) => {
                out.extend_from_slice(b"\"messages\":");
                serde_json::to_writer(&mut out, messages).ok()?;
                messages_written = true;
            }
            _ => out.extend_from_slice(&text[at.start..value.end]),
        }
    }
    if !messages_written {
        return None;
    }
    if stream {
        out.extend_from_slice(b",\"stream\":true");
    }
    if let Some(options) = stream_options {
        out.extend_from_slice(b",\"stream_options\":");
        serde_json::to_writer(&mut out, options).ok()?;
    }
    out.push(b'}');
    Some(Bytes::from(out))
}

/// Whether a member name, as written (quotes and escapes included), is one of `names`.
fn is_one_of(written: &[u8], names: &[&str]) -> bool {
    let plain = &written[1..written.len() - 1];
    if !plain.contains(&b'\\') {
        return names.iter().any(|n| n.as_bytes() == plain);
    }
    serde_json::from_slice::<String>(written).is_ok_and(|name| names.contains(&name.as_str()))
}

/// The byte ranges of each top-level member's name (quotes included) and value in the
/// text of a JSON object that serde_json has already read whole, so it is known to be
/// valid: strings are skipped with `memchr`, and a long context costs a search, not a
/// second parse. `None` if the text is not an object.
fn members(text: &[u8]) -> Option<Vec<(Range<usize>, Range<usize>)>> {
    let mut at = skip_space(text, 0);
    if text.get(at) != Some(&b'{') {
        return None;
    }
    let mut members = Vec::with_capacity(8);
    at += 1;
    loop {
        at = skip_space(text, at);
        match text.get(at)? {
            b'}' => return Some(members),
            b',' => at = skip_space(text, at + 1),
            _ => {}
        }
        if text.get(at) != Some(&b'"') {
            return None;
        }
        let name = at..string_end(text, at)?;
        at = skip_space(text, name.end);
        if text.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_space(text, at + 1);
        let value = start..value_end(text, start)?;
        at = value.end;
        members.push((name, value));
    }
}

fn skip_space(text: &[u8], from: usize) -> usize {
    text.len()
        - text
            .get(from..)
            .unwrap_or_default()
            .trim_ascii_start()
            .len()
}

/// Where the string opening at `start` ends (after its closing quote).
fn string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        at += memchr::memchr2(b'"', b'\\', text.get(at..)?)?;
        if text[at] == b'"' {
            return Some(at + 1);
        }
        // An escape: the next byte is escaped, whatever it is.
        at += 2;
    }
}

/// Where the value starting at `start` ends.
fn value_end(text: &[u8], start: usize) -> Option<usize> {
    match text.get(start)? {
        b'"' => string_end(text, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = start;
            loop {
                match text.get(at)? {
                    b'"' => {
                        at = string_end(text, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        // A number, true, false or null: up to the next delimiter.
        _ => Some(
            start
                + text[start..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                    .unwrap_or(text.len() - start),
        ),
    }
}

pub async fn chat(call: Call<'_>) -> Result<Completion, ProviderError> {
    let response = wire::send(
        post(&call, outgoing(&call, false)?)?,
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
    let response = wire::send(
        post(&call, outgoing(&call, true)?)?,
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

fn post(call: &Call<'_>, body: Bytes) -> Result<crate::upstream::Request, ProviderError> {
    let url = call.provider.chat_url.as_ref().ok_or_else(|| {
        ProviderError::Request(format!(
            "provider {} has no usable base_url",
            call.provider.name
        ))
    })?;
    Ok(wire::authorized(
        call.http.post_json_text(url, body),
        call.provider,
        "authorization",
        "Bearer ",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splice(text: &str, stream: bool) -> Option<String> {
        let options = StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        };
        let options = stream.then_some(&options);
        spliced(text.as_bytes(), "m", None, stream, options)
            .map(|b| String::from_utf8(b.to_vec()).expect("utf-8"))
    }

    #[test]
    fn members_are_copied_as_written_around_strings_that_look_like_structure() {
        let text = r#" { "a" : "x\\" , "b":{"c":"}]\"{","d":[]} , "model" : "up/m" ,"n":-1.5e3,"t":true,"z":null,"arr":[1,[2,{"q":"]"}]], "stream": false } "#;
        let out = splice(text, false).expect("an object");
        assert_eq!(
            out,
            r#"{"model":"m","a" : "x\\","b":{"c":"}]\"{","d":[]},"n":-1.5e3,"t":true,"z":null,"arr":[1,[2,{"q":"]"}]]}"#
        );
        let parsed: Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(parsed["b"]["c"], "}]\"{");
        assert_eq!(parsed["a"], "x\\");
    }

    #[test]
    fn names_spelled_with_escapes_are_still_replaced() {
        let text = r#"{"mod\u0065l":"up/m","str\u0065am":true,"stream_options":{"include_usage":false},"caf\u00e9":1}"#;
        assert_eq!(
            splice(text, true).expect("an object"),
            r#"{"model":"m","caf\u00e9":1,"stream":true,"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(splice("{}", false).as_deref(), Some(r#"{"model":"m"}"#));
    }

    #[test]
    fn messages_given_replace_the_written_ones_and_nothing_else() {
        let messages = [
            Message::text("system", "Rules.".into()),
            Message::text("user", "hi".into()),
        ];
        let text =
            br#"{"seed": 1e400, "messages": [{"role": "user", "content": "hi"}], "model": "x"}"#;
        let out = spliced(text, "m", Some(&messages), false, None).expect("an object");
        assert_eq!(
            String::from_utf8(out.to_vec()).expect("utf-8"),
            r#"{"model":"m","seed": 1e400,"messages":[{"role":"system","content":"Rules."},{"role":"user","content":"hi"}]}"#
        );
        // Without a member to replace, the messages would be lost: written from fields.
        assert_eq!(
            spliced(br#"{"model":"x"}"#, "m", Some(&messages), false, None),
            None
        );
    }

    #[test]
    fn text_that_is_not_an_object_is_left_to_serialization() {
        assert_eq!(splice(r#"["model", []]"#, false), None);
        assert_eq!(splice("", false), None);
        assert_eq!(splice(r#"{"a":"unterminated"#, false), None);
    }
}
