//! Reading an upstream's server-sent events and turning them, event by event, into
//! OpenAI chunks: one driver for every adapter, each supplying its own translator.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use memchr::memmem::Finder;

use crate::chat::{ChunkStream, ProviderError};
use crate::registry::{Provider, Secret};

/// What a translator makes of one upstream event.
pub enum Step {
    /// One chunk to send, and the stream goes on: a passed-through chunk, without a `Vec`.
    Chunk(Bytes),
    /// Chunks to send (possibly none), and the stream goes on.
    Chunks(Vec<Bytes>),
    /// Chunks to send, and the answer is complete.
    Finished(Vec<Bytes>),
}

/// Turns one provider's events into OpenAI `chat.completion.chunk` JSON texts.
pub trait Translator: Send + 'static {
    fn event(&mut self, event: Event) -> Result<Step, ProviderError>;

    /// The upstream closed the connection without saying the answer was complete.
    fn closed(&mut self) -> Result<Vec<Bytes>, ProviderError> {
        Err(ProviderError::Connect(
            "the stream ended before the answer was complete".to_string(),
        ))
    }
}

/// Streams a response's events through `translator`, waiting at most the provider's
/// timeout for each event.
pub fn translate<T: Translator + Unpin>(
    response: crate::upstream::Response,
    provider: &Provider,
    translator: T,
) -> ChunkStream {
    let timeout = provider.timeout;
    Box::pin(Translated {
        events: Events::new(response.bytes_stream()),
        translator,
        pending: VecDeque::new(),
        done: false,
        key: provider.key.clone(),
        timeout,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        waiting: false,
    })
}

/// The chunks of one upstream stream. Written as a stream by hand rather than with
/// `unfold`, which moves its whole state in and out of a new future for every chunk.
struct Translated<T> {
    events: Events<crate::upstream::BodyStream>,
    translator: T,
    pending: VecDeque<Bytes>,
    done: bool,
    /// Upstreams may echo the key in an error event; errors leave here without it.
    key: Option<Secret>,
    timeout: Duration,
    /// The per-event deadline: a long answer may stream for minutes, a silent one may
    /// not. Armed only while waiting for a read; events already read need no timer, and
    /// most of a fast stream's events arrive together in one read.
    deadline: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
}

impl<T: Translator + Unpin> Stream for Translated<T> {
    type Item = Result<Bytes, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let next = match this.events.poll_next_unpin(cx) {
                Poll::Ready(next) => {
                    this.waiting = false;
                    next
                }
                Poll::Pending => {
                    if !this.waiting {
                        this.waiting = true;
                        let at = tokio::time::Instant::now() + this.timeout;
                        this.deadline.as_mut().reset(at);
                    }
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        return Poll::Ready(Some(Err(ProviderError::Timeout(this.timeout))));
                    }
                    return Poll::Pending;
                }
            };
            let step = match next {
                Some(Ok(event)) => this.translator.event(event),
                Some(Err(e)) => Err(ProviderError::Connect(format!("stream broke: {e}"))),
                None => this.translator.closed().map(Step::Finished),
            };
            match step {
                Ok(Step::Chunk(chunk)) => return Poll::Ready(Some(Ok(chunk))),
                Ok(Step::Chunks(chunks)) => this.pending.extend(chunks),
                Ok(Step::Finished(chunks)) => {
                    this.pending.extend(chunks);
                    this.done = true;
                }
                Err(e) => {
                    this.done = true;
                    this.pending.clear();
                    let e = match &this.key {
                        Some(key) => e.scrubbed(key.expose()),
                        None => e,
                    };
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

/// One server-sent event: its type (`message` unless named) and its data lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: Cow<'static, str>,
    /// The bytes as sent: a one-line event's data is a slice of the read it came in, not
    /// a copy. Passed-through chunks reach the client's own decoder unchanged; readers
    /// that need the text take [`Event::text`].
    pub data: Bytes,
}

impl Event {
    /// The data as text, invalid UTF-8 replaced by U+FFFD as the standard says.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }
}

/// Server-sent events parsed from a body's reads as the HTML standard defines them
/// (CRLF, LF or CR line ends; comments; `data` lines joined with LF; a leading BOM
/// dropped; an event left incomplete at the end discarded), each line taken where it
/// lies in the read. The data bytes are kept as sent: decoding them (U+FFFD for invalid
/// UTF-8) is left to whoever reads them as text. eventsource-stream did the same through
/// a nom parser and a string buffer rebuilt per line, which was most of the time a
/// stream spent in llmhub (bench/README.md, streaming rows).
pub struct Events<S> {
    reads: S,
    /// The start of a line whose end has not arrived yet.
    partial: BytesMut,
    /// The previous read ended in CR: an LF opening the next belongs to that line end.
    after_cr: bool,
    first_line: bool,
    event: String,
    data: Data,
    ready: VecDeque<Event>,
    ended: bool,
}

/// The `data` lines of the event being read.
enum Data {
    None,
    /// The usual case: one line, kept as a slice of its read.
    One(Bytes),
    /// Lines joined with LF.
    Many(BytesMut),
}

impl<S> Events<S> {
    pub fn new(reads: S) -> Events<S> {
        Events {
            reads,
            partial: BytesMut::new(),
            after_cr: false,
            first_line: true,
            event: String::new(),
            data: Data::None,
            ready: VecDeque::new(),
            ended: false,
        }
    }

    fn feed(&mut self, read: &Bytes) {
        let mut from = 0;
        if std::mem::take(&mut self.after_cr) && read.first() == Some(&b'\n') {
            from = 1;
        }
        while let Some(at) = memchr::memchr2(b'\n', b'\r', &read[from..]).map(|at| from + at) {
            if self.partial.is_empty() {
                self.line(read, from, at);
            } else {
                self.partial.extend_from_slice(&read[from..at]);
                let line = std::mem::take(&mut self.partial).freeze();
                self.line(&line, 0, line.len());
            }
            from = at + 1;
            if read[at] == b'\r' {
                match read.get(from) {
                    Some(b'\n') => from += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.partial.extend_from_slice(&read[from..]);
    }

    /// The line `source[start..end]`.
    fn line(&mut self, source: &Bytes, mut start: usize, end: usize) {
        if std::mem::take(&mut self.first_line)
            && source[start..end].starts_with("\u{feff}".as_bytes())
        {
            start += "\u{feff}".len();
        }
        let line = &source[start..end];
        if line.is_empty() {
            let data = match std::mem::replace(&mut self.data, Data::None) {
                Data::None => {
                    self.event.clear();
                    return;
                }
                Data::One(data) => data,
                Data::Many(data) => data.freeze(),
            };
            let event = match std::mem::take(&mut self.event) {
                name if name.is_empty() => Cow::Borrowed("message"),
                name => Cow::Owned(name),
            };
            self.ready.push_back(Event { event, data });
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(at) => {
                let value = at + 1 + usize::from(line.get(at + 1) == Some(&b' '));
                (&line[..at], start + value)
            }
            None => (line, end),
        };
        match field {
            b"data" => {
                let value = source.slice(value..end);
                self.data = match std::mem::replace(&mut self.data, Data::None) {
                    Data::None => Data::One(value),
                    Data::One(first) => {
                        let mut joined = BytesMut::with_capacity(first.len() + 1 + value.len());
                        joined.extend_from_slice(&first);
                        joined.extend_from_slice(b"\n");
                        joined.extend_from_slice(&value);
                        Data::Many(joined)
                    }
                    Data::Many(mut joined) => {
                        joined.extend_from_slice(b"\n");
                        joined.extend_from_slice(&value);
                        Data::Many(joined)
                    }
                };
            }
            b"event" => self.event = String::from_utf8_lossy(&source[value..end]).into_owned(),
            // `id` and `retry` steer a browser's reconnection, which llmhub never does.
            _ => {}
        }
    }
}

impl<S, E> Stream for Events<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Event, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match this.reads.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(read))) => this.feed(&read),
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// OpenAI-compatible upstreams already speak chunks: pass each `data` through, stop at
/// `[DONE]`, and turn the upstream's own `{"error": …}` event into an error.
#[derive(Default)]
pub struct Passthrough {
    /// A chunk carried a `finish_reason`: the answer is whole even if `[DONE]` never comes.
    finished: bool,
}

impl Translator for Passthrough {
    fn event(&mut self, event: Event) -> Result<Step, ProviderError> {
        let data = event.data.trim_ascii();
        if data == b"[DONE]" {
            return Ok(Step::Finished(Vec::new()));
        }
        if data.is_empty() {
            return Ok(Step::Chunks(Vec::new()));
        }
        static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
        if ERROR.find(data).is_some() && is_error_event(data) {
            return Err(ProviderError::StreamError {
                body: Bytes::copy_from_slice(data),
            });
        }
        if !self.finished && has_finish_reason(data) {
            self.finished = true;
        }
        Ok(Step::Chunk(event.data))
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
fn is_error_event(data: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("error").map(|e| !e.is_null()))
        .unwrap_or(false)
}

/// Whether a chunk has a non-null `finish_reason`, without parsing it: every OpenAI
/// chunk carries `"finish_reason":null` until the last.
fn has_finish_reason(data: &[u8]) -> bool {
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));
    member_starts_with(data, &FINDER, b'"')
}

/// Whether some member `key` (a finder for `"name"`, quotes included) of a chunk's JSON
/// text has a value starting with `first` (`"` a string, `{` an object), read without
/// parsing the chunk: the key, then `:` and the value, whitespace allowed between.
pub fn member_starts_with(data: &[u8], key: &Finder<'_>, first: u8) -> bool {
    let mut rest = data;
    while let Some(at) = key.find(rest) {
        rest = &rest[at + key.needle().len()..];
        let value = rest
            .trim_ascii_start()
            .strip_prefix(b":")
            .map(<[u8]>::trim_ascii_start);
        if value.is_some_and(|v| v.first() == Some(&first)) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of `reads`, each read as it would arrive.
    fn parse(reads: &[&[u8]]) -> Vec<(String, String)> {
        let reads: Vec<Result<Bytes, ()>> = reads
            .iter()
            .map(|r| Ok(Bytes::copy_from_slice(r)))
            .collect();
        let events = Events::new(futures_util::stream::iter(reads));
        futures_util::FutureExt::now_or_never(events.collect::<Vec<_>>())
            .expect("reads that are all ready")
            .into_iter()
            .map(|e| {
                let e = e.expect("no read fails");
                let data = e.text().into_owned();
                (e.event.into_owned(), data)
            })
            .collect()
    }

    fn ev(event: &str, data: &str) -> (String, String) {
        (event.to_string(), data.to_string())
    }

    #[test]
    fn events_follow_the_html_standard() {
        let text = b"\xef\xbb\xbfdata: one\n\n: a comment\nevent: named\ndata:two\ndata:  three\n\nid: 7\nretry: 10\n\ndata\n\nunknown: x\ndata: {\"a\":\"b: c\"}\n\ndata: 1\ndata:\ndata: 3\n\n";
        let expected = vec![
            ev("message", "one"),
            ev("named", "two\n three"),
            ev("message", ""),
            ev("message", "{\"a\":\"b: c\"}"),
            ev("message", "1\n\n3"),
        ];
        assert_eq!(parse(&[text]), expected);
        // Every way of cutting the same bytes into reads gives the same events.
        for cut in 1..text.len() {
            assert_eq!(
                parse(&[&text[..cut], &text[cut..]]),
                parse(&[text]),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn crlf_and_cr_end_lines_too_even_split_between_reads() {
        let expected = vec![ev("message", "a"), ev("e", "b")];
        assert_eq!(parse(&[b"data: a\r\n\r\nevent: e\rdata: b\r\r"]), expected);
        assert_eq!(
            parse(&[b"data: a\r", b"\n\r", b"\nevent: e\r", b"data: b\r\r"]),
            expected
        );
    }

    #[test]
    fn an_event_cut_off_by_the_end_is_discarded_and_an_empty_one_is_none() {
        assert_eq!(
            parse(&[b"data: whole\n\ndata: cut"]),
            vec![ev("message", "whole")]
        );
        assert_eq!(
            parse(&[b"event: x\n\ndata: y\n\n"]),
            vec![ev("message", "y")]
        );
        assert!(parse(&[b""]).is_empty());
    }

    #[test]
    fn invalid_utf8_becomes_the_replacement_character() {
        assert_eq!(
            parse(&[b"event: n\xffx\ndata: a\xffb\n\n"]),
            vec![ev("n\u{fffd}x", "a\u{fffd}b")]
        );
    }

    #[test]
    fn a_finish_reason_is_found_in_any_spacing() {
        assert!(has_finish_reason(
            br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#
        ));
        assert!(has_finish_reason(
            br#"{"choices":[{"delta":{}, "finish_reason" : "length"}]}"#
        ));
        assert!(!has_finish_reason(
            br#"{"choices":[{"delta":{"content":"finish_reason"},"finish_reason":null}]}"#
        ));
        assert!(!has_finish_reason(br#"{"choices":[]}"#));
    }

    #[test]
    fn only_a_non_null_error_member_is_an_error_event() {
        assert!(is_error_event(br#"{"error":{"message":"overloaded"}}"#));
        assert!(!is_error_event(br#"{"error":null,"choices":[]}"#));
        assert!(!is_error_event(
            br#"{"choices":[{"delta":{"content":"\"error\""}}]}"#
        ));
    }
}
