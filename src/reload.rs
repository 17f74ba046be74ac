//! Hot reload: a debounced watcher on hub.toml's folder and the `.d` folders; each
//! batch of changes loads, builds and swaps a new snapshot, or keeps the last good
//! one and records why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::event::{AccessKind, AccessMode};
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use crate::config::{self, KEYS_DIR, PROVIDERS_DIR, SERVERS_DIR, TOOLS_DIR};
use crate::hub::{Hub, ReloadEvent};
use crate::registry;

/// Editors and `cp` write in bursts; one quiet spell this long ends a batch.
const DEBOUNCE: Duration = Duration::from_millis(60);
/// How often the debouncer looks for a batch that has gone quiet. Its thread wakes this
/// often even with nothing to do (notify's default, a quarter of `DEBOUNCE`, woke it 68
/// times a second at rest, which a laptop running llmhub for its MCP client pays for);
/// a batch now ends 60 to 120 ms after its last write.
const TICK: Duration = DEBOUNCE;

/// Loads the files again and swaps the snapshot if they changed and are valid.
pub fn reload(hub: &Hub) -> ReloadEvent {
    let current = hub.snapshot();
    let loaded = config::load(&hub.config_path);
    let Some(tree) = loaded.tree else {
        return hub.reject(loaded.errors.iter().map(ToString::to_string).collect());
    };
    if loaded.errors.is_empty() && tree.fingerprint == current.fingerprint {
        return hub.unchanged();
    }
    let mut errors = loaded.errors;
    match registry::build(&tree, current.generation + 1, &registry::process_env) {
        Ok(next) if errors.is_empty() => {
            let pending = restart_settings(hub, &next);
            hub.apply(next, pending)
        }
        Ok(_) => hub.reject(errors.iter().map(ToString::to_string).collect()),
        Err(more) => {
            errors.extend(more);
            hub.reject(errors.iter().map(ToString::to_string).collect())
        }
    }
}

/// Settings read from the files that differ from the started ones but only a restart applies.
fn restart_settings(hub: &Hub, next: &registry::Registry) -> Vec<String> {
    let (was, now) = (&hub.started, &next.settings);
    let mut pending = Vec::new();
    let mut differs = |key: &str, before: String, after: String| {
        if before != after {
            let msg = format!("{key} changed from {before} to {after}: restart llmhub to apply it");
            tracing::warn!("{msg}");
            pending.push(msg);
        }
    };
    differs(
        "server.listen",
        was.listen.to_string(),
        now.listen.to_string(),
    );
    differs(
        "mcp.http_path",
        was.mcp_http_path.clone(),
        now.mcp_http_path.clone(),
    );
    differs(
        "mcp.allowed_hosts",
        format!("{:?}", was.mcp_allowed_hosts),
        format!("{:?}", now.mcp_allowed_hosts),
    );
    differs(
        "profiles (their /mcp/NAME endpoints)",
        format!("{:?}", hub.started_profiles),
        format!("{:?}", next.profiles.keys().collect::<Vec<_>>()),
    );
    let storage = |s: &registry::Settings| {
        s.storage_url
            .as_ref()
            .map_or("off".to_string(), |u| crate::store::redact_url(u.expose()))
    };
    differs("storage", storage(was), storage(now));
    differs(
        "storage.retention_days",
        was.retention_days.to_string(),
        now.retention_days.to_string(),
    );
    let redis = |s: &registry::Settings| {
        s.redis_url
            .as_ref()
            .map_or("off".to_string(), |u| crate::store::redact_url(u.expose()))
    };
    differs("storage.redis_url_env", redis(was), redis(now));
    differs(
        "storage.limits_when_store_down",
        was.allow_when_store_down.to_string(),
        now.allow_when_store_down.to_string(),
    );
    differs(
        "mcp.allowed_origins",
        format!("{:?}", was.mcp_allowed_origins),
        format!("{:?}", now.mcp_allowed_origins),
    );
    pending
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watch {
    _task: tokio::task::JoinHandle<()>,
}

/// Starts watching the configuration folders; reloads run on a blocking thread.
pub fn watch(hub: Arc<Hub>) -> notify_debouncer_full::notify::Result<Watch> {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    // Absolute, so the paths in events compare equal to it.
    let dir = config_dir(&hub.config_path);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let hub_name = hub.config_path.file_name().map(|n| n.to_os_string());
    let handler_dir = dir.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, Some(TICK), move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        let relevant = events
            .iter()
            .filter(|e| is_write(&e.kind))
            .flat_map(|e| e.paths.iter())
            .any(|p| is_relevant(p, &handler_dir, hub_name.as_deref()));
        if relevant {
            // A full channel already holds a pending reload, which will see this change too.
            let _ = tx.try_send(());
        }
    })?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    let mut watched = BTreeMap::new();
    rewatch(&mut debouncer, &dir, &mut watched);

    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let hub = hub.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&hub)).await;
            rewatch(&mut debouncer, &dir, &mut watched);
        }
    });
    Ok(Watch { _task: task })
}

fn config_dir(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Watches each `.d` folder that exists, again when it appears or when its target
/// changed (a ConfigMap swaps a symlink and the old folder is deleted).
fn rewatch(
    debouncer: &mut Debouncer<RecommendedWatcher, RecommendedCache>,
    dir: &Path,
    watched: &mut BTreeMap<PathBuf, PathBuf>,
) {
    for name in [PROVIDERS_DIR, TOOLS_DIR, SERVERS_DIR, KEYS_DIR] {
        let path = dir.join(name);
        let target = std::fs::canonicalize(&path).ok();
        let before = watched.get(&path).cloned();
        if target == before {
            continue;
        }
        if before.is_some() {
            let _ = debouncer.unwatch(&path);
            watched.remove(&path);
        }
        if let Some(target) = target
            && path.is_dir()
        {
            match debouncer.watch(&path, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(path, target);
                }
                Err(e) => {
                    tracing::warn!(folder = %path.display(), error = %e, "cannot watch folder")
                }
            }
        }
    }
}

/// Whether an event can change what a file holds. Opening and reading one cannot, and
/// a reload reads every file: counting reads would make each reload trigger the next.
fn is_write(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Changes to hub.toml, `.env`, a `.d` folder or its `.toml` files, or a ConfigMap's `..data` swap.
fn is_relevant(path: &Path, dir: &Path, hub_name: Option<&std::ffi::OsStr>) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.ends_with(".swp") || name.ends_with('~') || name.ends_with(".tmp") || name == "4913" {
        return false;
    }
    let parent = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    let in_d_folder = matches!(
        parent,
        Some(PROVIDERS_DIR | TOOLS_DIR | SERVERS_DIR | KEYS_DIR)
    );
    (in_d_folder && name.ends_with(".toml"))
        || Some(std::ffi::OsStr::new(name)) == hub_name
        || name == config::DOTENV
        || name.starts_with("..")
        || (path.parent() == Some(dir)
            && matches!(name, PROVIDERS_DIR | TOOLS_DIR | SERVERS_DIR | KEYS_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_do_not_trigger_a_reload() {
        use notify_debouncer_full::notify::event::{CreateKind, ModifyKind};
        assert!(!is_write(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_write(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_write(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_write(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_write(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn only_configuration_files_trigger_a_reload() {
        let dir = Path::new("/etc/llmhub");
        let hub = Some(std::ffi::OsStr::new("hub.toml"));
        for p in [
            "/etc/llmhub/hub.toml",
            "/etc/llmhub/.env",
            "/etc/llmhub/providers.d/mistral.toml",
            "/etc/llmhub/tools.d/review.toml",
            "/etc/llmhub/..data",
            "/etc/llmhub/providers.d",
        ] {
            assert!(is_relevant(Path::new(p), dir, hub), "{p}");
        }
        for p in [
            "/etc/llmhub/Cargo.lock",
            "/etc/llmhub/providers.d/.mistral.toml.swp",
            "/etc/llmhub/providers.d/mistral.toml~",
            "/etc/llmhub/providers.d/4913",
            "/etc/llmhub/target",
        ] {
            assert!(!is_relevant(Path::new(p), dir, hub), "{p}");
        }
    }
}
