//! Every Prometheus metric churnwatch exports, with its name and help text,
//! in one place. Names start with `churnwatch_`; labels are low-cardinality
//! only (plan, segment, alert, status, topic, type, reason, partition,
//! lifecycle, risk, kind, movement, outcome, category): customer detail goes
//! to the API and the alerts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::business::{Metrics as BizMetrics, OTHER_GROUP, PeriodReport};
use crate::engine::{GroupSnapshot, Lifecycle, Snapshot};
use crate::event::parse_ts;
use crate::signals::health::Risk;

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
/// Times the consume loop stopped receiving because the messages held for
/// partitions being rebuilt reached `kafka.rebuild_hold_max`.
pub const REBUILD_HOLD_FULL: &str = "churnwatch_rebuild_hold_full_total";
/// Partition numbers currently assigned and live.
pub const PARTITIONS_LIVE: &str = "churnwatch_partitions_live";
/// Customers tracked by this instance.
pub const CUSTOMERS_TRACKED: &str = "churnwatch_customers_tracked";
/// Approximate bytes of customer state held by this instance.
pub const STATE_BYTES: &str = "churnwatch_state_bytes";
/// Events whose plan or segment was counted as `(other)` (past
/// `max_label_values`), by label, since the partitions' state was built.
pub const LABEL_VALUES_FOLDED: &str = "churnwatch_label_values_folded";
/// Customers first seen in the last complete minute of event time, summed
/// over this instance's partitions.
pub const NEW_CUSTOMERS_PER_MINUTE: &str = "churnwatch_new_customers_per_minute";
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

// Business metrics over the rolling `metrics_window` (see `business` for the
// definitions). Labels: `plan` and `segment`, where `"all"` means every plan
// or segment: overall is {plan="all",segment="all"}, a plan is
// {plan="pro",segment="all"}, a segment {plan="all",segment="smb"}. A ratio
// whose denominator is 0 (no customers at the window start, no responses...)
// has no series (it is removed, never NaN).

/// Length of the rolling window the business metrics cover, in seconds.
pub const BIZ_WINDOW: &str = "churnwatch_business_window_seconds";
/// Subscribed customers (any MRR) at the window start.
pub const BIZ_CUSTOMERS_START: &str = "churnwatch_business_customers_start";
/// Subscribed customers (any MRR) at the window end.
pub const BIZ_CUSTOMERS_END: &str = "churnwatch_business_customers_end";
/// Customers with MRR > 0 at the window start.
pub const BIZ_PAYING_START: &str = "churnwatch_business_paying_customers_start";
/// Customers with MRR > 0 at the window end.
pub const BIZ_PAYING_END: &str = "churnwatch_business_paying_customers_end";
/// First-ever subscriptions in the window.
pub const BIZ_NEW: &str = "churnwatch_business_new_customers";
/// Returning (previously churned) subscriptions in the window.
pub const BIZ_REACTIVATED: &str = "churnwatch_business_reactivated_customers";
/// Churns in the window, by `kind` (voluntary, involuntary).
pub const BIZ_CHURNED: &str = "churnwatch_business_churned_customers";
/// Start-cohort customer churn rate, by `kind` (voluntary, involuntary, all).
pub const BIZ_CHURN_RATE: &str = "churnwatch_business_customer_churn_rate";
/// Customer retention rate (CRR).
pub const BIZ_CRR: &str = "churnwatch_business_customer_retention_rate";
/// MRR at the window start, minor units.
pub const BIZ_MRR_START: &str = "churnwatch_business_mrr_start";
/// MRR at the window end, minor units.
pub const BIZ_MRR_END: &str = "churnwatch_business_mrr_end";
/// MRR movements in the window, by `movement` (new, expansion, contraction, churned, reactivation).
pub const BIZ_MRR_MOVEMENT: &str = "churnwatch_business_mrr_movement";
/// MRR lost to churn in the window, by `kind` (voluntary, involuntary).
pub const BIZ_CHURNED_MRR: &str = "churnwatch_business_churned_mrr";
/// Gross MRR churn rate.
pub const BIZ_GROSS_MRR_CHURN: &str = "churnwatch_business_gross_mrr_churn_rate";
/// Net MRR churn rate.
pub const BIZ_NET_MRR_CHURN: &str = "churnwatch_business_net_mrr_churn_rate";
/// Gross revenue retention.
pub const BIZ_GRR: &str = "churnwatch_business_grr";
/// Net revenue retention.
pub const BIZ_NRR: &str = "churnwatch_business_nrr";
/// Customers in an open dunning period at the window end.
pub const BIZ_DUNNING_OPEN: &str = "churnwatch_business_dunning_open";
/// Dunning periods in the window, by `outcome` (opened, recovered, failed).
pub const BIZ_DUNNING: &str = "churnwatch_business_dunning_periods";
/// Share of closed dunning periods that were recovered.
pub const BIZ_DUNNING_RECOVERY: &str = "churnwatch_business_dunning_recovery_rate";
/// Net promoter score, -100..=100.
pub const BIZ_NPS: &str = "churnwatch_business_nps";
/// NPS responses in the window, by `category` (promoter, passive, detractor).
pub const BIZ_NPS_RESPONSES: &str = "churnwatch_business_nps_responses";
/// Mean CSAT score, 1..=5.
pub const BIZ_CSAT: &str = "churnwatch_business_csat_average";
/// CSAT responses in the window.
pub const BIZ_CSAT_RESPONSES: &str = "churnwatch_business_csat_responses";
/// Money refunded in the window, minor units.
pub const BIZ_REFUNDS: &str = "churnwatch_business_refunds";
/// Average revenue per paying account at the window end, minor units.
pub const BIZ_ARPA: &str = "churnwatch_business_arpa";
/// Customer lifetime value estimate, minor units.
pub const BIZ_LTV: &str = "churnwatch_business_ltv";

/// Every business gauge: name and the label it has besides `plan` and `segment`.
const BUSINESS: &[(&str, Option<&str>)] = &[
    (BIZ_CUSTOMERS_START, None),
    (BIZ_CUSTOMERS_END, None),
    (BIZ_PAYING_START, None),
    (BIZ_PAYING_END, None),
    (BIZ_NEW, None),
    (BIZ_REACTIVATED, None),
    (BIZ_CHURNED, Some("kind")),
    (BIZ_CHURN_RATE, Some("kind")),
    (BIZ_CRR, None),
    (BIZ_MRR_START, None),
    (BIZ_MRR_END, None),
    (BIZ_MRR_MOVEMENT, Some("movement")),
    (BIZ_CHURNED_MRR, Some("kind")),
    (BIZ_GROSS_MRR_CHURN, None),
    (BIZ_NET_MRR_CHURN, None),
    (BIZ_GRR, None),
    (BIZ_NRR, None),
    (BIZ_DUNNING_OPEN, None),
    (BIZ_DUNNING, Some("outcome")),
    (BIZ_DUNNING_RECOVERY, None),
    (BIZ_NPS, None),
    (BIZ_NPS_RESPONSES, Some("category")),
    (BIZ_CSAT, None),
    (BIZ_CSAT_RESPONSES, None),
    (BIZ_REFUNDS, None),
    (BIZ_ARPA, None),
    (BIZ_LTV, None),
];

/// Label value meaning "every plan" or "every segment".
pub const ALL: &str = "all";

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
    /// See [`REBUILD_HOLD_FULL`].
    pub rebuild_hold_full: IntCounter,
    /// See [`PARTITIONS_LIVE`].
    pub partitions_live: IntGauge,
    /// See [`CUSTOMERS_TRACKED`].
    pub customers_tracked: IntGauge,
    /// See [`STATE_BYTES`].
    pub state_bytes: IntGauge,
    /// See [`LABEL_VALUES_FOLDED`].
    pub label_values_folded: IntGaugeVec,
    /// See [`NEW_CUSTOMERS_PER_MINUTE`].
    pub new_customers_per_minute: IntGauge,
    /// Distinct plans, and segments, exported (`max_label_values`); the
    /// rest are summed under `(other)`.
    max_label_values: usize,
    customers: IntGaugeVec,
    customers_by_risk: IntGaugeVec,
    alerts_firing: IntGaugeVec,
    mrr: IntGaugeVec,
    mrr_at_risk: IntGaugeVec,
    business_window: Gauge,
    business: BTreeMap<&'static str, GaugeVec>,
    /// Business series set by the last [`Metrics::set_business`], so the
    /// next one removes those that are gone without a reset (a scrape
    /// never sees a half-updated set).
    business_live: Arc<Mutex<BTreeSet<BusinessKey>>>,
}

/// One business series: metric name and label values.
type BusinessKey = (&'static str, Vec<String>);

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
        REBUILD_HOLD_FULL => {
            "Times receiving stopped until a rebuild finished: messages held for it reached kafka.rebuild_hold_max."
        }
        PARTITIONS_LIVE => "Partition numbers assigned, rebuilt and live.",
        CUSTOMERS_TRACKED => "Customers tracked by this instance.",
        STATE_BYTES => "Approximate bytes of customer state held by this instance.",
        LABEL_VALUES_FOLDED => {
            "Events whose plan or segment was counted as (other), past max_label_values, since the state was built."
        }
        NEW_CUSTOMERS_PER_MINUTE => {
            "Customers first seen in the last complete minute of event time (a flood means a producer writes other ids into customer_id)."
        }
        CUSTOMERS => "Customers per plan, segment and lifecycle stage.",
        CUSTOMERS_BY_RISK => "Customers per plan, segment and risk level.",
        ALERTS_FIRING => "Alerts currently firing per plan, segment and alert.",
        MRR => "Monthly recurring revenue in minor units of the reporting currency.",
        MRR_AT_RISK => "MRR of customers at risk, in minor units of the reporting currency.",
        BIZ_WINDOW => "Length of the rolling window the churnwatch_business_* metrics cover.",
        BIZ_CUSTOMERS_START => "Subscribed customers (any MRR) at the start of the window.",
        BIZ_CUSTOMERS_END => "Subscribed customers (any MRR) at the end of the window.",
        BIZ_PAYING_START => "Customers with MRR > 0 at the start of the window.",
        BIZ_PAYING_END => "Customers with MRR > 0 at the end of the window.",
        BIZ_NEW => "First-ever subscriptions in the window.",
        BIZ_REACTIVATED => "Subscriptions of previously churned customers in the window.",
        BIZ_CHURNED => "Customers churned in the window, by kind.",
        BIZ_CHURN_RATE => "Share of the customers at the window start that churned in it, by kind.",
        BIZ_CRR => "Customer retention rate: (end - new - reactivated) / start customers.",
        BIZ_MRR_START => "MRR at the start of the window, minor units.",
        BIZ_MRR_END => "MRR at the end of the window, minor units.",
        BIZ_MRR_MOVEMENT => "MRR movements in the window, by movement, minor units.",
        BIZ_CHURNED_MRR => "MRR lost to churn in the window, by kind, minor units.",
        BIZ_GROSS_MRR_CHURN => {
            "Gross MRR churn: start-cohort churned + contraction MRR / start MRR."
        }
        BIZ_NET_MRR_CHURN => {
            "Net MRR churn: start-cohort churned + contraction - expansion MRR / start MRR."
        }
        BIZ_GRR => "Gross revenue retention of the start cohort, 0..1.",
        BIZ_NRR => "Net revenue retention of the start cohort.",
        BIZ_DUNNING_OPEN => "Customers in an open dunning period at the end of the window.",
        BIZ_DUNNING => "Dunning periods in the window, by outcome.",
        BIZ_DUNNING_RECOVERY => "Share of dunning periods closed in the window that recovered.",
        BIZ_NPS => "Net promoter score of responses in the window, -100..100.",
        BIZ_NPS_RESPONSES => "NPS responses in the window, by category.",
        BIZ_CSAT => "Mean CSAT score (1..5) of responses in the window.",
        BIZ_CSAT_RESPONSES => "CSAT responses in the window.",
        BIZ_REFUNDS => "Money refunded in the window, minor units.",
        BIZ_ARPA => "Average MRR per paying account at the end of the window, minor units.",
        BIZ_LTV => "Lifetime value estimate: ARPA / monthly customer churn rate, minor units.",
        _ => "churnwatch metric",
    }
}

/// Why a metric could not be registered (a programming error: duplicate name).
pub type MetricsError = prometheus::Error;

impl Metrics {
    /// Exports the per-topic counters at zero from the start, so a dashboard
    /// shows "none" rather than "no data" before the first late, duplicate or
    /// replayed event.
    pub fn register_input_topics(&self, topics: &[&str]) {
        for t in topics {
            self.events_late.with_label_values(&[t]);
            self.events_duplicate.with_label_values(&[t]);
            self.events_replayed.with_label_values(&[t]);
        }
    }

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
        let business_window = Gauge::new(BIZ_WINDOW, help(BIZ_WINDOW))?;
        registry.register(Box::new(business_window.clone()))?;
        let mut business = BTreeMap::new();
        for (name, extra) in BUSINESS {
            let labels: Vec<&str> = ["plan", "segment"].into_iter().chain(*extra).collect();
            let g = GaugeVec::new(Opts::new(*name, help(name)), &labels)?;
            registry.register(Box::new(g.clone()))?;
            business.insert(*name, g);
        }
        registry.register(Box::new(commit_errors.clone()))?;
        let rebuild_hold_full = IntCounter::new(REBUILD_HOLD_FULL, help(REBUILD_HOLD_FULL))?;
        registry.register(Box::new(rebuild_hold_full.clone()))?;
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
            rebuild_hold_full,
            partitions_live: scalar(PARTITIONS_LIVE)?,
            customers_tracked: scalar(CUSTOMERS_TRACKED)?,
            state_bytes: scalar(STATE_BYTES)?,
            label_values_folded: gauge(LABEL_VALUES_FOLDED, &["label"])?,
            new_customers_per_minute: scalar(NEW_CUSTOMERS_PER_MINUTE)?,
            max_label_values: 100,
            customers: gauge(CUSTOMERS, &["plan", "segment", "lifecycle"])?,
            customers_by_risk: gauge(CUSTOMERS_BY_RISK, &["plan", "segment", "risk"])?,
            alerts_firing: gauge(ALERTS_FIRING, &["plan", "segment", "alert"])?,
            mrr: gauge(MRR, &["plan", "segment"])?,
            mrr_at_risk: gauge(MRR_AT_RISK, &["plan", "segment"])?,
            business_window,
            business,
            business_live: Arc::default(),
            registry,
        };
        for reason in crate::event::RejectReason::CODES {
            m.dlq_produced.with_label_values(&[reason]);
        }
        for label in ["plan", "segment"] {
            m.label_values_folded.with_label_values(&[label]);
        }
        for kind in crate::catalogue::AlertKind::ALL {
            for status in ["firing", "resolved"] {
                m.alerts_produced.with_label_values(&[kind.name(), status]);
            }
        }
        Ok(m)
    }

    /// Exports at most `n` plans and `n` segments (`max_label_values`).
    pub fn with_max_label_values(mut self, n: usize) -> Self {
        self.max_label_values = n.max(1);
        self
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
            by_lifecycle: BTreeMap<Lifecycle, u64>,
            by_risk: BTreeMap<Risk, u64>,
            firing: BTreeMap<&'static str, u64>,
            mrr: i64,
            mrr_at_risk: i64,
        }
        // The plans and segments exported: the largest `max_label_values`
        // of each over every partition (each partition's engine keeps that
        // many too); the rest are summed as `(other)`.
        let keep = |name: fn(&GroupSnapshot) -> &str| -> BTreeSet<&str> {
            let mut size: BTreeMap<&str, u64> = BTreeMap::new();
            for g in snapshots.iter().flat_map(|s| &s.groups) {
                *size.entry(name(g)).or_default() += g.customers;
            }
            let mut by_size: Vec<(u64, &str)> = size
                .into_iter()
                .filter(|(n, _)| *n != OTHER_GROUP)
                .map(|(n, c)| (c, n))
                .collect();
            by_size.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            by_size
                .into_iter()
                .take(self.max_label_values)
                .map(|(_, n)| n)
                .collect()
        };
        let (plans, segments) = (keep(|g| &g.plan), keep(|g| &g.segment));
        let folded = |keep: &BTreeSet<&str>, n: &str| -> String {
            if keep.contains(n) { n } else { OTHER_GROUP }.to_string()
        };
        let mut sum: BTreeMap<(String, String), Sum> = BTreeMap::new();
        let mut labels_folded = [0u64; 2];
        let mut new_customers = 0u64;
        for s in snapshots {
            labels_folded[0] += s.folded[0];
            labels_folded[1] += s.folded[1];
            new_customers += s.new_customers_last_minute;
            for g in &s.groups {
                let key = (folded(&plans, &g.plan), folded(&segments, &g.segment));
                let e = sum.entry(key).or_default();
                for (k, v) in &g.by_lifecycle {
                    *e.by_lifecycle.entry(*k).or_default() += v;
                }
                for (k, v) in &g.by_risk {
                    *e.by_risk.entry(*k).or_default() += v;
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
        for (label, n) in ["plan", "segment"].into_iter().zip(labels_folded) {
            self.label_values_folded
                .with_label_values(&[label])
                .set(as_i64(n));
        }
        self.new_customers_per_minute.set(as_i64(new_customers));
        for ((plan, segment), g) in &sum {
            for (l, v) in &g.by_lifecycle {
                self.customers
                    .with_label_values(&[plan.as_str(), segment, l.as_str()])
                    .set(as_i64(*v));
            }
            for (r, v) in &g.by_risk {
                self.customers_by_risk
                    .with_label_values(&[plan.as_str(), segment, r.as_str()])
                    .set(as_i64(*v));
            }
            for kind in crate::catalogue::AlertKind::ALL {
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

    /// Replaces the business gauges (`churnwatch_business_*`) with the merge
    /// of `reports`, one rolling-window report per partition: counts and
    /// amounts are summed and ratios recomputed from the sums (see
    /// [`PeriodReport::merge`]). Overall, per plan and per segment, with
    /// `"all"` for the other label. A ratio that is `None` (denominator 0)
    /// has no series; series of groups that disappeared are removed.
    pub fn set_business(&self, reports: &[PeriodReport]) {
        let mut next: BTreeMap<BusinessKey, f64> = BTreeMap::new();
        let window_ms = reports
            .iter()
            .filter_map(|r| Some(parse_ts(&r.end).ok()? - parse_ts(&r.start).ok()?))
            .max();
        self.business_window
            .set(window_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
        if let Some(mut merged) = PeriodReport::merge(reports) {
            merged.fold_groups(self.max_label_values);
            let groups = std::iter::once((ALL, ALL, &merged.overall))
                .chain(merged.by_plan.iter().map(|(p, m)| (p.as_str(), ALL, m)))
                .chain(merged.by_segment.iter().map(|(s, m)| (ALL, s.as_str(), m)));
            for (plan, segment, m) in groups {
                business_series(m, &mut |name, extra, v| {
                    let Some(v) = v.filter(|v| v.is_finite()) else {
                        return;
                    };
                    let labels = [plan, segment].into_iter().chain(extra).map(str::to_string);
                    next.insert((name, labels.collect()), v);
                });
            }
        }
        let mut live = crate::lock(&self.business_live);
        for ((name, labels), v) in &next {
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            self.business[name].with_label_values(&labels).set(*v);
        }
        for (name, labels) in live.iter() {
            if !next.contains_key(&(*name, labels.clone())) {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                let _ = self.business[name].remove_label_values(&labels);
            }
        }
        *live = next.into_keys().collect();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Receives (metric name, value of its extra label, value) for one series.
type PutSeries<'a> = dyn FnMut(&'static str, Option<&str>, Option<f64>) + 'a;

/// Calls `put` for every business gauge of one group.
fn business_series(m: &BizMetrics, put: &mut PutSeries<'_>) {
    let n = |v: i64| Some(v as f64);
    put(BIZ_CUSTOMERS_START, None, n(m.customers_start));
    put(BIZ_CUSTOMERS_END, None, n(m.customers_end));
    put(BIZ_PAYING_START, None, n(m.paying_start));
    put(BIZ_PAYING_END, None, n(m.paying_end));
    put(BIZ_NEW, None, n(m.new));
    put(BIZ_REACTIVATED, None, n(m.reactivated));
    put(BIZ_CHURNED, Some("voluntary"), n(m.churned_voluntary));
    put(BIZ_CHURNED, Some("involuntary"), n(m.churned_involuntary));
    put(BIZ_CHURN_RATE, Some("voluntary"), m.voluntary_churn_rate);
    put(
        BIZ_CHURN_RATE,
        Some("involuntary"),
        m.involuntary_churn_rate,
    );
    put(BIZ_CHURN_RATE, Some(ALL), m.customer_churn_rate);
    put(BIZ_CRR, None, m.customer_retention_rate);
    put(BIZ_MRR_START, None, n(m.mrr_start));
    put(BIZ_MRR_END, None, n(m.mrr_end));
    put(BIZ_MRR_MOVEMENT, Some("new"), n(m.new_mrr));
    put(BIZ_MRR_MOVEMENT, Some("expansion"), n(m.expansion_mrr));
    put(BIZ_MRR_MOVEMENT, Some("contraction"), n(m.contraction_mrr));
    put(BIZ_MRR_MOVEMENT, Some("churned"), n(m.churned_mrr));
    put(
        BIZ_MRR_MOVEMENT,
        Some("reactivation"),
        n(m.reactivation_mrr),
    );
    put(
        BIZ_CHURNED_MRR,
        Some("voluntary"),
        n(m.churned_mrr_voluntary),
    );
    put(
        BIZ_CHURNED_MRR,
        Some("involuntary"),
        n(m.churned_mrr_involuntary),
    );
    put(BIZ_GROSS_MRR_CHURN, None, m.gross_mrr_churn_rate);
    put(BIZ_NET_MRR_CHURN, None, m.net_mrr_churn_rate);
    put(BIZ_GRR, None, m.grr);
    put(BIZ_NRR, None, m.nrr);
    put(BIZ_DUNNING_OPEN, None, n(m.dunning_open_end));
    put(BIZ_DUNNING, Some("opened"), n(m.dunning_opened));
    put(BIZ_DUNNING, Some("recovered"), n(m.dunning_recovered));
    put(BIZ_DUNNING, Some("failed"), n(m.dunning_failed));
    put(BIZ_DUNNING_RECOVERY, None, m.dunning_recovery_rate);
    put(BIZ_NPS, None, m.nps);
    put(BIZ_NPS_RESPONSES, Some("promoter"), n(m.nps_promoters));
    put(BIZ_NPS_RESPONSES, Some("passive"), n(m.nps_passives));
    put(BIZ_NPS_RESPONSES, Some("detractor"), n(m.nps_detractors));
    put(BIZ_CSAT, None, m.csat_avg);
    put(BIZ_CSAT_RESPONSES, None, n(m.csat_responses));
    put(BIZ_REFUNDS, None, n(m.refunds));
    put(BIZ_ARPA, None, m.arpa);
    put(BIZ_LTV, None, m.ltv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::business::{Fact, Ledger};
    use crate::engine::GroupSnapshot;
    use crate::event::CancelKind;

    #[test]
    fn engine_gauges_sum_partitions_and_drop_stale_groups() {
        let m = Metrics::new().expect("metrics register");
        let g = |plan: &str, n: u64| GroupSnapshot {
            plan: plan.into(),
            segment: "smb".into(),
            customers: n,
            by_lifecycle: [(Lifecycle::Active, n)].into_iter().collect(),
            by_risk: BTreeMap::new(),
            firing: BTreeMap::new(),
            mrr: 100,
            mrr_at_risk: 0,
            health_sum: 0,
        };
        m.set_engine(&[
            Snapshot {
                groups: vec![g("pro", 2)],
                ..Default::default()
            },
            Snapshot {
                groups: vec![g("pro", 3), g("free", 1)],
                ..Default::default()
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
            ..Default::default()
        }]);
        let text = m.encode();
        assert!(!text.contains(r#"plan="free""#), "{text}");
        assert!(!text.contains("customer_id="), "{text}");
    }

    #[test]
    fn plans_past_max_label_values_are_summed_as_other_over_partitions() {
        let m = Metrics::new()
            .expect("metrics register")
            .with_max_label_values(2);
        let g = |plan: &str, n: u64| GroupSnapshot {
            plan: plan.into(),
            segment: "smb".into(),
            customers: n,
            mrr: 10 * n as i64,
            ..Default::default()
        };
        // Each partition has two plans; over both there are four.
        m.set_engine(&[
            Snapshot {
                groups: vec![g("a", 5), g("b", 1)],
                folded: [3, 0],
                ..Default::default()
            },
            Snapshot {
                groups: vec![g("c", 4), g("d", 2)],
                folded: [1, 0],
                ..Default::default()
            },
        ]);
        let text = m.encode();
        let has = |s: &str| assert!(text.contains(s), "{s} missing in {text}");
        has(r#"churnwatch_mrr{plan="a",segment="smb"} 50"#);
        has(r#"churnwatch_mrr{plan="c",segment="smb"} 40"#);
        has(r#"churnwatch_mrr{plan="(other)",segment="smb"} 30"#);
        has(r#"churnwatch_label_values_folded{label="plan"} 4"#);
        assert!(
            !text.contains(r#"plan="b""#) && !text.contains(r#"plan="d""#),
            "{text}"
        );
    }

    fn ledger_report(
        customers: &[(u32, &str, i64, Option<CancelKind>)],
        nps: &[(u32, u8)],
    ) -> PeriodReport {
        const DAY: i64 = crate::event::DAY_MS;
        let mut l = Ledger::new();
        for (c, plan, mrr, _) in customers {
            let fact = Fact::Joined {
                plan: (*plan).into(),
                mrr: *mrr,
                reactivation: false,
            };
            l.record(0, *c, fact);
        }
        for (c, _, mrr, churn) in customers {
            if let Some(kind) = churn {
                l.record(
                    20 * DAY,
                    *c,
                    Fact::Churned {
                        kind: *kind,
                        mrr: *mrr,
                    },
                );
            }
        }
        for (c, score) in nps {
            l.record(21 * DAY, *c, Fact::Nps { score: *score });
        }
        l.report(10 * DAY, 40 * DAY)
    }

    #[test]
    fn business_gauges_merge_partitions_and_recompute_ratios() {
        let m = Metrics::new().expect("metrics register");
        // Partition 0: 2 pro customers, one leaves voluntarily; one promoter.
        let p0 = ledger_report(
            &[
                (0, "pro", 5000, None),
                (1, "pro", 5000, Some(CancelKind::Voluntary)),
            ],
            &[(0, 10)],
        );
        // Partition 1: 3 basic customers, one lost to dunning.
        let p1 = ledger_report(
            &[
                (0, "basic", 1000, None),
                (1, "basic", 1000, None),
                (2, "basic", 1000, Some(CancelKind::Involuntary)),
            ],
            &[],
        );
        m.set_business(&[p0.clone(), p1.clone()]);
        let text = m.encode();
        let has = |line: &str| {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        };
        has(r#"churnwatch_business_window_seconds 2592000"#);
        has(r#"churnwatch_business_customers_start{plan="all",segment="all"} 5"#);
        has(r#"churnwatch_business_customers_end{plan="all",segment="all"} 3"#);
        has(
            r#"churnwatch_business_churned_customers{kind="voluntary",plan="all",segment="all"} 1"#,
        );
        // 2 of 5, not the mean of the partitions' 1/2 and 1/3.
        has(r#"churnwatch_business_customer_churn_rate{kind="all",plan="all",segment="all"} 0.4"#);
        has(
            r#"churnwatch_business_customer_churn_rate{kind="voluntary",plan="all",segment="all"} 0.2"#,
        );
        has(
            r#"churnwatch_business_customer_churn_rate{kind="involuntary",plan="basic",segment="all"} 0.3333333333333333"#,
        );
        has(r#"churnwatch_business_mrr_start{plan="all",segment="all"} 13000"#);
        has(
            r#"churnwatch_business_mrr_movement{movement="churned",plan="all",segment="all"} 6000"#,
        );
        has(r#"churnwatch_business_grr{plan="pro",segment="all"} 0.5"#);
        has(r#"churnwatch_business_nrr{plan="all",segment="all"} 0.5384615384615384"#);
        has(r#"churnwatch_business_arpa{plan="all",segment="all"} 2333.3333333333335"#);
        has(r#"churnwatch_business_nps{plan="all",segment="all"} 100"#);
        has(r#"churnwatch_business_customers_end{plan="all",segment="(none)"} 3"#);
        // No responses: no series rather than NaN.
        assert!(
            !text.contains(r#"churnwatch_business_nps{plan="basic""#),
            "{text}"
        );
        assert!(
            !text.contains("churnwatch_business_csat_average{"),
            "{text}"
        );
        let bad = |l: &&str| l.ends_with("NaN") || l.ends_with("Inf");
        assert!(!text.lines().any(|l| bad(&l)), "{text}");
        assert!(!text.contains("customer_id="), "{text}");

        // Partition 0 revoked: its plan's series go away, the totals follow.
        m.set_business(&[p1]);
        let text = m.encode();
        assert!(!text.contains(r#"plan="pro""#), "{text}");
        assert!(!text.contains("churnwatch_business_nps{"), "{text}");
        assert!(
            text.contains(r#"churnwatch_business_customers_start{plan="all",segment="all"} 3"#),
            "{text}"
        );
        m.set_business(&[]);
        assert!(!m.encode().contains("churnwatch_business_customers_start{"));
    }
}
