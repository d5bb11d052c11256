//! The Kafka edge: the consumer group over the input topics, the alert and
//! dead-letter producer, and topic checks. Everything that talks to a broker
//! lives here; deciding stays in [`crate::engine`].
//!
//! - [`admin`]: topic metadata checks (co-partitioning) and topic creation.
//! - [`consumer`]: the at-least-once consume loop, partition rebuild by replay, idle ticks.
//! - [`producer`]: the outbox: idempotent produce of alerts and dead letters, retried until acked.
//! - [`follow`]: `churnwatch alerts --follow`, the alert topic for a support person.
//! - [`loadgen`]: generated traffic produced to the input topics (`demo`, `generate --brokers`, benchmarks).

pub mod admin;
pub mod consumer;
pub mod follow;
pub mod loadgen;
pub mod producer;
pub mod worker;

use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::KafkaConfig;

/// The three input topics in a fixed order; the index is used in per-topic tables.
pub fn input_topics(k: &KafkaConfig) -> [&str; 3] {
    [&k.usage_topic, &k.billing_topic, &k.feedback_topic]
}

/// Client settings shared by every client: brokers, fetch tuning and the
/// user's pass-through `kafka.properties` (which win over our defaults).
pub fn client_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        // IPv4 and IPv6 both work; librdkafka picks per address.
        .set("socket.keepalive.enable", "true");
    for (key, value) in &k.properties {
        c.set(key, value);
    }
    c
}

/// Consumer settings: [`client_config`] plus fetch tuning from the config.
pub fn consumer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(k);
    c.set("fetch.wait.max.ms", k.fetch_wait_max_ms.to_string())
        .set(
            "fetch.queue.backoff.ms",
            k.fetch_queue_backoff_ms.to_string(),
        );
    if !k.properties.contains_key("auto.offset.reset") {
        c.set("auto.offset.reset", "earliest");
    }
    // Consumer-only pass-through keys make a producer log a warning; harmless.
    c
}

/// Context for the replay and `alerts` readers: reaching the end of a
/// partition is expected there, not an error worth a log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            // rdkafka reports the end of a partition through the error
            // callback too, as a global error: not an error here either.
            KafkaError::PartitionEOF(_)
            | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF) => {
                tracing::trace!(reason, "end of partition")
            }
            e => tracing::warn!(error = %e, reason, "Kafka client error"),
        }
    }
}

impl ConsumerContext for ReaderContext {}
