//! A minimal, fast OpenAI-compatible upstream for the load benchmark in bench/.
//! It answers every POST with the same small chat.completion, so what is measured
//! is llmhub's overhead, not the mock's.
#![allow(
    clippy::print_stdout,
    reason = "prints its address for the bench script"
)]

use axum::Router;
use axum::http::header;
use axum::routing::post;

const REPLY: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1760000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29}}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9101".to_string());
    let app = Router::new().route(
        "/v1/chat/completions",
        post(|| async { ([(header::CONTENT_TYPE, "application/json")], REPLY) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("mock upstream on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
