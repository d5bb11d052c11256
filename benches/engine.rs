//! Criterion benchmarks of the hot path: decoding one event, and decoding
//! plus applying a day of traffic through the engine.

use std::hint::black_box;
use std::sync::Arc;

use churnwatch::config::Config;
use churnwatch::engine::Engine;
use churnwatch::event::{self, DAY_MS, format_ts, parse_ts};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Deterministic traffic: `customers` customers, `per_day` events each, `days` days, in time order.
fn traffic(customers: u32, per_day: u32, days: i64) -> Vec<String> {
    let t0 = parse_ts("2026-01-05T00:00:00Z").expect("valid");
    let mut out = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for d in 0..days {
        for slot in 0..per_day {
            for c in 0..customers {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let ts = t0
                    + d * DAY_MS
                    + i64::from(slot) * (DAY_MS / i64::from(per_day))
                    + i64::from(c % 1000);
                out.push(format!(
                    r#"{{"type":"usage","customer_id":"c-{c:06}","user_id":"u-{}","action":"report_exported","feature":"reports","quantity":1,"ts":"{}","event_id":"e-{d}-{slot}-{c}"}}"#,
                    x % 8,
                    format_ts(ts)
                ));
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let cfg = Arc::new(Config::default());
    let lines = traffic(2000, 10, 20);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(10);
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(event::decode(l.as_bytes(), &cfg.decode).is_ok());
            }
        })
    });
    g.bench_function("decode_and_engine", |b| {
        b.iter(|| {
            let mut e = Engine::new(cfg.clone());
            for (i, l) in lines.iter().enumerate() {
                if let Ok(ev) = event::decode(l.as_bytes(), &cfg.decode) {
                    e.ingest(ev, i as u64);
                }
            }
            e.finish(None);
            black_box(e.take_alerts().len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
