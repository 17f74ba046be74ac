//! The running gateway's shared state: the live snapshot, reload status, and what
//! outlives a reload (the pooled HTTP client and the circuit breakers).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{self, ConfigError};
use crate::registry::{self, Registry, Settings, Status};
use crate::route::breaker::Breakers;

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
}

#[derive(Debug, Clone)]
pub struct ReloadFailure {
    pub at: SystemTime,
    pub errors: Vec<String>,
}

pub struct Hub {
    pub config_path: PathBuf,
    snapshot: ArcSwap<Registry>,
    pub(crate) status: Mutex<ReloadStatus>,
    /// The settings the process started with: those that only a restart applies are
    /// compared with each reload's.
    pub started: Settings,
    /// Profiles at start: each has an HTTP endpoint, so a new one needs a restart.
    pub started_profiles: Vec<String>,
    pub started_at: Instant,
    pub http: reqwest::Client,
    pub breakers: Breakers,
    pub(crate) events: watch::Sender<ReloadEvent>,
    /// The backend MCP servers' states, kept current by the MCP side for `/health`.
    backends_report: Mutex<serde_json::Value>,
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
            backends_report: Mutex::new(serde_json::Value::Object(Default::default())),
        }))
    }

    /// The current snapshot, owned: hold it for the whole request, across awaits.
    pub fn snapshot(&self) -> Arc<Registry> {
        self.snapshot.load_full()
    }

    pub(crate) fn publish(&self, registry: Registry) {
        self.snapshot.store(Arc::new(registry));
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What `/health` and MCP's `health_check` report: uptime, configuration generation
    /// and reload errors, each provider's state and circuit.
    pub fn health(&self) -> serde_json::Value {
        use serde_json::json;
        let registry = self.snapshot();
        let status = self.reload_status();
        let now = Instant::now();
        let providers: serde_json::Map<String, serde_json::Value> = registry
            .providers
            .values()
            .map(|p| {
                let (active, reason) = match &p.status {
                    Status::Active => (true, None),
                    Status::Inactive(r) => (false, Some(r.clone())),
                };
                let v = json!({
                    "active": active,
                    "reason": reason,
                    "adapter": p.adapter.as_str(),
                    "models": p.models.len(),
                    "circuit": self.breakers.view(&p.name, now),
                });
                (p.name.clone(), v)
            })
            .collect();
        let last_error = status
            .last_error
            .map(|e| json!({"at": unix(e.at), "errors": e.errors}));
        json!({
            "status": if last_error.is_some() { "degraded" } else { "ok" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started_at.elapsed().as_secs(),
            "config": {
                "path": self.config_path.display().to_string(),
                "generation": registry.generation,
                "loaded_at": unix(registry.loaded_at),
                "last_reload_error": last_error,
                "pending_restart": status.pending_restart,
            },
            "providers": providers,
            "groups": registry.groups.keys().collect::<Vec<_>>(),
            "backends": self.backends_report.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }

    pub fn set_backends_report(&self, report: serde_json::Value) {
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
