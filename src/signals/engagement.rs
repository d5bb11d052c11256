//! `engagement_drop` and `seat_contraction`: the last 7 days against the
//! customer's own 8-week baseline (median of full weeks, so weekly seasonality
//! cancels out and one odd week does not move it), scaled by how the whole
//! population of the plan moved this week.

use serde_json::json;

use super::{Ctx, Finding, WeekTotals, pct, r1, r3};
use crate::engine::customer::Customer;
use crate::engine::window::median;

/// A drop of `current` against `baseline * factor`.
#[derive(Debug, Clone, Copy)]
pub struct Drop {
    /// Expected this week.
    pub expected: f64,
    /// 1 - current / expected, at least 0.
    pub drop: f64,
    /// Standard deviations below expected (own weekly spread, at least Poisson noise).
    pub z: f64,
}

/// Compares `current` with the median of `weeks` scaled by the population
/// `factor`. The noise is the weekly standard deviation implied by the daily
/// counts when given (`week_sd_from_days`: 56 samples instead of 8, and a
/// slow slide before the drop does not widen it the way it widens the spread
/// of 8 weekly totals), else that spread; at least Poisson noise. Returns the
/// baseline and the drop.
pub fn measure(
    current: f64,
    weeks: &mut [f64],
    factor: f64,
    week_sd_from_days: Option<f64>,
) -> Option<(f64, Drop)> {
    let baseline = median(weeks)?;
    // Spread of the weekly totals, robust (median absolute deviation) so one
    // odd week, like a quiet week shared by everyone, does not widen it.
    let mut dev = [0.0f64; 8];
    let n = weeks.len().min(8);
    for (d, w) in dev.iter_mut().zip(weeks.iter()) {
        *d = (w - baseline).abs();
    }
    let spread = median(&mut dev[..n]).unwrap_or(0.0) * 1.4826;
    let expected = baseline * factor.clamp(0.05, 1.0);
    if expected <= 0.0 {
        return None;
    }
    let sd = week_sd_from_days
        .unwrap_or(spread)
        .max(expected.sqrt())
        .max(1.0);
    let drop = (1.0 - current / expected).max(0.0);
    Some((
        baseline,
        Drop {
            expected,
            drop,
            z: (expected - current) / sd,
        },
    ))
}

/// Fire/resolve with hysteresis: fires on a drop of at least `fire` that is
/// also `significance` standard deviations out; holds while above `resolve`.
fn holds(d: &Drop, baseline: f64, ctx: &Ctx<'_>) -> bool {
    let p = ctx.params;
    if baseline < p.min_baseline.max(f64::MIN_POSITIVE) {
        return false;
    }
    if ctx.firing {
        d.drop > p.resolve
    } else {
        d.drop >= p.fire && d.z >= p.significance
    }
}

/// False when [`holds`] is false whatever the noise: the drop alone decides
/// (sorts `weeks` as [`measure`] does).
fn may_hold(current: f64, weeks: &mut [f64], factor: f64, ctx: &Ctx<'_>) -> bool {
    let Some(baseline) = median(weeks) else {
        return false;
    };
    let expected = baseline * factor.clamp(0.05, 1.0);
    if expected <= 0.0 {
        return false;
    }
    let drop = (1.0 - current / expected).max(0.0);
    let p = ctx.params;
    if baseline < p.min_baseline.max(f64::MIN_POSITIVE) {
        return false;
    }
    if ctx.firing {
        drop > p.resolve
    } else {
        drop >= p.fire
    }
}

/// Weekly standard deviation implied by the daily counts of the baseline weeks.
pub fn week_sd_from_days(c: &Customer, today: i32) -> f64 {
    let from = (today - 63).max(crate::engine::window::day_of(c.first_seen));
    (7.0 * c.activity.daily_residual_variance(from, today - 7)).sqrt()
}

/// Days in the recent window of [`fortnight`].
pub const FORTNIGHT_DAYS: i32 = 14;

/// Baseline days [`fortnight`] needs before the recent window.
pub const FORTNIGHT_MIN_BASELINE_DAYS: i32 = 21;

/// (events in the last 14 days, daily rate over the up to 7 whole weeks
/// before them, days that rate is over): a slow slide shows here long before a
/// single week looks odd. `None` with less than three weeks of full days
/// before the window.
pub fn fortnight(c: &Customer, today: i32) -> Option<(f64, f64, i32)> {
    let to = today - FORTNIGHT_DAYS;
    // The first day seen is partial; whole weeks keep the weekdays balanced.
    let first = crate::engine::window::day_of(c.first_seen) + 1;
    let days = (to - first).min(49) / 7 * 7;
    if days < FORTNIGHT_MIN_BASELINE_DAYS {
        return None;
    }
    let rate = c.activity.events(to - days, to) as f64 / f64::from(days);
    Some((c.activity.events(to, today) as f64, rate, days))
}

/// A population seat factor below this is a shared quiet period.
pub const QUIET_POPULATION: f64 = 0.85;

/// Above this activity drop, fewer seats are reported as `engagement_drop`.
pub const MAX_ACTIVITY_DROP_FOR_SEATS: f64 = 0.5;

/// Full weeks of own history a baseline needs.
pub const MIN_BASELINE_WEEKS: usize = 3;

fn has_history(c: &Customer, ctx: &Ctx<'_>, weeks: usize) -> bool {
    ctx.now - c.first_seen >= ctx.params.window && weeks >= MIN_BASELINE_WEEKS
}

/// Recent activity well below the customer's own baseline.
pub fn engagement_drop(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    if c.is_churned() {
        return None;
    }
    let own;
    let t = match ctx.weeks {
        Some(t) => t,
        None => {
            own = WeekTotals::events_of(c, ctx.today);
            &own
        }
    };
    let mut w = c.baseline_weeks_by_index(ctx.today, |k| t.events[k] as f64);
    let weeks = w.len;
    if !has_history(c, ctx, weeks) {
        return None;
    }
    let current = t.events[0] as f64;
    if !may_hold(current, w.values_mut(), ctx.pop.activity_factor, ctx) {
        return None; // without the costly noise estimate, which only `z` needs
    }
    let (baseline, d) = measure(
        current,
        w.values_mut(),
        ctx.pop.activity_factor,
        Some(week_sd_from_days(c, ctx.today)),
    )?;
    if !holds(&d, baseline, ctx) {
        return None;
    }
    let (expected, drop) = (d.expected, d.drop);
    Some(Finding {
        starts_at: ctx.now,
        summary: format!(
            "Weekly activity fell {}% below this customer's {weeks}-week baseline ({} events in the last 7 days, {} expected)",
            pct(drop),
            current,
            r1(expected)
        ),
        evidence: json!({
            "current_7d": current,
            "baseline_7d": r1(baseline),
            "expected_7d": r1(expected),
            "population_factor": r3(ctx.pop.activity_factor),
            "drop_pct": pct(drop),
            "z": r1(d.z),
            "baseline_weeks": weeks,
            "fire_drop_pct": pct(ctx.params.fire),
            "resolve_drop_pct": pct(ctx.params.resolve),
        }),
    })
}

/// Distinct active users well below baseline.
pub fn seat_contraction(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    if c.is_churned() {
        return None;
    }
    let own;
    let t = match ctx.weeks {
        Some(t) => t,
        None => {
            own = WeekTotals::of(c, ctx.today);
            &own
        }
    };
    let d = t.seats?;
    let mut w = c.baseline_weeks_by_index(ctx.today, |k| f64::from(d[k]));
    let weeks = w.len;
    if !has_history(c, ctx, weeks) {
        return None;
    }
    // Nobody active at all is inactivity's business, not fewer seats.
    if t.events[0] == 0 {
        return None;
    }
    // While the whole base is in a quiet period, light users vanish
    // everywhere: hold what fires, start nothing new.
    if !ctx.firing && ctx.pop.seat_factor < QUIET_POPULATION {
        return None;
    }
    let current = f64::from(d[0]);
    let (baseline, d) = measure(current, w.values_mut(), ctx.pop.seat_factor, None)?;
    if !holds(&d, baseline, ctx) {
        return None;
    }
    // Seats falling with all activity is an engagement drop; this alert is
    // for fewer people while the usage holds up.
    let mut aw = c.baseline_weeks_by_index(ctx.today, |k| t.events[k] as f64);
    let activity_drop = measure(
        t.events[0] as f64,
        aw.values_mut(),
        ctx.pop.activity_factor,
        None,
    )
    .map_or(0.0, |(_, a)| a.drop);
    if !ctx.firing && activity_drop >= MAX_ACTIVITY_DROP_FOR_SEATS {
        return None;
    }
    let (expected, drop) = (d.expected, d.drop);
    Some(Finding {
        starts_at: ctx.now,
        summary: format!(
            "Active users fell {}% below baseline ({} active in the last 7 days, {} usual)",
            pct(drop),
            current,
            r1(baseline)
        ),
        evidence: json!({
            "current_seats_7d": current,
            "baseline_seats_7d": r1(baseline),
            "expected_seats_7d": r1(expected),
            "population_factor": r3(ctx.pop.seat_factor),
            "drop_pct": pct(drop),
            "z": r1(d.z),
            "activity_drop_pct": pct(activity_drop),
            "baseline_weeks": weeks,
        }),
    })
}
