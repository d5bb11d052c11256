//! The alert catalogue: every alert of the contract ([`AlertKind`]), how
//! urgent each is ([`AlertSeverity`]) and its tunables ([`AlertParams`])
//! with their built-in defaults. What `config` validates a file into and
//! what `signals` judge with; it imports neither.

use serde::Serialize;

use crate::event::{DAY_MS, Ts};

/// Every alert of the contract. The discriminant indexes per-alert tables.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A sustained fall of usage against the customer's own weekday rhythm.
    /// `significance`: log10 evidence of the change detector needed to fire;
    /// `fire`/`resolve`: how far the last 7 days must be below expected to
    /// fire / to stay firing (0.4 = 40% below); `min_baseline`: weekly events a
    /// baseline needs; `window`: history needed before the own baseline is trusted.
    EngagementDrop = 0,
    /// No usage for longer than the customer's usual gap allows.
    /// `fire`: -log10 of the chance that a normal rhythm has a gap this long (4 = 1 in 10,000);
    /// `window`: smallest allowed gap; `min_baseline`: gaps needed for an own rhythm.
    Inactivity = 1,
    /// Regular users (active in all baseline weeks but one) gone quiet.
    /// `fire`/`resolve`: share of the regular users not active in the last 7
    /// days; `significance`: -log10 of the chance that this many regular
    /// users are away at once by luck; `min_baseline`: regular users needed.
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
        use AlertSeverity::{Critical, Info, Warning};
        let p =
            |severity, fire: f64, resolve: f64, min_baseline: f64, window_days: i64| AlertParams {
                enabled: true,
                severity,
                fire,
                resolve,
                min_baseline,
                significance: 0.0,
                window: window_days * DAY_MS,
            };
        let z = |mut p: AlertParams, z: f64| {
            p.significance = z;
            p
        };
        match self {
            AlertKind::EngagementDrop => z(p(Warning, 0.4, 0.2, 5.0, 42), 2.0),
            AlertKind::Inactivity => p(Warning, 4.0, 0.0, 4.0, 7),
            AlertKind::SeatContraction => z(p(Warning, 0.5, 0.25, 4.0, 42), 3.0),
            AlertKind::KeyFeatureUnused => p(Info, 3.0, 0.0, 0.0, 14),
            AlertKind::Downgrade => p(Warning, 0.01, 0.0, 0.0, 30),
            AlertKind::PaymentFailed => p(Warning, 0.0, 0.0, 0.0, 0),
            AlertKind::Churned => p(Critical, 0.0, 0.0, 0.0, 0),
            AlertKind::Detractor => p(Warning, 0.0, 0.0, 0.0, 90),
            AlertKind::SupportSpike => p(Warning, 3.0, 1.5, 3.0, 7),
        }
    }
}

/// How urgent an alert is (config `<alert>.severity`, the alert's
/// `severity`). Not a support ticket's [`crate::event::Severity`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    /// Worth knowing; does not put a customer `at_risk`.
    Info,
    /// Needs attention.
    Warning,
    /// The customer is lost.
    Critical,
}

impl AlertSeverity {
    /// All severities, least urgent first.
    pub const ALL: [AlertSeverity; 3] = [
        AlertSeverity::Info,
        AlertSeverity::Warning,
        AlertSeverity::Critical,
    ];

    /// Contract spelling (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Info => "info",
            AlertSeverity::Warning => "warning",
            AlertSeverity::Critical => "critical",
        }
    }

    /// Parses a contract spelling.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Tunables of one alert. The meaning of `fire`, `resolve`, `min_baseline`
/// and `window` per alert is documented on [`AlertKind`] and in the README.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertParams {
    /// The alert is evaluated at all.
    pub enabled: bool,
    /// How urgent the alert is.
    pub severity: AlertSeverity,
    /// Threshold at which the alert fires.
    pub fire: f64,
    /// Threshold at which a firing alert resolves (hysteresis).
    pub resolve: f64,
    /// Smallest baseline the alert trusts.
    pub min_baseline: f64,
    /// How many standard deviations (of the customer's own weekly variation,
    /// at least Poisson noise) below expected a drop must be to fire; 0 = off.
    pub significance: f64,
    /// The alert's time window in milliseconds.
    pub window: Ts,
}
