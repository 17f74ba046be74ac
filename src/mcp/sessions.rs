//! Per-session MCP endpoints (`/mcp/s/<id>`): created, found and ended in the store,
//! their credentials sealed with XChaCha20-Poly1305, and the live side of the sessions
//! in use — their own backend connections (opened on first use, closed when idle) and
//! their clients, told when what they see changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rmcp::{Peer, RoleServer};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::backends::{Backends, View};
use crate::registry::backends::{AuthShape, Transport};
use crate::registry::keys::{digest, hex};
use crate::registry::{Backend, Principal, Registry, SECRET_KEY_ENV, Secret, Status};
use crate::store::{SessionRecord, now_ms, rfc3339};

const DEFAULT_TTL_S: u64 = 86_400;
/// How long an instance trusts what it read of a session before reading it again: a
/// DELETE on another instance sharing the store takes effect here within this.
const RECHECK: Duration = Duration::from_secs(2);
/// The longest a request to a session already in use waits for the store's answer.
const STORE_WAIT: Duration = Duration::from_millis(250);
/// The sweeper looks at least this often (other instances add sessions it cannot see).
const SWEEP_AT_MOST: Duration = Duration::from_secs(60);
/// A session id: 256 random bits, base64url without padding.
const ID_LEN: usize = 43;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seals and opens credentials under the key in `LLMHUB_SECRET_KEY`.
pub struct Sealer(XChaCha20Poly1305);

impl Sealer {
    /// The snapshot's key, if it has one.
    fn of(registry: &Registry) -> Option<Sealer> {
        registry
            .settings
            .secret_key
            .as_deref()
            .map(|key| Sealer(XChaCha20Poly1305::new(key.into())))
    }

    /// base64 of a fresh 192-bit nonce and the ciphertext; `bound` (the session's id
    /// hash) is authenticated too, so a sealed value cannot be moved to another session.
    fn seal(&self, plaintext: &[u8], bound: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: bound,
                },
            )
            .map_err(|_| "cannot seal the credentials".to_string())?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(STANDARD.encode(out))
    }

    fn open(&self, sealed: &str, bound: &[u8]) -> Result<Vec<u8>, String> {
        let cannot = || {
            format!(
                "the session's credentials cannot be opened with this {SECRET_KEY_ENV} (was it changed?)"
            )
        };
        let bytes = STANDARD.decode(sealed).map_err(|_| cannot())?;
        if bytes.len() < 24 {
            return Err(cannot());
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: bound,
                },
            )
            .map_err(|_| cannot())
    }
}

/// Why a session request failed, as the HTTP side shows it.
#[derive(Debug)]
pub enum SessionError {
    /// 400: `param` is the JSON path of the problem.
    Invalid {
        param: String,
        message: String,
    },
    NotFound,
    /// 503: the store cannot be reached.
    Unavailable(String),
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> SessionError {
    SessionError::Invalid {
        param: param.into(),
        message: message.into(),
    }
}

/// A checked `POST /v1/mcp/sessions` body.
#[derive(Debug)]
pub struct NewSession {
    servers: Vec<String>,
    credentials: BTreeMap<String, String>,
    ttl: Duration,
    builtin: bool,
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl NewSession {
    /// Checks a body against the snapshot's servers.d; the first problem found is the error.
    pub fn parse(body: &Value, registry: &Registry) -> Result<NewSession, SessionError> {
        let Some(body) = body.as_object() else {
            return Err(invalid(
                "",
                format!(
                    "expected a JSON object with `servers`, found {}",
                    kind_of(body)
                ),
            ));
        };
        for field in body.keys() {
            if !["servers", "credentials", "ttl_s", "builtin"].contains(&field.as_str()) {
                return Err(invalid(
                    field.clone(),
                    format!(
                        "unknown field `{field}`; expected `servers`, `credentials`, `ttl_s` or `builtin`"
                    ),
                ));
            }
        }
        let servers = parse_servers(body.get("servers"), registry)?;
        let credentials = match body.get("credentials") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(map)) => parse_credentials(map, &servers, registry)?,
            Some(other) => {
                return Err(invalid(
                    "credentials",
                    format!(
                        "expected an object of server name to credential, found {}",
                        kind_of(other)
                    ),
                ));
            }
        };
        let max = registry.settings.mcp_session_max_ttl;
        let ttl = match body.get("ttl_s") {
            None | Some(Value::Null) => Duration::from_secs(DEFAULT_TTL_S).min(max),
            Some(v) => match v.as_u64() {
                Some(s) if s >= 1 && Duration::from_secs(s) <= max => Duration::from_secs(s),
                Some(s) if s >= 1 => {
                    return Err(invalid(
                        "ttl_s",
                        format!(
                            "ttl_s {s} is over the maximum of {} seconds ([mcp] session_max_ttl_s)",
                            max.as_secs()
                        ),
                    ));
                }
                _ => {
                    return Err(invalid(
                        "ttl_s",
                        format!("expected a whole number of seconds above 0, found {v}"),
                    ));
                }
            },
        };
        let builtin = match body.get("builtin") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid(
                    "builtin",
                    format!("expected true or false, found {}", kind_of(other)),
                ));
            }
        };
        Ok(NewSession {
            servers,
            credentials,
            ttl,
            builtin,
        })
    }
}

fn known_servers(registry: &Registry) -> String {
    if registry.backends.is_empty() {
        "servers.d declares none".to_string()
    } else {
        let names: Vec<&str> = registry.backends.keys().map(String::as_str).collect();
        format!("servers.d has: {}", names.join(", "))
    }
}

fn parse_servers(v: Option<&Value>, registry: &Registry) -> Result<Vec<String>, SessionError> {
    let list = match v {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => {
            return Err(invalid(
                "servers",
                format!(
                    "expected at least one servers.d name; {}",
                    known_servers(registry)
                ),
            ));
        }
        None => {
            return Err(invalid(
                "servers",
                format!(
                    "missing field `servers`: the servers.d names this session uses; {}",
                    known_servers(registry)
                ),
            ));
        }
        Some(other) => {
            return Err(invalid(
                "servers",
                format!("expected an array of names, found {}", kind_of(other)),
            ));
        }
    };
    let mut out: Vec<String> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let param = format!("servers[{i}]");
        let Some(name) = item.as_str() else {
            return Err(invalid(
                param,
                format!("expected a server name, found {}", kind_of(item)),
            ));
        };
        if !registry.backends.contains_key(name) {
            return Err(invalid(
                param,
                format!("unknown server `{name}`; {}", known_servers(registry)),
            ));
        }
        if out.iter().any(|s| s == name) {
            return Err(invalid(param, format!("`{name}` is listed twice")));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// Each credential in its backend's declared shape: `{"token"}` for bearer auth,
/// `{"value"}` for a named header.
fn parse_credentials(
    map: &Map<String, Value>,
    servers: &[String],
    registry: &Registry,
) -> Result<BTreeMap<String, String>, SessionError> {
    let mut out = BTreeMap::new();
    for (name, given) in map {
        let param = format!("credentials.{name}");
        if !servers.contains(name) {
            return Err(invalid(
                param,
                format!("`{name}` is not one of this session's `servers`"),
            ));
        }
        let Some(backend) = registry.backends.get(name) else {
            continue;
        };
        if matches!(backend.transport, Transport::Stdio { .. }) {
            return Err(invalid(
                param,
                format!(
                    "backend `{name}` is a command (stdio) backend: its credentials are its `env` in servers.d, not a session's"
                ),
            ));
        }
        let (field, shape) = match &backend.auth_shape {
            None => {
                return Err(invalid(
                    param,
                    format!(
                        "backend `{name}` declares no `auth` in servers.d, so it takes no credential"
                    ),
                ));
            }
            Some(AuthShape::Bearer) => ("token", "a bearer token".to_string()),
            Some(AuthShape::Header(h)) => ("value", format!("its key in header `{h}`")),
        };
        let expected = format!("backend `{name}` takes {shape}: expected {{\"{field}\": \"…\"}}");
        let fields: Vec<&String> = given
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        let secret = match given {
            Value::Object(o) if o.len() == 1 => o.get(field).and_then(Value::as_str),
            _ => None,
        };
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            let found = if given.is_object() {
                let names: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
                if names.is_empty() {
                    "an empty object".to_string()
                } else {
                    format!("an object with {}", names.join(", "))
                }
            } else {
                kind_of(given).to_string()
            };
            return Err(invalid(param, format!("{expected}, found {found}")));
        };
        if reqwest::header::HeaderValue::from_str(secret).is_err() {
            return Err(invalid(
                format!("{param}.{field}"),
                "the credential holds characters an HTTP header cannot carry (control characters or line breaks)",
            ));
        }
        out.insert(name.clone(), secret.to_string());
    }
    Ok(out)
}

/// One server of a session, as `GET /v1/mcp/sessions/{id}` shows it.
#[derive(Debug, Serialize)]
pub struct ServerStatus {
    pub name: String,
    /// `idle` (its own connection opens on first use), `connecting`, `connected`,
    /// `down`, `inactive`, or `unavailable`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the session brought its own credential for it (never the credential).
    pub credentials: bool,
    pub tools: usize,
}

/// A session as the HTTP side shows it; the id only at creation.
#[derive(Debug, Serialize)]
pub struct SessionView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub mcp_endpoint: String,
    pub created_at: String,
    pub expires_at: String,
    pub builtin: bool,
    pub servers: Vec<ServerStatus>,
}

/// A session in use on this instance.
pub struct Session {
    record: SessionRecord,
    /// The id's first characters, for logs: the id itself is the capability.
    pub label: String,
    /// The endpoint's path (it holds the id).
    endpoint: String,
    credentials: Result<BTreeMap<String, Secret>, String>,
    /// Connections for the servers it brought credentials for; the others share the
    /// process's.
    own: Backends,
    /// Set while its own connections are open: cancels the task announcing their changes.
    running: Mutex<Option<CancellationToken>>,
    last_used: Mutex<Instant>,
    checked: Mutex<Instant>,
    pub(super) peers: Mutex<Vec<Peer<RoleServer>>>,
    /// What `tools/list` and `prompts/list` answered when last announced.
    pub(super) listed: Mutex<(u64, u64)>,
}

impl Session {
    fn open(record: SessionRecord, id: &str, endpoint: String, sealer: Option<&Sealer>) -> Session {
        let credentials = match (&record.sealed, sealer) {
            (None, _) => Ok(BTreeMap::new()),
            (Some(_), None) => Err(format!(
                "the session's credentials are sealed and {SECRET_KEY_ENV} is not set on this instance"
            )),
            (Some(sealed), Some(sealer)) => sealer
                .open(sealed, record.id_sha256.as_bytes())
                .and_then(|plain| {
                    serde_json::from_slice::<BTreeMap<String, String>>(&plain)
                        .map_err(|_| "the session's credentials are unreadable".to_string())
                })
                .map(|m| m.into_iter().map(|(k, v)| (k, Secret::new(v))).collect()),
        };
        Session {
            label: label(id),
            endpoint,
            record,
            credentials,
            own: Backends::default(),
            running: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            checked: Mutex::new(Instant::now()),
            peers: Mutex::new(Vec::new()),
            listed: Mutex::new((0, 0)),
        }
    }

    pub fn owner(&self) -> &str {
        &self.record.owner
    }

    pub fn builtin(&self) -> bool {
        self.record.builtin
    }

    fn credential(&self, server: &str) -> Option<Result<&Secret, &str>> {
        if !self.record.with_credentials.iter().any(|s| s == server) {
            return None;
        }
        Some(match &self.credentials {
            Ok(map) => map
                .get(server)
                .ok_or("the session's credential for it is missing"),
            Err(why) => Err(why.as_str()),
        })
    }

    /// The specs of its own connections: servers.d's, with the session's credential
    /// in place of the env key.
    fn specs(&self, registry: &Registry) -> BTreeMap<String, Backend> {
        let mut out = BTreeMap::new();
        for server in &self.record.servers {
            let (Some(Ok(secret)), Some(spec)) =
                (self.credential(server), registry.backends.get(server))
            else {
                continue;
            };
            let mut spec = spec.clone();
            // A disabled backend stays as servers.d says; otherwise the credential
            // takes the env key's place, which makes an unset variable irrelevant.
            if !spec.disabled {
                match &spec.auth_shape {
                    Some(shape) => {
                        spec.auth = Some(shape.header(secret.expose()));
                        spec.status = Status::Active;
                    }
                    None => {
                        spec.auth = None;
                        spec.status = Status::Inactive(
                            "servers.d declares no `auth` for it now, so the session's credential cannot be sent"
                                .to_string(),
                        );
                    }
                }
            }
            out.insert(server.clone(), spec);
        }
        out
    }

    /// The backends its endpoint offers: its own connections, the process's for the
    /// rest; servers gone from servers.d are left out.
    pub fn view(&self, global: &Backends) -> View {
        let states = self
            .record
            .servers
            .iter()
            .filter_map(|server| match self.credential(server) {
                Some(_) => self.own.state(server),
                None => global.state(server),
            })
            .collect();
        View::of(states)
    }

    /// Opens its own connections if they are not open; true when it just did.
    pub fn start(&self, registry: &Registry) -> Option<CancellationToken> {
        *lock(&self.last_used) = Instant::now();
        let mut running = lock(&self.running);
        if running.is_some() {
            return None;
        }
        let token = CancellationToken::new();
        *running = Some(token.clone());
        self.own.sync(&self.specs(registry));
        Some(token)
    }

    /// Waits for its connections' first attempts, as the main endpoint does.
    pub async fn first_connects(&self, global: &Backends) {
        tokio::join!(self.own.first_connects(), global.first_connects());
    }

    /// After a reload: reconnects what changed in its own connections.
    pub fn resync(&self, registry: &Registry) {
        if lock(&self.running).is_some() {
            self.own.sync(&self.specs(registry));
        }
    }

    /// Closes its own connections (idle, ended or expired).
    fn close(&self) {
        if let Some(token) = lock(&self.running).take() {
            token.cancel();
            self.own.sync(&BTreeMap::new());
            tracing::info!(session = %self.label, "session backends closed");
        }
    }

    pub fn is_open(&self) -> bool {
        lock(&self.running).is_some()
    }

    pub fn changed(&self) -> Arc<Notify> {
        self.own.changed.clone()
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }

    fn has_clients(&self) -> bool {
        let mut peers = lock(&self.peers);
        peers.retain(|p| !p.is_transport_closed());
        !peers.is_empty()
    }

    pub fn status(&self, registry: &Registry, global: &Backends) -> SessionView {
        let separator = &registry.settings.mcp_tool_separator;
        let health = self
            .view(global)
            .health(separator, &super::Mcp::own_names(registry));
        let open = lock(&self.running).is_some();
        let servers = self
            .record
            .servers
            .iter()
            .map(|name| {
                let credential = self.credential(name);
                let (status, reason, tools) = if !registry.backends.contains_key(name) {
                    (
                        "unavailable".to_string(),
                        Some("removed from servers.d".to_string()),
                        0,
                    )
                } else if let Some(Err(why)) = credential {
                    ("unavailable".to_string(), Some(why.to_string()), 0)
                } else if credential.is_some() && !open {
                    (
                        "idle".to_string(),
                        Some("its connection opens on the session's next request".to_string()),
                        0,
                    )
                } else {
                    match health.get(name) {
                        Some(h) => (h.status.clone(), h.reason.clone(), h.tools),
                        None => ("connecting".to_string(), None, 0),
                    }
                };
                ServerStatus {
                    name: name.clone(),
                    status,
                    reason,
                    credentials: credential.is_some(),
                    tools,
                }
            })
            .collect();
        SessionView {
            session_id: None,
            mcp_endpoint: self.endpoint.clone(),
            created_at: rfc3339(self.record.created_ms),
            expires_at: rfc3339(self.record.expires_ms),
            builtin: self.record.builtin,
            servers,
        }
    }
}

/// An id's start, enough to tell sessions apart in logs and errors: ids are
/// capabilities (llmhub's per-session endpoints and rmcp's MCP sessions alike).
pub fn label(id: &str) -> String {
    let head: String = id.chars().take(8).collect();
    if head.len() < id.len() {
        format!("{head}…")
    } else {
        head
    }
}

fn may_manage(principal: &Principal, owner: &str) -> bool {
    matches!(principal, Principal::Admin) || principal.session_owner() == owner
}

/// Every session this instance has in use.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Arc<Session>>>,
    /// Wakes the sweeper when a session may expire or idle out sooner than it planned.
    pub(super) wake: Notify,
}

impl Sessions {
    pub fn in_use(&self) -> Vec<Arc<Session>> {
        lock(&self.live).values().cloned().collect()
    }

    fn store(hub: &crate::hub::Hub) -> Result<Arc<crate::store::Store>, SessionError> {
        hub.usage_store().map_err(|why| {
            SessionError::Unavailable(format!(
                "MCP sessions are kept in [storage], which is not available: {why}"
            ))
        })
    }

    /// Stores a new session; its connections open on first use.
    pub async fn create(
        &self,
        hub: &crate::hub::Hub,
        registry: &Registry,
        principal: &Principal,
        global: &Backends,
        new: NewSession,
    ) -> Result<SessionView, SessionError> {
        let sealer = match (Sealer::of(registry), new.credentials.is_empty()) {
            (_, true) => None,
            (Some(sealer), false) => Some(sealer),
            (None, false) => {
                return Err(invalid(
                    "credentials",
                    format!(
                        "sessions with credentials need {SECRET_KEY_ENV}: set it (in the environment or the .env beside hub.toml) to 32 random bytes in base64, such as `openssl rand -base64 32` prints; sessions without credentials work without it"
                    ),
                ));
            }
        };
        let store = Self::store(hub)?;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| SessionError::Unavailable(format!("no randomness for an id: {e}")))?;
        let id = URL_SAFE_NO_PAD.encode(bytes);
        let id_sha256 = hex(&digest(&id));
        let sealed = match sealer {
            None => None,
            Some(ref sealer) => {
                let plain = serde_json::to_vec(&new.credentials).unwrap_or_default();
                Some(
                    sealer
                        .seal(&plain, id_sha256.as_bytes())
                        .map_err(SessionError::Unavailable)?,
                )
            }
        };
        let created_ms = now_ms();
        let record = SessionRecord {
            id_sha256,
            owner: principal.session_owner(),
            servers: new.servers,
            with_credentials: new.credentials.keys().cloned().collect(),
            builtin: new.builtin,
            sealed,
            created_ms,
            expires_ms: created_ms
                .saturating_add(i64::try_from(new.ttl.as_millis()).unwrap_or(i64::MAX)),
        };
        store
            .insert_session(&record)
            .await
            .map_err(|e| SessionError::Unavailable(format!("cannot store the session: {e}")))?;
        let session = self.remember(record, &id, registry);
        tracing::info!(session = %session.label, owner = %session.owner(), servers = ?session.record.servers, "MCP session created");
        self.wake.notify_one();
        let mut view = session.status(registry, global);
        view.session_id = Some(id);
        Ok(view)
    }

    fn remember(&self, record: SessionRecord, id: &str, registry: &Registry) -> Arc<Session> {
        let endpoint = format!("{}/s/{id}", registry.settings.mcp_http_path);
        let session = Session::open(record, id, endpoint, Sealer::of(registry).as_ref());
        lock(&self.live)
            .entry(session.record.id_sha256.clone())
            .or_insert_with(|| Arc::new(session))
            .clone()
    }

    /// The live session with this id, read from the store when this instance has not
    /// seen it lately. While the store is down, a session already in use goes on.
    pub async fn find(
        &self,
        hub: &crate::hub::Hub,
        registry: &Registry,
        id: &str,
    ) -> Result<Arc<Session>, SessionError> {
        if id.len() != ID_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SessionError::NotFound);
        }
        let hash = hex(&digest(id));
        let now = now_ms();
        let cached = lock(&self.live).get(&hash).cloned();
        if let Some(session) = &cached {
            if session.record.expires_ms <= now {
                self.forget(&hash);
                return Err(SessionError::NotFound);
            }
            if lock(&session.checked).elapsed() < RECHECK {
                return Ok(session.clone());
            }
        }
        let store = match Self::store(hub) {
            Ok(store) => store,
            Err(e) => return cached.ok_or(e),
        };
        // A session in use is not held up by a slow store: past STORE_WAIT it goes on as read.
        let read = store.session(&hash, now);
        let read = match &cached {
            Some(_) => match tokio::time::timeout(STORE_WAIT, read).await {
                Ok(read) => read,
                Err(_) => Err(crate::store::StoreError::Query(format!(
                    "no answer within {} ms",
                    STORE_WAIT.as_millis()
                ))),
            },
            None => read.await,
        };
        match read {
            Ok(Some(record)) => Ok(match cached {
                Some(session) => {
                    *lock(&session.checked) = Instant::now();
                    session
                }
                None => self.remember(record, id, registry),
            }),
            Ok(None) => {
                self.forget(&hash);
                Err(SessionError::NotFound)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read an MCP session from the store");
                cached.ok_or_else(|| {
                    SessionError::Unavailable(format!(
                        "cannot read the session from the store: {e}"
                    ))
                })
            }
        }
    }

    /// The session if `principal` may see it (its creator, or an admin key); anyone
    /// else is told it does not exist.
    pub async fn find_for(
        &self,
        hub: &crate::hub::Hub,
        registry: &Registry,
        principal: &Principal,
        id: &str,
    ) -> Result<Arc<Session>, SessionError> {
        let session = self.find(hub, registry, id).await?;
        if may_manage(principal, session.owner()) {
            Ok(session)
        } else {
            Err(SessionError::NotFound)
        }
    }

    pub async fn delete(
        &self,
        hub: &crate::hub::Hub,
        registry: &Registry,
        principal: &Principal,
        id: &str,
    ) -> Result<(), SessionError> {
        let session = self.find_for(hub, registry, principal, id).await?;
        let store = Self::store(hub)?;
        store
            .delete_session(&session.record.id_sha256)
            .await
            .map_err(|e| SessionError::Unavailable(format!("cannot delete the session: {e}")))?;
        self.forget(&session.record.id_sha256);
        tracing::info!(session = %session.label, "MCP session deleted");
        Ok(())
    }

    fn forget(&self, hash: &str) {
        let gone = lock(&self.live).remove(hash);
        if let Some(session) = gone {
            session.close();
            lock(&session.peers).clear();
        }
    }

    /// Removes expired sessions from the store and closes idle connections, then
    /// sleeps until the next expiry or idle deadline it knows of (a minute at most).
    pub(super) async fn sweep(&self, hub: &crate::hub::Hub) -> Duration {
        let now = now_ms();
        let mut next = SWEEP_AT_MOST;
        match hub.usage_store() {
            Ok(store) => {
                match store.delete_expired_sessions(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "expired MCP sessions removed"),
                    Err(e) => tracing::warn!(error = %e, "cannot remove expired MCP sessions"),
                }
                if let Ok(Some(at)) = store.next_session_expiry().await {
                    next = next.min(ms_until(at, now));
                }
            }
            // The store may still be opening: look again soon.
            Err(_) => next = next.min(Duration::from_secs(1)),
        }
        let idle = hub.snapshot().settings.mcp_session_idle;
        for session in self.in_use() {
            if session.record.expires_ms <= now {
                tracing::info!(session = %session.label, "MCP session expired");
                self.forget(&session.record.id_sha256);
                continue;
            }
            next = next.min(ms_until(session.record.expires_ms, now));
            let quiet = session.idle_for();
            if quiet >= idle {
                session.close();
                if !session.has_clients() {
                    lock(&self.live).remove(&session.record.id_sha256);
                }
            } else if lock(&session.running).is_some() {
                next = next.min(idle - quiet);
            }
        }
        next
    }
}

fn ms_until(at_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0))
        .max(Duration::from_millis(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credentials_open_only_with_the_same_key_and_session() {
        let sealer = Sealer(XChaCha20Poly1305::new((&[7u8; 32]).into()));
        let sealed = sealer.seal(b"ghp_secret", b"session-a").expect("seal");
        assert!(!sealed.contains("ghp_secret"));
        assert_eq!(
            sealer.open(&sealed, b"session-a").expect("open"),
            b"ghp_secret"
        );
        assert!(sealer.open(&sealed, b"session-b").is_err());
        let other = Sealer(XChaCha20Poly1305::new((&[8u8; 32]).into()));
        assert!(other.open(&sealed, b"session-a").is_err());
        // Two seals of one secret differ (fresh nonces).
        assert_ne!(
            sealed,
            sealer.seal(b"ghp_secret", b"session-a").expect("seal")
        );
    }

    #[test]
    fn a_malformed_secret_key_says_what_is_expected() {
        use crate::registry::secret_key_bytes;
        let short = secret_key_bytes(&STANDARD.encode([1u8; 16])).expect_err("too short");
        assert!(short.contains("holds 16 bytes, not 32"), "{short}");
        let junk = secret_key_bytes("not base64!").expect_err("junk");
        assert!(junk.contains("is not base64"), "{junk}");
        assert_eq!(
            secret_key_bytes(&STANDARD.encode([9u8; 32])).expect("good"),
            [9u8; 32]
        );
    }
}
