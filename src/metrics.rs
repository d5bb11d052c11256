//! Every Prometheus metric churnwatch exports, with its name and help text,
//! in one place. Names start with `churnwatch_`; labels are low-cardinality
//! only (plan, segment, alert, status, topic, type, reason, partition,
//! lifecycle, risk): customer detail goes to the API and the alerts.

use std::collections::BTreeMap;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::engine::Snapshot;

/// Events read from an input topic, by topic and event type.
pub const EVENTS_CONSUMED: &str = "churnwatch_events_consumed_total";
/// Events the decoder rejected (sent to the dead-letter topic), by topic and reason.
pub const EVENTS_REJECTED: &str = "churnwatch_events_rejected_total";
/// Events applied too late to be reordered, by topic.
pub const EVENTS_LATE: &str = "churnwatch_events_late_total";
/// Events dropped as duplicates of an earlier `event_id`, by topic.
pub const EVENTS_DUPLICATE: &str = "churnwatch_events_duplicate_total";
/// Events replayed to rebuild partition state after an assignment, by topic.
pub const EVENTS_REPLAYED: &str = "churnwatch_events_replayed_total";
/// Consumer lag per input partition (fetch high watermark minus position).
pub const CONSUMER_LAG: &str = "churnwatch_consumer_lag";
/// Seconds from consuming an event to the broker acknowledging the alert it caused.
pub const PROCESSING_LATENCY: &str = "churnwatch_processing_latency_seconds";
/// Alert transitions acknowledged by the broker, by alert and status.
pub const ALERTS_PRODUCED: &str = "churnwatch_alerts_produced_total";
/// Failed produce attempts (retried), by topic and reason.
pub const PRODUCE_ERRORS: &str = "churnwatch_produce_errors_total";
/// Records written to the dead-letter topic, by reason.
pub const DLQ_PRODUCED: &str = "churnwatch_dlq_produced_total";
/// Consumer group rebalances, by type (assign, revoke, error).
pub const REBALANCES: &str = "churnwatch_rebalances_total";
/// Offset commits that failed.
pub const COMMIT_ERRORS: &str = "churnwatch_commit_errors_total";
/// Partition numbers currently assigned and live.
pub const PARTITIONS_LIVE: &str = "churnwatch_partitions_live";
/// Customers tracked by this instance.
pub const CUSTOMERS_TRACKED: &str = "churnwatch_customers_tracked";
/// Approximate bytes of customer state held by this instance.
pub const STATE_BYTES: &str = "churnwatch_state_bytes";
/// Customers per plan, segment and lifecycle stage.
pub const CUSTOMERS: &str = "churnwatch_customers";
/// Customers per plan, segment and risk level.
pub const CUSTOMERS_BY_RISK: &str = "churnwatch_customers_by_risk";
/// Alerts currently firing per plan, segment and alert.
pub const ALERTS_FIRING: &str = "churnwatch_alerts_firing";
/// Monthly recurring revenue in minor units of the reporting currency, per plan and segment.
pub const MRR: &str = "churnwatch_mrr";
/// MRR of customers at risk, in minor units, per plan and segment.
pub const MRR_AT_RISK: &str = "churnwatch_mrr_at_risk";

/// Handles to every metric, registered in one [`Registry`].
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// See [`EVENTS_CONSUMED`].
    pub events_consumed: IntCounterVec,
    /// See [`EVENTS_REJECTED`].
    pub events_rejected: IntCounterVec,
    /// See [`EVENTS_LATE`].
    pub events_late: IntCounterVec,
    /// See [`EVENTS_DUPLICATE`].
    pub events_duplicate: IntCounterVec,
    /// See [`EVENTS_REPLAYED`].
    pub events_replayed: IntCounterVec,
    /// See [`CONSUMER_LAG`].
    pub consumer_lag: IntGaugeVec,
    /// See [`PROCESSING_LATENCY`].
    pub processing_latency: Histogram,
    /// See [`ALERTS_PRODUCED`].
    pub alerts_produced: IntCounterVec,
    /// See [`PRODUCE_ERRORS`].
    pub produce_errors: IntCounterVec,
    /// See [`DLQ_PRODUCED`].
    pub dlq_produced: IntCounterVec,
    /// See [`REBALANCES`].
    pub rebalances: IntCounterVec,
    /// See [`COMMIT_ERRORS`].
    pub commit_errors: IntCounter,
    /// See [`PARTITIONS_LIVE`].
    pub partitions_live: IntGauge,
    /// See [`CUSTOMERS_TRACKED`].
    pub customers_tracked: IntGauge,
    /// See [`STATE_BYTES`].
    pub state_bytes: IntGauge,
    customers: IntGaugeVec,
    customers_by_risk: IntGaugeVec,
    alerts_firing: IntGaugeVec,
    mrr: IntGaugeVec,
    mrr_at_risk: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

fn help(name: &str) -> &'static str {
    match name {
        EVENTS_CONSUMED => "Events read from an input topic, by topic and event type.",
        EVENTS_REJECTED => "Events rejected by the decoder and sent to the dead-letter topic.",
        EVENTS_LATE => "Events applied too late to be reordered.",
        EVENTS_DUPLICATE => "Events dropped as duplicates of an earlier event_id.",
        EVENTS_REPLAYED => "Events replayed to rebuild partition state after an assignment.",
        CONSUMER_LAG => "Messages between the fetch high watermark and the consumer position.",
        PROCESSING_LATENCY => {
            "Seconds from consuming an event to the broker acknowledging its alert."
        }
        ALERTS_PRODUCED => "Alert transitions acknowledged by the broker.",
        PRODUCE_ERRORS => "Failed produce attempts; each is retried.",
        DLQ_PRODUCED => "Records written to the dead-letter topic.",
        REBALANCES => "Consumer group rebalances.",
        COMMIT_ERRORS => "Offset commits that failed.",
        PARTITIONS_LIVE => "Partition numbers assigned, rebuilt and live.",
        CUSTOMERS_TRACKED => "Customers tracked by this instance.",
        STATE_BYTES => "Approximate bytes of customer state held by this instance.",
        CUSTOMERS => "Customers per plan, segment and lifecycle stage.",
        CUSTOMERS_BY_RISK => "Customers per plan, segment and risk level.",
        ALERTS_FIRING => "Alerts currently firing per plan, segment and alert.",
        MRR => "Monthly recurring revenue in minor units of the reporting currency.",
        MRR_AT_RISK => "MRR of customers at risk, in minor units of the reporting currency.",
        _ => "churnwatch metric",
    }
}

/// Why a metric could not be registered (a programming error: duplicate name).
pub type MetricsError = prometheus::Error;

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let counter = |name: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
            let c = IntCounterVec::new(Opts::new(name, help(name)), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, labels: &[&str]| -> Result<IntGaugeVec, MetricsError> {
            let g = IntGaugeVec::new(Opts::new(name, help(name)), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let scalar = |name: &str| -> Result<IntGauge, MetricsError> {
            let g = IntGauge::new(name, help(name))?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let latency = HistogramVec::new(
            HistogramOpts::new(PROCESSING_LATENCY, help(PROCESSING_LATENCY)).buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &[],
        )?;
        registry.register(Box::new(latency.clone()))?;
        let commit_errors = IntCounter::new(COMMIT_ERRORS, help(COMMIT_ERRORS))?;
        registry.register(Box::new(commit_errors.clone()))?;
        let m = Metrics {
            events_consumed: counter(EVENTS_CONSUMED, &["topic", "type"])?,
            events_rejected: counter(EVENTS_REJECTED, &["topic", "reason"])?,
            events_late: counter(EVENTS_LATE, &["topic"])?,
            events_duplicate: counter(EVENTS_DUPLICATE, &["topic"])?,
            events_replayed: counter(EVENTS_REPLAYED, &["topic"])?,
            consumer_lag: gauge(CONSUMER_LAG, &["topic", "partition"])?,
            processing_latency: latency.with_label_values(&[] as &[&str]),
            alerts_produced: counter(ALERTS_PRODUCED, &["alert", "status"])?,
            produce_errors: counter(PRODUCE_ERRORS, &["topic", "reason"])?,
            dlq_produced: counter(DLQ_PRODUCED, &["reason"])?,
            rebalances: counter(REBALANCES, &["type"])?,
            commit_errors,
            partitions_live: scalar(PARTITIONS_LIVE)?,
            customers_tracked: scalar(CUSTOMERS_TRACKED)?,
            state_bytes: scalar(STATE_BYTES)?,
            customers: gauge(CUSTOMERS, &["plan", "segment", "lifecycle"])?,
            customers_by_risk: gauge(CUSTOMERS_BY_RISK, &["plan", "segment", "risk"])?,
            alerts_firing: gauge(ALERTS_FIRING, &["plan", "segment", "alert"])?,
            mrr: gauge(MRR, &["plan", "segment"])?,
            mrr_at_risk: gauge(MRR_AT_RISK, &["plan", "segment"])?,
            registry,
        };
        for reason in crate::event::RejectReason::CODES {
            m.dlq_produced.with_label_values(&[reason]);
        }
        for kind in crate::signals::AlertKind::ALL {
            for status in ["firing", "resolved"] {
                m.alerts_produced.with_label_values(&[kind.name(), status]);
            }
        }
        Ok(m)
    }

    /// The registry, for code that registers its own collectors (e.g. business metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Replaces the engine gauges with the sum of `snapshots` (one per partition).
    /// Series of groups that disappeared are removed.
    pub fn set_engine(&self, snapshots: &[Snapshot]) {
        #[derive(Default)]
        struct Sum {
            by_lifecycle: BTreeMap<&'static str, u64>,
            by_risk: BTreeMap<&'static str, u64>,
            firing: BTreeMap<&'static str, u64>,
            mrr: i64,
            mrr_at_risk: i64,
        }
        let mut sum: BTreeMap<(String, String), Sum> = BTreeMap::new();
        for s in snapshots {
            for g in &s.groups {
                let e = sum.entry((g.plan.clone(), g.segment.clone())).or_default();
                for (k, v) in &g.by_lifecycle {
                    *e.by_lifecycle.entry(k).or_default() += v;
                }
                for (k, v) in &g.by_risk {
                    *e.by_risk.entry(k).or_default() += v;
                }
                for (k, v) in &g.firing {
                    *e.firing.entry(k).or_default() += v;
                }
                e.mrr += g.mrr;
                e.mrr_at_risk += g.mrr_at_risk;
            }
        }
        for g in [
            &self.customers,
            &self.customers_by_risk,
            &self.alerts_firing,
            &self.mrr,
            &self.mrr_at_risk,
        ] {
            g.reset();
        }
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for ((plan, segment), g) in &sum {
            for (l, v) in &g.by_lifecycle {
                self.customers
                    .with_label_values(&[plan.as_str(), segment, l])
                    .set(as_i64(*v));
            }
            for (r, v) in &g.by_risk {
                self.customers_by_risk
                    .with_label_values(&[plan.as_str(), segment, r])
                    .set(as_i64(*v));
            }
            for kind in crate::signals::AlertKind::ALL {
                let v = g.firing.get(kind.name()).copied().unwrap_or(0);
                self.alerts_firing
                    .with_label_values(&[plan.as_str(), segment, kind.name()])
                    .set(as_i64(v));
            }
            self.mrr.with_label_values(&[plan, segment]).set(g.mrr);
            self.mrr_at_risk
                .with_label_values(&[plan, segment])
                .set(g.mrr_at_risk);
        }
    }

    /// Hook for the business metrics (churn rate, MRR movements, NRR/GRR, NPS, ...).
    // TODO(lead, at merge): take the `business` module's per-plan/segment report
    // and set its gauges here; register them in `Metrics::new` with names above.
    pub fn set_business(&self, _report: &()) {}

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::GroupSnapshot;

    #[test]
    fn engine_gauges_sum_partitions_and_drop_stale_groups() {
        let m = Metrics::new().expect("metrics register");
        let g = |plan: &str, n: u64| GroupSnapshot {
            plan: plan.into(),
            segment: "smb".into(),
            customers: n,
            by_lifecycle: [("active", n)].into_iter().collect(),
            by_risk: BTreeMap::new(),
            firing: BTreeMap::new(),
            mrr: 100,
            mrr_at_risk: 0,
            health_sum: 0,
        };
        m.set_engine(&[
            Snapshot {
                groups: vec![g("pro", 2)],
            },
            Snapshot {
                groups: vec![g("pro", 3), g("free", 1)],
            },
        ]);
        let text = m.encode();
        assert!(
            text.contains(r#"churnwatch_customers{lifecycle="active",plan="pro",segment="smb"} 5"#),
            "{text}"
        );
        assert!(text.contains(r#"churnwatch_mrr{plan="pro",segment="smb"} 200"#));
        m.set_engine(&[Snapshot {
            groups: vec![g("pro", 1)],
        }]);
        let text = m.encode();
        assert!(!text.contains(r#"plan="free""#), "{text}");
        assert!(!text.contains("customer_id="), "{text}");
    }
}
