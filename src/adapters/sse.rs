//! Reading an upstream's server-sent events and turning them, event by event, into
//! OpenAI chunks: one driver for every adapter, each supplying its own translator.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;

use crate::chat::{ChunkStream, ProviderError};

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
}

/// Streams a response's events through `translator`, waiting at most `timeout` for each event.
pub fn translate<T: Translator>(
    response: reqwest::Response,
    timeout: Duration,
    translator: T,
) -> ChunkStream {
    let state = State {
        events: response.bytes_stream().eventsource(),
        translator,
        pending: VecDeque::new(),
        done: false,
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
                        return Some((Err(e), s));
                    }
                }
            }
        },
    ))
}

/// OpenAI-compatible upstreams already speak chunks: pass each `data` through, stop at `[DONE]`.
pub struct Passthrough;

impl Translator for Passthrough {
    fn event(&mut self, event: &Event) -> Result<Step, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Step::Finished(Vec::new()));
        }
        if data.is_empty() {
            return Ok(Step::Chunks(Vec::new()));
        }
        Ok(Step::Chunks(vec![Bytes::from(event.data.clone())]))
    }

    /// Some compatible servers close without `[DONE]`; what they sent is the answer.
    fn closed(&mut self) -> Result<Vec<Bytes>, ProviderError> {
        Ok(Vec::new())
    }
}
