//! Churn-risk signals: one file per alert family. Each signal is a pure
//! function of (customer state, population context, now, params) that says
//! whether its alert should be firing, with the evidence. Their behaviour
//! through the engine is tested in `engine/signal_tests.rs`.

pub mod billing;
pub mod engagement;
pub mod feedback;
pub mod health;
pub mod inactivity;

use serde::Serialize;

use crate::catalogue::{AlertKind, AlertParams};
use crate::event::Ts;
use crate::state::customer::Customer;

/// How the whole customer base (of one plan) moved: keeps a quiet week that
/// everyone shares from firing, and judges customers with little history.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Population {
    /// Median over customers of current-week / own-baseline activity, capped at 1.
    pub activity_factor: f64,
    /// The same for distinct active users.
    pub seat_factor: f64,
    /// Median over customers of the last 14 days' events / what the weeks
    /// before them predict (`engagement::fortnight`), capped at 1.
    pub fortnight_factor: f64,
    /// 90th percentile of customers' typical gaps between active days (or,
    /// for customers with few gaps, days observed per active day), in days:
    /// the rhythm assumed for a customer with too little history of its own.
    pub typical_gap_days: f64,
    /// Median over customers with at least one gap between active days of
    /// their mean gap, in days: the prior of a customer's rhythm while it
    /// has shown little of its own (a one-time buyer's wait for a second
    /// event).
    pub repeat_gap_days: f64,
    /// Quantiles (0%, 1%, ..., 100%) of current-week events across customers.
    pub weekly_events_quantiles: Vec<f64>,
    /// How the base moved per day: index 0 is the day before the sweep, each
    /// the day's events of all customers against the median of the same
    /// weekday in the weeks before, capped at 1 (a shared holiday is below 1).
    /// Empty before the first sweep.
    pub daily_factors: Vec<f64>,
    /// Customers the context was computed from.
    pub customers: u64,
}

/// Typical gap assumed before the population has enough customers to tell.
pub const DEFAULT_TYPICAL_GAP_DAYS: f64 = 7.0;

impl Default for Population {
    fn default() -> Self {
        Self {
            activity_factor: 1.0,
            seat_factor: 1.0,
            fortnight_factor: 1.0,
            typical_gap_days: DEFAULT_TYPICAL_GAP_DAYS,
            repeat_gap_days: DEFAULT_TYPICAL_GAP_DAYS,
            weekly_events_quantiles: Vec::new(),
            daily_factors: Vec::new(),
            customers: 0,
        }
    }
}

impl Population {
    /// The base's factor on `day` when evaluating at `today` (1 when unknown).
    pub fn daily_factor(&self, today: i32, day: i32) -> f64 {
        usize::try_from(today - 1 - day)
            .ok()
            .and_then(|i| self.daily_factors.get(i))
            .copied()
            .unwrap_or(1.0)
    }

    /// Fraction of the population whose weekly events are below `v` (0..=1),
    /// `None` without a population.
    pub fn percentile_of(&self, v: f64) -> Option<f64> {
        let q = &self.weekly_events_quantiles;
        if q.is_empty() {
            return None;
        }
        let below = q.partition_point(|x| *x < v);
        Some(below as f64 / q.len() as f64)
    }
}

/// Everything a signal reads besides the customer.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// Evaluation instant (event time).
    pub now: Ts,
    /// UTC day of `now`; windows end at the start of this day (exclusive)
    /// unless `now` is exactly midnight, where they end at `now`.
    pub today: i32,
    /// Population context of the customer's plan.
    pub pop: &'a Population,
    /// The alert's tunables for the customer's plan.
    pub params: &'a AlertParams,
    /// Whether the alert is firing now (for hysteresis).
    pub firing: bool,
    /// Configured dunning grace.
    pub dunning_grace: Ts,
    /// Configured key features.
    pub key_features: &'a [String],
    /// The customer's weekly totals at `today`, when the caller already has them.
    pub weeks: Option<&'a WeekTotals>,
}

/// Totals of the 9 weeks before a day: index `k` is the week
/// `[today - 7 (k + 1), today - 7 k)`, so 0 is the current week. Computed once
/// per customer by the daily sweep and shared by population sampling and the
/// window signals.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeekTotals {
    /// Usage events per week (saturating: the sweep keeps one of these per
    /// customer, so 32 bits, not 64).
    pub events: [u32; 9],
    /// Distinct users per week, once any usage event named a user.
    pub seats: Option<[u32; 9]>,
}

impl WeekTotals {
    /// The totals of `c` at `today`.
    pub fn of(c: &Customer, today: i32) -> Self {
        Self {
            events: std::array::from_fn(|k| {
                let k = k as i32;
                let n = c.activity().events(today - 7 * (k + 1), today - 7 * k);
                u32::try_from(n).unwrap_or(u32::MAX)
            }),
            seats: c.seats().map(|s| s.distinct_weeks(today)),
        }
    }
}

/// A condition that holds: the alert should be firing.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Event-time instant the condition began.
    pub starts_at: Ts,
    /// One human line with the numbers.
    pub summary: String,
    /// The numbers.
    pub evidence: serde_json::Value,
}

/// What a firing alert is about, where it can change while it fires: the
/// unused key features of `key_feature_unused`. A change is re-emitted (see
/// [`crate::alert::AlertEvent::updated_at`]) and the API shows it; numbers
/// that drift while the reasons stay (days idle) are as last emitted.
pub fn reasons_of(kind: AlertKind, evidence: &serde_json::Value) -> Option<Vec<&str>> {
    match kind {
        AlertKind::KeyFeatureUnused => Some(
            evidence["features"]
                .as_array()?
                .iter()
                .filter_map(|f| f["feature"].as_str())
                .collect(),
        ),
        _ => None,
    }
}

/// False when `kind` cannot fire at `now` for `c`, which is not firing it,
/// whatever the population context: a cheap necessary condition of
/// [`evaluate`] returning a finding, by which the daily sweep skips the
/// customers where nothing can change (most of them, where most are quiet).
/// Always true for the alerts a timer or an event judges.
pub fn may_fire(kind: AlertKind, c: &Customer, params: &AlertParams, now: Ts) -> bool {
    match kind {
        AlertKind::EngagementDrop => engagement::engagement_drop_may_fire(c, params, now),
        AlertKind::SeatContraction => engagement::seat_contraction_may_fire(c, params, now),
        AlertKind::SupportSpike => feedback::support_spike_may_fire(c, params),
        _ => true,
    }
}

/// The earliest instant from `from` on at which [`may_fire`] can be true
/// for `c` without another event (`None`: never). Without events, only the
/// customer's age grows; its events on record, users tracked and tickets
/// do not (they shrink as windows roll off), and its last usage recedes.
/// The daily sweep visits a customer no sooner than this (see
/// [`crate::engine`]'s calendar of visits).
pub fn may_fire_from(kind: AlertKind, c: &Customer, params: &AlertParams, from: Ts) -> Option<Ts> {
    match kind {
        AlertKind::EngagementDrop => engagement::engagement_drop_may_fire_from(c, params, from),
        AlertKind::SeatContraction => engagement::seat_contraction_may_fire_from(c, params, from),
        AlertKind::SupportSpike => feedback::support_spike_may_fire(c, params).then_some(from),
        _ => Some(from),
    }
}

/// Evaluates one alert for one customer: `Some` when it should be firing.
pub fn evaluate(kind: AlertKind, c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    match kind {
        AlertKind::EngagementDrop => engagement::engagement_drop(c, ctx),
        AlertKind::SeatContraction => engagement::seat_contraction(c, ctx),
        AlertKind::Inactivity => inactivity::inactivity(c, ctx),
        AlertKind::KeyFeatureUnused => inactivity::key_feature_unused(c, ctx),
        AlertKind::Downgrade => billing::downgrade(c, ctx),
        AlertKind::PaymentFailed => billing::payment_failed(c, ctx),
        AlertKind::Churned => billing::churned(c, ctx),
        AlertKind::Detractor => feedback::detractor(c, ctx),
        AlertKind::SupportSpike => feedback::support_spike(c, ctx),
    }
}

/// Rounds to one decimal for evidence.
pub(crate) fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounds to two decimals (`+ 0.0` turns -0.0 into 0.0: a sum that cancels
/// out prints 0).
pub(crate) fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0 + 0.0
}

/// Rounds to three decimals for evidence (`+ 0.0` turns -0.0 into 0.0), so
/// that values equal to three decimals print the same however they were summed.
pub(crate) fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0 + 0.0
}

/// Percent, rounded to an integer.
pub(crate) fn pct(x: f64) -> i64 {
    (x * 100.0).round() as i64
}
