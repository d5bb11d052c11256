//! The outbox: everything churnwatch writes to Kafka (alerts and dead letters)
//! goes through one idempotent `FutureProducer` with `acks=all`.
//!
//! Each output gets a number in hand-over order and is enqueued in librdkafka
//! in that order ([`Outbox::send`]); librdkafka retries it until the broker
//! acknowledges it (every failure is logged and counted), so nothing is
//! dropped silently and nothing is reordered. The consumer stores an input
//! offset only once every output numbered before its checkpoint is acked:
//! [`Outbox::acked_prefix`].

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::alert::{AlertEvent, AlertStatus};
use crate::config::KafkaConfig;
use crate::metrics::Metrics;

/// Most outputs awaiting acknowledgement before the consumer waits.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// CloudEvents structured-mode content type of alert messages.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";

/// What an output is, for metrics and logs.
#[derive(Debug, Clone)]
pub enum OutputKind {
    /// An alert transition.
    Alert {
        /// Alert name.
        alert: &'static str,
        /// `firing` or `resolved`.
        status: &'static str,
        /// When the input that caused it was consumed (or the tick that fired it).
        consumed_at: Instant,
    },
    /// A rejected input.
    DeadLetter {
        /// Reject code.
        reason: &'static str,
    },
}

/// One message to write.
#[derive(Debug, Clone)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// For metrics.
    pub kind: OutputKind,
}

impl Output {
    /// The alert message of the contract: key = customer_id, value = CloudEvent.
    pub fn alert(topic: &str, a: &AlertEvent, consumed_at: Instant) -> Output {
        let status = match a.status {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        };
        Output {
            topic: topic.to_string(),
            key: Some(a.customer_id.as_bytes().to_vec()),
            payload: a.to_json().into_bytes(),
            // Structured mode carries `content-type` only: a `ce_` header
            // makes CloudEvents SDKs read the message as binary mode (the
            // Python SDK then rejects it for a missing `source`).
            headers: vec![("content-type".into(), CLOUDEVENTS_CONTENT_TYPE.into())],
            kind: OutputKind::Alert {
                alert: a.alert.name(),
                status,
                consumed_at,
            },
        }
    }
}

/// Why the producer could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {0}; check kafka.brokers and kafka.properties")]
pub struct ProducerError(#[from] pub KafkaError);

/// Creates the idempotent producer (`enable.idempotence=true`, `acks=all`).
pub fn create_producer(k: &KafkaConfig) -> Result<FutureProducer, ProducerError> {
    let mut c = super::client_config(k);
    if !k.properties.contains_key("linger.ms") {
        c.set("linger.ms", "5");
    }
    // librdkafka retries a delivery in order for this long; an alert is never
    // given up on (0 = no limit) unless the operator says otherwise.
    if !k.properties.contains_key("message.timeout.ms") {
        c.set("message.timeout.ms", "0");
    }
    // Set last: these are what "never lost, never reordered" rests on.
    c.set("enable.idempotence", "true").set("acks", "all");
    Ok(c.create()?)
}

/// Hands outputs to the producer and tracks which are acknowledged.
pub struct Outbox {
    producer: FutureProducer,
    metrics: Metrics,
    tasks: JoinSet<Option<u64>>,
    sent: u64,
    acked_prefix: u64,
    acked_ahead: BTreeSet<u64>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("sent", &self.sent)
            .field("acked_prefix", &self.acked_prefix)
            .finish()
    }
}

impl Outbox {
    /// `stop` ends retrying (hard shutdown deadline); unacked outputs then keep
    /// their input offsets uncommitted, so they are produced again after restart.
    pub fn new(producer: FutureProducer, metrics: Metrics, stop: CancellationToken) -> Self {
        Outbox {
            producer,
            metrics,
            tasks: JoinSet::new(),
            sent: 0,
            acked_prefix: 0,
            acked_ahead: BTreeSet::new(),
            stop,
        }
    }

    /// Number of outputs handed over so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Every output numbered below this is acknowledged by the broker.
    pub fn acked_prefix(&self) -> u64 {
        self.acked_prefix
    }

    /// Outputs awaiting acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// Hands one output over; waits first if [`MAX_IN_FLIGHT`] are pending.
    /// The message is enqueued in librdkafka here, before the next output is
    /// handed over, so the topic has outputs in hand-over order (the
    /// idempotent producer keeps its queue's order per partition; a task per
    /// output that enqueued when first polled put them in the runtime's
    /// scheduling order, and a resolved event could land before its firing).
    /// While librdkafka's queue is full or the enqueue fails, nothing later is
    /// enqueued: it retries with a backoff (every failure is counted and
    /// logged) until `stop`, when the output stays unacknowledged.
    pub async fn send(&mut self, out: Output) {
        while self.tasks.len() >= MAX_IN_FLIGHT {
            if !self.next_ack().await {
                break;
            }
        }
        let n = self.sent;
        self.sent += 1;
        let mut backoff = Duration::from_millis(10);
        let delivery = loop {
            let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
            for (k, v) in &out.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record = FutureRecord::to(&out.topic)
                .payload(&out.payload)
                .headers(headers);
            if let Some(k) = &out.key {
                record = record.key(k);
            }
            let e = match self.producer.send_result(record) {
                Ok(delivery) => break Some(delivery),
                Err((e, _)) => e,
            };
            let queue_full = matches!(
                e,
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
            );
            if !queue_full {
                self.metrics
                    .produce_errors
                    .with_label_values(&[out.topic.as_str(), reason_of(&e).as_str()])
                    .inc();
                tracing::warn!(topic = %out.topic, error = %e, retry_in_ms = backoff.as_millis() as u64, "produce failed; retrying");
            }
            self.poll_acks();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => break None,
            }
            backoff = (backoff * 2).min(if queue_full {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(10)
            });
        };
        let Some(delivery) = delivery else {
            tracing::warn!(topic = %out.topic, "shutdown deadline: output left unsent; its input offset stays uncommitted");
            return;
        };
        let (metrics, stop) = (self.metrics.clone(), self.stop.clone());
        self.tasks
            .spawn(async move { acknowledged(delivery, metrics, stop, out, n).await });
    }

    fn record(&mut self, res: Result<Option<u64>, tokio::task::JoinError>) {
        match res {
            Ok(Some(n)) => {
                self.acked_ahead.insert(n);
                while self.acked_ahead.remove(&self.acked_prefix) {
                    self.acked_prefix += 1;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "alert delivery task failed"),
        }
    }

    /// Collects finished deliveries without waiting.
    pub fn poll_acks(&mut self) {
        while let Some(res) = self.tasks.try_join_next() {
            self.record(res);
        }
    }

    /// Waits for one delivery to finish; false when none is in flight.
    pub async fn next_ack(&mut self) -> bool {
        match self.tasks.join_next().await {
            Some(res) => {
                self.record(res);
                true
            }
            None => false,
        }
    }

    /// Waits until every output is acknowledged (or given up at `stop`).
    pub async fn drain(&mut self) {
        while self.next_ack().await {}
    }

    /// Flushes librdkafka's queue (blocking up to `timeout`).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not complete");
        }
    }
}

fn reason_of(e: &KafkaError) -> String {
    match e {
        KafkaError::MessageProduction(code) => format!("{code:?}"),
        other => format!("{:?}", other.rdkafka_error_code()),
    }
}

/// Waits for the broker's acknowledgement of output `n`. librdkafka retries
/// a delivery itself, in order, for `message.timeout.ms` (unlimited unless
/// configured, see [`create_producer`]); a delivery that still fails is
/// counted and logged, and its input offset stays uncommitted, so the next
/// start produces it again (sending it again from here would put it after
/// later outputs).
async fn acknowledged(
    delivery: DeliveryFuture,
    metrics: Metrics,
    stop: CancellationToken,
    out: Output,
    n: u64,
) -> Option<u64> {
    let res = tokio::select! {
        r = delivery => r,
        _ = stop.cancelled() => {
            tracing::warn!(topic = %out.topic, "shutdown deadline: output left unacknowledged; its input offset stays uncommitted");
            return None;
        }
    };
    match res {
        Ok(Ok(_)) => {
            match &out.kind {
                OutputKind::Alert {
                    alert,
                    status,
                    consumed_at,
                } => {
                    metrics
                        .alerts_produced
                        .with_label_values(&[*alert, *status])
                        .inc();
                    metrics
                        .processing_latency
                        .observe(consumed_at.elapsed().as_secs_f64());
                }
                OutputKind::DeadLetter { reason } => {
                    metrics.dlq_produced.with_label_values(&[*reason]).inc();
                }
            }
            Some(n)
        }
        Ok(Err((e, _))) => {
            metrics
                .produce_errors
                .with_label_values(&[out.topic.as_str(), reason_of(&e).as_str()])
                .inc();
            tracing::error!(topic = %out.topic, error = %e, "output not delivered; its input offset stays uncommitted, so a restart produces it again");
            None
        }
        Err(_canceled) => {
            tracing::error!(topic = %out.topic, "producer dropped before the output was acknowledged; its input offset stays uncommitted");
            None
        }
    }
}
