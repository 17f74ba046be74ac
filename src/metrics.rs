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
use rustc_hash::{FxHashMap, FxHasher};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, OnceLock, RwLock};

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

/// The series one answer updates, found once per label combination: each family is a
/// map behind a lock hashed with SipHash, and looking up five of them with freshly made
/// label sets was 3.4k instructions per answer (bench/README.md). Series appear in the
/// exposition when first updated, as before: those not every answer touches wait in a
/// `OnceLock`.
struct Series {
    surface: &'static str,
    status: &'static str,
    provider: Name,
    model: Name,
    requests: Counter,
    duration: Histogram,
    ttft: OnceLock<Histogram>,
    /// By the position of the kind in [`Observation::tokens`], with the kind it was made for.
    tokens: [OnceLock<(&'static str, Counter)>; 4],
    cost: OnceLock<Counter<f64, AtomicU64>>,
    answered: OnceLock<Counter>,
}

impl Series {
    fn is(&self, surface: &str, provider: &str, model: &str, status: &str) -> bool {
        self.surface == surface
            && self.status == status
            && *self.provider == provider
            && *self.model == model
    }
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
    /// By the hash of their labels; label values come from configuration, so this is as
    /// bounded as the families.
    series: RwLock<FxHashMap<u64, Vec<Arc<Series>>>>,
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
            series: RwLock::default(),
        }
    }

    fn series(
        &self,
        surface: &'static str,
        provider: &str,
        model: &str,
        status: &'static str,
    ) -> Arc<Series> {
        let mut hasher = FxHasher::default();
        (surface, provider, model, status).hash(&mut hasher);
        let key = hasher.finish();
        let found = |map: &FxHashMap<u64, Vec<Arc<Series>>>| {
            map.get(&key)?
                .iter()
                .find(|s| s.is(surface, provider, model, status))
                .cloned()
        };
        if let Some(series) = found(&self.series.read().unwrap_or_else(|e| e.into_inner())) {
            return series;
        }
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = found(&map) {
            return series;
        }
        let provider = Name::new(provider.to_string());
        let model = Name::new(model.to_string());
        let series = Arc::new(Series {
            requests: self
                .requests
                .get_or_create(&RequestLabels {
                    surface,
                    provider: provider.clone(),
                    model: model.clone(),
                    status,
                })
                .clone(),
            duration: self
                .duration
                .get_or_create(&LatencyLabels {
                    surface,
                    provider: provider.clone(),
                })
                .clone(),
            surface,
            status,
            provider,
            model,
            ttft: OnceLock::new(),
            tokens: Default::default(),
            cost: OnceLock::new(),
            answered: OnceLock::new(),
        });
        map.entry(key).or_default().push(series.clone());
        series
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
        let series = self.series(o.surface, provider, model, status);
        series.requests.inc();
        series.duration.observe(o.latency_s);
        if let Some(t) = o.ttft_s {
            series
                .ttft
                .get_or_init(|| {
                    self.ttft
                        .get_or_create(&ProviderLabel {
                            provider: series.provider.clone(),
                        })
                        .clone()
                })
                .observe(t);
        }
        for ((kind, n), slot) in o.tokens.into_iter().zip(&series.tokens) {
            if n == 0 {
                continue;
            }
            let make = || {
                let labels = TokenLabels {
                    provider: series.provider.clone(),
                    model: series.model.clone(),
                    kind,
                };
                (kind, self.tokens.get_or_create(&labels).clone())
            };
            match slot.get_or_init(make) {
                (made_for, counter) if *made_for == kind => counter.inc_by(n),
                // A caller that orders the kinds differently still counts right.
                _ => make().1.inc_by(n),
            };
        }
        if let Some(c) = o.cost_usd.filter(|c| *c > 0.0) {
            series
                .cost
                .get_or_init(|| {
                    self.cost
                        .get_or_create(&ModelLabels {
                            provider: series.provider.clone(),
                            model: series.model.clone(),
                        })
                        .clone()
                })
                .inc_by(c);
        }
        for (p, outcome) in o.attempts {
            if *p == **series.provider && *outcome == "answered" {
                series
                    .answered
                    .get_or_init(|| {
                        self.attempts
                            .get_or_create(&AttemptLabels {
                                provider: series.provider.clone(),
                                outcome,
                            })
                            .clone()
                    })
                    .inc();
                continue;
            }
            let provider = if *p == **series.provider {
                series.provider.clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn observation<'a>(
        model: &'a str,
        status: u16,
        tokens: [(&'static str, u64); 4],
        attempts: &'a [(String, &'static str)],
    ) -> Observation<'a> {
        Observation {
            surface: "openai",
            provider: "p",
            model,
            status,
            latency_s: 0.01,
            ttft_s: None,
            tokens,
            cost_usd: None,
            attempts,
        }
    }

    fn line<'a>(text: &'a str, starts: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(starts))
    }

    #[test]
    fn each_label_set_counts_on_its_own_series() {
        let metrics = Metrics::new();
        let answered = [("q".to_string(), "failed"), ("p".to_string(), "answered")];
        let kinds = [("input", 5), ("cached", 0), ("output", 2), ("reasoning", 0)];
        metrics.observe(&observation("a", 200, kinds, &answered));
        metrics.observe(&observation("a", 200, kinds, &answered));
        metrics.observe(&observation("b", 503, kinds, &[]));
        // The same kinds in another order still count under their own names.
        let swapped = [("output", 1), ("cached", 0), ("input", 3), ("reasoning", 0)];
        metrics.observe(&observation("a", 200, swapped, &[]));
        let text = metrics.render(Scrape::default());
        let value = |starts: &str| {
            line(&text, starts)
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or_else(|| panic!("no line {starts} in\n{text}"))
                .to_string()
        };
        assert_eq!(
            value(r#"llmhub_requests_total{surface="openai",provider="p",model="a",status="2xx"}"#),
            "3"
        );
        assert_eq!(
            value(r#"llmhub_requests_total{surface="openai",provider="p",model="b",status="5xx"}"#),
            "1"
        );
        assert_eq!(
            value(r#"llmhub_tokens_total{provider="p",model="a",kind="input"}"#),
            "13"
        );
        assert_eq!(
            value(r#"llmhub_tokens_total{provider="p",model="a",kind="output"}"#),
            "5"
        );
        assert!(
            line(
                &text,
                r#"llmhub_tokens_total{provider="p",model="a",kind="cached"}"#
            )
            .is_none()
        );
        assert_eq!(
            value(r#"llmhub_upstream_attempts_total{provider="p",outcome="answered"}"#),
            "2"
        );
        assert_eq!(
            value(r#"llmhub_upstream_attempts_total{provider="q",outcome="failed"}"#),
            "2"
        );
        assert_eq!(
            value(r#"llmhub_request_duration_seconds_count{surface="openai",provider="p"}"#),
            "4"
        );
    }
}
