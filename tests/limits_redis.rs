//! Limits shared through a real redis-server by two llmhub instances: one rpm across
//! both, a budget spent through one stops the other, and an outage follows the policy.

mod common;

use common::redis::Redis;
use common::*;
use serde_json::Value;

const REDIS_ENV: &str = "LLMHUB_TEST_REDIS_URL";

async fn upstream() -> Mock {
    completion_upstream("ok", 12, 5).await
}

/// An instance's folder: its own SQLite ledger, the shared Redis, a priced model
/// ($0.017 a request) and `echo`.
fn instance(up: &Mock, redis: &Redis, storage_extra: &str) -> ConfigDir {
    let cfg = ConfigDir::new(&format!(
        "[routing]\nretries = 0\n[storage]\nredis_url_env = \"{REDIS_ENV}\"\n{storage_extra}\n"
    ));
    cfg.write(
        ".env",
        &format!("{KEY_ENV}={KEY}\n{REDIS_ENV}={}\n", redis.url()),
    );
    cfg.provider(
        "up",
        &up.url,
        "[models.priced]\ncost_input_per_1m = 1000.0\ncost_output_per_1m = 1000.0\n",
    );
    cfg.echo();
    cfg
}

/// Gives `to` the same key file as `from`.
fn share_key(from: &ConfigDir, to: &ConfigDir, name: &str) {
    let rel = format!("keys.d/{name}.toml");
    to.write(
        &rel,
        &std::fs::read_to_string(from.path(&rel)).expect("key file"),
    );
}

#[tokio::test]
async fn two_instances_enforce_one_rpm_and_one_budget_together() {
    let redis = Redis::start();
    let up = upstream().await;
    let one = instance(&up, &redis, "");
    let two = instance(&up, &redis, "");
    let key = new_key(&one, "shared", "search");
    limit_key(&one, "shared", "rpm = 10");
    share_key(&one, &two, "shared");
    let a = Server::start(&one).await;
    let b = Server::start(&two).await;

    let mut statuses = Vec::new();
    for i in 0..14 {
        let server = if i % 2 == 0 { &a } else { &b };
        statuses.push(chat_as(server, &key, "echo").await.status().as_u16());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 10, "one rpm of 10 across both instances: {statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    let refused = chat_as(&b, &key, "echo").await;
    assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
    assert!(refused.headers().contains_key("retry-after"));

    // A budget spent through one instance stops the other.
    let spender = new_key(&one, "spender", "search");
    limit_key(&one, "spender", "budget_usd = { day = 0.06 }");
    share_key(&one, &two, "spender");
    a.stop().await;
    b.stop().await;
    let a = Server::start(&one).await;
    let b = Server::start(&two).await;
    let mut ok = 0;
    while chat_as(&a, &spender, "up/priced").await.status() == 200 {
        ok += 1;
        assert!(ok < 10, "the budget never stopped the key");
    }
    assert!(ok >= 1);
    let other = chat_as(&b, &spender, "up/priced").await;
    assert_eq!(
        other.status(),
        429,
        "the other instance sees the same spend"
    );
    let error: Value = other.json().await.expect("json");
    assert_eq!(error["error"]["code"], "insufficient_quota");
    let health: Value = get_as(&b, &key, "/health")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(health["limits"]["store"], "redis");
    assert_eq!(health["limits"]["state"], "ok");
}

#[tokio::test]
async fn when_redis_is_down_rates_count_per_instance_and_budgets_follow_the_policy() {
    let mut redis = Redis::start();
    let up = upstream().await;
    let deny = instance(&up, &redis, "");
    let allow = instance(&up, &redis, "limits_when_store_down = \"allow\"");
    let rated = new_key(&deny, "rated", "default");
    limit_key(&deny, "rated", "rpm = 100");
    let budgeted = new_key(&deny, "budgeted", "default");
    limit_key(&deny, "budgeted", "budget_usd = { month = 5.0 }");
    share_key(&deny, &allow, "budgeted");
    let strict = Server::start(&deny).await;
    let lenient = Server::start(&allow).await;
    assert_eq!(chat_as(&strict, &budgeted, "up/priced").await.status(), 200);

    redis.stop();
    let r = chat_as(&strict, &rated, "echo").await;
    assert_eq!(
        r.status(),
        200,
        "a rate limit falls back to this instance's counters"
    );
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "100");
    let health: Value = get_as(&strict, &rated, "/health")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["limits"]["state"], "down");
    assert_eq!(health["limits"]["when_store_down"], "deny");
    assert!(health["limits"]["last_error"].is_string(), "{health}");

    let refused = chat_as(&strict, &budgeted, "up/priced").await;
    assert_eq!(refused.status(), 503);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "limits_unavailable");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("limits_when_store_down"),
        "{error}"
    );
    assert_eq!(
        chat_as(&lenient, &budgeted, "up/priced").await.status(),
        200,
        "`allow` counts the budget here while Redis is away"
    );
    // A key with no limits never notices.
    let free = new_key(&deny, "free", "default");
    let restarted = {
        strict.stop().await;
        Server::start(&deny).await
    };
    assert_eq!(chat_as(&restarted, &free, "echo").await.status(), 200);
}
