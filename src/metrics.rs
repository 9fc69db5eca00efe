//! Prometheus metrics (prometheus-client), served on `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Secrets Manager API calls, as AWS bills them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: &'static str,
    /// `success`, or the error code / `transport`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BindingLabels {
    pub namespace: String,
    pub binding: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryLabels {
    pub namespace: String,
    pub binding: String,
    pub state: String,
}

pub type Calls = Family<CallLabels, Counter>;

/// Secrets Manager change events taken from the queue, by outcome: `received` (every message),
/// then one of `relevant`, `irrelevant`, `duplicate`, `invalid`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub outcome: &'static str,
}

/// What the operator keeps in memory, by cache: the shared Secrets Manager view's `listings`,
/// `versions` and `values`, the `bindings` it tracks and the `owned_secrets` it indexes. Under
/// churn they return to their baseline (tests/churn.rs).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
}

/// Every metric of the operator.
pub struct Metrics {
    pub registry: Registry,
    /// Reconciles of all bindings (per-binding histograms would dominate the memory of an
    /// operator with thousands of bindings).
    pub reconcile_duration: Histogram,
    /// Reconciles per binding.
    pub reconciles: Family<BindingLabels, Counter>,
    pub reconcile_errors: Family<BindingLabels, Counter>,
    pub entries: Family<EntryLabels, Gauge>,
    pub rollouts: Family<BindingLabels, Counter>,
    pub conflicts: Family<BindingLabels, Counter>,
    /// Deployment writes (each combines every binding that targets the Deployment).
    pub workload_writes: Counter,
    /// Change events (EventBridge → SQS), by outcome.
    pub events: Family<EventLabels, Counter>,
    /// From an event's arrival in the queue to the refreshed managed Secret of a binding.
    pub event_to_secret: Histogram,
    /// From an event's arrival in the queue to the Deployments carrying the new content.
    pub event_to_rollout: Histogram,
    /// Sizes of the operator's caches, updated every second.
    pub cache_entries: Family<CacheLabels, Gauge>,
}

impl Metrics {
    /// Registers the operator's metrics, including the Secrets Manager call counter `calls`, the
    /// received value bytes and the time calls waited for the client-side rate limit.
    pub fn new(
        calls: Calls,
        value_bytes: Counter,
        rate_limit_wait: crate::secretsmanager::Waited,
    ) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("airflow_secrets");
        registry.register(
            "secretsmanager_calls",
            "Secrets Manager API calls by operation and outcome",
            calls,
        );
        registry.register(
            "secretsmanager_value_bytes",
            "Bytes of secret values received from Secrets Manager",
            value_bytes,
        );
        registry.register(
            "secretsmanager_rate_limit_wait_seconds",
            "Seconds Secrets Manager calls waited for the client-side rate limit \
             (--secrets-manager-qps / --secrets-manager-burst)",
            rate_limit_wait,
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile (all bindings)",
            reconcile_duration.clone(),
        );
        let reconciles = Family::default();
        registry.register(
            "reconciles",
            "Reconciles of each binding",
            reconciles.clone(),
        );
        let reconcile_errors = Family::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed",
            reconcile_errors.clone(),
        );
        let entries = Family::default();
        registry.register(
            "entries",
            "Entries of each binding by state",
            entries.clone(),
        );
        let rollouts = Family::default();
        registry.register(
            "rollouts",
            "Deployment rollouts triggered by new content",
            rollouts.clone(),
        );
        let conflicts = Family::default();
        registry.register(
            "conflicts",
            "Reconciles that found a conflict (Secret not owned, fields owned by another manager)",
            conflicts.clone(),
        );
        let workload_writes = Counter::default();
        registry.register(
            "workload_writes",
            "Deployment writes; each combines every binding that targets the Deployment",
            workload_writes.clone(),
        );
        let events = Family::default();
        registry.register(
            "events",
            "Secrets Manager change events taken from the SQS queue, by outcome (received, relevant, irrelevant, duplicate, invalid)",
            events.clone(),
        );
        let event_to_secret = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "event_to_secret_seconds",
            "From a change event's arrival in the queue to the binding's refreshed Secret",
            event_to_secret.clone(),
        );
        let event_to_rollout = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "event_to_rollout_seconds",
            "From a change event's arrival in the queue to the Deployments carrying the new content",
            event_to_rollout.clone(),
        );
        let cache_entries = Family::default();
        registry.register(
            "cache_entries",
            "Entries of the operator's caches (listings, versions, values of the Secrets Manager view; bindings tracked; owned Secrets indexed)",
            cache_entries.clone(),
        );
        Arc::new(Metrics {
            cache_entries,
            registry,
            events,
            event_to_secret,
            event_to_rollout,
            workload_writes,
            reconcile_duration,
            reconciles,
            reconcile_errors,
            entries,
            rollouts,
            conflicts,
        })
    }

    /// Removes the series of a deleted binding.
    pub fn forget(&self, binding: &BindingLabels) {
        self.reconciles.remove(binding);
        self.reconcile_errors.remove(binding);
        self.rollouts.remove(binding);
        self.conflicts.remove(binding);
        for state in crate::plan::status::ALL_STATES {
            self.entries.remove(&EntryLabels {
                namespace: binding.namespace.clone(),
                binding: binding.binding.clone(),
                state: format!("{state:?}"),
            });
        }
    }

    /// Records the caches' sizes.
    pub fn set_cache_sizes(&self, sizes: &[(&'static str, usize)]) {
        for (cache, n) in sizes {
            self.cache_entries
                .get_or_create(&CacheLabels { cache })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
