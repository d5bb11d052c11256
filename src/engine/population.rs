//! The population context of a daily sweep, in phases, so that several
//! engines (one per Kafka partition) can share one context per instance:
//!
//! 1. an engine whose watermark reaches its next sweep time `D` parks there
//!    ([`Engine::sweep_pending`]): it applies nothing at or after `D` and keeps
//!    those events in its reorder buffer;
//! 2. once every engine of the instance is parked at `D` or past it
//!    ([`Engine::ready_for_sweep`]), their raw samples
//!    ([`Engine::population_samples`]) are merged by plan name into one
//!    [`InstancePopulation`];
//! 3. each parked engine runs the rest of its sweep with it and carries on
//!    ([`Engine::resume_sweep`]).
//!
//! [`release_sweeps`] does 2 and 3. A single engine (backtest) does all of it
//! inside its own sweep. The merged context does not depend on how customers
//! are spread over engines (medians and quantiles of the same multiset), so
//! the alerts of a sharded run are the backtest's.

use std::collections::BTreeMap;

use crate::signals::Population;

use super::Engine;

/// Plans with fewer customers than this use the overall population context.
pub(super) const MIN_PLAN_POPULATION: u64 = 20;
/// Customers with a rhythm of their own needed before the population's gap is trusted.
const MIN_GAP_POPULATION: usize = 30;

/// Raw per-customer values of one plan at a sweep.
#[derive(Debug, Default, Clone)]
pub(super) struct Acc {
    pub(super) ratios: Vec<f64>,
    pub(super) seat_ratios: Vec<f64>,
    pub(super) fortnight_ratios: Vec<f64>,
    pub(super) gaps: Vec<f64>,
    /// Mean gap between active days of each customer with at least one.
    pub(super) repeat_gaps: Vec<f64>,
    pub(super) weekly: Vec<f64>,
    /// Events of all sampled customers per day, index 0 = the day before
    /// the sweep (integers: the sum does not depend on the order of merging).
    pub(super) daily: Vec<u64>,
}

impl Acc {
    fn extend(&mut self, o: &Acc) {
        self.ratios.extend_from_slice(&o.ratios);
        self.seat_ratios.extend_from_slice(&o.seat_ratios);
        self.fortnight_ratios.extend_from_slice(&o.fortnight_ratios);
        self.gaps.extend_from_slice(&o.gaps);
        self.repeat_gaps.extend_from_slice(&o.repeat_gaps);
        self.weekly.extend_from_slice(&o.weekly);
        if self.daily.len() < o.daily.len() {
            self.daily.resize(o.daily.len(), 0);
        }
        for (a, b) in self.daily.iter_mut().zip(&o.daily) {
            *a += b;
        }
    }

    fn build(mut self) -> Population {
        let n = self.weekly.len() as u64;
        let d = Population::default();
        self.weekly.sort_by(|x, y| x.total_cmp(y));
        let quantiles = if self.weekly.is_empty() {
            Vec::new()
        } else {
            (0..=100)
                .map(|q| self.weekly[(q * (self.weekly.len() - 1)) / 100])
                .collect()
        };
        Population {
            activity_factor: median(&mut self.ratios).map_or(d.activity_factor, |m| m.min(1.0)),
            seat_factor: median(&mut self.seat_ratios).map_or(d.seat_factor, |m| m.min(1.0)),
            fortnight_factor: median(&mut self.fortnight_ratios)
                .map_or(d.fortnight_factor, |m| m.min(1.0)),
            typical_gap_days: if self.gaps.len() >= MIN_GAP_POPULATION {
                quantile(&mut self.gaps, 0.9).unwrap_or(d.typical_gap_days)
            } else {
                d.typical_gap_days
            },
            repeat_gap_days: if self.repeat_gaps.len() >= MIN_GAP_POPULATION {
                median(&mut self.repeat_gaps).unwrap_or(d.repeat_gap_days)
            } else {
                d.repeat_gap_days
            },
            weekly_events_quantiles: quantiles,
            daily_factors: daily_factors(&self.daily),
            customers: n,
        }
    }
}

/// Per day (index 0 = yesterday, up to [`DAILY_FACTOR_DAYS`]) the base's
/// events against the median of the same weekday in the (up to) five weeks
/// before, capped at 1: a holiday that everyone shares shows as a factor
/// below 1 on its days, whatever each customer's own rhythm.
fn daily_factors(daily: &[u64]) -> Vec<f64> {
    (0..DAILY_FACTOR_DAYS.min(daily.len()))
        .map(|d| {
            let mut refs: Vec<f64> = (1..=5)
                .filter_map(|k| daily.get(d + 7 * k).map(|&x| x as f64))
                .collect();
            match median(&mut refs) {
                Some(m) if m >= 1.0 && refs.len() >= 2 => {
                    // Only a real base-wide dip counts: the day-to-day wobble
                    // of the base's totals (and what a restart's replay
                    // changes in them) is not a holiday.
                    let f = daily[d] as f64 / m;
                    if f >= DAILY_FACTOR_NORMAL { 1.0 } else { f }
                }
                _ => 1.0,
            }
        })
        .collect()
}

/// A day at this share of the base's usual total or more counts as normal (1).
const DAILY_FACTOR_NORMAL: f64 = 0.85;

/// Days of [`Population::daily_factors`].
pub const DAILY_FACTOR_DAYS: usize = 28;

fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some(*v.select_nth_unstable_by(i, f64::total_cmp).1)
}

/// [`super::window::median`] by selection: the same value (the order is total)
/// without sorting the whole population.
fn median(v: &mut [f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let (lo, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    Some(if n % 2 == 1 {
        mid
    } else {
        let below = lo.iter().copied().max_by(f64::total_cmp).unwrap_or(mid);
        (below + mid) / 2.0
    })
}

/// The raw population values of one or more engines at one sweep time, by
/// plan name (`None`: customers without a plan). Merge those of every engine
/// of an instance, then [`Self::build`].
#[derive(Debug, Default, Clone)]
pub struct PopulationSamples {
    pub(super) per_plan: BTreeMap<Option<Box<str>>, Acc>,
}

impl PopulationSamples {
    /// Adds another engine's samples (same sweep time).
    pub fn merge(&mut self, other: &PopulationSamples) {
        for (plan, acc) in &other.per_plan {
            self.per_plan.entry(plan.clone()).or_default().extend(acc);
        }
    }

    /// Customers sampled.
    pub fn customers(&self) -> usize {
        self.per_plan.values().map(|a| a.weekly.len()).sum()
    }

    /// Medians and quantiles per plan and overall.
    pub fn build(self) -> InstancePopulation {
        let mut all = Acc::default();
        for a in self.per_plan.values() {
            all.extend(a);
        }
        InstancePopulation {
            per_plan: self
                .per_plan
                .into_iter()
                .map(|(k, v)| (k, v.build()))
                .collect(),
            overall: all.build(),
        }
    }
}

/// The population context of a sweep: per plan (by name) and overall.
#[derive(Debug, Default, Clone)]
pub struct InstancePopulation {
    pub(super) per_plan: Vec<(Option<Box<str>>, Population)>,
    pub(super) overall: Population,
}

/// Releases every sweep the engines of one instance are all ready for: for
/// the earliest parked sweep time `D`, once each engine is parked at `D` or
/// past it, merges the samples of those parked at `D` and hands the merged
/// context to them (they run their sweep and carry on, maybe parking at the
/// next one). An engine `i` with `finished(i)` does not hold a sweep back
/// (end of a replay: nothing more comes for it). Returns the sweeps released;
/// take each engine's alerts afterwards.
pub fn release_sweeps(engines: &mut [&mut Engine], finished: impl Fn(usize) -> bool) -> usize {
    let mut released = 0;
    while release_next(engines, &finished) {
        released += 1;
    }
    released
}

/// Releases the earliest parked sweep now, with the samples of the engines
/// parked there, even if others have not reached it (a bound on what a
/// parked engine buffers). Returns whether there was one.
pub fn force_next_sweep(engines: &mut [&mut Engine]) -> bool {
    release_next(engines, &|_| true)
}

fn release_next(engines: &mut [&mut Engine], finished: &dyn Fn(usize) -> bool) -> bool {
    let Some(at) = engines.iter().filter_map(|e| e.sweep_pending()).min() else {
        return false;
    };
    let ready = |(i, e): (usize, &&mut Engine)| finished(i) || e.ready_for_sweep(at);
    if !engines.iter().enumerate().all(ready) {
        return false;
    }
    // The sample level of the instance's customers, as one engine with all
    // of them would choose it.
    let customers = engines
        .iter()
        .filter(|e| e.sweep_pending() == Some(at))
        .map(|e| e.customer_count())
        .sum();
    let sample = engines.first().map_or(1, |e| e.config().population_sample);
    let level = super::sample_level(customers, sample);
    let mut samples = PopulationSamples::default();
    for e in engines.iter_mut().filter(|e| e.sweep_pending() == Some(at)) {
        samples.merge(&e.population_samples(level));
    }
    let pop = samples.build();
    for e in engines.iter_mut() {
        if e.sweep_pending() == Some(at) {
            e.resume_sweep(&pop);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::hash::{BuildHasher, Hash};
    use std::sync::Arc;

    use crate::config::Config;
    use crate::event::{Ts, decode};
    use crate::generate::{GenerateOptions, generate_to_vec};
    use crate::kafka::loadgen::topic_index;

    use super::*;

    #[test]
    fn selection_median_and_quantile_match_sorting() {
        let mut x = 0x9e37_79b9_u64;
        for n in 0..40 {
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    ((x >> 40) % 7) as f64 / 3.0
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let want =
                (!v.is_empty()).then(|| sorted[((n.max(1) - 1) as f64 * 0.9).round() as usize]);
            assert_eq!(
                median(&mut v.clone()),
                super::super::window::median(&mut v.clone())
            );
            assert_eq!(quantile(&mut v.clone(), 0.9), want);
        }
    }

    /// Alert ids of the events split by customer over `shards` coordinated
    /// engines (each partition's share in file order, like Kafka delivers it).
    fn sharded_ids(cfg: &Arc<Config>, lines: &[String], shards: usize) -> BTreeSet<String> {
        let mut engines: Vec<Engine> = (0..shards)
            .map(|_| {
                let mut e = Engine::new(cfg.clone());
                e.set_coordinated(true);
                e
            })
            .collect();
        let mut ids = BTreeSet::new();
        let mut end = Ts::MIN;
        let hasher = rustc_hash::FxBuildHasher;
        for (seq, l) in lines.iter().enumerate() {
            let Ok(ev) = decode(l.as_bytes(), &cfg.decode) else {
                continue;
            };
            end = end.max(ev.ts);
            let mut h = hasher.build_hasher();
            ev.customer_id.hash(&mut h);
            let shard = (std::hash::Hasher::finish(&h) % shards as u64) as usize;
            engines[shard].ingest(ev, seq as u64);
            let mut refs: Vec<&mut Engine> = engines.iter_mut().collect();
            release_sweeps(&mut refs, |_| false);
            for e in &mut engines {
                ids.extend(e.take_alerts().iter().map(|a| a.id()));
            }
        }
        for e in &mut engines {
            e.finish(Some(end));
        }
        let mut refs: Vec<&mut Engine> = engines.iter_mut().collect();
        release_sweeps(&mut refs, |_| false);
        assert!(engines.iter().all(|e| e.sweep_pending().is_none()));
        for e in &mut engines {
            ids.extend(e.take_alerts().iter().map(|a| a.id()));
        }
        ids
    }

    /// Generated traffic with enough alerts to compare runs by.
    fn sample_lines() -> Vec<String> {
        generate_to_vec(&GenerateOptions {
            seed: 5,
            customers: 300,
            days: 120,
            ..GenerateOptions::default()
        })
        .lines
    }

    /// Alert ids, in order, of one engine fed the lines in file order (the backtest).
    fn single_engine_ids(cfg: &Arc<Config>, lines: &[String]) -> Vec<String> {
        let mut whole = Engine::new(cfg.clone());
        for (seq, l) in lines.iter().enumerate() {
            if let Ok(ev) = decode(l.as_bytes(), &cfg.decode) {
                whole.ingest(ev, seq as u64);
            }
        }
        whole.finish(None);
        let ids: Vec<String> = whole.take_alerts().iter().map(|a| a.id()).collect();
        assert!(ids.len() > 20, "too few alerts: {}", ids.len());
        ids
    }

    #[test]
    fn a_drained_engine_without_events_does_not_hold_a_sweep_back() {
        let cfg = Arc::new(Config::default());
        let lines = generate_to_vec(&GenerateOptions {
            seed: 1,
            customers: 20,
            days: 3,
            ..GenerateOptions::default()
        })
        .lines;
        let mut busy = Engine::new(cfg.clone());
        let mut empty = Engine::new(cfg.clone());
        let mut behind = Engine::new(cfg.clone());
        for e in [&mut busy, &mut empty, &mut behind] {
            e.set_coordinated(true);
        }
        for (seq, l) in lines.iter().enumerate() {
            let ev = decode(l.as_bytes(), &cfg.decode).expect("valid line");
            busy.ingest(ev, seq as u64);
        }
        let at = busy.sweep_pending().expect("parked at the first sweep");
        // Not yet known to be drained: it may still get events before `at`.
        assert!(!empty.ready_for_sweep(at));
        empty.source_idle(0);
        assert!(empty.ready_for_sweep(at));
        // One with events before `at` but not past it holds it back.
        let first = decode(lines[0].as_bytes(), &cfg.decode).expect("valid line");
        behind.ingest(first, 0);
        assert!(!behind.ready_for_sweep(at));
        assert_eq!(
            release_sweeps(&mut [&mut busy, &mut empty, &mut behind], |_| false),
            0
        );
        assert_eq!(busy.sweep_pending(), Some(at));
        behind.advance_to(at + 1);
        assert_eq!(behind.sweep_pending(), Some(at));
        assert!(release_sweeps(&mut [&mut busy, &mut empty, &mut behind], |_| false) >= 1);
        assert!(busy.sweep_pending().is_none_or(|t| t > at));
        assert!(behind.sweep_pending().is_none());
    }

    #[test]
    fn sharded_engines_with_one_merged_population_give_the_backtest_alerts() {
        let cfg = Arc::new(Config::default());
        let lines = sample_lines();
        let want: BTreeSet<String> = single_engine_ids(&cfg, &lines).into_iter().collect();
        for shards in [1, 3] {
            assert_eq!(sharded_ids(&cfg, &lines, shards), want, "{shards} shards");
        }
    }

    /// With more customers than `population_sample`, the population is a
    /// sample by a hash of the customer id: sharded engines draw the same
    /// one as a single engine, so the alerts are still the backtest's.
    #[test]
    fn a_sampled_population_is_the_same_for_sharded_engines_and_one() {
        let raw: crate::config::RawConfig =
            toml::from_str("population_sample = 100").expect("parses");
        let cfg = Arc::new(raw.validate().expect("valid"));
        let lines = sample_lines();
        let mut whole = Engine::new(cfg.clone());
        for (seq, l) in lines.iter().enumerate() {
            if let Ok(ev) = decode(l.as_bytes(), &cfg.decode) {
                whole.ingest(ev, seq as u64);
            }
        }
        whole.finish(None);
        // 300 customers, level 2: about a quarter of them, of the active ones.
        let sampled = whole.population(None).customers;
        assert!((20..=100).contains(&sampled), "{sampled} sampled");
        let want: BTreeSet<String> = single_engine_ids(&cfg, &lines).into_iter().collect();
        let full: BTreeSet<String> = single_engine_ids(&Arc::new(Config::default()), &lines)
            .into_iter()
            .collect();
        assert_ne!(
            want, full,
            "the sample changes some population-dependent alert"
        );
        for shards in [2, 3] {
            assert_eq!(sharded_ids(&cfg, &lines, shards), want, "{shards} shards");
        }
    }

    /// One partition's three input topics arrive in chunks of different
    /// sizes (one topic runs ahead of the others, like Kafka fetches them):
    /// the per-topic runs of the reorder buffer merge them into the order a
    /// single time-ordered file gives.
    #[test]
    fn three_topics_arriving_in_uneven_chunks_give_the_backtest_alerts() {
        let cfg = Arc::new(Config::default());
        let lines = sample_lines();
        let want = single_engine_ids(&cfg, &lines);
        let mut topics: [Vec<_>; 3] = Default::default();
        for (seq, l) in lines.iter().enumerate() {
            if let Ok(ev) = decode(l.as_bytes(), &cfg.decode) {
                topics[topic_index(ev.kind.type_name())].push((seq as u64, ev));
            }
        }
        assert!(topics.iter().all(|t| !t.is_empty()));

        let mut split = Engine::new(cfg.clone());
        split.set_sources(3);
        let mut streams = topics.map(|t| t.into_iter());
        let chunks = [700, 40, 15];
        let mut got = Vec::new();
        let mut open = [true; 3];
        while open.iter().any(|o| *o) {
            for (t, stream) in streams.iter_mut().enumerate() {
                for _ in 0..chunks[t] {
                    match stream.next() {
                        Some((seq, ev)) => {
                            split.ingest_from(t, ev, seq);
                        }
                        None if open[t] => {
                            open[t] = false;
                            split.source_idle(t);
                            break;
                        }
                        None => break,
                    }
                }
            }
            got.extend(split.take_alerts().iter().map(|a| a.id()));
        }
        split.finish(None);
        got.extend(split.take_alerts().iter().map(|a| a.id()));
        assert_eq!(got, want);
    }
}
