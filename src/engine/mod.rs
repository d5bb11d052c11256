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
//! - this file: [`Engine`] and its ingest / time API, `process` (events,
//!   timers and sweeps in time order), applying an event to a customer,
//!   judging its alerts, and the daily sweep.
//! - `reorder`: the reorder buffer, the input sources and the watermark, the `event_id` dedup horizon.
//! - `timers`: one live timer per customer at its next deadline, the timer heap and its superseded entries.
//! - `billing`: the billing state machine: billing events and dunning expiry move a customer's `Billing` and yield business facts.
//! - `ids`: customer ids and their index, the plan and segment name interners, new-id floods, the population sample's hash.
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
use crate::event::{DAY_MS, Event, EventKind, Ts, format_ts};
use crate::signals::health::{self, Health};
use crate::signals::{self, Ctx, Finding, Population, WeekTotals, engagement};
use crate::state::{customer, window};

use customer::{Customer, Feedback, Firing, NEVER, Ticket};
use ids::{Ids, MAX_SAMPLE_LEVEL, Names, NewIds};
pub use ids::{sample_hash, sample_level};
use population::{Acc, InstancePopulation, MIN_PLAN_POPULATION, PopulationSamples};
use reorder::{Pending, Source};
use timers::Timer;
pub use view::{
    AT_RISK_KEPT, AlertView, BillingView, CustomerRow, CustomerView, FeedbackView, GroupSnapshot,
    Lifecycle, ReadView, Snapshot, WeekView, rank_at_risk,
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

/// The window alerts, judged at the daily sweep.
const SWEEP_KINDS: [AlertKind; 3] = [
    AlertKind::EngagementDrop,
    AlertKind::SeatContraction,
    AlertKind::SupportSpike,
];

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
                "activity",
                m(c.activity.heap_bytes()),
                usize::from(c.activity.heap_bytes() > 0),
            );
            if let Some(s) = c.seats() {
                add("seats", m(s.heap_bytes()), 1);
            }
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

    /// Files every customer afresh on the calendar of visits.
    fn refile_all(&mut self) {
        self.visits.reset(self.customers.len());
        for ix in 0..self.customers.len() as u32 {
            self.file_next_visit(ix, false);
        }
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

    /// Daily: population context, then the customers on the calendar of
    /// visits for today ([`Self::visit`]); every other customer has nothing
    /// a sweep can change (debug builds check each).
    fn sweep(&mut self, now: Ts, pop: &InstancePopulation) {
        let today = day_of(now);
        self.set_population(pop);
        let due = self.visits.take_due(today);
        self.sweep_work.0 += 1;
        self.sweep_work.1 += due.len() as u64;
        #[cfg(debug_assertions)]
        self.assert_nothing_to_do_but(&due, now);
        for ix in due {
            self.visit(ix, now);
            self.file_next_visit_from(ix, today + 1, false);
        }
        self.drop_superseded_timers();
        self.expire_dedup();
        // The weekly totals are a sweep's only (~80 bytes per sampled
        // customer): not kept between sweeps.
        self.week_cache_day = i32::MIN;
        self.week_cache = Vec::new();
    }

    /// The window alerts a sweep at `now` judges for `c`, in
    /// [`SWEEP_KINDS`] order: those firing, and those enabled that
    /// [`signals::may_fire`]. The others cannot change, whatever the
    /// population: skipping them keeps a sweep's cost to the customers
    /// where something can happen.
    fn sweep_kinds(&self, c: &Customer, now: Ts) -> ([AlertKind; SWEEP_KINDS.len()], usize) {
        let plan = self.plans.name(Self::plan_of(c));
        let mut kinds = SWEEP_KINDS;
        let mut n = 0;
        for kind in SWEEP_KINDS {
            let params = self.cfg.alert(kind, plan);
            if c.is_firing(kind) || (params.enabled && signals::may_fire(kind, c, params, now)) {
                kinds[n] = kind;
                n += 1;
            }
        }
        (kinds, n)
    }

    /// Whether a sweep at `now` judges the window alerts of `c` at all
    /// ([`judged_on`]), and which ([`Self::sweep_kinds`]).
    fn sweep_judges(
        &self,
        c: &Customer,
        now: Ts,
    ) -> Option<([AlertKind; SWEEP_KINDS.len()], usize)> {
        judged_on(c, day_of(now)).then(|| self.sweep_kinds(c, now))
    }

    /// The earliest that a deadline of `c` depending on the population
    /// (inactivity, key feature unused; not firing) can fall, whatever the
    /// population, computed at `now`: with the population's typical gap
    /// below any customer's own and no lull. It is never later than the
    /// real deadline at `now` or after (a customer's observed gap only
    /// grows with time), less a minute for rounding.
    fn earliest_population_deadline(&self, c: &Customer, now: Ts) -> Option<Ts> {
        static NO_POPULATION: Population = Population {
            activity_factor: 1.0,
            seat_factor: 1.0,
            fortnight_factor: 1.0,
            typical_gap_days: 0.0,
            repeat_gap_days: 0.0,
            weekly_events_quantiles: Vec::new(),
            daily_factors: Vec::new(),
            customers: 0,
        };
        if c.is_churned() {
            return None;
        }
        self.population_deadline(c, &NO_POPULATION, now)
            .map(|t| t - 60_000)
    }

    /// Whether a sweep at `now` moves `c`'s timer to its deadlines of now:
    /// only when one that depends on the population can fall before the
    /// next sweep. Others stay where they were set when the customer last
    /// changed (the timer is never later than they are), and a later one is
    /// set when the timer before it goes off.
    fn sweep_reschedules(&self, c: &Customer, now: Ts) -> bool {
        self.earliest_population_deadline(c, now)
            .is_some_and(|d| d < now + DAY_MS)
    }

    /// A sweep's visit of `ix` at `now`: its windows pruned, its window
    /// alerts judged ([`Self::sweep_judges`]) and its timer moved
    /// ([`Self::sweep_reschedules`]), as the sweep needs.
    fn visit(&mut self, ix: u32, now: Ts) {
        prune_to(&mut self.customers[ix as usize], now);
        let c = &self.customers[ix as usize];
        if let Some((kinds, n)) = self.sweep_judges(c, now) {
            #[cfg(debug_assertions)]
            self.assert_cannot_fire_unless(ix, &kinds[..n], now);
            self.evaluate(ix, &kinds[..n], now);
        }
        if self.sweep_reschedules(&self.customers[ix as usize], now) {
            self.reschedule(ix, now);
        }
    }

    /// Brings `ix`'s windows to what the sweeps so far left (the sweep
    /// visits only some customers: the others catch up when next touched).
    fn catch_up(&mut self, ix: u32) {
        if self.next_sweep != Ts::MIN {
            prune_to(&mut self.customers[ix as usize], self.next_sweep - DAY_MS);
        }
    }

    /// The earliest day from `from` on whose sweep can have to visit `c`
    /// without another event (`None`: none can): to judge a window alert
    /// ([`signals::may_fire_from`]), to move its timer (the day of its
    /// [`Self::earliest_population_deadline`]), or to drop the last of its
    /// activity or a resolved ticket from its windows (memory only).
    fn next_visit(&self, c: &Customer, from: i32, judging_only: bool) -> Option<i32> {
        let from_ts = from as Ts * DAY_MS;
        let mut best: Option<Ts> = None;
        let mut consider = |t: Option<Ts>| {
            if let Some(t) = t {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        // Once not judged, a customer is not judged again without an event.
        if judged_on(c, from) {
            let plan = self.plans.name(Self::plan_of(c));
            for kind in SWEEP_KINDS {
                let params = self.cfg.alert(kind, plan);
                if c.is_firing(kind) {
                    consider(Some(from_ts));
                } else if params.enabled {
                    consider(signals::may_fire_from(kind, c, params, from_ts));
                }
            }
        }
        if !judging_only {
            consider(
                self.earliest_population_deadline(c, from_ts)
                    .map(|d| (day_of(d) as Ts * DAY_MS).max(from_ts)),
            );
            consider(
                c.activity
                    .buckets()
                    .last()
                    .map(|b| Ts::from(b.day + window::HORIZON_DAYS) * DAY_MS),
            );
            if let Some(f) = &c.feedback {
                consider(
                    f.tickets
                        .iter()
                        .filter(|t| t.resolved)
                        .map(|t| t.opened + RESOLVED_TICKETS_KEPT)
                        .min(),
                );
            }
        }
        // The first sweep (a midnight) at or after it; a visit sooner than
        // needed changes nothing, so the calendar looks a year ahead at most.
        best.map(|t| {
            let day = t.max(from_ts).saturating_add(DAY_MS - 1).div_euclid(DAY_MS);
            day.min(Ts::from(from) + 366) as i32
        })
    }

    /// Files `ix` on the calendar of visits from the next sweep on;
    /// `judging_only` after an event that moved none of its deadlines
    /// earlier and added no ticket (only a window alert can need a sooner
    /// visit).
    fn file_next_visit(&mut self, ix: u32, judging_only: bool) {
        if self.next_sweep != Ts::MIN {
            self.file_next_visit_from(ix, day_of(self.next_sweep), judging_only);
        }
    }

    fn file_next_visit_from(&mut self, ix: u32, from: i32, judging_only: bool) {
        if self.visits.is_filed_by(ix, from) {
            return; // as soon as can be
        }
        if let Some(d) = self.next_visit(&self.customers[ix as usize], from, judging_only) {
            self.visits.file(ix, d);
        }
    }

    /// Debug builds check the calendar at each sweep: a customer it does
    /// not visit has no window alert to judge and no timer to move.
    #[cfg(debug_assertions)]
    fn assert_nothing_to_do_but(&self, due: &[u32], now: Ts) {
        for ix in 0..self.customers.len() as u32 {
            if due.binary_search(&ix).is_ok() {
                continue;
            }
            let mut c = self.customers[ix as usize].clone();
            prune_to(&mut c, now);
            let judges = self.sweep_judges(&c, now).is_some_and(|(_, n)| n > 0);
            assert!(
                !judges && !self.sweep_reschedules(&c, now),
                "{} not on the calendar of the sweep at {} (filed by then: {}) but it judges {judges}",
                self.ids.get(ix),
                format_ts(now),
                self.visits.is_filed_by(ix, day_of(now)),
            );
        }
    }

    /// Debug builds check every skip of [`Self::sweep_kinds`]: an enabled
    /// sweep alert left out finds nothing.
    #[cfg(debug_assertions)]
    fn assert_cannot_fire_unless(&self, ix: u32, judged: &[AlertKind], now: Ts) {
        let c = &self.customers[ix as usize];
        let plan_id = Self::plan_of(c);
        let plan = self.plans.name(plan_id);
        for kind in SWEEP_KINDS.into_iter().filter(|k| !judged.contains(k)) {
            let params = self.cfg.alert(kind, plan);
            if !params.enabled {
                continue;
            }
            assert!(
                signals::evaluate(
                    kind,
                    c,
                    &self.ctx_not_firing(self.pop_for(plan_id), params, now)
                )
                .is_none(),
                "{kind:?} skipped by the sweep but fires for {}",
                self.ids.get(ix)
            );
        }
    }

    /// Raw population values of this engine's customers in the sample of
    /// `level` ([`sample_level`]) for a sweep at `now`, keeping each sampled
    /// customer's weekly totals in `cache` (by customer index, ascending).
    fn population_samples_into(
        &self,
        now: Ts,
        level: usize,
        cache: &mut Vec<(u32, WeekTotals)>,
    ) -> PopulationSamples {
        let today = day_of(now);
        let mut per_plan: FxHashMap<u16, Acc> = FxHashMap::default();
        let min_gaps = self.cfg.alerts[AlertKind::Inactivity as usize].min_baseline as usize;
        cache.clear();
        let mut sampled: Vec<u32> = self.levels[level.min(MAX_SAMPLE_LEVEL)..]
            .iter()
            .flatten()
            .copied()
            .collect();
        sampled.sort_unstable();
        for ix in sampled {
            let c = &self.customers[ix as usize];
            if c.last_usage == NEVER
                || c.is_churned()
                || day_of(c.last_usage) <= today - window::HORIZON_DAYS
            {
                continue;
            }
            let t = WeekTotals::of(c, today);
            cache.push((ix, t));
            let acc = per_plan.entry(Self::plan_of(c)).or_default();
            let horizon = window::HORIZON_DAYS as usize - 2;
            if acc.daily.is_empty() {
                acc.daily.resize(horizon, 0);
            }
            for b in c.activity.buckets() {
                if let Ok(i) = usize::try_from(today - 1 - b.day) {
                    if i < horizon {
                        acc.daily[i] += u64::from(b.events);
                    }
                }
            }
            let current = t.events[0] as f64;
            acc.weekly.push(current);
            let mut w = c.baseline_weeks_by_index(today, |k| t.events[k] as f64);
            let n = w.len;
            if let Some(b) = window::median(w.values_mut()) {
                if n >= 2 && b >= 1.0 {
                    acc.ratios.push(current / b);
                }
            }
            let fortnight = f64::from(engagement::FORTNIGHT_DAYS);
            if let Some((recent, rate, _)) =
                engagement::fortnight(c, today).filter(|(_, rate, _)| *rate * fortnight >= 1.0)
            {
                let r = recent / (rate * fortnight);
                acc.fortnight_ratios.push(r);
            }
            if let Some(d) = t.seats {
                let mut w = c.baseline_weeks_by_index(today, |k| f64::from(d[k]));
                if let Some(b) = window::median(w.values_mut()).filter(|b| *b >= 1.0) {
                    acc.seat_ratios.push(f64::from(d[0]) / b);
                }
            }
            let now = (today as Ts) * DAY_MS;
            let g = c
                .typical_gap_days(min_gaps)
                .unwrap_or_else(|| c.observed_gap_days(now));
            acc.gaps.push(g);
            if let Some(r) = c.typical_gap_days(1) {
                acc.repeat_gaps.push(r);
            }
        }
        PopulationSamples {
            per_plan: per_plan
                .into_iter()
                .map(|(id, acc)| (self.plans.name(id).map(Into::into), acc))
                .collect(),
        }
    }

    /// Installs a sweep's population context (plans by name).
    fn set_population(&mut self, pop: &InstancePopulation) {
        self.population.clear();
        for (name, p) in &pop.per_plan {
            let id = name.as_deref().map_or(0, |n| self.plans.intern(n));
            self.population.insert(id, p.clone());
        }
        self.overall = pop.overall.clone();
    }

    /// Sweeps wait at their time for a population merged from outside
    /// (several engines of one instance): see [`population`].
    pub fn set_coordinated(&mut self, on: bool) {
        self.coordinated = on;
    }

    /// The sweep time this engine is parked at, waiting for its population.
    pub fn sweep_pending(&self) -> Option<Ts> {
        self.parked.map(|p| p.at)
    }

    /// Whether this engine holds no customer state a sweep at `at` of its
    /// instance still waits for: parked at `at` or later, past `at`, or
    /// without any event and with every source drained.
    pub fn ready_for_sweep(&self, at: Ts) -> bool {
        match self.parked {
            Some(p) => p.at >= at,
            None => {
                self.watermark > at
                    || (self.max_ts.is_none() && self.sources.iter().all(|s| s.idle))
            }
        }
    }

    /// This engine's raw population values, of its customers in the sample
    /// of `level` ([`sample_level`] of the instance's customers), for the
    /// sweep it is parked at (empty when not parked). Keeps each sampled
    /// customer's weekly totals for [`Self::resume_sweep`]'s signals (a late
    /// event applied in between drops them), so the sweep does not compute
    /// them a second time.
    pub fn population_samples(&mut self, level: usize) -> PopulationSamples {
        match self.parked {
            Some(p) => self.sample_with_cache(p.at, level),
            None => PopulationSamples::default(),
        }
    }

    /// Population samples at `now`, keeping the weekly totals in
    /// `week_cache` for the sweep at `now` (which drops them when done).
    fn sample_with_cache(&mut self, now: Ts, level: usize) -> PopulationSamples {
        let mut cache = std::mem::take(&mut self.week_cache);
        let samples = self.population_samples_into(now, level, &mut cache);
        self.week_cache = cache;
        self.week_cache_day = day_of(now);
        samples
    }

    /// Runs the parked sweep with the instance's population, then carries on
    /// as far as processing was asked to go (it may park at the next sweep).
    pub fn resume_sweep(&mut self, pop: &InstancePopulation) {
        let Some(p) = self.parked.take() else { return };
        self.sweep(p.at, pop);
        self.next_sweep = p.at + DAY_MS;
        self.process(p.limit, p.inclusive);
    }

    /// Daily sweeps this engine ran and the customers they visited (since
    /// it was made or restored): a sweep visits only the customers where
    /// something can change that day.
    pub fn sweep_work(&self) -> (u64, u64) {
        self.sweep_work
    }
}

/// Whether a sweep of `today` judges `c`'s window alerts at all: used
/// within the horizon, something firing, or feedback on record.
fn judged_on(c: &Customer, today: i32) -> bool {
    (c.last_usage != NEVER && day_of(c.last_usage) > today - window::HORIZON_DAYS)
        || !c.firing.is_empty()
        || c.feedback.is_some()
}

/// How long a resolved ticket stays in a customer's windows.
const RESOLVED_TICKETS_KEPT: Ts = 70 * DAY_MS;

/// Drops what a sweep at `at` drops from `c`'s windows: activity beyond the
/// horizon, resolved tickets older than [`RESOLVED_TICKETS_KEPT`].
fn prune_to(c: &mut Customer, at: Ts) {
    c.activity.prune(day_of(at));
    if let Some(f) = c.feedback.as_deref_mut() {
        f.tickets
            .retain(|t| !t.resolved || at - t.opened < RESOLVED_TICKETS_KEPT);
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
    /// On a workload where most customers are quiet on any day (the light
    /// profile: about nine events a customer over 28 days), the daily sweep
    /// visits a small share of the customers, where a sweep over all of
    /// them visits every one every day; the alerts are judged all the same
    /// (debug builds check, at each sweep, that every customer left out had
    /// nothing to judge and no timer to move). Three seeds.
    #[test]
    fn a_sweep_visits_only_the_customers_where_something_can_change() {
        use crate::generate::{GenerateArgs, Profile, generate_to_vec};
        let cfg = std::sync::Arc::new(crate::config::Config::default());
        for seed in [1, 2, 3] {
            let opts = GenerateArgs {
                seed,
                customers: 1500,
                profile: Profile::Light,
                ..GenerateArgs::default()
            }
            .options()
            .expect("generator options");
            let mut e = super::Engine::new(cfg.clone());
            for (i, l) in generate_to_vec(&opts).lines.iter().enumerate() {
                if let Ok(ev) = crate::event::decode(l.as_bytes(), &cfg.decode) {
                    e.ingest(ev, i as u64);
                }
            }
            e.finish(None);
            let (sweeps, visits) = e.sweep_work();
            // What visiting every customer known at each sweep would cost
            // (at least: customers arrive over the period).
            let every = e.customer_count() as u64 * sweeps / 2;
            assert!(sweeps >= 27, "seed {seed}: {sweeps} sweeps");
            assert!(
                visits * 5 < every,
                "seed {seed}: {visits} visits in {sweeps} sweeps of {} customers",
                e.customer_count()
            );
        }
    }

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
