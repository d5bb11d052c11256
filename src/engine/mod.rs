//! Per-partition customer state, windows and alert evaluation (sans-IO).
// STUB: replaced by the lead's engine at merge. It applies every event at once
// (nothing is buffered), tracks customers by id and fires `churned` on
// `subscription_cancelled` (resolved by `subscription_started`), which is all
// the Kafka edge's tests need to exercise the pipeline.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::alert::{AlertEvent, AlertStatus};
use crate::config::Config;
use crate::event::{Event, EventKind, Ts};
use crate::signals::AlertKind;

/// What happened to an ingested event.
pub enum Disposition {
    /// Accepted; applied when the watermark passes it.
    Buffered,
    /// Applied immediately: too late to reorder.
    Late,
    /// `event_id` seen before: dropped.
    Duplicate,
    /// After the `--until` instant: not applied.
    AfterUntil,
}

/// One row of the customer list.
#[derive(Serialize)]
pub struct CustomerRow {
    /// Customer id.
    pub customer_id: Box<str>,
    /// Health 0-100.
    pub health_score: u8,
    /// `low`, `medium` or `high`.
    pub risk: &'static str,
    /// Alerts firing.
    pub firing: Vec<&'static str>,
    /// Plan, if billed.
    pub plan: Option<Box<str>>,
    /// Segment, if known.
    pub segment: Option<Box<str>>,
    /// MRR in minor units, if billed.
    pub mrr: Option<i64>,
    /// MRR at risk.
    pub mrr_at_risk: i64,
    /// Lifecycle stage.
    pub lifecycle: &'static str,
}

/// Aggregates for Prometheus.
pub struct Snapshot {
    /// One entry per (plan, segment).
    pub groups: Vec<GroupSnapshot>,
}

/// Aggregates of one (plan, segment) group.
pub struct GroupSnapshot {
    /// Plan, `none` for usage-only customers.
    pub plan: String,
    /// Segment, `none` when unknown.
    pub segment: String,
    /// Customers in the group.
    pub customers: u64,
    /// Customers per lifecycle stage.
    pub by_lifecycle: BTreeMap<&'static str, u64>,
    /// Customers per risk level.
    pub by_risk: BTreeMap<&'static str, u64>,
    /// Alerts firing per alert name.
    pub firing: BTreeMap<&'static str, u64>,
    /// Total MRR.
    pub mrr: i64,
    /// MRR at risk.
    pub mrr_at_risk: i64,
}

#[derive(Debug, Default)]
struct Customer {
    plan: Option<Box<str>>,
    mrr: Option<i64>,
    churned_at: Option<Ts>,
}

/// Customer state of one partition.
pub struct Engine {
    customers: BTreeMap<Box<str>, Customer>,
    seen_ids: HashSet<(Box<str>, Box<str>)>,
    alerts: Vec<AlertEvent>,
    max_ts: Option<Ts>,
    clock: Ts,
}

impl Engine {
    /// A new, empty engine.
    pub fn new(_cfg: Arc<Config>) -> Engine {
        Engine {
            customers: BTreeMap::new(),
            seen_ids: HashSet::new(),
            alerts: Vec::new(),
            max_ts: None,
            clock: Ts::MIN,
        }
    }

    /// Ingests one event; `seq` is the caller's arrival number.
    pub fn ingest(&mut self, ev: Event, _seq: u64) -> Disposition {
        if let Some(id) = &ev.event_id
            && !self.seen_ids.insert((ev.customer_id.clone(), id.clone()))
        {
            return Disposition::Duplicate;
        }
        self.max_ts = Some(self.max_ts.map_or(ev.ts, |m| m.max(ev.ts)));
        self.clock = self.clock.max(ev.ts);
        let c = self.customers.entry(ev.customer_id.clone()).or_default();
        match &ev.kind {
            EventKind::SubscriptionStarted { plan, mrr } => {
                c.plan = Some(plan.clone());
                c.mrr = Some(*mrr);
                if let Some(start) = c.churned_at.take() {
                    self.alerts.push(AlertEvent {
                        customer_id: ev.customer_id.clone(),
                        alert: AlertKind::Churned,
                        status: AlertStatus::Resolved,
                        starts_at: start,
                        ends_at: Some(ev.ts),
                    });
                }
            }
            EventKind::SubscriptionCancelled { .. } if c.churned_at.is_none() => {
                c.churned_at = Some(ev.ts);
                self.alerts.push(AlertEvent {
                    customer_id: ev.customer_id.clone(),
                    alert: AlertKind::Churned,
                    status: AlertStatus::Firing,
                    starts_at: ev.ts,
                    ends_at: None,
                });
            }
            _ => {}
        }
        Disposition::Buffered
    }

    /// Moves the event-time clock forward to `ts`.
    pub fn advance_to(&mut self, ts: Ts) {
        self.clock = self.clock.max(ts);
    }

    /// Alert transitions since the last call.
    pub fn take_alerts(&mut self) -> Vec<AlertEvent> {
        std::mem::take(&mut self.alerts)
    }

    /// Seqs ingested but not yet applied.
    pub fn pending_seqs(&self) -> Vec<u64> {
        Vec::new()
    }

    /// The watermark.
    pub fn watermark(&self) -> Ts {
        self.clock
    }

    /// Highest event time seen.
    pub fn max_ts(&self) -> Option<Ts> {
        self.max_ts
    }

    /// Full view of one customer.
    pub fn customer(&self, id: &str) -> Option<serde_json::Value> {
        self.customers.get(id).map(|c| {
            serde_json::json!({
                "customer_id": id,
                "plan": c.plan.as_deref(),
                "mrr": c.mrr,
                "lifecycle": if c.churned_at.is_some() { "churned" } else { "active" },
            })
        })
    }

    /// Every customer, one row each.
    pub fn customers(&self) -> Vec<CustomerRow> {
        self.customers
            .iter()
            .map(|(id, c)| CustomerRow {
                customer_id: id.clone(),
                health_score: if c.churned_at.is_some() { 0 } else { 100 },
                risk: if c.churned_at.is_some() {
                    "high"
                } else {
                    "low"
                },
                firing: if c.churned_at.is_some() {
                    vec!["churned"]
                } else {
                    vec![]
                },
                plan: c.plan.clone(),
                segment: None,
                mrr: c.mrr,
                mrr_at_risk: if c.churned_at.is_some() {
                    c.mrr.unwrap_or(0)
                } else {
                    0
                },
                lifecycle: if c.churned_at.is_some() {
                    "churned"
                } else {
                    "active"
                },
            })
            .collect()
    }

    /// Alerts currently firing.
    pub fn firing(&self) -> Vec<AlertEvent> {
        self.customers
            .iter()
            .filter_map(|(id, c)| {
                c.churned_at.map(|t| AlertEvent {
                    customer_id: id.clone(),
                    alert: AlertKind::Churned,
                    status: AlertStatus::Firing,
                    starts_at: t,
                    ends_at: None,
                })
            })
            .collect()
    }

    /// Aggregates for Prometheus.
    pub fn snapshot(&self) -> Snapshot {
        let mut g = GroupSnapshot {
            plan: "none".into(),
            segment: "none".into(),
            customers: 0,
            by_lifecycle: BTreeMap::new(),
            by_risk: BTreeMap::new(),
            firing: BTreeMap::new(),
            mrr: 0,
            mrr_at_risk: 0,
        };
        for row in self.customers() {
            g.customers += 1;
            *g.by_lifecycle.entry(row.lifecycle).or_default() += 1;
            *g.by_risk.entry(row.risk).or_default() += 1;
            for a in row.firing {
                *g.firing.entry(a).or_default() += 1;
            }
            g.mrr += row.mrr.unwrap_or(0);
            g.mrr_at_risk += row.mrr_at_risk;
        }
        Snapshot { groups: vec![g] }
    }

    /// Customers tracked.
    pub fn customer_count(&self) -> usize {
        self.customers.len()
    }

    /// Approximate state size.
    pub fn state_bytes(&self) -> usize {
        self.customers.len() * 64
    }
}
