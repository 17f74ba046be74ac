//! Limit counters in Redis, shared by every instance: one Lua script admits (checks every
//! limit and takes the request's share atomically), another settles. Redis's clock
//! decides, so instances with skewed clocks still agree.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Script};

use super::{
    Ask, LimitKind, PARALLEL_LEASE, Period, RateHeaders, Refusal, Scope, budget_refusal,
    rate_refusal, window,
};
use crate::registry::Limits;

/// Longest a request waits on Redis before its limits are counted here instead.
const TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, how long requests skip Redis before trying it again.
const RETRY_AFTER_DOWN: Duration = Duration::from_secs(1);
/// Spend is kept in millionths of a dollar: Redis adds integers exactly.
const MICROS: f64 = 1_000_000.0;

const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local W = 60000
local rpm, tpm, par = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local member, lease, est, nb = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local req_next, req_left, req_reset = nil, 0, 0
local tok_left, tok_reset = 0, 0
if tpm > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
  tok_left = math.floor((W - (tat - now)) * tpm / W)
  tok_reset = math.ceil(tat - now)
end
if rpm > 0 then
  local T = W / rpm
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
  if tat - now > W - T + 0.000001 then
    return {1, math.ceil(tat - now - (W - T)), 0, math.ceil(tat - now), math.max(tok_left, 0), tok_reset, 0}
  end
  req_next = tat + T
  req_left = math.floor((W - (req_next - now)) / T)
  req_reset = math.ceil(req_next - now)
end
if tpm > 0 and tok_left <= 0 then
  return {2, math.ceil(tok_reset - W + W / tpm), req_left, req_reset, 0, tok_reset, 0}
end
if par > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - lease)
  if redis.call('ZCARD', KEYS[3]) >= par then
    return {3, 1000, req_left, req_reset, tok_left, tok_reset, 0}
  end
end
for i = 1, nb do
  local k = KEYS[3 + i]
  local limit, seed, ttl = tonumber(ARGV[5 + 3 * i]), ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  redis.call('SET', k, seed, 'EX', ttl, 'NX')
  local spent = tonumber(redis.call('GET', k))
  if spent + est > limit then
    return {4, spent, req_left, req_reset, tok_left, tok_reset, i}
  end
end
if req_next then
  redis.call('SET', KEYS[1], string.format('%.3f', req_next), 'PX', math.ceil(req_next - now) + 1)
end
if par > 0 then
  redis.call('ZADD', KEYS[3], now, member)
  redis.call('PEXPIRE', KEYS[3], lease)
end
for i = 1, nb do
  redis.call('INCRBY', KEYS[3 + i], est)
end
return {0, 0, req_left, req_reset, math.max(tok_left, 0), tok_reset, 0}
";

const SETTLE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local W = 60000
local tpm, tokens, member, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if tpm > 0 and tokens > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + tokens * W / tpm
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
end
redis.call('ZREM', KEYS[2], member)
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], delta)
  end
end
return 0
";

pub(super) struct Granted {
    pub member: String,
    pub headers: RateHeaders,
}

pub(super) struct Remote {
    url: String,
    /// Made on first use, inside the runtime (the hub may be loaded before one runs);
    /// `None` when the URL is not one the client accepts.
    conn: std::sync::OnceLock<Option<ConnectionManager>>,
    admit: Script,
    settle: Script,
    down: Mutex<Down>,
}

#[derive(Default)]
struct Down {
    until: Option<Instant>,
    last_error: Option<String>,
}

fn key_counter(key: &str, what: &str) -> String {
    format!("llmhub:key:{key}:{what}")
}

/// The counter of a scope's spend in the current period, such as
/// `llmhub:spend:key:search-bot:2026-11-22`.
pub(super) fn spend_key(scope: &Scope, period: Period) -> String {
    let (kind, name) = match scope {
        Scope::Key(k) => ("key", k),
        Scope::Project(p) => ("project", p),
    };
    format!("llmhub:spend:{kind}:{name}:{}", period.label())
}

impl Remote {
    pub fn new(url: &str) -> Remote {
        Remote {
            url: url.to_string(),
            conn: std::sync::OnceLock::new(),
            admit: Script::new(ADMIT),
            settle: Script::new(SETTLE),
            down: Mutex::new(Down::default()),
        }
    }

    /// The connection, made lazily: it connects (and reconnects) on its own.
    fn conn(&self) -> Option<&ConnectionManager> {
        self.conn
            .get_or_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1);
                Client::open(self.url.as_str())
                    .and_then(|c| ConnectionManager::new_lazy_with_config(c, config))
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot use the Redis URL in [storage] redis_url_env")
                    })
                    .ok()
            })
            .as_ref()
    }

    fn down(&self) -> std::sync::MutexGuard<'_, Down> {
        self.down.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether Redis failed recently, so requests count here for now.
    pub fn is_down(&self) -> bool {
        matches!(self.conn.get(), Some(None)) || self.down().until.is_some()
    }

    pub fn last_error(&self) -> Option<String> {
        if matches!(self.conn.get(), Some(None)) {
            return Some("the Redis URL is not valid".to_string());
        }
        self.down().last_error.clone()
    }

    fn failed(&self, error: String) {
        let mut down = self.down();
        if down.until.is_none() {
            tracing::warn!(error = %error, "Redis unreachable: limits are counted per instance until it is back");
        }
        down.until = Some(Instant::now() + RETRY_AFTER_DOWN);
        down.last_error = Some(error);
    }

    fn recovered(&self) {
        let mut down = self.down();
        if down.until.take().is_some() {
            tracing::info!("Redis reachable again: limits are shared by every instance");
        }
    }

    /// Admits in Redis: `Err(())` when Redis cannot answer now (the caller falls back).
    pub async fn admit(
        &self,
        ask: &Ask<'_>,
        limits: &Limits,
        budgets: &[(Scope, Period, f64)],
        seeds: &[f64],
    ) -> Result<Result<Granted, Refusal>, ()> {
        let Some(conn) = self.conn() else {
            return Err(());
        };
        if self.down().until.is_some_and(|t| Instant::now() < t) {
            return Err(());
        }
        let name = ask.key.map_or("", |k| k.name.as_str());
        let member = crate::store::unique_id();
        let mut call = self.admit.prepare_invoke();
        call.key(key_counter(name, "requests"))
            .key(key_counter(name, "tokens"))
            .key(key_counter(name, "parallel"))
            .arg(limits.rpm.unwrap_or(0))
            .arg(limits.tpm.unwrap_or(0))
            .arg(limits.max_parallel.unwrap_or(0))
            .arg(&member)
            .arg(PARALLEL_LEASE.as_millis() as u64)
            .arg(micros_up(ask.estimate_usd))
            .arg(budgets.len());
        for ((scope, period, limit), seed) in budgets.iter().zip(seeds) {
            let ttl = match period {
                Period::Day => 2 * 86_400,
                Period::Month => 32 * 86_400,
            };
            call.key(spend_key(scope, *period))
                .arg((limit * MICROS).round() as i64)
                .arg((seed * MICROS).round() as i64)
                .arg(ttl);
        }
        let mut conn = conn.clone();
        let reply: Vec<i64> =
            match tokio::time::timeout(TIMEOUT, call.invoke_async(&mut conn)).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    self.failed(e.to_string());
                    return Err(());
                }
                Err(_) => {
                    self.failed(format!("no answer within {} ms", TIMEOUT.as_millis()));
                    return Err(());
                }
            };
        self.recovered();
        let [
            code,
            detail,
            req_left,
            req_reset,
            tok_left,
            tok_reset,
            which,
        ] = reply[..]
        else {
            self.failed(format!(
                "unexpected reply from the admission script: {reply:?}"
            ));
            return Err(());
        };
        let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
        let headers = RateHeaders {
            requests: limits
                .rpm
                .map(|rpm| window(u64::from(rpm), req_left as f64, req_reset as f64)),
            tokens: limits
                .tpm
                .map(|tpm| window(tpm, tok_left as f64, tok_reset as f64)),
        };
        let limit = |v: Option<u64>| v.unwrap_or(0);
        Ok(match code {
            0 => Ok(Granted { member, headers }),
            1 => Err(rate_refusal(
                LimitKind::Requests,
                name,
                limit(limits.rpm.map(u64::from)),
                ms(detail),
                headers,
            )),
            2 => Err(rate_refusal(
                LimitKind::Tokens,
                name,
                limit(limits.tpm),
                ms(detail),
                headers,
            )),
            3 => Err(rate_refusal(
                LimitKind::Parallel,
                name,
                limit(limits.max_parallel.map(u64::from)),
                ms(detail),
                headers,
            )),
            _ => {
                let index = usize::try_from(which - 1).unwrap_or(0);
                let Some((scope, period, limit)) = budgets.get(index) else {
                    return Err(());
                };
                Err(budget_refusal(
                    scope,
                    *period,
                    *limit,
                    detail as f64 / MICROS,
                    headers,
                ))
            }
        })
    }

    /// Settles off the request path: the answer has been sent already.
    pub fn settle(
        &self,
        key: String,
        member: String,
        tpm: Option<u64>,
        tokens: u64,
        delta_usd: f64,
        budgets: Vec<String>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(conn) = self.conn().cloned() else {
            return;
        };
        let script = self.settle.clone();
        runtime.spawn(async move {
            let mut conn = conn;
            let mut call = script.prepare_invoke();
            call.key(key_counter(&key, "tokens"))
                .key(key_counter(&key, "parallel"));
            for b in &budgets {
                call.key(b);
            }
            call.arg(tpm.unwrap_or(0))
                .arg(tokens)
                .arg(&member)
                .arg((delta_usd * MICROS).round() as i64);
            let outcome = tokio::time::timeout(Duration::from_secs(5), call.invoke_async::<i64>(&mut conn)).await;
            if !matches!(outcome, Ok(Ok(_))) {
                tracing::warn!(key = %key, "could not settle a request's usage in Redis; its parallel slot frees when the lease ends");
            }
        });
    }
}

/// Millionths of a dollar, rounded up: a reservation never under-counts.
fn micros_up(usd: f64) -> i64 {
    (usd * MICROS).ceil() as i64
}
