//! Alert transitions and their CloudEvent encoding.
// STUB: replaced by the lead's engine at merge. Only the public API the Kafka
// edge codes against is here; bodies are the minimum the edge's tests need.

use crate::event::{Ts, format_ts};
use crate::signals::AlertKind;

/// Whether an alert started or ended.
pub enum AlertStatus {
    /// The condition began.
    Firing,
    /// The condition ended.
    Resolved,
}

/// One alert transition.
pub struct AlertEvent {
    /// The customer.
    pub customer_id: Box<str>,
    /// Which alert.
    pub alert: AlertKind,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Event-time instant the condition began.
    pub starts_at: Ts,
    /// Event-time instant it ended, for a resolved alert.
    pub ends_at: Option<Ts>,
}

impl AlertEvent {
    /// Deterministic id: customer, alert, start and status.
    pub fn id(&self) -> String {
        let name = format!(
            "{}/{}/{}/{}",
            self.customer_id,
            self.alert.name(),
            self.starts_at,
            self.status_str()
        );
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
    }

    fn status_str(&self) -> &'static str {
        match self.status {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// CloudEvents type.
    pub fn event_type(&self) -> &'static str {
        match self.status {
            AlertStatus::Firing => "churnwatch.alert.firing",
            AlertStatus::Resolved => "churnwatch.alert.resolved",
        }
    }

    /// The contract's CloudEvent, as JSON.
    pub fn to_json(&self) -> String {
        let time = self.ends_at.unwrap_or(self.starts_at);
        serde_json::json!({
            "specversion": "1.0",
            "type": self.event_type(),
            "source": "churnwatch",
            "id": self.id(),
            "time": format_ts(time),
            "subject": &*self.customer_id,
            "datacontenttype": "application/json",
            "data": {
                "alert": self.alert.name(),
                "status": self.status_str(),
                "severity": "critical",
                "customer_id": &*self.customer_id,
                "plan": null,
                "segment": null,
                "starts_at": format_ts(self.starts_at),
                "ends_at": self.ends_at.map(format_ts),
                "fingerprint": format!("{}/{}", self.customer_id, self.alert.name()),
                "health_score": 0,
                "mrr_at_risk": 0,
                "currency": "USD",
                "summary": "stub alert",
                "evidence": {},
            }
        })
        .to_string()
    }
}
