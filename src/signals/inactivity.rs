//! `inactivity` and `key_feature_unused`: time since the last use against
//! what is normal for this customer (or, with little history, its plan).

use serde_json::json;

use super::{Ctx, Finding, r1};
use crate::engine::customer::{Customer, NEVER};
use crate::event::{DAY_MS, Ts, format_ts};

/// A gap this many times the longest recent one is always allowed.
pub const LONGEST_GAP_FACTOR: f64 = 2.0;

/// The gap the inactivity rhythm's prior adds to a customer's own ones.
pub const PRIOR_GAP_DAYS: f64 = 3.0;

/// The longest gap without usage that is still normal for `c`, in ms.
///
/// With at least `min_baseline` recent gaps between active days, the days
/// beyond the first of a gap are modelled as exponential with a rate that is
/// itself uncertain: a Gamma posterior from those gaps plus one gap of
/// [`PRIOR_GAP_DAYS`] as the prior. The gap a normal rhythm
/// exceeds with probability 10^-`fire` under that posterior predictive
/// (Lomax: P(G - 1 > x) = (b / (b + x))^a, a = 1 + n, b = the gaps' days
/// beyond the first + the prior's) is the allowed one. Twelve gaps do not pin
/// a rhythm down, so this is longer than a point estimate would allow, more
/// so for a customer whose gaps vary or who has few of them. With fewer gaps,
/// the population's 90th percentile (or what the customer showed so far, if
/// longer) is the mean of a geometric gap. It is never below
/// [`LONGEST_GAP_FACTOR`] x the longest recent gap the customer came back
/// from, nor below `window`; while the whole population is quiet it stretches
/// by 1 / the population's activity factor.
pub fn allowed_gap(c: &Customer, ctx: &Ctx<'_>) -> (Ts, f64, &'static str) {
    let p = ctx.params;
    let odds = p.fire * std::f64::consts::LN_10;
    // The prior's gap: a long weekend (3 days, 2 beyond the first), the same
    // for every customer and moment, so a deadline does not move with the
    // population (a restart must schedule what a replay schedules).
    let prior = PRIOR_GAP_DAYS - 1.0;
    let (tail, typical, basis) = match c.recent_gaps(p.min_baseline as usize) {
        Some((n, beyond_first)) => {
            let a = 1.0 + n as f64;
            let b = beyond_first + prior;
            // b (10^(fire / a) - 1), written with exp_m1 for small fire / a.
            let x = b * (odds / a).exp_m1();
            // The mean gap, as `Customer::typical_gap_days` gives it.
            (1.0 + x, 1.0 + beyond_first / n as f64, "own")
        }
        None => {
            let typical = ctx.pop.typical_gap_days.max(c.observed_gap_days(ctx.now));
            let tail = if typical <= 1.0 {
                1.0
            } else {
                1.0 + odds / -(1.0 - 1.0 / typical).ln()
            };
            (tail, typical, "population")
        }
    };
    let longest = c.longest_recent_gap().unwrap_or(0.0);
    let quiet = ctx.pop.activity_factor.clamp(0.25, 1.0);
    let days = tail.max(LONGEST_GAP_FACTOR * longest) / quiet;
    let allowed = (days * DAY_MS as f64) as Ts;
    (allowed.max(p.window), typical, basis)
}

/// No usage for longer than the customer's usual gap allows.
pub fn inactivity(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    if c.last_usage == NEVER || c.is_churned() {
        return None;
    }
    let (allowed, typical, basis) = allowed_gap(c, ctx);
    let deadline = c.last_usage + allowed;
    if ctx.now < deadline {
        return None;
    }
    let idle_days = (ctx.now - c.last_usage) as f64 / DAY_MS as f64;
    Some(Finding {
        starts_at: deadline,
        summary: format!(
            "No usage for {} days; this customer's usual gap is {} days ({basis}), so more than {} days is unusual",
            r1(idle_days),
            r1(typical),
            r1(allowed as f64 / DAY_MS as f64)
        ),
        evidence: json!({
            "last_usage": format_ts(c.last_usage),
            "idle_days": r1(idle_days),
            "typical_gap_days": r1(typical),
            "allowed_gap_days": r1(allowed as f64 / DAY_MS as f64),
            "gap_basis": basis,
            "longest_recent_gap_days": c.longest_recent_gap(),
        }),
    })
}

/// Days a key feature must have been used on before its non-use counts.
pub const KEY_FEATURE_MIN_DAYS: u16 = 3;

/// A configured key feature, used regularly before, unused for `window`.
pub fn key_feature_unused(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    if c.is_churned() {
        return None;
    }
    let kf = c.key_features.as_ref()?;
    let window = ctx.params.window;
    let mut unused: Vec<(&str, Ts, u16)> = kf
        .iter()
        .zip(ctx.key_features)
        .filter(|((last, days, _), _)| {
            *days >= KEY_FEATURE_MIN_DAYS && *last != NEVER && ctx.now >= last + window
        })
        .map(|((last, days, _), name)| (name.as_str(), *last, *days))
        .collect();
    if unused.is_empty() {
        return None;
    }
    unused.sort_by_key(|(name, last, _)| (*last, *name));
    let (name, last, _) = unused[0];
    let idle_days = (ctx.now - last) as f64 / DAY_MS as f64;
    Some(Finding {
        starts_at: last + window,
        summary: format!(
            "Key feature '{name}' not used for {} days (window {} days)",
            r1(idle_days),
            r1(window as f64 / DAY_MS as f64)
        ),
        evidence: json!({
            "features": unused.iter().map(|(n, l, d)| json!({
                "feature": n,
                "last_used": format_ts(*l),
                "days_used_before": d,
                "idle_days": r1((ctx.now - l) as f64 / DAY_MS as f64),
            })).collect::<Vec<_>>(),
            "window_days": r1(window as f64 / DAY_MS as f64),
        }),
    })
}

/// When the earliest key feature of `c` will become unused, if any.
pub fn key_feature_deadline(c: &Customer, window: Ts) -> Option<Ts> {
    c.key_features
        .as_ref()?
        .iter()
        .filter(|(last, days, _)| *days >= KEY_FEATURE_MIN_DAYS && *last != NEVER)
        .map(|(last, _, _)| last + window)
        .min()
}
