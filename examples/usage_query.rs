//! Benchmark: a SQLite ledger of N rows (default 1,000,000) over the last 60 days,
//! written through the ledger's own batched path, then `GET /v1/usage?period=month`'s
//! query, timed. Usage: cargo run --release --example usage_query -- [rows] [db path]

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::time::Instant;

use llmhub::store::{Row, Store, civil_date, days, now_ms, report_query};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let path = args.get(2).cloned().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("llmhub-bench.db")
            .display()
            .to_string()
    });
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let store = Store::open(&format!("sqlite://{path}"))
        .await
        .expect("open");
    let today = days(now_ms());
    let projects = ["search", "support", "billing", "research", "default"];
    let models = [
        ("openai", "gpt-4o-mini"),
        ("anthropic", "claude-sonnet-4-5"),
        ("gemini", "gemini-2.5-flash"),
        ("openai", "gpt-4.1"),
    ];
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..rows {
        let day = today - (i % 60) as i64;
        let (provider, model) = models[i % models.len()];
        batch.push(Row {
            id: format!("bench{i:012}"),
            at_ms: day * 86_400_000 + (i % 86_400_000) as i64,
            day: civil_date(day),
            key: String::new(),
            project: projects[i % projects.len()].to_string(),
            agent: format!("agent-{}", i % 7),
            surface: "chat".into(),
            requested: model.into(),
            provider: provider.into(),
            model: model.into(),
            status: 200,
            attempts: 1,
            streamed: i % 2 == 0,
            input_tokens: 500,
            cached_tokens: 100,
            cache_write_tokens: 0,
            output_tokens: 200,
            reasoning_tokens: 0,
            cost_usd: Some(0.001),
            latency_ms: 800,
            ttft_ms: None,
            error: None,
        });
        if batch.len() == 1000 {
            store.write(&batch).await.expect("write");
            batch.clear();
        }
    }
    store.write(&batch).await.expect("write");
    let wrote = started.elapsed();
    println!(
        "wrote {rows} rows in {:.1}s ({:.0} rows/s through the ledger's batch path)",
        wrote.as_secs_f64(),
        rows as f64 / wrote.as_secs_f64()
    );
    for (label, group_by) in [
        ("month, no grouping", ""),
        ("month by model", "model"),
        ("month by model,project", "model,project"),
    ] {
        let (_, query) =
            report_query(Some("month"), Some(group_by), None, None, None).expect("query");
        let mut times = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            let result = store.usage(&query).await.expect("usage");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            std::hint::black_box(result);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "GET /v1/usage?period=month ({label}): median {:.2} ms, max {:.2} ms over 21 runs",
            times[10], times[20]
        );
    }
}
