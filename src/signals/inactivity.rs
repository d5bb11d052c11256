//! `inactivity` and `key_feature_unused`: time since the last use against
//! what is normal for this customer (or, with little history, its plan).

use serde_json::json;

use super::{Ctx, Finding, r1, r3};
use crate::event::{DAY_MS, Ts, format_ts};
use crate::state::customer::{Customer, FEATURE_GAPS, FeatureUse, NEVER};

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

/// Prior of a key feature's skip rate: as if `SKIP_PRIOR.0` skipped periods
/// had been seen in `SKIP_PRIOR.1` (a rate of 1 in 10 until its own
/// history says otherwise).
const SKIP_PRIOR: (f64, f64) = (0.5, 5.0);

/// How a customer uses one key feature, read from its recent gaps between
/// days of use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureRhythm {
    /// Its period, days: the (lower) median gap.
    pub period_days: f64,
    /// Share of its periods skipped (with the prior).
    pub skip_rate: f64,
    /// Periods in a row that must go unused before that is improbable.
    pub periods_allowed: u32,
    /// Gaps it was read from.
    pub gaps: usize,
    /// The longest of those gaps, days.
    pub longest_days: f64,
}

/// The rhythm of a key feature with at least two gaps between days of use:
/// its period is the median gap, each gap counts round(gap / period)
/// periods of which all but one were skipped, and the skip rate is the
/// share of skipped periods (Beta prior [`SKIP_PRIOR`]). A run of skipped
/// periods is improbable once skip_rate^run < 10^-`fire`.
pub fn feature_rhythm(f: &FeatureUse, fire: f64) -> Option<FeatureRhythm> {
    let g = f.recent_gaps();
    let period = feature_period_days(f)?;
    let (mut skipped, mut periods) = (0.0, 0.0);
    for &x in g {
        let n = (f64::from(x) / period).round().max(1.0);
        skipped += n - 1.0;
        periods += n;
    }
    let skip_rate = ((skipped + SKIP_PRIOR.0) / (periods + SKIP_PRIOR.1)).min(0.95);
    let run = (fire.max(0.5) * std::f64::consts::LN_10 / -skip_rate.ln()).ceil();
    Some(FeatureRhythm {
        period_days: period,
        skip_rate,
        periods_allowed: run as u32,
        gaps: g.len(),
        longest_days: f64::from(g.iter().copied().max().unwrap_or(0)),
    })
}

/// A key feature's period, days: the (lower) median of its recent gaps
/// between days of use, once it has at least two.
pub fn feature_period_days(f: &FeatureUse) -> Option<f64> {
    let g = f.recent_gaps();
    if g.len() < 2 {
        return None;
    }
    // Sorted on the stack: this runs whenever a deadline is scheduled.
    let mut buf = [0u8; FEATURE_GAPS];
    let sorted = &mut buf[..g.len()];
    sorted.copy_from_slice(g);
    sorted.sort_unstable();
    Some(f64::from(sorted[(sorted.len() - 1) / 2]).max(1.0))
}

/// The base's activity factor below which it is in a lull (a holiday).
const QUIET_BASE: f64 = 0.85;

/// How long key feature `f` may go unused, ms, and its rhythm if known:
/// the customer's next use is due one period after the last, so `run`
/// skipped periods in a row take (run + 1/2) periods (half a period of
/// slack for an irregular day), at least the longest recent gap plus one
/// period, stretched while the whole base is in a lull (activity factor
/// below 0.85); never below `window`.
pub fn feature_allowed(f: &FeatureUse, ctx: &Ctx<'_>) -> (Ts, Option<FeatureRhythm>) {
    let window_days = ctx.params.window as f64 / DAY_MS as f64;
    let rhythm = feature_rhythm(f, ctx.params.fire);
    // Only a real base-wide lull stretches the rhythm; the configured
    // window is a floor that never moves.
    let quiet = match ctx.pop.activity_factor {
        f if f < QUIET_BASE => f.max(0.25),
        _ => 1.0,
    };
    let days = rhythm.map_or(window_days, |r| {
        ((f64::from(r.periods_allowed) + 0.5) * r.period_days).max(r.longest_days + r.period_days)
            / quiet
    });
    ((days.max(window_days) * DAY_MS as f64) as Ts, rhythm)
}

/// A configured key feature, used on at least [`KEY_FEATURE_MIN_DAYS`]
/// days, unused for longer than its own rhythm allows ([`feature_allowed`]):
/// a weekly report skipped once or twice is not a customer who stopped.
pub fn key_feature_unused(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    if c.is_churned() {
        return None;
    }
    let kf = c.key_features.as_ref()?;
    let mut unused: Vec<(&str, &FeatureUse, Ts, Option<FeatureRhythm>)> = kf
        .iter()
        .zip(ctx.key_features)
        .filter(|(f, _)| f.days >= KEY_FEATURE_MIN_DAYS && f.last != NEVER)
        .filter_map(|(f, name)| {
            let (allowed, rhythm) = feature_allowed(f, ctx);
            (ctx.now >= f.last + allowed).then_some((name.as_str(), f, allowed, rhythm))
        })
        .collect();
    if unused.is_empty() {
        return None;
    }
    unused.sort_by_key(|(name, f, allowed, _)| (f.last + allowed, *name));
    let (name, f, allowed, rhythm) = unused[0];
    let idle_days = (ctx.now - f.last) as f64 / DAY_MS as f64;
    let allowed_days = allowed as f64 / DAY_MS as f64;
    let how = match rhythm {
        Some(r) => format!(
            "used about every {} days, {}% of periods skipped; more than {} days unused is unusual",
            r1(r.period_days),
            (r.skip_rate * 100.0).round(),
            r1(allowed_days)
        ),
        None => format!("window {} days", r1(allowed_days)),
    };
    Some(Finding {
        starts_at: f.last + allowed,
        summary: format!(
            "Key feature '{name}' not used for {} days ({how})",
            r1(idle_days)
        ),
        evidence: json!({
            "features": unused.iter().map(|(n, f, allowed, r)| json!({
                "feature": n,
                "last_used": format_ts(f.last),
                "days_used_before": f.days,
                "idle_days": r1((ctx.now - f.last) as f64 / DAY_MS as f64),
                "allowed_gap_days": r1(*allowed as f64 / DAY_MS as f64),
                "typical_gap_days": r.map(|r| r.period_days),
                "skip_rate": r.map(|r| r3(r.skip_rate)),
                "periods_allowed": r.map(|r| r.periods_allowed),
            })).collect::<Vec<_>>(),
            "window_days": r1(ctx.params.window as f64 / DAY_MS as f64),
            "fire_log10": ctx.params.fire,
        }),
    })
}

/// When the earliest key feature of `c` will become unused, if any.
pub fn key_feature_deadline(c: &Customer, ctx: &Ctx<'_>) -> Option<Ts> {
    c.key_features
        .as_ref()?
        .iter()
        .filter(|f| f.days >= KEY_FEATURE_MIN_DAYS && f.last != NEVER)
        .map(|f| f.last + feature_allowed(f, ctx).0)
        .min()
}
