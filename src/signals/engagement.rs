//! `engagement_drop` and `seat_contraction`: the last 7 days against the
//! customer's own 8-week baseline (median of full weeks, so weekly seasonality
//! cancels out and one odd week does not move it), scaled by how the whole
//! population of the plan moved this week.

use serde_json::json;

use super::{Ctx, Finding, pct, r1};
use crate::engine::customer::Customer;

/// Shared logic: `current` against `baseline * factor` with hysteresis.
/// Returns (expected, drop) when the alert should be firing.
fn dropped(current: f64, baseline: f64, factor: f64, ctx: &Ctx<'_>) -> Option<(f64, f64)> {
    let p = ctx.params;
    if baseline < p.min_baseline.max(f64::MIN_POSITIVE) {
        return None;
    }
    let expected = baseline * factor.clamp(0.05, 1.0);
    let drop = (1.0 - current / expected).max(0.0);
    let holds = if ctx.firing {
        drop > p.resolve
    } else {
        drop >= p.fire
    };
    holds.then_some((expected, drop))
}

fn has_history(c: &Customer, ctx: &Ctx<'_>, weeks: usize) -> bool {
    ctx.now - c.first_seen >= ctx.params.window && weeks >= 2
}

/// Recent activity well below the customer's own baseline.
pub fn engagement_drop(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    if c.is_churned() {
        return None;
    }
    let (baseline, weeks) = c.baseline_events(ctx.today);
    let baseline = baseline?;
    if !has_history(c, ctx, weeks) {
        return None;
    }
    let current = c.current_events(ctx.today) as f64;
    let (expected, drop) = dropped(current, baseline, ctx.pop.activity_factor, ctx)?;
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
            "population_factor": r1(ctx.pop.activity_factor * 100.0) / 100.0,
            "drop_pct": pct(drop),
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
    let seats = c.seats.as_ref()?;
    let mut w = c.baseline_weeks(ctx.today, |a, b| f64::from(seats.distinct(a, b)));
    let weeks = w.len;
    let baseline = crate::engine::window::median(w.values_mut())?;
    if !has_history(c, ctx, weeks) {
        return None;
    }
    let current = f64::from(c.current_seats(ctx.today));
    let (expected, drop) = dropped(current, baseline, ctx.pop.seat_factor, ctx)?;
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
            "population_factor": r1(ctx.pop.seat_factor * 100.0) / 100.0,
            "drop_pct": pct(drop),
            "baseline_weeks": weeks,
        }),
    })
}
