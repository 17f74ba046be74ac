//! Command line: `serve`, `check`, `models` and `init`.
#![allow(clippy::print_stdout, reason = "the CLI's reports are its output")]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::ConfigError;
use crate::hub::breaker::BreakerView;
use crate::hub::{self, Health, Hub};
use crate::registry::{Registry, Secret, Status};

#[derive(Parser)]
#[command(
    name = "llmhub",
    version,
    about = "A configuration-driven LLM gateway and MCP server",
    long_about = "A configuration-driven LLM gateway and MCP server: hub.toml and, beside it, \
providers.d/ (LLM providers), tools.d/ (prompt, REST and SQL tools), servers.d/ (backend MCP servers) and \
keys.d/ (client keys), one TOML file each, hot-reloaded while serving."
)]
struct Cli {
    /// The hub.toml to read, or a folder holding one; providers.d/, tools.d/, servers.d/
    /// and keys.d/ are found beside it.
    #[arg(
        long,
        short,
        global = true,
        env = "LLMHUB_CONFIG",
        default_value = "hub.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API and MCP over HTTP, reloading the files when they change.
    Serve {
        /// Listen here instead of hub.toml's `server.listen` (e.g. 0.0.0.0:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Speak MCP on stdin/stdout (for Claude Desktop, Cursor, Claude Code), reloading too.
    Mcp {
        /// Serve only this `[profiles.NAME]` subset of the tools.
        #[arg(long)]
        profile: Option<String>,
    },
    /// Validate the configuration and print every error.
    Check,
    /// List providers and models, active or not and why.
    Models,
    /// Print usage from the ledger: requests, tokens and cost, grouped as asked.
    Usage {
        /// day (today, UTC), week (the last 7 days), month (this calendar month) or all.
        #[arg(long, default_value = "month")]
        period: String,
        /// Group by any of model, provider, project, agent, key, day (comma-separated).
        #[arg(long, default_value = "model")]
        by: String,
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Make and list client keys (keys.d/).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Write a starter configuration into a folder.
    Init {
        /// Where to write hub.toml, providers.d/, tools.d/ and servers.d/.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Overwrite files that exist already.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Make a key: print it once and write keys.d/NAME.toml holding its SHA-256.
    New {
        /// The key's name (the file name): 1 to 64 of a-z, A-Z, 0-9, '_' and '-'.
        name: String,
        /// The project its usage is attributed to.
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List keys with their projects, limits and spend so far (never a key).
    List,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Init { dir, force } = &cli.command {
        return init(dir, *force);
    }
    let config = match config_file(&cli.config) {
        Ok(path) => path,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { listen } => serve(&config, listen),
        Command::Mcp { profile } => mcp(&config, profile),
        Command::Check => check(&config),
        Command::Models => models(&config),
        Command::Usage {
            period,
            by,
            project,
            agent,
        } => usage(&config, &period, &by, project, agent),
        Command::Keys {
            action: KeysAction::New { name, project },
        } => keys_new(&config, &name, &project),
        Command::Keys {
            action: KeysAction::List,
        } => keys_list(&config),
        Command::Init { .. } => unreachable!("handled above"),
    }
}

/// The hub.toml `--config` names: the file itself, or the one inside a folder.
fn config_file(given: &Path) -> Result<PathBuf, String> {
    let path = if given.is_dir() {
        given.join("hub.toml")
    } else {
        given.to_path_buf()
    };
    if path.is_file() {
        return Ok(path);
    }
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Err(format!(
        "no configuration at {}: run `llmhub init {}` to write a starter one, or pass --config PATH (a hub.toml or its folder)",
        path.display(),
        folder.display()
    ))
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // rmcp logs every message at info; its warnings are what an operator needs.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    // stderr only: stdout belongs to MCP's stdio transport.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// A runtime from `builder`, or `None` after saying why there is none.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

fn print_errors(errors: &[ConfigError]) {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!(
        "error: {} problem{} in the configuration",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}

/// Loads the configuration, starts a runtime and the file watcher, and runs `main`;
/// `serve` and `mcp` differ only in what they then serve.
fn run<F, Fut>(config: &Path, main: F) -> ExitCode
where
    F: FnOnce(Arc<Hub>) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    init_logging();
    let hub = match Hub::load(config) {
        Ok(hub) => hub,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let _watch = match crate::reload::watch(hub.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the configuration folder; hot reload is off");
                None
            }
        };
        main(hub).await
    })
}

fn serve(config: &Path, listen: Option<std::net::SocketAddr>) -> ExitCode {
    run(config, |hub| async move {
        let registry = hub.snapshot();
        let listen = listen.unwrap_or(registry.settings.listen);
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "error: cannot listen on {listen} (--listen, or server.listen in {}): {e}",
                    config.display()
                );
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            address = %listen,
            generation = registry.generation,
            providers = registry.providers.len(),
            active = registry.providers.values().filter(|p| p.is_active()).count(),
            "llmhub serving"
        );
        drop(registry);
        match crate::http::serve(listener, hub, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: server stopped: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn mcp(config: &Path, profile: Option<String>) -> ExitCode {
    run(config, |hub| async move {
        tracing::info!(config = %config.display(), "llmhub MCP server on stdio");
        match crate::mcp::serve_stdio(hub, profile).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: MCP session ended: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down; finishing requests in flight");
}

fn check(config: &Path) -> ExitCode {
    match hub::load_registry(config, 1) {
        Ok(r) => {
            println!("{}: {}", config.display(), summary(&r));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            ExitCode::FAILURE
        }
    }
}

fn summary(r: &Registry) -> String {
    let active = r.providers.values().filter(|p| p.is_active()).count();
    let models: usize = r.providers.values().map(|p| p.models.len()).sum();
    let backends_active = r
        .backends
        .values()
        .filter(|b| b.status == Status::Active)
        .count();
    format!(
        "ok: {} providers ({active} active), {models} models, {} groups, {} tools, {} backends ({backends_active} active)",
        r.providers.len(),
        r.groups.len(),
        r.tools.len(),
        r.backends.len(),
    )
}

fn models(config: &Path) -> ExitCode {
    let r = match hub::load_registry(config, 1) {
        Ok(r) => r,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    use std::fmt::Write as _;
    let live = live_health(r.settings.listen, r.settings.api_keys.first());
    let mut out = String::new();
    for p in r.providers.values() {
        let mut status = match &p.status {
            Status::Active => "active".to_string(),
            Status::Inactive(why) => format!("inactive: {why}"),
        };
        let circuit = live
            .as_ref()
            .and_then(|h| h.providers.as_ref()?.get(&p.name))
            .map(|v| &v.circuit);
        match circuit {
            Some(BreakerView::Open { retry_in_s }) => {
                status.push_str(&format!(", circuit open (next probe in {retry_in_s:.0}s)"))
            }
            Some(BreakerView::HalfOpen) => status.push_str(", circuit half-open (probing)"),
            Some(BreakerView::Closed {
                consecutive_failures: n,
            }) if *n > 0 => status.push_str(&format!(", circuit closed ({n} recent failures)")),
            Some(BreakerView::Closed { .. }) => status.push_str(", circuit closed"),
            None => {}
        }
        let _ = writeln!(out, "{} ({} adapter) {status}", p.name, p.adapter.as_str());
        for m in &p.models {
            let mut line = format!("  {}/{}", p.name, m.id);
            if p.default_model.as_deref() == Some(m.id.as_str()) {
                line.push_str("  [default]");
            }
            if !m.aliases.is_empty() {
                line.push_str(&format!("  aliases: {}", m.aliases.join(", ")));
            }
            let _ = writeln!(out, "{line}");
        }
        if let Some(f) = &p.fallback_to {
            let _ = writeln!(out, "  falls back to: {f}");
        }
    }
    for (name, chain) in &r.groups {
        let chain: Vec<String> = chain
            .iter()
            .map(|t| format!("{}/{}", t.provider, t.model))
            .collect();
        let _ = writeln!(out, "group {name}: {}", chain.join(" → "));
    }
    for b in r.backends.values() {
        let transport = match &b.transport {
            crate::registry::backends::Transport::Http { url } => format!("http {url}"),
            crate::registry::backends::Transport::Stdio { command, .. } => {
                format!("stdio `{command}`")
            }
        };
        let mut status = match &b.status {
            Status::Active => "active".to_string(),
            Status::Inactive(why) => format!("inactive: {why}"),
        };
        if let Some(state) = live
            .as_ref()
            .and_then(|h| h.backends.as_ref()?.get(&b.name))
        {
            status.push_str(&format!(", {} ({} tools)", state.status, state.tools));
            if let Some(why) = &state.reason {
                status.push_str(&format!(": {why}"));
            }
        }
        let _ = writeln!(
            out,
            "backend {} ({transport}, tools as {}{}*) {status}",
            b.name, b.prefix, r.settings.mcp_tool_separator
        );
    }
    let _ = writeln!(out, "{}", summary(&r));
    if live.is_none() {
        let _ = writeln!(
            out,
            "(no llmhub answering on {}: circuit states are known only to a running server)",
            r.settings.listen
        );
    }
    // A closed pipe (`llmhub models | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    ExitCode::SUCCESS
}

fn usage(
    config: &Path,
    period: &str,
    by: &str,
    project: Option<String>,
    agent: Option<String>,
) -> ExitCode {
    let r = match hub::load_registry(config, 1) {
        Ok(r) => r,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    let Some(url) = r.settings.storage_url.clone() else {
        eprintln!("error: the usage ledger is off ([storage] ledger = false)");
        return ExitCode::FAILURE;
    };
    let (period, query) =
        match crate::store::report_query(Some(period), Some(by), project, agent, None) {
            Ok(q) => q,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::FAILURE;
            }
        };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let rows = runtime.block_on(async {
        let store = crate::store::Store::open(url.expose()).await?;
        store.usage(&query).await
    });
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = crate::store::report_json(period, &query, &rows);
    let _ = std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        usage_table(&query, &rows, &report).as_bytes(),
    );
    ExitCode::SUCCESS
}

fn keys_new(config: &Path, name: &str, project: &str) -> ExitCode {
    if !crate::registry::is_name(name, 64) {
        eprintln!("error: key name `{name}`: expected 1 to 64 of a-z, A-Z, 0-9, '_' and '-'");
        return ExitCode::FAILURE;
    }
    if !crate::registry::is_name(project, 64) {
        eprintln!("error: project `{project}`: expected 1 to 64 of a-z, A-Z, 0-9, '_' and '-'");
        return ExitCode::FAILURE;
    }
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(crate::config::KEYS_DIR);
    let file = dir.join(format!("{name}.toml"));
    if file.exists() {
        eprintln!(
            "error: {} exists already; delete it to revoke that key first",
            file.display()
        );
        return ExitCode::FAILURE;
    }
    let key = match crate::registry::keys::generate() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: no randomness from the system: {e}");
            return ExitCode::FAILURE;
        }
    };
    let digest = crate::registry::keys::hex(&crate::registry::keys::digest(&key));
    let text = format!(
        r#"# The key `{name}`: only its SHA-256 is kept. Delete this file to revoke it.
sha256 = "{digest}"
project = "{project}"

# Every setting below is optional; uncomment to limit the key.
# description = "search team's indexer"
# models = ["fast", "openai/*"]            # model-address globs it may use (default: all)
# tools = ["code_review", "github__*"]     # MCP and /v1/tools tools it may use (default: all)
# rpm = 60                                 # requests per minute
# tpm = 100_000                            # tokens per minute (input + output)
# max_parallel = 8                         # requests in progress at once
# budget_usd = {{ day = 5.0, month = 100.0 }}
# expires = 2027-01-01                     # refused from this date (UTC) on
"#
    );
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        // Written beside and renamed, so the watcher never reads half a file.
        let tmp = dir.join(format!(".{name}.toml.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &file)
    });
    if let Err(e) = written {
        eprintln!("error: cannot write {}: {e}", file.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "wrote {} (project `{project}`); the key is shown once, keep it now:",
        file.display()
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), format!("{key}\n").as_bytes());
    ExitCode::SUCCESS
}

fn keys_list(config: &Path) -> ExitCode {
    let r = match hub::load_registry(config, 1) {
        Ok(r) => r,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    // Spend comes from the ledger; without one the columns say so.
    let spend = r.settings.storage_url.clone().and_then(|url| {
        let runtime = runtime(tokio::runtime::Builder::new_current_thread())?;
        runtime
            .block_on(async {
                let store = crate::store::Store::open(url.expose()).await?;
                let limiter = crate::limits::Limiter::new(None, false);
                limiter.load_spend(&store).await?;
                Ok::<_, crate::store::StoreError>(limiter)
            })
            .map_err(|e| eprintln!("warning: spend unknown: {e}"))
            .ok()
    });
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let mut table = vec![
        [
            "key",
            "project",
            "models",
            "tools",
            "rpm",
            "tpm",
            "parallel",
            "today_usd",
            "month_usd",
            "expires",
        ]
        .map(str::to_string)
        .to_vec(),
    ];
    for key in r.keys.by_name.values() {
        let l = &key.limits;
        let (day, month) = spend
            .as_ref()
            .map(|s| s.key_spend(&key.name))
            .map_or((None, None), |(d, m)| (Some(d), Some(m)));
        let against = |spent: Option<f64>, cap: Option<f64>| match (spent, cap) {
            (Some(s), Some(c)) => format!("{s:.4}/{c:.2}"),
            (Some(s), None) => format!("{s:.4}"),
            (None, Some(c)) => format!("?/{c:.2}"),
            (None, None) => "?".to_string(),
        };
        table.push(vec![
            key.name.clone(),
            key.project.clone(),
            key.models
                .patterns()
                .map_or("*".to_string(), |p| p.join(",")),
            key.tools
                .patterns()
                .map_or("*".to_string(), |p| p.join(",")),
            opt(l.rpm.map(|v| v.to_string())),
            opt(l.tpm.map(|v| v.to_string())),
            opt(l.max_parallel.map(|v| v.to_string())),
            against(day, l.budget.day),
            against(month, l.budget.month),
            opt(key.expires.as_ref().map(|(_, on)| on.clone())),
        ]);
    }
    let out = if table.len() == 1 {
        format!(
            "no keys: {}/ holds none; `llmhub keys new NAME` makes one\n",
            crate::config::KEYS_DIR
        )
    } else {
        aligned(&table, 4)
    };
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    ExitCode::SUCCESS
}

/// The usage report as an aligned text table, a total line last.
fn usage_table(
    query: &crate::store::UsageQuery,
    rows: &[crate::store::UsageRow],
    report: &serde_json::Value,
) -> String {
    let mut header: Vec<String> = query
        .group_by
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    header.extend(
        [
            "requests",
            "failed",
            "input",
            "cached",
            "output",
            "reasoning",
            "cost_usd",
            "unpriced",
        ]
        .map(str::to_string),
    );
    let line = |group: Vec<String>, t: &crate::store::Totals| -> Vec<String> {
        let mut cells = group;
        cells.extend([
            t.requests.to_string(),
            t.failed.to_string(),
            t.input_tokens.to_string(),
            t.cached_tokens.to_string(),
            t.output_tokens.to_string(),
            t.reasoning_tokens.to_string(),
            format!("{:.6}", t.cost_usd),
            t.unpriced.to_string(),
        ]);
        cells
    };
    let mut table = vec![header];
    for r in rows {
        let group = query
            .group_by
            .iter()
            .map(|d| r.group.get(d.name()).cloned().unwrap_or_default())
            .collect();
        table.push(line(group, &r.totals));
    }
    let total: crate::store::Totals =
        serde_json::from_value(report["total"].clone()).unwrap_or_default();
    let mut label = vec![String::new(); query.group_by.len()];
    if let Some(first) = label.first_mut() {
        *first = "total".to_string();
    }
    table.push(line(label, &total));
    aligned(&table, query.group_by.len())
}

/// Rows as columns: the first `left` left-aligned (names), the rest right-aligned (numbers).
fn aligned(table: &[Vec<String>], left: usize) -> String {
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i < left {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The running server's `/health`, if one answers on the configured address, for its
/// breaker and backend states; with an admin key when the gateway has keys.
fn live_health(listen: std::net::SocketAddr, key: Option<&Secret>) -> Option<Health> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let client = crate::upstream::client_builder()
            .timeout(std::time::Duration::from_millis(500))
            .build()
            .ok()?;
        let mut request = client.get(format!("http://{listen}/health"));
        if let Some(key) = key {
            request = request.bearer_auth(key.expose());
        }
        let health: Health = request.send().await.ok()?.json().await.ok()?;
        health.providers.is_some().then_some(health)
    })
}

/// The shipped configuration, so `init` writes exactly what `serve` runs in this repository.
const STARTER: [(&str, &str); 21] = [
    ("hub.toml", include_str!("../hub.toml")),
    (
        "providers.d/anthropic.toml",
        include_str!("../providers.d/anthropic.toml"),
    ),
    (
        "providers.d/deepseek.toml",
        include_str!("../providers.d/deepseek.toml"),
    ),
    (
        "providers.d/echo.toml",
        include_str!("../providers.d/echo.toml"),
    ),
    (
        "providers.d/gemini.toml",
        include_str!("../providers.d/gemini.toml"),
    ),
    (
        "providers.d/groq.toml",
        include_str!("../providers.d/groq.toml"),
    ),
    (
        "providers.d/mistral.toml",
        include_str!("../providers.d/mistral.toml"),
    ),
    (
        "providers.d/ollama.toml",
        include_str!("../providers.d/ollama.toml"),
    ),
    (
        "providers.d/openai.toml",
        include_str!("../providers.d/openai.toml"),
    ),
    (
        "providers.d/openrouter.toml",
        include_str!("../providers.d/openrouter.toml"),
    ),
    (
        "providers.d/together.toml",
        include_str!("../providers.d/together.toml"),
    ),
    (
        "providers.d/xai.toml",
        include_str!("../providers.d/xai.toml"),
    ),
    (
        "tools.d/code_review.toml",
        include_str!("../tools.d/code_review.toml"),
    ),
    (
        "tools.d/extract_entities.toml",
        include_str!("../tools.d/extract_entities.toml"),
    ),
    (
        "tools.d/summarize.toml",
        include_str!("../tools.d/summarize.toml"),
    ),
    (
        "tools.d/translate.toml",
        include_str!("../tools.d/translate.toml"),
    ),
    (
        "tools.d/web_search.toml",
        include_str!("../tools.d/web_search.toml"),
    ),
    (
        "tools.d/tavily_search.toml",
        include_str!("../tools.d/tavily_search.toml"),
    ),
    (
        "tools.d/db_query.toml",
        include_str!("../tools.d/db_query.toml"),
    ),
    (
        "servers.d/filesystem.toml",
        include_str!("../servers.d/filesystem.toml"),
    ),
    (
        "servers.d/github.toml",
        include_str!("../servers.d/github.toml"),
    ),
];

fn init(dir: &Path, force: bool) -> ExitCode {
    for (name, _) in STARTER {
        let path = dir.join(name);
        if path.exists() && !force {
            eprintln!(
                "error: {} exists already; nothing was written (--force overwrites)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    for (name, text) in STARTER {
        let path = dir.join(name);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    println!(
        "next: llmhub serve --config {}",
        dir.join("hub.toml").display()
    );
    ExitCode::SUCCESS
}
