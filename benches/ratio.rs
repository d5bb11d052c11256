//! Backtest throughput as a ratio to a decode-only pass over the same bytes,
//! both measured in this run: `cargo bench --bench ratio [-- FILE]`.
//! Without FILE it measures two workloads made by the project's generator:
//! the standard profile (seed 42, 2000 customers, 120 days: about 1.3 M
//! events; target >= 0.6) and a sparse one (`--profile light`, 200,000
//! customers over 28 days, about 9 events each, most of them quiet on any
//! day; target >= 0.5), where the cost must follow the events rather than
//! customers x days. Outside `cargo bench` (e.g. `cargo test --all-targets`
//! or nextest's `--list`) it does nothing.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Instant;

use churnwatch::config::Config;
use churnwatch::event;

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..n {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    (best, last.expect("n > 0"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return; // built and run as a test: nothing to measure
    }
    let pass = args
        .iter()
        .position(|a| a == "--pass")
        .and_then(|i| args.get(i + 1))
        .cloned();
    match args
        .iter()
        .find(|a| !a.starts_with("--") && Some(*a) != pass.as_ref())
    {
        Some(p) if pass.is_some() => one_pass(pass.as_deref().unwrap_or(""), p),
        Some(p) => measure(p, &std::fs::read(p).expect("read input file"), 3, None),
        None => {
            use churnwatch::generate::{GenerateArgs, Profile};
            let standard = GenerateArgs::default();
            let sparse = GenerateArgs {
                customers: 200_000,
                profile: Profile::Light,
                ..GenerateArgs::default()
            };
            for (name, args, rounds, target) in [
                (
                    "standard (seed 42, 2000 customers, 120 days)",
                    standard,
                    3,
                    0.6,
                ),
                ("sparse (light, 200,000 customers, 28 days)", sparse, 2, 0.5),
            ] {
                let opts = args.options().expect("generator options");
                let g = churnwatch::generate::generate_to_vec(&opts);
                let mut data = Vec::new();
                for l in g.lines {
                    data.extend_from_slice(l.as_bytes());
                    data.push(b'\n');
                }
                measure(name, &data, rounds, Some(target));
            }
        }
    }
}

/// One pass over FILE, for `scripts/bench-cachegrind.sh`: `read` (the file
/// into memory only), `decode`, or `full` (the backtest, decode included).
fn one_pass(pass: &str, path: &str) {
    let data = std::fs::read(path).expect("read input file");
    let cfg = Arc::new(Config::default());
    let lines = || data.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let n = match pass {
        "read" => lines().count() as u64,
        "decode" => lines()
            .filter(|l| event::decode(l, &cfg.decode).is_ok())
            .count() as u64,
        "full" => {
            let (engine, _) = churnwatch::backtest::replay_quietly(cfg.clone(), Cursor::new(&data))
                .expect("replay");
            engine.stats().applied
        }
        other => panic!("--pass {other}: read, decode or full"),
    };
    println!("{pass} {n}");
}

fn measure(name: &str, data: &[u8], rounds: usize, target: Option<f64>) {
    let cfg = Arc::new(Config::default());
    let lines = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    let (decode_s, ok) = best_of(rounds, || {
        let mut ok = 0u64;
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if event::decode(line, &cfg.decode).is_ok() {
                ok += 1;
            }
        }
        ok
    });
    let (full_s, alerts) = best_of(rounds, || {
        let mut alerts = 0u64;
        churnwatch::backtest::replay(
            cfg.clone(),
            Cursor::new(data),
            None,
            |_| {
                alerts += 1;
                Ok(())
            },
            |_, _, _| Ok(()),
            |_| {},
        )
        .expect("replay");
        alerts
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{name}");
    println!(
        "  input: {lines} events ({ok} valid), {:.1} MB, {cores} cores available, 1 used",
        data.len() as f64 / 1e6
    );
    println!(
        "  decode only:        {:>10.0} events/s",
        lines as f64 / decode_s
    );
    println!(
        "  backtest (full):    {:>10.0} events/s ({alerts} alert transitions)",
        lines as f64 / full_s
    );
    let target = target.map_or(String::new(), |t| format!(" (target >= {t})"));
    println!("  ratio full/decode:  {:>10.3}{target}", decode_s / full_s);
}
