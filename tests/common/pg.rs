//! A real PostgreSQL for the tests: one server per test binary on a free loopback port,
//! in a temp dir, stopped when the test process exits; a fresh database per test.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const INSTALL: &str = "PostgreSQL is needed for this test and was not found: install it with `apt-get install -y postgresql` (Debian's package; .ci/run does this)";

struct PgServer {
    port: u16,
    _dir: tempfile::TempDir,
    /// The watchdog stops the server when this pipe closes, i.e. when the test process
    /// exits, however it exits.
    _lifeline: std::process::ChildStdin,
    /// The watchdog, reaped by the OS with this process.
    _watchdog: std::process::Child,
}

fn bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|_| panic!("{INSTALL}"))
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("{INSTALL} (no {name})"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a command as the `postgres` user when we are root: PostgreSQL refuses root.
fn as_pg(program: &PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start() -> PgServer {
    let dir = tempfile::Builder::new()
        .prefix("llmhub-pg")
        .tempdir()
        .expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot chown the test database folder to postgres");
    }
    let out = as_pg(&bin("initdb"))
        .args(["-A", "trust", "-U", "llmhub", "-E", "UTF8", "-D"])
        .arg(&data)
        .output()
        .unwrap_or_else(|e| panic!("{INSTALL}: {e}"));
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    // A watchdog shell stops the server when its stdin, held by this process, closes.
    let runner = if is_root() {
        "runuser -u postgres -- "
    } else {
        ""
    };
    let script = format!(
        "{runner}'{postgres}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off </dev/null & \
         read _; {runner}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
        postgres = bin("postgres").display(),
        pg_ctl = bin("pg_ctl").display(),
        data = data.display(),
        dir = dir.path().display(),
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start postgres");
    let lifeline = child.stdin.take().expect("stdin");
    // Ready when the server says so on stderr: no polling.
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                let ready = line.contains("ready to accept connections");
                seen.push(line);
                if ready {
                    break;
                }
            }
            _ => panic!("postgres did not start:\n{}", seen.join("\n")),
        }
    }
    // Keep draining its log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    PgServer {
        port,
        _dir: dir,
        _lifeline: lifeline,
        _watchdog: child,
    }
}

/// A URL to a new, empty database on the shared test server.
pub async fn database(name: &str) -> String {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    let server = SERVER.get_or_init(start);
    let admin = format!("postgres://llmhub@127.0.0.1:{}/postgres", server.port);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&admin)
        .await
        .expect("connect to postgres");
    let db = format!(
        "t_{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&pool)
        .await
        .expect("drop");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&pool)
        .await
        .expect("create database");
    pool.close().await;
    format!("postgres://llmhub@127.0.0.1:{}/{db}", server.port)
}
