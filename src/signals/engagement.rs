//! `engagement_drop`: a sustained fall of daily usage against the customer's
//! own weekday rhythm, found by a one-sided CUSUM ([`shift`]), so that a slide
//! over weeks fires inside the slide. `seat_contraction`: distinct users of
//! the last 7 days against the customer's own 8-week baseline (median of full
//! weeks, so one odd week does not move it). Both are scaled by how the whole
//! population of the plan moved.

use serde_json::json;

use super::{Ctx, Finding, Population, WeekTotals, pct, r1, r3};
use crate::catalogue::AlertParams;
use crate::event::{DAY_MS, Ts, format_ts};
use crate::state::customer::{Customer, NEVER};
use crate::state::window::{day_of, median};

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

/// Weekly standard deviation implied by the daily counts of the baseline weeks.
pub fn week_sd_from_days(c: &Customer, today: i32) -> f64 {
    let from = (today - 63).max(crate::state::window::day_of(c.first_seen));
    (7.0 * c.activity().daily_residual_variance(from, today - 7)).sqrt()
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
    let first = crate::state::window::day_of(c.first_seen) + 1;
    let days = (to - first).min(49) / 7 * 7;
    if days < FORTNIGHT_MIN_BASELINE_DAYS {
        return None;
    }
    let rate = c.activity().events(to - days, to) as f64 / f64::from(days);
    Some((c.activity().events(to, today) as f64, rate, days))
}

/// A population seat factor below this is a shared quiet period.
pub const QUIET_POPULATION: f64 = 0.85;

/// Full weeks of own history a baseline needs.
pub const MIN_BASELINE_WEEKS: usize = 3;

fn has_history(c: &Customer, ctx: &Ctx<'_>, weeks: usize) -> bool {
    ctx.now - c.first_seen >= ctx.params.window && weeks >= MIN_BASELINE_WEEKS
}

/// Days the change detector of [`shift`] scans at most.
pub const SHIFT_SCAN_DAYS: i32 = 28;

/// Baseline days [`shift`] needs before its scan, at least and at most
/// (whole weeks, so every weekday counts the same).
pub const SHIFT_BASELINE_DAYS: (i32, i32) = (21, 35);

/// The usage level, as a share of normal, that [`shift`]'s detector is tuned
/// to find: evidence accumulates on days below about 78% of normal.
pub const SHIFT_TARGET: f64 = 0.6;

/// Most evidence (natural log) one day adds in [`shift`]: 0.5 in log10, so
/// at least six days below normal are needed for the default threshold.
pub const DAY_CAP: f64 = 0.5 * std::f64::consts::LN_10;

/// A sustained fall of daily usage, as a one-sided CUSUM of the daily counts
/// against the customer's own weekday profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    /// Evidence for "usage now runs at [`SHIFT_TARGET`] of normal" over "usage
    /// is normal", log10 of the likelihood ratio (0 = none).
    pub evidence: f64,
    /// First day of the current run of evidence.
    pub since: i32,
    /// Events and expected events since `since`.
    pub run: (f64, f64),
    /// Events and expected events in the last 7 days.
    pub last_7d: (f64, f64),
    /// Mean weekly events of the baseline.
    pub baseline_week: f64,
    /// Baseline days.
    pub baseline_days: i32,
    /// Day-to-day variance over Poisson (at least 1).
    pub dispersion: f64,
}

impl Shift {
    /// How far the last 7 days fell below expected (0..=1).
    pub fn drop_7d(&self) -> f64 {
        if self.last_7d.1 <= 0.0 {
            0.0
        } else {
            (1.0 - self.last_7d.0 / self.last_7d.1).max(0.0)
        }
    }
}

/// The CUSUM of `c`'s daily events over the (up to) 28 days before `today`,
/// each day expected at the mean of the same weekday over the (up to) five
/// weeks before the scan, times how the whole plan moved that day
/// (`Population::daily_factors`), so a shared holiday adds nothing. Each day
/// adds the log-likelihood ratio of "usage at [`SHIFT_TARGET`] of normal"
/// against "normal" (Poisson, divided by the customer's own overdispersion,
/// so an irregular rhythm needs more days), and the sum never goes below
/// zero: a slow slide builds evidence day after day, an ordinary noisy week
/// is cancelled by the normal days around it. The evidence is discounted for
/// the baseline being a sample itself. `None` with less than three
/// whole weeks of baseline before a week of scan.
pub fn shift(c: &Customer, today: i32, pop: &Population) -> Option<Shift> {
    let first = day_of(c.first_seen) + 1; // the first day seen is partial
    let avail = today - first;
    let scan = SHIFT_SCAN_DAYS.min(avail - SHIFT_BASELINE_DAYS.0);
    if scan < 7 {
        return None;
    }
    let blen = SHIFT_BASELINE_DAYS.1.min(avail - scan) / 7 * 7;
    let (bto, bfrom) = (today - scan, today - scan - blen);
    let mut sum = [0.0f64; 7];
    let mut x = [0.0f64; SHIFT_SCAN_DAYS as usize];
    for b in c.activity().buckets() {
        if (bfrom..bto).contains(&b.day) {
            sum[b.day.rem_euclid(7) as usize] += f64::from(b.events);
        } else if (bto..today).contains(&b.day) {
            x[(b.day - bto) as usize] = f64::from(b.events);
        }
    }
    let weeks = f64::from(blen / 7);
    let total: f64 = sum.iter().sum();
    let mean = total / f64::from(blen);
    if mean <= 0.0 {
        return None;
    }
    // Each weekday's mean, pulled a little toward the overall mean: three
    // to five samples of a weekday are noisy.
    const PULL: f64 = 0.5;
    let mu: [f64; 7] = std::array::from_fn(|w| (sum[w] + PULL * mean) / (weeks + PULL));
    let dispersion = (c.activity().daily_residual_variance(bfrom, bto) / mean).max(1.0);
    let (fall, log_target) = (1.0 - SHIFT_TARGET, SHIFT_TARGET.ln());
    let mut s = 0.0f64;
    let mut since = bto;
    let mut run = (0.0, 0.0);
    let mut last_7d = (0.0, 0.0);
    for i in 0..scan {
        let day = bto + i;
        let lambda = mu[day.rem_euclid(7) as usize] * pop.daily_factor(today, day).clamp(0.05, 1.0);
        let xi = x[i as usize];
        // One day adds at most DAY_CAP: a single day off, however busy the
        // customer, is not a trend.
        s += ((lambda * fall + xi * log_target) / dispersion).min(DAY_CAP);
        if s <= 0.0 {
            s = 0.0;
            since = day + 1;
            run = (0.0, 0.0);
        } else {
            run.0 += xi;
            run.1 += lambda;
        }
        if i >= scan - 7 {
            last_7d.0 += xi;
            last_7d.1 += lambda;
        }
    }
    // The expectation is itself estimated from the baseline's events, so the
    // run is compared with a sample, not a known rate: the variance of the
    // comparison grows by 1 + (expected in the run) / (events in the
    // baseline), and the evidence shrinks by the same factor. A short or
    // sparse baseline then needs a longer or deeper fall.
    let estimated = 1.0 + run.1 / total;
    Some(Shift {
        evidence: s / estimated / std::f64::consts::LN_10,
        since,
        run,
        last_7d,
        baseline_week: 7.0 * mean,
        baseline_days: blen,
        dispersion,
    })
}

/// A sustained fall of usage against the customer's own weekday rhythm
/// ([`shift`]): fires when the evidence reaches `significance` (log10) and
/// the last 7 days are at least `fire` below expected, with a baseline of at
/// least `min_baseline` weekly events; holds while the last 7 days stay more
/// than `resolve` below.
pub fn engagement_drop(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    if c.is_churned() || ctx.now - c.first_seen < ctx.params.window {
        return None;
    }
    let sh = shift(c, ctx.today, ctx.pop)?;
    let p = ctx.params;
    if sh.baseline_week < p.min_baseline.max(f64::MIN_POSITIVE) {
        return None;
    }
    let drop = sh.drop_7d();
    let holds = if ctx.firing {
        drop > p.resolve
    } else {
        drop >= p.fire && sh.evidence >= p.significance
    };
    if !holds {
        return None;
    }
    let run_days = ctx.today - sh.since;
    let run_drop = if sh.run.1 > 0.0 {
        (1.0 - sh.run.0 / sh.run.1).max(0.0)
    } else {
        drop
    };
    Some(Finding {
        starts_at: ctx.now,
        summary: format!(
            "Usage has run {}% below this customer's usual level for {run_days} days ({} events, {} expected); the last 7 days {}% below ({} events, {} expected)",
            pct(run_drop),
            sh.run.0,
            r1(sh.run.1),
            pct(drop),
            sh.last_7d.0,
            r1(sh.last_7d.1),
        ),
        evidence: json!({
            "current_7d": sh.last_7d.0,
            "expected_7d": r1(sh.last_7d.1),
            "drop_pct": pct(drop),
            "baseline_7d": r1(sh.baseline_week),
            "baseline_days": sh.baseline_days,
            "declining_since": format_ts(i64::from(sh.since) * DAY_MS),
            "declining_days": run_days,
            "events_since": sh.run.0,
            "expected_since": r1(sh.run.1),
            "evidence_log10": r1(sh.evidence),
            "dispersion": r1(sh.dispersion),
            "population_factor": r3(ctx.pop.daily_factor(ctx.today, ctx.today - 1)),
            "fire_drop_pct": pct(p.fire),
            "resolve_drop_pct": pct(p.resolve),
            "fire_evidence_log10": p.significance,
        }),
    })
}

/// False when [`engagement_drop`] cannot fire for `c` (not firing) at `now`
/// whatever the population: churned, less than `window` of history, or too
/// few events in the whole record for a baseline of `min_baseline` a week
/// (a baseline is at least 21 days, so it is at most a third of them). The
/// daily sweep skips such customers.
pub fn engagement_drop_may_fire(c: &Customer, p: &AlertParams, now: Ts) -> bool {
    now - c.first_seen >= p.window && engagement_drop_may_fire_from(c, p, now).is_some()
}

/// From when on [`engagement_drop_may_fire`] can be true without another
/// event: once `c` has `window` of history, if it has enough events on record.
pub fn engagement_drop_may_fire_from(c: &Customer, p: &AlertParams, from: Ts) -> Option<Ts> {
    if c.is_churned() {
        return None;
    }
    let events: u64 = c.activity().buckets().map(|b| u64::from(b.events)).sum();
    // 7 / 21 with a margin for rounding in `shift`'s mean.
    (events as f64 / 3.0 * (1.0 + 1e-9) >= p.min_baseline.max(f64::MIN_POSITIVE))
        .then(|| from.max(c.first_seen.saturating_add(p.window)))
}

/// Mean of the base's daily factors over the 7 days before `today`: below
/// [`QUIET_POPULATION`] the whole base is in a quiet period.
pub fn population_week_factor(pop: &Population, today: i32, fallback: f64) -> f64 {
    if pop.daily_factors.len() < 7 {
        return fallback;
    }
    (1..=7)
        .map(|k| pop.daily_factor(today, today - k))
        .sum::<f64>()
        / 7.0
}

/// How recently an account must have been used for fewer active users to be
/// seat loss rather than the whole account stopping (3 days: a weekend).
const SEATS_STILL_IN_USE: Ts = 3 * DAY_MS;

/// Fewer people using the product: of the customer's regular users (active
/// in every one of its baseline weeks), at least `fire` were not
/// active in the last 7 days, with at least `min_baseline` regular users;
/// holds while more than `resolve` stay away. Reported whether or not the
/// usage also fell (then `engagement_drop` may fire too). While the whole
/// base is in a quiet period, nothing new fires; an account that has stopped
/// altogether is not seat loss.
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
    let seats = c.seats()?;
    let mut w = c.baseline_weeks_by_index(ctx.today, |k| f64::from(d[k]));
    let weeks = w.len;
    if !has_history(c, ctx, weeks) {
        return None;
    }
    // Nobody active at all is inactivity's business, not fewer seats; nor is
    // an account that has stopped altogether: seat loss is users leaving an
    // account that is still in use (its last event within SEATS_STILL_IN_USE),
    // while an account going silent is reported by engagement_drop and
    // inactivity. A firing alert holds on.
    if t.events[0] == 0
        || (!ctx.firing && (c.last_usage == NEVER || ctx.now - c.last_usage > SEATS_STILL_IN_USE))
    {
        return None;
    }
    let quiet = population_week_factor(ctx.pop, ctx.today, ctx.pop.seat_factor);
    if !ctx.firing && quiet < QUIET_POPULATION {
        return None;
    }
    // While firing, the regulars are those of the baseline it fired on.
    let base_today = match c
        .firing
        .iter()
        .find(|f| f.kind == crate::catalogue::AlertKind::SeatContraction)
    {
        Some(f) if ctx.firing => day_of(f.starts_at).min(ctx.today),
        _ => ctx.today,
    };
    // Baseline weeks still within the 64 days of the seat record; with
    // fewer than two left (about six weeks after it fired) the loss is the
    // new normal and the alert resolves.
    let fit = usize::try_from((base_today - ctx.today + 64) / 7 - 1).unwrap_or(0);
    let weeks = if base_today < ctx.today {
        weeks.min(fit)
    } else {
        weeks
    };
    if weeks < 2 {
        return None;
    }
    let (regular, away) = seats.regulars_since(base_today, ctx.today, weeks);
    let p = ctx.params;
    if f64::from(regular) < p.min_baseline.max(1.0) {
        return None;
    }
    let share = f64::from(away) / f64::from(regular);
    // How likely this many regulars are away at once by chance: each one
    // misses a week with the chance its own record allows (none missed in
    // `weeks`, so (0.5) / (weeks + 1)).
    let p_away = 0.5 / (weeks as f64 + 1.0);
    let chance = binomial_tail(regular, away, p_away);
    let holds = if ctx.firing {
        share > p.resolve
    } else {
        share >= p.fire && chance <= 10f64.powf(-p.significance)
    };
    if !holds {
        return None;
    }
    let current = f64::from(d[0]);
    let baseline = median(w.values_mut()).unwrap_or(0.0);
    let mut aw = c.baseline_weeks_by_index(ctx.today, |k| t.events[k] as f64);
    let activity_drop =
        measure(t.events[0] as f64, aw.values_mut(), 1.0, None).map_or(0.0, |(_, a)| a.drop);
    Some(Finding {
        starts_at: ctx.now,
        summary: format!(
            "{away} of {regular} regular users ({}%) were not active in the last 7 days; {} active users against {} usual, activity {}% below usual",
            pct(share),
            current,
            r1(baseline),
            pct(activity_drop),
        ),
        evidence: json!({
            "regular_users": regular,
            "regular_users_away": away,
            "away_pct": pct(share),
            "current_seats_7d": current,
            "baseline_seats_7d": r1(baseline),
            "activity_drop_pct": pct(activity_drop),
            "chance_by_luck": format!("{chance:.1e}"),
            "population_factor": r3(quiet),
            "baseline_weeks": weeks,
            "fire_away_pct": pct(p.fire),
            "resolve_away_pct": pct(p.resolve),
        }),
    })
}

/// False when [`seat_contraction`] cannot fire for `c` (not firing) at
/// `now` whatever the population: churned, no users tracked or fewer than
/// `min_baseline` (the regular users are some of them), less than `window`
/// of history, or no usage in the last [`SEATS_STILL_IN_USE`].
pub fn seat_contraction_may_fire(c: &Customer, p: &AlertParams, now: Ts) -> bool {
    now - c.first_seen >= p.window && seat_contraction_may_fire_from(c, p, now) == Some(now)
}

/// From when on [`seat_contraction_may_fire`] can be true without another
/// event: once `c` has `window` of history, if that is within
/// [`SEATS_STILL_IN_USE`] of its last usage and it has users enough.
pub fn seat_contraction_may_fire_from(c: &Customer, p: &AlertParams, from: Ts) -> Option<Ts> {
    let at = from.max(c.first_seen.saturating_add(p.window));
    (!c.is_churned()
        && c.last_usage != NEVER
        && at - c.last_usage <= SEATS_STILL_IN_USE
        && c.seats()
            .is_some_and(|s| s.tracked() as f64 >= p.min_baseline.max(1.0)))
    .then_some(at)
}

/// P(X >= k) for X ~ Binomial(n, p).
pub fn binomial_tail(n: u32, k: u32, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    // Terms from k up, each from the one before: C(n, i + 1) / C(n, i) = (n - i) / (i + 1).
    let (n_f, q) = (f64::from(n), 1.0 - p);
    let ln_term = ln_choose(n, k) + f64::from(k) * p.ln() + (n_f - f64::from(k)) * q.ln();
    let mut term = ln_term.exp();
    let mut sum = 0.0;
    for i in k..=n {
        sum += term;
        term *= (n_f - f64::from(i)) / (f64::from(i) + 1.0) * p / q;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum.min(1.0)
}

fn ln_choose(n: u32, k: u32) -> f64 {
    let k = k.min(n - k);
    (0..k)
        .map(|i| (f64::from(n - i) / f64::from(i + 1)).ln())
        .sum()
}
