//! Hot reload against the real watcher: edits, atomic renames, new and deleted files,
//! broken files that keep the old config serving, and settings that need a restart.

mod common;

use common::*;
use llmhub::hub::ReloadEvent;
use serde_json::{Value, json};

const HUB: &str = "[routing]\nretries = 0\nbackoff_ms = 1\n";

async fn model_status(server: &Server, model: &str) -> u16 {
    server
        .chat(json!({"model": model, "messages": user("hi")}))
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_edit_is_served_after_the_reload_and_a_new_provider_appears() {
    let up = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &up.url, "models = [\"old\"]");
    let server = Server::start_watching(&cfg).await;
    let mut events = server.hub.subscribe();
    assert_eq!(model_status(&server, "old").await, 200);
    assert_eq!(model_status(&server, "new").await, 404);

    cfg.provider("up", &up.url, "models = [\"new\"]");
    assert_eq!(
        next_reload(&mut events).await,
        ReloadEvent::Applied { generation: 2 }
    );
    assert_eq!(model_status(&server, "new").await, 200);
    assert_eq!(model_status(&server, "old").await, 404);

    cfg.provider("fresh", &up.url, "models = [\"brand-new\"]");
    assert_eq!(
        next_reload(&mut events).await,
        ReloadEvent::Applied { generation: 3 }
    );
    let resp = server
        .chat(json!({"model": "brand-new", "messages": user("hi")}))
        .await;
    assert_eq!(resp.headers()["x-llmhub-provider"], "fresh");

    std::fs::remove_file(cfg.path("providers.d/fresh.toml")).expect("delete");
    assert_eq!(
        next_reload(&mut events).await,
        ReloadEvent::Applied { generation: 4 }
    );
    assert_eq!(model_status(&server, "brand-new").await, 404);

    let health = server.get_json("/health").await;
    assert_eq!(health["config"]["generation"], 4);
    assert!(health["config"]["last_reload_error"].is_null());
}

#[tokio::test]
async fn an_atomic_rename_is_seen() {
    let up = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &up.url, "models = [\"before\"]");
    let server = Server::start_watching(&cfg).await;
    let mut events = server.hub.subscribe();

    // What editors and config management do: write a temp file, rename it over the original.
    let tmp = cfg.path("providers.d/.up.toml.tmp");
    std::fs::write(
        &tmp,
        format!(
            "base_url = \"{}\"\nenv_key = \"{KEY_ENV}\"\nmodels = [\"after\"]\n",
            up.url
        ),
    )
    .expect("write tmp");
    std::fs::rename(&tmp, cfg.path("providers.d/up.toml")).expect("rename");
    assert!(matches!(
        next_reload(&mut events).await,
        ReloadEvent::Applied { .. }
    ));
    assert_eq!(model_status(&server, "after").await, 200);
    assert_eq!(model_status(&server, "before").await, 404);
}

#[tokio::test]
async fn a_broken_edit_keeps_the_last_good_config_serving_and_is_reported() {
    let up = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &up.url, "models = [\"good\"]");
    let server = Server::start_watching(&cfg).await;
    let mut events = server.hub.subscribe();

    cfg.write(
        "providers.d/up.toml",
        &format!("base_url = \"{}\"\nenv_key = \"{KEY_ENV}\"\nmodels = [\"good\"]\ntimeout_s = \"soon\"\n", up.url),
    );
    let ReloadEvent::Failed { errors } = next_reload(&mut events).await else {
        panic!("the broken file must be rejected");
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("up.toml:4:13: timeout_s: invalid type: string \"soon\""),
        "{errors:?}"
    );

    assert_eq!(
        model_status(&server, "good").await,
        200,
        "the old config still serves"
    );
    let health = server.get_json("/health").await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["config"]["generation"], 1);
    let reported = health["config"]["last_reload_error"]["errors"][0]
        .as_str()
        .unwrap_or_default();
    assert!(reported.contains("up.toml:4:13"), "{health}");
    assert!(health["config"]["last_reload_error"]["at"].is_u64());

    // Fixing the file clears the error and serves the fix.
    cfg.provider("up", &up.url, "models = [\"good\", \"better\"]");
    assert!(matches!(
        next_reload(&mut events).await,
        ReloadEvent::Applied { generation: 2 }
    ));
    assert_eq!(model_status(&server, "better").await, 200);
    let health = server.get_json("/health").await;
    assert!(health["config"]["last_reload_error"].is_null());
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn a_key_added_to_dotenv_activates_its_provider() {
    let up = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.write(
        "providers.d/mistral.toml",
        &format!("base_url = \"{}\"\nenv_key = \"LLMHUB_TEST_MISTRAL_KEY\"\nmodels = [\"mistral-small\"]\n", up.url),
    );
    let server = Server::start_watching(&cfg).await;
    let mut events = server.hub.subscribe();
    let health = server.get_json("/health").await;
    assert_eq!(health["providers"]["mistral"]["active"], false);
    assert_eq!(
        health["providers"]["mistral"]["reason"],
        "LLMHUB_TEST_MISTRAL_KEY is not set"
    );
    assert_eq!(model_status(&server, "mistral").await, 503);

    cfg.write(
        ".env",
        &format!("{KEY_ENV}={KEY}\nLLMHUB_TEST_MISTRAL_KEY=sk-mistral-test\n"),
    );
    assert!(matches!(
        next_reload(&mut events).await,
        ReloadEvent::Applied { .. }
    ));
    assert_eq!(model_status(&server, "mistral").await, 200);
    assert_eq!(
        up.seen()[0].headers["authorization"],
        "Bearer sk-mistral-test"
    );
}

#[tokio::test]
async fn a_listen_change_is_reported_as_needing_a_restart() {
    let cfg = ConfigDir::new("[server]\nlisten = \"127.0.0.1:18080\"\n");
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    let server = Server::start_watching(&cfg).await;
    let mut events = server.hub.subscribe();
    cfg.write("hub.toml", "[server]\nlisten = \"127.0.0.1:18081\"\n");
    assert!(matches!(
        next_reload(&mut events).await,
        ReloadEvent::Applied { .. }
    ));
    let health = server.get_json("/health").await;
    let pending: Vec<Value> = health["config"]["pending_restart"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(pending.len(), 1, "{health}");
    let text = pending[0].as_str().unwrap_or_default();
    assert!(
        text.contains("127.0.0.1:18080")
            && text.contains("127.0.0.1:18081")
            && text.contains("restart"),
        "{text}"
    );
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_snapshot_they_started_with() {
    // The upstream holds the first request until the config has been replaced.
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = std::sync::Mutex::new(Some(release_rx));
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let up = Mock::start(move |_, _| {
        let release = release_rx.lock().expect("lock").take();
        let _ = arrived_tx.send(());
        async move {
            if let Some(r) = release {
                let _ = r.await;
            }
            json_response(200, &fixture("openai/chat.response.json"))
        }
    })
    .await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider(
        "up",
        &up.url,
        "models = [\"m\"]\nsystem_prompt = \"generation one\"",
    );
    let server = Server::start_watching(&cfg).await;
    let mut events = server.hub.subscribe();

    let first = tokio::spawn({
        let client = server.client.clone();
        let url = format!("{}/v1/chat/completions", server.url);
        async move {
            client
                .post(url)
                .json(&json!({"model": "m", "messages": user("hi")}))
                .send()
                .await
        }
    });
    // Wait until the upstream has the request in hand, then change the config under it.
    arrived_rx
        .recv()
        .await
        .expect("the upstream has the request");
    cfg.provider(
        "up",
        &up.url,
        "models = [\"m\"]\nsystem_prompt = \"generation two\"",
    );
    assert!(matches!(
        next_reload(&mut events).await,
        ReloadEvent::Applied { .. }
    ));
    release_tx.send(()).expect("release");
    assert_eq!(first.await.expect("join").expect("response").status(), 200);

    assert_eq!(model_status(&server, "m").await, 200);
    let seen = up.seen();
    assert_eq!(seen[0].body["messages"][0]["content"], "generation one");
    assert_eq!(seen[1].body["messages"][0]["content"], "generation two");
}

/// How many reloads the server ran, by outcome.
async fn reload_counts(server: &Server) -> Value {
    server.get_json("/health").await["config"]["reloads"].clone()
}

#[tokio::test]
async fn an_idle_gateway_reads_no_files_after_a_read_or_an_edit() {
    let up = Mock::ok().await;
    let cfg = ConfigDir::new(HUB);
    cfg.provider("up", &up.url, "models = [\"m\"]");
    let server = Server::start_watching(&cfg).await;
    let mut events = server.hub.subscribe();
    let idle = json!({"applied": 0, "unchanged": 0, "failed": 0});

    // Reading a file (`cat hub.toml`) changes nothing and must not start reloading.
    for name in ["hub.toml", "providers.d/up.toml", ".env"] {
        std::fs::read_to_string(cfg.path(name)).expect("read");
    }
    // The property is "nothing happens over a quiet spell": there is no event to await.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(reload_counts(&server).await, idle);

    // One real edit is one reload; its own reading of the files triggers nothing more.
    cfg.provider("up", &up.url, "models = [\"m\", \"n\"]");
    assert_eq!(
        next_reload(&mut events).await,
        ReloadEvent::Applied { generation: 2 }
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        reload_counts(&server).await,
        json!({"applied": 1, "unchanged": 0, "failed": 0})
    );
    let metrics = server.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "llmhub_reloads_total{outcome=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("outcome=\"unchanged\""), "{metrics}");
}

#[test]
fn fixing_a_broken_file_is_logged() {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;
    use std::time::Duration;
    let cfg = ConfigDir::new("[server]\nlisten = \"127.0.0.1:0\"\n");
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_llmhub"))
        .args(["serve", "--config"])
        .arg(cfg.hub_path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no log line with {needle:?} within 10s"));
            if line.contains(needle) {
                return line;
            }
        }
    };
    wait_for("llmhub serving");
    cfg.write("providers.d/echo.toml", "adapter = \"echo\"\nmodels = 5\n");
    wait_for("configuration rejected");
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\n",
    );
    let fixed = wait_for("configuration valid again");
    let _ = child.kill();
    let _ = child.wait();
    assert!(fixed.contains("INFO"), "{fixed}");
}
