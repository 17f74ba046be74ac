//! The running gateway's shared state: the live snapshot, reload status, and what
//! outlives a reload (the pooled HTTP client and the circuit breakers).

pub mod breaker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::chat::Usage;
use crate::config::{self, ConfigError};
use crate::limits::{Ask, Limiter, LimitsHealth, Permit, Refusal};
use crate::metrics::{Metrics, Observation, Scrape};
use crate::registry::keys::DEFAULT_PROJECT;
use crate::registry::{self, Principal, Registry, Settings, Status};
use crate::store::{Ledger, LedgerHealth, Row};
use breaker::{BreakerView, Breakers};
use serde::{Deserialize, Serialize};

/// The outcome of a reload attempt. Only outcomes that change something are published
/// (a watch channel keeps just the latest, so a no-op must not hide an earlier change).
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadEvent {
    Applied { generation: u64 },
    Unchanged { generation: u64 },
    Failed { errors: Vec<String> },
}

/// What `/health` shows about reloading.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub last_error: Option<ReloadFailure>,
    /// Changes read from the files that only a restart applies.
    pub pending_restart: Vec<String>,
    pub counts: ReloadCounts,
}

#[derive(Debug, Clone)]
pub struct ReloadFailure {
    pub at: SystemTime,
    pub errors: Vec<String>,
}

pub struct Hub {
    pub config_path: PathBuf,
    snapshot: ArcSwap<Registry>,
    status: Mutex<ReloadStatus>,
    /// The settings the process started with: those that only a restart applies are
    /// compared with each reload's.
    pub started: Settings,
    /// Profiles at start: each has an HTTP endpoint, so a new one needs a restart.
    pub started_profiles: Vec<String>,
    pub started_at: Instant,
    pub http: crate::upstream::Client,
    pub breakers: Breakers,
    events: watch::Sender<ReloadEvent>,
    /// The backend MCP servers' states, kept current by the MCP side for `/health`.
    backends_report: Mutex<BTreeMap<String, BackendHealth>>,
    /// The usage ledger, once a server has started it (`check` and `models` never do).
    ledger: OnceLock<Arc<Ledger>>,
    pub metrics: Metrics,
    /// Rate and budget counters, which outlive reloads.
    pub limiter: Limiter,
}

/// Who is calling, for the ledger: the key's name (empty without keys), the project
/// (`default` unless said) and the agent (empty unless said).
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: String,
    pub project: String,
    pub agent: String,
    /// What the limits granted this request, settled when its record is made.
    pub permit: Option<Arc<Permit>>,
}

/// Headers that attribute a request on HTTP and on MCP over HTTP.
pub const PROJECT_HEADER: &str = "x-llmhub-project";
pub const AGENT_HEADER: &str = "x-llmhub-agent";

/// Longest project or agent name kept; longer ones are cut.
const MAX_NAME: usize = 128;

impl Caller {
    /// The project from `x-llmhub-project`; the agent from `x-llmhub-agent`, else `user`
    /// (the OpenAI request field).
    pub fn from_headers(headers: &http::HeaderMap, user: Option<&str>) -> Caller {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Caller::new(header(PROJECT_HEADER), header(AGENT_HEADER).or(user))
    }

    pub fn new(project: Option<&str>, agent: Option<&str>) -> Caller {
        let clean = |s: &str| -> String {
            s.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_NAME)
                .collect()
        };
        let project = project.map(clean).filter(|p| !p.is_empty());
        Caller {
            key: String::new(),
            project: project.unwrap_or_else(|| DEFAULT_PROJECT.to_string()),
            agent: agent.map(clean).unwrap_or_default(),
            permit: None,
        }
    }

    /// A key's caller belongs to the key's project, whatever headers say.
    pub fn of(principal: &Principal, mut caller: Caller) -> Caller {
        if let Some(key) = principal.key() {
            caller.key = key.name.clone();
            caller.project = key.project.clone();
        }
        caller
    }
}

/// One request's outcome as the ledger records it.
#[derive(Debug, Clone)]
pub struct Record {
    pub surface: &'static str,
    pub caller: Caller,
    pub requested: String,
    /// Who answered, or the last provider tried; empty when none was.
    pub provider: String,
    pub model: String,
    pub status: u16,
    pub attempts: u32,
    pub streamed: bool,
    pub usage: Usage,
    pub latency: Duration,
    pub ttft: Option<Duration>,
    pub error: Option<String>,
    /// Each attempt's provider and outcome, for the attempts metric.
    pub tries: Vec<(String, &'static str)>,
}

impl Hub {
    /// Loads and validates the configuration at `config_path`, or returns every error.
    pub fn load(config_path: &Path) -> Result<Arc<Hub>, Vec<ConfigError>> {
        let registry = load_registry(config_path, 1)?;
        let registry_redis = registry.settings.redis_url.clone();
        let registry_allow = registry.settings.allow_when_store_down;
        let http = crate::upstream::Client::new().map_err(|e| {
            vec![ConfigError::whole_file(
                config_path,
                format!("cannot start the HTTP client: {e}"),
            )]
        })?;
        let (events, _) = watch::channel(ReloadEvent::Applied {
            generation: registry.generation,
        });
        Ok(Arc::new(Hub {
            config_path: config_path.to_path_buf(),
            started: registry.settings.clone(),
            started_profiles: registry.profiles.keys().cloned().collect(),
            snapshot: ArcSwap::from_pointee(registry),
            status: Mutex::new(ReloadStatus::default()),
            started_at: Instant::now(),
            http,
            breakers: Breakers::default(),
            events,
            backends_report: Mutex::new(BTreeMap::new()),
            ledger: OnceLock::new(),
            metrics: Metrics::new(),
            limiter: Limiter::new(registry_redis.as_ref().map(|u| u.expose()), registry_allow),
        }))
    }

    /// The current snapshot, owned: hold it for the whole request, across awaits.
    pub fn snapshot(&self) -> Arc<Registry> {
        self.snapshot.load_full()
    }

    fn status(&self) -> std::sync::MutexGuard<'_, ReloadStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a newly built snapshot; settings that need a restart are reported.
    pub(crate) fn apply(&self, next: Registry, pending_restart: Vec<String>) -> ReloadEvent {
        let generation = next.generation;
        self.snapshot.store(Arc::new(next));
        let recovered = {
            let mut status = self.status();
            status.counts.applied += 1;
            self.metrics.reload("applied");
            status.pending_restart = pending_restart;
            status.last_error.take().is_some()
        };
        if recovered {
            tracing::info!(
                generation,
                "configuration valid again; reload error cleared"
            );
        } else {
            tracing::info!(generation, "configuration reloaded");
        }
        let event = ReloadEvent::Applied { generation };
        let _ = self.events.send(event.clone());
        event
    }

    /// Records a reload that found the files as the serving snapshot was built from.
    /// Reverting a broken edit lands here: the good config is serving, so the error is over.
    pub(crate) fn unchanged(&self) -> ReloadEvent {
        let generation = self.snapshot.load().generation;
        let recovered = {
            let mut status = self.status();
            status.counts.unchanged += 1;
            self.metrics.reload("unchanged");
            status.last_error.take().is_some()
        };
        if recovered {
            tracing::info!(
                generation,
                "configuration valid again (the broken edit was reverted); reload error cleared"
            );
        }
        ReloadEvent::Unchanged { generation }
    }

    /// Records a rejected reload: the last good snapshot keeps serving. The same errors
    /// twice in a row (editors often write twice) are logged once.
    pub(crate) fn reject(&self, errors: Vec<String>) -> ReloadEvent {
        let generation = self.snapshot.load().generation;
        let repeated = {
            let mut status = self.status();
            status.counts.failed += 1;
            self.metrics.reload("failed");
            let repeated = status
                .last_error
                .as_ref()
                .is_some_and(|last| last.errors == errors);
            if !repeated {
                status.last_error = Some(ReloadFailure {
                    at: SystemTime::now(),
                    errors: errors.clone(),
                });
            }
            repeated
        };
        if !repeated {
            for e in &errors {
                tracing::error!("{e}");
            }
            tracing::error!(
                errors = errors.len(),
                generation,
                "configuration rejected; still serving the last good one"
            );
        }
        let event = ReloadEvent::Failed { errors };
        let _ = self.events.send(event.clone());
        event
    }

    fn reload_counts(&self) -> ReloadCounts {
        self.status().counts
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.status().clone()
    }

    /// What `/health`, MCP's `health_check` and `llmhub models` report: uptime,
    /// configuration generation and reload errors, each provider's state and circuit,
    /// and the backend MCP servers.
    pub fn health(&self) -> Health {
        let registry = self.snapshot();
        let status = self.reload_status();
        let now = Instant::now();
        let providers = registry
            .providers
            .values()
            .map(|p| {
                let (active, reason) = match &p.status {
                    Status::Active => (true, None),
                    Status::Inactive(r) => (false, Some(r.clone())),
                };
                let view = ProviderHealth {
                    active,
                    reason,
                    adapter: p.adapter.as_str().to_string(),
                    models: p.models.len(),
                    circuit: self.breakers.view(&p.name, now),
                    fallback_to: p.fallback_to.clone(),
                };
                (p.name.clone(), view)
            })
            .collect();
        let last_reload_error = status.last_error.map(|e| ReloadErrorView {
            at: unix(e.at),
            errors: e.errors,
        });
        let ledger_down = self.ledger.get().is_some_and(|l| l.health().state != "ok");
        let limits = self.limiter.health();
        Health {
            status: if last_reload_error.is_some() || ledger_down || limits.state != "ok" {
                "degraded"
            } else {
                "ok"
            }
            .to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.started_at.elapsed().as_secs(),
            config: Some(ConfigHealth {
                path: self.config_path.display().to_string(),
                generation: registry.generation,
                loaded_at: unix(registry.loaded_at),
                last_reload_error,
                pending_restart: status.pending_restart,
                reloads: self.reload_counts(),
            }),
            providers: Some(providers),
            groups: Some(registry.groups.keys().cloned().collect()),
            chains: Some(
                registry
                    .groups
                    .keys()
                    .map(|g| {
                        let chain = registry.chain(g).unwrap_or_default();
                        let chain = chain
                            .iter()
                            .map(|t| format!("{}/{}", t.provider, t.model))
                            .collect();
                        (g.clone(), chain)
                    })
                    .collect(),
            ),
            backends: Some(
                self.backends_report
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
            ledger: self.ledger.get().map(|l| l.health()),
            limits: Some(limits),
        }
    }

    pub fn set_backends_report(&self, report: BTreeMap<String, BackendHealth>) {
        *self
            .backends_report
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = report;
    }

    /// Starts the usage ledger as `[storage]` said at start (once; later calls are
    /// no-ops), and reads budgets' spend so far from it. Returns once spend is read, or
    /// after `wait` (it goes on being tried; budgets follow their store-down policy).
    pub async fn start_ledger(self: &Arc<Self>, wait: Duration) {
        let Some(url) = &self.started.storage_url else {
            self.limiter.spend_unrecorded();
            return;
        };
        let mut first = false;
        let ledger = self.ledger.get_or_init(|| {
            first = true;
            Arc::new(Ledger::start(
                url.expose().to_string(),
                self.started.retention_days,
            ))
        });
        if !first {
            return;
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let hub = self.clone();
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let mut done = Some(done_tx);
            let mut delay = Duration::from_millis(200);
            loop {
                ledger.first_attempt().await;
                if let Some(store) = ledger.store() {
                    match hub.limiter.load_spend(&store).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read spend so far from the usage ledger; retrying")
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            if let Some(tx) = done.take() {
                let _ = tx.send(());
            }
        });
        let _ = tokio::time::timeout(wait, done_rx).await;
    }

    /// Admits a request under the caller's key limits and project budget. Admin keys are
    /// held to nothing. `estimate_usd` is asked only when a budget applies.
    pub async fn admit(
        &self,
        registry: &Registry,
        principal: &Principal,
        caller: &mut Caller,
        estimate_usd: impl FnOnce() -> f64,
    ) -> Result<(), Refusal> {
        if matches!(principal, Principal::Admin) {
            return Ok(());
        }
        let key = principal.key().map(|k| k.as_ref());
        let project_budget = registry.projects.get(&caller.project).copied();
        let budgeted = project_budget.is_some() || key.is_some_and(|k| k.limits.budget.is_set());
        let ask = Ask {
            key,
            project: &caller.project,
            project_budget,
            estimate_usd: if budgeted { estimate_usd() } else { 0.0 },
        };
        match self.limiter.admit(&ask).await {
            Ok(permit) => {
                caller.permit = permit;
                Ok(())
            }
            Err(refusal) => {
                self.metrics.limited(refusal.kind.label());
                Err(refusal)
            }
        }
    }

    pub fn ledger(&self) -> Option<&Arc<Ledger>> {
        self.ledger.get()
    }

    /// The usage database for reports, or why there is none to read.
    pub fn usage_store(&self) -> Result<Arc<crate::store::Store>, String> {
        let Some(ledger) = self.ledger.get() else {
            return Err("the usage ledger is off ([storage] ledger = false)".to_string());
        };
        ledger.store().ok_or_else(|| {
            format!(
                "the usage database is not reachable yet: {}",
                ledger.health().last_error.unwrap_or_default()
            )
        })
    }

    /// Writes out every queued ledger row (graceful stop).
    pub async fn flush_ledger(&self) {
        if let Some(ledger) = self.ledger.get() {
            ledger.close().await;
        }
    }

    /// Queues a ledger row for `record`, priced from the snapshot's providers.d. Never
    /// waits and never fails: the ledger counts what it cannot keep.
    pub fn record(&self, registry: &Registry, record: Record) {
        let ok = (200..300).contains(&record.status);
        let listed = registry
            .providers
            .get(&record.provider)
            .and_then(|p| p.model(p.canonical_model(&record.model)));
        let priced = listed.and_then(|m| m.cost(&record.usage));
        let cost = if ok { priced } else { Some(0.0) };
        let spent = cost.unwrap_or(0.0);
        match &record.caller.permit {
            Some(permit) => permit.settle(record.usage.input + record.usage.output, spent),
            None => self
                .limiter
                .spent(&record.caller.key, &record.caller.project, spent),
        }
        let provider_label = if registry.providers.contains_key(&record.provider) {
            record.provider.as_str()
        } else {
            ""
        };
        let model_label = match listed {
            Some(m) => m.id.as_str(),
            None if record.model.is_empty() => "",
            None => crate::metrics::UNLISTED,
        };
        self.metrics.observe(&Observation {
            surface: record.surface,
            provider: provider_label,
            model: model_label,
            status: record.status,
            latency_s: record.latency.as_secs_f64(),
            ttft_s: record.ttft.map(|t| t.as_secs_f64()),
            tokens: [
                ("input", record.usage.input),
                ("cached", record.usage.cached),
                ("output", record.usage.output),
                ("reasoning", record.usage.reasoning),
            ],
            cost_usd: cost,
            attempts: &record.tries,
        });
        let Some(ledger) = self.ledger.get() else {
            return;
        };
        let at_ms = crate::store::now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        ledger.record(Row {
            id: crate::store::unique_id(),
            at_ms,
            day: crate::store::civil_date(crate::store::days(at_ms)),
            key: record.caller.key,
            project: record.caller.project,
            agent: record.caller.agent,
            surface: record.surface.to_string(),
            requested: record.requested,
            provider: record.provider,
            model: record.model,
            status: record.status,
            attempts: record.attempts,
            streamed: record.streamed,
            input_tokens: tokens(record.usage.input),
            cached_tokens: tokens(record.usage.cached),
            cache_write_tokens: tokens(record.usage.cache_write),
            output_tokens: tokens(record.usage.output),
            reasoning_tokens: tokens(record.usage.reasoning),
            cost_usd: cost,
            latency_ms: ms(record.latency),
            ttft_ms: record.ttft.map(ms),
            error: record.error,
        });
    }

    /// `/metrics`: the counters, with the state read now (generation, reloads,
    /// circuits, backends, ledger).
    pub fn metrics_text(&self) -> String {
        let registry = self.snapshot();
        let now = Instant::now();
        let circuits = registry
            .providers
            .keys()
            .map(|name| {
                let state = match self.breakers.view(name, now) {
                    BreakerView::Closed { .. } => 0,
                    BreakerView::HalfOpen => 1,
                    BreakerView::Open { .. } => 2,
                };
                (name.clone(), state)
            })
            .collect();
        let backends = self
            .backends_report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, b)| (name.clone(), b.status == "connected"))
            .collect();
        let ledger = self.ledger.get().map(|l| l.health());
        self.metrics.render(Scrape {
            generation: registry.generation,
            circuits,
            backends,
            ledger_written: ledger.as_ref().map_or(0, |l| l.written),
            ledger_dropped: ledger.as_ref().map_or(0, |l| l.dropped),
            ledger_queued: ledger.as_ref().map_or(0, |l| l.queued),
        })
    }

    /// Every reload outcome from now on; tests and MCP sessions wait on this.
    pub fn subscribe(&self) -> watch::Receiver<ReloadEvent> {
        self.events.subscribe()
    }
}

/// The health report. Callers without a key, when keys are configured, get only
/// `status`, `version` and `uptime_s`; the rest names paths, env keys and errors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub uptime_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<BTreeMap<String, ProviderHealth>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Each group's chain: its targets, each followed by its fallbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<BTreeMap<String, BackendHealth>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsHealth>,
}

impl Health {
    /// The part anyone may see.
    pub fn public(self) -> Health {
        Health {
            config: None,
            providers: None,
            groups: None,
            chains: None,
            backends: None,
            ledger: None,
            limits: None,
            ..self
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigHealth {
    pub path: String,
    pub generation: u64,
    pub loaded_at: u64,
    pub last_reload_error: Option<ReloadErrorView>,
    pub pending_restart: Vec<String>,
    pub reloads: ReloadCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadErrorView {
    pub at: u64,
    pub errors: Vec<String>,
}

/// Reload attempts since start, by outcome: an idle gateway's counts stay still.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadCounts {
    pub applied: u64,
    pub unchanged: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderHealth {
    pub active: bool,
    pub reason: Option<String>,
    pub adapter: String,
    pub models: usize,
    pub circuit: BreakerView,
    #[serde(default)]
    pub fallback_to: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendHealth {
    /// `inactive`, `connecting`, `connected` or `down`.
    pub status: String,
    pub reason: Option<String>,
    /// `http` or `stdio`.
    pub transport: String,
    pub prefix: String,
    pub tools: usize,
    pub prompts: usize,
    pub connects: u64,
    /// Tools left out by the name rule or a collision, with why.
    pub left_out: Vec<String>,
}

/// Seconds since the epoch.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads the folder tree and builds a snapshot with the given generation.
pub fn load_registry(config_path: &Path, generation: u64) -> Result<Registry, Vec<ConfigError>> {
    let loaded = config::load(config_path);
    let Some(tree) = loaded.tree else {
        return Err(loaded.errors);
    };
    let mut errors = loaded.errors;
    match registry::build(&tree, generation, &registry::process_env) {
        Ok(registry) if errors.is_empty() => Ok(registry),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}
