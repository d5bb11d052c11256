//! `inactivity` and `key_feature_unused`: time since the last use against
//! what is normal for this customer (or, with little history, its plan).

use serde_json::json;

use super::{Ctx, Finding, r1};
use crate::engine::customer::{Customer, NEVER};
use crate::event::{DAY_MS, Ts, format_ts};

/// A gap this many times the longest recent one is always allowed.
pub const LONGEST_GAP_FACTOR: f64 = 2.0;

/// The longest gap without usage that is still normal for `c`, in ms.
///
/// Gaps between active days are modelled as geometric with the customer's
/// mean recent gap (the population's 90th percentile, or what the customer
/// showed so far if longer, while it has fewer than `min_baseline` gaps); the
/// allowed gap is the one that a normal rhythm exceeds with probability
/// 10^-`fire`. It is never below 1.5 x the longest recent gap the customer
/// came back from (times [`LONGEST_GAP_FACTOR`]), nor below `window`; while the whole population is quiet it
/// stretches by 1 / the population's activity factor.
pub fn allowed_gap(c: &Customer, ctx: &Ctx<'_>) -> (Ts, f64, &'static str) {
    let p = ctx.params;
    let (typical, basis) = match c.typical_gap_days(p.min_baseline as usize) {
        Some(g) => (g, "own"),
        None => (
            ctx.pop.typical_gap_days.max(c.observed_gap_days(ctx.now)),
            "population",
        ),
    };
    let tail = if typical <= 1.0 {
        1.0
    } else {
        1.0 + (p.fire * std::f64::consts::LN_10) / -(1.0 - 1.0 / typical).ln()
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
