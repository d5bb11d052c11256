//! The sans-IO engine: no Kafka, no clock, no sockets. Events go in with
//! [`Engine::ingest`], time goes forward with [`Engine::advance_to`] /
//! [`Engine::finish`], alert transitions come out of [`Engine::take_alerts`].
//!
//! Determinism: on-time events wait in a reorder buffer until the watermark
//! (highest `ts` seen minus `allowed_lateness`) passes them, and are then
//! applied in event-time order together with the timers (inactivity, dunning
//! expiry, ...) and the daily sweep (window signals). So any arrival order
//! within the allowed lateness gives the same state and byte-identical alerts.
//!
//! # Layout
//! - this file: [`Engine`], its ingest and time API, `process` (events, timers and sweeps in time order; parked at a sweep while coordinated), applying an event to a customer, judging its alerts.
//! - `reorder`: the reorder buffer, the input sources and the watermark, the `event_id` dedup horizon.
//! - `timers`: one live timer per customer at its next deadline, the timer heap and its superseded entries.
//! - `billing`: the billing state machine: billing events and dunning expiry move a customer's `Billing` and yield business facts.
//! - `ids`: customer ids and their index, the plan and segment name interners, new-id floods, the population sample's hash.
//! - `sweep`: the daily sweep: its population context (sampled here, or merged over an instance while coordinated), what a visit prunes, judges and reschedules, filing each customer's next visit.
//! - `visits`: the daily sweep's calendar of visits.
//! - [`population`]: the population context of a sweep, merged over the engines of an instance.
//! - [`snapshot`]: the versioned binary snapshot of an engine and its restore.
//! - `view`: read models for the API, the output files and the gauges.

mod billing;
mod ids;
pub mod population;
mod reorder;
#[cfg(test)]
mod signal_tests;
pub mod snapshot;
mod sweep;
mod timers;
mod view;
mod visits;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::Serialize;

use crate::alert::{AlertEvent, AlertStatus};
use crate::business::{Fact, Ledger, PeriodReport};
use crate::catalogue::{AlertKind, AlertParams};
use crate::config::Config;
use crate::event::{DAY_MS, Event, EventKind, Ts};
use crate::signals::health::{self, Health};
use crate::signals::{self, Ctx, Finding, Population, WeekTotals};
use crate::state::{customer, window};

use customer::{Customer, Feedback, Firing, NEVER, Ticket};
use ids::{Ids, MAX_SAMPLE_LEVEL, Names, NewIds};
pub use ids::{sample_hash, sample_level};
use population::MIN_PLAN_POPULATION;
use reorder::{Pending, Source};
use timers::Timer;
pub use view::{
    AT_RISK_KEPT, AlertView, BillingView, CustomerRow, CustomerView, FeedbackView, GroupSnapshot,
    Lifecycle, ReadView, Snapshot, ViewBuilder, WeekView, rank_at_risk, sort_firing,
};
use visits::Visits;
use window::day_of;

/// What happened to an ingested event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Accepted; applied when the watermark passes it.
    Buffered,
    /// Older than the watermark: applied at once where it still can be.
    Late,
    /// Its `event_id` was seen within the dedup horizon: dropped.
    Duplicate,
    /// After the backtest's `--until`: not applied.
    AfterUntil,
}

/// Counters of what the engine did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Events handed to `ingest`.
    pub ingested: u64,
    /// Events applied to state.
    pub applied: u64,
    /// Events later than the allowed lateness.
    pub late: u64,
    /// Events dropped as duplicates.
    pub duplicates: u64,
    /// Events after `--until`.
    pub after_until: u64,
    /// Applied events by type index (see [`crate::event::EVENT_TYPES`]).
    #[serde(skip)]
    pub type_counts: [u64; 12],
    /// Alert transitions by alert and status.
    pub alerts: BTreeMap<String, u64>,
}

impl Stats {
    /// Applied events by type name.
    pub fn by_type(&self) -> BTreeMap<&'static str, u64> {
        crate::event::EVENT_TYPES
            .iter()
            .zip(self.type_counts)
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| (*t, n))
            .collect()
    }
}

/// The engine.
pub struct Engine {
    cfg: Arc<Config>,
    index: HashTable<u32>,
    customers: Vec<Customer>,
    /// Customer ids, by customer index.
    ids: Ids,
    hasher: FxBuildHasher,
    plans: Names,
    segments: Names,
    /// Reorder buffer: an arrival in order for its source (input topic)
    /// appends to that source's run (O(1)); the rest go to `heap`. The next
    /// event is the least of the runs' fronts and the heap's top.
    runs: Vec<VecDeque<Pending>>,
    heap: BinaryHeap<Reverse<Pending>>,
    /// One live timer per customer (at its `timer_at`) plus superseded ones,
    /// which are skipped when due and dropped by the daily sweep.
    timers: BinaryHeap<Reverse<Timer>>,
    /// Entries of `timers` superseded by an earlier timer of their customer.
    superseded_timers: usize,
    /// The customers each daily sweep visits (derived: rebuilt on restore).
    visits: Visits,
    /// Sweeps run and customers they visited, by this process (not stored).
    sweep_work: (u64, u64),
    dedup: FxHashMap<u64, Ts>,
    dedup_queue: VecDeque<(Ts, u64)>,
    max_ts: Option<Ts>,
    /// Per input source (Kafka topic of this partition): highest ts seen and
    /// whether it is idle (drained). The watermark follows the slowest busy one.
    sources: Vec<Source>,
    watermark: Ts,
    clock: Ts,
    next_sweep: Ts,
    until: Option<Ts>,
    /// Sweeps wait for a population from outside ([`population::release_sweeps`]).
    coordinated: bool,
    /// Where processing stopped at a sweep waiting for its population.
    parked: Option<Parked>,
    population: FxHashMap<u16, Population>,
    overall: Population,
    /// Weekly totals by customer, valid on day `week_cache_day` only: filled by
    /// the population sampling of a sweep (in [`Self::process`], or for a
    /// coordinated one in [`Self::population_samples`]), read by its signals.
    week_cache: Vec<(u32, WeekTotals)>,
    week_cache_day: i32,
    /// Customer indices by sample level: `levels[l]` holds those whose
    /// [`sample_hash`] has `l` leading zeros (capped), so the sample of level
    /// `L` ([`sample_level`]) is `levels[L..]`.
    levels: Vec<Vec<u32>>,
    ledger: Ledger,
    staged: Vec<AlertEvent>,
    out: Vec<AlertEvent>,
    stats: Stats,
    new_ids: NewIds,
    /// A sweep [`Self::finish_replay`] leaves to run live: held while
    /// processing goes no further than it (a parked sweep before it resumed
    /// included).
    hold_sweep_at: Option<Ts>,
}

/// A sweep waiting for its population, and how far processing was asked to go.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Parked {
    at: Ts,
    limit: Ts,
    inclusive: bool,
}

impl Engine {
    /// A fresh engine.
    pub fn new(cfg: Arc<Config>) -> Self {
        let mut plans = Names::new("plan", cfg.max_label_values);
        for p in cfg.plan_alerts.keys() {
            plans.keep(p);
        }
        Self {
            plans,
            segments: Names::new("segment", cfg.max_label_values),
            cfg,
            index: HashTable::new(),
            customers: Vec::new(),
            ids: Ids::default(),
            hasher: FxBuildHasher,
            runs: vec![VecDeque::new()],
            heap: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            superseded_timers: 0,
            visits: Visits::default(),
            sweep_work: (0, 0),
            dedup: FxHashMap::default(),
            dedup_queue: VecDeque::new(),
            max_ts: None,
            sources: vec![Source::default()],
            watermark: Ts::MIN,
            clock: Ts::MIN,
            next_sweep: Ts::MIN,
            until: None,
            coordinated: false,
            parked: None,
            population: FxHashMap::default(),
            overall: Population::default(),
            week_cache: Vec::new(),
            week_cache_day: i32::MIN,
            levels: vec![Vec::new(); MAX_SAMPLE_LEVEL + 1],
            ledger: Ledger::new(),
            staged: Vec::new(),
            out: Vec::new(),
            stats: Stats::default(),
            new_ids: NewIds::default(),
            hold_sweep_at: None,
        }
    }

    /// Events with `ts` after `until` are not applied (backtest `--until`).
    pub fn set_until(&mut self, until: Option<Ts>) {
        self.until = until;
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Feeds one decoded event, in arrival order. `seq` is the caller's
    /// unique arrival number (e.g. to map back to a Kafka offset).
    pub fn ingest(&mut self, ev: Event, seq: u64) -> Disposition {
        self.ingest_from(0, ev, seq)
    }

    /// [`Self::ingest`] for an event of input source `source`.
    pub fn ingest_from(&mut self, source: usize, ev: Event, seq: u64) -> Disposition {
        self.stats.ingested += 1;
        if self.until.is_some_and(|u| ev.ts > u) {
            self.stats.after_until += 1;
            return Disposition::AfterUntil;
        }
        if self.is_duplicate(&ev) {
            self.stats.duplicates += 1;
            return Disposition::Duplicate;
        }
        if self.next_sweep == Ts::MIN {
            self.next_sweep = (day_of(ev.ts) as Ts + 1) * DAY_MS;
        }
        // While parked at a sweep, events from its time on still wait in order.
        if ev.ts < self.parked.map_or(self.watermark, |p| p.at) {
            self.stats.late += 1;
            let now = self.clock.max(ev.ts);
            // Parked and already sampled: this customer's weekly totals change.
            self.week_cache_day = i32::MIN;
            self.apply(ev, now);
            self.flush_staged();
            return Disposition::Late;
        }
        self.buffer(source, ev, seq);
        Disposition::Buffered
    }

    /// Moves the event-time clock forward to `ts` (idle partitions):
    /// applies due events and fires due time-based alerts.
    pub fn advance_to(&mut self, ts: Ts) {
        if ts > self.watermark {
            self.watermark = ts;
            self.process(ts, false);
        }
    }

    /// End of input: applies everything buffered and runs the clock to
    /// `until` (or to the last event time) so that alerts due by then fire.
    pub fn finish(&mut self, until: Option<Ts>) {
        let end = until.or(self.max_ts).unwrap_or(self.watermark);
        self.watermark = self.watermark.max(end);
        self.process(end, true);
    }

    /// After replaying a partition up to its committed offset: applies every
    /// replayed event still buffered and the timers due by the last of them,
    /// since all of them had been applied before the restart. Not a daily
    /// sweep at exactly the last of them: whether it ran before the stop is
    /// not known (the run may have stopped right after applying an event at
    /// midnight), so it runs live, and its alerts may be emitted a second
    /// time (same ids) rather than taken for emitted and lost.
    pub fn finish_replay(&mut self) {
        if let Some(max) = self.max_ts {
            self.watermark = self.watermark.max(max);
            self.hold_sweep_at = Some(max);
            self.process(max, true);
        }
    }

    /// Alert transitions produced since the last call, in the order they happened.
    pub fn take_alerts(&mut self) -> Vec<AlertEvent> {
        std::mem::take(&mut self.out)
    }

    /// Current watermark (`i64::MIN` before any event).
    pub fn watermark(&self) -> Ts {
        self.watermark
    }

    /// Highest event time seen.
    pub fn max_ts(&self) -> Option<Ts> {
        self.max_ts
    }

    /// Event time state was last evaluated at.
    pub fn clock(&self) -> Ts {
        self.clock
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Customers tracked.
    pub fn customer_count(&self) -> usize {
        self.customers.len()
    }

    /// Approximate bytes of state.
    pub fn state_bytes(&self) -> usize {
        self.customers.iter().map(Customer::bytes).sum::<usize>()
            + self.ids.heap_bytes()
            + self.index.capacity() * 5
            + self.levels.iter().map(|l| l.capacity() * 4).sum::<usize>()
            + self.visits.heap_bytes()
            + self.buffered() * std::mem::size_of::<Pending>()
            + self.dedup.capacity() * 17
    }

    /// State by part, as (part, bytes, heap allocations), with each
    /// allocation charged as glibc malloc does (16-byte granules, 8-byte
    /// header, 32 bytes at least): for the memory benchmark.
    pub fn memory_breakdown(&self) -> Vec<(&'static str, usize, usize)> {
        fn m(bytes: usize) -> usize {
            if bytes == 0 {
                0
            } else {
                ((bytes + 8 + 15) & !15).max(32)
            }
        }
        let mut parts: Vec<(&'static str, usize, usize)> = Vec::new();
        let mut add = |name: &'static str, bytes: usize, allocs: usize| match parts
            .iter_mut()
            .find(|p| p.0 == name)
        {
            Some(p) => {
                p.1 += bytes;
                p.2 += allocs;
            }
            None => parts.push((name, bytes, allocs)),
        };
        add(
            "customers (fixed, incl. Vec slack)",
            self.customers.capacity() * std::mem::size_of::<Customer>(),
            1,
        );
        for c in &self.customers {
            add(
                "usage (activity and seats)",
                m(c.usage.heap_bytes()),
                usize::from(c.usage.heap_bytes() > 0),
            );
            if let Some(k) = &c.key_features {
                add("key_features", m(16) + m(k.heap_bytes()), 2);
            }
            if let Some(b) = &c.billing {
                add(
                    "billing",
                    m(b.heap_bytes()),
                    usize::from(b.heap_bytes() > 0),
                );
            }
            if let Some(f) = &c.feedback {
                add(
                    "feedback",
                    m(std::mem::size_of::<Feedback>())
                        + m(f.tickets.capacity() * std::mem::size_of::<Ticket>()),
                    1 + usize::from(f.tickets.capacity() > 0),
                );
            }
            if !c.firing.is_empty() {
                let inner: usize = c.firing.iter().map(|f| m(f.summary.capacity()) + 64).sum();
                add(
                    "firing",
                    m(c.firing.heap_bytes()) + inner,
                    2 + c.firing.len(),
                );
            }
        }
        add("ids", self.ids.heap_bytes(), 2);
        add("index", self.index.capacity() * 5, 1);
        add(
            "sample levels",
            self.levels.iter().map(|l| m(l.capacity() * 4)).sum(),
            self.levels.iter().filter(|l| l.capacity() > 0).count(),
        );
        add(
            "timers",
            self.timers.capacity() * std::mem::size_of::<Timer>(),
            1,
        );
        add(
            "visits",
            self.visits.heap_bytes(),
            self.visits.len() / 64 + 2,
        );
        add(
            "dedup",
            self.dedup.capacity() * 17 + self.dedup_queue.capacity() * 16,
            2,
        );
        add(
            "reorder buffer",
            (self.runs.iter().map(VecDeque::capacity).sum::<usize>() + self.heap.capacity())
                * std::mem::size_of::<Pending>(),
            2,
        );
        add(
            "ledger",
            self.ledger.heap_bytes(),
            self.ledger.len() / 65_536 + 4,
        );
        parts
    }

    /// Business metrics over `[start, end)`.
    pub fn business(&self, start: Ts, end: Ts) -> PeriodReport {
        self.ledger.report(start, end)
    }

    /// Business metrics over the rolling `metrics_window` ending at the clock
    /// (kept as facts arrive: O(plans + segments) as the clock moves on).
    pub fn business_rolling(&mut self) -> PeriodReport {
        let now = self.now();
        self.ledger.rolling(self.cfg.metrics_window, now)
    }

    /// Business metrics per calendar month up to the clock (closed months
    /// are final; the open one is kept as facts arrive).
    pub fn business_monthly(&mut self) -> Vec<PeriodReport> {
        let now = self.now();
        self.ledger.monthly(now)
    }

    /// The population context of a plan (overall for `None`).
    pub fn population(&self, plan: Option<&str>) -> &Population {
        let id = plan.and_then(|p| self.plans.ids.get(p).copied());
        self.pop_for(id.unwrap_or(0))
    }

    fn now(&self) -> Ts {
        if self.clock == Ts::MIN {
            self.max_ts.unwrap_or(0)
        } else {
            self.clock
        }
    }

    /// Rebuilds what is derived from the stored state after a restore (the
    /// index of customer ids and the sample levels, the dedup map, the count
    /// of superseded timers, the calendar of visits); the sweep's weekly
    /// totals are recomputed when needed.
    fn rebuild_derived(&mut self) {
        self.rebuild_index();
        self.week_cache = Vec::new();
        self.week_cache_day = i32::MIN;
        self.rebuild_dedup();
        self.recount_superseded_timers();
        self.refile_all();
    }

    /// Runs events, timers and sweeps due before `limit` (up to and including it when `inclusive`), in time order.
    fn process(&mut self, limit: Ts, inclusive: bool) {
        if self.hold_sweep_at.is_some_and(|h| limit > h) {
            self.hold_sweep_at = None;
        }
        if let Some(p) = &mut self.parked {
            // Resumed by `resume_sweep`: remember how far to go then.
            if limit > p.limit {
                (p.limit, p.inclusive) = (limit, inclusive);
            } else if limit == p.limit {
                p.inclusive |= inclusive;
            }
            return;
        }
        if self.clock == Ts::MIN
            && self.next_sweep != Ts::MIN
            && let Some(t) = self.next_pending().map(|p| p.ts)
        {
            // The first sweep follows the first day applied, not the first
            // event to arrive: with several input topics that order varies.
            let first = (day_of(t) as Ts + 1) * DAY_MS;
            if first < self.next_sweep {
                self.next_sweep = first;
                // Late events applied before may be filed for a later sweep.
                self.refile_all();
            }
        }
        let due = |t: Ts| if inclusive { t <= limit } else { t < limit };
        loop {
            let ev_t = self.next_pending().map(|p| p.ts);
            let tm_t = self.timers.peek().map(|t| t.0.at());
            let sw_t = (self.next_sweep != Ts::MIN).then_some(self.next_sweep);
            // Ties: events first, then timers, then the sweep.
            let next = [
                ev_t.map(|t| (t, 0)),
                tm_t.map(|t| (t, 1)),
                sw_t.map(|t| (t, 2)),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some((t, which)) = next else { break };
            if !due(t) || (which == 2 && self.hold_sweep_at == Some(t)) {
                break;
            }
            self.clock = self.clock.max(t);
            match which {
                0 => {
                    if let Some(p) = self.pop_pending() {
                        self.apply(p.ev, t);
                    }
                }
                1 => {
                    if let Some(Reverse(timer)) = self.timers.pop() {
                        self.on_timer(timer.ix(), timer.at());
                    }
                }
                _ if self.coordinated => {
                    self.parked = Some(Parked {
                        at: t,
                        limit,
                        inclusive,
                    });
                    break;
                }
                _ => {
                    // Nothing changes between sampling and sweeping here, so the
                    // sweep's signals reuse the sampled weekly totals.
                    let level = sample_level(self.customers.len(), self.cfg.population_sample);
                    let pop = self.sample_with_cache(t, level).build();
                    self.sweep(t, &pop);
                    self.next_sweep = t + DAY_MS;
                }
            }
        }
        self.flush_staged();
    }

    /// Orders this batch's transitions by (time, customer, alert, status) and releases them.
    fn flush_staged(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        self.staged.sort_by(|a, b| {
            (a.time(), &a.customer_id, a.alert, a.status).cmp(&(
                b.time(),
                &b.customer_id,
                b.alert,
                b.status,
            ))
        });
        for a in &self.staged {
            *self
                .stats
                .alerts
                .entry(format!("{}/{}", a.alert.name(), a.status.as_str()))
                .or_default() += 1;
        }
        self.out.append(&mut self.staged);
    }

    fn pop_for(&self, plan: u16) -> &Population {
        match self.population.get(&plan) {
            Some(p) if p.customers >= MIN_PLAN_POPULATION => p,
            _ => &self.overall,
        }
    }

    fn plan_of(c: &Customer) -> u16 {
        c.billing.as_ref().map_or(0, |b| b.plan)
    }

    /// Applies one event at processing time `now`.
    fn apply(&mut self, ev: Event, now: Ts) {
        self.stats.applied += 1;
        self.stats.type_counts[ev.kind.type_index()] += 1;
        let ix = self.find_or_insert(&ev.customer_id, ev.ts);
        // A usage event prunes the activity it adds to, and what it judges
        // reads no ticket older than a resolved one is kept.
        if !matches!(ev.kind, EventKind::Usage { .. }) {
            self.catch_up(ix);
        }
        // When the event moved no deadline earlier (see
        // `timer_still_first_after_usage`), only what it may fire can need
        // a sooner visit.
        let deadlines_moved = self.apply_to(ix, ev, now);
        self.file_next_visit(ix, !deadlines_moved);
    }

    /// [`Self::apply`] to customer `ix`: false when the event left its
    /// deadlines as they were but for `last_usage`, which grew.
    fn apply_to(&mut self, ix: u32, ev: Event, now: Ts) -> bool {
        // Processing time, not the highest ts seen: pruning must not depend on arrival order.
        let today = day_of(now.max(ev.ts));
        let ts = ev.ts;
        {
            let c = &mut self.customers[ix as usize];
            c.last_seen = c.last_seen.max(ts);
            c.first_seen = c.first_seen.min(ts);
        }
        if let Some(seg) = ev.segment.as_deref() {
            let id = self.segments.id(seg);
            let c = &mut self.customers[ix as usize];
            if c.segment != id {
                c.segment = id;
                let segment = self.segments.name(id).unwrap_or(seg).into();
                self.ledger.record(ts, ix, Fact::Segment { segment });
            }
        }
        let kinds: &[AlertKind] = match ev.kind {
            EventKind::Usage {
                key_feature,
                user: user_hash,
                quantity,
            } => {
                let kf_ix = key_feature.map(usize::from);
                let n_kf = self.cfg.key_features().len();
                let c = &mut self.customers[ix as usize];
                let before = (c.last_usage, c.gap_count);
                c.record_usage(ts, quantity, user_hash, today);
                // Same rhythm as at the last schedule: no new gap, not the first usage or event.
                let same_rhythm = before.0 != NEVER && before.1 == c.gap_count && ts > c.first_seen;
                if let Some(k) = kf_ix {
                    let kf = c
                        .key_features
                        .get_or_insert_with(|| Box::new(customer::KeyFeatureUse::new(n_kf)));
                    kf[k].record(ts);
                }
                // Usage can only end these two; nothing to do unless one is firing.
                if c.firing.is_empty() {
                    if same_rhythm && self.timer_still_first_after_usage(ix, ts, kf_ix.is_some()) {
                        // A key feature's first deadline may be new.
                        return kf_ix.is_some();
                    }
                    &[]
                } else {
                    &[AlertKind::Inactivity, AlertKind::KeyFeatureUnused]
                }
            }
            EventKind::Nps { score } | EventKind::Csat { score } | EventKind::Ces { score } => {
                let fact = match ev.kind {
                    EventKind::Nps { .. } => Fact::Nps { score },
                    EventKind::Csat { .. } => Fact::Csat { score },
                    _ => Fact::Ces { score },
                };
                let c = &mut self.customers[ix as usize];
                let f = c.feedback.get_or_insert_with(Default::default);
                let survey = match fact {
                    Fact::Nps { .. } => customer::NPS,
                    Fact::Csat { .. } => customer::CSAT,
                    _ => customer::CES,
                };
                f.note(survey, score, ts);
                self.ledger.record(ts, ix, fact);
                &[AlertKind::Detractor]
            }
            EventKind::SupportTicket {
                severity,
                ticket_id,
                resolved,
            } => {
                let id = ticket_id.map_or(0, |t| self.hasher.hash_one(&*t) | 1);
                let c = &mut self.customers[ix as usize];
                let f: &mut Feedback = c.feedback.get_or_insert_with(Default::default);
                match f.tickets.iter_mut().find(|t| id != 0 && t.id == id) {
                    Some(t) => {
                        t.resolved |= resolved;
                        t.severity = t.severity.max(severity);
                    }
                    None => f.push_ticket(Ticket {
                        id,
                        opened: ts,
                        severity,
                        resolved,
                    }),
                }
                &[AlertKind::SupportSpike]
            }
            kind => {
                self.apply_billing(ix, ts, kind);
                &AlertKind::ALL
            }
        };
        self.evaluate(ix, kinds, now);
        self.schedule(ix);
        true
    }

    /// Evaluates `kinds` for one customer at `now` and stages transitions.
    fn evaluate(&mut self, ix: u32, kinds: &[AlertKind], now: Ts) {
        if kinds.is_empty() {
            return;
        }
        let c = &self.customers[ix as usize];
        let plan_id = Self::plan_of(c);
        let plan = self.plans.name(plan_id);
        let pop = self.pop_for(plan_id);
        let mut changes: Vec<(AlertKind, Option<Finding>)> = Vec::new();
        // Still firing, with other reasons than when last emitted.
        let mut updates: Vec<(AlertKind, Finding)> = Vec::new();
        let weeks = if self.week_cache_day == day_of(now) {
            self.week_cache
                .binary_search_by_key(&ix, |e| e.0)
                .ok()
                .map(|i| &self.week_cache[i].1)
        } else {
            None
        };
        for &kind in kinds {
            let params = self.cfg.alert(kind, plan);
            let firing = c.is_firing(kind);
            if !params.enabled && !firing {
                continue;
            }
            let ctx = Ctx {
                now,
                today: day_of(now),
                pop,
                params,
                firing,
                dunning_grace: self.cfg.dunning_grace,
                key_features: self.cfg.key_features(),
                weeks,
            };
            let finding = if params.enabled {
                signals::evaluate(kind, c, &ctx)
            } else {
                None
            };
            match finding {
                Some(f) if firing => {
                    let reasons_changed = c.firing.get(kind).is_some_and(|old| {
                        signals::reasons_of(kind, &old.evidence)
                            != signals::reasons_of(kind, &f.evidence)
                    });
                    if reasons_changed {
                        updates.push((kind, f));
                    }
                }
                f if f.is_some() != firing => changes.push((kind, f)),
                _ => {}
            }
        }
        if changes.is_empty() && updates.is_empty() {
            return;
        }
        let c = &mut self.customers[ix as usize];
        let mut transitions = Vec::with_capacity(changes.len());
        // Still firing: when the reasons change, subscribers get the alert
        // again with its first `starts_at` and the current evidence, which
        // the API shows from then on. Numbers that drift while the reasons
        // stay are not refreshed: the API shows what was last emitted, and
        // no evaluation in between (whose timing a restart can change for
        // population-dependent alerts) alters it.
        for (kind, f) in updates {
            let Some(old) = c.firing.get_mut(kind) else {
                continue;
            };
            old.evidence = f.evidence;
            old.summary = f.summary;
            transitions.push((
                kind,
                AlertStatus::Firing,
                old.starts_at,
                None,
                Some(now),
                old.summary.clone(),
                old.evidence.clone(),
            ));
        }
        for (kind, finding) in changes {
            match finding {
                Some(f) => {
                    let starts_at = f.starts_at.min(now);
                    c.firing.push(Firing {
                        kind,
                        starts_at,
                        evidence: f.evidence.clone(),
                        summary: f.summary.clone(),
                    });
                    transitions.push((
                        kind,
                        AlertStatus::Firing,
                        starts_at,
                        None,
                        None,
                        f.summary,
                        f.evidence,
                    ));
                }
                None => {
                    if let Some(old) = c.firing.remove_kind(kind) {
                        let ends = now.max(old.starts_at);
                        let summary = format!("Resolved: {}", resolved_summary(kind));
                        transitions.push((
                            kind,
                            AlertStatus::Resolved,
                            old.starts_at,
                            Some(ends),
                            None,
                            summary,
                            old.evidence,
                        ));
                    }
                }
            }
        }
        if transitions.is_empty() {
            return;
        }
        c.firing.sort_by_key(|f| f.kind);
        let health = self.health(ix, now);
        let c = &self.customers[ix as usize];
        for (kind, status, starts_at, ends_at, updated_at, summary, evidence) in transitions {
            let event = AlertEvent {
                customer_id: self.ids.get(ix).into(),
                alert: kind,
                status,
                severity: self.cfg.alert(kind, plan).severity,
                plan: plan.map(Into::into),
                segment: self.segments.name(c.segment).map(Into::into),
                starts_at,
                ends_at,
                updated_at,
                health_score: health.score,
                mrr_at_risk: c.mrr().map(|m| {
                    if kind == AlertKind::Churned {
                        c.billing.as_ref().map_or(m, |b| b.churned_mrr())
                    } else {
                        m
                    }
                }),
                currency: self.cfg.decode.reporting_currency.clone(),
                summary,
                evidence,
            };
            self.staged.push(event);
        }
    }

    fn health(&self, ix: u32, now: Ts) -> Health {
        let c = &self.customers[ix as usize];
        let plan_id = Self::plan_of(c);
        let plan = self.plans.name(plan_id);
        let ctx = Ctx {
            now,
            today: day_of(now),
            pop: self.pop_for(plan_id),
            params: self.cfg.alert(AlertKind::Inactivity, plan),
            firing: false,
            dunning_grace: self.cfg.dunning_grace,
            key_features: self.cfg.key_features(),
            weeks: None,
        };
        health::score(
            c,
            &ctx,
            self.cfg
                .alert(AlertKind::SeatContraction, plan)
                .min_baseline,
        )
    }

    /// The context an alert not firing is judged in at `now`, in population
    /// context `pop`, without weekly totals at hand.
    fn ctx_not_firing<'a>(
        &'a self,
        pop: &'a Population,
        params: &'a AlertParams,
        now: Ts,
    ) -> Ctx<'a> {
        Ctx {
            now,
            today: day_of(now),
            pop,
            params,
            firing: false,
            dunning_grace: self.cfg.dunning_grace,
            key_features: self.cfg.key_features(),
            weeks: None,
        }
    }
}

fn resolved_summary(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::EngagementDrop => "activity is back near this customer's baseline",
        AlertKind::Inactivity => "the customer is using the product again",
        AlertKind::SeatContraction => "active users are back near baseline",
        AlertKind::KeyFeatureUnused => "the key feature is in use again",
        AlertKind::Downgrade => "the downgrade is no longer recent, or MRR is back",
        AlertKind::PaymentFailed => "the payment was recovered (or dunning ended)",
        AlertKind::Churned => "the customer was reactivated",
        AlertKind::Detractor => "latest feedback is no longer negative",
        AlertKind::SupportSpike => "support load is back to normal",
    }
}

#[cfg(test)]
mod tests {
    /// A replay whose last event is exactly at midnight leaves that day's
    /// sweep to run live: the stopped run may not have run it (it parked
    /// there, waiting for other partitions), and a settling partition drops
    /// the alerts of a sweep it parks at as emitted before the restart.
    #[test]
    fn a_replay_ending_at_midnight_leaves_that_sweep_to_run_live() {
        use crate::event::{DAY_MS, Event, EventKind, parse_ts};
        let cfg = std::sync::Arc::new(crate::config::Config::default());
        let t0 = parse_ts("2026-01-05T00:00:00Z").unwrap();
        let usage = |ts| Event {
            customer_id: "c".into(),
            ts,
            event_id: None,
            segment: None,
            kind: EventKind::Usage {
                key_feature: None,
                user: None,
                quantity: 1.0,
            },
        };
        let replay = |last| {
            let mut e = super::Engine::new(cfg.clone());
            e.set_coordinated(true);
            for (i, ts) in [t0 + 3_600_000, t0 + DAY_MS + 3_600_000, last]
                .into_iter()
                .enumerate()
            {
                e.ingest(usage(ts), i as u64);
            }
            e.finish_replay();
            e
        };
        // The first sweep (day 1's midnight) is before the last event: the
        // replay parks there (it ran before the stop).
        assert_eq!(
            replay(t0 + 2 * DAY_MS - 1).sweep_pending(),
            Some(t0 + DAY_MS)
        );
        // Ending at day 2's midnight: parked at day 1's still, which ran.
        let mut e = replay(t0 + 2 * DAY_MS);
        assert_eq!(e.sweep_pending(), Some(t0 + DAY_MS));
        e.resume_sweep(&Default::default());
        // Then not at day 2's, which is left to run live.
        assert_eq!(e.sweep_pending(), None);
        e.ingest(usage(t0 + 2 * DAY_MS + 3 * 3_600_000), 9);
        assert_eq!(e.sweep_pending(), Some(t0 + 2 * DAY_MS));
    }
}
