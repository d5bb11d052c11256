//! Per-customer state: activity windows, seats, key features, usage gaps,
//! billing/dunning, feedback and support. Rare parts are boxed so that a
//! usage-only customer with a few events stays small.

use crate::event::{CancelKind, DAY_MS, Severity, Ts};
use crate::signals::AlertKind;

use super::window::{Activity, Seats, day_of, median};

/// Sentinel for "never".
pub const NEVER: Ts = i64::MIN;

/// Usage gaps remembered per customer.
pub const GAP_SLOTS: usize = 12;

/// Subscription status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubStatus {
    /// Subscribed (any MRR, free plans included).
    Active,
    /// Churned.
    Churned,
}

/// Billing state of a customer that sent billing events.
#[derive(Debug, Clone)]
pub struct Billing {
    /// Interned plan id.
    pub plan: u16,
    /// MRR in reporting minor units.
    pub mrr: i64,
    /// Subscription status; `None` before any `subscription_started`.
    pub status: Option<SubStatus>,
    /// When the current subscription began.
    pub sub_started: Ts,
    /// Open dunning period: first failure time.
    pub dunning_since: Option<Ts>,
    /// Failed attempts in the open dunning period.
    pub dunning_attempts: u32,
    /// Latest failure reason.
    pub dunning_reason: Option<Box<str>>,
    /// When and how the customer churned.
    pub churned: Option<(Ts, CancelKind)>,
    /// MRR lost at churn.
    pub churned_mrr: i64,
    /// Latest downgrade: (ts, previous plan, previous mrr, new mrr).
    pub downgrade: Option<(Ts, u16, i64, i64)>,
    /// When the customer came back after a churn.
    pub reactivated_at: Option<Ts>,
}

impl Default for Billing {
    fn default() -> Self {
        Self {
            plan: 0,
            mrr: 0,
            status: None,
            sub_started: NEVER,
            dunning_since: None,
            dunning_attempts: 0,
            dunning_reason: None,
            churned: None,
            churned_mrr: 0,
            downgrade: None,
            reactivated_at: None,
        }
    }
}

/// Latest feedback of each kind: (score, ts).
#[derive(Debug, Clone, Default)]
pub struct Feedback {
    /// Latest NPS.
    pub nps: Option<(u8, Ts)>,
    /// Latest CSAT.
    pub csat: Option<(u8, Ts)>,
    /// Latest CES.
    pub ces: Option<(u8, Ts)>,
    /// Support tickets of the last 9 weeks.
    pub tickets: Vec<Ticket>,
}

/// One support ticket.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// Hash of `ticket_id` (0 when absent).
    pub id: u64,
    /// When it was opened.
    pub opened: Ts,
    /// Severity.
    pub severity: Severity,
    /// Resolved yet.
    pub resolved: bool,
}

/// A currently firing alert, with what it fired on.
#[derive(Debug, Clone)]
pub struct Firing {
    /// Which alert.
    pub kind: AlertKind,
    /// Event time it began.
    pub starts_at: Ts,
    /// Evidence at fire time.
    pub evidence: serde_json::Value,
    /// Summary at fire time.
    pub summary: String,
}

/// Up to eight weekly values, without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Weeks {
    values: [f64; 8],
    /// How many are set.
    pub len: usize,
}

impl Weeks {
    /// The values set.
    pub fn values_mut(&mut self) -> &mut [f64] {
        &mut self.values[..self.len]
    }
}

/// All state of one customer.
#[derive(Debug, Clone)]
pub struct Customer {
    /// The id.
    pub id: Box<str>,
    /// Interned segment id (0 = none).
    pub segment: u16,
    /// First event time.
    pub first_seen: Ts,
    /// Latest event time of any kind.
    pub last_seen: Ts,
    /// Latest usage time.
    pub last_usage: Ts,
    /// Usage by day.
    pub activity: Activity,
    /// Active users by day.
    pub seats: Option<Box<Seats>>,
    /// Per configured key feature: (last use, distinct days used, last day counted).
    pub key_features: Option<Box<[(Ts, u16, i32)]>>,
    /// Recent gaps between active days, in days (ring).
    pub gaps: [u16; GAP_SLOTS],
    /// Gaps recorded in total (saturating).
    pub gap_count: u16,
    /// Billing, once a billing event was seen.
    pub billing: Option<Box<Billing>>,
    /// Feedback and support, once seen.
    pub feedback: Option<Box<Feedback>>,
    /// Alerts firing now.
    pub firing: Vec<Firing>,
    /// Deadline of the timer scheduled for this customer (NEVER = none).
    pub timer_at: Ts,
}

impl Customer {
    /// A customer first seen at `ts`.
    pub fn new(id: Box<str>, ts: Ts) -> Self {
        Self {
            id,
            segment: 0,
            first_seen: ts,
            last_seen: ts,
            last_usage: NEVER,
            activity: Activity::default(),
            seats: None,
            key_features: None,
            gaps: [0; GAP_SLOTS],
            gap_count: 0,
            billing: None,
            feedback: None,
            firing: Vec::new(),
            timer_at: NEVER,
        }
    }

    /// Records a usage event.
    pub fn record_usage(&mut self, ts: Ts, quantity: f64, user_hash: Option<u32>, today: i32) {
        let day = day_of(ts);
        if self.last_usage != NEVER {
            let last_day = day_of(self.last_usage);
            if day > last_day {
                let gap = (day - last_day).min(i32::from(u16::MAX)) as u16;
                self.gaps[usize::from(self.gap_count) % GAP_SLOTS] = gap;
                self.gap_count = self.gap_count.saturating_add(1);
                // Keep the ring index meaningful after saturation.
                if self.gap_count == u16::MAX {
                    self.gap_count = (GAP_SLOTS * 1000) as u16;
                }
            }
        }
        self.last_usage = self.last_usage.max(ts);
        self.activity.add(day, quantity, today);
        if let Some(u) = user_hash {
            self.seats.get_or_insert_with(Default::default).add(u, day);
        }
    }

    /// Typical gap between active days, in days: the mean of the recent gaps.
    /// `None` with fewer than `min_gaps` gaps.
    pub fn typical_gap_days(&self, min_gaps: usize) -> Option<f64> {
        let n = usize::from(self.gap_count).min(GAP_SLOTS);
        if n < min_gaps.max(1) {
            return None;
        }
        let sum: u32 = self.gaps[..n].iter().map(|g| u32::from(*g)).sum();
        Some((f64::from(sum) / n as f64).max(1.0))
    }

    /// Rough gap from what little was seen: days observed per active day.
    pub fn observed_gap_days(&self, now: Ts) -> f64 {
        let active_days = f64::from(self.gap_count.min(1000)) + 1.0;
        ((now - self.first_seen) as f64 / DAY_MS as f64 / active_days).max(1.0)
    }

    /// Longest of the recent gaps between active days, in days.
    pub fn longest_recent_gap(&self) -> Option<f64> {
        let n = usize::from(self.gap_count).min(GAP_SLOTS);
        self.gaps[..n].iter().max().map(|g| f64::from(*g))
    }

    /// Weekly usage totals of the 8 full weeks before the current week ending
    /// at `today` (exclusive), only weeks that began after the customer was first seen.
    pub fn baseline_weeks(&self, today: i32, f: impl Fn(i32, i32) -> f64) -> Weeks {
        let first_day = day_of(self.first_seen);
        let mut w = Weeks {
            values: [0.0; 8],
            len: 0,
        };
        for k in 1..=8 {
            let (from, to) = (today - 7 * (k + 1), today - 7 * k);
            if from >= first_day {
                w.values[w.len] = f(from, to);
                w.len += 1;
            }
        }
        w
    }

    /// Median weekly events over the baseline weeks, with how many weeks it used.
    pub fn baseline_events(&self, today: i32) -> (Option<f64>, usize) {
        let mut w = self.baseline_weeks(today, |a, b| self.activity.events(a, b) as f64);
        let n = w.len;
        (median(w.values_mut()), n)
    }

    /// Events in the 7 days before `today`.
    pub fn current_events(&self, today: i32) -> u64 {
        self.activity.events(today - 7, today)
    }

    /// Median weekly distinct users over the baseline weeks.
    pub fn baseline_seats(&self, today: i32) -> Option<f64> {
        let s = self.seats.as_ref()?;
        let mut w = self.baseline_weeks(today, |a, b| f64::from(s.distinct(a, b)));
        median(w.values_mut())
    }

    /// Distinct users in the 7 days before `today`.
    pub fn current_seats(&self, today: i32) -> u32 {
        self.seats
            .as_ref()
            .map_or(0, |s| s.distinct(today - 7, today))
    }

    /// Is the alert firing?
    pub fn is_firing(&self, kind: AlertKind) -> bool {
        self.firing.iter().any(|f| f.kind == kind)
    }

    /// Churned now?
    pub fn is_churned(&self) -> bool {
        self.billing
            .as_ref()
            .is_some_and(|b| b.status == Some(SubStatus::Churned))
    }

    /// Current MRR, `None` without billing.
    pub fn mrr(&self) -> Option<i64> {
        self.billing
            .as_ref()
            .filter(|b| b.status.is_some())
            .map(|b| b.mrr)
    }

    /// Approximate bytes this customer occupies.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.id.len()
            + self.activity.heap_bytes()
            + self
                .seats
                .as_ref()
                .map_or(0, |s| std::mem::size_of::<Seats>() + s.heap_bytes())
            + self.key_features.as_ref().map_or(0, |k| k.len() * 24)
            + self
                .billing
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Billing>())
            + self.feedback.as_ref().map_or(0, |f| {
                std::mem::size_of::<Feedback>()
                    + f.tickets.capacity() * std::mem::size_of::<Ticket>()
            })
            + self.firing.capacity() * std::mem::size_of::<Firing>()
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Memory per customer is a product target (see the README's benchmarks):
    /// the fixed part must not grow unnoticed.
    #[test]
    fn customer_state_stays_small() {
        assert!(
            std::mem::size_of::<Customer>() <= 168,
            "{}",
            std::mem::size_of::<Customer>()
        );
        assert!(
            std::mem::size_of::<Billing>() <= 136,
            "{}",
            std::mem::size_of::<Billing>()
        );
    }
}
