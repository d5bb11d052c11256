//! `churnwatch alerts`: prints the alert topic for a support person, one
//! readable line per alert, or the raw CloudEvent JSON with `--json`.

use std::io::Write;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;

/// Options of `churnwatch alerts`.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Keep waiting for new alerts (otherwise stop at the end of the topic).
    pub follow: bool,
    /// Print the raw CloudEvent JSON.
    pub json: bool,
    /// Start at the oldest retained alert instead of the end.
    pub from_beginning: bool,
}

/// Why following failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Kafka client error.
    #[error("cannot read the alert topic from {brokers}: {source}")]
    Kafka {
        /// Brokers.
        brokers: String,
        /// Client error.
        source: KafkaError,
    },
    /// The topic does not exist.
    #[error(
        "alert topic {topic} does not exist on {brokers}; is churnwatch running there (kafka.alerts_topic)?"
    )]
    NoTopic {
        /// Topic.
        topic: String,
        /// Brokers.
        brokers: String,
    },
    /// Writing to the output failed (e.g. a closed pipe).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

fn money(minor: i64, currency: &str) -> String {
    format!(
        "{}{}.{:02} {currency}",
        if minor < 0 { "-" } else { "" },
        minor.unsigned_abs() / 100,
        minor.unsigned_abs() % 100
    )
}

/// One readable line for an alert CloudEvent; falls back to the raw text.
pub fn format_line(raw: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(raw) else {
        return format!("(not an alert) {raw}");
    };
    let d = &v["data"];
    let s = |x: &Value| x.as_str().unwrap_or("-").to_string();
    let status = s(&d["status"]).to_uppercase();
    let when = if status == "RESOLVED" {
        s(&d["ends_at"])
    } else {
        s(&d["starts_at"])
    };
    let mut line = format!(
        "{when} {status:<8} {:<8} {:<18} customer {}",
        s(&d["severity"]),
        s(&d["alert"]),
        s(&d["customer_id"]),
    );
    let plan = d["plan"].as_str();
    let segment = d["segment"].as_str();
    if plan.is_some() || segment.is_some() {
        line.push_str(&format!(
            " ({}/{})",
            plan.unwrap_or("-"),
            segment.unwrap_or("-")
        ));
    }
    if let Some(h) = d["health_score"].as_i64() {
        line.push_str(&format!(" health {h}"));
    }
    if let Some(m) = d["mrr_at_risk"].as_i64().filter(|m| *m != 0) {
        line.push_str(&format!(
            ", MRR at risk {}",
            money(m, d["currency"].as_str().unwrap_or(""))
        ));
    }
    if let Some(summary) = d["summary"].as_str() {
        line.push_str(&format!(" - {summary}"));
    }
    line
}

/// Prints alerts from `k.alerts_topic` to `out` until the end of the topic
/// (or, with `follow`, until `cancel`). Blocking; run it on a blocking thread.
pub fn follow(
    k: &KafkaConfig,
    opts: &FollowOptions,
    cancel: &CancellationToken,
    out: &mut dyn Write,
) -> Result<u64, FollowError> {
    let kerr = |source| FollowError::Kafka {
        brokers: k.brokers.clone(),
        source,
    };
    let mut c = super::consumer_config(k);
    c.set("group.id", format!("{}.follow", k.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<super::ReaderContext> =
        c.create_with_context(super::ReaderContext).map_err(kerr)?;
    let md = consumer
        .fetch_metadata(Some(&k.alerts_topic), Duration::from_secs(10))
        .map_err(kerr)?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == k.alerts_topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(FollowError::NoTopic {
            topic: k.alerts_topic.clone(),
            brokers: k.brokers.clone(),
        });
    }
    let start = if opts.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(&k.alerts_topic, *p, start)
            .map_err(kerr)?;
    }
    consumer.assign(&tpl).map_err(kerr)?;
    let mut at_end = std::collections::HashSet::new();
    let mut printed = 0u64;
    while !cancel.is_cancelled() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let text = String::from_utf8_lossy(m.payload().unwrap_or(&[]));
                if opts.json {
                    writeln!(out, "{text}")?;
                } else {
                    writeln!(out, "{}", format_line(&text))?;
                }
                out.flush()?;
                printed += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                if !opts.follow && at_end.len() == parts.len() {
                    break;
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "alert consumer error"),
            None => {}
        }
    }
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_line_has_what_support_needs() {
        let raw = r#"{"specversion":"1.0","type":"churnwatch.alert.firing","data":{"alert":"payment_failed","status":"firing","severity":"warning","customer_id":"c-4821","plan":"pro","segment":"smb","starts_at":"2026-11-24T10:00:00Z","ends_at":null,"health_score":41,"mrr_at_risk":4900,"currency":"USD","summary":"Payment failed: card_declined"}}"#;
        let line = format_line(raw);
        for part in [
            "2026-11-24T10:00:00Z",
            "FIRING",
            "payment_failed",
            "c-4821",
            "(pro/smb)",
            "health 41",
            "49.00 USD",
            "card_declined",
        ] {
            assert!(line.contains(part), "{part:?} missing in {line:?}");
        }
        assert!(format_line("garbage").contains("not an alert"));
    }
}
