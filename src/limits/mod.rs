//! Rate limits and budgets: a request is admitted before its call (a budget reserves an
//! estimate) and settled after it with the real tokens and cost. Counters live in this
//! process, or in Redis so that many instances enforce one limit together.
//!
//! Requests per minute and tokens per minute are GCRA buckets (a token bucket kept as
//! one timestamp): the full allowance is available at once and comes back steadily, as
//! OpenAI's own limits do. Spend is kept per key and per project for the current UTC
//! day and month, seeded from the usage ledger at start so a restart resets nothing.

mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chat::ChatRequest;
use crate::registry::{Budget, Key, Limits, Registry};
use crate::store::{Dim, Store, UsageQuery, civil_date, days, next_month, now_ms};

/// The window of `rpm` and `tpm`.
const WINDOW_MS: f64 = 60_000.0;
/// Output tokens a budget reserves for a request that sets no `max_tokens`.
pub const DEFAULT_RESERVED_OUTPUT: u64 = 1_024;
/// How long a parallel slot is held at most if its holder vanished (an instance crashed).
const PARALLEL_LEASE: Duration = Duration::from_secs(15 * 60);

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Parallel,
    KeyDay,
    KeyMonth,
    ProjectDay,
    ProjectMonth,
    /// A budget applies, and the counter store cannot be asked (`limits_when_store_down = "deny"`).
    StoreDown,
}

impl LimitKind {
    /// The metric label of the limit.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Parallel => "parallel",
            LimitKind::StoreDown => "store_down",
            _ => "budget",
        }
    }
}

/// OpenAI's `x-ratelimit-*` values for one limit: the limit, what is left, and how long
/// until it is whole again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// The `x-ratelimit-*` headers a limited key gets on every answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateHeaders {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

impl RateHeaders {
    /// `(name, value)` pairs, in OpenAI's names and duration format.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(w) = self.requests {
            out.push(("x-ratelimit-limit-requests", w.limit.to_string()));
            out.push(("x-ratelimit-remaining-requests", w.remaining.to_string()));
            out.push(("x-ratelimit-reset-requests", go_duration(w.reset)));
        }
        if let Some(w) = self.tokens {
            out.push(("x-ratelimit-limit-tokens", w.limit.to_string()));
            out.push(("x-ratelimit-remaining-tokens", w.remaining.to_string()));
            out.push(("x-ratelimit-reset-tokens", go_duration(w.reset)));
        }
        out
    }
}

/// `250ms`, `6s`, `1.5s`, `6m0s`: how OpenAI writes its reset times.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let minutes = ms / 60_000;
    let rest = (ms % 60_000) as f64 / 1_000.0;
    let secs = format!("{rest:.3}");
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    if minutes > 0 {
        format!("{minutes}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// A refused request: which limit, in words, and when to retry.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: LimitKind,
    pub message: String,
    pub retry_after: Duration,
    pub headers: RateHeaders,
}

/// Who asks, and what the request may cost.
pub struct Ask<'a> {
    pub key: Option<&'a Key>,
    pub project: &'a str,
    /// The project's budget, when it has one and the caller is held to it.
    pub project_budget: Option<Budget>,
    pub estimate_usd: f64,
}

impl Ask<'_> {
    fn limits(&self) -> Limits {
        self.key.map(|k| k.limits).unwrap_or_default()
    }
    fn budgets(&self) -> Vec<(Scope, Period, f64)> {
        let mut out = Vec::new();
        if let Some(k) = self.key {
            let scope = Scope::Key(k.name.clone());
            let b = k.limits.budget;
            out.extend(b.day.map(|v| (scope.clone(), Period::Day, v)));
            out.extend(b.month.map(|v| (scope, Period::Month, v)));
        }
        if let Some(b) = self.project_budget {
            let scope = Scope::Project(self.project.to_string());
            out.extend(b.day.map(|v| (scope.clone(), Period::Day, v)));
            out.extend(b.month.map(|v| (scope, Period::Month, v)));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Key(String),
    Project(String),
}

impl Scope {
    fn describe(&self) -> String {
        match self {
            Scope::Key(k) => format!("key `{k}`"),
            Scope::Project(p) => format!("project `{p}`"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Day,
    Month,
}

impl Period {
    fn kind(self, scope: &Scope) -> LimitKind {
        match (scope, self) {
            (Scope::Key(_), Period::Day) => LimitKind::KeyDay,
            (Scope::Key(_), Period::Month) => LimitKind::KeyMonth,
            (Scope::Project(_), Period::Day) => LimitKind::ProjectDay,
            (Scope::Project(_), Period::Month) => LimitKind::ProjectMonth,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Month => "monthly",
        }
    }
    /// Today's day number and how long until this period ends.
    fn remaining(self) -> Duration {
        let now = now_ms();
        let today = days(now);
        let end_day = match self {
            Period::Day => today + 1,
            Period::Month => next_month(today),
        };
        Duration::from_millis(u64::try_from(end_day * 86_400_000 - now).unwrap_or(0))
    }
    /// The period's label in counter names: `2026-11-22` or `2026-11`.
    fn label(self) -> String {
        let date = civil_date(days(now_ms()));
        match self {
            Period::Day => date,
            Period::Month => date[..7].to_string(),
        }
    }
}

/// A refusal by rpm, tpm or max_parallel, in words a client can act on.
fn rate_refusal(
    kind: LimitKind,
    key: &str,
    limit: u64,
    retry_after: Duration,
    headers: RateHeaders,
) -> Refusal {
    let message = match kind {
        LimitKind::Parallel => format!(
            "key `{key}` has {limit} requests in progress, its max_parallel; retry when one ends"
        ),
        _ => format!(
            "rate limit reached for key `{key}`: {limit} {} per minute; retry in {}",
            if kind == LimitKind::Tokens {
                "tokens"
            } else {
                "requests"
            },
            go_duration(retry_after)
        ),
    };
    Refusal {
        kind,
        message,
        retry_after,
        headers,
    }
}

fn budget_refusal(
    scope: &Scope,
    period: Period,
    limit: f64,
    spent: f64,
    headers: RateHeaders,
) -> Refusal {
    let retry_after = period.remaining();
    Refusal {
        kind: period.kind(scope),
        message: format!(
            "the {} budget of {} is spent: ${spent:.4} of ${limit:.2} used or reserved; it renews in {}",
            period.name(),
            scope.describe(),
            go_duration(Duration::from_secs(retry_after.as_secs()))
        ),
        retry_after,
        headers,
    }
}

/// What one admitted request holds until it is settled: its parallel slot and its
/// reservation. Settling (or dropping) gives them back once.
pub struct Permit {
    limiter: Arc<Inner>,
    key: Option<(String, Limits)>,
    budgets: Vec<(Scope, Period, ())>,
    reserved_usd: f64,
    parallel: bool,
    /// Set when Redis granted it: the slot and reservation live there.
    remote: Option<String>,
    settled: AtomicBool,
    pub headers: RateHeaders,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.key.as_ref().map(|k| &k.0))
            .field("reserved_usd", &self.reserved_usd)
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// Counts the request's real tokens and cost, and gives back its slot and reservation.
    pub fn settle(&self, tokens: u64, cost_usd: f64) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        self.limiter.settle(self, tokens, cost_usd);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled.swap(true, Ordering::AcqRel) {
            self.limiter.settle(self, 0, 0.0);
        }
    }
}

/// What `/health` shows of limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LimitsHealth {
    /// `memory` or `redis`.
    pub store: String,
    /// `ok`, or `down` while Redis cannot be reached (rates are then counted per instance).
    pub state: String,
    /// What budgets do while the store is down: `deny` or `allow`.
    pub when_store_down: String,
    /// Whether spend so far today and this month has been read from the usage ledger.
    pub spend_loaded: bool,
    pub last_error: Option<String>,
}

/// Counters that outlive reloads, as breakers do.
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    local: Mutex<Local>,
    started: Instant,
    remote: Option<redis::Remote>,
    allow_when_down: bool,
    spend_loaded: AtomicBool,
}

#[derive(Default)]
struct Local {
    keys: HashMap<String, KeyState>,
    spend: HashMap<Scope, Spend>,
}

#[derive(Default)]
struct KeyState {
    /// GCRA theoretical arrival times, in ms since the limiter started.
    requests_tat: f64,
    tokens_tat: f64,
    parallel: u32,
}

#[derive(Default, Clone, Copy)]
struct Spend {
    day: i64,
    day_usd: f64,
    month: i64,
    month_usd: f64,
}

impl Spend {
    /// Rolls over to the current day and month.
    fn current(&mut self, today: i64, month: i64) -> &mut Spend {
        if self.day != today {
            self.day = today;
            self.day_usd = 0.0;
        }
        if self.month != month {
            self.month = month;
            self.month_usd = 0.0;
        }
        self
    }
    fn get(&self, period: Period) -> f64 {
        match period {
            Period::Day => self.day_usd,
            Period::Month => self.month_usd,
        }
    }
}

/// The first day of the month holding `day`, as a day number.
fn month_of(day: i64) -> i64 {
    let date = civil_date(day);
    let d: i64 = date[8..].parse().unwrap_or(1);
    day - d + 1
}

impl Limiter {
    pub fn new(redis_url: Option<&str>, allow_when_down: bool) -> Limiter {
        Limiter {
            inner: Arc::new(Inner {
                local: Mutex::new(Local::default()),
                started: Instant::now(),
                remote: redis_url.map(redis::Remote::new),
                allow_when_down,
                spend_loaded: AtomicBool::new(false),
            }),
        }
    }

    /// Admits a request or says which limit refuses it. `None` when nothing limits
    /// this caller: there is nothing to hold or settle.
    pub async fn admit(&self, ask: &Ask<'_>) -> Result<Option<Arc<Permit>>, Refusal> {
        let limits = ask.limits();
        let budgets = ask.budgets();
        if !limits.is_set() && budgets.is_empty() {
            return Ok(None);
        }
        let inner = &self.inner;
        let loaded = inner.spend_loaded.load(Ordering::Acquire);
        if let Some(remote) = &inner.remote
            && loaded
        {
            match remote
                .admit(ask, &limits, &budgets, &inner.seeds(&budgets))
                .await
            {
                Ok(Ok(granted)) => {
                    return Ok(Some(Arc::new(Permit {
                        limiter: inner.clone(),
                        key: ask.key.map(|k| (k.name.clone(), limits)),
                        budgets: budgets
                            .iter()
                            .map(|(s, p, _)| (s.clone(), *p, ()))
                            .collect(),
                        reserved_usd: ask.estimate_usd,
                        parallel: limits.max_parallel.is_some(),
                        remote: Some(granted.member),
                        settled: AtomicBool::new(false),
                        headers: granted.headers,
                    })));
                }
                Ok(Err(refusal)) => return Err(refusal),
                // Down: counted here instead, as the policy says for budgets.
                Err(()) => {}
            }
        }
        let remote_down = inner.remote.as_ref().is_some_and(|r| r.is_down());
        if !budgets.is_empty() && !inner.allow_when_down && (!loaded || remote_down) {
            {
                let why = match inner.remote.as_ref().and_then(|r| r.last_error()) {
                    Some(e) if loaded => format!("the limit store (Redis) is unreachable: {e}"),
                    _ => "spend so far has not been read from the usage ledger yet".to_string(),
                };
                return Err(Refusal {
                    kind: LimitKind::StoreDown,
                    message: format!(
                        "budgets cannot be checked: {why}; [storage] limits_when_store_down = \"deny\""
                    ),
                    retry_after: Duration::from_secs(5),
                    headers: RateHeaders::default(),
                });
            }
        }
        inner.admit_local(ask, &limits, budgets)
    }

    /// Counts the spend of a request that held no permit (no limit applied to it), so
    /// that a budget added by a later reload starts from the truth.
    pub fn spent(&self, key: &str, project: &str, cost_usd: f64) {
        if cost_usd > 0.0 {
            let mut local = self.inner.lock();
            local.add(key, project, cost_usd);
        }
    }

    /// Reads today's and this month's spend from the usage ledger. Until it has, budgets
    /// follow `limits_when_store_down`.
    pub async fn load_spend(&self, store: &Store) -> Result<(), crate::store::StoreError> {
        let today = days(now_ms());
        let month = month_of(today);
        let since = Some(civil_date(month));
        let mut read = Vec::new();
        for dim in [Dim::Key, Dim::Project] {
            let rows = store
                .usage(&UsageQuery {
                    since_day: since.clone(),
                    group_by: vec![dim, Dim::Day],
                    ..UsageQuery::default()
                })
                .await?;
            for row in rows {
                let name = row.group.get(dim.name()).cloned().unwrap_or_default();
                if name.is_empty() || row.totals.cost_usd <= 0.0 {
                    continue;
                }
                let scope = match dim {
                    Dim::Key => Scope::Key(name),
                    _ => Scope::Project(name),
                };
                let is_today = row
                    .group
                    .get("day")
                    .is_some_and(|d| *d == civil_date(today));
                read.push((scope, is_today, row.totals.cost_usd));
            }
        }
        {
            let mut local = self.inner.lock();
            for (scope, is_today, usd) in read {
                let s = local.spend.entry(scope).or_default().current(today, month);
                s.month_usd += usd;
                if is_today {
                    s.day_usd += usd;
                }
            }
        }
        self.inner.spend_loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Marks spend as known without a ledger to read it from (`[storage] ledger = false`).
    pub fn spend_unrecorded(&self) {
        self.inner.spend_loaded.store(true, Ordering::Release);
    }

    pub fn health(&self) -> LimitsHealth {
        let inner = &self.inner;
        let (store, state, last_error) = match &inner.remote {
            None => ("memory", "ok", None),
            Some(r) => (
                "redis",
                if r.is_down() { "down" } else { "ok" },
                r.last_error(),
            ),
        };
        LimitsHealth {
            store: store.to_string(),
            state: state.to_string(),
            when_store_down: if inner.allow_when_down {
                "allow"
            } else {
                "deny"
            }
            .to_string(),
            spend_loaded: inner.spend_loaded.load(Ordering::Acquire),
            last_error,
        }
    }

    /// Spend so far today and this month of a key, as counted here.
    pub fn key_spend(&self, key: &str) -> (f64, f64) {
        let today = days(now_ms());
        let mut local = self.inner.lock();
        local
            .spend
            .get_mut(&Scope::Key(key.to_string()))
            .map_or((0.0, 0.0), |s| {
                let s = s.current(today, month_of(today));
                (s.day_usd, s.month_usd)
            })
    }
}

impl Local {
    fn add(&mut self, key: &str, project: &str, usd: f64) {
        let today = days(now_ms());
        let month = month_of(today);
        let mut scopes = vec![Scope::Project(project.to_string())];
        if !key.is_empty() {
            scopes.push(Scope::Key(key.to_string()));
        }
        for scope in scopes {
            let s = self.spend.entry(scope).or_default().current(today, month);
            s.day_usd = (s.day_usd + usd).max(0.0);
            s.month_usd = (s.month_usd + usd).max(0.0);
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1_000.0
    }

    /// Spend as counted here, to start a Redis counter that does not exist yet.
    fn seeds(&self, budgets: &[(Scope, Period, f64)]) -> Vec<f64> {
        let today = days(now_ms());
        let month = month_of(today);
        let mut local = self.lock();
        budgets
            .iter()
            .map(|(scope, period, _)| {
                local
                    .spend
                    .entry(scope.clone())
                    .or_default()
                    .current(today, month)
                    .get(*period)
            })
            .collect()
    }

    fn admit_local(
        self: &Arc<Self>,
        ask: &Ask<'_>,
        limits: &Limits,
        budgets: Vec<(Scope, Period, f64)>,
    ) -> Result<Option<Arc<Permit>>, Refusal> {
        let now = self.now();
        let today = days(now_ms());
        let month = month_of(today);
        let mut guard = self.lock();
        let local = &mut *guard;
        let name = ask.key.map_or("", |k| k.name.as_str());
        let state = local.keys.entry(name.to_string()).or_default();
        let mut headers = RateHeaders::default();
        let mut next_requests_tat = None;
        if let Some(rpm) = limits.rpm {
            let t = WINDOW_MS / f64::from(rpm);
            let tat = state.requests_tat.max(now);
            if tat - now > WINDOW_MS - t + 1e-6 {
                let wait = tat - now - (WINDOW_MS - t);
                headers.requests = Some(window(u64::from(rpm), 0.0, tat - now));
                headers.tokens = limits
                    .tpm
                    .map(|tpm| tokens_window(tpm, state.tokens_tat, now));
                return Err(rate_refusal(
                    LimitKind::Requests,
                    name,
                    u64::from(rpm),
                    ms(wait),
                    headers,
                ));
            }
            let next = tat + t;
            headers.requests = Some(window(
                u64::from(rpm),
                (WINDOW_MS - (next - now)) / t,
                next - now,
            ));
            next_requests_tat = Some(next);
        }
        if let Some(tpm) = limits.tpm {
            let w = tokens_window(tpm, state.tokens_tat, now);
            headers.tokens = Some(w);
            if w.remaining == 0 {
                let tat = state.tokens_tat.max(now);
                let wait = tat - now - WINDOW_MS + WINDOW_MS / tpm as f64;
                return Err(rate_refusal(
                    LimitKind::Tokens,
                    name,
                    tpm,
                    ms(wait),
                    headers,
                ));
            }
        }
        if let Some(max) = limits.max_parallel
            && state.parallel >= max
        {
            return Err(rate_refusal(
                LimitKind::Parallel,
                name,
                u64::from(max),
                Duration::from_secs(1),
                headers,
            ));
        }
        for (scope, period, limit) in &budgets {
            let spent = local
                .spend
                .entry(scope.clone())
                .or_default()
                .current(today, month)
                .get(*period);
            if spent + ask.estimate_usd > *limit {
                return Err(budget_refusal(scope, *period, *limit, spent, headers));
            }
        }
        // Everything passed: take the request's share of each.
        let state = local.keys.entry(name.to_string()).or_default();
        if let Some(next) = next_requests_tat {
            state.requests_tat = next;
        }
        if limits.max_parallel.is_some() {
            state.parallel += 1;
        }
        for scope in distinct_scopes(&budgets) {
            // A scope's day and month counters both hold the reservation.
            let s = local
                .spend
                .entry(scope.clone())
                .or_default()
                .current(today, month);
            s.day_usd += ask.estimate_usd;
            s.month_usd += ask.estimate_usd;
        }
        let scopes = budgets
            .iter()
            .map(|(s, p, _)| (s.clone(), *p, ()))
            .collect();
        Ok(Some(Arc::new(Permit {
            limiter: self.clone(),
            key: ask.key.map(|k| (k.name.clone(), *limits)),
            budgets: scopes,
            reserved_usd: ask.estimate_usd,
            parallel: limits.max_parallel.is_some(),
            remote: None,
            settled: AtomicBool::new(false),
            headers,
        })))
    }

    fn settle(self: &Arc<Self>, permit: &Permit, tokens: u64, cost_usd: f64) {
        let now = self.now();
        let key = permit.key.as_ref().map_or("", |(k, _)| k.as_str());
        let project = permit.budgets.iter().find_map(|(s, _, _)| match s {
            Scope::Project(p) => Some(p.clone()),
            Scope::Key(_) => None,
        });
        {
            let mut local = self.lock();
            let today = days(now_ms());
            let month = month_of(today);
            // The reservation comes back out of every scope that took it, and the real
            // cost goes into the key's and project's spend (kept here in every mode).
            if permit.remote.is_none() {
                for scope in distinct_scopes(&permit.budgets) {
                    let s = local
                        .spend
                        .entry(scope.clone())
                        .or_default()
                        .current(today, month);
                    s.day_usd = (s.day_usd - permit.reserved_usd).max(0.0);
                    s.month_usd = (s.month_usd - permit.reserved_usd).max(0.0);
                }
            }
            if cost_usd > 0.0 {
                let project = project.unwrap_or_default();
                let today_scope = |scope: Scope, local: &mut Local| {
                    let s = local.spend.entry(scope).or_default().current(today, month);
                    s.day_usd += cost_usd;
                    s.month_usd += cost_usd;
                };
                if !key.is_empty() {
                    today_scope(Scope::Key(key.to_string()), &mut local);
                }
                if !project.is_empty() {
                    today_scope(Scope::Project(project), &mut local);
                }
            }
            if permit.remote.is_none()
                && let Some(state) = local.keys.get_mut(key)
            {
                if permit.parallel {
                    state.parallel = state.parallel.saturating_sub(1);
                }
                if let Some((_, limits)) = &permit.key
                    && let Some(tpm) = limits.tpm
                    && tokens > 0
                {
                    state.tokens_tat =
                        state.tokens_tat.max(now) + tokens as f64 * WINDOW_MS / tpm as f64;
                }
            }
        }
        if let (Some(remote), Some(member)) = (&self.remote, &permit.remote) {
            let tpm = permit.key.as_ref().and_then(|(_, l)| l.tpm);
            let budgets: Vec<String> = permit
                .budgets
                .iter()
                .map(|(s, p, _)| redis::spend_key(s, *p))
                .collect();
            remote.settle(
                key.to_string(),
                member.clone(),
                tpm,
                tokens,
                cost_usd - permit.reserved_usd,
                budgets,
            );
        }
    }
}

fn distinct_scopes<T>(budgets: &[(Scope, Period, T)]) -> Vec<&Scope> {
    let mut out: Vec<&Scope> = Vec::new();
    for (scope, _, _) in budgets {
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    out
}

fn ms(v: f64) -> Duration {
    Duration::from_micros((v.max(0.0) * 1_000.0) as u64)
}

fn window(limit: u64, remaining: f64, reset_ms: f64) -> Window {
    Window {
        limit,
        remaining: remaining.max(0.0).floor() as u64,
        reset: ms(reset_ms),
    }
}

fn tokens_window(tpm: u64, tat: f64, now: f64) -> Window {
    let tat = tat.max(now);
    let room = (WINDOW_MS - (tat - now)) * tpm as f64 / WINDOW_MS;
    window(tpm, room, tat - now)
}

/// What a request may cost at most, for a budget's reservation: its first target's
/// prices, the prompt's size and its `max_tokens` (or [`DEFAULT_RESERVED_OUTPUT`]).
pub fn estimate(registry: &Registry, request: &ChatRequest, prompt_bytes: usize) -> f64 {
    let Ok(targets) = registry.resolve(&request.model) else {
        return 0.0;
    };
    let Some(target) = targets.first() else {
        return 0.0;
    };
    let Some(model) = registry
        .providers
        .get(&target.provider)
        .and_then(|p| p.model(p.canonical_model(&target.model)))
    else {
        return 0.0;
    };
    let output = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| request.extra.get(*k).and_then(serde_json::Value::as_u64))
        .unwrap_or(DEFAULT_RESERVED_OUTPUT);
    let usage = crate::chat::Usage {
        // Bytes over-count tokens about fourfold for English: a reservation errs high.
        input: (prompt_bytes / 4) as u64,
        output,
        ..Default::default()
    };
    model.cost(&usage).unwrap_or(0.0)
}
