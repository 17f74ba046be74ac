//! The database behind `[storage]`, SQLite (embedded, the default) or PostgreSQL, through
//! one sqlx code path: versioned migrations, batched ledger writes with their daily
//! totals in the same transaction, usage reports and recent rows, retention, and the
//! per-session MCP endpoints. Nothing else speaks SQL to it.

pub mod ledger;
mod sessions;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::any::AnyArguments;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Row as _};

pub use ledger::{Ledger, LedgerHealth};
pub use sessions::SessionRecord;

/// The migrations, in order; each runs once per database, recorded in `llmhub_migrations`.
const MIGRATIONS: [(i64, &str, &str); 2] = [
    (
        1,
        "ledger",
        include_str!("../../migrations/0001_ledger.sql"),
    ),
    (
        2,
        "mcp_sessions",
        include_str!("../../migrations/0002_mcp_sessions.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("database error: {0}")]
    Query(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Query(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub struct Store {
    pool: AnyPool,
    pub kind: Kind,
}

/// A database URL with its password hidden, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// Connects (creating a SQLite file if needed) and brings the schema up to date.
    pub fn open(
        url: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Store, StoreError>> + Send + '_>>
    {
        Box::pin(Self::open_inner(url))
    }

    async fn open_inner(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            Kind::Sqlite
        } else {
            Kind::Postgres
        };
        let open_error = |reason: String| StoreError::Open {
            url: redact_url(url),
            reason,
        };
        let connect_url = match kind {
            Kind::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match kind {
                Kind::Sqlite => 4,
                Kind::Postgres => 8,
            })
            .acquire_timeout(std::time::Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == Kind::Sqlite {
                        // With WAL, NORMAL syncs at checkpoints, not at every commit: a
                        // power cut may lose the last batches, never corrupt the file.
                        sqlx::Executor::execute(&mut *conn, "PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        if kind == Kind::Sqlite {
            // WAL lets reports read while the ledger writes.
            sqlx::raw_sql("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(|e| open_error(e.to_string()))?;
        }
        let store = Store { pool, kind };
        store
            .migrate()
            .await
            .map_err(|e| open_error(e.to_string()))?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS llmhub_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for (version, name, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM llmhub_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await?;
            if done.is_some() {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            for statement in statements(sql) {
                sqlx::query(&statement).execute(&mut *tx).await?;
            }
            // Another instance may have migrated meanwhile: its record stands.
            sqlx::query(
                "INSERT INTO llmhub_migrations (version, name, applied_ms) VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING",
            )
            .bind(version)
            .bind(name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(version, name, "database migrated");
        }
        Ok(())
    }

    /// Writes rows and adds them to their daily totals, in one transaction.
    // Boxed with `Send` spelled out: sqlx's executor bounds are higher-ranked, and the
    // writer task that awaits this must be `Send` for every lifetime.
    pub fn write<'a>(
        &'a self,
        rows: &'a [Row],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>>
    {
        Box::pin(self.write_rows(rows))
    }

    async fn write_rows(&self, rows: &[Row]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        match self.kind {
            // PostgreSQL unpacks the whole batch from one JSON parameter, server-side.
            Kind::Postgres => {
                let json =
                    serde_json::to_string(rows).map_err(|e| StoreError::Query(e.to_string()))?;
                sqlx::query(INSERT_ROWS_POSTGRES)
                    .bind(json)
                    .execute(&mut *tx)
                    .await?;
            }
            // SQLite runs in this process: typed, positional binds, 64 rows a
            // statement; all full chunks share one cached statement.
            Kind::Sqlite => {
                for chunk in rows.chunks(SQLITE_ROWS_PER_INSERT) {
                    insert_rows(chunk).query().execute(&mut *tx).await?;
                }
            }
        }
        let mut daily: BTreeMap<DayKey, Totals> = BTreeMap::new();
        for r in rows {
            daily.entry(DayKey::of(r)).or_default().add(&Totals::of(r));
        }
        // Keys are unique after the fold above, as one upsert statement needs.
        let daily: Vec<DailyJson> = daily
            .iter()
            .map(|(key, totals)| DailyJson { key, totals })
            .collect();
        let json = serde_json::to_string(&daily).map_err(|e| StoreError::Query(e.to_string()))?;
        let upsert = match self.kind {
            Kind::Sqlite => UPSERT_DAILY_SQLITE,
            Kind::Postgres => UPSERT_DAILY_POSTGRES,
        };
        sqlx::query(upsert).bind(json).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Totals from the daily table, grouped as asked.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let dims: Vec<&str> = query.group_by.iter().map(|d| d.column()).collect();
        let mut q = Sql::new("SELECT ");
        for d in &dims {
            q.push(d).push(", ");
        }
        q.push(
            "CAST(COALESCE(SUM(requests), 0) AS BIGINT), CAST(COALESCE(SUM(failed), 0) AS BIGINT), \
             CAST(COALESCE(SUM(unpriced), 0) AS BIGINT), CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(reasoning_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) FROM llmhub_daily WHERE 1 = 1",
        );
        if let Some(since) = &query.since_day {
            q.push(" AND day >= ");
            q.bind(Param::Text(since.clone()));
        }
        for (column, value) in [
            ("project", &query.project),
            ("agent", &query.agent),
            ("key_name", &query.key),
        ] {
            if let Some(v) = value {
                q.push(" AND ").push(column).push(" = ");
                q.bind(Param::Text(v.clone()));
            }
        }
        if !dims.is_empty() {
            let list = dims.join(", ");
            q.push(" GROUP BY ")
                .push(&list)
                .push(" ORDER BY ")
                .push(&list);
        }
        let rows = q.query().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let mut group = BTreeMap::new();
                for (i, d) in query.group_by.iter().enumerate() {
                    group.insert(d.name().to_string(), row.try_get::<String, _>(i)?);
                }
                let n = dims.len();
                Ok(UsageRow {
                    group,
                    totals: Totals {
                        requests: row.try_get(n)?,
                        failed: row.try_get(n + 1)?,
                        unpriced: row.try_get(n + 2)?,
                        input_tokens: row.try_get(n + 3)?,
                        cached_tokens: row.try_get(n + 4)?,
                        cache_write_tokens: row.try_get(n + 5)?,
                        output_tokens: row.try_get(n + 6)?,
                        reasoning_tokens: row.try_get(n + 7)?,
                        cost_usd: row.try_get(n + 8)?,
                    },
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The most recent rows, newest first.
    pub async fn recent(&self, limit: u32, project: Option<&str>) -> Result<Vec<Row>, StoreError> {
        let mut q = Sql::new(
            "SELECT id, at_ms, day, key_name, project, agent, surface, requested, provider, model, status, attempts, streamed, input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, latency_ms, ttft_ms, error FROM llmhub_requests",
        );
        if let Some(p) = project {
            q.push(" WHERE project = ");
            q.bind(Param::Text(p.to_string()));
        }
        q.push(" ORDER BY at_ms DESC LIMIT ");
        q.bind(Param::Int(i64::from(limit)));
        let rows = q.query().fetch_all(&self.pool).await?;
        rows.iter()
            .map(Row::from_db)
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Deletes request rows from days before `day`; daily totals stay.
    pub async fn prune(&self, day: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM llmhub_requests WHERE day < $1")
            .bind(day.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Rows per SQLite insert statement (22 parameters each, under SQLite's limit).
const SQLITE_ROWS_PER_INSERT: usize = 64;

fn insert_rows(chunk: &[Row]) -> Sql {
    let mut q = Sql::new(
        "INSERT INTO llmhub_requests (id, at_ms, day, key_name, project, agent, surface, requested, provider, model, status, attempts, streamed, input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, latency_ms, ttft_ms, error) VALUES ",
    );
    q.positional = true;
    for (i, r) in chunk.iter().enumerate() {
        q.push(if i == 0 { "(" } else { ", (" });
        let params = [
            Param::Text(r.id.clone()),
            Param::Int(r.at_ms),
            Param::Text(r.day.clone()),
            Param::Text(r.key.clone()),
            Param::Text(r.project.clone()),
            Param::Text(r.agent.clone()),
            Param::Text(r.surface.clone()),
            Param::Text(r.requested.clone()),
            Param::Text(r.provider.clone()),
            Param::Text(r.model.clone()),
            Param::Int(i64::from(r.status)),
            Param::Int(i64::from(r.attempts)),
            Param::Int(i64::from(r.streamed)),
            Param::Int(r.input_tokens),
            Param::Int(r.cached_tokens),
            Param::Int(r.cache_write_tokens),
            Param::Int(r.output_tokens),
            Param::Int(r.reasoning_tokens),
            Param::OptFloat(r.cost_usd),
            Param::Int(r.latency_ms),
            Param::OptInt(r.ttft_ms),
            Param::OptText(r.error.clone()),
        ];
        for (j, p) in params.into_iter().enumerate() {
            if j > 0 {
                q.push(", ");
            }
            q.bind(p);
        }
        q.push(")");
    }
    q
}

const INSERT_ROWS_POSTGRES: &str = "INSERT INTO llmhub_requests (id, at_ms, day, key_name, project, agent, surface, requested, provider, model, status, attempts, streamed, input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, latency_ms, ttft_ms, error) \
     SELECT id, at_ms, day, key, project, agent, surface, requested, provider, model, status, attempts, CASE WHEN streamed THEN 1 ELSE 0 END, \
     input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, latency_ms, ttft_ms, error \
     FROM jsonb_to_recordset($1::jsonb) AS r(id text, at_ms bigint, day text, key text, project text, agent text, surface text, requested text, \
     provider text, model text, status bigint, attempts bigint, streamed boolean, input_tokens bigint, cached_tokens bigint, \
     cache_write_tokens bigint, output_tokens bigint, reasoning_tokens bigint, cost_usd double precision, latency_ms bigint, ttft_ms bigint, error text)";

/// The daily upsert's additions, shared by both dialects.
macro_rules! daily_sums {
    () => {
        "requests = llmhub_daily.requests + excluded.requests, \
     failed = llmhub_daily.failed + excluded.failed, \
     unpriced = llmhub_daily.unpriced + excluded.unpriced, \
     input_tokens = llmhub_daily.input_tokens + excluded.input_tokens, \
     cached_tokens = llmhub_daily.cached_tokens + excluded.cached_tokens, \
     cache_write_tokens = llmhub_daily.cache_write_tokens + excluded.cache_write_tokens, \
     output_tokens = llmhub_daily.output_tokens + excluded.output_tokens, \
     reasoning_tokens = llmhub_daily.reasoning_tokens + excluded.reasoning_tokens, \
     cost_usd = llmhub_daily.cost_usd + excluded.cost_usd"
    };
}

const UPSERT_DAILY_SQLITE: &str = concat!(
    "INSERT INTO llmhub_daily (day, project, agent, key_name, provider, model, requests, failed, unpriced, input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd) \
     SELECT json_extract(value, '$.day'), json_extract(value, '$.project'), json_extract(value, '$.agent'), json_extract(value, '$.key'), \
     json_extract(value, '$.provider'), json_extract(value, '$.model'), json_extract(value, '$.requests'), json_extract(value, '$.failed'), \
     json_extract(value, '$.unpriced'), json_extract(value, '$.input_tokens'), json_extract(value, '$.cached_tokens'), \
     json_extract(value, '$.cache_write_tokens'), json_extract(value, '$.output_tokens'), json_extract(value, '$.reasoning_tokens'), \
     CAST(json_extract(value, '$.cost_usd') AS REAL) \
     FROM json_each($1) WHERE true ON CONFLICT (day, project, agent, key_name, provider, model) DO UPDATE SET ",
    daily_sums!()
);

const UPSERT_DAILY_POSTGRES: &str = concat!(
    "INSERT INTO llmhub_daily (day, project, agent, key_name, provider, model, requests, failed, unpriced, input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd) \
     SELECT day, project, agent, key, provider, model, requests, failed, unpriced, input_tokens, cached_tokens, cache_write_tokens, \
     output_tokens, reasoning_tokens, cost_usd \
     FROM jsonb_to_recordset($1::jsonb) AS r(day text, project text, agent text, key text, provider text, model text, requests bigint, \
     failed bigint, unpriced bigint, input_tokens bigint, cached_tokens bigint, cache_write_tokens bigint, output_tokens bigint, \
     reasoning_tokens bigint, cost_usd double precision) \
     ON CONFLICT (day, project, agent, key_name, provider, model) DO UPDATE SET ",
    daily_sums!()
);

/// A statement with numbered `$n` parameters, which both SQLite and PostgreSQL read
/// (sqlx's `QueryBuilder` writes `?` for `Any`, which PostgreSQL refuses).
struct Sql {
    text: String,
    params: Vec<Param>,
    /// `?` instead of `$n`: SQLite binds unnamed parameters without a per-parameter
    /// name lookup, which sqlx otherwise makes quadratic in the parameter count.
    positional: bool,
}

enum Param {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    OptFloat(Option<f64>),
}

impl Sql {
    fn new(start: &str) -> Sql {
        Sql {
            text: start.to_string(),
            params: Vec::new(),
            positional: false,
        }
    }

    fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, p: Param) {
        self.params.push(p);
        if self.positional {
            self.text.push('?');
        } else {
            self.text.push_str(&format!("${}", self.params.len()));
        }
    }

    fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for p in &self.params {
            q = match p {
                Param::Text(v) => q.bind(v.as_str()),
                Param::OptText(v) => q.bind(v.as_deref()),
                Param::Int(v) => q.bind(*v),
                Param::OptInt(v) => q.bind(*v),
                Param::OptFloat(v) => q.bind(*v),
            };
        }
        q
    }
}

/// A migration file's statements: `--` comments dropped, split at `;` (the files hold
/// no semicolons inside statements).
fn statements(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// One ledger row: one answered (or failed) request on any surface.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub id: String,
    pub at_ms: i64,
    pub day: String,
    /// The client key's name; empty when the gateway has no keys.
    pub key: String,
    pub project: String,
    pub agent: String,
    pub surface: String,
    /// The model address the client asked for.
    pub requested: String,
    pub provider: String,
    pub model: String,
    pub status: u16,
    pub attempts: u32,
    pub streamed: bool,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    /// `None`: the model has no price in providers.d (unpriced, never free).
    pub cost_usd: Option<f64>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub error: Option<String>,
}

impl Row {
    fn from_db(r: &AnyRow) -> Result<Row, sqlx::Error> {
        let small = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(Row {
            id: r.try_get(0)?,
            at_ms: r.try_get(1)?,
            day: r.try_get(2)?,
            key: r.try_get(3)?,
            project: r.try_get(4)?,
            agent: r.try_get(5)?,
            surface: r.try_get(6)?,
            requested: r.try_get(7)?,
            provider: r.try_get(8)?,
            model: r.try_get(9)?,
            status: u16::try_from(r.try_get::<i64, _>(10)?).unwrap_or(0),
            attempts: small(r.try_get(11)?),
            streamed: r.try_get::<i64, _>(12)? != 0,
            input_tokens: r.try_get(13)?,
            cached_tokens: r.try_get(14)?,
            cache_write_tokens: r.try_get(15)?,
            output_tokens: r.try_get(16)?,
            reasoning_tokens: r.try_get(17)?,
            cost_usd: r.try_get(18)?,
            latency_ms: r.try_get(19)?,
            ttft_ms: r.try_get(20)?,
            error: r.try_get(21)?,
        })
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Serialize)]
struct DailyJson<'a> {
    #[serde(flatten)]
    key: &'a DayKey,
    #[serde(flatten)]
    totals: &'a Totals,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct DayKey {
    day: String,
    project: String,
    agent: String,
    key: String,
    provider: String,
    model: String,
}

impl DayKey {
    fn of(r: &Row) -> DayKey {
        DayKey {
            day: r.day.clone(),
            project: r.project.clone(),
            agent: r.agent.clone(),
            key: r.key.clone(),
            provider: r.provider.clone(),
            model: r.model.clone(),
        }
    }
}

/// Sums over requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Totals {
    pub requests: i64,
    pub failed: i64,
    /// Answered requests whose model has no price: their cost is not in `cost_usd`.
    pub unpriced: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_usd: f64,
}

impl Totals {
    fn of(r: &Row) -> Totals {
        Totals {
            requests: 1,
            failed: i64::from(!r.ok()),
            unpriced: i64::from(r.ok() && r.cost_usd.is_none()),
            input_tokens: r.input_tokens,
            cached_tokens: r.cached_tokens,
            cache_write_tokens: r.cache_write_tokens,
            output_tokens: r.output_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost_usd: r.cost_usd.unwrap_or(0.0),
        }
    }

    pub fn add(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.failed += o.failed;
        self.unpriced += o.unpriced;
        self.input_tokens += o.input_tokens;
        self.cached_tokens += o.cached_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
        self.output_tokens += o.output_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.cost_usd += o.cost_usd;
    }
}

/// What a usage report may be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Model,
    Provider,
    Project,
    Agent,
    Key,
    Day,
}

impl Dim {
    pub const ALL: [Dim; 6] = [
        Dim::Model,
        Dim::Provider,
        Dim::Project,
        Dim::Agent,
        Dim::Key,
        Dim::Day,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dim::Model => "model",
            Dim::Provider => "provider",
            Dim::Project => "project",
            Dim::Agent => "agent",
            Dim::Key => "key",
            Dim::Day => "day",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Dim::Key => "key_name",
            other => other.name(),
        }
    }

    pub fn parse(s: &str) -> Option<Dim> {
        Dim::ALL.into_iter().find(|d| d.name() == s)
    }
}

/// The window a report covers, in UTC days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
    All,
    /// The last 30 days, today included (the console's charts).
    Days30,
}

impl Period {
    pub const NAMES: [&'static str; 5] = ["day", "week", "month", "all", "30d"];

    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            "all" => Some(Period::All),
            "30d" => Some(Period::Days30),
            _ => None,
        }
    }

    /// The first day included: today, the last 7 days, the calendar month, or everything.
    pub fn since(self, today_days: i64) -> Option<String> {
        match self {
            Period::Day => Some(civil_date(today_days)),
            Period::Week => Some(civil_date(today_days - 6)),
            Period::Month => {
                let today = civil_date(today_days);
                Some(format!("{}-01", &today[..7]))
            }
            Period::All => None,
            Period::Days30 => Some(civil_date(today_days - 29)),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub since_day: Option<String>,
    pub project: Option<String>,
    pub agent: Option<String>,
    pub key: Option<String>,
    pub group_by: Vec<Dim>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    #[serde(flatten)]
    pub group: BTreeMap<String, String>,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Parses a report's parameters; errors name the valid values.
pub fn report_query(
    period: Option<&str>,
    group_by: Option<&str>,
    project: Option<String>,
    agent: Option<String>,
    key: Option<String>,
) -> Result<(Period, UsageQuery), String> {
    let period_name = period.unwrap_or("month");
    let period = Period::parse(period_name).ok_or_else(|| {
        format!(
            "period: expected one of {}, found \"{period_name}\"",
            Period::NAMES.join(", ")
        )
    })?;
    let mut dims = Vec::new();
    for name in group_by
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let dim = Dim::parse(name).ok_or_else(|| {
            let valid: Vec<&str> = Dim::ALL.iter().map(|d| d.name()).collect();
            format!(
                "group_by: expected a comma-separated list of {}, found \"{name}\"",
                valid.join(", ")
            )
        })?;
        if !dims.contains(&dim) {
            dims.push(dim);
        }
    }
    let today = days(now_ms());
    Ok((
        period,
        UsageQuery {
            since_day: period.since(today),
            project,
            agent,
            key,
            group_by: dims,
        },
    ))
}

/// The report's JSON, shared with MCP's `get_usage`.
pub fn report_json(period: Period, query: &UsageQuery, rows: &[UsageRow]) -> Value {
    let mut total = Totals::default();
    for r in rows {
        total.add(&r.totals);
    }
    json!({
        "object": "usage",
        "period": Period::NAMES[period as usize],
        "since": query.since_day,
        "group_by": query.group_by.iter().map(|d| d.name()).collect::<Vec<_>>(),
        "data": rows,
        "total": total,
    })
}

/// An id unique across instances sharing one database (ledger rows, Redis members): a random per-process part
/// (std's hasher keys are seeded from the OS) and a counter.
pub fn unique_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    format!(
        "{process:016x}{:012x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a time in milliseconds since the epoch.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        civil_date(days(ms)),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since the epoch, UTC.
pub fn days(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// YYYY-MM-DD of a day number (Howard Hinnant's civil-from-days), so no date crate is
/// needed for ledger days.
pub fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Day number of a civil date (the inverse of [`civil_date`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The first day of the month after the one holding `days`.
pub fn next_month(days: i64) -> i64 {
    let date = civil_date(days);
    let year: i64 = date[..4].parse().unwrap_or(1970);
    let month: u32 = date[5..7].parse().unwrap_or(1);
    if month == 12 {
        days_from_civil(year + 1, 1, 1)
    } else {
        days_from_civil(year, month + 1, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_round_trip() {
        for d in [0, 11_016, 20_454, 20_513, -1, 60_000] {
            let date = civil_date(d);
            let (y, m, dd) = (
                date[..4].parse().unwrap_or(0),
                date[5..7].parse().unwrap_or(0),
                date[8..].parse().unwrap_or(0),
            );
            assert_eq!(days_from_civil(y, m, dd), d, "{date}");
        }
        assert_eq!(civil_date(next_month(20_454 + 45)), "2026-03-01");
        assert_eq!(
            civil_date(next_month(days_from_civil(2026, 12, 31))),
            "2027-01-01"
        );
    }

    #[test]
    fn civil_dates_and_periods() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_454), "2026-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        let today = 20_454 + 45; // 2026-02-15
        assert_eq!(Period::Day.since(today).as_deref(), Some("2026-02-15"));
        assert_eq!(Period::Week.since(today).as_deref(), Some("2026-02-09"));
        assert_eq!(Period::Month.since(today).as_deref(), Some("2026-02-01"));
        assert_eq!(Period::All.since(today), None);
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://llmhub:hunter2@db:5432/x"),
            "postgres://llmhub:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://llmhub.db"), "sqlite://llmhub.db");
    }
}
