//! Timers: one live timer per customer, at the next instant a time-based
//! alert of it can change (inactivity, dunning expiry, ...), in one heap,
//! and the bookkeeping of the timers an earlier one superseded.

use std::cmp::Reverse;

use super::{Engine, billing};
use crate::catalogue::AlertKind;
use crate::event::Ts;
use crate::signals::{self, Population};
use crate::state::customer::{Customer, NEVER, SubStatus};

/// What a customer's timer evaluates: every alert but those judged at the
/// daily sweep ([`super::sweep::SWEEP_KINDS`]).
pub(super) const TIMER_KINDS: [AlertKind; 6] = [
    AlertKind::Inactivity,
    AlertKind::KeyFeatureUnused,
    AlertKind::Downgrade,
    AlertKind::PaymentFailed,
    AlertKind::Churned,
    AlertKind::Detractor,
];

/// A timer: (deadline, customer index) in 12 bytes instead of 16, ordered
/// as that pair (the deadline as offset binary, high half first).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub(super) struct Timer([u32; 3]);

impl Timer {
    pub(super) fn new(at: Ts, ix: u32) -> Self {
        let k = (at as u64) ^ (1 << 63);
        Timer([(k >> 32) as u32, k as u32, ix])
    }

    pub(super) fn at(self) -> Ts {
        let k = (u64::from(self.0[0]) << 32) | u64::from(self.0[1]);
        (k ^ (1 << 63)) as Ts
    }

    pub(super) fn ix(self) -> u32 {
        self.0[2]
    }
}

impl Engine {
    /// The next instant a time-based condition of `ix` can change.
    fn next_deadline(&self, ix: u32) -> Option<Ts> {
        let c = &self.customers[ix as usize];
        let plan_id = Self::plan_of(c);
        let plan = self.plans.name(plan_id);
        let mut d: Option<Ts> = None;
        let mut consider = |t: Option<Ts>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        if let Some(b) = &c.billing {
            if b.status == Some(SubStatus::Active) {
                consider(b.dunning_since().map(|s| s + self.cfg.dunning_grace));
                if c.is_firing(AlertKind::Downgrade) {
                    consider(
                        b.downgrade()
                            .map(|(t, ..)| t + self.cfg.alert(AlertKind::Downgrade, plan).window),
                    );
                }
            }
        }
        if c.is_churned() {
            return d;
        }
        consider(self.population_deadline(c, self.pop_for(plan_id), self.now()));
        if c.is_firing(AlertKind::Detractor) {
            consider(signals::feedback::detractor_expiry(
                c,
                self.cfg.alert(AlertKind::Detractor, plan).window,
            ));
        }
        d
    }

    /// The earliest deadline of `c` (not churned) that depends on the
    /// population, in context `pop` at `now` (or its last event, if later):
    /// inactivity and key feature unused, those not firing.
    pub(super) fn population_deadline(
        &self,
        c: &Customer,
        pop: &Population,
        now: Ts,
    ) -> Option<Ts> {
        let plan = self.plans.name(Self::plan_of(c));
        // The context a deadline is computed in: now, for an alert not firing.
        let now = now.max(c.last_seen);
        let mut d: Option<Ts> = None;
        let inact = self.cfg.alert(AlertKind::Inactivity, plan);
        if c.last_usage != NEVER && !c.is_firing(AlertKind::Inactivity) && inact.enabled {
            let ctx = self.ctx_not_firing(pop, inact, now);
            let (allowed, _, _) = signals::inactivity::allowed_gap(c, &ctx);
            d = Some(c.last_usage.saturating_add(allowed));
        }
        let kfu = self.cfg.alert(AlertKind::KeyFeatureUnused, plan);
        if c.key_features.is_some() && !c.is_firing(AlertKind::KeyFeatureUnused) && kfu.enabled {
            let ctx = self.ctx_not_firing(pop, kfu, now);
            if let Some(t) = signals::inactivity::key_feature_deadline(c, &ctx) {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        }
        d
    }

    /// After a usage event of a customer with nothing firing that recorded no
    /// new gap and was neither its first usage nor its first event: true when
    /// its pending timer is provably still no later than its next deadline,
    /// so [`Self::schedule`] would change nothing. Such an event leaves every
    /// input of the deadlines as at the customer's last schedule (which put
    /// the timer at or before all of them) except `last_usage`, which only
    /// grows, the clock, which only makes allowed gaps longer, and, for a key
    /// feature used at `ts`, that feature (its deadline is then at least
    /// `ts + window`).
    pub(super) fn timer_still_first_after_usage(&self, ix: u32, ts: Ts, key_feature: bool) -> bool {
        let c = &self.customers[ix as usize];
        let t = c.timer_at;
        if t == NEVER || t <= self.clock || !c.firing.is_empty() {
            return false;
        }
        let plan = self.plans.name(Self::plan_of(c));
        !key_feature
            || t <= ts.saturating_add(self.cfg.alert(AlertKind::KeyFeatureUnused, plan).window)
    }

    /// Keeps one live timer per customer, at its next deadline.
    pub(super) fn schedule(&mut self, ix: u32) {
        let Some(d) = self.next_deadline(ix) else {
            return;
        };
        let c = &mut self.customers[ix as usize];
        if c.timer_at == NEVER || d < c.timer_at || c.timer_at <= self.clock {
            // The entry of the timer it replaces is still in the heap.
            self.superseded_timers += usize::from(c.timer_at != NEVER);
            c.timer_at = d;
            self.timers.push(Reverse(Timer::new(d, ix)));
        }
    }

    /// A timer of `ix` due at `at`: skipped if superseded, else what is due
    /// then (a dunning past its grace churns) judged, and the next timer set.
    pub(super) fn on_timer(&mut self, ix: u32, at: Ts) {
        if self.customers[ix as usize].timer_at != at {
            self.superseded_timers = self.superseded_timers.saturating_sub(1);
            return;
        }
        self.catch_up(ix);
        self.customers[ix as usize].timer_at = NEVER;
        // Dunning that outlived its grace is an involuntary churn at that instant.
        let grace = self.cfg.dunning_grace;
        let facts = match self.customers[ix as usize].billing.as_mut() {
            Some(b) => billing::expire_dunning(b, at, grace),
            None => Vec::new(),
        };
        let churn_ts = at;
        // A churn ends every alert at once. Otherwise only the alerts that a
        // deadline can change: the window alerts (engagement, seats, support
        // load) change as days pass and are judged at the daily sweep and on
        // their own events. Judging them at a timer too would tie them to when
        // the timer was set, which depends on the population of that moment,
        // and so on when the service last restarted.
        let kinds: &[AlertKind] = if facts.is_empty() {
            &TIMER_KINDS
        } else {
            &AlertKind::ALL
        };
        for f in facts {
            self.ledger.record(churn_ts, ix, f);
        }
        self.evaluate(ix, kinds, at);
        self.schedule(ix);
        self.file_next_visit(ix, false);
    }

    /// Moves `ix`'s timer to its deadlines as of now (a sweep's visit), the
    /// timer it had, if past, counted as superseded.
    pub(super) fn reschedule(&mut self, ix: u32, now: Ts) {
        let c = &mut self.customers[ix as usize];
        if c.timer_at != NEVER && c.timer_at < now {
            c.timer_at = NEVER;
            self.superseded_timers += 1;
        }
        self.schedule(ix);
    }

    /// Drops the superseded timers once they are many, so the heap stays
    /// near one entry per customer (they are only ever skipped when due).
    pub(super) fn drop_superseded_timers(&mut self) {
        let live = self.timers.len() - self.superseded_timers;
        if self.superseded_timers > live / 4 + 1024 {
            let customers = &self.customers;
            self.timers
                .retain(|Reverse(t)| customers[t.ix() as usize].timer_at == t.at());
            self.timers
                .shrink_to(self.timers.len() + self.timers.len() / 2);
            self.superseded_timers = 0;
        }
    }

    /// Counts the superseded entries of the heap (after a restore).
    pub(super) fn recount_superseded_timers(&mut self) {
        let customers = &self.customers;
        self.superseded_timers = self
            .timers
            .iter()
            .filter(|Reverse(t)| customers[t.ix() as usize].timer_at != t.at())
            .count();
    }
}

#[cfg(test)]
mod tests {
    use super::{TIMER_KINDS, Timer};
    use crate::catalogue::AlertKind;
    use crate::engine::sweep::SWEEP_KINDS;

    #[test]
    fn timer_and_sweep_kinds_are_every_alert_once_in_order() {
        let mut both: Vec<AlertKind> = TIMER_KINDS.iter().chain(&SWEEP_KINDS).copied().collect();
        both.sort_by_key(|k| *k as u8);
        assert_eq!(both, AlertKind::ALL);
        assert!(TIMER_KINDS.is_sorted_by_key(|k| *k as u8));
    }

    #[test]
    fn timers_order_as_deadline_then_customer() {
        let pairs = [
            (i64::MIN, 0),
            (-5, 7),
            (-5, 9),
            (0, 1),
            (1, 0),
            (1 << 40, 3),
            (i64::MAX, 2),
        ];
        for w in pairs.windows(2) {
            let (a, b) = (Timer::new(w[0].0, w[0].1), Timer::new(w[1].0, w[1].1));
            assert!(a < b, "{w:?}");
            assert_eq!((a.at(), a.ix()), w[0]);
        }
    }
}
