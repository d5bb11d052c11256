//! The health score: 100 = healthy, minus graded deductions per signal.
//! Deductions are graded (how far below normal, how long idle), not a count
//! of alerts; the breakdown always sums to 100 minus the score.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Ctx, engagement, feedback, inactivity};
use crate::event::{DAY_MS, Severity};
use crate::state::customer::{Customer, NEVER};

/// A health score with its breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// 0..=100.
    pub score: u8,
    /// Signal -> points deducted; sums to `100 - score`.
    pub breakdown: BTreeMap<&'static str, u8>,
}

/// Largest deduction per signal.
pub const WEIGHTS: [(&str, f64); 11] = [
    // Above 30: a customer idle far beyond its rhythm (`inactivity` fires
    // at the full deduction) is at most 69, `medium` risk by default.
    ("recency", 31.0),
    ("frequency", 25.0),
    ("decline", 30.0),
    ("seats", 10.0),
    ("key_feature", 5.0),
    ("payment", 25.0),
    ("downgrade", 10.0),
    ("nps", 10.0),
    ("csat", 6.0),
    ("ces", 6.0),
    ("support", 10.0),
];

fn ramp(x: f64, zero_at: f64, full_at: f64) -> f64 {
    ((x - zero_at) / (full_at - zero_at)).clamp(0.0, 1.0)
}

/// Scores `c`. `ctx.params` must be the inactivity tunables (for the allowed gap).
pub fn score(c: &Customer, ctx: &Ctx<'_>, seats_min_baseline: f64) -> Health {
    let mut breakdown = BTreeMap::new();
    if c.is_churned() {
        breakdown.insert("churned", 100);
        return Health {
            score: 0,
            breakdown,
        };
    }
    let mut d: Vec<(&'static str, f64)> = Vec::new();
    let w = |name: &str| {
        WEIGHTS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, w)| *w)
    };

    // Recency: how improbable the idle time is for this customer's rhythm.
    if c.last_usage != NEVER {
        d.push(("recency", w("recency") * recency_loss(c, ctx)));
    } else if ctx.now - c.first_seen > 7 * DAY_MS {
        d.push(("recency", w("recency") * 0.6));
    }

    // Frequency: against the customer's good weeks (upper quartile of its
    // baseline weeks, so a slow slide shows), weighted by how sure the drop
    // is; with little history, against the plan's population.
    let current = c.current_events(ctx.today) as f64;
    let mut wk = c.baseline_weeks(ctx.today, |a, b| c.activity().events(a, b) as f64);
    let weeks = wk.len;
    let vals = wk.values_mut();
    vals.sort_by(|a, b| a.total_cmp(b));
    let good_week = vals
        .get((weeks * 3) / 4)
        .or(vals.last())
        .copied()
        .unwrap_or(0.0);
    if weeks >= engagement::MIN_BASELINE_WEEKS && good_week > 0.0 {
        let expected = good_week * ctx.pop.activity_factor.clamp(0.05, 1.0);
        let sd = engagement::week_sd_from_days(c, ctx.today)
            .max(expected.sqrt())
            .max(1.0);
        // Normal week-to-week swings (under 1.5 sd) cost nothing.
        let confidence = (((expected - current) / sd - 1.5) / 1.5).clamp(0.0, 1.0);
        let drop = 1.0 - current / expected;
        d.push((
            "frequency",
            w("frequency") * ramp(drop, 0.15, 0.6) * confidence,
        ));
    } else if current > 0.0 {
        // (Not active at all this week is recency's business.)
        if let Some(p) = ctx.pop.percentile_of(current) {
            // Little history: only the bottom tenth of the plan's population.
            d.push((
                "frequency",
                0.5 * w("frequency") * ramp(0.10 - p, 0.0, 0.10),
            ));
        }
    }

    // Decline: the last two weeks against the (up to) seven before them, graded
    // by how many standard deviations short they fall. A slow slide that no
    // single week shows is here.
    if let Some((recent, rate, days)) = engagement::fortnight(c, ctx.today) {
        let expected = rate
            * f64::from(engagement::FORTNIGHT_DAYS)
            * ctx.pop.fortnight_factor.clamp(0.05, 1.0);
        // Under 3 expected events, a quiet fortnight is ordinary (Poisson
        // chance of none above 5%): that is recency's business.
        if expected >= 3.0 {
            // The customer's own day-to-day spread when wider than Poisson
            // (an irregular rhythm), widened for the baseline's own error.
            let to = ctx.today - engagement::FORTNIGHT_DAYS;
            let own = c.activity().daily_residual_variance(to - days, to)
                * f64::from(engagement::FORTNIGHT_DAYS);
            let noise = (expected.max(own).max(1.0)
                * (1.0 + f64::from(engagement::FORTNIGHT_DAYS) / f64::from(days)))
            .sqrt();
            let z = (expected - recent) / noise;
            d.push(("decline", w("decline") * ramp(z, 0.0, 3.0)));
        }
    }

    // Seats against their baseline.
    if let (Some(b), current) = c.seat_weeks(ctx.today)
        && b >= seats_min_baseline
    {
        let expected = b * ctx.pop.seat_factor.clamp(0.05, 1.0);
        let drop = 1.0 - f64::from(current) / expected;
        d.push(("seats", w("seats") * ramp(drop, 0.3, 0.7)));
    }

    // Key features: the share of regularly used ones that went quiet for
    // longer than a week and one and a half of their own periods.
    if let Some(kf) = &c.key_features {
        let regular: Vec<_> = kf
            .iter()
            .filter(|f| f.days >= inactivity::KEY_FEATURE_MIN_DAYS && f.last != NEVER)
            .collect();
        if !regular.is_empty() {
            let quiet = regular
                .iter()
                .filter(|f| {
                    let period = inactivity::feature_period_days(f).unwrap_or(1.0);
                    ctx.now - f.last > ((1.5 * period).max(7.0) * DAY_MS as f64) as i64
                })
                .count();
            d.push((
                "key_feature",
                w("key_feature") * quiet as f64 / regular.len() as f64,
            ));
        }
    }

    if let Some(b) = &c.billing {
        if let Some(since) = b.dunning_since() {
            let frac = (ctx.now - since) as f64 / ctx.dunning_grace.max(1) as f64;
            d.push(("payment", w("payment") * (0.6 + 0.4 * frac.clamp(0.0, 1.0))));
        }
        if let Some((ts, _, prev, new)) = b.downgrade() {
            if ctx.now - ts < 60 * DAY_MS && prev > 0 && new < prev {
                let age = (ctx.now - ts) as f64 / (60 * DAY_MS) as f64;
                d.push((
                    "downgrade",
                    w("downgrade") * (1.0 - age) * ((prev - new) as f64 / prev as f64).max(0.5),
                ));
            }
        }
    }

    if let Some(f) = &c.feedback {
        let fresh = |ts: i64| ctx.now - ts < 90 * DAY_MS;
        if let Some((s, ts)) = f.nps().filter(|(_, ts)| fresh(*ts)) {
            let _ = ts;
            let x = if feedback::nps_bad(s) {
                1.0 - f64::from(s) / 20.0
            } else {
                0.0
            };
            d.push(("nps", w("nps") * x));
        }
        if let Some((s, _)) = f.csat().filter(|(_, ts)| fresh(*ts)) {
            d.push((
                "csat",
                w("csat")
                    * match s {
                        1 => 1.0,
                        2 => 0.8,
                        // Lukewarm: not a detractor, but not satisfied either.
                        3 => 0.3,
                        _ => 0.0,
                    },
            ));
        }
        if let Some((s, _)) = f.ces().filter(|(_, ts)| fresh(*ts)) {
            d.push((
                "ces",
                w("ces")
                    * match s {
                        7 => 1.0,
                        6 => 0.8,
                        5 => 0.3,
                        _ => 0.0,
                    },
            ));
        }
        let opened_within = |days: i64| {
            f.tickets
                .iter()
                .filter(|t| ctx.now - t.opened < days * DAY_MS && t.opened <= ctx.now)
                .count() as f64
        };
        let urgent = f
            .tickets
            .iter()
            .any(|t| t.severity == Severity::Urgent && !t.resolved);
        // A burst this week, or friction that keeps coming back: more than
        // one ticket a month is more than most customers ever file.
        let x = if urgent {
            1.0
        } else {
            ramp(opened_within(7), 1.0, 5.0).max(ramp(opened_within(30), 1.0, 3.0))
        };
        d.push(("support", w("support") * x));
    }

    // Integer points, trimmed so the total never exceeds 100.
    let mut left: u32 = 100;
    for (name, pts) in d {
        let p = (pts.round().max(0.0) as u32).min(left);
        if p > 0 {
            breakdown.insert(name, p as u8);
            left -= p;
        }
    }
    Health {
        score: left as u8,
        breakdown,
    }
}

/// Share (0..=1) of the recency points `c` has lost at `ctx.now`, growing
/// with its idle time, faster the more regular its rhythm.
///
/// The days beyond the first of a gap between active days are exponential
/// with an uncertain rate, as for `inactivity` ([`inactivity::allowed_gap`]):
/// with `n` recent gaps summing to `B` days beyond the first, the chance of
/// a gap this long is S = (b / (b + x))^a, a = 1 + n, b = B + the prior's
/// days. With at least the inactivity `min_baseline` gaps of its own (prior
/// [`inactivity::PRIOR_GAP_DAYS`]) and a mean gap under a week, the loss
/// ramps from nothing at S = 10^-1 to all at S = 10^-`fire`, where
/// `inactivity` fires. A customer that comes back weekly or less often, or
/// has little history (then the base's typical wait for a next event,
/// `repeat_gap_days`, is the prior), may also have simply left after its
/// last event (a one-time buyer): with a uniform prior on the chance of
/// leaving after each event, it is still there with q = (1 + n) / (2 + n),
/// and the loss is 1 - P(still there) = 1 - q S / (q S + 1 - q). While the
/// whole base is quiet, idle days count for less.
pub fn recency_loss(c: &Customer, ctx: &Ctx<'_>) -> f64 {
    // The base's daily totals (robust where most customers are idle in any
    // one week, as in a shop's purchase log), not the median customer.
    let quiet = engagement::population_week_factor(ctx.pop, ctx.today, 1.0).clamp(0.25, 1.0);
    let idle_days = (ctx.now - c.last_usage).max(0) as f64 / DAY_MS as f64;
    let x = (idle_days - 1.0).max(0.0) * quiet;
    let own = c.recent_gaps(ctx.params.min_baseline as usize);
    let (n, beyond, prior) = match own {
        Some((n, beyond)) => (n as f64, beyond, inactivity::PRIOR_GAP_DAYS - 1.0),
        None => {
            let (n, beyond) = c.recent_gaps(1).unwrap_or((0, 0.0));
            (n as f64, beyond, (ctx.pop.repeat_gap_days - 1.0).max(1.0))
        }
    };
    let b = beyond + prior;
    // Back within days as a rule: the weekly cycle (a weekend) shapes its
    // gaps more than any chance of leaving does.
    if own.is_some() && 1.0 + beyond / n < WEEKLY_DAYS {
        let surprise = (1.0 + n) * (1.0 + x / b).log10();
        return ramp(surprise, 1.0, ctx.params.fire.max(1.5));
    }
    let s = (b / (b + x)).powf(1.0 + n);
    let q = (1.0 + n) / (2.0 + n);
    1.0 - q * s / (q * s + 1.0 - q)
}

/// A mean gap of a week or more: a customer that comes back weekly or
/// less often, where each gap is a chance it has left.
const WEEKLY_DAYS: f64 = 7.0;

/// Risk band of a health score (config `risk_high_below`, `risk_medium_below`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// At or above `risk_medium_below`.
    Low,
    /// From `risk_high_below` to below `risk_medium_below`.
    Medium,
    /// Below `risk_high_below`.
    High,
}

impl Risk {
    /// All bands, lowest first.
    pub const ALL: [Risk; 3] = [Risk::Low, Risk::Medium, Risk::High];

    /// Contract spelling (as serialised), e.g. for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

/// Risk band of a score.
pub fn risk(score: u8, high_below: u8, medium_below: u8) -> Risk {
    if score < high_below {
        Risk::High
    } else if score < medium_below {
        Risk::Medium
    } else {
        Risk::Low
    }
}
