//! The Prometheus registry: other modules record through [`Metrics`], only it renders.
//! Label values come from configuration only (provider and listed model names, fixed
//! surfaces and outcomes), never from what a client sent, so no client can grow the
//! label set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

/// What a model label says when the address named a model providers.d does not list.
pub const UNLISTED: &str = "unlisted";

/// A provider or model name: made once per observation and shared by the label sets of
/// every family it updates (label sets are owned keys; fixed values are `&'static str`).
type Name = Arc<String>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    surface: &'static str,
    provider: Name,
    model: Name,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    surface: &'static str,
    provider: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: Name,
    model: Name,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    provider: Name,
    model: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: Name,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// One observed request, in configuration terms (see the module doc).
pub struct Observation<'a> {
    pub surface: &'static str,
    pub provider: &'a str,
    pub model: &'a str,
    pub status: u16,
    pub latency_s: f64,
    pub ttft_s: Option<f64>,
    pub tokens: [(&'static str, u64); 4],
    pub cost_usd: Option<f64>,
    /// Each attempt's provider and outcome (`answered`, `failed`, `skipped`).
    pub attempts: &'a [(String, &'static str)],
}

/// State read at scrape time rather than counted as it happens.
#[derive(Default)]
pub struct Scrape {
    pub generation: u64,
    /// Provider and circuit state: 0 closed, 1 half-open, 2 open.
    pub circuits: Vec<(String, i64)>,
    pub backends: Vec<(String, bool)>,
    pub ledger_written: u64,
    pub ledger_dropped: u64,
    pub ledger_queued: u64,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<LatencyLabels>,
    ttft: HistogramFamily<ProviderLabel>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    attempts: Family<AttemptLabels, Counter>,
    circuit: Family<ProviderLabel, Gauge>,
    reloads: Family<OutcomeLabel, Counter>,
    limited: Family<LimitLabel, Counter>,
    generation: Gauge,
    backend_up: Family<BackendLabel, Gauge>,
    ledger_written: Gauge,
    ledger_dropped: Gauge,
    ledger_queued: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("llmhub");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by surface, provider, model and status class",
            requests.clone(),
        );
        let duration: HistogramFamily<LatencyLabels> = Family::new_with_constructor(seconds);
        registry.register(
            "request_duration_seconds",
            "Time from request to the whole answer",
            duration.clone(),
        );
        let ttft: HistogramFamily<ProviderLabel> = Family::new_with_constructor(seconds);
        registry.register(
            "time_to_first_token_seconds",
            "Time from request to a stream's first chunk",
            ttft.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens by provider, model and kind (input, cached, output, reasoning)",
            tokens.clone(),
        );
        let cost = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        registry.register("cost_usd", "Cost in USD of priced answers", cost.clone());
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Upstream attempts by provider and outcome (answered, failed, skipped)",
            attempts.clone(),
        );
        let circuit = Family::<ProviderLabel, Gauge>::default();
        registry.register(
            "circuit_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
            circuit.clone(),
        );
        let limited = Family::<LimitLabel, Counter>::default();
        registry.register(
            "limited",
            "Requests refused by a key or project limit, by limit (requests, tokens, parallel, budget, store_down)",
            limited.clone(),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "reloads",
            "Configuration reloads by outcome (applied, unchanged, failed)",
            reloads.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "config_generation",
            "The serving configuration's generation",
            generation.clone(),
        );
        let backend_up = Family::<BackendLabel, Gauge>::default();
        registry.register(
            "backend_up",
            "Backend MCP server connected (1) or not (0)",
            backend_up.clone(),
        );
        let ledger_written = Gauge::default();
        registry.register(
            "ledger_rows_written",
            "Usage ledger rows written",
            ledger_written.clone(),
        );
        let ledger_dropped = Gauge::default();
        registry.register(
            "ledger_rows_dropped",
            "Usage ledger rows dropped because the queue was full",
            ledger_dropped.clone(),
        );
        let ledger_queued = Gauge::default();
        registry.register(
            "ledger_rows_queued",
            "Usage ledger rows waiting to be written",
            ledger_queued.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            ttft,
            tokens,
            cost,
            attempts,
            circuit,
            reloads,
            limited,
            generation,
            backend_up,
            ledger_written,
            ledger_dropped,
            ledger_queued,
        }
    }

    pub fn observe(&self, o: &Observation<'_>) {
        let provider = if o.provider.is_empty() {
            "none"
        } else {
            o.provider
        };
        let model = if o.model.is_empty() { "none" } else { o.model };
        let status = match o.status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        let provider = Name::new(provider.to_string());
        let model = Name::new(model.to_string());
        self.requests
            .get_or_create(&RequestLabels {
                surface: o.surface,
                provider: provider.clone(),
                model: model.clone(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&LatencyLabels {
                surface: o.surface,
                provider: provider.clone(),
            })
            .observe(o.latency_s);
        if let Some(t) = o.ttft_s {
            self.ttft
                .get_or_create(&ProviderLabel {
                    provider: provider.clone(),
                })
                .observe(t);
        }
        for (kind, n) in o.tokens {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        provider: provider.clone(),
                        model: model.clone(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        if let Some(c) = o.cost_usd.filter(|c| *c > 0.0) {
            self.cost
                .get_or_create(&ModelLabels {
                    provider: provider.clone(),
                    model: model.clone(),
                })
                .inc_by(c);
        }
        for (p, outcome) in o.attempts {
            let provider = if *p == *provider {
                provider.clone()
            } else {
                Name::new(p.clone())
            };
            self.attempts
                .get_or_create(&AttemptLabels { provider, outcome })
                .inc();
        }
    }

    /// A request refused by a limit; `limit` is one of a fixed set.
    pub fn limited(&self, limit: &'static str) {
        self.limited.get_or_create(&LimitLabel { limit }).inc();
    }

    pub fn reload(&self, outcome: &str) {
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The text exposition, with the scrape-time state filled in first.
    pub fn render(&self, scrape: Scrape) -> String {
        self.generation
            .set(i64::try_from(scrape.generation).unwrap_or(i64::MAX));
        self.circuit.clear();
        for (provider, state) in scrape.circuits {
            self.circuit
                .get_or_create(&ProviderLabel {
                    provider: Name::new(provider),
                })
                .set(state);
        }
        self.backend_up.clear();
        for (backend, up) in scrape.backends {
            self.backend_up
                .get_or_create(&BackendLabel { backend })
                .set(i64::from(up));
        }
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.ledger_written.set(as_i64(scrape.ledger_written));
        self.ledger_dropped.set(as_i64(scrape.ledger_dropped));
        self.ledger_queued.set(as_i64(scrape.ledger_queued));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot render metrics");
        }
        out
    }
}
