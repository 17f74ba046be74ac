//! The ledger writer: rows go through a bounded queue to one task that writes them in
//! batches. A request never waits on the database: a full queue drops the row and
//! counts it; a database that is down is retried while the queue absorbs what it can;
//! closing flushes every queued row.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{Row, Store};

/// Rows waiting for the writer; past this, new rows are dropped and counted.
pub const QUEUE: usize = 16_384;
/// Rows written in one transaction at most.
const BATCH: usize = 1_000;
/// How long the writer waits for more rows before writing a batch.
const LINGER: Duration = Duration::from_millis(25);
const MIN_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How long closing keeps retrying a database that is down before giving up on rows.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

enum Msg {
    Row(Box<Row>),
    /// Write what is queued before this, then answer.
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

#[derive(Default)]
struct Stats {
    /// Set after the first attempt to open the database, whatever its outcome.
    tried: tokio::sync::Notify,
    tried_once: std::sync::atomic::AtomicBool,
    written: AtomicU64,
    dropped: AtomicU64,
    lost: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What `/health` shows of the ledger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LedgerHealth {
    /// `ok`, or `down` while the database refuses writes (rows wait in the queue).
    pub state: String,
    pub database: String,
    pub written: u64,
    pub queued: u64,
    /// Rows dropped because the queue was full.
    pub dropped: u64,
    /// Rows given up on at shutdown because the database stayed down.
    pub lost: u64,
    pub last_error: Option<String>,
}

pub struct Ledger {
    tx: mpsc::Sender<Msg>,
    stats: Arc<Stats>,
    database: String,
    store: Arc<OnceLock<Arc<Store>>>,
}

impl Ledger {
    /// Starts the writer task, which opens the database (retrying while it is down:
    /// the gateway serves meanwhile, and rows wait in the queue) and prunes rows older
    /// than `retention_days` once a day.
    pub fn start(url: String, retention_days: u32) -> Ledger {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let store = Arc::new(OnceLock::new());
        let database = super::redact_url(&url);
        {
            let stats = stats.clone();
            let slot = store.clone();
            tokio::spawn(async move {
                let store = open(&url, &stats).await;
                let _ = slot.set(store.clone());
                tokio::spawn(retain(store.clone(), retention_days));
                write_loop(store, rx, stats).await;
            });
        }
        Ledger {
            tx,
            stats,
            database,
            store,
        }
    }

    /// Returns once the first attempt to open the database has succeeded or failed.
    pub async fn first_attempt(&self) {
        let notified = self.stats.tried.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.stats.tried_once.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// The database, once it has been opened.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.get().cloned()
    }

    /// Queues a row; never waits. A full queue drops it (counted, and logged once per
    /// thousand so a flood does not flood the log too).
    pub fn record(&self, row: Row) {
        if self.tx.try_send(Msg::Row(Box::new(row))).is_err() {
            let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = n + 1,
                    "usage ledger queue full; rows are being dropped"
                );
            }
        }
    }

    /// Returns once every row queued before the call is written (or given up on).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Writes out everything queued so far, then stops the writer. Bounded: a database
    /// that stays down through shutdown costs its queued rows (logged), never a hung stop.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        let closed = async {
            if self.tx.send(Msg::Close(done)).await.is_ok() {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(1), closed)
            .await
            .is_err()
        {
            let queued = (QUEUE - self.tx.capacity()) as u64;
            self.stats.lost.fetch_add(queued, Ordering::Relaxed);
            tracing::error!(
                rows = queued,
                "usage ledger rows lost: the database stayed unreachable through shutdown"
            );
        }
    }

    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> LedgerHealth {
        let last_error = self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        LedgerHealth {
            state: if last_error.is_some() { "down" } else { "ok" }.to_string(),
            database: self.database.clone(),
            written: self.stats.written.load(Ordering::Relaxed),
            queued: (QUEUE - self.tx.capacity()) as u64,
            dropped: self.dropped(),
            lost: self.stats.lost.load(Ordering::Relaxed),
            last_error,
        }
    }
}

async fn open(url: &str, stats: &Stats) -> Arc<Store> {
    let mut wait = MIN_RETRY;
    loop {
        let opened = Store::open(url).await;
        let attempted = |stats: &Stats| {
            if !stats.tried_once.swap(true, Ordering::AcqRel) {
                stats.tried.notify_waiters();
            }
        };
        match opened {
            Ok(store) => {
                if stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .is_some()
                {
                    tracing::info!("usage ledger database reachable again");
                }
                attempted(stats);
                return Arc::new(store);
            }
            Err(e) => {
                let message = e.to_string();
                {
                    let mut last = stats.last_error.lock().unwrap_or_else(|e| e.into_inner());
                    if last.as_deref() != Some(message.as_str()) {
                        tracing::error!(error = %message, "usage ledger database unavailable; serving without it, retrying");
                    }
                    *last = Some(message);
                }
                attempted(stats);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Deletes request rows past the retention, at start and then daily; totals stay.
async fn retain(store: Arc<Store>, retention_days: u32) {
    loop {
        let today = super::days(super::now_ms());
        let cutoff = super::civil_date(today - i64::from(retention_days));
        match store.prune(&cutoff).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(rows = n, before = %cutoff, "usage rows past retention deleted")
            }
            Err(e) => tracing::warn!(error = %e, "cannot delete usage rows past retention"),
        }
        tokio::time::sleep(Duration::from_secs(86_400)).await;
    }
}

async fn write_loop(store: Arc<Store>, mut rx: mpsc::Receiver<Msg>, stats: Arc<Stats>) {
    let mut batch: Vec<Row> = Vec::new();
    let mut closing: Option<oneshot::Sender<()>> = None;
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    while closing.is_none() {
        let mut next = rx.recv().await;
        // Rows that arrive within LINGER of the first share its transaction: under load
        // that makes batches of hundreds instead of a commit per handful of rows.
        let deadline = tokio::time::Instant::now() + LINGER;
        loop {
            match next {
                Some(Msg::Row(row)) => batch.push(*row),
                Some(Msg::Flush(done)) => flushed.push(done),
                Some(Msg::Close(done)) => closing = Some(done),
                None => break,
            }
            if batch.len() >= BATCH || closing.is_some() || !flushed.is_empty() {
                break;
            }
            next = match rx.try_recv() {
                Ok(msg) => Some(msg),
                Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
            };
            if next.is_none() {
                break;
            }
        }
        flush(&store, &mut batch, &stats, closing.is_some()).await;
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
        if rx.is_closed() && rx.is_empty() {
            break;
        }
    }
    // Rows queued behind the close request were recorded before it returned: write them too.
    rx.close();
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Row(row) => batch.push(*row),
            Msg::Flush(done) | Msg::Close(done) => flushed.push(done),
        }
    }
    flush(&store, &mut batch, &stats, true).await;
    for done in flushed.into_iter().chain(closing) {
        let _ = done.send(());
    }
}

/// Writes the batch, retrying while the database is down; when closing, only for a
/// bounded time, after which the rows are counted as lost.
async fn flush(store: &Store, batch: &mut Vec<Row>, stats: &Stats, closing: bool) {
    if batch.is_empty() {
        return;
    }
    let started = tokio::time::Instant::now();
    let mut wait = MIN_RETRY;
    loop {
        match store.write(batch).await {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let mut last = stats.last_error.lock().unwrap_or_else(|e| e.into_inner());
                if last.take().is_some() {
                    tracing::info!("usage ledger writes again");
                }
                batch.clear();
                return;
            }
            Err(e) => {
                let message = e.to_string();
                {
                    let mut last = stats.last_error.lock().unwrap_or_else(|e| e.into_inner());
                    if last.as_deref() != Some(message.as_str()) {
                        tracing::warn!(rows = batch.len(), error = %message, "usage ledger cannot write; retrying");
                    }
                    *last = Some(message);
                }
                if closing && started.elapsed() >= CLOSE_GRACE {
                    tracing::error!(
                        rows = batch.len(),
                        "usage ledger rows lost: the database stayed down through shutdown"
                    );
                    stats.lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}
