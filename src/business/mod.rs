//! Business metrics: the retention numbers a SaaS business runs on, per
//! period (a rolling window or a UTC calendar month), overall, per plan and
//! per segment.
//!
//! The engine owns per-customer billing state and reports what happened as
//! [`Fact`]s, in event-time order, to a [`Ledger`]. The ledger keeps
//! * a compact, time-ordered log of the facts that changed something
//!   (24 bytes a fact; plan and segment names interned to `u16` ids), and
//! * the current state of each customer with a fact (24 bytes, plus its slot
//!   in a map: the books are dense over these, not over every customer),
//!
//! and keeps the rolling window and the open calendar month up to date as
//! facts arrive (`span.rs`), so that their reports cost O(plans + segments);
//! a closed month's report is final. Any other period is computed on demand
//! by replaying the log once (O(facts + customers)). Every way gives the same
//! report.
//!
//! # Definitions
//!
//! * **Customer**: a customer with a live subscription at that instant, at any
//!   MRR including 0 (a free plan). **Paying**: a customer with MRR > 0.
//!   A customer with no billing (usage-only) is never counted; feedback and
//!   refunds count only from customers that have had a subscription by then.
//! * **Stock** (`customers_*`, `paying_*`, `mrr_*`, `dunning_open_end`) is
//!   counted in the group the customer is in at that instant: its plan then,
//!   and the latest segment seen by then.
//! * **Flows** (new, reactivated, churned, expansion, contraction, dunning,
//!   feedback, refunds) are counted in the group at the flow: a join under the
//!   plan joined, a churn under the plan churned from, an MRR change under
//!   the NEW plan. A plan change moves the stock between plan groups and a
//!   segment change between segment groups; `moved_in`/`moved_out` (and their
//!   MRR, at the MRR the customer had when it moved) record that, so every
//!   group satisfies `customers_end = customers_start + new + reactivated -
//!   churned_total + moved_in - moved_out` and `mrr_end = mrr_start + new_mrr +
//!   reactivation_mrr + expansion_mrr - contraction_mrr - churned_mrr +
//!   moved_in_mrr - moved_out_mrr` (moves are always 0 overall).
//! * **Start cohort**: the customers subscribed at the period start, each
//!   counted in the group it was in at the start. A cohort member that churns
//!   in the period is *lost* (even if it comes back later in the period: the
//!   comeback is a reactivation, not retention). `cohort_churned_mrr` is the
//!   lost members' MRR at the start; `cohort_expansion_mrr` /
//!   `cohort_contraction_mrr` are the retained members' net change from their
//!   start MRR to their end MRR (a downgrade undone in the same period nets
//!   out). So `mrr_start + cohort_expansion_mrr - cohort_contraction_mrr -
//!   cohort_churned_mrr` is the start cohort's MRR at the end, and GRR stays
//!   within 0..=1.
//! * Every ratio is a fraction (0.25, not 25%), except NPS (-100..=100), and is
//!   `None` (JSON `null`) when its denominator is zero; never NaN or infinite.
//!
//! Facts that change nothing are dropped on arrival: a second churn of a
//! churned customer, an MRR change or dunning fact for a customer that is not
//! subscribed, a dunning close without an open dunning period, feedback or a
//! refund from a customer that never had a subscription. A churn closes an
//! open dunning period as failed (so the `DunningClosed { recovered: false }`
//! that may follow is not counted twice, and a voluntary cancel during dunning
//! also counts as a failed dunning period).
//!
//! Facts should arrive in non-decreasing time. A customer's fact older than
//! that customer's previous fact is recorded at the previous fact's time, so
//! each customer's history is kept in arrival order; disorder across customers
//! is kept at the exact instants (late facts wait in a small buffer that is
//! merged into the log in batches).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rustc_hash::FxHashMap;
use serde::{Serialize, Serializer};

use crate::event::{CancelKind, DAY_MS, Ts, format_ts, parse_ts};

mod span;
use span::{End, Slot, Span, Views};

/// Dense customer index, assigned by the engine and stable for the process.
pub type CustomerIx = u32;

/// Group name of customers with no segment seen yet.
pub const NO_SEGMENT: &str = "(none)";
/// Group name that collects plans or segments beyond the 65 535th distinct name.
pub const OTHER_GROUP: &str = "(other)";
/// Largest money amount (minor units) taken from one fact; larger ones are
/// clamped so that sums over millions of customers cannot overflow `i64`.
pub const MAX_AMOUNT: i64 = 1 << 40;

/// Something that happened to a customer's subscription, dunning or
/// feedback, as decided by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// A subscription began. `reactivation` = the customer had churned before
    /// (the ledger also treats a customer it has seen subscribed before as
    /// reactivated). A `Joined` for a subscribed customer is an MRR change.
    Joined {
        /// Plan subscribed to.
        plan: Box<str>,
        /// Monthly recurring revenue, minor units.
        mrr: i64,
        /// The customer had churned before.
        reactivation: bool,
    },
    /// MRR and/or plan changed for a subscribed customer (a plan change, or a
    /// renewal with a new MRR). A drop to MRR 0 (free plan) is contraction,
    /// not churn. The delta is taken from the ledger's own state (the MRR the
    /// customer had), so `old_mrr` is informational.
    MrrChanged {
        /// Plan after the change.
        plan: Box<str>,
        /// MRR before the change, as the engine saw it.
        old_mrr: i64,
        /// MRR after the change.
        new_mrr: i64,
    },
    /// The customer churned (voluntary cancel, or involuntary: dunning expired
    /// or billing cancelled). The MRR lost is the MRR the ledger holds for the
    /// customer; `mrr` is informational.
    Churned {
        /// Voluntary or involuntary.
        kind: CancelKind,
        /// MRR lost, as the engine saw it.
        mrr: i64,
    },
    /// Latest segment seen for the customer (sent when it changes; may come
    /// before `Joined`).
    Segment {
        /// Segment name.
        segment: Box<str>,
    },
    /// A dunning period opened (first failed payment).
    DunningOpened,
    /// A dunning period closed: `recovered` = paid in time; `false` = it ended
    /// in involuntary churn.
    DunningClosed {
        /// Paid in time.
        recovered: bool,
    },
    /// NPS response, 0..=10.
    Nps {
        /// Score.
        score: u8,
    },
    /// CSAT response, 1..=5.
    Csat {
        /// Score.
        score: u8,
    },
    /// CES response, 1..=7 (higher is harder).
    Ces {
        /// Score.
        score: u8,
    },
    /// Money returned.
    Refund {
        /// Amount, minor units.
        amount: i64,
    },
}

/// Current stock of one group (or overall).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Stock {
    /// Subscribed customers (any MRR, free included).
    pub customers: i64,
    /// Subscribed customers with MRR > 0.
    pub paying: i64,
    /// Sum of MRR, minor units.
    pub mrr: i64,
    /// Customers with an open dunning period.
    pub dunning_open: i64,
}

/// The ledger's current state: stock overall, per plan and per segment
/// (groups with no stock are left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// All customers.
    pub overall: Stock,
    /// By current plan.
    pub by_plan: BTreeMap<String, Stock>,
    /// By latest segment ([`NO_SEGMENT`] when none seen).
    pub by_segment: BTreeMap<String, Stock>,
}

/// Business metrics of one period `[start, end)`, overall and per group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodReport {
    /// Period start, RFC 3339 UTC (inclusive).
    pub start: String,
    /// Period end, RFC 3339 UTC (exclusive).
    pub end: String,
    /// All customers.
    pub overall: Metrics,
    /// Per plan (see the module doc for attribution); groups with nothing in
    /// the period are left out.
    pub by_plan: BTreeMap<String, Metrics>,
    /// Per segment ([`NO_SEGMENT`] for customers with no segment seen).
    pub by_segment: BTreeMap<String, Metrics>,
}

/// Metrics of one group over one period. Money is in minor units; ratios are
/// fractions, `None` when the denominator is zero. See the module doc for
/// stock, flow and start-cohort attribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Customers subscribed at the start (any MRR).
    pub customers_start: i64,
    /// Customers subscribed at the end (any MRR).
    pub customers_end: i64,
    /// Customers with MRR > 0 at the start.
    pub paying_start: i64,
    /// Customers with MRR > 0 at the end.
    pub paying_end: i64,
    /// First-ever subscriptions in the period.
    pub new: i64,
    /// Subscriptions of customers that had churned before.
    pub reactivated: i64,
    /// Voluntary churns in the period (any customer, also one that joined in it).
    pub churned_voluntary: i64,
    /// Involuntary churns in the period (dunning expired, billing cancelled).
    pub churned_involuntary: i64,
    /// `churned_voluntary + churned_involuntary`.
    pub churned_total: i64,
    /// Customers that moved into this group (plan or segment change) while subscribed.
    pub moved_in: i64,
    /// Customers that moved out of this group while subscribed.
    pub moved_out: i64,
    /// Start-cohort customers lost voluntarily (first churn in the period).
    pub cohort_churned_voluntary: i64,
    /// Start-cohort customers lost involuntarily (first churn in the period).
    pub cohort_churned_involuntary: i64,
    /// `(cohort_churned_voluntary + cohort_churned_involuntary) / customers_start`.
    #[serde(serialize_with = "ser_ratio")]
    pub customer_churn_rate: Option<f64>,
    /// `cohort_churned_voluntary / customers_start`.
    #[serde(serialize_with = "ser_ratio")]
    pub voluntary_churn_rate: Option<f64>,
    /// `cohort_churned_involuntary / customers_start`.
    #[serde(serialize_with = "ser_ratio")]
    pub involuntary_churn_rate: Option<f64>,
    /// CRR = `(customers_end - new - reactivated - moved_in) / customers_start`.
    /// `new` and `reactivated` are every acquisition in the period, including
    /// ones that churned again within it, so CRR can be below
    /// `1 - customer_churn_rate` (which is the exact start-cohort retention)
    /// and even negative; `moved_in` is 0 overall.
    #[serde(serialize_with = "ser_ratio")]
    pub customer_retention_rate: Option<f64>,
    /// MRR at the start.
    pub mrr_start: i64,
    /// MRR at the end.
    pub mrr_end: i64,
    /// MRR of new customers at their join.
    pub new_mrr: i64,
    /// MRR of reactivated customers at their return.
    pub reactivation_mrr: i64,
    /// Sum of MRR increases (any customer), under the new plan.
    pub expansion_mrr: i64,
    /// Sum of MRR decreases (any customer, drops to a free plan included).
    pub contraction_mrr: i64,
    /// MRR lost to churn (any customer), at the MRR it had when it churned.
    pub churned_mrr: i64,
    /// Part of `churned_mrr` lost to voluntary churn.
    pub churned_mrr_voluntary: i64,
    /// Part of `churned_mrr` lost to involuntary churn.
    pub churned_mrr_involuntary: i64,
    /// MRR that moved into this group with `moved_in` customers.
    pub moved_in_mrr: i64,
    /// MRR that moved out of this group with `moved_out` customers.
    pub moved_out_mrr: i64,
    /// Start MRR of the start-cohort customers lost in the period.
    pub cohort_churned_mrr: i64,
    /// Net MRR growth of retained start-cohort customers (end vs start, per customer, > 0 part).
    pub cohort_expansion_mrr: i64,
    /// Net MRR shrink of retained start-cohort customers (start vs end, per customer, > 0 part).
    pub cohort_contraction_mrr: i64,
    /// Lost MRR rate = `churned_mrr / mrr_start` (all churn, also of customers that joined in the period).
    #[serde(serialize_with = "ser_ratio")]
    pub lost_mrr_rate: Option<f64>,
    /// Gross MRR churn = `(cohort_churned_mrr + cohort_contraction_mrr) / mrr_start`.
    #[serde(serialize_with = "ser_ratio")]
    pub gross_mrr_churn_rate: Option<f64>,
    /// Net MRR churn = `(cohort_churned_mrr + cohort_contraction_mrr - cohort_expansion_mrr) / mrr_start`.
    #[serde(serialize_with = "ser_ratio")]
    pub net_mrr_churn_rate: Option<f64>,
    /// GRR = `(mrr_start - cohort_contraction_mrr - cohort_churned_mrr) / mrr_start`, in 0..=1.
    #[serde(serialize_with = "ser_ratio")]
    pub grr: Option<f64>,
    /// NRR = `(mrr_start + cohort_expansion_mrr - cohort_contraction_mrr - cohort_churned_mrr) / mrr_start`.
    #[serde(serialize_with = "ser_ratio")]
    pub nrr: Option<f64>,
    /// Dunning periods opened in the period.
    pub dunning_opened: i64,
    /// Dunning periods recovered (paid in time) in the period.
    pub dunning_recovered: i64,
    /// Dunning periods that ended in churn in the period.
    pub dunning_failed: i64,
    /// Customers in an open dunning period at the end.
    pub dunning_open_end: i64,
    /// `dunning_recovered / (dunning_recovered + dunning_failed)`.
    #[serde(serialize_with = "ser_ratio")]
    pub dunning_recovery_rate: Option<f64>,
    /// NPS = % promoters (9-10) - % detractors (0-6), -100..=100.
    #[serde(serialize_with = "ser_ratio")]
    pub nps: Option<f64>,
    /// NPS responses in the period.
    pub nps_responses: i64,
    /// NPS 9-10.
    pub nps_promoters: i64,
    /// NPS 7-8.
    pub nps_passives: i64,
    /// NPS 0-6.
    pub nps_detractors: i64,
    /// Mean CSAT (1..=5).
    #[serde(serialize_with = "ser_ratio")]
    pub csat_avg: Option<f64>,
    /// CSAT responses in the period.
    pub csat_responses: i64,
    /// Mean CES (1..=7, higher is harder).
    #[serde(serialize_with = "ser_ratio")]
    pub ces_avg: Option<f64>,
    /// CES responses in the period.
    pub ces_responses: i64,
    /// Money refunded in the period.
    pub refunds: i64,
    /// ARPA = `mrr_end / paying_end`.
    #[serde(serialize_with = "ser_ratio")]
    pub arpa: Option<f64>,
    /// LTV estimate = `arpa / monthly churn`, where monthly churn =
    /// `customer_churn_rate * 30 days / period length`; `None` when the churn
    /// rate is 0 or unknown (a zero churn would make LTV infinite).
    #[serde(serialize_with = "ser_ratio")]
    pub ltv: Option<f64>,
}

/// Serializes a ratio; a non-finite value is an error rather than a silent
/// `null` (ratios are finite by construction, this keeps it checked).
fn ser_ratio<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) if !x.is_finite() => Err(serde::ser::Error::custom(format!(
            "business metric ratio is not finite: {x}"
        ))),
        Some(x) => s.serialize_some(x),
        None => s.serialize_none(),
    }
}

// ---------------------------------------------------------------------------
// Compact storage

/// Fact kinds as stored in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
enum Kind {
    Joined,
    MrrChanged,
    Churned,
    Segment,
    DunningOpened,
    DunningClosed,
    Nps,
    Csat,
    Ces,
    Refund,
}

impl Kind {
    /// Every kind, by discriminant.
    const ALL: [Kind; 10] = [
        Kind::Joined,
        Kind::MrrChanged,
        Kind::Churned,
        Kind::Segment,
        Kind::DunningOpened,
        Kind::DunningClosed,
        Kind::Nps,
        Kind::Csat,
        Kind::Ces,
        Kind::Refund,
    ];
}

/// One stored fact. `id` = plan (Joined, MrrChanged) or segment id;
/// `value` = MRR or amount; `aux` = flag or score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Entry {
    ts: Ts,
    value: i64,
    customer: CustomerIx,
    id: u16,
    kind: Kind,
    aux: u8,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 24);

/// Entries a log chunk holds (chunks avoid copying and doubling one huge Vec).
const CHUNK: usize = if cfg!(test) { 16 } else { 1 << 16 };
/// Late entries buffered before they are merged into the log.
const LATE_MERGE: usize = if cfg!(test) { 8 } else { 1024 };

/// An [`Entry`] as the log stores it, in 20 bytes instead of 24: `ts` in 56
/// bits (signed: past any time an RFC 3339 date can name) with `aux`, then
/// `customer`, then `value` (0..=[`MAX_AMOUNT`], 41 bits) with `id` and
/// `kind`. A snapshot stores the [`Entry`] (format v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed([u32; 5]);

const _: () = assert!(std::mem::size_of::<Packed>() == 20);
const _: () = assert!(MAX_AMOUNT < 1 << 41);

/// Bounds of a time [`Packed`] keeps as is (56 bits, signed).
const PACKED_TS: (Ts, Ts) = (-(1 << 55), (1 << 55) - 1);

impl Packed {
    fn ts(&self) -> Ts {
        ((u64::from(self.0[1]) << 32 | u64::from(self.0[0])) as i64) >> 8
    }
}

impl From<Entry> for Packed {
    fn from(e: Entry) -> Self {
        debug_assert!((0..=MAX_AMOUNT).contains(&e.value), "{e:?}");
        let ts = e.ts.clamp(PACKED_TS.0, PACKED_TS.1);
        let a = (ts as u64) << 8 | u64::from(e.aux);
        let b =
            (e.value.clamp(0, MAX_AMOUNT) as u64) | u64::from(e.id) << 41 | (e.kind as u64) << 57;
        Packed([
            a as u32,
            (a >> 32) as u32,
            e.customer,
            b as u32,
            (b >> 32) as u32,
        ])
    }
}

impl From<Packed> for Entry {
    fn from(p: Packed) -> Self {
        let b = u64::from(p.0[4]) << 32 | u64::from(p.0[3]);
        Entry {
            ts: p.ts(),
            value: (b & ((1 << 41) - 1)) as i64,
            customer: p.0[2],
            id: (b >> 41) as u16,
            kind: Kind::ALL[((b >> 57) & 15) as usize],
            aux: p.0[0] as u8,
        }
    }
}

impl Serialize for Packed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Entry::from(*self).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Packed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let e = Entry::deserialize(d)?;
        if !(0..=MAX_AMOUNT).contains(&e.value) {
            return Err(serde::de::Error::custom(format!(
                "fact value {} outside 0..={MAX_AMOUNT}",
                e.value
            )));
        }
        if !(PACKED_TS.0..=PACKED_TS.1).contains(&e.ts) {
            return Err(serde::de::Error::custom(format!(
                "fact time {} outside the times an event can carry",
                e.ts
            )));
        }
        Ok(e.into())
    }
}

/// Facts ordered by time (ties in arrival order), in fixed-size chunks, plus
/// a small unsorted buffer of late facts.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct FactLog {
    chunks: Vec<Vec<Packed>>,
    late: Vec<Entry>,
}

impl FactLog {
    fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum::<usize>() + self.late.len()
    }

    fn tail_ts(&self) -> Option<Ts> {
        self.chunks.last().and_then(|c| c.last()).map(Packed::ts)
    }

    fn first_ts(&self) -> Option<Ts> {
        let main = self.chunks.first().and_then(|c| c.first()).map(Packed::ts);
        let late = self.late.iter().map(|e| e.ts).min();
        match (main, late) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn push(&mut self, e: Entry) {
        if self.tail_ts().is_some_and(|t| e.ts < t) {
            self.late.push(e);
            if self.late.len() >= LATE_MERGE {
                self.merge_late();
            }
        } else {
            self.push_main(e);
        }
    }

    fn push_main(&mut self, e: Entry) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(e.into()),
            _ => {
                // The first chunk grows from small; later ones are allocated whole.
                let cap = if self.chunks.is_empty() { 0 } else { CHUNK };
                let mut c = Vec::with_capacity(cap);
                c.push(e.into());
                self.chunks.push(c);
            }
        }
    }

    /// Merges the late buffer into the log: only the log's suffix after the
    /// earliest late fact is rewritten.
    fn merge_late(&mut self) {
        if self.late.is_empty() {
            return;
        }
        let mut late = std::mem::take(&mut self.late);
        late.sort_by_key(|e| e.ts); // stable: arrival order on ties
        let t0 = late[0].ts;
        let mut i = self.chunks.len();
        while i > 0 && self.chunks[i - 1].first().is_some_and(|e| e.ts() > t0) {
            i -= 1;
        }
        let mut suffix: Vec<Entry> = Vec::new();
        if i > 0 {
            let c = &mut self.chunks[i - 1];
            let pos = c.partition_point(|e| e.ts() <= t0);
            suffix.extend(c.drain(pos..).map(Entry::from));
        }
        for c in self.chunks.drain(i..) {
            suffix.extend(c.into_iter().map(Entry::from));
        }
        for e in Merge::new(suffix.into_iter(), late.into_iter()) {
            self.push_main(e);
        }
    }

    /// All entries in time order (the log first on ties: it arrived first).
    fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        let mut late = self.late.clone();
        late.sort_by_key(|e| e.ts);
        Merge::new(
            self.chunks.iter().flatten().map(|p| Entry::from(*p)),
            late.into_iter(),
        )
    }

    /// The entries in `[from, to)`, in the order of [`Self::iter`].
    fn range(&self, from: Ts, to: Ts) -> impl Iterator<Item = Entry> + '_ {
        let first = (self.chunks).partition_point(|c| c.last().is_some_and(|e| e.ts() < from));
        let main = self.chunks[first..]
            .iter()
            .flat_map(move |c| c[c.partition_point(|e| e.ts() < from)..].iter())
            .map(|p| Entry::from(*p))
            .take_while(move |e| e.ts < to);
        let mut late: Vec<Entry> = (self.late.iter())
            .filter(|e| from <= e.ts && e.ts < to)
            .copied()
            .collect();
        late.sort_by_key(|e| e.ts);
        Merge::new(main, late.into_iter())
    }

    fn heap_bytes(&self) -> usize {
        let e = std::mem::size_of::<Entry>();
        let p = std::mem::size_of::<Packed>();
        self.chunks.iter().map(|c| c.capacity() * p).sum::<usize>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<Packed>>()
            + self.late.capacity() * e
    }
}

/// Merges two time-ordered streams, `a` first on ties.
struct Merge<A: Iterator<Item = Entry>, B: Iterator<Item = Entry>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A: Iterator<Item = Entry>, B: Iterator<Item = Entry>> Merge<A, B> {
    fn new(a: A, b: B) -> Self {
        Merge {
            a: a.peekable(),
            b: b.peekable(),
        }
    }
}

impl<A: Iterator<Item = Entry>, B: Iterator<Item = Entry>> Iterator for Merge<A, B> {
    type Item = Entry;
    fn next(&mut self) -> Option<Entry> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.ts < x.ts => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

/// Names to dense `u16` ids. Id 0 is [`OTHER_GROUP`], which also takes every
/// name past the 65 535th.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Interner {
    /// Derived from `names` (rebuilt after a restore).
    #[serde(skip)]
    ids: FxHashMap<Box<str>, u16>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn with(reserved: &[&str]) -> Self {
        let mut i = Interner {
            ids: FxHashMap::default(),
            names: Vec::new(),
        };
        for r in reserved {
            i.intern(r);
        }
        i
    }

    fn intern(&mut self, s: &str) -> u16 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let Ok(id) = u16::try_from(self.names.len()) else {
            return 0;
        };
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn rebuild(&mut self) {
        self.ids = (self.names.iter().enumerate())
            .map(|(i, n)| (n.clone(), i as u16))
            .collect();
    }

    fn heap_bytes(&self) -> usize {
        self.names.iter().map(|n| 2 * n.len()).sum::<usize>()
            + self.names.capacity() * std::mem::size_of::<Box<str>>()
            + self.ids.capacity() * (std::mem::size_of::<(Box<str>, u16)>() + 1)
    }
}

/// Segment id of [`NO_SEGMENT`] (the default of every customer).
const NO_SEGMENT_ID: u16 = 1;

// ---------------------------------------------------------------------------
// Customer state and the transition function shared by live state and replay

const SUBSCRIBED: u8 = 1;
const BILLED: u8 = 2;
const DUNNING: u8 = 4;

/// A customer's billing state (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Cust {
    mrr: i64,
    plan: u16,
    segment: u16,
    flags: u8,
}

impl Default for Cust {
    fn default() -> Self {
        Cust {
            mrr: 0,
            plan: 0,
            segment: NO_SEGMENT_ID,
            flags: 0,
        }
    }
}

impl Cust {
    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// What a fact did to a customer.
#[derive(Debug, Clone, Copy)]
enum Flow {
    Joined { reactivation: bool },
    MrrChanged,
    Churned { kind: usize, closed_dunning: bool },
    Segment,
    DunningOpened,
    DunningClosed { recovered: bool },
    Nps(u8),
    Csat(u8),
    Ces(u8),
    Refund(i64),
}

/// Customer states plus stock per group, kept in step.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Book {
    custs: Vec<Cust>,
    total: Stock,
    plans: Vec<Stock>,
    segments: Vec<Stock>,
}

fn stock_at(v: &mut Vec<Stock>, id: u16) -> &mut Stock {
    let i = usize::from(id);
    if v.len() <= i {
        v.resize(i + 1, Stock::default());
    }
    &mut v[i]
}

impl Book {
    fn heap_bytes(&self) -> usize {
        self.custs.capacity() * std::mem::size_of::<Cust>()
            + (self.plans.capacity() + self.segments.capacity()) * std::mem::size_of::<Stock>()
    }

    fn get(&self, c: CustomerIx) -> Cust {
        self.custs.get(c as usize).copied().unwrap_or_default()
    }

    fn add_stock(&mut self, c: &Cust, sign: i64) {
        if !c.has(SUBSCRIBED) {
            return;
        }
        let paying = i64::from(c.mrr > 0);
        let dunning = i64::from(c.has(DUNNING));
        let plan = stock_at(&mut self.plans, c.plan);
        for s in [&mut self.total, plan] {
            s.customers += sign;
            s.paying += sign * paying;
            s.mrr += sign * c.mrr;
            s.dunning_open += sign * dunning;
        }
        let seg = stock_at(&mut self.segments, c.segment);
        seg.customers += sign;
        seg.paying += sign * paying;
        seg.mrr += sign * c.mrr;
        seg.dunning_open += sign * dunning;
    }

    /// Applies one fact; `None` when it changes nothing.
    fn apply(&mut self, e: &Entry) -> Option<(Cust, Cust, Flow)> {
        let before = self.get(e.customer);
        let (after, flow) = transition(before, e)?;
        self.set(e.customer, after);
        Some((before, after, flow))
    }

    /// Sets a customer's state, its stock following.
    fn set(&mut self, c: CustomerIx, after: Cust) {
        let before = self.get(c);
        self.add_stock(&before, -1);
        self.add_stock(&after, 1);
        let i = c as usize;
        if self.custs.len() <= i {
            self.custs.resize(i + 1, Cust::default());
        }
        self.custs[i] = after;
    }
}

/// What one fact does to a customer in state `before`: its state after and
/// the flow; `None` when it changes nothing.
fn transition(before: Cust, e: &Entry) -> Option<(Cust, Flow)> {
    let mut after = before;
    let subscribed = before.has(SUBSCRIBED);
    let flow = match e.kind {
        Kind::Joined | Kind::MrrChanged => {
            if e.kind == Kind::MrrChanged && !subscribed {
                return None;
            }
            after.plan = e.id;
            after.mrr = e.value;
            after.flags |= SUBSCRIBED | BILLED;
            if subscribed {
                if after == before {
                    return None;
                }
                Flow::MrrChanged
            } else {
                Flow::Joined {
                    reactivation: e.aux != 0 || before.has(BILLED),
                }
            }
        }
        Kind::Churned => {
            if !subscribed {
                return None;
            }
            after.flags &= !(SUBSCRIBED | DUNNING);
            Flow::Churned {
                kind: usize::from(e.aux != 0),
                closed_dunning: before.has(DUNNING),
            }
        }
        Kind::Segment => {
            if before.segment == e.id {
                return None;
            }
            after.segment = e.id;
            Flow::Segment
        }
        Kind::DunningOpened => {
            if !subscribed || before.has(DUNNING) {
                return None;
            }
            after.flags |= DUNNING;
            Flow::DunningOpened
        }
        Kind::DunningClosed => {
            if !before.has(DUNNING) {
                return None;
            }
            after.flags &= !DUNNING;
            Flow::DunningClosed {
                recovered: e.aux != 0,
            }
        }
        Kind::Nps | Kind::Csat | Kind::Ces | Kind::Refund => {
            if !before.has(BILLED) {
                return None;
            }
            match e.kind {
                Kind::Nps => Flow::Nps(e.aux),
                Kind::Csat => Flow::Csat(e.aux),
                Kind::Ces => Flow::Ces(e.aux),
                _ => Flow::Refund(e.value),
            }
        }
    };
    Some((after, flow))
}

// ---------------------------------------------------------------------------
// Period accumulation

/// Raw counters of one group in one period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Raw {
    new: i64,
    new_mrr: i64,
    reactivated: i64,
    reactivation_mrr: i64,
    churned: [i64; 2],
    churned_mrr: [i64; 2],
    expansion: i64,
    contraction: i64,
    moved_in: i64,
    moved_in_mrr: i64,
    moved_out: i64,
    moved_out_mrr: i64,
    cohort_lost: [i64; 2],
    cohort_lost_mrr: [i64; 2],
    cohort_expansion: i64,
    cohort_contraction: i64,
    dunning_opened: i64,
    dunning_recovered: i64,
    dunning_failed: i64,
    /// Detractors, passives, promoters.
    nps: [i64; 3],
    csat_sum: i64,
    csat_n: i64,
    ces_sum: i64,
    ces_n: i64,
    refunds: i64,
}

/// Per-period counters overall, per plan id and per segment id.
#[derive(Debug, Clone, Default)]
struct Acc {
    total: Raw,
    plans: Vec<Raw>,
    segments: Vec<Raw>,
}

impl Acc {
    fn heap_bytes(&self) -> usize {
        (self.plans.capacity() + self.segments.capacity()) * std::mem::size_of::<Raw>()
    }

    fn new(plans: usize, segments: usize) -> Self {
        Acc {
            total: Raw::default(),
            plans: vec![Raw::default(); plans],
            segments: vec![Raw::default(); segments],
        }
    }

    /// Applies `f` to the overall, plan and segment counters.
    fn at(&mut self, plan: u16, segment: u16, f: impl Fn(&mut Raw)) {
        f(&mut self.total);
        f(raw_at(&mut self.plans, plan));
        f(raw_at(&mut self.segments, segment));
    }
}

/// The counters of group `id`, grown to hold it (names interned after the
/// accumulator was made).
fn raw_at(v: &mut Vec<Raw>, id: u16) -> &mut Raw {
    let i = usize::from(id);
    if v.len() <= i {
        v.resize(i + 1, Raw::default());
    }
    &mut v[i]
}

/// A customer's start-of-period values, taken lazily at its first fact in
/// the period (nothing changed it since the period began).
#[derive(Debug, Clone, Copy, Default)]
struct CohortCust {
    start_mrr: i64,
    /// Period id (1-based) these values belong to; 0 = never taken.
    period: u32,
    start_plan: u16,
    start_segment: u16,
    /// In the start cohort and not lost yet.
    active: bool,
}

fn pos(x: i64) -> i64 {
    x.max(0)
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    if den == 0.0 {
        return None;
    }
    let r = num / den;
    r.is_finite().then_some(r)
}

/// One replay of the log over a list of period boundaries.
struct Replay {
    book: Book,
    cohort: Vec<CohortCust>,
    acc: Acc,
    start_total: Stock,
    start_plans: Vec<Stock>,
    start_segments: Vec<Stock>,
}

impl Replay {
    fn observe(&mut self, c: CustomerIx, period: u32, before: Cust, after: Cust, flow: Flow) {
        let i = c as usize;
        if self.cohort.len() <= i {
            self.cohort.resize(i + 1, CohortCust::default());
        }
        let cc = &mut self.cohort[i];
        if cc.period != period {
            *cc = CohortCust {
                start_mrr: before.mrr,
                period,
                start_plan: before.plan,
                start_segment: before.segment,
                active: before.has(SUBSCRIBED),
            };
        }
        let cc = *cc;
        let s = cc.start_mrr;
        let acc = &mut self.acc;
        count_flow(acc, before, after, flow, 1);
        // The start cohort, followed fact by fact (`span` keeps it in closed form).
        match flow {
            Flow::MrrChanged if cc.active => {
                let de = pos(after.mrr - s) - pos(before.mrr - s);
                let dc = pos(s - after.mrr) - pos(s - before.mrr);
                acc.at(cc.start_plan, cc.start_segment, |r| {
                    r.cohort_expansion += de;
                    r.cohort_contraction += dc;
                });
            }
            Flow::Churned { kind, .. } if cc.active => {
                self.cohort[i].active = false;
                acc.at(cc.start_plan, cc.start_segment, |r| {
                    r.cohort_expansion -= pos(before.mrr - s);
                    r.cohort_contraction -= pos(s - before.mrr);
                    r.cohort_lost[kind] += 1;
                    r.cohort_lost_mrr[kind] += s;
                });
            }
            _ => {}
        }
    }
}

/// Counts what one fact did in its period (every counter but the start
/// cohort's) into `acc`: `sign` 1 adds it, -1 takes it back out.
fn count_flow(acc: &mut Acc, before: Cust, after: Cust, flow: Flow, sign: i64) {
    let (plan, seg) = (after.plan, after.segment);
    match flow {
        Flow::Joined { reactivation } => acc.at(plan, seg, |r| {
            if reactivation {
                r.reactivated += sign;
                r.reactivation_mrr += sign * after.mrr;
            } else {
                r.new += sign;
                r.new_mrr += sign * after.mrr;
            }
        }),
        Flow::MrrChanged => {
            let d = after.mrr - before.mrr;
            acc.at(plan, seg, |r| {
                r.expansion += sign * pos(d);
                r.contraction += sign * pos(-d);
            });
            if before.plan != after.plan {
                let out = raw_at(&mut acc.plans, before.plan);
                out.moved_out += sign;
                out.moved_out_mrr += sign * before.mrr;
                let inn = raw_at(&mut acc.plans, after.plan);
                inn.moved_in += sign;
                inn.moved_in_mrr += sign * before.mrr;
            }
        }
        Flow::Churned {
            kind,
            closed_dunning,
        } => acc.at(plan, seg, |r| {
            r.churned[kind] += sign;
            r.churned_mrr[kind] += sign * before.mrr;
            r.dunning_failed += sign * i64::from(closed_dunning);
        }),
        Flow::Segment => {
            if before.has(SUBSCRIBED) {
                let out = raw_at(&mut acc.segments, before.segment);
                out.moved_out += sign;
                out.moved_out_mrr += sign * before.mrr;
                let inn = raw_at(&mut acc.segments, after.segment);
                inn.moved_in += sign;
                inn.moved_in_mrr += sign * before.mrr;
            }
        }
        Flow::DunningOpened => acc.at(plan, seg, |r| r.dunning_opened += sign),
        Flow::DunningClosed { recovered } => acc.at(plan, seg, |r| {
            if recovered {
                r.dunning_recovered += sign;
            } else {
                r.dunning_failed += sign;
            }
        }),
        Flow::Nps(score) => {
            let b = match score {
                9.. => 2,
                7 | 8 => 1,
                _ => 0,
            };
            acc.at(plan, seg, |r| r.nps[b] += sign);
        }
        Flow::Csat(score) => acc.at(plan, seg, |r| {
            r.csat_sum += sign * i64::from(score);
            r.csat_n += sign;
        }),
        Flow::Ces(score) => acc.at(plan, seg, |r| {
            r.ces_sum += sign * i64::from(score);
            r.ces_n += sign;
        }),
        Flow::Refund(amount) => acc.at(plan, seg, |r| r.refunds += sign * amount),
    }
}

/// Builds the metrics of one group from its counters and stocks.
fn metrics(raw: &Raw, start: &Stock, end: &Stock, period_ms: f64) -> Metrics {
    let cs = start.customers as f64;
    let ms = start.mrr as f64;
    let lost = raw.cohort_lost[0] + raw.cohort_lost[1];
    let cohort_churned_mrr = raw.cohort_lost_mrr[0] + raw.cohort_lost_mrr[1];
    let churned_mrr = raw.churned_mrr[0] + raw.churned_mrr[1];
    let (cx, cc) = (raw.cohort_expansion, raw.cohort_contraction);
    let customer_churn_rate = ratio(lost as f64, cs);
    let arpa = ratio(end.mrr as f64, end.paying as f64);
    let monthly_churn = customer_churn_rate
        .filter(|r| *r > 0.0)
        .and_then(|r| ratio(r * (30 * DAY_MS) as f64, period_ms));
    let ltv = arpa.zip(monthly_churn).and_then(|(a, m)| ratio(a, m));
    let nps_n = raw.nps.iter().sum::<i64>();
    let dunning_closed = raw.dunning_recovered + raw.dunning_failed;
    Metrics {
        customers_start: start.customers,
        customers_end: end.customers,
        paying_start: start.paying,
        paying_end: end.paying,
        new: raw.new,
        reactivated: raw.reactivated,
        churned_voluntary: raw.churned[0],
        churned_involuntary: raw.churned[1],
        churned_total: raw.churned[0] + raw.churned[1],
        moved_in: raw.moved_in,
        moved_out: raw.moved_out,
        cohort_churned_voluntary: raw.cohort_lost[0],
        cohort_churned_involuntary: raw.cohort_lost[1],
        customer_churn_rate,
        voluntary_churn_rate: ratio(raw.cohort_lost[0] as f64, cs),
        involuntary_churn_rate: ratio(raw.cohort_lost[1] as f64, cs),
        customer_retention_rate: ratio(
            (end.customers - raw.new - raw.reactivated - raw.moved_in) as f64,
            cs,
        ),
        mrr_start: start.mrr,
        mrr_end: end.mrr,
        new_mrr: raw.new_mrr,
        reactivation_mrr: raw.reactivation_mrr,
        expansion_mrr: raw.expansion,
        contraction_mrr: raw.contraction,
        churned_mrr,
        churned_mrr_voluntary: raw.churned_mrr[0],
        churned_mrr_involuntary: raw.churned_mrr[1],
        moved_in_mrr: raw.moved_in_mrr,
        moved_out_mrr: raw.moved_out_mrr,
        cohort_churned_mrr,
        cohort_expansion_mrr: cx,
        cohort_contraction_mrr: cc,
        lost_mrr_rate: ratio(churned_mrr as f64, ms),
        gross_mrr_churn_rate: ratio((cohort_churned_mrr + cc) as f64, ms),
        net_mrr_churn_rate: ratio((cohort_churned_mrr + cc - cx) as f64, ms),
        grr: ratio((start.mrr - cc - cohort_churned_mrr) as f64, ms),
        nrr: ratio((start.mrr + cx - cc - cohort_churned_mrr) as f64, ms),
        dunning_opened: raw.dunning_opened,
        dunning_recovered: raw.dunning_recovered,
        dunning_failed: raw.dunning_failed,
        dunning_open_end: end.dunning_open,
        dunning_recovery_rate: ratio(raw.dunning_recovered as f64, dunning_closed as f64),
        nps: ratio(((raw.nps[2] - raw.nps[0]) * 100) as f64, nps_n as f64),
        nps_responses: nps_n,
        nps_promoters: raw.nps[2],
        nps_passives: raw.nps[1],
        nps_detractors: raw.nps[0],
        csat_avg: ratio(raw.csat_sum as f64, raw.csat_n as f64),
        csat_responses: raw.csat_n,
        ces_avg: ratio(raw.ces_sum as f64, raw.ces_n as f64),
        ces_responses: raw.ces_n,
        refunds: raw.refunds,
        arpa,
        ltv,
    }
}

/// Metrics of each group that had stock or a flow in the period.
fn group_metrics(
    names: &Interner,
    raws: &[Raw],
    starts: &[Stock],
    ends: &[Stock],
    period_ms: f64,
) -> BTreeMap<String, Metrics> {
    let zero = Stock::default();
    let empty = Raw::default();
    let mut out = BTreeMap::new();
    for (id, name) in names.names.iter().enumerate() {
        let raw = raws.get(id).unwrap_or(&empty);
        let start = starts.get(id).unwrap_or(&zero);
        let end = ends.get(id).unwrap_or(&zero);
        if *raw == empty && *start == zero && *end == zero {
            continue;
        }
        out.insert(name.to_string(), metrics(raw, start, end, period_ms));
    }
    out
}

// ---------------------------------------------------------------------------
// Merging reports of disjoint customer sets

impl Stock {
    fn add(&mut self, o: &Stock) {
        self.customers += o.customers;
        self.paying += o.paying;
        self.mrr += o.mrr;
        self.dunning_open += o.dunning_open;
    }
}

impl Raw {
    fn add(&mut self, o: &Raw) {
        let pairs = [
            (&mut self.new, o.new),
            (&mut self.new_mrr, o.new_mrr),
            (&mut self.reactivated, o.reactivated),
            (&mut self.reactivation_mrr, o.reactivation_mrr),
            (&mut self.expansion, o.expansion),
            (&mut self.contraction, o.contraction),
            (&mut self.moved_in, o.moved_in),
            (&mut self.moved_in_mrr, o.moved_in_mrr),
            (&mut self.moved_out, o.moved_out),
            (&mut self.moved_out_mrr, o.moved_out_mrr),
            (&mut self.cohort_expansion, o.cohort_expansion),
            (&mut self.cohort_contraction, o.cohort_contraction),
            (&mut self.dunning_opened, o.dunning_opened),
            (&mut self.dunning_recovered, o.dunning_recovered),
            (&mut self.dunning_failed, o.dunning_failed),
            (&mut self.csat_sum, o.csat_sum),
            (&mut self.csat_n, o.csat_n),
            (&mut self.ces_sum, o.ces_sum),
            (&mut self.ces_n, o.ces_n),
            (&mut self.refunds, o.refunds),
        ];
        for (a, b) in pairs {
            *a += b;
        }
        for i in 0..2 {
            self.churned[i] += o.churned[i];
            self.churned_mrr[i] += o.churned_mrr[i];
            self.cohort_lost[i] += o.cohort_lost[i];
            self.cohort_lost_mrr[i] += o.cohort_lost_mrr[i];
        }
        for i in 0..3 {
            self.nps[i] += o.nps[i];
        }
    }
}

impl Metrics {
    /// The additive counters and stocks this group's metrics were built from
    /// (start stock, counters, end stock). Score sums come back from mean x
    /// count, exact for integer scores.
    fn parts(&self) -> (Stock, Raw, Stock) {
        let sum = |avg: Option<f64>, n: i64| (avg.unwrap_or(0.0) * n as f64).round() as i64;
        let start = Stock {
            customers: self.customers_start,
            paying: self.paying_start,
            mrr: self.mrr_start,
            dunning_open: 0,
        };
        let end = Stock {
            customers: self.customers_end,
            paying: self.paying_end,
            mrr: self.mrr_end,
            dunning_open: self.dunning_open_end,
        };
        let raw = Raw {
            new: self.new,
            new_mrr: self.new_mrr,
            reactivated: self.reactivated,
            reactivation_mrr: self.reactivation_mrr,
            churned: [self.churned_voluntary, self.churned_involuntary],
            churned_mrr: [self.churned_mrr_voluntary, self.churned_mrr_involuntary],
            expansion: self.expansion_mrr,
            contraction: self.contraction_mrr,
            moved_in: self.moved_in,
            moved_in_mrr: self.moved_in_mrr,
            moved_out: self.moved_out,
            moved_out_mrr: self.moved_out_mrr,
            cohort_lost: [
                self.cohort_churned_voluntary,
                self.cohort_churned_involuntary,
            ],
            // Only the total is reported, and only the total is used.
            cohort_lost_mrr: [self.cohort_churned_mrr, 0],
            cohort_expansion: self.cohort_expansion_mrr,
            cohort_contraction: self.cohort_contraction_mrr,
            dunning_opened: self.dunning_opened,
            dunning_recovered: self.dunning_recovered,
            dunning_failed: self.dunning_failed,
            nps: [self.nps_detractors, self.nps_passives, self.nps_promoters],
            csat_sum: sum(self.csat_avg, self.csat_responses),
            csat_n: self.csat_responses,
            ces_sum: sum(self.ces_avg, self.ces_responses),
            ces_n: self.ces_responses,
            refunds: self.refunds,
        };
        (start, raw, end)
    }
}

/// Sums the counters and stocks of `groups` and recomputes every ratio from
/// the sums.
fn merge_metrics<'a>(groups: impl IntoIterator<Item = &'a Metrics>, period_ms: f64) -> Metrics {
    let (mut start, mut raw, mut end) = (Stock::default(), Raw::default(), Stock::default());
    for m in groups {
        let (s, r, e) = m.parts();
        start.add(&s);
        raw.add(&r);
        end.add(&e);
    }
    metrics(&raw, &start, &end, period_ms)
}

fn merge_groups(
    reports: &[&PeriodReport],
    pick: fn(&PeriodReport) -> &BTreeMap<String, Metrics>,
    period_ms: f64,
) -> BTreeMap<String, Metrics> {
    let mut by_name: BTreeMap<&str, Vec<&Metrics>> = BTreeMap::new();
    for r in reports {
        for (name, m) in pick(r) {
            by_name.entry(name).or_default().push(m);
        }
    }
    by_name
        .into_iter()
        .map(|(name, ms)| (name.to_string(), merge_metrics(ms, period_ms)))
        .collect()
}

/// Keeps the `cap` largest groups of `groups` (by customers at the start
/// and end) and merges the rest into [`OTHER_GROUP`].
fn fold_groups(groups: &mut BTreeMap<String, Metrics>, cap: usize, period_ms: f64) {
    if groups.keys().filter(|n| n.as_str() != OTHER_GROUP).count() <= cap {
        return;
    }
    let mut by_size: Vec<(i64, String)> = groups
        .iter()
        .filter(|(n, _)| n.as_str() != OTHER_GROUP)
        .map(|(n, m)| (-(m.customers_start + m.customers_end), n.clone()))
        .collect();
    by_size.sort();
    let mut folded: Vec<Metrics> = Vec::new();
    for (_, n) in by_size.iter().skip(cap) {
        folded.extend(groups.remove(n));
    }
    folded.extend(groups.remove(OTHER_GROUP));
    groups.insert(OTHER_GROUP.into(), merge_metrics(&folded, period_ms));
}

impl PeriodReport {
    /// Keeps at most `cap` plans and `cap` segments (the largest; the rest
    /// merged into [`OTHER_GROUP`], which is not counted): each is a label
    /// value of every business gauge.
    pub fn fold_groups(&mut self, cap: usize) {
        let period_ms = match (parse_ts(&self.start), parse_ts(&self.end)) {
            (Ok(s), Ok(e)) => (e - s) as f64,
            _ => 0.0,
        };
        fold_groups(&mut self.by_plan, cap, period_ms);
        fold_groups(&mut self.by_segment, cap, period_ms);
    }

    /// Combines reports on disjoint sets of customers (one per partition's
    /// ledger) into one: every count, stock and amount is summed, per group
    /// and overall, and every ratio is recomputed from the sums (`None` when
    /// its denominator is 0), so a merged rate weighs each part by its size
    /// instead of averaging rates. The period spans the earliest start to the
    /// latest end; LTV uses the longest part's period length (the parts are
    /// windows of the same length ending at each partition's clock).
    /// `None` when `reports` is empty.
    pub fn merge<'a>(reports: impl IntoIterator<Item = &'a PeriodReport>) -> Option<PeriodReport> {
        let reports: Vec<&PeriodReport> = reports.into_iter().collect();
        let bounds = |r: &PeriodReport| Some((parse_ts(&r.start).ok()?, parse_ts(&r.end).ok()?));
        let spans: Vec<(Ts, Ts)> = reports.iter().filter_map(|r| bounds(r)).collect();
        let first = reports.first()?;
        let start = spans.iter().map(|s| s.0).min();
        let end = spans.iter().map(|s| s.1).max();
        let period_ms = spans.iter().map(|(s, e)| e - s).max().unwrap_or(0) as f64;
        Some(PeriodReport {
            start: start.map_or_else(|| first.start.clone(), format_ts),
            end: end.map_or_else(|| first.end.clone(), format_ts),
            overall: merge_metrics(reports.iter().map(|r| &r.overall), period_ms),
            by_plan: merge_groups(&reports, |r| &r.by_plan, period_ms),
            by_segment: merge_groups(&reports, |r| &r.by_segment, period_ms),
        })
    }
}

fn month_start(ts: Ts) -> Option<Ts> {
    let d = DateTime::<Utc>::from_timestamp_millis(ts)?.date_naive();
    let m = NaiveDate::from_ymd_opt(d.year(), d.month(), 1)?;
    Some(m.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// The slot of each customer with a logged fact, by customer index: 4 bytes
/// a customer the engine knows, where a hash map cost twice that per
/// customer with a fact, and a probe.
#[derive(Debug, Default)]
struct Slots(Vec<Slot>);

impl Slots {
    const NONE: Slot = Slot::MAX;

    fn get(&self, c: CustomerIx) -> Option<Slot> {
        self.0.get(c as usize).copied().filter(|&s| s != Self::NONE)
    }

    fn insert(&mut self, c: CustomerIx, slot: Slot) {
        let i = c as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, Self::NONE);
        }
        self.0[i] = slot;
    }

    /// (customer, slot) of every customer with a slot, by customer.
    fn iter(&self) -> impl Iterator<Item = (CustomerIx, Slot)> + '_ {
        (self.0.iter().enumerate())
            .filter(|(_, s)| **s != Self::NONE)
            .map(|(c, s)| (c as CustomerIx, *s))
    }

    fn heap_bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<Slot>()
    }
}

/// `e` with its customer's slot.
fn slotted(slots: &Slots, e: Entry) -> Entry {
    Entry {
        customer: slots.get(e.customer).unwrap_or(Slot::MAX),
        ..e
    }
}

/// The log's facts in `[from, to)` in log order, with slots.
fn log_range<'a>(
    log: &'a FactLog,
    slots: &'a Slots,
    from: Ts,
    to: Ts,
) -> impl Iterator<Item = Entry> + 'a {
    log.range(from, to).map(|e| slotted(slots, e))
}

/// Month starts from `first` to `last` (both month starts), both included.
fn month_bounds(first: Ts, last: Ts) -> Vec<Ts> {
    let mut bounds = vec![first];
    let mut b = first;
    while let Some(n) = next_month(b).filter(|&n| n <= last) {
        bounds.push(n);
        b = n;
    }
    bounds
}

fn next_month(ts: Ts) -> Option<Ts> {
    let d = DateTime::<Utc>::from_timestamp_millis(ts)?.date_naive();
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    let n = NaiveDate::from_ymd_opt(y, m, 1)?;
    Some(n.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

// ---------------------------------------------------------------------------
// The ledger

/// Business facts of every customer, and the period reports computed from
/// them. See the module doc for the definitions.
#[derive(Debug)]
pub struct Ledger {
    log: FactLog,
    /// The state now, by slot.
    live: Book,
    /// Time of each customer's latest fact, by slot (keeps its history in
    /// arrival order).
    last_ts: Vec<Ts>,
    /// Slot of each customer with a logged fact: the books are dense over
    /// these, not over every customer the engine knows.
    slots: Slots,
    plans: Interner,
    segments: Interner,
    /// The rolling window and the open calendar month, kept as facts arrive
    /// (derived from the log: not stored, rebuilt when next asked for).
    views: Views,
    /// Reports of the calendar months before the open one, from the first
    /// fact's month; `None` when they must be replayed (never computed, or a
    /// late fact landed in one).
    closed: Option<Vec<PeriodReport>>,
}

/// A ledger as a snapshot stores it (format v1): customer states and latest
/// fact times indexed by the engine's customer index, up to the last one
/// with a fact.
#[derive(serde::Serialize)]
struct LedgerRef<'a> {
    log: &'a FactLog,
    live: BookRef<'a>,
    last_ts: Vec<Ts>,
    plans: &'a Interner,
    segments: &'a Interner,
}

/// [`Book`] as [`LedgerRef`] stores it.
#[derive(serde::Serialize)]
struct BookRef<'a> {
    custs: Vec<Cust>,
    total: &'a Stock,
    plans: &'a [Stock],
    segments: &'a [Stock],
}

/// What [`LedgerRef`] stored.
#[derive(serde::Deserialize)]
struct LedgerWire {
    log: FactLog,
    live: Book,
    last_ts: Vec<Ts>,
    plans: Interner,
    segments: Interner,
}

impl Serialize for Ledger {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.slots.iter().last().map_or(0, |(c, _)| c as usize + 1);
        let mut custs = vec![Cust::default(); n];
        let mut last_ts = vec![Ts::MIN; n];
        for (c, slot) in self.slots.iter() {
            custs[c as usize] = self.live.get(slot);
            last_ts[c as usize] = self.last_ts[slot as usize];
        }
        LedgerRef {
            log: &self.log,
            live: BookRef {
                custs,
                total: &self.live.total,
                plans: &self.live.plans,
                segments: &self.live.segments,
            },
            last_ts,
            plans: &self.plans,
            segments: &self.segments,
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Ledger {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = LedgerWire::deserialize(d)?;
        let mut live = Book {
            custs: Vec::new(),
            ..w.live
        };
        let (mut last_ts, mut slots) = (Vec::new(), Slots::default());
        for (c, (&cust, &ts)) in w.live.custs.iter().zip(&w.last_ts).enumerate() {
            if ts != Ts::MIN || cust != Cust::default() {
                slots.insert(c as CustomerIx, live.custs.len() as Slot);
                live.custs.push(cust);
                last_ts.push(ts);
            }
        }
        let mut l = Ledger {
            log: w.log,
            live,
            last_ts,
            slots,
            plans: w.plans,
            segments: w.segments,
            views: Views::default(),
            closed: None,
        };
        l.plans.rebuild();
        l.segments.rebuild();
        Ok(l)
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Ledger {
            log: FactLog::default(),
            live: Book::default(),
            last_ts: Vec::new(),
            slots: Slots::default(),
            plans: Interner::with(&[OTHER_GROUP]),
            segments: Interner::with(&[OTHER_GROUP, NO_SEGMENT]),
            views: Views::default(),
            closed: None,
        }
    }

    /// The log in time order, with slots for customers.
    fn slotted(&self) -> impl Iterator<Item = Entry> + '_ {
        self.log.iter().map(|e| slotted(&self.slots, e))
    }

    /// Records a fact at event time `ts`. O(1) amortized. Facts that change
    /// nothing are dropped; a fact older than the customer's previous one is
    /// recorded at the previous one's time (see the module doc).
    pub fn record(&mut self, ts: Ts, customer: CustomerIx, fact: Fact) {
        let known = self.slots.get(customer);
        let ts = known.map_or(ts, |s| ts.max(self.last_ts[s as usize]));
        let amount = |v: i64| v.clamp(0, MAX_AMOUNT);
        let (kind, id, value, aux) = match fact {
            Fact::Joined {
                plan,
                mrr,
                reactivation,
            } => (
                Kind::Joined,
                self.plans.intern(&plan),
                amount(mrr),
                u8::from(reactivation),
            ),
            Fact::MrrChanged { plan, new_mrr, .. } => (
                Kind::MrrChanged,
                self.plans.intern(&plan),
                amount(new_mrr),
                0,
            ),
            Fact::Churned { kind, mrr } => (
                Kind::Churned,
                0,
                amount(mrr),
                u8::from(kind == CancelKind::Involuntary),
            ),
            Fact::Segment { segment } => (Kind::Segment, self.segments.intern(&segment), 0, 0),
            Fact::DunningOpened => (Kind::DunningOpened, 0, 0, 0),
            Fact::DunningClosed { recovered } => (Kind::DunningClosed, 0, 0, u8::from(recovered)),
            Fact::Nps { score } => (Kind::Nps, 0, 0, score),
            Fact::Csat { score } => (Kind::Csat, 0, 0, score),
            Fact::Ces { score } => (Kind::Ces, 0, 0, score),
            Fact::Refund { amount: a } => (Kind::Refund, 0, amount(a), 0),
        };
        let e = Entry {
            ts,
            value,
            customer,
            id,
            kind,
            aux,
        };
        let slot = known.unwrap_or(self.last_ts.len() as Slot);
        let slotted = Entry {
            customer: slot,
            ..e
        };
        let Some(change) = self.live.apply(&slotted) else {
            return;
        };
        match known {
            Some(s) => self.last_ts[s as usize] = ts,
            None => {
                self.slots.insert(customer, slot);
                self.last_ts.push(ts);
            }
        }
        self.log.push(e);
        if self.views.month.as_ref().is_some_and(|m| ts < m.start) {
            self.closed = None;
        }
        self.views.push(slotted, change);
    }

    /// Moves the kept periods' end to `now`, closing each calendar month it
    /// passes; rebuilds them from the log when `now` is before their end.
    fn advance_views(&mut self, now: Ts) {
        if self.views.end.is_none_or(|end| now < end) {
            self.views = Views::build(now, self.slotted());
            self.closed = None;
            return;
        }
        loop {
            let end = self.views.end.unwrap_or(now);
            let close = (self.views.month.as_ref())
                .and_then(|m| next_month(m.start))
                .filter(|&n| n <= now);
            let to = close.unwrap_or(now);
            if to > end {
                let entering = log_range(&self.log, &self.slots, end, to);
                self.views.advance(to, entering);
            }
            let Some(n) = close else { break };
            if let Some(m) = &self.views.month {
                let r = self.span_report(m);
                if let Some(c) = &mut self.closed {
                    c.push(r);
                }
            }
            let Views { head, month, .. } = &mut self.views;
            if let Some(m) = month {
                m.roll(End::new(head, &self.live), n);
            }
        }
    }

    /// Metrics over the rolling window `[now - window, now)`: the same as
    /// [`Self::report`], kept up to date as facts arrive, so that it costs
    /// O(plans + segments) while `now` moves forward (a `now` that moves back
    /// rebuilds the window from the log).
    pub fn rolling(&mut self, window: Ts, now: Ts) -> PeriodReport {
        let start = now.saturating_sub(window.max(0));
        self.advance_views(now);
        let end = End::new(&self.views.head, &self.live);
        let span = match self.views.rolling.take() {
            Some(mut s) if s.start <= start => {
                s.advance(
                    end,
                    start,
                    log_range(&self.log, &self.slots, s.start, start),
                );
                s
            }
            _ => Span::build(end, start, log_range(&self.log, &self.slots, Ts::MIN, now)),
        };
        let r = self.span_report(&span);
        self.views.rolling = Some(span);
        r
    }

    /// The report of a kept period (it ends where the views do).
    fn span_report(&self, s: &Span) -> PeriodReport {
        let (t, end) = (&s.tail, self.views.end.unwrap_or(s.start));
        let at_start = (&t.total, &t.plans[..], &t.segments[..]);
        self.period_report(s.start, end, &s.acc, at_start, self.views.end_stock())
    }

    /// Metrics of `[start, end)` (an `end` before `start` is taken as `start`).
    pub fn report(&self, start: Ts, end: Ts) -> PeriodReport {
        let mut v = self.replay(&[start, end.max(start)]);
        v.pop().expect("two boundaries make one period")
    }

    /// One report per UTC calendar month, from the month of the first fact to
    /// the month containing `until`; the last one ends at `until` (and is
    /// empty when `until` is a month's first instant). Empty when there are
    /// no facts or `until` is before the first one.
    ///
    /// Equal to a replay of the log, but kept as facts arrive: the open month
    /// is a span, and a closed month's report is final (replayed again only
    /// if a late fact lands in it). O(months x groups) while `until` moves
    /// forward.
    pub fn monthly(&mut self, until: Ts) -> Vec<PeriodReport> {
        let Some(first) = self.log.first_ts().filter(|&f| until >= f) else {
            return Vec::new();
        };
        let (Some(first_month), Some(this_month)) = (month_start(first), month_start(until)) else {
            return Vec::new();
        };
        self.advance_views(until);
        let m = match self.views.month.take() {
            Some(m) => m,
            None => {
                self.closed = None;
                let end = End::new(&self.views.head, &self.live);
                Span::build(
                    end,
                    this_month,
                    log_range(&self.log, &self.slots, Ts::MIN, until),
                )
            }
        };
        let open = self.span_report(&m);
        let closed = match self.closed.take() {
            Some(c) => c,
            None => self.replay(&month_bounds(first_month, m.start)),
        };
        self.views.month = Some(m);
        let mut out = closed.clone();
        self.closed = Some(closed);
        out.push(open);
        out
    }

    /// [`Self::monthly`] by a replay of the whole log (the reference the kept
    /// months are tested against).
    #[cfg(test)]
    fn monthly_replay(&self, until: Ts) -> Vec<PeriodReport> {
        let Some(first) = self.log.first_ts().filter(|&f| until >= f) else {
            return Vec::new();
        };
        let (Some(first_month), Some(this_month)) = (month_start(first), month_start(until)) else {
            return Vec::new();
        };
        let mut bounds = month_bounds(first_month, this_month);
        bounds.push(until);
        self.replay(&bounds)
    }

    /// Reports for consecutive periods `[bounds[i], bounds[i + 1])`, from one
    /// pass over the log. `bounds` must be non-decreasing.
    fn replay(&self, bounds: &[Ts]) -> Vec<PeriodReport> {
        let (np, ns) = (self.plans.len(), self.segments.len());
        let mut r = Replay {
            book: Book {
                custs: Vec::with_capacity(self.last_ts.len()),
                total: Stock::default(),
                plans: vec![Stock::default(); np],
                segments: vec![Stock::default(); ns],
            },
            cohort: Vec::with_capacity(self.last_ts.len()),
            acc: Acc::new(np, ns),
            start_total: Stock::default(),
            start_plans: Vec::new(),
            start_segments: Vec::new(),
        };
        let mut out = Vec::with_capacity(bounds.len().saturating_sub(1));
        let mut crossed = 0;
        let cross = |r: &mut Replay, i: usize, out: &mut Vec<PeriodReport>| {
            if i > 0 {
                let (start, end) = (bounds[i - 1], bounds[i]);
                let at_start = (&r.start_total, &r.start_plans[..], &r.start_segments[..]);
                out.push(self.period_report(start, end, &r.acc, at_start, &r.book));
            }
            if i + 1 < bounds.len() {
                r.acc = Acc::new(np, ns);
                r.start_total = r.book.total;
                r.start_plans.clone_from(&r.book.plans);
                r.start_segments.clone_from(&r.book.segments);
            }
        };
        for e in self.slotted() {
            while crossed < bounds.len() && e.ts >= bounds[crossed] {
                cross(&mut r, crossed, &mut out);
                crossed += 1;
            }
            if crossed == bounds.len() {
                break;
            }
            if let Some((before, after, flow)) = r.book.apply(&e)
                && crossed > 0
            {
                r.observe(e.customer, crossed as u32, before, after, flow);
            }
        }
        while crossed < bounds.len() {
            cross(&mut r, crossed, &mut out);
            crossed += 1;
        }
        out
    }

    /// The report of `[start, end)` from its counters, the stock at its
    /// start (overall, per plan, per segment) and the book at its end.
    fn period_report(
        &self,
        start: Ts,
        end: Ts,
        acc: &Acc,
        at_start: (&Stock, &[Stock], &[Stock]),
        at_end: &Book,
    ) -> PeriodReport {
        let period_ms = end as f64 - start as f64;
        let (total, plans, segments) = at_start;
        PeriodReport {
            start: format_ts(start),
            end: format_ts(end),
            overall: metrics(&acc.total, total, &at_end.total, period_ms),
            by_plan: group_metrics(&self.plans, &acc.plans, plans, &at_end.plans, period_ms),
            by_segment: group_metrics(
                &self.segments,
                &acc.segments,
                segments,
                &at_end.segments,
                period_ms,
            ),
        }
    }

    /// Current stock overall, per plan and per segment.
    pub fn current(&self) -> Snapshot {
        let pick = |names: &Interner, v: &[Stock]| {
            v.iter()
                .enumerate()
                .filter(|(_, s)| **s != Stock::default())
                .map(|(id, s)| (names.names[id].to_string(), *s))
                .collect()
        };
        Snapshot {
            overall: self.live.total,
            by_plan: pick(&self.plans, &self.live.plans),
            by_segment: pick(&self.segments, &self.live.segments),
        }
    }

    /// Customers in an open dunning period now.
    pub fn open_dunning(&self) -> i64 {
        self.live.total.dunning_open
    }

    /// Subscribed customers now (any MRR).
    pub fn subscribed(&self) -> i64 {
        self.live.total.customers
    }

    /// Customers with MRR > 0 now.
    pub fn paying(&self) -> i64 {
        self.live.total.paying
    }

    /// Total MRR now, minor units.
    pub fn mrr(&self) -> i64 {
        self.live.total.mrr
    }

    /// Facts stored (facts that changed nothing are not stored).
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// True when no fact is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes held (for the memory budget and a gauge).
    pub fn heap_bytes(&self) -> usize {
        self.log.heap_bytes()
            + self.live.custs.capacity() * std::mem::size_of::<Cust>()
            + self.last_ts.capacity() * std::mem::size_of::<Ts>()
            + (self.live.plans.capacity() + self.live.segments.capacity())
                * std::mem::size_of::<Stock>()
            + self.slots.heap_bytes()
            + self.plans.heap_bytes()
            + self.segments.heap_bytes()
            + self.views.heap_bytes()
            + self.closed.as_ref().map_or(0, |c| c.capacity()) * std::mem::size_of::<PeriodReport>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn t(s: &str) -> Ts {
        parse_ts(s).expect("test timestamp")
    }

    fn joined(plan: &str, mrr: i64, reactivation: bool) -> Fact {
        Fact::Joined {
            plan: plan.into(),
            mrr,
            reactivation,
        }
    }

    fn changed(plan: &str, old_mrr: i64, new_mrr: i64) -> Fact {
        Fact::MrrChanged {
            plan: plan.into(),
            old_mrr,
            new_mrr,
        }
    }

    fn churned(kind: CancelKind, mrr: i64) -> Fact {
        Fact::Churned { kind, mrr }
    }

    fn segment(s: &str) -> Fact {
        Fact::Segment { segment: s.into() }
    }

    use CancelKind::{Involuntary, Voluntary};

    const A: u32 = 0;
    const B: u32 = 1;
    const C: u32 = 2;
    const D: u32 = 3;
    const E: u32 = 4;
    const F: u32 = 5;
    const G: u32 = 6;
    const H: u32 = 7;

    /// The golden story. Plans: basic, pro, free; segments: smb, ent, none.
    ///
    /// December 2025 (nobody subscribed on Dec 1):
    ///   A pro 5000 smb, B basic 1000 smb, C pro 2000 ent, D basic 1000 (no
    ///   segment), E basic 1000 ent join; G basic 1000 ent joins and churns.
    /// January 2026, window [Jan 1, Jan 31):
    ///   D dunning opens (2), A dunning opens (3) and recovers (4),
    ///   B basic 1000 -> pro 5000 (5: expansion 4000 under pro),
    ///   C pro 2000 -> free 0 (6: contraction 2000 under free; still a customer),
    ///   F smb joins basic 1000 (7) and churns voluntarily (20),
    ///   NPS A 10, B 9, C 3, H 8; CSAT A 5, C 2; CES H 3,
    ///   E churns voluntarily (10) and is refunded 500,
    ///   G reactivates on pro 5000 (12), H ent joins pro 5000 (15),
    ///   D churns involuntarily by dunning expiry (16),
    ///   A moves smb -> ent (25), B dunning opens (30).
    ///   A churns at Jan 31 00:00, exactly at the window end: not in it.
    fn fixture() -> Ledger {
        let mut l = Ledger::new();
        let mut r = |ts: &str, c: u32, f: Fact| l.record(t(ts), c, f);
        r("2025-12-01T09:00:00Z", A, segment("smb"));
        r("2025-12-01T09:00:00Z", B, segment("smb"));
        r("2025-12-01T09:00:00Z", C, segment("ent"));
        r("2025-12-01T09:00:00Z", E, segment("ent"));
        r("2025-12-01T09:00:00Z", G, segment("ent"));
        r("2025-12-02T12:00:00Z", A, joined("pro", 5000, false));
        r("2025-12-03T12:00:00Z", B, joined("basic", 1000, false));
        r("2025-12-04T12:00:00Z", C, joined("pro", 2000, false));
        r("2025-12-05T12:00:00Z", D, joined("basic", 1000, false));
        r("2025-12-06T12:00:00Z", E, joined("basic", 1000, false));
        r("2025-12-07T12:00:00Z", G, joined("basic", 1000, false));
        r("2025-12-20T12:00:00Z", G, churned(Voluntary, 1000));
        r("2026-01-02T12:00:00Z", D, Fact::DunningOpened);
        r("2026-01-03T12:00:00Z", A, Fact::DunningOpened);
        r(
            "2026-01-04T12:00:00Z",
            A,
            Fact::DunningClosed { recovered: true },
        );
        r("2026-01-05T12:00:00Z", B, changed("pro", 1000, 5000));
        r("2026-01-06T12:00:00Z", C, changed("free", 2000, 0));
        r("2026-01-07T12:00:00Z", F, segment("smb"));
        r("2026-01-07T12:00:00Z", F, joined("basic", 1000, false));
        r("2026-01-08T12:00:00Z", A, Fact::Nps { score: 10 });
        r("2026-01-08T12:00:00Z", A, Fact::Csat { score: 5 });
        r("2026-01-09T12:00:00Z", B, Fact::Nps { score: 9 });
        r("2026-01-09T12:00:00Z", C, Fact::Nps { score: 3 });
        r("2026-01-09T12:00:00Z", C, Fact::Csat { score: 2 });
        r("2026-01-10T12:00:00Z", E, churned(Voluntary, 1000));
        r("2026-01-10T12:00:00Z", E, Fact::Refund { amount: 500 });
        r("2026-01-12T12:00:00Z", G, joined("pro", 5000, true));
        r("2026-01-15T12:00:00Z", H, segment("ent"));
        r("2026-01-15T12:00:00Z", H, joined("pro", 5000, false));
        r("2026-01-16T12:00:00Z", D, churned(Involuntary, 1000));
        r(
            "2026-01-16T12:00:00Z",
            D,
            Fact::DunningClosed { recovered: false },
        );
        r("2026-01-18T12:00:00Z", H, Fact::Nps { score: 8 });
        r("2026-01-18T12:00:00Z", H, Fact::Ces { score: 3 });
        r("2026-01-20T12:00:00Z", F, churned(Voluntary, 1000));
        r("2026-01-25T12:00:00Z", A, segment("ent"));
        r("2026-01-30T12:00:00Z", B, Fact::DunningOpened);
        r("2026-01-31T00:00:00Z", A, churned(Voluntary, 5000));
        l
    }

    /// Every metric at zero / null, overridden by `over`.
    fn m(over: Value) -> Value {
        // Two literals: one is too deep for `json!`'s recursion limit.
        let mut base = json!({
            "customers_start": 0, "customers_end": 0, "paying_start": 0, "paying_end": 0,
            "new": 0, "reactivated": 0, "churned_voluntary": 0, "churned_involuntary": 0,
            "churned_total": 0, "moved_in": 0, "moved_out": 0,
            "cohort_churned_voluntary": 0, "cohort_churned_involuntary": 0,
            "customer_churn_rate": null, "voluntary_churn_rate": null,
            "involuntary_churn_rate": null, "customer_retention_rate": null,
            "mrr_start": 0, "mrr_end": 0, "new_mrr": 0, "reactivation_mrr": 0,
            "expansion_mrr": 0, "contraction_mrr": 0, "churned_mrr": 0,
            "churned_mrr_voluntary": 0, "churned_mrr_involuntary": 0,
            "moved_in_mrr": 0, "moved_out_mrr": 0, "cohort_churned_mrr": 0,
            "cohort_expansion_mrr": 0, "cohort_contraction_mrr": 0,
            "lost_mrr_rate": null, "gross_mrr_churn_rate": null, "net_mrr_churn_rate": null,
            "grr": null, "nrr": null
        });
        let rest = json!({
            "dunning_opened": 0, "dunning_recovered": 0, "dunning_failed": 0,
            "dunning_open_end": 0, "dunning_recovery_rate": null,
            "nps": null, "nps_responses": 0, "nps_promoters": 0, "nps_passives": 0,
            "nps_detractors": 0, "csat_avg": null, "csat_responses": 0, "ces_avg": null,
            "ces_responses": 0, "refunds": 0, "arpa": null, "ltv": null
        });
        let obj = base.as_object_mut().expect("object");
        obj.extend(rest.as_object().expect("object").clone());
        for (k, v) in over.as_object().expect("object") {
            assert!(obj.contains_key(k), "unknown metric {k}");
            obj.insert(k.clone(), v.clone());
        }
        base
    }

    /// [`m`] of two literals merged (one `json!` literal can only be so big).
    fn m2(a: Value, b: Value) -> Value {
        let mut a = a;
        let obj = a.as_object_mut().expect("object");
        obj.extend(b.as_object().expect("object").clone());
        m(a)
    }

    #[test]
    fn golden_december_starts_from_zero_customers() {
        let l = fixture();
        let got =
            serde_json::to_value(l.report(t("2025-12-01T00:00:00Z"), t("2026-01-01T00:00:00Z")))
                .expect("serializes");
        // Nobody was subscribed on Dec 1: every ratio over a start stock is null.
        // Joins: A 5000 + B 1000 + C 2000 + D 1000 + E 1000 + G 1000 = 11000 new MRR;
        // G churns (1000). End: A, B, C, D, E = 10000 MRR, all paying; ARPA 10000/5.
        let want = json!({
            "start": "2025-12-01T00:00:00Z",
            "end": "2026-01-01T00:00:00Z",
            "overall": m(json!({
                "customers_end": 5, "paying_end": 5, "new": 6,
                "churned_voluntary": 1, "churned_total": 1,
                "mrr_end": 10000, "new_mrr": 11000,
                "churned_mrr": 1000, "churned_mrr_voluntary": 1000,
                "arpa": 2000.0
            })),
            "by_plan": {
                // B, D, E, G joined basic (4000); G churned; end B, D, E.
                "basic": m(json!({
                    "customers_end": 3, "paying_end": 3, "new": 4,
                    "churned_voluntary": 1, "churned_total": 1,
                    "mrr_end": 3000, "new_mrr": 4000,
                    "churned_mrr": 1000, "churned_mrr_voluntary": 1000,
                    "arpa": 1000.0
                })),
                // A 5000 + C 2000.
                "pro": m(json!({
                    "customers_end": 2, "paying_end": 2, "new": 2,
                    "mrr_end": 7000, "new_mrr": 7000, "arpa": 3500.0
                }))
            },
            "by_segment": {
                // D has no segment.
                "(none)": m(json!({
                    "customers_end": 1, "paying_end": 1, "new": 1,
                    "mrr_end": 1000, "new_mrr": 1000, "arpa": 1000.0
                })),
                // C 2000 + E 1000 + G 1000 joined; G churned.
                "ent": m(json!({
                    "customers_end": 2, "paying_end": 2, "new": 3,
                    "churned_voluntary": 1, "churned_total": 1,
                    "mrr_end": 3000, "new_mrr": 4000,
                    "churned_mrr": 1000, "churned_mrr_voluntary": 1000,
                    "arpa": 1500.0
                })),
                // A 5000 + B 1000.
                "smb": m(json!({
                    "customers_end": 2, "paying_end": 2, "new": 2,
                    "mrr_end": 6000, "new_mrr": 6000, "arpa": 3000.0
                }))
            }
        });
        assert_eq!(got, want);
    }

    #[test]
    fn golden_january_window() {
        let l = fixture();
        let got =
            serde_json::to_value(l.report(t("2026-01-01T00:00:00Z"), t("2026-01-31T00:00:00Z")))
                .expect("serializes");
        let want = json!({
            "start": "2026-01-01T00:00:00Z",
            "end": "2026-01-31T00:00:00Z",
            // Start: A pro 5000, B basic 1000, C pro 2000, D basic 1000, E basic 1000
            //   = 5 customers, 5 paying, 10000 MRR.
            // End: A pro 5000, B pro 5000, C free 0, G pro 5000, H pro 5000
            //   = 5 customers, 4 paying, 20000 MRR (A's churn at Jan 31 is outside).
            // New F (1000), H (5000) = 2 / 6000; reactivated G 5000.
            // Churn: E vol 1000, F vol 1000, D invol 1000.
            // Check: 10000 + 6000 + 5000 + 4000 - 2000 - 3000 = 20000.
            // Start cohort lost: E (vol), D (invol) -> 2/5 = 0.4, 0.2, 0.2; their start MRR 2000.
            // Retained cohort: A 5000->5000, B 1000->5000 (+4000), C 2000->0 (-2000).
            // CRR = (5 - 2 - 1) / 5 = 0.4 (F counts as new though it left again).
            // lost MRR 3000/10000; gross (2000+2000)/10000; net (2000+2000-4000)/10000;
            // GRR (10000-2000-2000)/10000; NRR (10000+4000-2000-2000)/10000.
            // Dunning: opened D, A, B; recovered A; failed D; open B -> 1/2.
            // NPS 10, 9, 3, 8 -> (2 - 1)/4 = 25. CSAT (5+2)/2. CES 3.
            // ARPA 20000/4 = 5000; the window is 30 days, so monthly churn 0.4, LTV 12500.
            "overall": m2(json!({
                "customers_start": 5, "customers_end": 5, "paying_start": 5, "paying_end": 4,
                "new": 2, "reactivated": 1,
                "churned_voluntary": 2, "churned_involuntary": 1, "churned_total": 3,
                "cohort_churned_voluntary": 1, "cohort_churned_involuntary": 1,
                "customer_churn_rate": 0.4, "voluntary_churn_rate": 0.2,
                "involuntary_churn_rate": 0.2, "customer_retention_rate": 0.4,
                "mrr_start": 10000, "mrr_end": 20000, "new_mrr": 6000, "reactivation_mrr": 5000,
                "expansion_mrr": 4000, "contraction_mrr": 2000, "churned_mrr": 3000,
                "churned_mrr_voluntary": 2000, "churned_mrr_involuntary": 1000,
                "cohort_churned_mrr": 2000, "cohort_expansion_mrr": 4000,
                "cohort_contraction_mrr": 2000
            }), json!({
                "lost_mrr_rate": 0.3, "gross_mrr_churn_rate": 0.4, "net_mrr_churn_rate": 0.0,
                "grr": 0.6, "nrr": 1.0,
                "dunning_opened": 3, "dunning_recovered": 1, "dunning_failed": 1,
                "dunning_open_end": 1, "dunning_recovery_rate": 0.5,
                "nps": 25.0, "nps_responses": 4, "nps_promoters": 2, "nps_passives": 1,
                "nps_detractors": 1, "csat_avg": 3.5, "csat_responses": 2,
                "ces_avg": 3.0, "ces_responses": 1,
                "refunds": 500, "arpa": 5000.0, "ltv": 12500.0
            })),
            "by_plan": {
                // Start B, D, E (3000). F joins (1000). E, F (vol), D (invol) churn from
                // basic; B moves out to pro at 1000. Check: 3000 + 1000 - 3000 - 1000 = 0.
                // Cohort (B, D, E): D, E lost (2000); B retained 1000 -> 5000 (+4000).
                // CRR (0 - 1 - 0 - 0)/3; lost 3000/3000; gross 2000/3000;
                // net (2000-4000)/3000; GRR 1000/3000; NRR 5000/3000.
                // Dunning D opened and failed on basic; E's refund counts on basic.
                "basic": m2(json!({
                    "customers_start": 3, "paying_start": 3, "new": 1,
                    "churned_voluntary": 2, "churned_involuntary": 1, "churned_total": 3,
                    "moved_out": 1,
                    "cohort_churned_voluntary": 1, "cohort_churned_involuntary": 1,
                    "customer_churn_rate": 2.0 / 3.0, "voluntary_churn_rate": 1.0 / 3.0,
                    "involuntary_churn_rate": 1.0 / 3.0, "customer_retention_rate": -1.0 / 3.0,
                    "mrr_start": 3000, "new_mrr": 1000, "churned_mrr": 3000,
                    "churned_mrr_voluntary": 2000, "churned_mrr_involuntary": 1000,
                    "moved_out_mrr": 1000,
                    "cohort_churned_mrr": 2000, "cohort_expansion_mrr": 4000
                }), json!({
                    "lost_mrr_rate": 1.0, "gross_mrr_churn_rate": 2.0 / 3.0,
                    "net_mrr_churn_rate": -2.0 / 3.0, "grr": 1.0 / 3.0, "nrr": 5.0 / 3.0,
                    "dunning_opened": 1, "dunning_failed": 1, "dunning_recovery_rate": 0.0,
                    "refunds": 500
                })),
                // C moves in at 2000 and contracts to 0 here: a customer, not paying.
                // C's NPS 3 and CSAT 2 come after the move.
                "free": m(json!({
                    "customers_end": 1, "moved_in": 1, "moved_in_mrr": 2000,
                    "contraction_mrr": 2000,
                    "nps": -100.0, "nps_responses": 1, "nps_detractors": 1,
                    "csat_avg": 2.0, "csat_responses": 1
                })),
                // Start A 5000, C 2000 (7000). In: B at 1000, then +4000 here. Out: C at 2000.
                // New H 5000, reactivated G 5000. End A, B, G, H = 20000.
                // Check: 7000 + 5000 + 5000 + 4000 + 1000 - 2000 = 20000.
                // Cohort (A, C): C 2000 -> 0 is cohort contraction 2000; none lost.
                // CRR (4 - 1 - 1 - 1)/2; gross = net = 2000/7000; GRR = NRR = 5000/7000.
                // Dunning: A opened + recovered, B opened (open at end).
                // NPS A 10, B 9, H 8: (2 - 0)/3. CSAT A 5. CES H 3. ARPA 20000/4.
                "pro": m2(json!({
                    "customers_start": 2, "customers_end": 4, "paying_start": 2, "paying_end": 4,
                    "new": 1, "reactivated": 1, "moved_in": 1, "moved_out": 1,
                    "customer_churn_rate": 0.0, "voluntary_churn_rate": 0.0,
                    "involuntary_churn_rate": 0.0, "customer_retention_rate": 0.5,
                    "mrr_start": 7000, "mrr_end": 20000, "new_mrr": 5000,
                    "reactivation_mrr": 5000, "expansion_mrr": 4000,
                    "moved_in_mrr": 1000, "moved_out_mrr": 2000,
                    "cohort_contraction_mrr": 2000
                }), json!({
                    "lost_mrr_rate": 0.0, "gross_mrr_churn_rate": 2.0 / 7.0,
                    "net_mrr_churn_rate": 2.0 / 7.0, "grr": 5.0 / 7.0, "nrr": 5.0 / 7.0,
                    "dunning_opened": 2, "dunning_recovered": 1, "dunning_open_end": 1,
                    "dunning_recovery_rate": 1.0,
                    "nps": 200.0 / 3.0, "nps_responses": 3, "nps_promoters": 2,
                    "nps_passives": 1, "csat_avg": 5.0, "csat_responses": 1,
                    "ces_avg": 3.0, "ces_responses": 1,
                    "arpa": 5000.0
                }))
            },
            "by_segment": {
                // D only: churned involuntarily after a failed dunning period.
                "(none)": m2(json!({
                    "customers_start": 1, "paying_start": 1,
                    "churned_involuntary": 1, "churned_total": 1,
                    "cohort_churned_involuntary": 1,
                    "customer_churn_rate": 1.0, "voluntary_churn_rate": 0.0,
                    "involuntary_churn_rate": 1.0, "customer_retention_rate": 0.0,
                    "mrr_start": 1000, "churned_mrr": 1000, "churned_mrr_involuntary": 1000,
                    "cohort_churned_mrr": 1000
                }), json!({
                    "lost_mrr_rate": 1.0, "gross_mrr_churn_rate": 1.0, "net_mrr_churn_rate": 1.0,
                    "grr": 0.0, "nrr": 0.0,
                    "dunning_opened": 1, "dunning_failed": 1, "dunning_recovery_rate": 0.0
                })),
                // Start C 2000, E 1000 (3000). E churns (vol). C contracts 2000. G back 5000,
                // H new 5000, A moves in at 5000. End C 0, G, H, A = 15000, 3 paying.
                // Check: 3000 + 5000 + 5000 - 2000 - 1000 + 5000 = 15000.
                // Cohort (C, E): E lost (1000), C -2000. Churn 1/2. CRR (4 - 1 - 1 - 1)/2.
                // lost 1000/3000; gross (1000+2000)/3000; GRR = NRR = 0.
                // NPS C 3, H 8: (0 - 1)/2. CSAT C 2. CES H 3. Refund E 500.
                // ARPA 15000/3; monthly churn 0.5 -> LTV 10000.
                "ent": m2(json!({
                    "customers_start": 2, "customers_end": 4, "paying_start": 2, "paying_end": 3,
                    "new": 1, "reactivated": 1, "churned_voluntary": 1, "churned_total": 1,
                    "moved_in": 1, "cohort_churned_voluntary": 1,
                    "customer_churn_rate": 0.5, "voluntary_churn_rate": 0.5,
                    "involuntary_churn_rate": 0.0, "customer_retention_rate": 0.5,
                    "mrr_start": 3000, "mrr_end": 15000, "new_mrr": 5000,
                    "reactivation_mrr": 5000, "contraction_mrr": 2000,
                    "churned_mrr": 1000, "churned_mrr_voluntary": 1000, "moved_in_mrr": 5000,
                    "cohort_churned_mrr": 1000, "cohort_contraction_mrr": 2000
                }), json!({
                    "lost_mrr_rate": 1.0 / 3.0, "gross_mrr_churn_rate": 1.0,
                    "net_mrr_churn_rate": 1.0, "grr": 0.0, "nrr": 0.0,
                    "nps": -50.0, "nps_responses": 2, "nps_passives": 1, "nps_detractors": 1,
                    "csat_avg": 2.0, "csat_responses": 1, "ces_avg": 3.0, "ces_responses": 1,
                    "refunds": 500, "arpa": 5000.0, "ltv": 10000.0
                })),
                // Start A 5000, B 1000 (6000). B +4000. F joins and churns (1000).
                // A moves out to ent at 5000. End B 5000.
                // Check: 6000 + 1000 + 4000 - 1000 - 5000 = 5000.
                // Cohort (A, B) by start segment: none lost, B +4000 (A's move is not a loss).
                // CRR (1 - 1 - 0 - 0)/2 = 0; lost 1000/6000; gross 0; net -4000/6000;
                // GRR 1; NRR 10000/6000. Dunning A (recovered), B (open). NPS A 10, B 9.
                "smb": m2(json!({
                    "customers_start": 2, "customers_end": 1, "paying_start": 2, "paying_end": 1,
                    "new": 1, "churned_voluntary": 1, "churned_total": 1, "moved_out": 1,
                    "customer_churn_rate": 0.0, "voluntary_churn_rate": 0.0,
                    "involuntary_churn_rate": 0.0, "customer_retention_rate": 0.0,
                    "mrr_start": 6000, "mrr_end": 5000, "new_mrr": 1000, "expansion_mrr": 4000,
                    "churned_mrr": 1000, "churned_mrr_voluntary": 1000, "moved_out_mrr": 5000,
                    "cohort_expansion_mrr": 4000
                }), json!({
                    "lost_mrr_rate": 1.0 / 6.0, "gross_mrr_churn_rate": 0.0,
                    "net_mrr_churn_rate": -2.0 / 3.0, "grr": 1.0, "nrr": 5.0 / 3.0,
                    "dunning_opened": 2, "dunning_recovered": 1, "dunning_open_end": 1,
                    "dunning_recovery_rate": 1.0,
                    "nps": 100.0, "nps_responses": 2, "nps_promoters": 2,
                    "csat_avg": 5.0, "csat_responses": 1, "arpa": 5000.0
                }))
            }
        });
        assert_eq!(got, want);
    }

    #[test]
    fn current_state_after_all_facts() {
        let l = fixture();
        // A churned at Jan 31: B pro 5000 smb (dunning), C free ent, G and H pro 5000 ent.
        let want = json!({
            "overall": {"customers": 4, "paying": 3, "mrr": 15000, "dunning_open": 1},
            "by_plan": {
                "free": {"customers": 1, "paying": 0, "mrr": 0, "dunning_open": 0},
                "pro": {"customers": 3, "paying": 3, "mrr": 15000, "dunning_open": 1}
            },
            "by_segment": {
                "ent": {"customers": 3, "paying": 2, "mrr": 10000, "dunning_open": 0},
                "smb": {"customers": 1, "paying": 1, "mrr": 5000, "dunning_open": 1}
            }
        });
        assert_eq!(serde_json::to_value(l.current()).expect("serializes"), want);
        assert_eq!(
            (l.subscribed(), l.paying(), l.mrr(), l.open_dunning()),
            (4, 3, 15000, 1)
        );
        // D's DunningClosed after its churn changed nothing and was not stored.
        assert_eq!(l.len(), 36);
    }

    #[test]
    fn monthly_matches_reports_of_the_same_months() {
        let mut l = fixture();
        let months = l.monthly(t("2026-01-31T00:00:00Z"));
        assert_eq!(months.len(), 2);
        assert_eq!(
            months[0],
            l.report(t("2025-12-01T00:00:00Z"), t("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            months[1],
            l.report(t("2026-01-01T00:00:00Z"), t("2026-01-31T00:00:00Z"))
        );
    }

    #[test]
    fn a_member_lost_twice_counts_once_under_its_first_churn_as_the_window_slides() {
        let mut l = Ledger::new();
        let day = |d: i64| t("2026-01-01T00:00:00Z") + d * DAY_MS;
        l.record(day(0), A, joined("pro", 5000, false));
        l.record(day(10), A, churned(Voluntary, 5000));
        l.record(day(12), A, joined("basic", 1000, true));
        l.record(day(14), A, churned(Involuntary, 1000));
        let window = 10 * DAY_MS;
        for now in [day(11), day(15), day(19), day(21), day(23), day(30)] {
            let kept = l.rolling(window, now);
            assert_eq!(kept, l.report(now - window, now), "at {}", format_ts(now));
            let o = &kept.overall;
            let lost = (o.cohort_churned_voluntary, o.cohort_churned_involuntary);
            // Until day 20 the start cohort holds A on pro (lost first voluntarily);
            // from day 20 to 22 A is not subscribed at the start; then it is again
            // (basic) and lost involuntarily until day 24.
            let want = match now {
                n if n <= day(20) => (1, 0),
                n if n <= day(22) => (0, 0),
                n if n <= day(24) => (0, 1),
                _ => (0, 0),
            };
            assert_eq!(lost, want, "at {}", format_ts(now));
        }
    }

    #[test]
    fn monthly_boundaries_and_partial_last_month() {
        let mut l = Ledger::new();
        assert!(l.monthly(t("2026-03-01T00:00:00Z")).is_empty());
        l.record(
            t("2026-01-31T23:59:59.999Z"),
            0,
            joined("basic", 1000, false),
        );
        l.record(t("2026-02-01T00:00:00Z"), 1, joined("basic", 1000, false));
        l.record(t("2026-03-10T00:00:00Z"), 0, churned(Voluntary, 1000));
        l.record(t("2026-03-15T12:00:00Z"), 1, changed("pro", 1000, 3000));

        let months = l.monthly(t("2026-03-15T12:00:00Z"));
        let spans: Vec<_> = months.iter().map(|r| (&*r.start, &*r.end)).collect();
        assert_eq!(
            spans,
            [
                ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
                ("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
                ("2026-03-01T00:00:00Z", "2026-03-15T12:00:00Z"),
            ]
        );
        // The last millisecond of January is January's; 00:00:00 on Feb 1 is February's.
        let o: Vec<_> = months.iter().map(|r| &r.overall).collect();
        assert_eq!((o[0].new, o[0].customers_end), (1, 1));
        assert_eq!(
            (o[1].customers_start, o[1].new, o[1].customers_end),
            (1, 1, 2)
        );
        // The upgrade at exactly `until` is outside the partial month.
        assert_eq!(
            (
                o[2].customers_start,
                o[2].churned_voluntary,
                o[2].expansion_mrr,
                o[2].mrr_end
            ),
            (2, 1, 0, 1000)
        );
        // LTV uses the churn rate scaled from 14.5 days to 30: 1000 / (0.5 * 30 / 14.5).
        let ltv = o[2].ltv.expect("churn > 0");
        assert!((ltv - 1000.0 * 14.5 / 15.0).abs() < 1e-9, "{ltv}");

        // `until` at a month's first instant: that month is an empty last period.
        let months = l.monthly(t("2026-03-01T00:00:00Z"));
        assert_eq!(months.len(), 3);
        assert_eq!(months[2].start, months[2].end);
        assert_eq!(months[2].overall.customers_end, 2);
        assert_eq!(months[2].overall.ltv, None);

        assert!(l.monthly(t("2026-01-31T23:59:59.998Z")).is_empty());
        assert_eq!(l.monthly(t("2026-01-31T23:59:59.999Z")).len(), 1);
    }

    #[test]
    fn usage_only_customers_and_stray_facts_are_ignored() {
        let mut l = Ledger::new();
        let ts = t("2026-01-10T00:00:00Z");
        l.record(ts, 3, Fact::Nps { score: 0 });
        l.record(ts, 3, Fact::Refund { amount: 10 });
        l.record(ts, 3, Fact::DunningOpened);
        l.record(ts, 3, changed("pro", 0, 100));
        l.record(ts, 3, churned(Voluntary, 100));
        assert!(l.is_empty());
        let r = l.report(t("2026-01-01T00:00:00Z"), t("2026-02-01T00:00:00Z"));
        assert_eq!(
            r.overall,
            metrics(&Raw::default(), &Stock::default(), &Stock::default(), 1.0)
        );
        assert!(r.by_plan.is_empty() && r.by_segment.is_empty());
    }

    #[test]
    fn late_fact_of_a_customer_keeps_its_arrival_order() {
        let mut l = Ledger::new();
        l.record(t("2026-01-10T00:00:00Z"), 0, joined("basic", 1000, false));
        // Older than the join: recorded at the join's time, so it still expands.
        l.record(t("2026-01-05T00:00:00Z"), 0, changed("pro", 1000, 2000));
        let r = l.report(t("2026-01-01T00:00:00Z"), t("2026-02-01T00:00:00Z"));
        assert_eq!((r.overall.new_mrr, r.overall.expansion_mrr), (1000, 1000));
        let r = l.report(t("2026-01-01T00:00:00Z"), t("2026-01-10T00:00:00Z"));
        assert_eq!(r.overall.expansion_mrr, 0);
    }

    // -- properties ---------------------------------------------------------

    fn arb_fact() -> impl Strategy<Value = Fact> {
        let plan = prop::sample::select(vec!["a", "b", "free"]);
        let mrr = prop::sample::select(vec![0i64, 700, 1000, 5000]);
        let kind = prop::sample::select(vec![Voluntary, Involuntary]);
        prop_oneof![
            3 => (plan.clone(), mrr.clone(), any::<bool>())
                .prop_map(|(p, m, r)| joined(p, m, r)),
            3 => (plan, mrr.clone()).prop_map(|(p, m)| changed(p, 0, m)),
            2 => (kind, mrr).prop_map(|(k, m)| churned(k, m)),
            1 => prop::sample::select(vec!["x", "y"]).prop_map(segment),
            1 => Just(Fact::DunningOpened),
            1 => any::<bool>().prop_map(|recovered| Fact::DunningClosed { recovered }),
            1 => (0u8..=10).prop_map(|score| Fact::Nps { score }),
            1 => (1u8..=5).prop_map(|score| Fact::Csat { score }),
            1 => (1u8..=7).prop_map(|score| Fact::Ces { score }),
            1 => (0i64..1000).prop_map(|amount| Fact::Refund { amount }),
        ]
    }

    /// Facts in time order (stable), over about four months from 2026-01-01.
    fn arb_facts() -> impl Strategy<Value = Vec<(Ts, u32, Fact)>> {
        prop::collection::vec((0i64..2900, 0u32..8, arb_fact()), 0..120).prop_map(|mut v| {
            let base = t("2026-01-01T00:00:00Z");
            v.sort_by_key(|f| f.0);
            v.into_iter()
                .map(|(h, c, f)| (base + h * 3_600_000, c, f))
                .collect()
        })
    }

    fn ledger(facts: &[(Ts, u32, Fact)]) -> Ledger {
        let mut l = Ledger::new();
        for (ts, c, f) in facts {
            l.record(*ts, *c, f.clone());
        }
        l
    }

    fn check_metrics(m: &Metrics, overall: bool) -> Result<(), TestCaseError> {
        let unit = |r: Option<f64>| r.is_none_or(|x| (0.0..=1.0).contains(&x));
        prop_assert!(unit(m.customer_churn_rate) && unit(m.voluntary_churn_rate));
        prop_assert!(unit(m.involuntary_churn_rate) && unit(m.grr));
        prop_assert!(unit(m.dunning_recovery_rate) && unit(m.gross_mrr_churn_rate));
        prop_assert!(m.nrr.is_none_or(|x| x >= 0.0));
        prop_assert!(m.nps.is_none_or(|x| (-100.0..=100.0).contains(&x)));
        prop_assert!(m.csat_avg.is_none_or(|x| (1.0..=5.0).contains(&x)));
        prop_assert!(m.ces_avg.is_none_or(|x| (1.0..=7.0).contains(&x)));
        prop_assert!(m.customers_end >= m.paying_end && m.paying_end >= 0 && m.mrr_end >= 0);
        prop_assert_eq!(
            m.customers_end,
            m.customers_start + m.new + m.reactivated - m.churned_total + m.moved_in - m.moved_out
        );
        prop_assert_eq!(
            m.mrr_end,
            m.mrr_start + m.new_mrr + m.reactivation_mrr + m.expansion_mrr
                - m.contraction_mrr
                - m.churned_mrr
                + m.moved_in_mrr
                - m.moved_out_mrr
        );
        prop_assert!(m.cohort_churned_mrr + m.cohort_contraction_mrr <= m.mrr_start);
        if overall {
            prop_assert_eq!((m.moved_in, m.moved_out), (0, 0));
        }
        Ok(())
    }

    fn check_report(r: &PeriodReport) -> Result<(), TestCaseError> {
        // A non-finite ratio fails serialization.
        prop_assert!(serde_json::to_string(r).is_ok());
        check_metrics(&r.overall, true)?;
        for g in [&r.by_plan, &r.by_segment] {
            for m in g.values() {
                check_metrics(m, false)?;
            }
            let sum = |f: fn(&Metrics) -> i64| g.values().map(f).sum::<i64>();
            prop_assert_eq!(sum(|m| m.customers_end), r.overall.customers_end);
            prop_assert_eq!(sum(|m| m.mrr_start), r.overall.mrr_start);
            prop_assert_eq!(sum(|m| m.churned_mrr), r.overall.churned_mrr);
            prop_assert_eq!(
                sum(|m| m.cohort_expansion_mrr),
                r.overall.cohort_expansion_mrr
            );
        }
        Ok(())
    }

    /// The overall start cohort recomputed naively, customer by customer:
    /// (customers at start, MRR at start, customers at end, MRR at end,
    ///  start customers lost, end MRR of the start customers never lost).
    fn naive(facts: &[(Ts, u32, Fact)], start: Ts, end: Ts) -> [i64; 6] {
        let mut out = [0; 6];
        for c in 0..8 {
            let (mut sub, mut mrr) = (false, 0);
            // (subscribed, MRR) when the period starts, taken at its first fact in it.
            let (mut at_start, mut lost) = (None, false);
            for (ts, _, f) in facts.iter().filter(|f| f.1 == c && f.0 < end) {
                if *ts >= start && at_start.is_none() {
                    at_start = Some((sub, mrr));
                }
                match f {
                    Fact::Joined { mrr: m, .. } => (sub, mrr) = (true, *m),
                    Fact::MrrChanged { new_mrr, .. } if sub => mrr = *new_mrr,
                    Fact::Churned { .. } if sub => {
                        sub = false;
                        lost |= at_start.is_some_and(|s| s.0);
                    }
                    _ => {}
                }
            }
            // No fact in the period: the state at its start is the state at its end.
            let (at_start, start_mrr) = at_start.unwrap_or((sub, mrr));
            if at_start {
                out[0] += 1;
                out[1] += start_mrr;
                out[4] += i64::from(lost);
                if !lost {
                    out[5] += mrr;
                }
            }
            if sub {
                out[2] += 1;
                out[3] += mrr;
            }
        }
        out
    }

    proptest! {
        /// The log's 20-byte entries give back what was stored, over every
        /// field's whole range (times: any an RFC 3339 date can name).
        #[test]
        fn packed_entries_round_trip(
            ts in -(1i64 << 55)..(1i64 << 55),
            value in 0..=MAX_AMOUNT,
            customer in any::<u32>(),
            id in any::<u16>(),
            kind in 0usize..10,
            aux in any::<u8>(),
        ) {
            let e = Entry { ts, value, customer, id, kind: Kind::ALL[kind], aux };
            prop_assert_eq!(Entry::from(Packed::from(e)), e);
            prop_assert_eq!(Packed::from(e).ts(), ts);
            prop_assert_eq!(Kind::ALL[kind] as usize, kind);
        }
    }

    /// A stored fact that no event could have made is refused on restore
    /// rather than stored altered.
    #[test]
    fn a_packed_entry_out_of_range_is_refused() {
        let ok = Entry {
            ts: 5,
            value: 7,
            customer: 1,
            id: 2,
            kind: Kind::Joined,
            aux: 1,
        };
        let bytes = postcard::to_stdvec(&ok).unwrap();
        assert_eq!(
            Entry::from(postcard::from_bytes::<Packed>(&bytes).unwrap()),
            ok
        );
        for bad in [
            Entry { ts: i64::MAX, ..ok },
            Entry {
                ts: PACKED_TS.0 - 1,
                ..ok
            },
            Entry {
                value: MAX_AMOUNT + 1,
                ..ok
            },
            Entry { value: -1, ..ok },
        ] {
            let bytes = postcard::to_stdvec(&bad).unwrap();
            assert!(postcard::from_bytes::<Packed>(&bytes).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn reports_are_finite_consistent_and_match_a_naive_recompute(
            facts in arb_facts(),
            a in 0i64..3000,
            len in 0i64..1500,
        ) {
            let mut l = ledger(&facts);
            let base = t("2026-01-01T00:00:00Z");
            let (start, end) = (base + a * 3_600_000, base + (a + len) * 3_600_000);
            let r = l.report(start, end);
            check_report(&r)?;
            let o = &r.overall;
            let n = naive(&facts, start, end);
            prop_assert_eq!(
                [o.customers_start, o.mrr_start, o.customers_end, o.mrr_end],
                [n[0], n[1], n[2], n[3]]
            );
            prop_assert_eq!(o.cohort_churned_voluntary + o.cohort_churned_involuntary, n[4]);
            prop_assert_eq!(
                o.mrr_start + o.cohort_expansion_mrr - o.cohort_contraction_mrr
                    - o.cohort_churned_mrr,
                n[5]
            );

            let until = base + 2900 * 3_600_000;
            let months = l.monthly(until);
            for (i, m) in months.iter().enumerate() {
                check_report(m)?;
                prop_assert_eq!(m, &l.report(parse_ts(&m.start).unwrap(), parse_ts(&m.end).unwrap()));
                if let Some(next) = months.get(i + 1) {
                    prop_assert_eq!(&m.end, &next.start);
                    prop_assert_eq!(m.overall.customers_end, next.overall.customers_start);
                    prop_assert_eq!(m.overall.mrr_end, next.overall.mrr_start);
                }
            }
            let now = l.report(Ts::MIN / 2, Ts::MAX / 2).overall;
            prop_assert_eq!(
                (now.customers_end, now.paying_end, now.mrr_end, now.dunning_open_end),
                (l.subscribed(), l.paying(), l.mrr(), l.open_dunning())
            );
        }

        #[test]
        fn merging_reports_of_split_customers_equals_one_ledger(
            facts in arb_facts(),
            a in 0i64..2000,
            len in 0i64..1500,
        ) {
            // Two "partitions": customers split by parity, like keys by hash.
            let (even, odd): (Vec<_>, Vec<_>) = facts.iter().cloned().partition(|f| f.1 % 2 == 0);
            let base = t("2026-01-01T00:00:00Z");
            let (start, end) = (base + a * 3_600_000, base + (a + len) * 3_600_000);
            let whole = ledger(&facts).report(start, end);
            let parts = [ledger(&even).report(start, end), ledger(&odd).report(start, end)];
            let merged = PeriodReport::merge(&parts).expect("two reports");
            prop_assert_eq!(&merged, &whole);
            let single = PeriodReport::merge(&parts[..1]);
            prop_assert_eq!(single.as_ref(), Some(&parts[0]));
        }

        #[test]
        fn kept_periods_equal_a_replay_as_facts_and_the_clock_arrive(
            facts in arb_facts(),
            jitter in prop::collection::vec(0i64..400, 120),
            asks in prop::collection::vec((0u8..4, 0i64..800), 120),
            window_h in prop::sample::select(vec![1i64, 24, 30 * 24, 45 * 24]),
        ) {
            // Facts arrive up to ~16 days late (each customer's in order, as the
            // engine emits them); after each, the clock may be read at the
            // latest fact, a little past it, or (rarely) earlier.
            let mut arrival: Vec<usize> = (0..facts.len()).collect();
            arrival.sort_by_key(|&i| facts[i].0 + jitter[i] * 3_600_000);
            for c in 0..8 {
                let mine: Vec<usize> = (0..facts.len()).filter(|&i| facts[i].1 == c).collect();
                let slots: Vec<usize> =
                    (0..arrival.len()).filter(|&k| facts[arrival[k]].1 == c).collect();
                let mut a2 = arrival.clone();
                for (slot, i) in slots.into_iter().zip(mine) {
                    a2[slot] = i;
                }
                arrival = a2;
            }
            let window = window_h * 3_600_000;
            let mut l = Ledger::new();
            let mut clock = t("2026-01-01T00:00:00Z");
            for (k, &i) in arrival.iter().enumerate() {
                let (ts, c, f) = &facts[i];
                l.record(*ts, *c, f.clone());
                let (how, by) = asks[k];
                clock = match how {
                    0 => continue,
                    1 => clock.max(*ts),
                    2 => clock.max(*ts) + by * 3_600_000,
                    _ => clock - by * 60_000,
                };
                prop_assert_eq!(l.rolling(window, clock), l.report(clock - window, clock));
                if how != 1 || k % 4 == 0 {
                    prop_assert_eq!(l.monthly(clock), l.monthly_replay(clock));
                }
            }
            clock += 40 * 24 * 3_600_000;
            prop_assert_eq!(l.rolling(window, clock), l.report(clock - window, clock));
            prop_assert_eq!(l.monthly(clock), l.monthly_replay(clock));
        }

        #[test]
        fn arrival_order_across_customers_does_not_matter(
            facts in arb_facts(),
            jitter in prop::collection::vec(0i64..72, 120),
        ) {
            // Arrival: each fact delayed by up to 3 days, but every customer's own
            // facts keep their order (the engine emits them in order).
            let mut order: Vec<usize> = (0..facts.len()).collect();
            order.sort_by_key(|&i| facts[i].0 + jitter[i] * 3_600_000);
            let mut arrival = order.clone();
            for c in 0..8 {
                let mine: Vec<usize> = (0..facts.len()).filter(|&i| facts[i].1 == c).collect();
                let slots: Vec<usize> =
                    (0..order.len()).filter(|&k| facts[order[k]].1 == c).collect();
                for (slot, i) in slots.into_iter().zip(mine) {
                    arrival[slot] = i;
                }
            }
            let shuffled: Vec<_> = arrival.iter().map(|&i| facts[i].clone()).collect();
            let (mut a, mut b) = (ledger(&facts), ledger(&shuffled));
            let base = t("2026-01-01T00:00:00Z");
            let until = base + 2900 * 3_600_000;
            prop_assert_eq!(a.monthly(until), b.monthly(until));
            prop_assert_eq!(
                a.report(base + 200 * 3_600_000, base + 1000 * 3_600_000),
                b.report(base + 200 * 3_600_000, base + 1000 * 3_600_000)
            );
            prop_assert_eq!(a.current(), b.current());
            prop_assert_eq!(a.len(), b.len());
        }
    }
}
