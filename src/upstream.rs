//! The providers' HTTP client: plain-HTTP upstreams over pooled HTTP/1.1 connections
//! driven inside the calling task; TLS, proxied and credentialed URLs through reqwest.
//!
//! A pooled client such as reqwest's hands every request to a connection task and the
//! answer back, each hand-off a wake-up, often of the other core's thread. Driving the
//! connection from the request's own task leaves the kernel's socket readiness as the
//! only wake-up: +22 % throughput and about −80 µs per request to a local upstream
//! (bench/README.md, "Against nginx"). Over TLS to a remote API those microseconds are
//! noise against the round trip, and reqwest brings HTTP/2, certificates and proxies.

use rustc_hash::FxHashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use reqwest::Url;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from an upstream at a time. hyper's adaptive default grows and shrinks its
/// buffer with the reads, and each growth copied the whole buffer: 9 % of a streamed
/// answer's instructions (bench/README.md). A fixed size is reused read after read.
const READ_BUFFER: usize = 16 * 1024;
/// Idle connections older than this are closed rather than reused; upstreams commonly
/// close theirs after 60–75 s, and a connection found closed costs a retry.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
const MAX_IDLE_PER_HOST: usize = 256;
const USER_AGENT_TEXT: &str = concat!("llmhub/", env!("CARGO_PKG_VERSION"));

/// Why an exchange failed, by cause; never holds a URL (it may carry credentials) or a
/// header value (it may be a key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The answer did not come within the caller's deadline.
    Timeout,
    /// No answer: the connection could not be made, or broke before the answer began.
    Connect(String),
    /// An answer that is not HTTP, or a body that broke off.
    Protocol(String),
    /// The request itself cannot be sent (a malformed URL or header).
    Request(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Timeout => f.write_str("timed out"),
            Error::Connect(text) | Error::Protocol(text) | Error::Request(text) => {
                f.write_str(text)
            }
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    fn from_reqwest(e: reqwest::Error) -> Error {
        if e.is_timeout() {
            return Error::Timeout;
        }
        let protocol = e.is_decode() || e.is_body();
        let text = innermost(&e).unwrap_or_else(|| e.without_url().to_string());
        if protocol {
            Error::Protocol(text)
        } else {
            Error::Connect(text)
        }
    }

    fn from_hyper(e: &hyper::Error) -> Error {
        let text = innermost(e).unwrap_or_else(|| e.to_string());
        if e.is_parse() || e.is_parse_status() || e.is_body_write_aborted() {
            Error::Protocol(text)
        } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
            Error::Connect(format!("the connection closed before the answer: {text}"))
        } else {
            Error::Connect(text)
        }
    }
}

/// The deepest cause's text: "Connection refused (os error 111)" says more than the
/// layers wrapping it.
fn innermost(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = None;
    let mut source = e.source();
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    cause
}

type Connection = Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// A connection between exchanges: nobody polls it until it is taken again.
struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    connection: Connection,
    since: Instant,
}

/// Idle connections by the thread that last used them, then by `host:port`. A connection
/// is registered with the runtime that opened it; with one runtime per serving thread
/// (`http::cores`), a connection used from another thread would be woken through the
/// first one's event loop, so each thread reuses its own.
#[derive(Default)]
struct Pool {
    idle: Mutex<FxHashMap<ThreadId, FxHashMap<String, Vec<Idle>>>>,
}

impl Pool {
    /// The most recently used connection to `authority` not idle for too long.
    fn take(&self, authority: &str) -> Option<Idle> {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = map
            .get_mut(&std::thread::current().id())?
            .get_mut(authority)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < IDLE_TIMEOUT {
                return Some(idle);
            }
        }
        None
    }

    fn put(
        &self,
        authority: &str,
        sender: http1::SendRequest<Full<Bytes>>,
        connection: Connection,
    ) {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let by_host = map.entry(std::thread::current().id()).or_default();
        let list = match by_host.get_mut(authority) {
            Some(list) => list,
            None => by_host.entry(authority.to_string()).or_default(),
        };
        list.retain(|i| i.since.elapsed() < IDLE_TIMEOUT);
        if list.len() < MAX_IDLE_PER_HOST {
            list.push(Idle {
                sender,
                connection,
                since: Instant::now(),
            });
        }
    }
}

/// The providers' client, shared by every request; cloning shares the pools.
/// A reqwest client builder whose TLS runs on *ring*: every reqwest client llmhub builds
/// comes from here.
pub fn client_builder() -> reqwest::ClientBuilder {
    // reqwest and rmcp are built without a crypto provider of their own (aws-lc-rs would
    // be a second one, several MB of code); reqwest takes the process's default, which
    // the first call installs. An embedding program's own choice stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

#[derive(Clone)]
pub struct Client {
    reqwest: reqwest::Client,
    /// None when a proxy is configured in the environment: reqwest then applies it (and
    /// `NO_PROXY`) to plain-HTTP upstreams too.
    direct: Option<Arc<Pool>>,
}

impl Client {
    pub fn new() -> Result<Client, reqwest::Error> {
        let reqwest = client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(USER_AGENT_TEXT)
            .build()?;
        let proxied = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        Ok(Client {
            reqwest,
            direct: (!proxied).then(Arc::default),
        })
    }

    /// A POST of `body` as JSON to `url`.
    pub fn post_json(&self, url: &Url, body: &impl serde::Serialize) -> Request {
        match serde_json::to_vec(body) {
            Ok(body) => self.post_json_text(url, Bytes::from(body)),
            Err(e) => {
                let mut request = self.post_json_text(url, Bytes::new());
                request.error = Some(format!("cannot write the request as JSON: {e}"));
                request
            }
        }
    }

    /// A POST of `body`, already JSON text, to `url`.
    pub fn post_json_text(&self, url: &Url, body: Bytes) -> Request {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Request {
            client: self.clone(),
            url: url.clone(),
            headers,
            body,
            error: None,
        }
    }
}

/// A request being put together; `send` sends it.
pub struct Request {
    client: Client,
    url: Url,
    headers: HeaderMap,
    body: Bytes,
    /// A header that could not be set: reported when sending, as reqwest does.
    error: Option<String>,
}

impl Request {
    /// Sets a header; a name or value that HTTP cannot carry fails the send, naming the
    /// header but never the value.
    pub fn header<K, V>(mut self, name: K, value: V) -> Request
    where
        HeaderName: TryFrom<K>,
        HeaderValue: TryFrom<V>,
    {
        let Ok(name) = HeaderName::try_from(name) else {
            self.error = Some("a header name HTTP cannot carry".to_string());
            return self;
        };
        match HeaderValue::try_from(value) {
            Ok(mut value) => {
                if name == http::header::AUTHORIZATION {
                    value.set_sensitive(true);
                }
                self.headers.insert(name, value);
            }
            Err(_) => {
                self.error = Some(format!("the value of header {name} is not valid in HTTP"));
            }
        }
        self
    }

    pub async fn send(self) -> Result<Response, Error> {
        let Request {
            client,
            url,
            headers,
            body,
            error,
        } = self;
        if let Some(e) = error {
            return Err(Error::Request(e));
        }
        if let (Some(pool), Some(target)) = (&client.direct, Target::of(&url)) {
            return send_direct(pool, &target, headers, body).await;
        }
        let response = client
            .reqwest
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(Error::from_reqwest)?;
        Ok(Response {
            status: response.status(),
            headers: response.headers().clone(),
            body: Body::Reqwest(response),
            deadline: None,
        })
    }
}

/// Where a plain-HTTP URL's connections go, read in place from the URL.
struct Target<'a> {
    /// `host:port` as the URL has it, the pool's key and the `Host` header.
    authority: &'a str,
    host: url::Host<&'a str>,
    port: u16,
    /// Path and query.
    path: &'a str,
}

impl Target<'_> {
    /// None for what reqwest handles: TLS, and user:password URLs (basic auth).
    fn of(url: &Url) -> Option<Target<'_>> {
        use url::Position;
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        Some(Target {
            authority: &url[Position::BeforeHost..Position::AfterPort],
            host: url.host()?,
            port: url.port_or_known_default()?,
            path: &url[Position::BeforePath..Position::AfterQuery],
        })
    }

    async fn connect(&self) -> Result<(http1::SendRequest<Full<Bytes>>, Connection), Error> {
        let connect = async {
            match &self.host {
                url::Host::Domain(name) => TcpStream::connect((*name, self.port)).await,
                url::Host::Ipv4(ip) => TcpStream::connect((*ip, self.port)).await,
                url::Host::Ipv6(ip) => TcpStream::connect((*ip, self.port)).await,
            }
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect).await;
        let tcp = tcp
            .map_err(|_| {
                Error::Connect(format!(
                    "no connection within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| Error::Connect(e.to_string()))?;
        // Requests are written whole; Nagle's delay would only hold them back.
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .read_buf_exact_size(Some(READ_BUFFER))
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| Error::from_hyper(&e))?;
        Ok((sender, Box::pin(connection)))
    }
}

async fn send_direct(
    pool: &Arc<Pool>,
    target: &Target<'_>,
    mut headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let host = HeaderValue::try_from(target.authority)
        .map_err(|_| Error::Request("the URL's host cannot be sent in a Host header".into()))?;
    headers.insert(HOST, host);
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_TEXT));
    headers
        .entry(ACCEPT)
        .or_insert(HeaderValue::from_static("*/*"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut request = http::Request::post(target.path)
        .body(Full::new(body))
        .map_err(|e| Error::Request(e.to_string()))?;
    *request.headers_mut() = headers;
    loop {
        let (mut sender, mut connection, reused) = match pool.take(target.authority) {
            Some(idle) => (idle.sender, idle.connection, true),
            None => {
                let (sender, connection) = target.connect().await?;
                (sender, connection, false)
            }
        };
        // Polling the connection reads whatever arrived while it sat idle: a close (or a
        // stray byte, which hyper treats as an error) ends it before anything is sent.
        let ready = poll_fn(|cx| {
            if connection.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            sender.poll_ready(cx).map(|r| r.is_ok())
        })
        .await;
        if !ready {
            if reused {
                continue;
            }
            return Err(Error::Connect(
                "the upstream closed the connection as it opened".to_string(),
            ));
        }
        let mut answer = pin!(sender.try_send_request(request));
        let mut open = true;
        let head = poll_fn(|cx| {
            if open && connection.as_mut().poll(cx).is_ready() {
                // Closed or failed: the pending answer resolves with the reason.
                open = false;
            }
            answer.as_mut().poll(cx)
        })
        .await;
        match head {
            Ok(response) => {
                let (parts, incoming) = response.into_parts();
                let live = open.then(|| Live {
                    pool: pool.clone(),
                    authority: target.authority.to_string(),
                    sender,
                    connection,
                });
                return Ok(Response {
                    status: parts.status,
                    headers: parts.headers,
                    body: Body::Direct(Direct { incoming, live }),
                    deadline: None,
                });
            }
            Err(mut e) => match e.take_message() {
                // Never written: a reused connection closed under it; a fresh one is
                // safe to try, since the upstream saw nothing.
                Some(unsent) if reused => request = unsent,
                _ => return Err(Error::from_hyper(e.error())),
            },
        }
    }
}

/// A connection carrying a body: it goes back to the pool when the body has been read
/// to its end, and closes if the body is dropped before (HTTP/1 cannot skip the rest).
struct Live {
    pool: Arc<Pool>,
    authority: String,
    sender: http1::SendRequest<Full<Bytes>>,
    connection: Connection,
}

struct Direct {
    incoming: Incoming,
    live: Option<Live>,
}

impl Stream for Direct {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(live) = &mut this.live
            && live.connection.as_mut().poll(cx).is_ready()
        {
            // Closed after its last byte (`Connection: close`) or failed: the body
            // still yields what arrived, then its end or the error.
            this.live = None;
        }
        loop {
            match Pin::new(&mut this.incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                    _ => continue,
                },
                Poll::Ready(Some(Err(e))) => {
                    this.live = None;
                    return Poll::Ready(Some(Err(Error::Protocol(format!(
                        "the body broke off: {}",
                        innermost(&e).unwrap_or_else(|| e.to_string())
                    )))));
                }
                Poll::Ready(None) => {
                    if let Some(live) = this.live.take() {
                        live.pool.put(&live.authority, live.sender, live.connection);
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

enum Body {
    Reqwest(reqwest::Response),
    Direct(Direct),
}

/// An answer whose head has arrived.
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
    deadline: Option<tokio::time::Instant>,
}

impl Response {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Bounds reading the body by `deadline` (a whole exchange's timeout).
    pub fn set_deadline(&mut self, deadline: tokio::time::Instant) {
        self.deadline = Some(deadline);
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, Error> {
        let deadline = self.deadline;
        let read = async move {
            match self.body {
                Body::Reqwest(response) => response.bytes().await.map_err(Error::from_reqwest),
                Body::Direct(mut direct) => {
                    let mut first: Option<Bytes> = None;
                    let mut rest = BytesMut::new();
                    while let Some(piece) = poll_fn(|cx| Pin::new(&mut direct).poll_next(cx)).await
                    {
                        let piece = piece?;
                        match &first {
                            None => first = Some(piece),
                            Some(f) => {
                                if rest.is_empty() {
                                    rest.extend_from_slice(f);
                                }
                                rest.extend_from_slice(&piece);
                            }
                        }
                    }
                    Ok(if rest.is_empty() {
                        first.unwrap_or_default()
                    } else {
                        rest.freeze()
                    })
                }
            }
        };
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, read)
                .await
                .map_err(|_| Error::Timeout)?,
            None => read.await,
        }
    }

    /// The body as it arrives.
    pub fn bytes_stream(self) -> BodyStream {
        BodyStream(match self.body {
            Body::Reqwest(response) => Reads::Reqwest(Box::pin(response.bytes_stream())),
            Body::Direct(direct) => Reads::Direct(direct),
        })
    }
}

type ReqwestReads = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

enum Reads {
    Reqwest(ReqwestReads),
    Direct(Direct),
}

/// A body's reads as they arrive.
pub struct BodyStream(Reads);

impl Stream for BodyStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.get_mut().0 {
            Reads::Reqwest(reads) => reads
                .as_mut()
                .poll_next(cx)
                .map(|read| read.map(|r| r.map_err(Error::from_reqwest))),
            Reads::Direct(direct) => Pin::new(direct).poll_next(cx),
        }
    }
}
