//! The cost of a business-metrics refresh as history grows: the rolling
//! window replayed from the whole fact log (`Ledger::report`, what every
//! refresh did before) against the window kept as facts arrive
//! (`Ledger::rolling`), on a ledger of 100k subscribers and a year of facts.
//! Prints the ratio of the two, measured in the same run.

use std::hint::black_box;
use std::time::Instant;

use churnwatch::business::{Fact, Ledger};
use churnwatch::event::{CancelKind, DAY_MS, Ts, parse_ts};
use criterion::{Criterion, criterion_group, criterion_main};

const CUSTOMERS: u32 = 100_000;
const WINDOW: Ts = 30 * DAY_MS;

/// A deterministic stream of facts: about `per_day` a day from `t0`.
struct Facts {
    x: u64,
    ts: Ts,
    step: Ts,
}

impl Facts {
    fn new(t0: Ts, per_day: i64) -> Self {
        Facts {
            x: 0x9e37_79b9_7f4a_7c15,
            ts: t0,
            step: DAY_MS / per_day,
        }
    }

    fn next(&mut self) -> (Ts, u32, Fact) {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.ts += self.step;
        let c = (self.x % u64::from(CUSTOMERS)) as u32;
        let plan = ["basic", "pro", "team"][(self.x >> 20) as usize % 3];
        let mrr = [1_000, 5_000, 20_000][(self.x >> 24) as usize % 3];
        let fact = match (self.x >> 32) % 10 {
            0..=3 => Fact::Joined {
                plan: plan.into(),
                mrr,
                reactivation: false,
            },
            4..=5 => Fact::MrrChanged {
                plan: plan.into(),
                old_mrr: 0,
                new_mrr: mrr,
            },
            6 => Fact::Churned {
                kind: CancelKind::Voluntary,
                mrr,
            },
            7 => Fact::DunningOpened,
            8 => Fact::Nps {
                score: ((self.x >> 40) % 11) as u8,
            },
            _ => Fact::Segment {
                segment: ["smb", "mid", "enterprise"][(self.x >> 44) as usize % 3].into(),
            },
        };
        (self.ts, c, fact)
    }
}

fn bench(c: &mut Criterion) {
    // `cargo test` and test listing run this too: a small ledger and no
    // output but criterion's there.
    let benching = std::env::args().any(|a| a == "--bench");
    let days = if benching { 365 } else { 2 };
    let t0 = parse_ts("2026-01-01T00:00:00Z").expect("valid");
    let mut facts = Facts::new(t0, 3_000);
    let mut ledger = Ledger::new();
    for _ in 0..days * 3_000 {
        let (ts, cu, f) = facts.next();
        ledger.record(ts, cu, f);
    }
    let stored = ledger.len();
    let mut g = c.benchmark_group("business_refresh");
    g.sample_size(10);
    g.bench_function("replayed_from_the_log", |b| {
        b.iter(|| {
            let now = facts.ts;
            black_box(ledger.report(now - WINDOW, now))
        })
    });
    // A refresh after about a minute of facts (a refresh runs every few seconds).
    g.bench_function("kept_as_facts_arrive", |b| {
        b.iter(|| {
            for _ in 0..3 {
                let (ts, cu, f) = facts.next();
                ledger.record(ts, cu, f);
            }
            let now = facts.ts;
            black_box(ledger.rolling(WINDOW, now))
        })
    });
    g.finish();
    if !benching {
        return;
    }

    // The ratio, measured here in one run.
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        let now = facts.ts;
        black_box(ledger.report(now - WINDOW, now));
    }
    let replayed = t.elapsed().as_secs_f64() / f64::from(reps);
    let t = Instant::now();
    for _ in 0..reps {
        let (ts, cu, f) = facts.next();
        ledger.record(ts, cu, f);
        let now = facts.ts;
        black_box(ledger.rolling(WINDOW, now));
    }
    let kept = t.elapsed().as_secs_f64() / f64::from(reps);
    println!(
        "business refresh over a year of facts ({stored} stored at the start): replayed {:.3} ms, kept {:.4} ms: {:.0}x faster",
        replayed * 1e3,
        kept * 1e3,
        replayed / kept
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
