//! The console page in a real headless Chromium (Debian's `chromium`, driven over CDP):
//! login with session storage, the providers table, charts with data, recent requests,
//! a tool form round trip, a reload error appearing live, and a phone-width layout.
//! Screenshots are saved under target/console-screenshots/.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::page::ScreenshotParams;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const ADMIN_ENV: &str = "LLMHUB_TEST_CONSOLE_KEY";
const ADMIN: &str = "console-admin-key";

struct Chromium {
    browser: Browser,
    _handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

async fn chromium() -> Chromium {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "Chromium is needed for the console tests and was not found at {CHROMIUM}: install it with `apt-get install -y chromium` (Debian's package; .ci/run does this)"
    );
    let profile = tempfile::tempdir().expect("profile dir");
    let config = BrowserConfig::builder()
        .chrome_executable(CHROMIUM)
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(1280, 900)
        .args([
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ])
        .build()
        .expect("browser config");
    let (browser, mut handler) = Browser::launch(config).await.expect("launch chromium");
    let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
    Chromium {
        browser,
        _handler: handler,
        _profile: profile,
    }
}

/// Evaluates `js` until it is truthy (the page polls the API on its own clock).
async fn wait_for(page: &Page, js: &str, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value: Value = page
            .evaluate(js)
            .await
            .ok()
            .and_then(|r| r.into_value().ok())
            .unwrap_or(Value::Null);
        let truthy = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({js})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn eval(page: &Page, js: &str) -> Value {
    page.evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or(Value::Null)
}

async fn screenshot(page: &Page, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    page.save_screenshot(
        ScreenshotParams::builder().full_page(true).build(),
        dir.join(format!("{name}.png")),
    )
    .await
    .expect("screenshot");
}

/// A priced upstream answering every prompt with "SUMMARY: ok".
async fn upstream() -> Mock {
    completion_upstream("SUMMARY: ok", 100, 50).await
}

fn config(up: &Mock) -> ConfigDir {
    let cfg = ConfigDir::new(&format!(
        "[server]\napi_keys_env = [\"{ADMIN_ENV}\"]\n[routing]\nretries = 0\n[groups]\nfast = [\"up/priced\", \"echo/echo\"]\n"
    ));
    cfg.write(".env", &format!("{KEY_ENV}={KEY}\n{ADMIN_ENV}={ADMIN}\n"));
    cfg.provider(
        "up",
        &up.url,
        "fallback_to = \"echo\"\n[models.priced]\ncost_input_per_1m = 3.0\ncost_output_per_1m = 15.0\ncontext_tokens = 128000\n",
    );
    cfg.write(
        "providers.d/echo.toml",
        "adapter = \"echo\"\nmodels = [\"echo\"]\ndefault_model = \"echo\"\n",
    );
    cfg.write(
        "tools.d/summarize.toml",
        "description = \"Summarize a text\"\nmodel = \"up/priced\"\nprompt = \"Summarize: {{ text }}\"\n[input]\ntype = \"object\"\nrequired = [\"text\"]\n[input.properties.text]\ntype = \"string\"\ndescription = \"The text\"\n",
    );
    cfg
}

#[tokio::test]
async fn the_console_shows_the_running_gateway_and_stays_live() {
    let up = upstream().await;
    let cfg = config(&up);
    let server = Server::start_watching(&cfg).await;
    for (model, project) in [
        ("up/priced", "search"),
        ("up/priced", "search"),
        ("echo", "ops"),
    ] {
        let r = server
            .client
            .post(format!("{}/v1/chat/completions", server.url))
            .bearer_auth(ADMIN)
            .header("x-llmhub-project", project)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
    }
    server.hub.ledger().expect("ledger").flush().await;

    let chrome = chromium().await;
    let page = chrome
        .browser
        .new_page(format!("{}/ui", server.url))
        .await
        .expect("open /ui");

    // No key: the login, and no data in the page.
    wait_for(
        &page,
        "!document.querySelector('#login').hidden",
        "the login form",
    )
    .await;
    assert_eq!(
        eval(&page, "document.querySelector('#app').hidden").await,
        json!(true)
    );
    assert_eq!(
        eval(
            &page,
            "document.querySelectorAll('#providers tbody tr').length"
        )
        .await,
        json!(0)
    );
    screenshot(&page, "login").await;

    // A wrong key: still the login, saying the key was refused.
    eval(&page, "document.querySelector('#login-key').value = 'wrong'; document.querySelector('#login-submit').click(); true").await;
    wait_for(
        &page,
        "document.querySelector('#login-message').textContent.includes('refused')",
        "the refusal",
    )
    .await;
    assert_eq!(
        eval(&page, "document.querySelector('#app').hidden").await,
        json!(true)
    );

    // The right key: the data, and the key only in session storage.
    eval(&page, &format!("document.querySelector('#login-key').value = '{ADMIN}'; document.querySelector('#login-submit').click(); true")).await;
    wait_for(
        &page,
        "document.querySelectorAll('#providers tbody tr').length >= 2",
        "the providers table",
    )
    .await;
    assert_eq!(
        eval(&page, "sessionStorage.getItem('llmhub-key')").await,
        json!(ADMIN)
    );
    assert!(
        !eval(&page, "location.href")
            .await
            .as_str()
            .unwrap_or("")
            .contains(ADMIN)
    );
    let providers = eval(
        &page,
        "[...document.querySelectorAll('#providers tbody tr')].map(r => r.innerText).join('\\n')",
    )
    .await;
    let providers = providers.as_str().unwrap_or("");
    assert!(
        providers.contains("up") && providers.contains("active") && providers.contains("echo"),
        "{providers}"
    );
    let chains = eval(&page, "document.querySelector('#chains').innerText").await;
    assert!(
        chains
            .as_str()
            .unwrap_or("")
            .contains("up/priced → echo/echo"),
        "{chains}"
    );
    let models = eval(&page, "document.querySelector('#models').innerText").await;
    assert!(
        models.as_str().unwrap_or("").contains("15"),
        "prices shown: {models}"
    );

    // Charts with data: the cost of the priced requests, split by model.
    let total = wait_for(
        &page,
        "Number(document.querySelector('#chart-cost svg')?.dataset.total || 0)",
        "cost chart data",
    )
    .await;
    let expected = 2.0 * (100.0 * 3.0 + 50.0 * 15.0) / 1e6;
    assert!(
        (total.as_f64().unwrap_or(0.0) - expected).abs() < 1e-9,
        "{total} vs {expected}"
    );
    assert!(
        eval(
            &page,
            "document.querySelectorAll('#chart-cost rect.bar').length"
        )
        .await
        .as_u64()
        .unwrap_or(0)
            >= 1
    );
    assert!(
        eval(
            &page,
            "document.querySelectorAll('#chart-tokens rect.bar').length"
        )
        .await
        .as_u64()
        .unwrap_or(0)
            >= 2
    );
    eval(&page, "const s = document.querySelector('#split'); s.value = 'project'; s.dispatchEvent(new Event('change')); true").await;
    wait_for(
        &page,
        "document.querySelector('#legend').innerText.includes('search')",
        "the legend by project",
    )
    .await;

    // Recent requests, and the filter.
    wait_for(
        &page,
        "document.querySelectorAll('#requests tbody tr').length === 3",
        "three recent rows",
    )
    .await;
    eval(&page, "const f = document.querySelector('#filter-project'); f.value = 'ops'; f.dispatchEvent(new Event('input')); true").await;
    assert_eq!(
        eval(
            &page,
            "document.querySelectorAll('#requests tbody tr').length"
        )
        .await,
        json!(1)
    );
    screenshot(&page, "overview").await;

    // A tool form generated from the schema, run for real.
    wait_for(
        &page,
        "document.querySelector('#tool-form textarea[name=text]')",
        "the tool form",
    )
    .await;
    eval(&page, "document.querySelector('#tool-form [name=text]').value = 'a long story'; document.querySelector('#tool-run').click(); true").await;
    wait_for(
        &page,
        "document.querySelector('#tool-result').textContent.includes('SUMMARY: ok')",
        "the tool's result",
    )
    .await;
    assert_eq!(
        up.seen()
            .last()
            .map(|s| s.body["messages"][0]["content"].clone()),
        Some(json!("Summarize: a long story"))
    );

    // A broken edit shows up without reloading the page, with its place.
    let mut reloads = server.hub.subscribe();
    cfg.write(
        "providers.d/broken.toml",
        "base_url = \"http://x\"\nmodels = [\"m\"]\ntimeout_s = \"soon\"\n",
    );
    assert!(matches!(
        next_reload(&mut reloads).await,
        llmhub::hub::ReloadEvent::Failed { .. }
    ));
    let error = wait_for(&page, "!document.querySelector('#reload-error').hidden && document.querySelector('#reload-error').textContent", "the reload error").await;
    assert!(
        error.as_str().unwrap_or("").contains("broken.toml:3:"),
        "{error}"
    );
    screenshot(&page, "reload-error").await;

    // A phone's width: nothing wider than the screen; tables scroll in their boxes.
    page.execute(SetDeviceMetricsOverrideParams::new(390, 844, 2.0, true))
        .await
        .expect("phone metrics");
    let fits = wait_for(
        &page,
        "document.documentElement.scrollWidth <= window.innerWidth + 1 ? 'yes' : ''",
        "a phone-width layout",
    )
    .await;
    assert_eq!(fits, json!("yes"));
    screenshot(&page, "phone").await;

    // Forgetting the key returns to the login and clears the page.
    eval(&page, "document.querySelector('#logout').click(); true").await;
    wait_for(&page, "!document.querySelector('#login').hidden && document.querySelectorAll('#providers tbody tr').length === 0", "the login again").await;
    assert_eq!(
        eval(&page, "sessionStorage.getItem('llmhub-key')").await,
        Value::Null
    );
}
