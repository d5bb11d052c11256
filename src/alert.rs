//! Alert transitions and their wire format: the CloudEvents 1.0 structured
//! JSON object of `shared/EVENTS.md`, with a deterministic `id`.

use serde::Serialize;
use serde_json::Value;

use crate::catalogue::{AlertKind, AlertSeverity};
use crate::event::{Ts, format_ts};

/// Whether an alert began or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition began.
    Firing,
    /// The condition ended.
    Resolved,
}

impl AlertStatus {
    /// Contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// Customer.
    pub customer_id: Box<str>,
    /// Which alert.
    pub alert: AlertKind,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// How urgent the alert is.
    pub severity: AlertSeverity,
    /// Plan, if billing was seen.
    pub plan: Option<Box<str>>,
    /// Segment, if billing carried one.
    pub segment: Option<Box<str>>,
    /// Event-time instant the condition began.
    pub starts_at: Ts,
    /// Event-time instant it ended (resolved only).
    pub ends_at: Option<Ts>,
    /// For a firing alert re-emitted because its reasons changed (e.g. one
    /// of two unused key features used again): when they changed. Such an
    /// event has the first one's `starts_at`, the current evidence, this as
    /// its `time`, and so an id of its own.
    pub updated_at: Option<Ts>,
    /// Health score at the transition.
    pub health_score: u8,
    /// MRR at stake (minor units), null without billing.
    pub mrr_at_risk: Option<i64>,
    /// Reporting currency.
    pub currency: String,
    /// One human line with the numbers.
    pub summary: String,
    /// The numbers the decision was made from.
    pub evidence: Value,
}

/// Namespace for alert ids (UUID v5).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c1f_3a52_9d0e_4b7a_8e21_c0ff_ee42_0001);

impl AlertEvent {
    /// Deterministic id: same customer, alert, start time and status give the same id.
    pub fn id(&self) -> String {
        let mut name = format!(
            "{}\u{0}{}\u{0}{}\u{0}{}",
            self.customer_id,
            self.alert.name(),
            self.starts_at,
            self.status.as_str()
        );
        if let Some(u) = self.updated_at {
            name.push_str(&format!("\u{0}updated\u{0}{u}"));
        }
        uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string()
    }

    /// CloudEvents `type`.
    pub fn event_type(&self) -> &'static str {
        match self.status {
            AlertStatus::Firing => "churnwatch.alert.firing",
            AlertStatus::Resolved => "churnwatch.alert.resolved",
        }
    }

    /// Event time of the transition: `starts_at` when firing (`updated_at`
    /// for an update), `ends_at` when resolved.
    pub fn time(&self) -> Ts {
        self.ends_at.or(self.updated_at).unwrap_or(self.starts_at)
    }

    /// `customer/alert`, stable across transitions.
    pub fn fingerprint(&self) -> String {
        format!("{}/{}", self.customer_id, self.alert.name())
    }

    /// The contract's CloudEvent as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "specversion": "1.0",
            "type": self.event_type(),
            "source": "churnwatch",
            "id": self.id(),
            "time": format_ts(self.time()),
            "subject": self.customer_id,
            "datacontenttype": "application/json",
            "data": {
                "alert": self.alert.name(),
                "status": self.status.as_str(),
                "severity": self.severity,
                "customer_id": self.customer_id,
                "plan": self.plan,
                "segment": self.segment,
                "starts_at": format_ts(self.starts_at),
                "ends_at": self.ends_at.map(format_ts),
                "fingerprint": self.fingerprint(),
                "health_score": self.health_score,
                "mrr_at_risk": self.mrr_at_risk,
                "currency": self.currency,
                "summary": self.summary,
                "evidence": self.evidence,
            }
        })
    }

    /// The contract's CloudEvent, one line of JSON.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_ts;

    fn sample(status: AlertStatus) -> AlertEvent {
        let t = parse_ts("2026-11-24T10:00:00Z").unwrap();
        AlertEvent {
            customer_id: "c-4821".into(),
            alert: AlertKind::EngagementDrop,
            status,
            severity: AlertSeverity::Warning,
            plan: Some("pro".into()),
            segment: Some("smb".into()),
            starts_at: t,
            ends_at: (status == AlertStatus::Resolved).then_some(t + 3_600_000),
            updated_at: None,
            health_score: 41,
            mrr_at_risk: Some(4900),
            currency: "USD".into(),
            summary: "Weekly activity fell 72% below this customer's 8-week baseline".into(),
            evidence: serde_json::json!({"current_7d":14,"baseline_7d":50,"drop_pct":72}),
        }
    }

    #[test]
    fn cloudevent_matches_the_contract() {
        let v = sample(AlertStatus::Firing).to_value();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "churnwatch.alert.firing");
        assert_eq!(v["time"], "2026-11-24T10:00:00Z");
        assert_eq!(v["subject"], "c-4821");
        assert_eq!(v["data"]["status"], "firing");
        assert_eq!(v["data"]["ends_at"], Value::Null);
        assert_eq!(v["data"]["fingerprint"], "c-4821/engagement_drop");
        assert_eq!(v["data"]["evidence"]["drop_pct"], 72);
        let r = sample(AlertStatus::Resolved).to_value();
        assert_eq!(r["type"], "churnwatch.alert.resolved");
        assert_eq!(r["data"]["ends_at"], "2026-11-24T11:00:00Z");
        assert_eq!(r["time"], "2026-11-24T11:00:00Z");
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = sample(AlertStatus::Firing);
        let mut b = a.clone();
        b.health_score = 10; // content other than the key fields does not change the id
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), sample(AlertStatus::Resolved).id());
        let mut c = a.clone();
        c.starts_at += 1000;
        assert_ne!(a.id(), c.id());
    }
}
