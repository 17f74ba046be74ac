//! SQL tools, read-only by the database's own rules, never by reading the SQL: SQLite is
//! opened read-only with `query_only`, no attachable databases and an authorizer that
//! allows reads alone; PostgreSQL runs one prepared statement on a fresh connection in a
//! `READ ONLY` transaction with `statement_timeout`, as a role that must not be a
//! superuser (a superuser's `COPY … TO PROGRAM` works even read-only). Parameters are
//! bound, never spliced into the text.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sqlx::{Connection, Row};

use super::{ToolError, ToolOutput, issues};
use crate::registry::tools::{SqlTool, named_params};

/// Widest a text-table cell is shown; the structured result keeps the whole value.
const CELL: usize = 60;

/// What a query returned, up to `max_rows`.
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    truncated: bool,
}

pub async fn run(
    name: &str,
    tool: &SqlTool,
    args: &Value,
    output: Option<&jsonschema::Validator>,
) -> Result<ToolOutput, ToolError> {
    let Some(url) = &tool.url else {
        return Err(ToolError::Unavailable(format!(
            "{} is not set",
            tool.env_key
        )));
    };
    let (sql, names) = match &tool.statement {
        Some(statement) => (statement.clone(), tool.params.clone()),
        None => (
            args.get("query")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            Vec::new(),
        ),
    };
    let values: Vec<Value> = names
        .iter()
        .map(|n| args.get(n).cloned().unwrap_or(Value::Null))
        .collect();
    let url = url.expose().to_string();
    let found = if url.starts_with("sqlite:") {
        let (max_rows, timeout) = (tool.max_rows, tool.timeout);
        tokio::task::spawn_blocking(move || sqlite(&url, &sql, &names, &values, max_rows, timeout))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
    } else {
        tokio::time::timeout(
            tool.timeout + Duration::from_secs(1),
            postgres(&url, &sql, &values, tool.max_rows, tool.timeout),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", tool.timeout.as_secs_f64())))
    };
    let rows = found.map_err(|e| ToolError::Failed(format!("tool `{name}`: {e}")))?;
    let structured =
        json!({"columns": rows.columns, "rows": rows.rows, "truncated": rows.truncated});
    if let Some(validator) = output {
        let found = issues(validator, &structured);
        if !found.is_empty() {
            return Err(ToolError::InvalidOutput {
                reply: structured.to_string(),
                issues: found,
            });
        }
    }
    Ok(ToolOutput {
        text: table(&rows, tool.max_rows),
        structured: Some(structured),
        provider: name.to_string(),
        model: String::new(),
        usage: Value::Null,
    })
}

/// A compact text table for the model, saying when rows were cut.
fn table(rows: &Rows, max_rows: usize) -> String {
    let cell = |v: &Value| -> String {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Null => "NULL".to_string(),
            other => other.to_string(),
        };
        let s = s.replace(['\n', '\t'], " ");
        if s.chars().count() > CELL {
            format!("{}…", s.chars().take(CELL - 1).collect::<String>())
        } else {
            s
        }
    };
    let mut out = rows.columns.join(" | ");
    out.push('\n');
    for row in &rows.rows {
        out.push_str(&row.iter().map(cell).collect::<Vec<_>>().join(" | "));
        out.push('\n');
    }
    let n = rows.rows.len();
    out.push_str(&format!("({n} row{})", if n == 1 { "" } else { "s" }));
    if rows.truncated {
        out.push_str(&format!("; more rows were cut at max_rows = {max_rows}"));
    }
    out
}

fn sqlite(
    url: &str,
    sql: &str,
    names: &[String],
    values: &[Value],
    max_rows: usize,
    timeout: Duration,
) -> Result<Rows, String> {
    use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
    use rusqlite::{OpenFlags, limits::Limit};
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open the database read-only: {e}"))?;
    conn.execute_batch("PRAGMA query_only = 1")
        .map_err(|e| e.to_string())?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0);
    // Reads only: anything that writes, attaches, changes a pragma or loads code is denied.
    conn.authorizer(Some(|ctx: AuthContext<'_>| match ctx.action {
        AuthAction::Select | AuthAction::Read { .. } | AuthAction::Recursive => {
            Authorization::Allow
        }
        AuthAction::Function { function_name } => {
            if matches!(
                function_name,
                "load_extension" | "fts3_tokenizer" | "writefile" | "edit"
            ) {
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }
        _ => Authorization::Deny,
    }));
    let deadline = Instant::now() + timeout;
    conn.progress_handler(10_000, Some(move || Instant::now() > deadline));
    let mut batch = rusqlite::Batch::new(&conn, sql);
    let mut stmt = match batch.next() {
        Ok(Some(stmt)) => stmt,
        Ok(None) => return Err("the query is empty".to_string()),
        Err(e) => return Err(sqlite_error(&e, timeout)),
    };
    match batch.next() {
        Ok(None) => {}
        Ok(Some(_)) | Err(_) => {
            return Err("one statement per call: the query holds more than one".to_string());
        }
    }
    for (name, value) in names.iter().zip(values) {
        let Some(index) = stmt
            .parameter_index(&format!(":{name}"))
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        let bound = match value {
            Value::Null => stmt.raw_bind_parameter(index, rusqlite::types::Null),
            Value::Bool(b) => stmt.raw_bind_parameter(index, *b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => stmt.raw_bind_parameter(index, i),
                None => stmt.raw_bind_parameter(index, n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => stmt.raw_bind_parameter(index, s.as_str()),
            other => stmt.raw_bind_parameter(index, other.to_string()),
        };
        bound.map_err(|e| e.to_string())?;
    }
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let mut rows = Vec::new();
    let mut truncated = false;
    let mut cursor = stmt.raw_query();
    loop {
        let row = match cursor.next() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => return Err(sqlite_error(&e, timeout)),
        };
        if rows.len() == max_rows {
            truncated = true;
            break;
        }
        let mut out = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            use rusqlite::types::ValueRef;
            out.push(match row.get_ref(i).map_err(|e| e.to_string())? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => json!(n),
                ValueRef::Real(f) => json!(f),
                ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                ValueRef::Blob(b) => json!(format!("<{} bytes>", b.len())),
            });
        }
        rows.push(out);
    }
    Ok(Rows {
        columns,
        rows,
        truncated,
    })
}

fn sqlite_error(e: &rusqlite::Error, timeout: Duration) -> String {
    let text = e.to_string();
    if text.contains("interrupted") {
        format!("stopped after {}s (timeout_s)", timeout.as_secs_f64())
    } else {
        text
    }
}

async fn postgres(
    url: &str,
    sql: &str,
    values: &[Value],
    max_rows: usize,
    timeout: Duration,
) -> Result<Rows, String> {
    let db_error = |e: sqlx::Error| match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        other => other.to_string(),
    };
    // A fresh connection per call: nothing a previous query set can carry over.
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("cannot connect: {}", crate::store::redact_url(&db_error(e))))?;
    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .map_err(db_error)?;
    if superuser {
        let _ = conn.close().await;
        return Err("refused: the database role is a superuser, which read-only transactions do not hold back (COPY … TO PROGRAM); connect as a role without superuser".to_string());
    }
    let mut tx = conn.begin().await.map_err(db_error)?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = {}",
        timeout.as_millis().max(1)
    ))
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    // A query takes the transaction's snapshot: `SET TRANSACTION READ WRITE` fails after it.
    sqlx::query("SELECT 1")
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    // Every column as JSON text, whatever its type; the statement stays one prepared
    // statement, so a second one after `;` is a syntax error, not a second query.
    let (_, numbered) = named_params(sql);
    let inner = numbered.trim().trim_end_matches(';');
    let wrapped = format!(
        "SELECT row_to_json(q)::text FROM ({inner}\n) AS q LIMIT {}",
        max_rows + 1
    );
    let mut query = sqlx::query(&wrapped);
    for v in values {
        query = match v {
            Value::Null => query.bind(None::<String>),
            Value::Bool(b) => query.bind(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => query.bind(i),
                None => query.bind(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => query.bind(s.clone()),
            other => query.bind(other.to_string()),
        };
    }
    let fetched = query.fetch_all(&mut *tx).await.map_err(db_error);
    let _ = tx.rollback().await;
    let fetched = fetched?;
    let mut columns: Vec<String> = Vec::new();
    let mut objects: Vec<Map<String, Value>> = Vec::new();
    for row in &fetched {
        let text: String = row.try_get(0).map_err(db_error)?;
        let object: Map<String, Value> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        objects.push(object);
    }
    // Column order: as the first row's JSON text lists them.
    if let Some(row) = fetched.first() {
        let text: String = row.try_get(0).map_err(db_error)?;
        columns = json_keys_in_order(&text);
    }
    let truncated = objects.len() > max_rows;
    objects.truncate(max_rows);
    let rows = objects
        .into_iter()
        .map(|o| {
            columns
                .iter()
                .map(|c| o.get(c).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    Ok(Rows {
        columns,
        rows,
        truncated,
    })
}

/// The top-level keys of a JSON object text, in the order written (serde_json's map
/// sorts them).
fn json_keys_in_order(text: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Keys>(text)
        .map(|k| k.0)
        .unwrap_or_default()
}
