//! The running gateway's shared state: the live snapshot, reload status, and what
//! outlives a reload (the pooled HTTP client and the circuit breakers).

pub mod breaker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{self, ConfigError};
use crate::registry::{self, Registry, Settings, Status};
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
    pub http: reqwest::Client,
    pub breakers: Breakers,
    events: watch::Sender<ReloadEvent>,
    /// The backend MCP servers' states, kept current by the MCP side for `/health`.
    backends_report: Mutex<BTreeMap<String, BackendHealth>>,
}

impl Hub {
    /// Loads and validates the configuration at `config_path`, or returns every error.
    pub fn load(config_path: &Path) -> Result<Arc<Hub>, Vec<ConfigError>> {
        let registry = load_registry(config_path, 1)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("llmhub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
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
                };
                (p.name.clone(), view)
            })
            .collect();
        let last_reload_error = status.last_error.map(|e| ReloadErrorView {
            at: unix(e.at),
            errors: e.errors,
        });
        Health {
            status: if last_reload_error.is_some() {
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
            backends: Some(
                self.backends_report
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
        }
    }

    pub fn set_backends_report(&self, report: BTreeMap<String, BackendHealth>) {
        *self
            .backends_report
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = report;
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<BTreeMap<String, BackendHealth>>,
}

impl Health {
    /// The part anyone may see.
    pub fn public(self) -> Health {
        Health {
            config: None,
            providers: None,
            groups: None,
            backends: None,
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
