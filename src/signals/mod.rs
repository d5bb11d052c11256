//! Churn-risk signals: one file per alert family. Each signal is a pure
//! function of (customer state, population context, now, params) that says
//! whether its alert should be firing, with the evidence.

use serde::Serialize;

use crate::config::AlertParams;
use crate::event::DAY_MS;

/// Every alert of the contract. The discriminant indexes per-alert tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Recent activity well below the customer's own baseline.
    /// `fire`/`resolve`: drop fraction (0.5 = 50% below expected); `min_baseline`:
    /// weekly events a baseline needs; `window`: history needed before the own baseline is trusted.
    EngagementDrop = 0,
    /// No usage for longer than the customer's usual gap allows.
    /// `fire`: multiple of the typical gap; `window`: smallest allowed gap; `min_baseline`: gaps needed for an own typical gap.
    Inactivity = 1,
    /// Distinct active users well below baseline.
    /// `fire`/`resolve`: drop fraction; `min_baseline`: baseline seats needed.
    SeatContraction = 2,
    /// A key feature unused for `window`.
    KeyFeatureUnused = 3,
    /// A plan change lowered MRR. `fire`: smallest drop fraction; `window`: how long it stays firing.
    Downgrade = 4,
    /// A dunning period is open.
    PaymentFailed = 5,
    /// Cancelled or dunning expired.
    Churned = 6,
    /// Latest NPS 0-6, CSAT 1-2 or CES 6-7. `window`: how long a response counts.
    Detractor = 7,
    /// Tickets in `window` >= `fire` x baseline (and >= `min_baseline`), or an urgent ticket open.
    /// Resolves below `resolve` x baseline.
    SupportSpike = 8,
}

impl AlertKind {
    /// All alerts, in table order.
    pub const ALL: [AlertKind; 9] = [
        AlertKind::EngagementDrop,
        AlertKind::Inactivity,
        AlertKind::SeatContraction,
        AlertKind::KeyFeatureUnused,
        AlertKind::Downgrade,
        AlertKind::PaymentFailed,
        AlertKind::Churned,
        AlertKind::Detractor,
        AlertKind::SupportSpike,
    ];

    /// Contract name.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::EngagementDrop => "engagement_drop",
            AlertKind::Inactivity => "inactivity",
            AlertKind::SeatContraction => "seat_contraction",
            AlertKind::KeyFeatureUnused => "key_feature_unused",
            AlertKind::Downgrade => "downgrade",
            AlertKind::PaymentFailed => "payment_failed",
            AlertKind::Churned => "churned",
            AlertKind::Detractor => "detractor",
            AlertKind::SupportSpike => "support_spike",
        }
    }

    /// Parses a contract name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Built-in tunables.
    pub fn default_params(self) -> AlertParams {
        let p = |severity: &str, fire: f64, resolve: f64, min_baseline: f64, window_days: i64| {
            AlertParams {
                enabled: true,
                severity: severity.to_string(),
                fire,
                resolve,
                min_baseline,
                window: window_days * DAY_MS,
            }
        };
        match self {
            AlertKind::EngagementDrop => p("warning", 0.5, 0.3, 5.0, 21),
            AlertKind::Inactivity => p("warning", 3.0, 0.0, 3.0, 7),
            AlertKind::SeatContraction => p("warning", 0.4, 0.2, 3.0, 21),
            AlertKind::KeyFeatureUnused => p("info", 0.0, 0.0, 0.0, 14),
            AlertKind::Downgrade => p("warning", 0.01, 0.0, 0.0, 30),
            AlertKind::PaymentFailed => p("warning", 0.0, 0.0, 0.0, 0),
            AlertKind::Churned => p("critical", 0.0, 0.0, 0.0, 0),
            AlertKind::Detractor => p("warning", 0.0, 0.0, 0.0, 90),
            AlertKind::SupportSpike => p("warning", 3.0, 1.5, 3.0, 7),
        }
    }
}
