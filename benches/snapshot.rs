//! Snapshot size and speed at scale: `cargo bench --bench snapshot [-- CUSTOMERS]`.
//! Replays the generator's light profile (default 1,000,000 customers over
//! 28 days, about 9 events each), then writes the engine's snapshot to a
//! file and restores it, printing bytes per customer and customers per
//! second each way (target >= 1M/s). Outside `cargo bench` it does nothing.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Instant;

use churnwatch::config::Config;
use churnwatch::engine::Engine;
use churnwatch::generate::{GenerateArgs, Profile, generate_to_vec};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let customers = args
        .iter()
        .find_map(|a| a.parse::<u32>().ok())
        .unwrap_or(1_000_000);
    let opts = GenerateArgs {
        customers,
        profile: Profile::Light,
        ..GenerateArgs::default()
    }
    .options()
    .expect("generator options");
    let mut data = Vec::new();
    for l in generate_to_vec(&opts).lines {
        data.extend_from_slice(l.as_bytes());
        data.push(b'\n');
    }
    let cfg = Arc::new(Config::default());
    let (mut engine, _) =
        churnwatch::backtest::replay_quietly(cfg.clone(), Cursor::new(&data)).expect("replay");
    drop(data);
    engine.take_alerts();
    let n = engine.customer_count();
    let path = std::env::temp_dir().join(format!("churnwatch-bench-{}.snap", std::process::id()));

    // Encoding alone, into memory, then encoding while a second thread
    // writes the file (what a caller does).
    let t = Instant::now();
    let bytes = engine.snapshot_bytes().expect("snapshot");
    let encode_s = t.elapsed().as_secs_f64();
    drop(bytes);
    let t = Instant::now();
    let mut file = std::fs::File::create(&path).expect("create snapshot file");
    let size = engine.write_snapshot(&mut file).expect("write snapshot") as usize;
    drop(file);
    let write_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let read = std::fs::read(&path).expect("read snapshot");
    let back = Engine::restore(cfg, &read).expect("restore");
    let read_s = t.elapsed().as_secs_f64();
    assert_eq!(back.customer_count(), n);
    let _ = std::fs::remove_file(&path);

    println!("snapshot of {n} customers (light profile, 28 days)");
    println!(
        "  size:  {:.1} MB, {:.0} bytes/customer (engine's own count: {:.0})",
        size as f64 / 1e6,
        size as f64 / n as f64,
        engine.state_bytes() as f64 / n as f64
    );
    println!(
        "  write: {write_s:.2} s ({:.2} M customers/s; target >= 1), encoding while a thread writes the file; encoding alone into memory {encode_s:.2} s ({:.2} M customers/s)",
        n as f64 / write_s / 1e6,
        n as f64 / encode_s / 1e6
    );
    println!(
        "  read:  {read_s:.2} s ({:.2} M customers/s; file read + decode + rebuild; target >= 1)",
        n as f64 / read_s / 1e6
    );

    // The read view the service publishes (every customer scored), whole
    // and as the consume loop builds it: one slice of 50,000 per refresh.
    let t = Instant::now();
    let view = engine.read_view();
    let whole_s = t.elapsed().as_secs_f64();
    let mut b = churnwatch::engine::ViewBuilder::default();
    let t = Instant::now();
    let mut slices = 0u32;
    while engine.build_view(&mut b, 50_000).is_none() {
        slices += 1;
    }
    let sliced_s = t.elapsed().as_secs_f64();
    println!(
        "read view of {n} customers: {whole_s:.2} s in one pass ({:.2} us/customer, {} at risk kept); built in {} slices of 50,000: {:.0} ms a slice",
        whole_s / n as f64 * 1e6,
        view.at_risk.len(),
        slices + 1,
        sliced_s / f64::from(slices + 1) * 1e3
    );
}
