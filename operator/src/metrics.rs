//! The operator's own Prometheus metrics, on one owned registry: reconciles, their failures
//! and their duration. Labels never carry object names (unbounded cardinality).

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The operator's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `hmq_operator_reconciles_total{result}`: reconciles by result (ok, invalid, waiting,
    /// error).
    pub reconciles: IntCounterVec,
    /// `hmq_operator_reconcile_errors_total{reason}`: failed reconciles, by error kind.
    pub errors: IntCounterVec,
    /// `hmq_operator_reconcile_duration_seconds`: how long reconciles take.
    pub duration: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics on a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "hmq_operator_reconciles_total",
                "Reconciles of MqttClusters, by result",
            ),
            &["result"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let errors = IntCounterVec::new(
            Opts::new(
                "hmq_operator_reconcile_errors_total",
                "Reconciles that failed and will be retried, by error kind",
            ),
            &["reason"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "hmq_operator_reconcile_duration_seconds",
                "Duration of reconciles of MqttClusters",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &[],
        )
        .unwrap_or_else(|_| unreachable_metric());
        for collector in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
        ] {
            // Names are constants and distinct: registration cannot fail.
            let _ = registry.register(collector);
        }
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
        }
    }

    /// Counts one reconcile with its result and duration.
    pub fn observe(&self, result: &str, elapsed: Duration) {
        self.reconciles.with_label_values(&[result]).inc();
        self.duration
            .with_label_values::<&str>(&[])
            .observe(elapsed.as_secs_f64());
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Metric options are constants checked by the tests; an invalid one is a programming error.
#[allow(clippy::panic)]
fn unreachable_metric<T>() -> T {
    panic!("invalid metric definition")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let metrics = Metrics::new();
        metrics.observe("ok", Duration::from_millis(20));
        metrics.errors.with_label_values(&["kube"]).inc();
        let text = metrics.render();
        assert!(
            text.contains("hmq_operator_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("hmq_operator_reconcile_errors_total{reason=\"kube\"} 1"));
        assert!(text.contains("hmq_operator_reconcile_duration_seconds_count 1"));
    }
}
