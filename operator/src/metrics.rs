//! Prometheus metrics of the reconciler, served on the admin port's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `Error::metric_label` of the failure.
    pub error: String,
}

/// Reconcile counters and the duration histogram. Clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    pub reconciliations: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciliations: Counter::default(),
            failures: Family::default(),
            // 10 ms to about 20 s: one reconcile is a dozen API requests.
            duration: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.01, 2.0, 12,
            )),
        }
    }
}

impl Metrics {
    /// Registers the series under the `telemetry_operator` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("telemetry_operator");
        registry.register(
            "reconciliations",
            "Reconciles started",
            self.reconciliations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles failed, by error kind",
            self.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile in seconds",
            self.duration.clone(),
        );
        self
    }

    pub fn record_failure(&self, error: &crate::Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: error.metric_label().to_owned(),
            })
            .inc();
    }
}
