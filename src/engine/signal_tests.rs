//! Per-signal behaviour through the engine: each alert fires on its story,
//! stays quiet on weekend-idle, shared-quiet-week and bursty customers, and
//! resolves when its cause goes away.

use std::sync::Arc;

use crate::alert::{AlertEvent, AlertStatus};
use crate::catalogue::AlertKind;
use crate::config::{Config, RawConfig};
use crate::engine::{Engine, Lifecycle};
use crate::event::{
    CancelKind, DAY_MS, Event, EventKind, HOUR_MS, Severity, Ts, parse_ts, user_hash,
};
use crate::signals::health::Risk;

fn t0() -> Ts {
    parse_ts("2026-01-05T00:00:00Z").unwrap() // a Monday
}

fn at(day: f64) -> Ts {
    t0() + (day * DAY_MS as f64) as Ts
}

fn ev(c: &str, ts: Ts, kind: EventKind) -> Event {
    Event {
        customer_id: c.into(),
        ts,
        event_id: None,
        segment: None,
        kind,
    }
}

fn usage(c: &str, ts: Ts, user: u32, feature: Option<&str>) -> Event {
    ev(
        c,
        ts,
        EventKind::Usage {
            // The tests' configs name these key features, in this order.
            key_feature: feature
                .and_then(|f| ["reports", "exports"].iter().position(|k| *k == f))
                .map(|i| i as u8),
            user: Some(user_hash(&format!("u{user}"))),
            quantity: 1.0,
        },
    )
}

fn is_weekend(day: i64) -> bool {
    day.rem_euclid(7) >= 5 // t0 is a Monday
}

/// `per_day(day) -> events that day` for one customer, spread over 5 users and office hours.
fn daily(c: &str, days: std::ops::Range<i64>, per_day: impl Fn(i64) -> u32) -> Vec<Event> {
    let mut out = Vec::new();
    for d in days {
        let n = per_day(d);
        for i in 0..n {
            let ts = at(d as f64) + 9 * HOUR_MS + (i as Ts * 8 * HOUR_MS) / n.max(1) as Ts;
            out.push(usage(c, ts, i % 5, None));
        }
    }
    out
}

/// Thirty steady customers so the population context has a quorum.
fn peers(days: std::ops::Range<i64>, quiet_week: Option<i64>) -> Vec<Event> {
    let mut out = Vec::new();
    for p in 0..30 {
        let name = format!("peer-{p:02}");
        let base = 5 + p % 7;
        out.extend(daily(&name, days.clone(), |d| {
            let n = if is_weekend(d) { base / 3 } else { base };
            if quiet_week.is_some_and(|w| d / 7 == w) {
                (n as f64 * 0.4).round() as u32
            } else {
                n
            }
        }));
    }
    out
}

fn config(f: impl FnOnce(&mut RawConfig)) -> Arc<Config> {
    let mut raw = RawConfig::default();
    f(&mut raw);
    Arc::new(raw.validate().unwrap())
}

fn run_with(cfg: Arc<Config>, mut events: Vec<Event>, until: Ts) -> (Engine, Vec<AlertEvent>) {
    events.sort_by_key(|e| e.ts);
    let mut e = Engine::new(cfg);
    e.set_until(Some(until));
    for (i, ev) in events.into_iter().enumerate() {
        e.ingest(ev, i as u64);
    }
    e.finish(Some(until));
    let alerts = e.take_alerts();
    (e, alerts)
}

fn run(events: Vec<Event>, until: Ts) -> (Engine, Vec<AlertEvent>) {
    run_with(Arc::new(Config::default()), events, until)
}

fn of<'a>(alerts: &'a [AlertEvent], c: &str, kind: AlertKind) -> Vec<&'a AlertEvent> {
    alerts
        .iter()
        .filter(|a| &*a.customer_id == c && a.alert == kind)
        .collect()
}

fn statuses(alerts: &[&AlertEvent]) -> Vec<AlertStatus> {
    alerts.iter().map(|a| a.status).collect()
}

#[test]
fn engagement_drop_fires_on_decline_and_resolves_on_recovery() {
    let mut evs = peers(0..120, None);
    evs.extend(daily("story", 0..120, |d| match d {
        0..70 => 20,
        70..90 => 3,
        _ => 20,
    }));
    let (_, alerts) = run(evs, at(120.0));
    let a = of(&alerts, "story", AlertKind::EngagementDrop);
    assert_eq!(
        statuses(&a),
        vec![AlertStatus::Firing, AlertStatus::Resolved],
        "{a:#?}"
    );
    assert!(
        a[0].starts_at > at(70.0) && a[0].starts_at <= at(77.0),
        "fired within a week"
    );
    assert!(a[0].evidence["drop_pct"].as_i64().unwrap() >= 50);
    assert!(a[0].summary.contains("below"));
    assert!(a[1].ends_at.unwrap() > at(90.0));
    assert!(
        alerts.iter().all(|a| !a.customer_id.starts_with("peer")),
        "steady peers stay quiet"
    );
}

#[test]
fn weekend_idle_customers_raise_nothing() {
    let mut evs = peers(0..120, None);
    evs.extend(daily("weekdays", 0..120, |d| {
        if is_weekend(d) { 0 } else { 12 }
    }));
    let cfg = config(|r| r.key_features = Some(vec!["reports".into()]));
    let (e, alerts) = run_with(cfg, evs, at(120.0));
    assert!(
        alerts.iter().all(|a| &*a.customer_id != "weekdays"),
        "{alerts:#?}"
    );
    // Evaluated on a Monday morning too: the weekend gap is normal.
    assert!(e.customer("weekdays").unwrap().alerts.is_empty());
}

#[test]
fn a_quiet_week_shared_by_everyone_raises_nothing() {
    let mut evs = peers(0..120, Some(11));
    // Everyone, the seat-heavy customer included, drops 60% in week 11.
    evs.extend(daily("big", 0..120, |d| if d / 7 == 11 { 8 } else { 20 }));
    let (_, alerts) = run(evs, at(120.0));
    let bad: Vec<_> = alerts
        .iter()
        .filter(|a| {
            matches!(
                a.alert,
                AlertKind::EngagementDrop | AlertKind::SeatContraction
            )
        })
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn a_bursty_customer_is_judged_by_its_own_rhythm() {
    let mut evs = peers(0..130, None);
    // One active day every 21 days, a few events each.
    evs.extend(daily("bursty", 0..130, |d| if d % 21 == 0 { 4 } else { 0 }));
    // Once its rhythm is known (two gaps seen, day 42), nothing fires; at
    // day 14 after its last burst (day 105) nothing is firing.
    let (e, alerts) = run(evs, at(119.0));
    let after_rhythm: Vec<_> = alerts
        .iter()
        .filter(|a| &*a.customer_id == "bursty" && a.starts_at > at(43.0))
        .collect();
    assert!(after_rhythm.is_empty(), "{after_rhythm:#?}");
    let v = e.customer("bursty").unwrap();
    assert!(v.row.firing.is_empty());
}

#[test]
fn inactivity_fires_at_the_deadline_and_resolves_on_return() {
    let mut evs = peers(0..120, None);
    evs.extend(daily("gone", 0..120, |d| {
        if (70..95).contains(&d) { 0 } else { 10 }
    }));
    let (_, alerts) = run(evs, at(120.0));
    let a = of(&alerts, "gone", AlertKind::Inactivity);
    assert_eq!(
        statuses(&a),
        vec![AlertStatus::Firing, AlertStatus::Resolved],
        "{a:#?}"
    );
    // Last usage day 69 ~17:00; typical gap 1 day -> allowed 7 days (the floor).
    let last = at(69.0) + 9 * HOUR_MS + 9 * 8 * HOUR_MS / 10;
    assert_eq!(a[0].starts_at, last + 7 * DAY_MS);
    assert_eq!(a[1].ends_at, Some(at(95.0) + 9 * HOUR_MS));
    assert!(a[0].evidence["idle_days"].as_f64().unwrap() >= 7.0);
}

#[test]
fn a_70_percent_slide_over_three_weeks_fires_engagement_drop_before_it_ends() {
    for (level, start) in [(20.0, 63), (8.0, 70), (40.0, 77)] {
        let mut evs = peers(0..120, None);
        // Falls linearly from `level` to 30% of it over 21 days, then stays.
        evs.extend(daily("slide", 0..120, |d| {
            let f = ((d - start) as f64 / 21.0).clamp(0.0, 1.0);
            let n = level * (1.0 - 0.7 * f);
            if is_weekend(d) {
                (n / 3.0).round() as u32
            } else {
                n.round() as u32
            }
        }));
        let (_, alerts) = run(evs, at(120.0));
        let a = of(&alerts, "slide", AlertKind::EngagementDrop);
        assert!(!a.is_empty(), "level {level}: no engagement_drop");
        assert!(
            a[0].starts_at <= at((start + 21) as f64),
            "level {level}: fired at {} after the slide ended (day {})",
            crate::event::format_ts(a[0].starts_at),
            start + 21
        );
        assert!(a[0].starts_at > at(start as f64), "not before the slide");
    }
}

#[test]
fn seat_loss_with_falling_activity_fires_seat_contraction() {
    let mut evs = peers(0..120, None);
    for d in 0..120i64 {
        // 10 users, 3 events each a day; from day 70, 7 of them leave and
        // the 3 who stay take on half of their work (activity -35%).
        let (users, per_user) = if d >= 70 { (3u32, 6u32) } else { (10, 3) };
        for u in 0..users {
            for i in 0..per_user {
                evs.push(usage(
                    "seats",
                    at(d as f64) + (9 + i64::from(i)) * HOUR_MS,
                    u,
                    None,
                ));
            }
        }
    }
    let (_, alerts) = run(evs, at(100.0));
    let a = of(&alerts, "seats", AlertKind::SeatContraction);
    assert_eq!(statuses(&a), vec![AlertStatus::Firing], "{a:#?}");
    assert!(a[0].starts_at <= at(77.0), "{a:#?}");
}

#[test]
fn seat_contraction_fires_when_users_leave_and_resolves_when_back() {
    let mut evs = peers(0..120, None);
    for d in 0..120i64 {
        let users: u32 = if (70..90).contains(&d) { 3 } else { 10 };
        for u in 0..10u32 {
            // Remaining users do the work of those who left: total activity is unchanged.
            let n = if u < users { 10 / users.max(1) } else { 0 };
            for i in 0..n {
                evs.push(usage(
                    "seats",
                    at(d as f64) + (9 + i as i64) * HOUR_MS,
                    u,
                    None,
                ));
            }
        }
    }
    let (_, alerts) = run(evs, at(120.0));
    let a = of(&alerts, "seats", AlertKind::SeatContraction);
    assert_eq!(
        statuses(&a),
        vec![AlertStatus::Firing, AlertStatus::Resolved],
        "{a:#?}"
    );
    assert!(a[0].starts_at <= at(77.0));
    // Firing while the users stay away (the departed do not stop being
    // regulars as weeks without them enter the baseline); resolved when back.
    assert!(a[1].ends_at.unwrap() >= at(90.0), "{a:#?}");
    assert!(of(&alerts, "seats", AlertKind::EngagementDrop).is_empty());
}

#[test]
fn key_feature_unused_fires_after_its_window_and_resolves_on_use() {
    let mut evs = peers(0..120, None);
    evs.extend(daily("kf", 0..120, |_| 5));
    for d in (0..120i64).step_by(2).filter(|d| !(60..95).contains(d)) {
        evs.push(usage("kf", at(d as f64) + 12 * HOUR_MS, 1, Some("reports")));
    }
    let cfg = config(|r| r.key_features = Some(vec!["reports".into(), "exports".into()]));
    let (_, alerts) = run_with(cfg, evs, at(120.0));
    let a = of(&alerts, "kf", AlertKind::KeyFeatureUnused);
    assert_eq!(
        statuses(&a),
        vec![AlertStatus::Firing, AlertStatus::Resolved],
        "{a:#?}"
    );
    assert_eq!(a[0].starts_at, at(58.0) + 12 * HOUR_MS + 14 * DAY_MS);
    assert_eq!(a[0].evidence["features"][0]["feature"], "reports");
    assert_eq!(a[1].ends_at, Some(at(96.0) + 12 * HOUR_MS));
}

/// Two key features unused, then one used again (issue 13 item 7): the
/// alert keeps firing with its first `starts_at`; subscribers get it again
/// with the current evidence (one feature), a time of its own and a new id;
/// the API shows the current evidence; the resolution pairs with the first.
#[test]
fn a_firing_alert_whose_reasons_change_is_re_emitted_with_its_first_starts_at() {
    let mut evs = peers(0..120, None);
    evs.extend(daily("kf", 0..120, |_| 5));
    for d in (0..60i64).step_by(2) {
        evs.push(usage("kf", at(d as f64) + 12 * HOUR_MS, 1, Some("reports")));
        evs.push(usage("kf", at(d as f64) + 13 * HOUR_MS, 1, Some("exports")));
    }
    // Exports back on day 85, reports on day 100.
    for d in (85..120i64).step_by(2) {
        evs.push(usage("kf", at(d as f64) + 13 * HOUR_MS, 1, Some("exports")));
    }
    for d in (100..120i64).step_by(2) {
        evs.push(usage("kf", at(d as f64) + 12 * HOUR_MS, 1, Some("reports")));
    }
    let cfg = config(|r| r.key_features = Some(vec!["reports".into(), "exports".into()]));
    let (engine, alerts) = run_with(cfg.clone(), evs.clone(), at(120.0));
    let a = of(&alerts, "kf", AlertKind::KeyFeatureUnused);
    // Reports pass their window first, exports hours later (an update),
    // exports come back (another update), then reports (resolved).
    assert_eq!(
        statuses(&a),
        vec![
            AlertStatus::Firing,
            AlertStatus::Firing,
            AlertStatus::Firing,
            AlertStatus::Resolved
        ],
        "{a:#?}"
    );
    let features = |a: &AlertEvent| -> Vec<String> {
        a.evidence["features"]
            .as_array()
            .expect("features")
            .iter()
            .map(|f| f["feature"].as_str().expect("name").to_string())
            .collect()
    };
    assert_eq!(features(a[0]), ["reports"]);
    assert_eq!(features(a[1]), ["reports", "exports"]);
    let u = a[1].updated_at.expect("an update");
    assert!(
        u > a[0].starts_at && u < a[0].starts_at + DAY_MS,
        "exports' own window ends within the day: {u}"
    );
    assert_eq!(
        features(a[2]),
        ["reports"],
        "the update names what is still unused"
    );
    assert_eq!(
        a[2].updated_at,
        Some(at(85.0) + 13 * HOUR_MS),
        "when exports came back"
    );
    for u in &a[1..3] {
        assert_eq!(u.starts_at, a[0].starts_at, "same alert, same starts_at");
        assert_eq!(u.time(), u.updated_at.expect("updated"));
    }
    let ids: std::collections::BTreeSet<String> = a.iter().map(|x| x.id()).collect();
    assert_eq!(
        ids.len(),
        4,
        "each has its own id, so subscribers that drop duplicates see it"
    );
    assert_eq!(
        a[3].starts_at, a[0].starts_at,
        "the resolution pairs with the first"
    );
    assert_eq!(a[3].updated_at, None);
    // In between, the API shows the current evidence.
    let (engine_mid, _) = run_with(
        cfg,
        evs.into_iter().filter(|e| e.ts < at(95.0)).collect(),
        at(95.0),
    );
    let firing = engine_mid.firing();
    let f = firing
        .iter()
        .find(|f| &*f.customer_id == "kf" && f.alert == AlertKind::KeyFeatureUnused)
        .expect("still firing on day 95");
    assert_eq!(features(f), ["reports"]);
    assert_eq!(f.starts_at, a[0].starts_at);
    assert_eq!(f.id(), a[0].id(), "the API's alert is the first firing");
    drop(engine);
}

/// A customer in daily use that exports a report once every `period` days
/// (on days `from + k period`), except in the periods `skip` names.
fn periodic_feature_user(
    c: &str,
    period: i64,
    days: std::ops::Range<i64>,
    skip: impl Fn(i64) -> bool,
) -> Vec<Event> {
    let mut evs = daily(c, days.clone(), |d| if is_weekend(d) { 1 } else { 5 });
    for d in days.step_by(period as usize) {
        if !skip(d / period) {
            evs.push(usage(c, at(d as f64) + 14 * HOUR_MS, 1, Some("reports")));
        }
    }
    evs
}

#[test]
fn a_weekly_or_monthly_key_feature_user_who_skips_a_period_or_two_never_fires() {
    for (period, skips) in [(7, vec![5, 9, 10]), (14, vec![3]), (28, vec![2])] {
        let mut evs = peers(0..140, None);
        evs.extend(periodic_feature_user("kf", period, 0..140, |k| {
            skips.contains(&k)
        }));
        let cfg = config(|r| r.key_features = Some(vec!["reports".into()]));
        let (_, alerts) = run_with(cfg, evs, at(140.0));
        let a = of(&alerts, "kf", AlertKind::KeyFeatureUnused);
        assert!(a.is_empty(), "period {period}, skipped {skips:?}: {a:#?}");
    }
}

#[test]
fn a_weekly_key_feature_user_who_stops_fires_once_the_run_of_skipped_weeks_is_improbable() {
    let mut evs = peers(0..120, None);
    evs.extend(periodic_feature_user("kf", 7, 0..120, |k| k >= 9 || k == 4));
    let cfg = config(|r| r.key_features = Some(vec!["reports".into()]));
    let (_, alerts) = run_with(cfg, evs, at(120.0));
    let a = of(&alerts, "kf", AlertKind::KeyFeatureUnused);
    assert_eq!(statuses(&a), vec![AlertStatus::Firing], "{a:#?}");
    // Last use on day 56; skips 1 of 8 weeks (with the prior 1.5 / 13), so
    // four weeks in a row are improbable: 4.5 weeks after the last use,
    // not at the 14 days of a fixed window.
    let last = at(56.0) + 14 * HOUR_MS;
    assert_eq!(
        a[0].starts_at,
        last + (4.5 * 7.0 * DAY_MS as f64) as Ts,
        "{a:#?}"
    );
    let f = &a[0].evidence["features"][0];
    assert_eq!(f["typical_gap_days"], 7.0);
    assert_eq!(f["periods_allowed"], 4);
}

fn billing(c: &str, ts: Ts, kind: EventKind) -> Event {
    let mut e = ev(c, ts, kind);
    e.segment = Some("smb".into());
    e
}

fn started(c: &str, ts: Ts, plan: &str, mrr: i64) -> Event {
    billing(
        c,
        ts,
        EventKind::SubscriptionStarted {
            plan: plan.into(),
            mrr,
        },
    )
}

#[test]
fn downgrade_fires_on_lower_mrr_and_resolves_after_its_window() {
    let evs = vec![
        started("d", at(0.0), "pro", 9900),
        billing(
            "d",
            at(40.0),
            EventKind::PlanChanged {
                plan: "starter".into(),
                mrr: 2900,
                previous_plan: None,
                previous_mrr: None,
            },
        ),
        started("up", at(0.0), "starter", 2900),
        billing(
            "up",
            at(40.0),
            EventKind::PlanChanged {
                plan: "pro".into(),
                mrr: 9900,
                previous_plan: None,
                previous_mrr: None,
            },
        ),
    ];
    let (_, alerts) = run(evs, at(100.0));
    let a = of(&alerts, "d", AlertKind::Downgrade);
    assert_eq!(
        statuses(&a),
        vec![AlertStatus::Firing, AlertStatus::Resolved]
    );
    assert_eq!(a[0].starts_at, at(40.0));
    assert_eq!(a[0].evidence["drop_pct"], 71);
    assert_eq!(a[1].ends_at, Some(at(70.0)));
    assert!(
        of(&alerts, "up", AlertKind::Downgrade).is_empty(),
        "an upgrade is not a downgrade"
    );
}

#[test]
fn payment_failed_recovered_and_not_recovered() {
    let failed = |c: &str, ts, attempt| {
        billing(
            c,
            ts,
            EventKind::PaymentFailed {
                mrr: Some(4900),
                reason: Some("card_declined".into()),
                attempt: Some(attempt),
            },
        )
    };
    let evs = vec![
        started("ok", at(0.0), "pro", 4900),
        failed("ok", at(30.0), 1),
        failed("ok", at(33.0), 2),
        billing(
            "ok",
            at(35.0),
            EventKind::PaymentSucceeded { amount: Some(4900) },
        ),
        started("lost", at(0.0), "pro", 4900),
        failed("lost", at(30.0), 1),
        failed("lost", at(37.0), 2),
        failed("lost", at(44.5), 3),
        // Billing gives up after the fact: not counted again.
        billing(
            "lost",
            at(50.0),
            EventKind::SubscriptionCancelled {
                reason: None,
                cancel_kind: CancelKind::Involuntary,
            },
        ),
    ];
    let (e, alerts) = run(evs, at(60.0));
    let ok = of(&alerts, "ok", AlertKind::PaymentFailed);
    assert_eq!(
        statuses(&ok),
        vec![AlertStatus::Firing, AlertStatus::Resolved]
    );
    assert_eq!((ok[0].starts_at, ok[1].ends_at), (at(30.0), Some(at(35.0))));
    assert!(of(&alerts, "ok", AlertKind::Churned).is_empty());

    let lost = of(&alerts, "lost", AlertKind::PaymentFailed);
    assert_eq!(
        statuses(&lost),
        vec![AlertStatus::Firing, AlertStatus::Resolved]
    );
    assert_eq!(
        lost[1].ends_at,
        Some(at(44.0)),
        "dunning ends at first failure + 14 days"
    );
    let churned = of(&alerts, "lost", AlertKind::Churned);
    assert_eq!(
        statuses(&churned),
        vec![AlertStatus::Firing],
        "cancel after expiry is not a second churn"
    );
    assert_eq!(churned[0].starts_at, at(44.0));
    assert_eq!(churned[0].evidence["kind"], "involuntary");
    assert_eq!(churned[0].mrr_at_risk, Some(4900));
    assert_eq!(e.customer("lost").unwrap().row.health_score, 0);
}

#[test]
fn churned_fires_on_cancel_and_resolves_on_reactivation() {
    let evs = vec![
        started("c", at(0.0), "pro", 4900),
        billing(
            "c",
            at(20.0),
            EventKind::SubscriptionCancelled {
                reason: Some("too expensive".into()),
                cancel_kind: CancelKind::Voluntary,
            },
        ),
        started("c", at(50.0), "starter", 2900),
    ];
    let (_, alerts) = run(evs, at(60.0));
    let a = of(&alerts, "c", AlertKind::Churned);
    assert_eq!(
        statuses(&a),
        vec![AlertStatus::Firing, AlertStatus::Resolved]
    );
    assert_eq!(a[0].evidence["kind"], "voluntary");
    assert_eq!(a[1].ends_at, Some(at(50.0)));
}

#[test]
fn detractor_fires_on_bad_feedback_and_resolves_on_good() {
    let evs = vec![
        ev("n", at(1.0), EventKind::Nps { score: 9 }),
        ev("n", at(10.0), EventKind::Nps { score: 3 }),
        ev("n", at(40.0), EventKind::Nps { score: 9 }),
        ev("ces", at(10.0), EventKind::Ces { score: 7 }),
        ev("happy", at(10.0), EventKind::Csat { score: 5 }),
    ];
    let (_, alerts) = run(evs, at(200.0));
    let a = of(&alerts, "n", AlertKind::Detractor);
    assert_eq!(
        statuses(&a),
        vec![AlertStatus::Firing, AlertStatus::Resolved]
    );
    assert_eq!((a[0].starts_at, a[1].ends_at), (at(10.0), Some(at(40.0))));
    assert!(a[0].summary.contains("NPS 3"));
    let c = of(&alerts, "ces", AlertKind::Detractor);
    assert_eq!(
        statuses(&c),
        vec![AlertStatus::Firing, AlertStatus::Resolved],
        "ages out after 90 days"
    );
    assert_eq!(c[1].ends_at, Some(at(100.0)));
    assert!(of(&alerts, "happy", AlertKind::Detractor).is_empty());
}

#[test]
fn support_spike_fires_on_a_burst_or_an_urgent_ticket() {
    let ticket = |c: &str, ts, sev, id: &str, resolved| {
        ev(
            c,
            ts,
            EventKind::SupportTicket {
                severity: sev,
                ticket_id: Some(id.into()),
                resolved,
            },
        )
    };
    let mut evs = vec![
        ticket("s", at(1.0), Severity::Normal, "t0", false),
        ticket("s", at(30.0), Severity::Low, "t1", false),
    ];
    for i in 0..6 {
        evs.push(ticket(
            "s",
            at(60.0 + f64::from(i) * 0.5),
            Severity::High,
            &format!("b{i}"),
            false,
        ));
    }
    // A repeated ticket id is the same ticket.
    evs.push(ticket("s", at(61.0), Severity::High, "b0", false));
    evs.push(ticket("u", at(5.0), Severity::Urgent, "x", false));
    evs.push(ticket("u", at(6.0), Severity::Urgent, "x", true));
    let (_, alerts) = run(evs, at(100.0));
    let a = of(&alerts, "s", AlertKind::SupportSpike);
    assert_eq!(
        statuses(&a),
        vec![AlertStatus::Firing, AlertStatus::Resolved],
        "{a:#?}"
    );
    assert_eq!(
        a[0].starts_at,
        at(61.0),
        "third ticket of the burst crosses the floor of 3"
    );
    assert!(a[1].ends_at.unwrap() > at(63.0) && a[1].ends_at.unwrap() <= at(70.0));
    let u = of(&alerts, "u", AlertKind::SupportSpike);
    assert_eq!(
        statuses(&u),
        vec![AlertStatus::Firing, AlertStatus::Resolved]
    );
    assert_eq!((u[0].starts_at, u[1].ends_at), (at(5.0), Some(at(6.0))));
}

#[test]
fn oscillating_around_the_threshold_gives_at_most_one_pair() {
    let mut evs = peers(0..140, None);
    // Eight weeks at baseline 20/day, then eight weeks alternating 45% / 55% drops.
    evs.extend(daily("osc", 0..140, |d| match d {
        0..56 => 20,
        _ if (d / 7) % 2 == 0 => 11,
        _ => 9,
    }));
    let (_, alerts) = run(evs, at(140.0));
    let a = of(&alerts, "osc", AlertKind::EngagementDrop);
    assert!(a.len() <= 2, "flapping: {:?}", statuses(&a));
}

#[test]
fn disabled_alerts_and_plan_overrides() {
    let evs = vec![
        started("a", at(0.0), "pro", 9900),
        billing(
            "a",
            at(10.0),
            EventKind::PlanChanged {
                plan: "starter".into(),
                mrr: 2900,
                previous_plan: None,
                previous_mrr: None,
            },
        ),
        started("b", at(0.0), "enterprise", 99000),
        billing(
            "b",
            at(10.0),
            EventKind::PlanChanged {
                plan: "enterprise".into(),
                mrr: 90000,
                previous_plan: None,
                previous_mrr: None,
            },
        ),
    ];
    let cfg: RawConfig = toml::from_str(
        "[plans.enterprise.downgrade]\nfire = 0.2\n[alerts.detractor]\nenabled = false\n",
    )
    .unwrap();
    let (_, alerts) = run_with(Arc::new(cfg.validate().unwrap()), evs.clone(), at(20.0));
    assert_eq!(of(&alerts, "a", AlertKind::Downgrade).len(), 1);
    assert!(
        of(&alerts, "b", AlertKind::Downgrade).is_empty(),
        "a 9% cut is below enterprise's 20%"
    );
    let cfg: RawConfig = toml::from_str("[alerts.downgrade]\nenabled = false\n").unwrap();
    let (_, alerts) = run_with(Arc::new(cfg.validate().unwrap()), evs, at(20.0));
    assert!(alerts.is_empty());
}

#[test]
fn health_score_breakdown_sums_and_ranks_risk() {
    let mut evs = peers(0..100, None);
    evs.extend(daily("fading", 0..100, |d| if d < 75 { 15 } else { 1 }));
    evs.push(ev("fading", at(90.0), EventKind::Nps { score: 2 }));
    let (e, _) = run(evs, at(100.0));
    for c in e.customers() {
        let sum: u32 = c.breakdown.values().map(|v| u32::from(*v)).sum();
        assert_eq!(sum, 100 - u32::from(c.health_score), "{}", c.customer_id);
    }
    let fading = e
        .customers()
        .into_iter()
        .find(|c| &*c.customer_id == "fading")
        .unwrap();
    let peer = e
        .customers()
        .into_iter()
        .find(|c| &*c.customer_id == "peer-03")
        .unwrap();
    assert!(fading.health_score < 70, "{fading:?}");
    assert!(peer.health_score >= 90, "{peer:?}");
    assert_ne!(fading.risk, Risk::Low);
    assert!(fading.breakdown.contains_key("frequency") && fading.breakdown.contains_key("nps"));
}

fn row_of(e: &Engine, id: &str) -> crate::engine::CustomerRow {
    e.customers()
        .into_iter()
        .find(|c| &*c.customer_id == id)
        .unwrap_or_else(|| panic!("no customer {id}"))
}

#[test]
fn health_recency_falls_with_idle_time_against_the_own_rhythm_and_idle_for_10_gaps_is_not_low_risk()
{
    // Active every third day until day 60, then silent.
    let mut evs = peers(0..120, None);
    evs.extend(daily("every3", 0..61, |d| u32::from(d % 3 == 0) * 4));
    let mut recency = Vec::new();
    for day in [61, 63, 66, 70, 75, 80, 90] {
        let (e, _) = run(evs.clone(), at(f64::from(day)));
        let r = row_of(&e, "every3");
        recency.push(r.breakdown.get("recency").copied().unwrap_or(0));
        if day >= 90 {
            // 30 days idle: ten times its 3-day rhythm.
            assert_ne!(r.risk, Risk::Low, "{r:?}");
        }
    }
    assert!(
        recency.windows(2).all(|w| w[0] <= w[1]),
        "recency not monotone: {recency:?}"
    );
    assert_eq!(recency[0], 0, "a day after its last use: {recency:?}");
    assert_eq!(*recency.last().unwrap(), 31, "{recency:?}");
}

#[test]
fn one_time_customers_are_ranked_by_idle_time_and_a_dormant_one_is_never_low_risk() {
    // A base of repeat buyers (a purchase every 10-30 days) and one-time
    // buyers at different ages.
    let mut evs = peers(0..150, None);
    for p in 0..40 {
        let gap = 10 + p % 21;
        for d in (p % 7..150).step_by(gap as usize) {
            evs.push(usage(
                &format!("repeat-{p}"),
                at(d as f64) + 11 * HOUR_MS,
                1,
                None,
            ));
        }
    }
    for (id, day) in [
        ("once-5", 145.0),
        ("once-20", 130.0),
        ("once-60", 90.0),
        ("once-120", 30.0),
    ] {
        evs.push(usage(id, at(day), 1, None));
    }
    let (e, _) = run(evs, at(150.0));
    let scores: Vec<u8> = ["once-5", "once-20", "once-60", "once-120"]
        .iter()
        .map(|id| row_of(&e, id).health_score)
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] > w[1]),
        "not ranked by idle time: {scores:?}"
    );
    for id in ["once-60", "once-120"] {
        let r = row_of(&e, id);
        assert_eq!(r.lifecycle, Lifecycle::Dormant, "{r:?}");
        assert_ne!(r.risk, Risk::Low, "{r:?}");
    }
}

#[test]
fn health_sees_a_slow_slide_and_support_friction_that_raise_no_alert() {
    let mut evs = peers(0..100, None);
    // 30 a weekday until day 40, then a steady slide to 19 by day 100: no
    // week is far below the one before.
    let slide = |d: i64| {
        let level = if d < 40 {
            30.0
        } else {
            30.0 - 11.0 * (d - 40) as f64 / 60.0
        };
        if is_weekend(d) {
            0
        } else {
            level.round() as u32
        }
    };
    evs.extend(daily("sliding", 0..100, slide));
    evs.extend(daily(
        "steady",
        0..100,
        |d| if is_weekend(d) { 0 } else { 30 },
    ));
    // Friction: a ticket every 9 days, never three in a week, lukewarm answers.
    evs.extend(daily("struggling", 0..100, |d| {
        if is_weekend(d) { 0 } else { 30 }
    }));
    for (i, day) in [73.0, 82.0, 91.0].into_iter().enumerate() {
        let kind = EventKind::SupportTicket {
            severity: Severity::Normal,
            ticket_id: Some(format!("f{i}").into()),
            resolved: false,
        };
        evs.push(ev("struggling", at(day), kind));
        let resolved = EventKind::SupportTicket {
            severity: Severity::Normal,
            ticket_id: Some(format!("f{i}").into()),
            resolved: true,
        };
        evs.push(ev("struggling", at(day + 2.0), resolved));
    }
    evs.push(ev("struggling", at(93.5), EventKind::Csat { score: 3 }));
    let (e, alerts) = run(evs, at(100.0));
    for c in ["sliding", "steady", "struggling"] {
        assert!(
            alerts.iter().all(|a| &*a.customer_id != c),
            "{c}: {alerts:#?}"
        );
    }
    let row = |id: &str| {
        e.customers()
            .into_iter()
            .find(|c| &*c.customer_id == id)
            .unwrap()
    };
    let (sliding, steady, struggling) = (row("sliding"), row("steady"), row("struggling"));
    assert!(
        sliding.breakdown.get("decline").is_some_and(|p| *p >= 15),
        "{sliding:?}"
    );
    assert!(!steady.breakdown.contains_key("decline"), "{steady:?}");
    assert!(
        struggling.breakdown.get("support").is_some_and(|p| *p >= 5),
        "{struggling:?}"
    );
    assert!(struggling.breakdown.contains_key("csat"), "{struggling:?}");
    assert!(steady.health_score > sliding.health_score.max(struggling.health_score));
}

#[test]
fn late_within_lateness_gives_identical_alerts() {
    let mut evs = peers(0..100, None);
    evs.extend(daily("x", 0..100, |d| if d < 70 { 10 } else { 0 }));
    evs.sort_by_key(|e| e.ts);
    let (_, sorted) = run(evs.clone(), at(100.0));
    // Reverse every block of events that fall within one hour: still within 2h lateness.
    let mut shuffled = Vec::new();
    let mut block: Vec<Event> = Vec::new();
    for e in evs {
        if block.first().is_some_and(|f| e.ts - f.ts > HOUR_MS) {
            shuffled.extend(block.drain(..).rev());
        }
        block.push(e);
    }
    shuffled.extend(block.into_iter().rev());
    let mut eng = Engine::new(Arc::new(Config::default()));
    eng.set_until(Some(at(100.0)));
    for (i, e) in shuffled.into_iter().enumerate() {
        assert_ne!(eng.ingest(e, i as u64), crate::engine::Disposition::Late);
    }
    eng.finish(Some(at(100.0)));
    let json = |v: &[AlertEvent]| v.iter().map(AlertEvent::to_json).collect::<Vec<_>>();
    assert_eq!(json(&sorted), json(&eng.take_alerts()));
    assert!(!sorted.is_empty());
}

/// The README's per-alert defaults table is the user's reference: it must
/// say exactly what `default_params` does.
#[test]
fn readme_alert_defaults_match_the_code() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("| alert | severity | fire | resolve | min_baseline | significance | window |")
        .expect("README has the per-alert defaults table");
    let num = |cell: &str| -> f64 {
        if cell == "-" {
            0.0
        } else {
            cell.trim_end_matches('d').parse().expect("a number")
        }
    };
    let mut seen = Vec::new();
    for line in readme[start..].lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 7, "row {line:?}");
        let name = cells[0].trim_matches('`');
        let kind = AlertKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .unwrap_or_else(|| panic!("unknown alert {name:?} in README"));
        let p = kind.default_params();
        assert_eq!(cells[1], p.severity.as_str(), "{name} severity");
        assert_eq!(num(cells[2]), p.fire, "{name} fire");
        assert_eq!(num(cells[3]), p.resolve, "{name} resolve");
        assert_eq!(num(cells[4]), p.min_baseline, "{name} min_baseline");
        assert_eq!(num(cells[5]), p.significance, "{name} significance");
        assert_eq!(num(cells[6]) as i64 * DAY_MS, p.window, "{name} window");
        seen.push(kind);
    }
    assert_eq!(seen, AlertKind::ALL, "one row per alert, in order");
}

/// Metric labels (`as_str`) and every JSON output (serde) spell the
/// enums the same way, and `ALL` lists each value once.
#[test]
fn enum_spellings_are_their_serialised_names() {
    fn check<T: serde::Serialize + Copy + Eq + std::fmt::Debug>(
        all: &[T],
        name: fn(T) -> &'static str,
    ) {
        for (i, v) in all.iter().enumerate() {
            assert_eq!(serde_json::to_value(v).unwrap(), name(*v), "{v:?}");
            assert!(!all[..i].contains(v), "{v:?} twice");
        }
    }
    check(&Risk::ALL, Risk::as_str);
    check(&Lifecycle::ALL, Lifecycle::as_str);
    check(
        &crate::catalogue::AlertSeverity::ALL,
        crate::catalogue::AlertSeverity::as_str,
    );
    for s in crate::catalogue::AlertSeverity::ALL {
        assert_eq!(
            crate::catalogue::AlertSeverity::from_name(s.as_str()),
            Some(s)
        );
    }
}
