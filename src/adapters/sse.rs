//! Reading an upstream's server-sent events and turning them, event by event, into
//! OpenAI chunks: one driver for every adapter, each supplying its own translator.

use std::collections::VecDeque;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;
use memchr::memmem::Finder;

use crate::chat::{ChunkStream, ProviderError};
use crate::registry::{Provider, Secret};

/// What a translator makes of one upstream event.
pub enum Step {
    /// Chunks to send (possibly none), and the stream goes on.
    Chunks(Vec<Bytes>),
    /// Chunks to send, and the answer is complete.
    Finished(Vec<Bytes>),
}

/// Turns one provider's events into OpenAI `chat.completion.chunk` JSON texts.
pub trait Translator: Send + 'static {
    fn event(&mut self, event: &Event) -> Result<Step, ProviderError>;

    /// The upstream closed the connection without saying the answer was complete.
    fn closed(&mut self) -> Result<Vec<Bytes>, ProviderError> {
        Err(ProviderError::Connect(
            "the stream ended before the answer was complete".to_string(),
        ))
    }
}

struct State<S, T> {
    events: S,
    translator: T,
    pending: VecDeque<Bytes>,
    done: bool,
    /// Upstreams may echo the key in an error event; errors leave here without it.
    key: Option<Secret>,
}

/// Streams a response's events through `translator`, waiting at most the provider's
/// timeout for each event.
pub fn translate<T: Translator>(
    response: crate::upstream::Response,
    provider: &Provider,
    translator: T,
) -> ChunkStream {
    let timeout: Duration = provider.timeout;
    let state = State {
        events: by_line(response.bytes_stream()).eventsource(),
        translator,
        pending: VecDeque::new(),
        done: false,
        key: provider.key.clone(),
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut s| async move {
            loop {
                if let Some(chunk) = s.pending.pop_front() {
                    return Some((Ok(chunk), s));
                }
                if s.done {
                    return None;
                }
                // The timeout is per event: a long answer may stream for minutes, a silent one may not.
                let next = match tokio::time::timeout(timeout, s.events.next()).await {
                    Err(_) => {
                        s.done = true;
                        return Some((Err(ProviderError::Timeout(timeout)), s));
                    }
                    Ok(next) => next,
                };
                let step = match next {
                    Some(Ok(event)) => s.translator.event(&event),
                    Some(Err(e)) => Err(ProviderError::Connect(format!("stream broke: {e}"))),
                    None => s.translator.closed().map(Step::Finished),
                };
                match step {
                    Ok(Step::Chunks(chunks)) => s.pending.extend(chunks),
                    Ok(Step::Finished(chunks)) => {
                        s.pending.extend(chunks);
                        s.done = true;
                    }
                    Err(e) => {
                        s.done = true;
                        s.pending.clear();
                        let e = match &s.key {
                            Some(key) => e.scrubbed(key.expose()),
                            None => e,
                        };
                        return Some((Err(e), s));
                    }
                }
            }
        },
    ))
}

/// The upstream's reads, cut after each line feed (slices of the same buffers, no
/// copies). eventsource-stream moves the rest of its buffer after every line it takes,
/// so a 64 KiB read holding hundreds of short events cost it time quadratic in the read:
/// one line at a time keeps it linear (bench/README.md, streaming rows).
fn by_line<S, E>(reads: S) -> impl futures_util::Stream<Item = Result<Bytes, E>>
where
    S: futures_util::Stream<Item = Result<Bytes, E>>,
{
    reads.flat_map(|read| {
        let pieces: Vec<Result<Bytes, E>> = match read {
            Ok(bytes) => split_lines(bytes).into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures_util::stream::iter(pieces)
    })
}

/// `bytes` cut after every `\n`; the last piece is what follows the last one, if anything.
fn split_lines(mut bytes: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(at) = memchr::memchr(b'\n', &bytes) {
        out.push(bytes.split_to(at + 1));
    }
    if !bytes.is_empty() {
        out.push(bytes);
    }
    out
}

/// OpenAI-compatible upstreams already speak chunks: pass each `data` through, stop at
/// `[DONE]`, and turn the upstream's own `{"error": …}` event into an error.
#[derive(Default)]
pub struct Passthrough {
    /// A chunk carried a `finish_reason`: the answer is whole even if `[DONE]` never comes.
    finished: bool,
}

impl Translator for Passthrough {
    fn event(&mut self, event: &Event) -> Result<Step, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Step::Finished(Vec::new()));
        }
        if data.is_empty() {
            return Ok(Step::Chunks(Vec::new()));
        }
        static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
        if ERROR.find(data.as_bytes()).is_some() && is_error_event(data) {
            return Err(ProviderError::StreamError {
                body: Bytes::from(data.to_string()),
            });
        }
        if !self.finished && has_finish_reason(data) {
            self.finished = true;
        }
        Ok(Step::Chunks(vec![Bytes::from(event.data.clone())]))
    }

    /// Some compatible servers close without `[DONE]`: the answer is whole only if a
    /// chunk said why it finished; otherwise the connection was cut mid-answer.
    fn closed(&mut self) -> Result<Vec<Bytes>, ProviderError> {
        if self.finished {
            Ok(Vec::new())
        } else {
            Err(ProviderError::Connect(
                "the stream ended before the answer was complete (no finish_reason, no [DONE])"
                    .to_string(),
            ))
        }
    }
}

/// A top-level `error` member that is not null: OpenAI's mid-stream error event.
fn is_error_event(data: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("error").map(|e| !e.is_null()))
        .unwrap_or(false)
}

/// Whether a chunk has a non-null `finish_reason`, without parsing it: every OpenAI
/// chunk carries `"finish_reason":null` until the last.
fn has_finish_reason(data: &str) -> bool {
    const KEY: &str = "\"finish_reason\"";
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(KEY));
    let mut rest = data;
    while let Some(at) = FINDER.find(rest.as_bytes()) {
        rest = &rest[at + KEY.len()..];
        let value = rest.trim_start().strip_prefix(':').map(str::trim_start);
        if value.is_some_and(|v| v.starts_with('"')) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_cut_after_each_line_feed_and_nothing_is_lost() {
        let pieces = split_lines(Bytes::from_static(b"data: a\n\ndata: b\r\n\r\ndata: par"));
        let pieces: Vec<&[u8]> = pieces.iter().map(|p| p.as_ref()).collect();
        assert_eq!(
            pieces,
            [
                &b"data: a\n"[..],
                b"\n",
                b"data: b\r\n",
                b"\r\n",
                b"data: par"
            ]
        );
        assert!(split_lines(Bytes::new()).is_empty());
    }

    #[test]
    fn a_finish_reason_is_found_in_any_spacing() {
        assert!(has_finish_reason(
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#
        ));
        assert!(has_finish_reason(
            r#"{"choices":[{"delta":{}, "finish_reason" : "length"}]}"#
        ));
        assert!(!has_finish_reason(
            r#"{"choices":[{"delta":{"content":"finish_reason"},"finish_reason":null}]}"#
        ));
        assert!(!has_finish_reason(r#"{"choices":[]}"#));
    }

    #[test]
    fn only_a_non_null_error_member_is_an_error_event() {
        assert!(is_error_event(r#"{"error":{"message":"overloaded"}}"#));
        assert!(!is_error_event(r#"{"error":null,"choices":[]}"#));
        assert!(!is_error_event(
            r#"{"choices":[{"delta":{"content":"\"error\""}}]}"#
        ));
    }
}
