//! The daily sweep: at each midnight of event time, the population context
//! (sampled from this engine's customers, or, while coordinated, merged over
//! the engines of an instance: [`super::population`]), then a visit of each
//! customer on the calendar of visits for that day (its windows pruned, its
//! window alerts judged, its timer moved) and its next visit filed.

use rustc_hash::FxHashMap;

use super::Engine;
use super::ids::MAX_SAMPLE_LEVEL;
use super::population::{Acc, InstancePopulation, PopulationSamples};
use crate::catalogue::AlertKind;
use crate::event::{DAY_MS, Ts};
use crate::signals::{self, Population, WeekTotals, engagement};
use crate::state::customer::{Customer, NEVER};
use crate::state::window::{self, day_of};

/// The window alerts, judged at the daily sweep.
pub(super) const SWEEP_KINDS: [AlertKind; 3] = [
    AlertKind::EngagementDrop,
    AlertKind::SeatContraction,
    AlertKind::SupportSpike,
];

impl Engine {
    /// Files every customer afresh on the calendar of visits.
    pub(super) fn refile_all(&mut self) {
        self.visits.reset(self.customers.len());
        for ix in 0..self.customers.len() as u32 {
            self.file_next_visit(ix, false);
        }
    }

    /// Daily: population context, then the customers on the calendar of
    /// visits for today ([`Self::visit`]); every other customer has nothing
    /// a sweep can change (debug builds check each).
    pub(super) fn sweep(&mut self, now: Ts, pop: &InstancePopulation) {
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
    pub(super) fn catch_up(&mut self, ix: u32) {
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
                c.activity()
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
    pub(super) fn file_next_visit(&mut self, ix: u32, judging_only: bool) {
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
                crate::event::format_ts(now),
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
    /// `level` ([`super::sample_level`]) for a sweep at `now`, keeping each sampled
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
            for b in c.activity().buckets() {
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
    /// (several engines of one instance): see [`super::population`].
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
    /// of `level` ([`super::sample_level`] of the instance's customers), for the
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
    pub(super) fn sample_with_cache(&mut self, now: Ts, level: usize) -> PopulationSamples {
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
    c.usage.prune(day_of(at));
    if let Some(f) = c.feedback.as_deref_mut() {
        f.tickets
            .retain(|t| !t.resolved || at - t.opened < RESOLVED_TICKETS_KEPT);
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
}
