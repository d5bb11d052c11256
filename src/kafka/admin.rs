//! Topic checks at start: the input topics exist and are co-partitioned,
//! the output topics exist. Also topic creation (used by tests and `demo`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;

/// Why the topics are not usable.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The brokers did not answer a metadata request.
    #[error(
        "cannot read topic metadata from {brokers}: {source}; check kafka.brokers and that the brokers are up"
    )]
    Metadata {
        /// `bootstrap.servers`.
        brokers: String,
        /// The client error.
        source: KafkaError,
    },
    /// Some topics do not exist.
    #[error(
        "topic(s) {} do not exist on {brokers}: create them (input topics with the same partition count) or point kafka.*_topic at existing ones",
        .topics.join(", ")
    )]
    Missing {
        /// `bootstrap.servers`.
        brokers: String,
        /// The missing topics.
        topics: Vec<String>,
    },
    /// The input topics have different partition counts.
    #[error(
        "input topics are not co-partitioned: {}; they must have the same number of partitions (keyed by customer_id) so that one instance sees all of a customer's events. Repartition them to one count, or point churnwatch at topics that are",
        .counts.iter().map(|(t, n)| format!("{t} has {n} partition(s)")).collect::<Vec<_>>().join(", ")
    )]
    NotCoPartitioned {
        /// Topic and partition count, in config order.
        counts: Vec<(String, usize)>,
    },
    /// Topic creation failed.
    #[error("cannot create topic {topic}: {reason}")]
    Create {
        /// The topic.
        topic: String,
        /// Broker or client message.
        reason: String,
    },
}

/// Partition count of each topic, `None` when it does not exist. Blocking.
pub fn partition_counts(
    k: &KafkaConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<Option<usize>>, TopicError> {
    let consumer: BaseConsumer = super::client_config(k)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|source| TopicError::Metadata {
            brokers: k.brokers.clone(),
            source,
        })?;
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|source| TopicError::Metadata {
            brokers: k.brokers.clone(),
            source,
        })?;
    Ok(topics
        .iter()
        .map(|t| {
            md.topics()
                .iter()
                .find(|m| m.name() == *t && m.error().is_none())
                .map(|m| m.partitions().len())
                .filter(|n| *n > 0)
        })
        .collect())
}

/// Checks that the input topics exist with one partition count and that the
/// alert and dead-letter topics exist. Returns the input partition count. Blocking.
pub fn check_topics(k: &KafkaConfig, timeout: Duration) -> Result<usize, TopicError> {
    let inputs = super::input_topics(k);
    let all = [
        inputs[0],
        inputs[1],
        inputs[2],
        k.alerts_topic.as_str(),
        k.dlq_topic.as_str(),
    ];
    let counts = partition_counts(k, &all, timeout)?;
    let missing: Vec<String> = all
        .iter()
        .zip(&counts)
        .filter(|(_, c)| c.is_none())
        .map(|(t, _)| t.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(TopicError::Missing {
            brokers: k.brokers.clone(),
            topics: missing,
        });
    }
    let inputs: Vec<(String, usize)> = inputs
        .iter()
        .zip(&counts)
        .map(|(t, c)| (t.to_string(), c.unwrap_or(0)))
        .collect();
    if inputs.iter().any(|(_, n)| *n != inputs[0].1) {
        return Err(TopicError::NotCoPartitioned { counts: inputs });
    }
    Ok(inputs[0].1)
}

/// Creates `topics` (name, partitions) with replication factor 1 unless they
/// exist. For tests, demos and development brokers.
pub async fn create_topics(k: &KafkaConfig, topics: &[(&str, i32)]) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> =
        super::client_config(k)
            .create()
            .map_err(|e| TopicError::Create {
                topic: topics.first().map(|t| t.0.to_string()).unwrap_or_default(),
                reason: e.to_string(),
            })?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, n)| NewTopic::new(name, *n, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| TopicError::Create {
            topic: topics.first().map(|t| t.0.to_string()).unwrap_or_default(),
            reason: e.to_string(),
        })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn co_partitioning_error_names_topics_and_counts() {
        let e = TopicError::NotCoPartitioned {
            counts: vec![
                ("product.usage".into(), 4),
                ("billing.events".into(), 2),
                ("customer.feedback".into(), 4),
            ],
        };
        let s = e.to_string();
        assert!(s.contains("product.usage has 4 partition(s)"), "{s}");
        assert!(s.contains("billing.events has 2 partition(s)"), "{s}");
    }
}
