//! llmhub turns a folder of TOML files into an OpenAI-compatible LLM gateway.
//!
//! Files are read by [`config`], validated into an immutable [`registry::Registry`]
//! snapshot, swapped live by [`reload`], and served by [`http`]; requests are routed
//! through [`route`] to one of the wire formats in [`adapters`].

pub mod adapters;
pub mod chat;
pub mod cli;
pub mod config;
pub mod http;
pub mod hub;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod registry;
pub mod reload;
pub mod route;
pub mod store;
pub mod template;
pub mod tools;
pub mod upstream;
