//! SQL tools (`kind = "sql"`) on a real SQLite file and a real PostgreSQL started by the
//! tests: bound parameters, row caps, structured results, and every write attempt
//! refused by the database itself.

mod common;

use common::*;
use serde_json::{Value, json};

const DB_ENV: &str = "LLMHUB_TEST_DB_URL";

fn config(db_url: &str) -> ConfigDir {
    let cfg = ConfigDir::new("[routing]\nretries = 0\n");
    cfg.write(".env", &format!("{KEY_ENV}={KEY}\n{DB_ENV}={db_url}\n"));
    cfg.echo();
    cfg.write(
        "tools.d/orders.toml",
        &format!(
            "kind = \"sql\"\ndescription = \"A customer's orders\"\ndatabase_env = \"{DB_ENV}\"\n\
             statement = \"SELECT id, total FROM orders WHERE customer = :customer ORDER BY id\"\n\
             [input]\ntype = \"object\"\nrequired = [\"customer\"]\nproperties.customer = {{ type = \"string\" }}\n"
        ),
    );
    cfg.write(
        "tools.d/db_query.toml",
        &format!(
            "kind = \"sql\"\ndescription = \"Read-only SQL\"\ndatabase_env = \"{DB_ENV}\"\nfree_query = true\nmax_rows = 3\ntimeout_s = 5\n"
        ),
    );
    cfg
}

/// Writes that must each fail, on either database.
const SQLITE_WRITES: [&str; 10] = [
    "DELETE FROM orders",
    "INSERT INTO orders VALUES (99, 'mallory', 1.0)",
    "WITH x AS (SELECT 1) DELETE FROM orders",
    "SELECT 1; DELETE FROM orders",
    "UPDATE orders SET total = 0",
    "CREATE TABLE t (x)",
    "PRAGMA query_only = 0",
    "PRAGMA journal_mode = WAL",
    "VACUUM INTO '/tmp/llmhub-stolen.db'",
    "ATTACH DATABASE 'SECRET' AS s",
];

async fn mcp_call(mcp: &mut McpHttp, tool: &str, args: Value) -> (bool, String, Value) {
    let result = mcp.call(tool, args).await;
    (
        result["isError"] == true,
        result["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        result["structuredContent"].clone(),
    )
}

#[tokio::test]
async fn sqlite_reads_with_bound_parameters_and_refuses_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shop.db");
    let secret = dir.path().join("secret.db");
    {
        let conn = rusqlite::Connection::open(&db).expect("create");
        conn.execute_batch(
            "CREATE TABLE orders (id INTEGER, customer TEXT, total REAL);
             INSERT INTO orders VALUES (1, 'ann', 9.5), (2, 'ann', 12.0), (3, 'bob', 3.25),
                                       (4, 'cid', 1.0), (5, 'dan', 2.0);",
        )
        .expect("fill");
        rusqlite::Connection::open(&secret)
            .expect("secret")
            .execute_batch("CREATE TABLE keys (k TEXT); INSERT INTO keys VALUES ('hunter2');")
            .expect("fill secret");
    }
    let cfg = config(&format!("sqlite://{}", db.display()));
    let server = Server::start(&cfg).await;
    let mut mcp = McpHttp::connect(&server, "").await;

    let (failed, text, structured) = mcp_call(&mut mcp, "orders", json!({"customer": "ann"})).await;
    assert!(!failed, "{text}");
    assert_eq!(
        structured,
        json!({"columns": ["id", "total"], "rows": [[1, 9.5], [2, 12.0]], "truncated": false})
    );
    assert_eq!(text, "id | total\n1 | 9.5\n2 | 12.0\n(2 rows)");
    // A bound parameter is a value, never SQL.
    let (failed, _, structured) =
        mcp_call(&mut mcp, "orders", json!({"customer": "x' OR '1'='1"})).await;
    assert!(!failed);
    assert_eq!(structured["rows"], json!([]));

    let (failed, text, structured) = mcp_call(
        &mut mcp,
        "db_query",
        json!({"query": "SELECT id, customer FROM orders ORDER BY id"}),
    )
    .await;
    assert!(!failed, "{text}");
    assert_eq!(structured["rows"].as_array().map(Vec::len), Some(3));
    assert_eq!(structured["truncated"], true);
    assert!(text.contains("cut at max_rows = 3"), "{text}");

    for sql in SQLITE_WRITES {
        let sql = sql.replace("SECRET", &secret.display().to_string());
        let (failed, text, _) = mcp_call(&mut mcp, "db_query", json!({"query": sql})).await;
        assert!(failed, "{sql} must fail: {text}");
        assert!(text.starts_with("tool `db_query`: "), "{sql}: {text}");
        assert!(!text.contains("hunter2"));
    }
    let (failed, text, _) =
        mcp_call(&mut mcp, "db_query", json!({"query": "SELECT * FROM keys"})).await;
    assert!(failed && text.contains("no such table"), "{text}");
    assert!(!std::path::Path::new("/tmp/llmhub-stolen.db").exists());
    let count: i64 = rusqlite::Connection::open(&db)
        .expect("open")
        .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .expect("count");
    assert_eq!(count, 5, "nothing was written");

    // Over plain HTTP too, with the database's own message.
    let r = server
        .client
        .post(format!("{}/v1/tools/db_query", server.url))
        .json(&json!({"query": "DELETE FROM orders"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not authorized"),
        "{body}"
    );
}

#[tokio::test]
async fn postgres_runs_read_only_as_a_plain_role_and_refuses_a_superuser() {
    let admin_url = pg::database("sql_tools").await;
    let admin = sqlx::PgPool::connect(&admin_url).await.expect("connect");
    for sql in [
        "CREATE TABLE orders (id int, customer text, total numeric(8,2), placed timestamptz DEFAULT '2026-01-02T03:04:05Z')",
        "INSERT INTO orders (id, customer, total) VALUES (1, 'ann', 9.50), (2, 'ann', 12), (3, 'bob', 3.25), (4, 'cid', 1), (5, 'dan', 2)",
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmhub_reader') THEN CREATE ROLE llmhub_reader LOGIN; END IF; END $$",
        "GRANT SELECT ON orders TO llmhub_reader",
    ] {
        sqlx::query(sql)
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let reader_url = admin_url.replace("postgres://llmhub@", "postgres://llmhub_reader@");
    let cfg = config(&reader_url);
    let server = Server::start(&cfg).await;
    let mut mcp = McpHttp::connect(&server, "").await;

    let (failed, text, structured) = mcp_call(&mut mcp, "orders", json!({"customer": "ann"})).await;
    assert!(!failed, "{text}");
    assert_eq!(
        structured,
        json!({"columns": ["id", "total"], "rows": [[1, 9.5], [2, 12.0]], "truncated": false})
    );
    let (_, _, structured) =
        mcp_call(&mut mcp, "orders", json!({"customer": "x' OR '1'='1"})).await;
    assert_eq!(structured["rows"], json!([]));
    let (failed, text, structured) = mcp_call(
        &mut mcp,
        "db_query",
        json!({"query": "SELECT id, placed, customer::text AS who FROM orders ORDER BY id;"}),
    )
    .await;
    assert!(!failed, "{text}");
    assert_eq!(structured["columns"], json!(["id", "placed", "who"]));
    assert_eq!(structured["rows"][0][1], "2026-01-02T03:04:05+00:00");
    assert_eq!(structured["truncated"], true);

    for sql in [
        "DELETE FROM orders",
        "INSERT INTO orders (id) VALUES (99)",
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
        "SELECT 1; DELETE FROM orders",
        "UPDATE orders SET total = 0",
        "CREATE TABLE t (x int)",
        "COPY orders TO PROGRAM 'touch /tmp/llmhub-pwned'",
        "SET TRANSACTION READ WRITE",
        "SELECT pg_sleep(10)",
    ] {
        let (failed, text, _) = mcp_call(&mut mcp, "db_query", json!({"query": sql})).await;
        assert!(failed, "{sql} must fail: {text}");
        assert!(text.starts_with("tool `db_query`: "), "{sql}: {text}");
    }
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders WHERE total > 0")
        .fetch_one(&admin)
        .await
        .expect("count");
    assert_eq!(count, 5, "nothing was written");
    assert!(!std::path::Path::new("/tmp/llmhub-pwned").exists());

    // As a superuser the tool refuses to run at all.
    let cfg = config(&admin_url);
    let server = Server::start(&cfg).await;
    let mut mcp = McpHttp::connect(&server, "").await;
    let (failed, text, _) = mcp_call(&mut mcp, "db_query", json!({"query": "SELECT 1"})).await;
    assert!(failed && text.contains("superuser"), "{text}");
}

#[tokio::test]
async fn an_unset_database_variable_means_the_tool_is_not_offered() {
    let cfg = ConfigDir::new("");
    cfg.echo();
    cfg.write(
        "tools.d/db_query.toml",
        "kind = \"sql\"\ndescription = \"Read-only SQL\"\ndatabase_env = \"LLMHUB_TEST_UNSET_DB\"\nfree_query = true\n",
    );
    let server = Server::start(&cfg).await;
    let mut mcp = McpHttp::connect(&server, "").await;
    assert!(!mcp.tool_names().await.contains(&"db_query".to_string()));
    let active = mcp.call("list_active_tools", json!({})).await;
    assert!(
        active["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("LLMHUB_TEST_UNSET_DB is not set")
    );
}
