//! `churnwatch demo`: the whole pipeline on one machine with nothing
//! installed. Starts an in-process Kafka-protocol broker (librdkafka's mock
//! cluster) unless `--brokers` names a real one, creates the five topics,
//! plays the seeded generator as live traffic in accelerated event time
//! ([`crate::kafka::loadgen`]), runs the real service ([`crate::app`])
//! against it and prints a live summary until Ctrl-C.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

use crate::app::{self, AppError};
use crate::config::{Config, ConfigErrors, RawConfig, format_duration};
use crate::engine::Lifecycle;
use crate::event::{DAY_MS, Ts, format_ts};
use crate::generate::{GenerateArgs, GenerateError};
use crate::kafka::admin::{self, TopicError};
use crate::kafka::loadgen::{self, LoadCounters, LoadError, Pace};
use crate::metrics::{self, Metrics};
use crate::shared::SharedState;
use crate::signals::health::Risk;

/// Default `--speed`: 12 simulated hours per second, so the first alerts
/// show within seconds and a 120-day period plays in about 4 minutes.
pub const DEFAULT_SPEED: f64 = 43_200.0;

/// Command-line arguments of `churnwatch demo`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Time: the generator's events carry event time (from 2026-01-05). The first \
--history-days are produced at once, then the accelerated clock plays the rest \
at --speed simulated seconds per wall-clock second (43200 = 12 h per second: \
alerts show within seconds, the 120-day period lasts about 4 minutes). The \
engine applies an event once the watermark (highest ts minus allowed_lateness) \
passes it, so the demo caps allowed_lateness at 2 s of wall time at the chosen \
speed (2h at the default speed; 2m at --speed 60), and sets \
kafka.idle_timeout=1s so a quiet partition's clock moves after one second \
instead of 30. A --config file, CHURNWATCH_* variables and flags override \
these demo defaults.")]
pub struct DemoArgs {
    /// Number of simulated customers.
    #[arg(long, default_value_t = 500)]
    pub customers: u32,
    /// Generator seed; the same seed gives the same traffic and alerts.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Simulated seconds per wall-clock second (3600 = one hour per second).
    #[arg(long, default_value_t = DEFAULT_SPEED)]
    pub speed: f64,
    /// Days of traffic to simulate.
    #[arg(long, default_value_t = 120)]
    pub days: u32,
    /// Days produced at once before the accelerated clock starts: history for
    /// the 8-week baselines, so the first churn stories play out within seconds.
    #[arg(long, default_value_t = 60)]
    pub history_days: u32,
    /// HTTP listen address for /metrics and the API [default: 127.0.0.1:9464].
    #[arg(long)]
    pub listen: Option<String>,
    /// Use this Kafka (`host:port`) instead of the embedded broker; missing topics are created.
    #[arg(long)]
    pub brokers: Option<String>,
    /// TOML config file (same keys as `churnwatch run`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Partitions of each topic created by the demo.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Seconds between summary lines.
    #[arg(long, default_value_t = 3)]
    pub every: u64,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad generator arguments.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// Bad demo arguments.
    #[error("invalid demo arguments: {0}")]
    Args(String),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The embedded broker could not start.
    #[error(
        "cannot start the embedded Kafka broker: {0}; try --brokers HOST:PORT with a real Kafka"
    )]
    Broker(KafkaError),
    /// Topics could not be created.
    #[error(transparent)]
    Topics(#[from] TopicError),
    /// The service failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// Producing the generated traffic failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A task panicked (a bug).
    #[error("demo task failed: {0}")]
    Task(String),
}

/// The demo's configuration: demo defaults, then the file, `CHURNWATCH_*`
/// variables and flags on top (every problem listed at once).
pub fn demo_config(
    args: &DemoArgs,
    brokers: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigErrors> {
    let mut raw = match &args.config {
        Some(p) => RawConfig::from_file(p)?,
        None => RawConfig::default(),
    };
    let lateness_cap = ((2000.0 * args.speed) as Ts).clamp(1000, 2 * 3_600_000);
    raw.allowed_lateness
        .get_or_insert_with(|| format_duration(lateness_cap));
    raw.kafka.idle_timeout.get_or_insert_with(|| "1s".into());
    raw.kafka
        .group_id
        .get_or_insert_with(|| "churnwatch-demo".into());
    raw.kafka.commit_interval.get_or_insert_with(|| "1s".into());
    raw.shutdown_grace.get_or_insert_with(|| "10s".into());
    if raw.key_features.is_none() {
        // The generator's key features (docs/generator.md).
        raw.key_features = Some(vec!["reports".into(), "exports".into()]);
    }
    let flags = crate::app::Overrides {
        brokers: Some(brokers.to_string()),
        listen: args.listen.clone(),
    };
    crate::app::finish_config(raw, env, &flags)
}

/// One line of the live summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Event-time clock of the engines (latest partition).
    pub clock: Option<Ts>,
    /// Events consumed (valid and rejected) since start.
    pub consumed: u64,
    /// Customers tracked.
    pub customers: u64,
    /// Alerts firing now.
    pub firing: u64,
    /// Customers at high risk.
    pub high_risk: u64,
    /// Customers whose lifecycle is `churned`.
    pub churned: u64,
    /// Start-cohort customers churned in the rolling metrics window.
    pub window_churned: i64,
    /// Customers subscribed at the start of the rolling window.
    pub window_base: i64,
}

impl Summary {
    /// Reads the engines and metrics of a running service.
    pub fn read(shared: &SharedState, metrics: &Metrics) -> Summary {
        let mut s = Summary::default();
        for family in metrics.registry().gather() {
            if family.name() == metrics::EVENTS_CONSUMED
                || family.name() == metrics::EVENTS_REJECTED
            {
                s.consumed += family
                    .get_metric()
                    .iter()
                    .map(|m| m.get_counter().value() as u64)
                    .sum::<u64>();
            }
        }
        // Counts by risk and lifecycle from the published views (scoring
        // every customer is the consume loop's work, a slice at a time).
        for (_, v) in shared.views() {
            for g in &v.snapshot.groups {
                s.firing += g.firing.values().sum::<u64>();
                s.high_risk += g.by_risk.get(&Risk::High).copied().unwrap_or(0);
                s.churned += g
                    .by_lifecycle
                    .get(&Lifecycle::Churned)
                    .copied()
                    .unwrap_or(0);
            }
        }
        for (_, engine) in shared.engines() {
            let mut e = crate::lock(&engine);
            if e.max_ts().is_some() {
                s.clock = Some(s.clock.map_or(e.clock(), |c| c.max(e.clock())));
            }
            s.customers += e.customer_count() as u64;
            let r = e.business_rolling().overall;
            s.window_churned += r.cohort_churned_voluntary + r.cohort_churned_involuntary;
            s.window_base += r.customers_start;
        }
        s
    }

    /// The printed line; `rate` is consumed events per second since the last line.
    pub fn line(&self, rate: f64, window: Ts) -> String {
        let clock = self
            .clock
            .map(|c| format_ts(c)[..16].replace('T', " "))
            .unwrap_or_else(|| "-".into());
        let churn = if self.window_base > 0 {
            format!(
                "{:.1}%",
                100.0 * self.window_churned as f64 / self.window_base as f64
            )
        } else {
            "-".into()
        };
        format!(
            "event time {clock} | {rate:>7.0} events/s | {} consumed | {} customers | {} alerts firing | {} high risk | churn {} {churn} | {} churned",
            self.consumed,
            self.customers,
            self.firing,
            self.high_risk,
            format_duration(window),
            self.churned,
        )
    }
}

/// Runs the demo until `cancel` (Ctrl-C / SIGTERM), then stops gracefully.
pub async fn run(args: &DemoArgs, cancel: CancellationToken) -> Result<(), DemoError> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(DemoError::Args(format!(
            "--speed {} must be a positive number of simulated seconds per second",
            args.speed
        )));
    }
    if args.partitions < 1 {
        return Err(DemoError::Args("--partitions must be at least 1".into()));
    }
    let gen_args = GenerateArgs {
        seed: args.seed,
        customers: args.customers,
        days: Some(args.days),
        ..GenerateArgs::default()
    };
    let opts = gen_args.options()?;

    // The mock cluster lives on this task until the service has stopped.
    let mut mock = None;
    let brokers = match &args.brokers {
        Some(b) => b.clone(),
        None => {
            let m = MockCluster::new(1).map_err(DemoError::Broker)?;
            let b = m.bootstrap_servers();
            mock = Some(m);
            b
        }
    };
    let cfg = demo_config(args, &brokers, std::env::vars())?;
    let k = &cfg.kafka;
    let topics: Vec<&str> = vec![
        &k.usage_topic,
        &k.billing_topic,
        &k.feedback_topic,
        &k.alerts_topic,
        &k.dlq_topic,
    ];
    match &mock {
        Some(m) => {
            for t in &topics {
                m.create_topic(t, args.partitions, 1)
                    .map_err(|e| TopicError::Create {
                        topic: t.to_string(),
                        reason: e.to_string(),
                    })?;
            }
        }
        None => {
            let with_counts: Vec<(&str, i32)> =
                topics.iter().map(|t| (*t, args.partitions)).collect();
            admin::create_topics(k, &with_counts).await?;
        }
    }

    let window = cfg.metrics_window;
    let kafka_cfg = cfg.kafka.clone();
    let running = app::start(cfg, cancel.clone()).await?;
    let http = running.http_addr();
    let (shared, metrics) = (running.shared(), running.metrics());
    let service = tokio::spawn(running.wait());

    let broker_text = match &mock {
        Some(_) => format!("embedded mock Kafka at {brokers}"),
        None => format!("Kafka at {brokers}"),
    };
    println!(
        "churnwatch demo: {} customers, seed {}, {broker_text}",
        args.customers, args.seed
    );
    println!(
        "  traffic: {} days from {}, first {} at once, then {}x real time ({} of event time per second)",
        args.days,
        format_ts(opts.start),
        plural(args.history_days, "day"),
        args.speed,
        format_duration((args.speed * 1000.0) as Ts)
    );
    println!("  metrics:       http://{http}/metrics");
    println!("  alerts firing: http://{http}/api/alerts?status=firing");
    println!("  at risk:       http://{http}/api/at-risk?limit=20");
    println!("  one customer:  http://{http}/api/customers/c-000001");
    println!("  alert stream:  churnwatch alerts --follow --brokers {brokers}");
    println!("Ctrl-C to stop.");

    let counters = LoadCounters::new();
    let load_cancel = cancel.child_token();
    let pace = Pace::Accelerated {
        speed: args.speed,
        live_from: opts.start + Ts::from(args.history_days) * DAY_MS,
    };
    let mut load = {
        let (c, cancel) = (counters.clone(), load_cancel.clone());
        tokio::task::spawn_blocking(move || {
            loadgen::produce_generated(&kafka_cfg, &opts, pace, &cancel, c)
        })
    };

    let mut tick = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the first line is more useful a period in.
    tick.tick().await;
    let (mut last_consumed, mut last_at) = (0u64, Instant::now());
    let mut load_done = false;
    let mut load_result = Ok(());
    let mut service = service;
    let service_result = loop {
        tokio::select! {
            r = &mut service => break r,
            r = &mut load, if !load_done => {
                load_done = true;
                match r {
                    Ok(Ok(rep)) if !rep.cancelled => println!(
                        "generator finished: {} events over {} days; the service keeps running (Ctrl-C to stop)",
                        rep.produced.values().sum::<u64>(), args.days
                    ),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "producing demo traffic failed");
                        load_result = Err(DemoError::Load(e));
                        cancel.cancel();
                    }
                    Err(e) => {
                        load_result = Err(DemoError::Task(e.to_string()));
                        cancel.cancel();
                    }
                }
            }
            _ = tick.tick() => {
                let s = {
                    let (shared, metrics) = (shared.clone(), metrics.clone());
                    tokio::task::spawn_blocking(move || Summary::read(&shared, &metrics))
                        .await
                        .map_err(|e| DemoError::Task(e.to_string()))?
                };
                let dt = last_at.elapsed().as_secs_f64().max(1e-3);
                let rate = s.consumed.saturating_sub(last_consumed) as f64 / dt;
                (last_consumed, last_at) = (s.consumed, Instant::now());
                println!("{}", s.line(rate, window));
            }
        }
    };
    load_cancel.cancel();
    if !load_done {
        match load.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "demo traffic stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "demo traffic task failed"),
            Ok(Ok(_)) => {}
        }
    }
    // The broker goes last: the service commits its offsets on the way out.
    drop(mock);
    service_result.map_err(|e| DemoError::Task(e.to_string()))??;
    load_result
}

fn plural(n: u32, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    #[test]
    fn demo_defaults_sit_under_env_and_flags() {
        let args = Cli::parse_from(["demo", "--listen", "127.0.0.1:0", "--speed", "60"]).demo;
        let cfg = demo_config(&args, "mock:1", Vec::new()).expect("demo config is valid");
        assert_eq!(cfg.kafka.brokers, "mock:1");
        assert_eq!(cfg.kafka.idle_timeout, 1000);
        // Two wall-clock seconds at 60x.
        assert_eq!(cfg.allowed_lateness, 120_000);
        assert_eq!(cfg.http.listen, "127.0.0.1:0");
        let cfg = demo_config(
            &args,
            "mock:1",
            [("CHURNWATCH_ALLOWED_LATENESS".to_string(), "5m".to_string())],
        )
        .expect("valid");
        assert_eq!(cfg.allowed_lateness, 300_000);
        let fast = Cli::parse_from(["demo"]).demo;
        let cfg = demo_config(&fast, "mock:1", Vec::new()).expect("valid");
        assert_eq!(cfg.allowed_lateness, 2 * 3_600_000);
        assert_eq!(cfg.http.listen, "127.0.0.1:9464");
    }

    #[test]
    fn summary_line_reads_well() {
        let s = Summary {
            clock: Some(1_768_000_000_000),
            consumed: 1234,
            customers: 50,
            firing: 3,
            high_risk: 2,
            churned: 1,
            window_churned: 1,
            window_base: 40,
        };
        let line = s.line(99.6, 30 * DAY_MS);
        assert!(line.contains("100 events/s"), "{line}");
        assert!(line.contains("3 alerts firing"), "{line}");
        assert!(line.contains("churn 30d 2.5%"), "{line}");
    }
}
