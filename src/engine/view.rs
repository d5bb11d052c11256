//! Read models: what the engine shows of its state to the API, the
//! `--customers-out` file, the backtest summary and the Prometheus gauges.
//! Typed values only; their JSON for the API is built in [`crate::http`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::Engine;
use crate::alert::{AlertEvent, AlertStatus};
use crate::catalogue::{AlertKind, AlertSeverity};
use crate::event::{CancelKind, DAY_MS, Ts, format_ts};
use crate::signals::health::{self, Health, Risk};
use crate::state::customer::{Customer, NEVER, SubStatus};
use crate::state::window::day_of;

/// A customer's lifecycle stage, the first that applies in this order:
/// `churned`, `dormant` (no usage for `dormant_after`), `at_risk` (risk
/// `high` or an alert above `info` firing), `reactivated` (in the last 30
/// days), `new` (first seen in the last 30 days), `active`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// First seen in the last 30 days.
    New,
    /// None of the others.
    Active,
    /// Risk `high`, or an alert above `info` firing.
    AtRisk,
    /// No usage for `dormant_after`.
    Dormant,
    /// Cancelled, or dunning expired.
    Churned,
    /// Subscribed again after churning, in the last 30 days.
    Reactivated,
}

impl Lifecycle {
    /// All stages.
    pub const ALL: [Lifecycle; 6] = [
        Lifecycle::New,
        Lifecycle::Active,
        Lifecycle::AtRisk,
        Lifecycle::Dormant,
        Lifecycle::Churned,
        Lifecycle::Reactivated,
    ];

    /// Contract spelling (as serialised), e.g. for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::New => "new",
            Lifecycle::Active => "active",
            Lifecycle::AtRisk => "at_risk",
            Lifecycle::Dormant => "dormant",
            Lifecycle::Churned => "churned",
            Lifecycle::Reactivated => "reactivated",
        }
    }
}

/// One row of `--customers-out` (and of the at-risk API).
#[derive(Debug, Clone, Serialize)]
pub struct CustomerRow {
    /// Id.
    pub customer_id: Box<str>,
    /// 0..=100.
    pub health_score: u8,
    /// Risk band of the score (never `low` while `dormant`).
    pub risk: Risk,
    /// Firing alert names, sorted.
    pub firing: Vec<&'static str>,
    /// Plan.
    pub plan: Option<Box<str>>,
    /// Segment.
    pub segment: Option<Box<str>>,
    /// MRR, null without billing.
    pub mrr: Option<i64>,
    /// Reporting currency.
    pub currency: String,
    /// Latest usage (RFC 3339), null without usage.
    pub last_seen: Option<String>,
    /// Lifecycle stage.
    pub lifecycle: Lifecycle,
    /// Points deducted per signal.
    pub breakdown: BTreeMap<&'static str, u8>,
    /// MRR at risk: the MRR of a customer with risk high or an alert firing.
    #[serde(skip)]
    pub mrr_at_risk: i64,
}

/// Prometheus view of one (plan, segment) group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupSnapshot {
    /// Plan name or `none`.
    pub plan: String,
    /// Segment name or `none`.
    pub segment: String,
    /// Customers in the group.
    pub customers: u64,
    /// Customers by lifecycle.
    pub by_lifecycle: BTreeMap<Lifecycle, u64>,
    /// Customers by risk.
    pub by_risk: BTreeMap<Risk, u64>,
    /// Customers with each alert firing.
    pub firing: BTreeMap<&'static str, u64>,
    /// MRR of subscribed customers.
    pub mrr: i64,
    /// MRR of customers at risk.
    pub mrr_at_risk: i64,
    /// Sum of health scores (for averages).
    pub health_sum: u64,
}

/// Gauges for Prometheus.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// One entry per (plan, segment).
    pub groups: Vec<GroupSnapshot>,
    /// Events whose plan, and whose segment, was counted under
    /// [`OTHER_GROUP`](crate::business::OTHER_GROUP) (past `max_label_values`), since the state was built.
    pub folded: [u64; 2],
    /// Customers first seen in the last complete minute of event time.
    pub new_customers_last_minute: u64,
}

/// Everything the API shows of one customer ([`Engine::customer`]).
#[derive(Debug, Clone)]
pub struct CustomerView {
    /// The customer's row, as in `--customers-out`.
    pub row: CustomerRow,
    /// The engine's clock: the instant the view is of.
    pub as_of: Ts,
    /// When the customer was first seen.
    pub first_seen: Ts,
    /// Firing alerts, by alert.
    pub alerts: Vec<AlertView>,
    /// The 9 weeks before the day of `as_of`, the current one first.
    pub weeks: Vec<WeekView>,
    /// Typical days between active days, once there is one gap.
    pub typical_gap_days: Option<f64>,
    /// Billing, once a billing event was seen.
    pub billing: Option<BillingView>,
    /// Feedback and support, once a feedback event was seen.
    pub feedback: Option<FeedbackView>,
}

/// A firing alert with what it fired on.
#[derive(Debug, Clone)]
pub struct AlertView {
    /// Which alert.
    pub kind: AlertKind,
    /// Event time it began.
    pub starts_at: Ts,
    /// Summary as last emitted.
    pub summary: String,
    /// Evidence as last emitted.
    pub evidence: serde_json::Value,
}

/// Usage in one week `[from, to)` (UTC midnights).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeekView {
    /// Start (inclusive).
    pub from: Ts,
    /// End (exclusive).
    pub to: Ts,
    /// Usage events.
    pub events: u64,
    /// Sum of their quantities.
    pub quantity: f64,
    /// Days with usage.
    pub active_days: u32,
    /// Distinct users (0 while no event named a user).
    pub active_users: u32,
}

/// A customer's billing state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BillingView {
    /// Subscription status; `None` before any `subscription_started`.
    pub status: Option<SubStatus>,
    /// When the current subscription began.
    pub subscribed_since: Option<Ts>,
    /// First failure of the open dunning period.
    pub dunning_since: Option<Ts>,
    /// Failed attempts in the open dunning period.
    pub dunning_attempts: u32,
    /// When and how the customer churned.
    pub churned: Option<(Ts, CancelKind)>,
}

/// A customer's latest survey answers (score, when) and open tickets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedbackView {
    /// Latest NPS.
    pub nps: Option<(u8, Ts)>,
    /// Latest CSAT.
    pub csat: Option<(u8, Ts)>,
    /// Latest CES.
    pub ces: Option<(u8, Ts)>,
    /// Support tickets not resolved.
    pub open_tickets: usize,
}

/// Customers at risk kept per (plan, segment) in a [`ReadView`]: the most
/// `/api/at-risk` returns.
pub const AT_RISK_KEPT: usize = if cfg!(test) { 3 } else { 1000 };

/// What readers see of one engine at one instant (see [`Engine::read_view`]).
#[derive(Debug, Clone, Default)]
pub struct ReadView {
    /// The engine's clock when it was computed.
    pub as_of: Ts,
    /// Gauges per (plan, segment).
    pub snapshot: Snapshot,
    /// Customers at risk (risk above low, or an alert firing), ranked by
    /// [`rank_at_risk`]; the first [`AT_RISK_KEPT`] of each (plan, segment).
    pub at_risk: Vec<CustomerRow>,
    /// Alerts firing, sorted by (customer, alert).
    pub firing: Vec<AlertEvent>,
}

/// Orders rows by MRR at risk (highest first), then health (lowest first),
/// then id.
pub fn rank_at_risk(rows: &mut [CustomerRow]) {
    rows.sort_by(|a, b| {
        b.mrr_at_risk
            .cmp(&a.mrr_at_risk)
            .then(a.health_score.cmp(&b.health_score))
            .then_with(|| a.customer_id.cmp(&b.customer_id))
    });
}

impl Engine {
    fn lifecycle(&self, c: &Customer, health: &Health, now: Ts) -> Lifecycle {
        const THIRTY_DAYS: Ts = 30 * DAY_MS;
        if c.is_churned() {
            return Lifecycle::Churned;
        }
        if c.last_usage != NEVER && now - c.last_usage >= self.cfg.dormant_after {
            return Lifecycle::Dormant;
        }
        let plan = self.plans.name(Self::plan_of(c));
        let warning = c
            .firing
            .iter()
            .any(|f| self.cfg.alert(f.kind, plan).severity != AlertSeverity::Info);
        if health.score < self.cfg.risk_high_below || warning {
            return Lifecycle::AtRisk;
        }
        if c.billing
            .as_ref()
            .and_then(|b| b.reactivated_at())
            .is_some_and(|t| now - t < THIRTY_DAYS)
        {
            return Lifecycle::Reactivated;
        }
        if now - c.first_seen < THIRTY_DAYS {
            return Lifecycle::New;
        }
        Lifecycle::Active
    }

    fn row(&self, ix: u32, now: Ts) -> CustomerRow {
        let c = &self.customers[ix as usize];
        let h = self.health(ix, now);
        let risk = health::risk(
            h.score,
            self.cfg.risk_high_below,
            self.cfg.risk_medium_below,
        );
        let lifecycle = self.lifecycle(c, &h, now);
        // A customer gone quiet for `dormant_after` is never low risk,
        // whatever else its score says.
        let risk = if lifecycle == Lifecycle::Dormant && risk == Risk::Low {
            Risk::Medium
        } else {
            risk
        };
        let mrr = c.mrr();
        let at_risk = risk == Risk::High || !c.firing.is_empty();
        CustomerRow {
            customer_id: self.ids.get(ix).into(),
            health_score: h.score,
            risk,
            firing: c
                .firing
                .iter()
                .map(|f| f.kind.name())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            plan: self.plans.name(Self::plan_of(c)).map(Into::into),
            segment: self.segments.name(c.segment).map(Into::into),
            mrr,
            currency: self.cfg.decode.reporting_currency.clone(),
            last_seen: (c.last_usage != NEVER).then(|| format_ts(c.last_usage)),
            lifecycle,
            breakdown: h.breakdown,
            mrr_at_risk: if at_risk && !c.is_churned() {
                mrr.unwrap_or(0)
            } else {
                0
            },
        }
    }

    /// Every customer at the clock, sorted by id.
    pub fn customers(&self) -> Vec<CustomerRow> {
        let now = self.now();
        let mut rows: Vec<CustomerRow> = (0..self.customers.len() as u32)
            .map(|ix| self.row(ix, now))
            .collect();
        rows.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        rows
    }

    /// Everything the API shows of one customer at the clock (`None`: unknown id).
    pub fn customer(&self, id: &str) -> Option<CustomerView> {
        let ix = self.find(id)?;
        let now = self.now();
        let c = &self.customers[ix as usize];
        let today = day_of(now);
        let weeks = (0..9)
            .map(|k| {
                let (from, to) = (today - 7 * (k + 1), today - 7 * k);
                WeekView {
                    from: from as Ts * DAY_MS,
                    to: to as Ts * DAY_MS,
                    events: c.activity().events(from, to),
                    quantity: c.activity().quantity(from, to),
                    active_days: c.activity().active_days(from, to),
                    active_users: c.seats().map_or(0, |s| s.distinct(from, to)),
                }
            })
            .collect();
        let alerts = c
            .firing
            .iter()
            .map(|f| AlertView {
                kind: f.kind,
                starts_at: f.starts_at,
                summary: f.summary.clone(),
                evidence: f.evidence.clone(),
            })
            .collect();
        Some(CustomerView {
            row: self.row(ix, now),
            as_of: now,
            first_seen: c.first_seen,
            alerts,
            weeks,
            typical_gap_days: c.typical_gap_days(1),
            billing: c.billing.as_ref().map(|b| BillingView {
                status: b.status,
                subscribed_since: (b.sub_started != NEVER).then_some(b.sub_started),
                dunning_since: b.dunning_since(),
                dunning_attempts: b.dunning_attempts(),
                churned: b.churned(),
            }),
            feedback: c.feedback.as_deref().map(|f| FeedbackView {
                nps: f.nps(),
                csat: f.csat(),
                ces: f.ces(),
                open_tickets: f.tickets.iter().filter(|t| !t.resolved).count(),
            }),
        })
    }

    /// Alerts firing now, as firing transitions (sorted by customer, alert).
    pub fn firing(&self) -> Vec<AlertEvent> {
        let now = self.now();
        let mut out = Vec::new();
        for (ix, c) in self.customers.iter().enumerate() {
            if !c.firing.is_empty() {
                let score = self.health(ix as u32, now).score;
                self.firing_of(ix as u32, score, &mut out);
            }
        }
        sort_firing(&mut out);
        out
    }

    /// Customer `ix`'s firing alerts, at health score `score`.
    fn firing_of(&self, ix: u32, score: u8, out: &mut Vec<AlertEvent>) {
        let c = &self.customers[ix as usize];
        let plan = self.plans.name(Self::plan_of(c));
        for f in &c.firing {
            out.push(AlertEvent {
                customer_id: self.ids.get(ix).into(),
                alert: f.kind,
                status: AlertStatus::Firing,
                severity: self.cfg.alert(f.kind, plan).severity,
                plan: plan.map(Into::into),
                segment: self.segments.name(c.segment).map(Into::into),
                starts_at: f.starts_at,
                ends_at: None,
                updated_at: None,
                health_score: score,
                mrr_at_risk: c.mrr(),
                currency: self.cfg.decode.reporting_currency.clone(),
                summary: f.summary.clone(),
                evidence: f.evidence.clone(),
            });
        }
    }

    /// What readers see, in one pass over the customers: the gauges, the
    /// customers at risk and the firing alerts.
    pub fn read_view(&self) -> ReadView {
        let mut b = ViewBuilder::default();
        self.build_view(&mut b, usize::MAX).unwrap_or_default()
    }

    /// Adds the next `slice` customers to the view `b` is building, and
    /// returns the view once every customer is in it (`b` starts over then).
    /// The consume loop builds each partition's view a slice per refresh and
    /// publishes it, so that no reader computes every customer while holding
    /// the engine, and the consume loop never holds it for a whole pass.
    pub fn build_view(&self, b: &mut ViewBuilder, slice: usize) -> Option<ReadView> {
        let now = self.now();
        let end = (b.next as usize)
            .saturating_add(slice)
            .min(self.customers.len());
        for ix in b.next..end as u32 {
            let row = self.row(ix, now);
            self.count_row(&mut b.groups, ix, &row);
            self.firing_of(ix, row.health_score, &mut b.firing);
            if row.risk != Risk::Low || !row.firing.is_empty() {
                b.at_risk.push(row);
            }
        }
        b.next = end as u32;
        if end < self.customers.len() {
            return None;
        }
        let ViewBuilder {
            groups,
            mut at_risk,
            mut firing,
            ..
        } = std::mem::take(b);
        rank_at_risk(&mut at_risk);
        // A query's best rows (any plan and segment filter) are among the
        // best of the groups it covers.
        let mut kept: BTreeMap<(Option<&str>, Option<&str>), usize> = BTreeMap::new();
        let keep: Vec<bool> = (at_risk.iter())
            .map(|r| {
                let n = kept.entry((r.plan.as_deref(), r.segment.as_deref()));
                let n = n.or_default();
                *n += 1;
                *n <= AT_RISK_KEPT
            })
            .collect();
        let mut keep = keep.into_iter();
        at_risk.retain(|_| keep.next().unwrap_or(false));
        sort_firing(&mut firing);
        Some(ReadView {
            as_of: now,
            snapshot: self.snapshot_of(groups),
            at_risk,
            firing,
        })
    }

    /// Gauges per (plan, segment).
    pub fn snapshot(&self) -> Snapshot {
        let now = self.now();
        let mut groups = BTreeMap::new();
        for ix in 0..self.customers.len() as u32 {
            self.count_row(&mut groups, ix, &self.row(ix, now));
        }
        self.snapshot_of(groups)
    }

    /// Counts customer `ix`, whose row is `row`, in its group's gauges.
    fn count_row(
        &self,
        groups: &mut BTreeMap<(u16, u16), GroupSnapshot>,
        ix: u32,
        row: &CustomerRow,
    ) {
        let c = &self.customers[ix as usize];
        let g = groups
            .entry((Self::plan_of(c), c.segment))
            .or_insert_with(|| GroupSnapshot {
                plan: (self.plans.name(Self::plan_of(c)))
                    .unwrap_or("none")
                    .to_string(),
                segment: self.segments.name(c.segment).unwrap_or("none").to_string(),
                ..Default::default()
            });
        g.customers += 1;
        *g.by_lifecycle.entry(row.lifecycle).or_default() += 1;
        *g.by_risk.entry(row.risk).or_default() += 1;
        for f in &row.firing {
            *g.firing.entry(f).or_default() += 1;
        }
        if !c.is_churned() {
            g.mrr += row.mrr.unwrap_or(0);
        }
        g.mrr_at_risk += row.mrr_at_risk;
        g.health_sum += u64::from(row.health_score);
    }

    /// The gauges from the groups' counts.
    fn snapshot_of(&self, groups: BTreeMap<(u16, u16), GroupSnapshot>) -> Snapshot {
        Snapshot {
            groups: groups.into_values().collect(),
            folded: [self.plans.folded, self.segments.folded],
            new_customers_last_minute: match self.now().div_euclid(60_000) - self.new_ids.minute {
                0 => self.new_ids.last_minute,
                1 => self.new_ids.count,
                _ => 0,
            },
        }
    }
}

/// Firing alerts in the API's order: by customer, then alert.
pub fn sort_firing(v: &mut [AlertEvent]) {
    v.sort_by(|a, b| (&a.customer_id, a.alert).cmp(&(&b.customer_id, b.alert)));
}

/// A [`ReadView`] being built a slice of customers at a time
/// ([`Engine::build_view`]).
#[derive(Debug, Default)]
pub struct ViewBuilder {
    /// The next customer to add.
    next: u32,
    groups: BTreeMap<(u16, u16), GroupSnapshot>,
    at_risk: Vec<CustomerRow>,
    firing: Vec<AlertEvent>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::event::decode;
    use crate::generate::{GenerateOptions, generate_to_vec};

    #[test]
    fn a_read_view_holds_the_ranked_customers_at_risk_of_each_group_and_the_firing_alerts() {
        let cfg = Arc::new(Config::default());
        let opts = GenerateOptions {
            seed: 11,
            customers: 200,
            days: 120,
            ..GenerateOptions::default()
        };
        let mut e = Engine::new(cfg.clone());
        for (i, l) in generate_to_vec(&opts).lines.iter().enumerate() {
            if let Ok(ev) = decode(l.as_bytes(), &cfg.decode) {
                e.ingest(ev, i as u64);
            }
        }
        e.finish(None);
        let v = e.read_view();
        assert_eq!(v.as_of, e.clock());
        assert_eq!(v.firing, e.firing());
        assert!(!v.firing.is_empty());
        assert_eq!(
            serde_json::to_value(&v.snapshot.groups).unwrap(),
            serde_json::to_value(e.snapshot().groups).unwrap()
        );
        // Every customer at risk, ranked, the first AT_RISK_KEPT of each group.
        let mut want: Vec<CustomerRow> = (e.customers().into_iter())
            .filter(|r| r.risk != Risk::Low || !r.firing.is_empty())
            .collect();
        rank_at_risk(&mut want);
        let group = |r: &CustomerRow| format!("{:?}/{:?}", r.plan, r.segment);
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        want.retain(|r| {
            let n = seen.entry(group(r)).or_default();
            *n += 1;
            *n <= AT_RISK_KEPT
        });
        assert!(
            seen.values().any(|&n| n > AT_RISK_KEPT),
            "a group over the cap"
        );
        let ids = |rows: &[CustomerRow]| -> Vec<Box<str>> {
            rows.iter().map(|r| r.customer_id.clone()).collect()
        };
        assert_eq!(ids(&v.at_risk), ids(&want));
        assert_eq!(
            serde_json::to_value(&v.at_risk).unwrap(),
            serde_json::to_value(&want).unwrap()
        );
        // Built a slice at a time: the same view, once the last slice is in.
        let mut b = ViewBuilder::default();
        let mut slices = 0;
        let sliced = loop {
            slices += 1;
            if let Some(v) = e.build_view(&mut b, 7) {
                break v;
            }
        };
        assert_eq!(slices, e.customer_count().div_ceil(7));
        assert_eq!(sliced.firing, v.firing);
        assert_eq!(ids(&sliced.at_risk), ids(&v.at_risk));
        assert_eq!(
            serde_json::to_value(&sliced.snapshot).unwrap(),
            serde_json::to_value(&v.snapshot).unwrap()
        );
        // And the builder starts over.
        assert!(e.build_view(&mut b, 7).is_none());
    }
}
