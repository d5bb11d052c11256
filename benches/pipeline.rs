//! End-to-end pipeline throughput through a real broker (Tansu), as a ratio
//! to a bare rdkafka consume + decode of the same topics measured in the
//! same run, and memory per customer at 1M customers.
//!
//! `scripts/bench-pipeline.sh [--events N] [--rounds N] [--memory-customers N] [--skip-memory]`
//! (or `cargo bench --bench pipeline -- ...`; needs `tansu`, see `TANSU_BIN`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use churnwatch::app;
use churnwatch::config::{Config, KafkaConfig, RawConfig};
use churnwatch::event::{self, HOUR_MS, format_ts};
use churnwatch::generate::{GenerateArgs, GenerateOptions, Profile, generate};
use churnwatch::kafka::loadgen::{self, LoadCounters, Pace};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 4;
const INPUTS: [&str; 3] = ["product.usage", "billing.events", "customer.feedback"];

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// CPU seconds (user + system) used by a process so far, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // utime and stime are fields 14 and 15 of the whole line (11, 12 here).
    f.get(10)
        .zip(f.get(11))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

/// CPU seconds per thread name of this process (threads of one name summed).
fn thread_cpu() -> Threads {
    let mut out = std::collections::BTreeMap::new();
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let tid = t.file_name().to_string_lossy().to_string();
        let comm =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
        *out.entry(comm.trim().to_string()).or_insert(0.0) +=
            cpu_seconds(&format!("self/task/{tid}"));
    }
    out
}

/// Busiest threads between two [`thread_cpu`] readings, as cores over `secs`.
fn busiest(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    secs: f64,
) -> String {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(k, a)| (k.clone(), (a - before.get(k).unwrap_or(&0.0)) / secs))
        .filter(|(_, c)| *c >= 0.02)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.iter()
        .map(|(k, c)| format!("{k} {c:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `/proc/self/status` size in bytes (`VmRSS:`, `VmHWM:`).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn vm_rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

fn config(brokers: &str, group: &str) -> Config {
    let text = common::config_toml(brokers, "127.0.0.1:0", "").replace(
        "group_id = \"churnwatch-test\"",
        &format!("group_id = \"{group}\""),
    );
    let extra = std::env::var("BENCH_KAFKA_PROPERTIES").unwrap_or_default();
    let text = format!("{text}\n[kafka.properties]\n{}\n", extra.replace(';', "\n"));
    let raw: RawConfig = toml::from_str(&text).expect("bench config parses");
    raw.validate().expect("bench config is valid")
}

/// Sum of every child of the given counter vectors. Collects only these
/// (not the whole registry: a full `gather()` every few ms would take a core
/// from the service it measures).
fn counter_sum(vecs: &[&prometheus::IntCounterVec]) -> u64 {
    use prometheus::core::Collector;
    vecs.iter()
        .flat_map(|v| v.collect())
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().value() as u64)
                .collect::<Vec<_>>()
        })
        .sum()
}

/// (a) A bare group consumer: poll + `event::decode` of every message.
/// Also returns the end offset of every input topic-partition it read
/// (Tansu's ListOffsets answers are not reliable enough to use instead).
type Threads = std::collections::BTreeMap<String, f64>;

/// What [`bare_consume`] measured.
struct BareRun {
    /// Seconds including the group join, and from the first message.
    all_s: f64,
    steady_s: f64,
    decoded: u64,
    /// (topic, partition, end offset) of every input topic-partition.
    ends: Vec<(String, i32, i64)>,
    threads: Threads,
}

fn bare_consume(k: &KafkaConfig, group: &str, total: u64) -> BareRun {
    let mut c = churnwatch::kafka::consumer_config(k);
    c.set("group.id", group).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().expect("bare consumer");
    consumer.subscribe(&INPUTS).expect("subscribe");
    let decode_cfg = Config::default().decode;
    let started = Instant::now();
    let mut first = None;
    let (mut n, mut ok) = (0u64, 0u64);
    let mut ends: std::collections::BTreeMap<(String, i32), i64> = Default::default();
    while n < total {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                let end = ends
                    .entry((m.topic().to_string(), m.partition()))
                    .or_default();
                *end = (*end).max(m.offset() + 1);
                if event::decode(m.payload().unwrap_or(&[]), &decode_cfg).is_ok() {
                    ok += 1;
                }
            }
            Some(Err(e)) => eprintln!("bare consumer error: {e}"),
            None => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "bare consumer stuck at {n}/{total}"
        );
    }
    let all = started.elapsed().as_secs_f64();
    let steady = first.map_or(all, |f| f.elapsed().as_secs_f64());
    let ends = ends.into_iter().map(|((t, p), o)| (t, p, o)).collect();
    // Before the consumer (and its threads) go.
    let threads = thread_cpu();
    BareRun {
        all_s: all,
        steady_s: steady,
        decoded: ok,
        ends,
        threads,
    }
}

struct ServiceRun {
    consumed_s: f64,
    steady_s: f64,
    committed_s: f64,
    alerts: u64,
    threads: Threads,
}

/// (b) The service: `app::start`, timed until every input is consumed and
/// until the group's committed offsets cover everything.
async fn service_consume(
    brokers: &str,
    group: &str,
    total: u64,
    ends: &[(String, i32, i64)],
) -> ServiceRun {
    let cfg = config(brokers, group);
    let k = cfg.kafka.clone();
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let running = app::start(cfg, cancel.clone())
        .await
        .expect("service starts");
    let metrics = running.metrics();
    let service = tokio::spawn(running.wait());
    let mut first = None;
    loop {
        let n = counter_sum(&[&metrics.events_consumed, &metrics.events_rejected]);
        if n > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if n >= total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "service stuck at {n}/{total}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consumed_s = started.elapsed().as_secs_f64();
    let steady_s = first.map_or(consumed_s, |f| f.elapsed().as_secs_f64());
    // Committed offsets: usage partitions end with the sentinel, which stays
    // buffered (allowed lateness), so they are complete at end - 1.
    let reader: BaseConsumer = {
        let mut c = churnwatch::kafka::client_config(&k);
        c.set("group.id", group);
        c.create().expect("offset reader")
    };
    let mut tpl = TopicPartitionList::new();
    for (t, p, _) in ends {
        tpl.add_partition(t, *p);
    }
    loop {
        let done = tokio::task::block_in_place(|| {
            reader.committed_offsets(tpl.clone(), Duration::from_secs(5))
        })
        .map(|c| {
            ends.iter().all(|(t, p, hi)| {
                let want = if t == INPUTS[0] { hi - 1 } else { *hi };
                matches!(
                    c.find_partition(t, *p).map(|e| e.offset()),
                    Some(Offset::Offset(o)) if o >= want
                )
            })
        })
        .unwrap_or(false);
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "offsets not committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let committed_s = started.elapsed().as_secs_f64();
    let alerts = counter_sum(&[&metrics.alerts_produced]);
    let threads = thread_cpu();
    cancel.cancel();
    service
        .await
        .expect("join service")
        .expect("service stops cleanly");
    ServiceRun {
        consumed_s,
        steady_s,
        committed_s,
        alerts,
        threads,
    }
}

/// One usage event per partition, 3 h after everything else, so the
/// watermark passes every generated event and the engine applies it all.
async fn produce_sentinels(k: &KafkaConfig, after: i64) {
    let producer: FutureProducer = churnwatch::kafka::client_config(k)
        .create()
        .expect("sentinel producer");
    for p in 0..PARTITIONS {
        let id = format!("bench-sentinel-{p}");
        let line = format!(
            r#"{{"type":"usage","customer_id":"{id}","action":"login","ts":"{}"}}"#,
            format_ts(after + 3 * HOUR_MS)
        );
        producer
            .send(
                FutureRecord::to(INPUTS[0])
                    .partition(p)
                    .key(&id)
                    .payload(&line),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("sentinel produced");
    }
}

fn memory_child(path: &str) {
    let cfg = Arc::new(Config::default());
    let before = vm_rss_bytes();
    let file = std::fs::File::open(path).expect("open events file");
    let started = Instant::now();
    let (engine, _summary) = churnwatch::backtest::replay_quietly(cfg, file).expect("replay");
    let after = vm_rss_bytes();
    let n = engine.customer_count().max(1);
    for (part, bytes, allocs) in engine.memory_breakdown() {
        eprintln!(
            "  {part:<36} {:>7.1} B/customer {:>6.2} allocations/customer",
            bytes as f64 / n as f64,
            allocs as f64 / n as f64
        );
    }
    println!(
        "{} {} {} {} {:.1} {}",
        before,
        after,
        engine.customer_count(),
        engine.state_bytes(),
        started.elapsed().as_secs_f64(),
        status_bytes("VmHWM:")
    );
}

fn memory(customers: u32) {
    let args = GenerateArgs {
        customers,
        profile: Profile::Light,
        ..GenerateArgs::default()
    };
    let opts = args.options().expect("light options");
    let path = std::env::temp_dir().join(format!("churnwatch-bench-light-{customers}.jsonl"));
    let t = Instant::now();
    {
        let mut w =
            BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).expect("create"));
        let g = generate(&opts, &mut |l| {
            let _ = w.write_all(l.as_bytes());
            let _ = w.write_all(b"\n");
        });
        w.flush().expect("flush events file");
        println!(
            "memory: generated {} events for {} customers over {} days ({:.1} s)",
            g.stats.lines,
            customers,
            opts.days,
            t.elapsed().as_secs_f64()
        );
    }
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .args(["--memory-child", &path.display().to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run memory child");
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let [before, after, n, state, secs, peak] = f[..] else {
        panic!(
            "memory child failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    println!(
        "memory (engine via the backtest path, one process): VmRSS {:.0} MB before, {:.0} MB after {} customers ({:.1} s); {:.0} bytes/customer RSS, {:.0} bytes/customer by state_bytes(); peak (VmHWM, during a daily sweep) {:.0} bytes/customer",
        before / 1e6,
        after / 1e6,
        n,
        secs,
        (after - before) / n,
        state / n,
        (peak - before) / n
    );
}

fn main() {
    if let Some(path) = std::env::args()
        .skip_while(|a| a != "--memory-child")
        .nth(1)
    {
        memory_child(&path);
        return;
    }
    // `cargo test --all-targets` runs bench binaries without `--bench`: a
    // smoke run there would start a broker and take minutes, so skip.
    if !flag("--bench") && !flag("--events") {
        // Silent: nextest lists bench binaries and parses their output.
        eprintln!(
            "pipeline benchmark: run scripts/bench-pipeline.sh (or cargo bench --bench pipeline)"
        );
        return;
    }
    common::init_tracing();
    let events: u64 = arg("--events", 3_000_000);
    let mem_customers: u32 = arg("--memory-customers", 1_000_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    if !flag("--skip-pipeline") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let broker = common::TestBroker::start();
        rt.block_on(broker.create_default_topics(PARTITIONS));
        let cfg = config(&broker.brokers, "bench-unused");
        let k = cfg.kafka.clone();

        // ~730 events per customer over the default 120 days.
        let customers = (events / 730).max(1) as u32;
        let opts = GenerateOptions {
            customers,
            ..GenerateOptions::default()
        };
        let counters = LoadCounters::new();
        let report = loadgen::produce_generated(
            &k,
            &opts,
            Pace::Unlimited,
            &CancellationToken::new(),
            counters.clone(),
        )
        .expect("produce generated traffic");
        let produced: u64 = report.produced.values().sum();
        rt.block_on(produce_sentinels(
            &k,
            counters.max_ts().unwrap_or(opts.end()),
        ));
        let total = produced + PARTITIONS as u64;
        println!(
            "produced {produced} generated events ({customers} customers) + {PARTITIONS} sentinels to Tansu in {:.1} s ({:.0} events/s); {cores} cores",
            report.seconds,
            produced as f64 / report.seconds
        );
        let broker_pid = broker.pid().to_string();
        let cpu = || (cpu_seconds("self"), cpu_seconds(&broker_pid));
        let rounds: usize = arg("--rounds", 5).max(1);
        let mut ratios = Vec::new();
        for round in 0..rounds {
            let cpu0 = cpu();
            let threads0 = thread_cpu();
            let BareRun {
                all_s: bare_all,
                steady_s: bare_steady,
                decoded: ok,
                ends,
                threads: threads1,
            } = bare_consume(&k, &format!("bench-bare-{round}"), total);
            let cpu1 = cpu();
            let threads1b = thread_cpu();
            println!(
                "(a) bare BaseConsumer + decode: {:>9.0} events/s ({:.2} s incl. group join, first message after {:.2} s; {:>9.0} events/s from first message), {ok} decoded",
                total as f64 / bare_all,
                bare_all,
                bare_all - bare_steady,
                total as f64 / bare_steady
            );
            println!(
                "    cpu: {:.2} cores in this process, {:.2} in the broker",
                (cpu1.0 - cpu0.0) / bare_all,
                (cpu1.1 - cpu0.1) / bare_all
            );
            println!("    threads: {}", busiest(&threads0, &threads1, bare_all));
            let s = rt.block_on(service_consume(
                &broker.brokers,
                &format!("bench-service-{round}"),
                total,
                &ends,
            ));
            let cpu2 = cpu();
            println!(
                "(b) service, all consumed+applied: {:>9.0} events/s ({:.2} s incl. start and group join, first message after {:.2} s; {:>9.0} events/s from first message)",
                total as f64 / s.consumed_s,
                s.consumed_s,
                s.consumed_s - s.steady_s,
                total as f64 / s.steady_s
            );
            println!(
                "(b) service, all offsets committed: {:>9.0} events/s ({:.2} s; alerts acked {})",
                total as f64 / s.committed_s,
                s.committed_s,
                s.alerts
            );
            println!(
                "    cpu: {:.2} cores in this process, {:.2} in the broker (start to all committed)",
                (cpu2.0 - cpu1.0) / s.committed_s,
                (cpu2.1 - cpu1.1) / s.committed_s
            );
            println!(
                "    threads: {}",
                busiest(&threads1b, &s.threads, s.committed_s)
            );
            let r = [
                bare_all / s.consumed_s,
                bare_all / s.committed_s,
                bare_steady / s.steady_s,
            ];
            println!(
                "ratio service/bare, round {}: {:.3} consumed, {:.3} committed, {:.3} steady-state",
                round + 1,
                r[0],
                r[1],
                r[2]
            );
            ratios.push(r);
        }
        // Two cores shared by the broker, librdkafka and both sides: one
        // round varies by about ±0.1, so the median of the rounds is the figure.
        let median = |i: usize| {
            let mut v: Vec<f64> = ratios.iter().map(|r| r[i]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "ratio service/bare, median of {rounds} rounds: {:.3} consumed, {:.3} committed, {:.3} steady-state (target >= 0.8)",
            median(0),
            median(1),
            median(2)
        );
    }
    if !flag("--skip-memory") {
        memory(mem_customers);
    }
}
