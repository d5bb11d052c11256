//! `detractor` and `support_spike`: what customers tell us.

use serde_json::json;

use super::{Ctx, Finding, r1};
use crate::catalogue::AlertParams;
use crate::event::{DAY_MS, Severity, Ts, format_ts};
use crate::state::customer::Customer;

/// NPS 0-6.
pub fn nps_bad(s: u8) -> bool {
    s <= 6
}
/// CSAT 1-2.
pub fn csat_bad(s: u8) -> bool {
    s <= 2
}
/// CES 6-7.
pub fn ces_bad(s: u8) -> bool {
    s >= 6
}

/// Latest NPS 0-6, CSAT 1-2 or CES 6-7, within `window`.
pub fn detractor(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    let f = c.feedback.as_ref()?;
    let fresh = |r: Option<(u8, Ts)>| r.filter(|(_, ts)| ctx.now < ts + ctx.params.window);
    let mut reasons = Vec::new();
    let mut starts = Ts::MAX;
    let mut evidence = serde_json::Map::new();
    for (name, r, bad) in [
        ("nps", fresh(f.nps()), nps_bad as fn(u8) -> bool),
        ("csat", fresh(f.csat()), csat_bad),
        ("ces", fresh(f.ces()), ces_bad),
    ] {
        if let Some((score, ts)) = r {
            evidence.insert(name.into(), json!({"score": score, "at": format_ts(ts)}));
            if bad(score) {
                reasons.push(format!("{} {score}", name.to_uppercase()));
                starts = starts.min(ts);
            }
        }
    }
    if reasons.is_empty() {
        return None;
    }
    Some(Finding {
        starts_at: starts,
        summary: format!("Unhappy customer: latest {}", reasons.join(", ")),
        evidence: serde_json::Value::Object(evidence),
    })
}

/// When the bad responses of `c` stop counting.
pub fn detractor_expiry(c: &Customer, window: Ts) -> Option<Ts> {
    let f = c.feedback.as_ref()?;
    [
        f.nps().filter(|(s, _)| nps_bad(*s)),
        f.csat().filter(|(s, _)| csat_bad(*s)),
        f.ces().filter(|(s, _)| ces_bad(*s)),
    ]
    .into_iter()
    .flatten()
    .map(|(_, ts)| ts + window)
    .max()
}

/// Tickets opened in `[from, to)`.
fn opened(c: &Customer, from: Ts, to: Ts) -> usize {
    c.feedback.as_ref().map_or(0, |f| {
        f.tickets
            .iter()
            .filter(|t| t.opened >= from && t.opened < to)
            .count()
    })
}

/// False when [`support_spike`] cannot fire for `c` (not firing): no
/// feedback, fewer tickets on record than `min_baseline` (the least a spike
/// needs in its window) and no urgent ticket open. The daily sweep skips
/// such customers.
pub fn support_spike_may_fire(c: &Customer, p: &AlertParams) -> bool {
    c.feedback.as_ref().is_some_and(|f| {
        f.tickets.len() as f64 >= p.min_baseline
            || f.tickets
                .iter()
                .any(|t| t.severity == Severity::Urgent && !t.resolved)
    })
}

/// Tickets well above baseline, or an urgent ticket open.
pub fn support_spike(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    let f = c.feedback.as_ref()?;
    let p = ctx.params;
    let w = p.window;
    let recent = opened(c, ctx.now - w, ctx.now + 1) as f64;
    // Baseline: tickets per window over the 8 windows before, counted only
    // since the customer was first seen (at least one window).
    let base_from = (ctx.now - 9 * w).max(c.first_seen.min(ctx.now - w));
    let windows = (((ctx.now - w) - base_from) as f64 / w as f64).max(1.0);
    let baseline = opened(c, base_from, ctx.now - w) as f64 / windows;
    let urgent = f
        .tickets
        .iter()
        .filter(|t| t.severity == Severity::Urgent && !t.resolved)
        .count();
    let threshold = if ctx.firing {
        (p.resolve * baseline).max(p.min_baseline - 1.0)
    } else {
        (p.fire * baseline).max(p.min_baseline)
    };
    let spike = if ctx.firing {
        recent > threshold
    } else {
        recent >= threshold
    };
    if !spike && urgent == 0 {
        return None;
    }
    let first_urgent = f
        .tickets
        .iter()
        .filter(|t| t.severity == Severity::Urgent && !t.resolved)
        .map(|t| t.opened)
        .min();
    let starts_at = if spike {
        ctx.now
    } else {
        first_urgent.unwrap_or(ctx.now)
    };
    Some(Finding {
        starts_at,
        summary: if spike {
            format!(
                "Support spike: {} tickets in the last {} days, usually {} ({} urgent open)",
                recent,
                r1(w as f64 / DAY_MS as f64),
                r1(baseline),
                urgent
            )
        } else {
            format!("{urgent} urgent support ticket(s) open")
        },
        evidence: json!({
            "tickets_window": recent,
            "baseline_per_window": r1(baseline),
            "window_days": r1(w as f64 / DAY_MS as f64),
            "urgent_open": urgent,
            "threshold": r1(threshold),
        }),
    })
}
