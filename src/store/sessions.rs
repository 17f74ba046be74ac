//! Rows of `llmhub_mcp_sessions`: per-session MCP endpoints as stored, keyed by the
//! SHA-256 of their id, credentials already sealed by the caller.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

/// One stored session. `servers` is a JSON array of servers.d names.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id_sha256: String,
    /// `admin`, `open`, or `key:NAME`: whose limits and allow-lists the endpoint uses.
    pub owner: String,
    pub servers: Vec<String>,
    /// The servers it brought credentials for (names only; the secrets are sealed).
    pub with_credentials: Vec<String>,
    pub builtin: bool,
    pub sealed: Option<String>,
    pub created_ms: i64,
    pub expires_ms: i64,
}

const COLUMNS: &str =
    "id_sha256, owner, servers, with_credentials, builtin, sealed, created_ms, expires_ms";

impl SessionRecord {
    fn from_db(row: &AnyRow) -> Result<SessionRecord, StoreError> {
        let names = |i: usize| -> Result<Vec<String>, StoreError> {
            let text: String = row.try_get(i)?;
            serde_json::from_str(&text).map_err(|e| {
                StoreError::Query(format!("a stored session's server list is not JSON: {e}"))
            })
        };
        Ok(SessionRecord {
            id_sha256: row.try_get(0)?,
            owner: row.try_get(1)?,
            servers: names(2)?,
            with_credentials: names(3)?,
            builtin: row.try_get::<i64, _>(4)? != 0,
            sealed: row.try_get(5)?,
            created_ms: row.try_get(6)?,
            expires_ms: row.try_get(7)?,
        })
    }
}

impl Store {
    pub async fn insert_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        let json = |names: &[String]| {
            serde_json::to_string(names).map_err(|e| StoreError::Query(e.to_string()))
        };
        sqlx::query(&format!(
            "INSERT INTO llmhub_mcp_sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(s.id_sha256.clone())
        .bind(s.owner.clone())
        .bind(json(&s.servers)?)
        .bind(json(&s.with_credentials)?)
        .bind(i64::from(s.builtin))
        .bind(s.sealed.clone())
        .bind(s.created_ms)
        .bind(s.expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this id hash, if it exists and has not expired by `now_ms`.
    pub async fn session(
        &self,
        id_sha256: &str,
        now_ms: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM llmhub_mcp_sessions WHERE id_sha256 = $1 AND expires_ms > $2"
        ))
        .bind(id_sha256.to_string())
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(SessionRecord::from_db).transpose()
    }

    /// Whether a session was there to delete.
    pub async fn delete_session(&self, id_sha256: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM llmhub_mcp_sessions WHERE id_sha256 = $1")
            .bind(id_sha256.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes every session expired by `now_ms`; returns how many.
    pub async fn delete_expired_sessions(&self, now_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM llmhub_mcp_sessions WHERE expires_ms <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// When the next stored session expires (any instance may have created it).
    pub async fn next_session_expiry(&self) -> Result<Option<i64>, StoreError> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT MIN(expires_ms) FROM llmhub_mcp_sessions")
                .fetch_one(&self.pool)
                .await?;
        Ok(next)
    }
}
