//! The running gateway's shared state: the live snapshot, reload status, and what
//! outlives a reload (the pooled HTTP client and the circuit breakers).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{self, ConfigError};
use crate::registry::{self, Registry};
use crate::route::breaker::Breakers;

/// The outcome of the latest reload attempt, published to anyone watching.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadEvent {
    Started,
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
    /// The listen address the process started with; a different one in the files needs a restart.
    pub started_listen: SocketAddr,
    pub started_at: Instant,
    pub http: reqwest::Client,
    pub breakers: Breakers,
    pub(crate) events: watch::Sender<ReloadEvent>,
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
            started_listen: registry.settings.listen,
            snapshot: ArcSwap::from_pointee(registry),
            status: Mutex::new(ReloadStatus::default()),
            started_at: Instant::now(),
            http,
            breakers: Breakers::default(),
            events,
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

    /// Every reload outcome from now on; tests and MCP sessions wait on this.
    pub fn subscribe(&self) -> watch::Receiver<ReloadEvent> {
        self.events.subscribe()
    }
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
