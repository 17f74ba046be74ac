//! Connections to plain-HTTP upstreams, against an upstream written on raw TCP so each
//! test controls the connection itself: reuse across requests, upstreams that close
//! idle connections or say `Connection: close`, bodies that break off, and streams the
//! client abandons.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

const HUB: &str = "[routing]\nretries = 0\nbackoff_ms = 1\n";
const REPLY: &str = r#"{"id":"chatcmpl-raw","object":"chat.completion","created":1760000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"raw reply"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Answers and keeps the connection for the next request.
    KeepAlive,
    /// Answers, then closes the connection without saying so when told to, as upstreams
    /// do with connections idle past their keep-alive timeout.
    CloseSilently,
    /// Answers with `Connection: close` and closes.
    CloseSaying,
    /// Promises 500 bytes, sends 100 and closes.
    BreakBody,
    /// Streams one SSE chunk and then waits for the client to go away.
    HoldStream,
}

/// What the raw upstream reports as it happens.
#[derive(Debug, PartialEq)]
enum Event {
    /// A connection ended (closed by either side), after this many requests on it.
    Closed(usize),
}

struct Raw {
    url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Closes the idle connection of a `CloseSilently` upstream.
    close_idle: Arc<Notify>,
}

impl Raw {
    async fn start(behaviour: Behaviour) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (tx, events) = mpsc::unbounded_channel();
        let close_idle = Arc::new(Notify::new());
        let (c, r, close) = (connections.clone(), requests.clone(), close_idle.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (r, tx, close) = (r.clone(), tx.clone(), close.clone());
                tokio::spawn(async move {
                    let served = serve(stream, behaviour, &r, &close).await;
                    let _ = tx.send(Event::Closed(served));
                });
            }
        });
        Raw {
            url,
            connections,
            requests,
            events,
            close_idle,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Serves one connection; returns how many requests it read.
async fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    requests: &AtomicUsize,
    close_idle: &Notify,
) -> usize {
    let mut served = 0;
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_head(&mut stream, &mut buf).await else {
            return served;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return served,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        served += 1;
        requests.fetch_add(1, Ordering::SeqCst);
        let answer = |extra: &str| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{REPLY}",
                REPLY.len()
            )
        };
        match behaviour {
            Behaviour::KeepAlive => {
                let _ = stream.write_all(answer("").as_bytes()).await;
            }
            Behaviour::CloseSilently => {
                let _ = stream.write_all(answer("").as_bytes()).await;
                close_idle.notified().await;
                return served;
            }
            Behaviour::CloseSaying => {
                let _ = stream
                    .write_all(answer("connection: close\r\n").as_bytes())
                    .await;
                return served;
            }
            Behaviour::BreakBody => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&REPLY.as_bytes()[..100]).await;
                return served;
            }
            Behaviour::HoldStream => {
                let chunk = r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"first"},"finish_reason":null}]}"#;
                let event = format!("{chunk}\n\n");
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                    event.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                // Held until the other side closes: a read then returns 0 or fails.
                let mut rest = [0u8; 1024];
                while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
                return served;
            }
        }
    }
}

/// Reads until a request head is complete; its length, or None when the peer closed.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn server_for(raw: &Raw) -> (Server, ConfigDir) {
    let cfg = ConfigDir::new(HUB);
    cfg.provider("raw", &raw.url, "models = [\"m\"]");
    let server = Server::start(&cfg).await;
    (server, cfg)
}

async fn ask(server: &Server) -> reqwest::Response {
    server
        .chat(json!({"model": "raw/m", "messages": user("hi")}))
        .await
}

#[tokio::test]
async fn one_upstream_connection_carries_request_after_request() {
    let raw = Raw::start(Behaviour::KeepAlive).await;
    let (server, _cfg) = server_for(&raw).await;
    for _ in 0..20 {
        let resp = ask(&server).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), REPLY);
    }
    assert_eq!(raw.requests(), 20);
    assert_eq!(raw.connections(), 1, "kept alive and reused");
}

#[tokio::test]
async fn upstreams_closing_connections_after_an_answer_cost_no_request() {
    for behaviour in [Behaviour::CloseSilently, Behaviour::CloseSaying] {
        let mut raw = Raw::start(behaviour).await;
        let (server, _cfg) = server_for(&raw).await;
        for n in 1..=10 {
            let resp = ask(&server).await;
            assert_eq!(resp.status(), 200, "request {n}");
            assert_eq!(resp.text().await.expect("body"), REPLY);
            // The connection sits idle in llmhub's pool when the upstream closes it; its
            // FIN is in llmhub's socket before the next request.
            raw.close_idle.notify_one();
            assert_eq!(raw.events.recv().await, Some(Event::Closed(1)));
        }
        assert_eq!(raw.requests(), 10, "no request was lost or sent twice");
        assert_eq!(raw.connections(), 10);
    }
}

#[tokio::test]
async fn a_body_that_breaks_off_is_an_error_not_a_short_answer() {
    let raw = Raw::start(Behaviour::BreakBody).await;
    let (server, _cfg) = server_for(&raw).await;
    let resp = ask(&server).await;
    assert_eq!(resp.status(), 502);
    let error: Value = resp.json().await.expect("json");
    let message = error["error"]["message"].as_str().expect("message");
    assert!(message.contains("broke off"), "{message}");
    assert!(!message.contains(KEY), "{message}");
    assert!(
        !message.contains("127.0.0.1"),
        "no URL in errors: {message}"
    );
}

#[tokio::test]
async fn a_stream_the_client_abandons_closes_its_upstream_connection() {
    let mut raw = Raw::start(Behaviour::HoldStream).await;
    let (server, _cfg) = server_for(&raw).await;
    let body = first_streamed(&server).await;
    drop(body);
    // The upstream sees the client leave: its generation can stop.
    assert_eq!(raw.events.recv().await, Some(Event::Closed(1)));
    // And the next request is served on a new connection.
    let _body = first_streamed(&server).await;
    assert_eq!(raw.connections(), 2);
}

/// Starts a stream and reads its first piece, which carries the upstream's first chunk;
/// the rest of the body is left unread.
async fn first_streamed(server: &Server) -> impl futures_util::Stream {
    let resp = server
        .chat(json!({"model": "raw/m", "stream": true, "messages": user("hi")}))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("a first read").expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("first"));
    body
}
