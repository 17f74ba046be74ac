//! The built-in MCP tools: `chat_completion` (described from the live snapshot),
//! `list_models`, `get_model_info`, `health_check` and `list_active_tools`.

use std::time::Instant;

use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock, Tool};
use serde_json::{Value, json};

use super::object;
use crate::hub::Hub;
use crate::registry::{Model, Principal, Provider, Registry, Status};
use crate::tools;

fn model_line(p: &Provider, m: &Model) -> String {
    let mut facts = Vec::new();
    if let Some(c) = m.context_tokens {
        facts.push(format!("{}k context", c / 1000));
    }
    if let Some(o) = m.max_output_tokens {
        facts.push(format!("{}k output", o / 1000));
    }
    let mut line = format!("- {}/{}", p.name, m.id);
    if !facts.is_empty() {
        line.push_str(&format!(": {}", facts.join(", ")));
    }
    if !m.capabilities.is_empty() {
        line.push_str(&format!(
            "{} {}",
            if facts.is_empty() { ":" } else { ";" },
            m.capabilities.join(", ")
        ));
    }
    line
}

/// `chat_completion`'s description: what is active right now, so the calling model can choose.
fn chat_description(registry: &Registry) -> String {
    let mut text = String::from(
        "Ask any model configured in llmhub, with its fallbacks, retries and circuit breakers. \
         Pass `prompt` (one user message) or `messages`; `model` takes a model address \
         (provider/model, a group, a provider, or a model id)",
    );
    match &registry.settings.default_model {
        Some(d) => text.push_str(&format!(" and defaults to `{d}`.")),
        None => text.push('.'),
    }
    text.push_str("\n\nActive models:");
    let mut any = false;
    for p in registry.providers.values().filter(|p| p.is_active()) {
        for m in &p.models {
            text.push('\n');
            text.push_str(&model_line(p, m));
            any = true;
        }
    }
    if !any {
        text.push_str("\n(none: no provider has its key set)");
    }
    if registry.usable_groups().next().is_some() {
        text.push_str("\n\nGroups (tried in order, first healthy answers):");
        for (name, chain) in registry.usable_groups() {
            let chain: Vec<String> = chain
                .iter()
                .map(|t| format!("{}/{}", t.provider, t.model))
                .collect();
            text.push_str(&format!("\n- {name}: {}", chain.join(", ")));
        }
    }
    if let Some(extra) = &registry.settings.mcp_description {
        text.push_str("\n\n");
        text.push_str(extra);
    }
    text
}

pub fn tools(registry: &Registry) -> Vec<Tool> {
    let (chat_schema, _) = tools::chat_completion_schema();
    let chat_output = json!({"type": "object", "properties": {
        "content": {"type": "string"}, "model": {"type": "string"},
        "provider": {"type": "string"}, "usage": {}}});
    vec![
        Tool::new(
            "chat_completion",
            chat_description(registry),
            std::sync::Arc::new(chat_schema.clone()),
        )
        .with_raw_output_schema(object(&chat_output)),
        Tool::new(
            "list_models",
            "List the configured models with their provider, limits, costs and capabilities, active or not and why; optionally only one group's chain.",
            object(&json!({"type": "object", "properties": {
                "group": {"type": "string", "description": "Only the models of this group, in chain order."}}})),
        ),
        Tool::new(
            "get_model_info",
            "Details of one model address: the provider(s) it resolves to, context and output limits, costs per million tokens, capabilities, whether it is active and its circuit state.",
            object(
                &json!({"type": "object", "required": ["model"], "properties": {
                "model": {"type": "string", "description": "provider/model, a group, a provider or a model id"}}}),
            ),
        ),
        Tool::new(
            "health_check",
            "The gateway's health: uptime, configuration generation and last reload error, each provider's state and circuit.",
            object(&json!({"type": "object", "properties": {}})),
        ),
        Tool::new(
            "count_tokens",
            "Count input tokens for a model: Anthropic and Gemini models are counted by the provider's own endpoint, others with a local BPE estimate; the answer says which (`method`).",
            object(&json!({"type": "object", "properties": {
                "model": {"type": "string", "description": "A model address; default: the gateway's default model."},
                "text": {"type": "string", "description": "A text to count; use this or `messages`."},
                "messages": {"type": "array", "description": "OpenAI-style chat messages to count.", "items": {"type": "object"}}
            }})),
        ),
        Tool::new(
            "get_usage",
            "Requests, tokens (input, cached, output, reasoning) and cost in USD from the usage ledger, for a period, optionally one project or agent, grouped as asked. Unpriced requests are counted apart, never as free.",
            object(&json!({"type": "object", "properties": {
                "period": {"type": "string", "enum": crate::store::Period::NAMES, "description": "day (today, UTC), week (the last 7 days), month (this calendar month) or all. Default: month."},
                "project_id": {"type": "string"},
                "agent_id": {"type": "string"},
                "group_by": {"type": "array", "items": {"type": "string", "enum": crate::store::Dim::ALL.map(|d| d.name())}}
            }, "additionalProperties": false})),
        ),
        Tool::new(
            "list_active_tools",
            "Every prompt tool, whether it is offered and why not, and the environment variable names its providers need with whether each is set (never the values).",
            object(&json!({"type": "object", "properties": {}})),
        ),
    ]
}

/// A built-in tool's answer: `structuredContent`, and the same JSON as compact text for
/// the model (indentation would cost it tokens and say nothing more).
pub(crate) fn json_result(value: Value) -> CallToolResponse {
    let text = value.to_string();
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result.into()
}

fn error_result(message: String) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(message)]).into()
}

fn model_json(hub: &Hub, p: &Provider, m: &Model) -> Value {
    let (active, reason) = match &p.status {
        Status::Active => (true, None),
        Status::Inactive(r) => (false, Some(r.clone())),
    };
    json!({
        "id": format!("{}/{}", p.name, m.id),
        "provider": p.name,
        "model": m.id,
        "adapter": p.adapter.as_str(),
        "active": active,
        "reason": reason,
        "default": p.default_model.as_deref() == Some(m.id.as_str()),
        "aliases": m.aliases,
        "context_tokens": m.context_tokens,
        "max_output_tokens": m.max_output_tokens,
        "cost_input_per_1m": m.cost_input_per_1m,
        "cost_output_per_1m": m.cost_output_per_1m,
        "capabilities": m.capabilities,
        "fallback_to": p.fallback_to,
        "circuit": hub.breakers.view(&p.name, Instant::now()),
    })
}

/// Answers a built-in tool, or `None` when `name` is not one of these four. Model
/// tools show a key only the models it may use.
pub fn call(
    hub: &Hub,
    registry: &Registry,
    principal: &Principal,
    name: &str,
    args: &Value,
) -> Option<CallToolResponse> {
    Some(match name {
        "list_models" => {
            let models: Vec<Value> = match args.get("group").and_then(Value::as_str) {
                Some(group) if !principal.allows_model(registry, group) => {
                    return Some(error_result(format!(
                        "key `{}` may not use group `{group}`",
                        principal.key_name()
                    )));
                }
                Some(group) => match registry.groups.get(group) {
                    Some(chain) => targets_json(hub, registry, chain),
                    None => {
                        let known: Vec<&String> = registry.groups.keys().collect();
                        return Some(error_result(format!(
                            "unknown group `{group}`; groups: {}",
                            known
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                },
                None => registry
                    .providers
                    .values()
                    .flat_map(|p| p.models.iter().map(move |m| (p, m)))
                    .filter(|(p, m)| {
                        principal.allows_model(registry, &format!("{}/{}", p.name, m.id))
                    })
                    .map(|(p, m)| model_json(hub, p, m))
                    .collect(),
            };
            let groups: serde_json::Map<String, Value> = registry
                .usable_groups()
                .filter(|(name, _)| principal.allows_model(registry, name))
                .map(|(name, chain)| {
                    let chain: Vec<String> = chain
                        .iter()
                        .map(|t| format!("{}/{}", t.provider, t.model))
                        .collect();
                    (name.clone(), json!(chain))
                })
                .collect();
            json_result(
                json!({"models": models, "groups": groups, "default_model": registry.settings.default_model}),
            )
        }
        "get_model_info" => {
            let Some(address) = args.get("model").and_then(Value::as_str) else {
                return Some(error_result(
                    "invalid arguments:\n- /model: a model address is required".into(),
                ));
            };
            if !principal.allows_model(registry, address) {
                return Some(error_result(format!(
                    "key `{}` may not use model `{address}`",
                    principal.key_name()
                )));
            }
            match registry.chain(address) {
                Ok(chain) => {
                    let targets = targets_json(hub, registry, &chain);
                    json_result(json!({"address": address, "chain": targets}))
                }
                Err(e) => error_result(e.to_string()),
            }
        }
        "health_check" => json_result(serde_json::to_value(hub.health()).unwrap_or_default()),
        "list_active_tools" => {
            let tools: Vec<Value> = registry
                .tools
                .values()
                .map(|t| {
                    let availability = t.availability(registry);
                    let keys: Vec<Value> = t
                        .env_keys(registry)
                        .into_iter()
                        .map(|(name, set)| json!({"name": name, "set": set}))
                        .collect();
                    json!({
                        "name": t.name,
                        "kind": t.kind.name(),
                        "description": t.offered_description(registry),
                        "model": t.model.as_deref().or(registry.settings.default_model.as_deref()),
                        "active": availability.is_ok(),
                        "reason": availability.err(),
                        "env_keys": keys,
                        "structured_output": t.output_schema.is_some(),
                    })
                })
                .collect();
            json_result(json!({"tools": tools}))
        }
        _ => return None,
    })
}

/// Each target of a chain, with its provider's state and the model's metadata.
fn targets_json(hub: &Hub, registry: &Registry, chain: &[crate::registry::Target]) -> Vec<Value> {
    chain
        .iter()
        .filter_map(|t| {
            let p = registry.providers.get(&t.provider)?;
            let m = p
                .model(&t.model)
                .cloned()
                .unwrap_or_else(|| bare_model(&t.model));
            Some(model_json(hub, p, &m))
        })
        .collect()
}

/// A model addressed as provider/model without being listed: no metadata to show.
fn bare_model(id: &str) -> Model {
    Model {
        id: id.to_string(),
        aliases: Vec::new(),
        context_tokens: None,
        max_output_tokens: None,
        cost_input_per_1m: None,
        cost_cached_input_per_1m: None,
        cost_output_per_1m: None,
        cost_cache_write_per_1m: None,
        capabilities: Vec::new(),
    }
}
