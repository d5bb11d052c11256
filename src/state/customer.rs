//! Per-customer state: activity windows, seats, key features, usage gaps,
//! billing/dunning, feedback and support. Rare parts are boxed so that a
//! usage-only customer with a few events stays small.

use crate::catalogue::AlertKind;
use crate::event::{CancelKind, DAY_MS, Severity, Ts};

use super::window::{Activity, Seats, Usage, day_of, median};

/// Sentinel for "never".
pub const NEVER: Ts = i64::MIN;

/// Usage gaps remembered per customer.
pub const GAP_SLOTS: usize = 12;

/// Subscription status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SubStatus {
    /// Subscribed (any MRR, free plans included).
    Active,
    /// Churned.
    Churned,
}

/// Billing state of a customer that sent billing events. What most
/// subscribed customers never need (an open dunning period, churn,
/// downgrade, reactivation, failure reason) lives in a separate box, so the
/// common case is small and inline in [`Customer`].
#[derive(Debug, Clone)]
pub struct Billing {
    /// MRR in reporting minor units.
    pub mrr: i64,
    /// When the current subscription began.
    pub sub_started: Ts,
    /// Interned plan id.
    pub plan: u16,
    /// Subscription status; `None` before any `subscription_started`.
    pub status: Option<SubStatus>,
    rare: Option<Box<BillingRare>>,
}

/// The rarely set part of [`Billing`]. It exists while a dunning period is
/// open, and from the first time any other field is set on.
#[derive(Debug, Clone)]
struct BillingRare {
    /// Open dunning period: first failure time (NEVER = none).
    dunning_since: Ts,
    /// Failed attempts in the open dunning period.
    dunning_attempts: u32,
    /// Whether a field below was ever set (the snapshot's format v1 kept
    /// the dunning fields inline and this part only from then on).
    kept: bool,
    dunning_reason: Option<Box<str>>,
    churned: Option<(Ts, CancelKind)>,
    churned_mrr: i64,
    downgrade: Option<(Ts, u16, i64, i64)>,
    reactivated_at: Option<Ts>,
}

impl Default for BillingRare {
    fn default() -> Self {
        Self {
            dunning_since: NEVER,
            dunning_attempts: 0,
            kept: false,
            dunning_reason: None,
            churned: None,
            churned_mrr: 0,
            downgrade: None,
            reactivated_at: None,
        }
    }
}

/// [`Billing`] as a snapshot stores it (format v1).
#[derive(serde::Serialize, serde::Deserialize)]
struct BillingWire {
    mrr: i64,
    sub_started: Ts,
    dunning_since: Ts,
    dunning_attempts: u32,
    plan: u16,
    status: Option<SubStatus>,
    rare: Option<BillingRareWire>,
}

/// [`BillingRare`] as a snapshot stores it (format v1).
#[derive(serde::Serialize, serde::Deserialize)]
struct BillingRareWire {
    dunning_reason: Option<Box<str>>,
    churned: Option<(Ts, CancelKind)>,
    churned_mrr: i64,
    downgrade: Option<(Ts, u16, i64, i64)>,
    reactivated_at: Option<Ts>,
}

impl serde::Serialize for Billing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.rare.as_deref();
        BillingWire {
            mrr: self.mrr,
            sub_started: self.sub_started,
            dunning_since: r.map_or(NEVER, |r| r.dunning_since),
            dunning_attempts: self.dunning_attempts(),
            plan: self.plan,
            status: self.status,
            rare: r.filter(|r| r.kept).map(|r| BillingRareWire {
                dunning_reason: r.dunning_reason.clone(),
                churned: r.churned,
                churned_mrr: r.churned_mrr,
                downgrade: r.downgrade,
                reactivated_at: r.reactivated_at,
            }),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Billing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = BillingWire::deserialize(d)?;
        let mut b = Billing {
            mrr: w.mrr,
            sub_started: w.sub_started,
            plan: w.plan,
            status: w.status,
            rare: w.rare.map(|r| {
                Box::new(BillingRare {
                    kept: true,
                    dunning_reason: r.dunning_reason,
                    churned: r.churned,
                    churned_mrr: r.churned_mrr,
                    downgrade: r.downgrade,
                    reactivated_at: r.reactivated_at,
                    ..Default::default()
                })
            }),
        };
        b.set_dunning_since((w.dunning_since != NEVER).then_some(w.dunning_since));
        b.set_dunning_attempts(w.dunning_attempts);
        Ok(b)
    }
}

impl Default for Billing {
    fn default() -> Self {
        Self {
            mrr: 0,
            sub_started: NEVER,
            plan: 0,
            status: None,
            rare: None,
        }
    }
}

impl Billing {
    /// The rare part, for a field other than the dunning ones.
    fn rare_mut(&mut self) -> &mut BillingRare {
        let r = self.rare.get_or_insert_with(Default::default);
        r.kept = true;
        r
    }

    /// The rare part, for the dunning fields.
    fn dunning_mut(&mut self) -> &mut BillingRare {
        self.rare.get_or_insert_with(Default::default)
    }

    /// Frees the rare part when it holds nothing.
    fn tidy(&mut self) {
        if self
            .rare
            .as_ref()
            .is_some_and(|r| !r.kept && r.dunning_since == NEVER && r.dunning_attempts == 0)
        {
            self.rare = None;
        }
    }

    /// Open dunning period: first failure time.
    pub fn dunning_since(&self) -> Option<Ts> {
        let since = self.rare.as_ref()?.dunning_since;
        (since != NEVER).then_some(since)
    }

    /// Opens (`Some`) or closes (`None`) the dunning period.
    pub fn set_dunning_since(&mut self, since: Option<Ts>) {
        match since {
            Some(t) => self.dunning_mut().dunning_since = t,
            None => {
                if let Some(r) = self.rare.as_deref_mut() {
                    r.dunning_since = NEVER;
                }
                self.tidy();
            }
        }
    }

    /// Closes the dunning period, returning when it opened.
    pub fn take_dunning_since(&mut self) -> Option<Ts> {
        let since = self.dunning_since();
        self.set_dunning_since(None);
        since
    }

    /// Failed attempts in the open dunning period.
    pub fn dunning_attempts(&self) -> u32 {
        self.rare.as_ref().map_or(0, |r| r.dunning_attempts)
    }

    /// Sets the failed attempts of the open dunning period.
    pub fn set_dunning_attempts(&mut self, n: u32) {
        if n != 0 {
            self.dunning_mut().dunning_attempts = n;
        } else if let Some(r) = self.rare.as_deref_mut() {
            r.dunning_attempts = 0;
            self.tidy();
        }
    }

    /// Latest failure reason.
    pub fn dunning_reason(&self) -> Option<&str> {
        self.rare.as_ref()?.dunning_reason.as_deref()
    }

    /// Replaces the failure reason when a new one is given.
    pub fn note_dunning_reason(&mut self, reason: Option<Box<str>>) {
        if reason.is_some() {
            self.rare_mut().dunning_reason = reason;
        }
    }

    /// When and how the customer churned.
    pub fn churned(&self) -> Option<(Ts, CancelKind)> {
        self.rare.as_ref()?.churned
    }

    /// MRR lost at churn.
    pub fn churned_mrr(&self) -> i64 {
        self.rare.as_ref().map_or(0, |r| r.churned_mrr)
    }

    /// Records a churn at `ts` losing `mrr`.
    pub fn set_churned(&mut self, ts: Ts, kind: CancelKind, mrr: i64) {
        let r = self.rare_mut();
        r.churned = Some((ts, kind));
        r.churned_mrr = mrr;
    }

    /// Forgets the churn (reactivation).
    pub fn clear_churned(&mut self) {
        if let Some(r) = self.rare.as_deref_mut() {
            r.churned = None;
        }
    }

    /// Latest downgrade: (ts, previous plan, previous mrr, new mrr).
    pub fn downgrade(&self) -> Option<(Ts, u16, i64, i64)> {
        self.rare.as_ref()?.downgrade
    }

    /// Sets or clears the latest downgrade.
    pub fn set_downgrade(&mut self, d: Option<(Ts, u16, i64, i64)>) {
        if d.is_some() {
            self.rare_mut().downgrade = d;
        } else if let Some(r) = self.rare.as_deref_mut() {
            r.downgrade = None;
        }
    }

    /// When the customer came back after a churn.
    pub fn reactivated_at(&self) -> Option<Ts> {
        self.rare.as_ref()?.reactivated_at
    }

    /// Records a reactivation at `ts`.
    pub fn set_reactivated_at(&mut self, ts: Ts) {
        self.rare_mut().reactivated_at = Some(ts);
    }

    /// Heap bytes of the rare part.
    pub fn heap_bytes(&self) -> usize {
        self.rare.as_ref().map_or(0, |r| {
            std::mem::size_of::<BillingRare>() + r.dunning_reason.as_ref().map_or(0, |s| s.len())
        })
    }
}

/// Latest feedback of each kind: (score, ts).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Feedback {
    /// When the latest NPS, CSAT and CES came (NEVER = none yet).
    at: [Ts; 3],
    /// Support tickets of the last 9 weeks (exactly sized: tickets are few).
    pub tickets: Vec<Ticket>,
    /// The latest NPS, CSAT and CES scores.
    score: [u8; 3],
}

/// Index of NPS in [`Feedback`]'s surveys.
pub const NPS: usize = 0;
/// Index of CSAT.
pub const CSAT: usize = 1;
/// Index of CES.
pub const CES: usize = 2;

impl Default for Feedback {
    fn default() -> Self {
        Self {
            at: [NEVER; 3],
            tickets: Vec::new(),
            score: [0; 3],
        }
    }
}

impl Feedback {
    /// Latest answer to survey `i` ([`NPS`], [`CSAT`], [`CES`]): (score, ts).
    pub fn latest(&self, i: usize) -> Option<(u8, Ts)> {
        (self.at[i] != NEVER).then(|| (self.score[i], self.at[i]))
    }

    /// Latest NPS.
    pub fn nps(&self) -> Option<(u8, Ts)> {
        self.latest(NPS)
    }

    /// Latest CSAT.
    pub fn csat(&self) -> Option<(u8, Ts)> {
        self.latest(CSAT)
    }

    /// Latest CES.
    pub fn ces(&self) -> Option<(u8, Ts)> {
        self.latest(CES)
    }

    /// Records an answer to survey `i` unless a later one is known.
    pub fn note(&mut self, i: usize, score: u8, ts: Ts) {
        if self.latest(i).is_none_or(|(_, t)| ts >= t) {
            self.score[i] = score;
            self.at[i] = ts;
        }
    }

    /// Adds a ticket without spare room.
    pub fn push_ticket(&mut self, t: Ticket) {
        self.tickets.reserve_exact(1);
        self.tickets.push(t);
    }
}

/// One support ticket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

/// A `serde_json::Value` stored as its JSON text: the snapshot's format is
/// not self-describing, which a `Value` needs to be read back.
mod json_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &serde_json::Value, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<serde_json::Value, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// A currently firing alert, with what it fired on.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Firing {
    /// Which alert.
    pub kind: AlertKind,
    /// Event time it began.
    pub starts_at: Ts,
    /// Evidence as last emitted (at fire time, or when its reasons changed).
    #[serde(with = "json_text")]
    pub evidence: serde_json::Value,
    /// Summary as last emitted.
    pub summary: String,
}

/// The alerts firing for a customer: one word and no allocation while none
/// fires, which is most customers most of the time.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
// One word in every customer instead of three; the extra box only exists while an alert fires.
#[allow(clippy::box_collection)]
pub struct FiringList(Option<Box<Vec<Firing>>>);

impl FiringList {
    /// Adds an alert.
    pub fn push(&mut self, f: Firing) {
        self.0.get_or_insert_with(Default::default).push(f);
    }

    /// The alert of `kind`, if firing.
    pub fn get(&self, kind: AlertKind) -> Option<&Firing> {
        self.0.as_deref()?.iter().find(|f| f.kind == kind)
    }

    /// The alert of `kind`, if firing.
    pub fn get_mut(&mut self, kind: AlertKind) -> Option<&mut Firing> {
        self.0.as_deref_mut()?.iter_mut().find(|f| f.kind == kind)
    }

    /// Removes and returns the alert of `kind`, if firing.
    pub fn remove_kind(&mut self, kind: AlertKind) -> Option<Firing> {
        let v = self.0.as_deref_mut()?;
        let pos = v.iter().position(|f| f.kind == kind)?;
        let old = v.remove(pos);
        if v.is_empty() {
            self.0 = None;
        }
        Some(old)
    }

    /// Heap bytes used (without what the alerts point to).
    pub fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |v| {
            std::mem::size_of::<Vec<Firing>>() + v.capacity() * std::mem::size_of::<Firing>()
        })
    }
}

impl std::ops::Deref for FiringList {
    type Target = [Firing];
    fn deref(&self) -> &[Firing] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl std::ops::DerefMut for FiringList {
    fn deref_mut(&mut self) -> &mut [Firing] {
        match self.0.as_deref_mut() {
            Some(v) => v.as_mut_slice(),
            None => &mut [],
        }
    }
}

impl<'a> IntoIterator for &'a FiringList {
    type Item = &'a Firing;
    type IntoIter = std::slice::Iter<'a, Firing>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Recent gaps kept per key feature.
pub const FEATURE_GAPS: usize = 8;

/// One key feature's use by one customer.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct FeatureUse {
    /// Last use ([`NEVER`] before the first).
    pub last: Ts,
    /// Distinct days it was used on (saturating).
    pub days: u16,
    /// The last day counted in `days`.
    pub last_day: i32,
    /// The most recent gaps between days of use, in days (newest first,
    /// capped at 255), `gap_count` of them.
    pub gaps: [u8; FEATURE_GAPS],
    /// How many of `gaps` are set.
    pub gap_count: u8,
}

impl FeatureUse {
    const NONE: Self = Self {
        last: NEVER,
        days: 0,
        last_day: i32::MIN,
        gaps: [0; FEATURE_GAPS],
        gap_count: 0,
    };

    /// Records a use at `ts`.
    pub fn record(&mut self, ts: Ts) {
        self.last = self.last.max(ts);
        let day = day_of(ts);
        if day == self.last_day {
            return;
        }
        if self.last_day != i32::MIN && day > self.last_day {
            let gap = (day - self.last_day).min(255) as u8;
            self.gaps.copy_within(0..FEATURE_GAPS - 1, 1);
            self.gaps[0] = gap;
            self.gap_count = (self.gap_count + 1).min(FEATURE_GAPS as u8);
        }
        self.days = self.days.saturating_add(1);
        self.last_day = self.last_day.max(day);
    }

    /// The recorded gaps, newest first.
    pub fn recent_gaps(&self) -> &[u8] {
        &self.gaps[..usize::from(self.gap_count)]
    }
}

/// Per configured key feature, its [`FeatureUse`]. Behind a second box so
/// that customers without key features (all of them unless `key_features`
/// is configured) spend one word on it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyFeatureUse(Box<[FeatureUse]>);

impl KeyFeatureUse {
    /// No use yet of any of `n` key features.
    pub fn new(n: usize) -> Self {
        Self(vec![FeatureUse::NONE; n].into())
    }

    /// Heap bytes of the features' records.
    pub fn heap_bytes(&self) -> usize {
        self.0.len() * std::mem::size_of::<FeatureUse>()
    }
}

impl std::ops::Deref for KeyFeatureUse {
    type Target = [FeatureUse];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KeyFeatureUse {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Customer {
    /// Interned segment id (0 = none).
    pub segment: u16,
    /// First event time.
    pub first_seen: Ts,
    /// Latest event time of any kind.
    pub last_seen: Ts,
    /// Latest usage time.
    pub last_usage: Ts,
    /// Usage by day and active users by day, in one box (see
    /// [`Self::activity`] and [`Self::seats`]).
    pub usage: Usage,
    /// Per configured key feature, how it was used.
    pub key_features: Option<Box<KeyFeatureUse>>,
    /// Recent gaps between active days, in days (ring).
    pub gaps: [u16; GAP_SLOTS],
    /// Gaps recorded in total (saturating).
    pub gap_count: u16,
    /// Billing, once a billing event was seen. Inline: most customers of a
    /// subscription business have it, and a box would cost more.
    pub billing: Option<Billing>,
    /// Feedback and support, once seen.
    pub feedback: Option<Box<Feedback>>,
    /// Alerts firing now.
    pub firing: FiringList,
    /// Deadline of the timer scheduled for this customer (NEVER = none).
    pub timer_at: Ts,
}

impl Customer {
    /// A customer first seen at `ts`.
    pub fn new(ts: Ts) -> Self {
        Self {
            segment: 0,
            first_seen: ts,
            last_seen: ts,
            last_usage: NEVER,
            usage: Usage::default(),
            key_features: None,
            gaps: [0; GAP_SLOTS],
            gap_count: 0,
            billing: None,
            feedback: None,
            firing: FiringList::default(),
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
        self.usage.add(day, quantity, today);
        if let Some(u) = user_hash {
            self.usage.add_user(u, day);
        }
    }

    /// Typical gap between active days, in days: the mean of the recent gaps.
    /// `None` with fewer than `min_gaps` gaps.
    pub fn typical_gap_days(&self, min_gaps: usize) -> Option<f64> {
        self.recent_gaps(min_gaps)
            .map(|(n, beyond_first)| 1.0 + beyond_first / n as f64)
    }

    /// The recent gaps between active days, when there are at least
    /// `min_gaps`: how many, and their days beyond the first summed.
    pub fn recent_gaps(&self, min_gaps: usize) -> Option<(usize, f64)> {
        let n = usize::from(self.gap_count).min(GAP_SLOTS);
        if n < min_gaps.max(1) {
            return None;
        }
        let beyond: u32 = self.gaps[..n]
            .iter()
            .map(|g| u32::from(g.saturating_sub(1)))
            .sum();
        Some((n, f64::from(beyond)))
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
        self.baseline_weeks_by_index(today, |k| {
            let k = k as i32;
            f(today - 7 * (k + 1), today - 7 * k)
        })
    }

    /// [`Self::baseline_weeks`] with `f(k)` giving the total of the week
    /// `[today - 7 (k + 1), today - 7 k)`, for `k` in `1..=8`.
    pub fn baseline_weeks_by_index(&self, today: i32, f: impl Fn(usize) -> f64) -> Weeks {
        let first_day = day_of(self.first_seen);
        let mut w = Weeks {
            values: [0.0; 8],
            len: 0,
        };
        for k in 1..=8 {
            if today - 7 * (k as i32 + 1) >= first_day {
                w.values[w.len] = f(k);
                w.len += 1;
            }
        }
        w
    }

    /// Median weekly events over the baseline weeks, with how many weeks it used.
    pub fn baseline_events(&self, today: i32) -> (Option<f64>, usize) {
        let mut w = self.baseline_weeks(today, |a, b| self.activity().events(a, b) as f64);
        let n = w.len;
        (median(w.values_mut()), n)
    }

    /// Events in the 7 days before `today`.
    pub fn current_events(&self, today: i32) -> u64 {
        self.activity().events(today - 7, today)
    }

    /// Median weekly distinct users over the baseline weeks.
    pub fn baseline_seats(&self, today: i32) -> Option<f64> {
        self.seat_weeks(today).0
    }

    /// ([`Self::baseline_seats`], [`Self::current_seats`]) in one pass over the users.
    pub fn seat_weeks(&self, today: i32) -> (Option<f64>, u32) {
        let Some(s) = self.seats() else {
            return (None, 0);
        };
        let d = s.distinct_weeks(today);
        let mut w = self.baseline_weeks_by_index(today, |k| f64::from(d[k]));
        (median(w.values_mut()), d[0])
    }

    /// Distinct users in the 7 days before `today`.
    pub fn current_seats(&self, today: i32) -> u32 {
        self.seats().map_or(0, |s| s.distinct(today - 7, today))
    }

    /// Usage by day.
    pub fn activity(&self) -> Activity<'_> {
        self.usage.activity()
    }

    /// Active users by day, once any usage event named a user.
    pub fn seats(&self) -> Option<Seats<'_>> {
        Some(self.usage.seats()).filter(|s| s.is_tracking())
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
            + self.usage.heap_bytes()
            + self
                .key_features
                .as_ref()
                .map_or(0, |k| 16 + k.heap_bytes())
            + self.billing.as_ref().map_or(0, Billing::heap_bytes)
            + self.feedback.as_ref().map_or(0, |f| {
                std::mem::size_of::<Feedback>()
                    + f.tickets.capacity() * std::mem::size_of::<Ticket>()
            })
            + self.firing.heap_bytes()
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// The snapshot stores billing as format v1 did (dunning inline, the
    /// rare part only once a rare field was set), whatever is boxed now.
    #[test]
    fn billing_keeps_its_v1_wire_form() {
        // `BillingWire` is the layout v1 derived for `Billing`.
        let mut b = Billing {
            mrr: 4900,
            sub_started: 7,
            plan: 2,
            status: Some(SubStatus::Active),
            ..Default::default()
        };
        b.set_dunning_since(Some(10));
        b.set_dunning_attempts(2);
        let v1 = BillingWire {
            mrr: 4900,
            sub_started: 7,
            dunning_since: 10,
            dunning_attempts: 2,
            plan: 2,
            status: Some(SubStatus::Active),
            rare: None,
        };
        let bytes = postcard::to_stdvec(&b).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&v1).unwrap());
        let back: Billing = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(postcard::to_stdvec(&back).unwrap(), bytes);
        assert_eq!(
            (back.dunning_since(), back.dunning_attempts()),
            (Some(10), 2)
        );

        // Closing the dunning period frees the box ...
        b.take_dunning_since();
        b.set_dunning_attempts(0);
        assert!(b.rare.is_none());
        // ... unless a rare field was set, which v1 then stored.
        b.set_reactivated_at(20);
        b.take_dunning_since();
        let v1 = BillingWire {
            dunning_since: NEVER,
            dunning_attempts: 0,
            rare: Some(BillingRareWire {
                dunning_reason: None,
                churned: None,
                churned_mrr: 0,
                downgrade: None,
                reactivated_at: Some(20),
            }),
            ..v1
        };
        let bytes = postcard::to_stdvec(&b).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&v1).unwrap());
        let back: Billing = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(postcard::to_stdvec(&back).unwrap(), bytes);
        assert_eq!(back.reactivated_at(), Some(20));
    }

    /// Memory per customer is a product target (see the README's benchmarks):
    /// the fixed part must not grow unnoticed.
    #[test]
    fn customer_state_stays_small() {
        assert!(
            std::mem::size_of::<Customer>() <= 136,
            "{}",
            std::mem::size_of::<Customer>()
        );
        assert!(
            std::mem::size_of::<Billing>() <= 32,
            "{}",
            std::mem::size_of::<Billing>()
        );
    }
}
