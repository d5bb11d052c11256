//! Generated traffic to Kafka: runs the seeded generator ([`crate::generate`])
//! and produces each event to its input topic (by `type`, key =
//! `customer_id`), as fast as possible, at a fixed rate, or in accelerated
//! event time. Shared by `churnwatch demo`, `churnwatch generate --brokers`
//! and the pipeline benchmark.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::event::{Ts, parse_ts};
use crate::generate::{GenerateOptions, GenerateStats, Label, generate};

/// How fast generated events are produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the producer takes them.
    Unlimited,
    /// At most this many events per wall-clock second.
    Rate(f64),
    /// Live traffic in accelerated event time: `speed` simulated seconds per
    /// wall-clock second. Events before `live_from` (the history) are
    /// produced as fast as possible; from there on, an event is produced
    /// once the accelerated clock reaches its `ts`.
    Accelerated {
        /// Simulated seconds per wall-clock second (3600 = one hour per second).
        speed: f64,
        /// Event time from which pacing starts.
        live_from: Ts,
    },
}

/// Why producing generated traffic failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The producer could not be created.
    #[error("cannot create the Kafka producer for {brokers}: {source}; check --brokers")]
    Producer {
        /// `bootstrap.servers`.
        brokers: String,
        /// The client error.
        source: KafkaError,
    },
    /// Some events were not acknowledged by the broker.
    #[error(
        "{failed} event(s) were not acknowledged by {brokers} (first error: {first_error}); check that the topics exist and the brokers are up"
    )]
    Undelivered {
        /// `bootstrap.servers`.
        brokers: String,
        /// Events that failed.
        failed: u64,
        /// The first delivery error seen.
        first_error: String,
    },
}

/// Live counters, readable while traffic is produced (e.g. by `demo`).
#[derive(Debug, Default)]
pub struct LoadCounters {
    /// Events handed to the producer, per input topic (usage, billing, feedback).
    pub queued: [AtomicU64; 3],
    /// Events acknowledged by the broker, per input topic.
    pub acked: [AtomicU64; 3],
    /// Events the broker did not acknowledge.
    pub failed: AtomicU64,
    /// Highest event time produced so far (`i64::MIN` before the first).
    pub max_ts: AtomicI64,
}

impl LoadCounters {
    /// New counters, shareable with a reader.
    pub fn new() -> Arc<Self> {
        let c = LoadCounters::default();
        c.max_ts.store(i64::MIN, Ordering::Relaxed);
        Arc::new(c)
    }

    /// Total acknowledged events.
    pub fn acked_total(&self) -> u64 {
        self.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// Highest event time produced so far.
    pub fn max_ts(&self) -> Option<Ts> {
        let t = self.max_ts.load(Ordering::Relaxed);
        (t != i64::MIN).then_some(t)
    }
}

/// What [`produce_generated`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Events acknowledged per topic name.
    pub produced: std::collections::BTreeMap<String, u64>,
    /// Generator lines that were not events (none expected).
    pub skipped: u64,
    /// Stopped early by cancellation.
    pub cancelled: bool,
    /// Wall-clock seconds spent.
    pub seconds: f64,
    /// Generator counts.
    #[serde(flatten)]
    pub stats: GenerateStats,
    /// Story labels of the generated customers.
    #[serde(skip)]
    pub labels: Vec<Label>,
}

struct LoadContext {
    counters: Arc<LoadCounters>,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for LoadContext {}

impl ProducerContext for LoadContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, topic: usize) {
        match result {
            Ok(_) => {
                self.counters.acked[topic.min(2)].fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = crate::lock(&self.first_error);
                if first.is_none() {
                    tracing::warn!(error = %e, "generated event not delivered");
                    *first = Some(e.to_string());
                }
            }
        }
    }
}

/// The first fields of a generated line; the rest is passed through as is.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(borrow)]
    customer_id: &'a str,
    #[serde(borrow)]
    ts: &'a str,
}

/// Input topic index (0 usage, 1 billing, 2 feedback) of an event `type`,
/// as in `shared/EVENTS.md`.
pub fn topic_index(event_type: &str) -> usize {
    match event_type {
        "usage" => 0,
        "nps" | "csat" | "ces" | "support_ticket" => 2,
        _ => 1,
    }
}

/// Producer settings for bulk traffic: batching, no idempotence needed.
fn producer_config(k: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut c = super::client_config(k);
    for (key, value) in [
        ("linger.ms", "5"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "200000"),
        ("queue.buffering.max.kbytes", "262144"),
    ] {
        if !k.properties.contains_key(key) {
            c.set(key, value);
        }
    }
    c
}

/// Sleeps until `until` in slices, returning early (false) on cancellation.
fn sleep_until(until: Instant, cancel: &CancellationToken) -> bool {
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// Generates `opts` traffic and produces it to the input topics of `k`
/// (`usage_topic`, `billing_topic`, `feedback_topic`) at `pace`, then flushes.
/// Blocking; stops producing when `cancel` fires (the generator finishes its
/// pass without output). Progress is visible in `counters`.
pub fn produce_generated(
    k: &KafkaConfig,
    opts: &GenerateOptions,
    pace: Pace,
    cancel: &CancellationToken,
    counters: Arc<LoadCounters>,
) -> Result<LoadReport, LoadError> {
    let ctx = LoadContext {
        counters: counters.clone(),
        first_error: std::sync::Mutex::new(None),
    };
    let producer: ThreadedProducer<LoadContext> = producer_config(k)
        .create_with_context(ctx)
        .map_err(|source| LoadError::Producer {
            brokers: k.brokers.clone(),
            source,
        })?;
    let topics = super::input_topics(k);
    let started = Instant::now();
    let mut skipped = 0u64;
    let mut sent = 0u64;
    let mut max_ts = i64::MIN;
    // Accelerated pacing starts its wall clock at the first live event.
    let mut live_t0: Option<Instant> = None;
    let g = generate(opts, &mut |line| {
        if cancel.is_cancelled() {
            return;
        }
        let Ok(head) = serde_json::from_str::<Head<'_>>(line) else {
            skipped += 1;
            return;
        };
        let ts = parse_ts(head.ts).unwrap_or(max_ts);
        if ts > max_ts {
            max_ts = ts;
            counters.max_ts.store(ts, Ordering::Relaxed);
        }
        match pace {
            Pace::Unlimited => {}
            Pace::Rate(rate) if rate > 0.0 => {
                let due = started + Duration::from_secs_f64(sent as f64 / rate);
                if !sleep_until(due, cancel) {
                    return;
                }
            }
            Pace::Rate(_) => {}
            Pace::Accelerated { speed, live_from } if max_ts >= live_from && speed > 0.0 => {
                let t0 = *live_t0.get_or_insert_with(Instant::now);
                let sim_ms = (max_ts - live_from) as f64;
                let due = t0 + Duration::from_secs_f64(sim_ms / 1000.0 / speed);
                if !sleep_until(due, cancel) {
                    return;
                }
            }
            Pace::Accelerated { .. } => {}
        }
        let t = topic_index(head.ty);
        let mut record = BaseRecord::with_opaque_to(topics[t], t)
            .key(head.customer_id)
            .payload(line);
        loop {
            match producer.send(record) {
                Ok(()) => {
                    counters.queued[t].fetch_add(1, Ordering::Relaxed);
                    sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The background thread drains the queue; wait for room.
                    record = r;
                    if cancel.is_cancelled() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => {
                    let c = &producer.context().counters;
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    let mut first = crate::lock(&producer.context().first_error);
                    if first.is_none() {
                        *first = Some(e.to_string());
                    }
                    break;
                }
            }
        }
    });
    // Everything queued is delivered or failed before we report.
    while producer.in_flight_count() > 0 {
        if let Err(e) = producer.flush(Duration::from_millis(200))
            && cancel.is_cancelled()
        {
            tracing::warn!(error = %e, in_flight = producer.in_flight_count(), "stopped before every generated event was acknowledged");
            break;
        }
    }
    let failed = counters.failed.load(Ordering::Relaxed);
    if failed > 0 && !cancel.is_cancelled() {
        let first_error = crate::lock(&producer.context().first_error)
            .clone()
            .unwrap_or_default();
        return Err(LoadError::Undelivered {
            brokers: k.brokers.clone(),
            failed,
            first_error,
        });
    }
    let produced = topics
        .iter()
        .zip(&counters.acked)
        .map(|(t, n)| (t.to_string(), n.load(Ordering::Relaxed)))
        .collect();
    Ok(LoadReport {
        produced,
        skipped,
        cancelled: cancel.is_cancelled(),
        seconds: started.elapsed().as_secs_f64(),
        stats: g.stats,
        labels: g.labels,
    })
}

/// `churnwatch generate --brokers`: where generated traffic goes instead of a file.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KafkaTarget {
    /// Produce the events to this Kafka (`host:port`) instead of writing JSONL;
    /// missing input topics are created with `--partitions`.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Events per second to produce with `--brokers` (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Usage topic [default: kafka.usage_topic, `product.usage`].
    #[arg(long)]
    pub usage_topic: Option<String>,
    /// Billing topic [default: kafka.billing_topic, `billing.events`].
    #[arg(long)]
    pub billing_topic: Option<String>,
    /// Feedback topic [default: kafka.feedback_topic, `customer.feedback`].
    #[arg(long)]
    pub feedback_topic: Option<String>,
    /// Partitions of input topics that have to be created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
}

/// Why `generate --brokers` failed.
#[derive(Debug, thiserror::Error)]
pub enum ToKafkaError {
    /// Bad arguments.
    #[error("invalid generate arguments: {0}")]
    Args(String),
    /// Bad generator arguments.
    #[error(transparent)]
    Generate(#[from] crate::generate::GenerateError),
    /// Bad `CHURNWATCH_*` settings.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigErrors),
    /// Topics could not be created.
    #[error(transparent)]
    Topics(#[from] super::admin::TopicError),
    /// Producing failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The producing task panicked (a bug).
    #[error("generate task failed: {0}")]
    Task(String),
}

/// Runs `churnwatch generate --brokers`: creates missing input topics,
/// produces the generated events (at `--rate` when given) and writes the
/// labels file when asked. Stops early when `cancel` fires.
pub async fn run_to_kafka(
    args: &crate::generate::GenerateArgs,
    target: &KafkaTarget,
    env: impl IntoIterator<Item = (String, String)>,
    cancel: CancellationToken,
) -> Result<LoadReport, ToKafkaError> {
    let Some(brokers) = target.brokers.clone() else {
        return Err(ToKafkaError::Args("--brokers is required".into()));
    };
    if args.out.as_os_str() != "-" {
        return Err(ToKafkaError::Args(
            "--out and --brokers exclude each other: write a file or produce to Kafka".into(),
        ));
    }
    if !(target.rate.is_finite() && target.rate >= 0.0) {
        return Err(ToKafkaError::Args(format!(
            "--rate {}: give events per second, or 0 for as fast as possible",
            target.rate
        )));
    }
    if target.partitions < 1 {
        return Err(ToKafkaError::Args("--partitions must be at least 1".into()));
    }
    let opts = args.options()?;
    let flags = crate::app::Overrides {
        brokers: Some(brokers),
        listen: None,
    };
    let mut cfg = crate::app::load_config(None, env, &flags)?;
    for (topic, flag) in [
        (&mut cfg.kafka.usage_topic, &target.usage_topic),
        (&mut cfg.kafka.billing_topic, &target.billing_topic),
        (&mut cfg.kafka.feedback_topic, &target.feedback_topic),
    ] {
        if let Some(t) = flag {
            *topic = t.clone();
        }
    }
    let k = cfg.kafka;
    let inputs: Vec<(&str, i32)> = super::input_topics(&k)
        .iter()
        .map(|t| (*t, target.partitions))
        .collect();
    super::admin::create_topics(&k, &inputs).await?;
    let pace = if target.rate > 0.0 {
        Pace::Rate(target.rate)
    } else {
        Pace::Unlimited
    };
    let report = tokio::task::spawn_blocking(move || {
        produce_generated(&k, &opts, pace, &cancel, LoadCounters::new())
    })
    .await
    .map_err(|e| ToKafkaError::Task(e.to_string()))??;
    if let Some(path) = &args.labels {
        crate::generate::write_labels(path, &report.labels)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_goes_to_its_topic() {
        assert_eq!(topic_index("usage"), 0);
        for t in [
            "subscription_started",
            "subscription_renewed",
            "plan_changed",
            "payment_failed",
            "payment_succeeded",
            "refund_issued",
            "subscription_cancelled",
        ] {
            assert_eq!(topic_index(t), 1, "{t}");
        }
        for t in ["nps", "csat", "ces", "support_ticket"] {
            assert_eq!(topic_index(t), 2, "{t}");
        }
    }

    #[test]
    fn generated_lines_have_the_routing_fields_first() {
        let opts = GenerateOptions {
            customers: 5,
            days: 3,
            quiet_week_start_day: None,
            ..GenerateOptions::default()
        };
        let mut n = 0;
        generate(&opts, &mut |line| {
            let h: Head<'_> =
                serde_json::from_str(line).expect("generated line has type, customer_id, ts");
            assert!(h.customer_id.starts_with("c-"));
            assert!(parse_ts(h.ts).is_ok());
            n += 1;
        });
        assert!(n > 0);
    }
}
