//! Configuration: a raw, all-optional [`RawConfig`] read from a TOML file,
//! `CHURNWATCH_*` environment variables and flags, then [`RawConfig::validate`]d
//! into the typed [`Config`], reporting every problem at once with its key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::catalogue::{AlertKind, AlertParams, AlertSeverity};
use crate::event::{DAY_MS, DecodeConfig, HOUR_MS, Ts};

/// Parses a duration such as `500ms`, `30s`, `15m`, `2h`, `14d`, `8w` into milliseconds.
pub fn parse_duration(s: &str) -> Result<Ts, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 2h or 14d"))?;
    let mult = match unit.trim() {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => HOUR_MS as f64,
        "d" => DAY_MS as f64,
        "w" => 7.0 * DAY_MS as f64,
        _ => return Err(format!("{s:?} has no unit; use ms, s, m, h, d or w")),
    };
    Ok((n * mult).round() as Ts)
}

/// Formats milliseconds back into the largest exact unit up to days (as the
/// README's defaults are written: `14d`, `42d`, not `2w`, `6w`).
pub fn format_duration(ms: Ts) -> String {
    for (unit, size) in [("d", DAY_MS), ("h", HOUR_MS), ("m", 60_000), ("s", 1000)] {
        if ms != 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Default `kafka.rebuild_hold_max`: 256 MiB.
pub const DEFAULT_REBUILD_HOLD_MAX: u64 = 256 << 20;

/// Partial [`AlertParams`] as written in a file.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlertParams {
    /// See [`AlertParams::enabled`].
    pub enabled: Option<bool>,
    /// See [`AlertParams::severity`].
    pub severity: Option<String>,
    /// See [`AlertParams::fire`].
    pub fire: Option<f64>,
    /// See [`AlertParams::resolve`].
    pub resolve: Option<f64>,
    /// See [`AlertParams::min_baseline`].
    pub min_baseline: Option<f64>,
    /// See [`AlertParams::significance`].
    pub significance: Option<f64>,
    /// See [`AlertParams::window`].
    pub window: Option<String>,
}

/// Kafka connection and topics.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// `bootstrap.servers`.
    pub brokers: Option<String>,
    /// Consumer group id.
    pub group_id: Option<String>,
    /// Usage topic.
    pub usage_topic: Option<String>,
    /// Billing topic.
    pub billing_topic: Option<String>,
    /// Feedback topic.
    pub feedback_topic: Option<String>,
    /// Alert output topic.
    pub alerts_topic: Option<String>,
    /// Dead-letter topic.
    pub dlq_topic: Option<String>,
    /// librdkafka `fetch.wait.max.ms`.
    pub fetch_wait_max_ms: Option<u32>,
    /// librdkafka `fetch.queue.backoff.ms`.
    pub fetch_queue_backoff_ms: Option<u32>,
    /// How often stored offsets are committed.
    pub commit_interval: Option<String>,
    /// After this long without input on a partition, wall-clock ticks advance its event time.
    pub idle_timeout: Option<String>,
    /// Bytes of messages held for partitions being rebuilt before receiving stops.
    pub rebuild_hold_max: Option<u64>,
    /// Any other librdkafka property, passed through to consumer and producer.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// HTTP server.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Listen address, `host:port`.
    pub listen: Option<String>,
    /// Bearer token required on `/api/*` when set.
    pub api_token: Option<String>,
    /// `/readyz` reports not ready while total consumer lag exceeds this.
    pub ready_max_lag: Option<u64>,
}

/// Everything a user can set, all optional; see [`Config`] for defaults.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// ISO 4217 code money is reported in.
    pub reporting_currency: Option<String>,
    /// Minor units of the reporting currency per minor unit of each other currency.
    pub currency_rates: Option<BTreeMap<String, f64>>,
    /// How late an event may be and still be on time.
    pub allowed_lateness: Option<String>,
    /// How long a repeated `event_id` is recognised.
    pub dedup_horizon: Option<String>,
    /// How long dunning may stay open before the customer has churned.
    pub dunning_grace: Option<String>,
    /// Without usage this long, a customer is `dormant`.
    pub dormant_after: Option<String>,
    /// Events further ahead of the machine's clock are rejected (`ts_in_future`).
    pub max_future_skew: Option<String>,
    /// Larger messages (or JSONL lines) are rejected unread (`too_large`).
    pub max_message_bytes: Option<u64>,
    /// Distinct plan names, and distinct segment names, kept and exported;
    /// later ones are counted under `(other)`.
    pub max_label_values: Option<u32>,
    /// Customers the daily population context is computed from, at most
    /// (about): a deterministic sample by customer id beyond it.
    pub population_sample: Option<u64>,
    /// A warning is logged when more customers than this are first seen in
    /// one minute of event time (per partition).
    pub new_customers_warn_per_minute: Option<u64>,
    /// Features tracked for non-use.
    pub key_features: Option<Vec<String>>,
    /// Rolling window of the business metrics.
    pub metrics_window: Option<String>,
    /// Health below this is risk `high`.
    pub risk_high_below: Option<u8>,
    /// Health below this is risk `medium`.
    pub risk_medium_below: Option<u8>,
    /// Per-alert tunables, keyed by alert name.
    #[serde(default)]
    pub alerts: BTreeMap<String, RawAlertParams>,
    /// Per-plan overrides: `plans.<plan>.<alert>`.
    #[serde(default)]
    pub plans: BTreeMap<String, BTreeMap<String, RawAlertParams>>,
    /// Kafka settings.
    #[serde(default)]
    pub kafka: RawKafka,
    /// HTTP settings.
    #[serde(default)]
    pub http: RawHttp,
    /// Time allowed for a graceful shutdown.
    pub shutdown_grace: Option<String>,
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// Kafka settings, validated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Usage topic.
    pub usage_topic: String,
    /// Billing topic.
    pub billing_topic: String,
    /// Feedback topic.
    pub feedback_topic: String,
    /// Alert output topic.
    pub alerts_topic: String,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// librdkafka `fetch.wait.max.ms`.
    pub fetch_wait_max_ms: u32,
    /// librdkafka `fetch.queue.backoff.ms`.
    pub fetch_queue_backoff_ms: u32,
    /// Commit interval, ms.
    pub commit_interval: Ts,
    /// Idle timeout, ms.
    pub idle_timeout: Ts,
    /// Bytes of messages held for partitions being rebuilt before the consume
    /// loop stops receiving until the rebuild is done (default 256 MiB).
    pub rebuild_hold_max: u64,
    /// Extra librdkafka properties.
    pub properties: BTreeMap<String, String>,
}

/// HTTP settings, validated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpConfig {
    /// Listen address.
    pub listen: String,
    /// Bearer token for `/api/*`.
    #[serde(skip)]
    pub api_token: Option<String>,
    /// Lag threshold for readiness.
    pub ready_max_lag: u64,
}

/// The validated configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    /// Reporting currency and rates.
    #[serde(skip)]
    pub decode: DecodeConfig,
    /// Allowed lateness, ms (default 2h).
    pub allowed_lateness: Ts,
    /// Dedup horizon, ms (default 24h).
    pub dedup_horizon: Ts,
    /// Dunning grace, ms (default 14d).
    pub dunning_grace: Ts,
    /// Dormant after, ms (default 30d).
    pub dormant_after: Ts,
    /// Rolling window of business metrics, ms (default 30d).
    pub metrics_window: Ts,
    /// Distinct plan names, and segment names, kept per engine and exported
    /// to Prometheus; the rest are `(other)`.
    pub max_label_values: usize,
    /// Customers a sweep's population context is computed from, at most
    /// (about): [`crate::engine::sample_level`].
    pub population_sample: usize,
    /// Customers first seen in one minute of event time above which a
    /// warning is logged (per engine, i.e. per partition).
    pub new_customers_warn_per_minute: u64,
    /// Risk `high` below (default 40).
    pub risk_high_below: u8,
    /// Risk `medium` below (default 70).
    pub risk_medium_below: u8,
    /// Tunables per alert.
    pub alerts: Vec<AlertParams>,
    /// Per-plan alert tunables (fully resolved).
    pub plan_alerts: BTreeMap<String, Vec<AlertParams>>,
    /// Kafka.
    pub kafka: KafkaConfig,
    /// HTTP.
    pub http: HttpConfig,
    /// Shutdown grace, ms.
    pub shutdown_grace: Ts,
}

impl Default for Config {
    fn default() -> Self {
        RawConfig::default().validate().expect("defaults are valid")
    }
}

impl Config {
    /// Key features (default none); kept in [`DecodeConfig::key_features`],
    /// where decoding a usage event looks them up.
    pub fn key_features(&self) -> &[String] {
        &self.decode.key_features
    }

    /// Tunables of `kind` for a customer on `plan`.
    pub fn alert(&self, kind: AlertKind, plan: Option<&str>) -> &AlertParams {
        if let Some(p) = plan.and_then(|p| self.plan_alerts.get(p)) {
            return &p[kind as usize];
        }
        &self.alerts[kind as usize]
    }
}

impl Config {
    /// Every effective value, in the form of a config file (durations as a
    /// user writes them, alerts by name, per-plan tunables fully resolved):
    /// what `check-config` prints. Validating it gives this configuration
    /// again, except `http.api_token`, which is left out.
    pub fn effective(&self) -> RawConfig {
        let d = format_duration;
        let params = |p: &AlertParams| RawAlertParams {
            enabled: Some(p.enabled),
            severity: Some(p.severity.as_str().to_string()),
            fire: Some(p.fire),
            resolve: Some(p.resolve),
            min_baseline: Some(p.min_baseline),
            significance: Some(p.significance),
            // A window of 0 is that of an alert without one (`churned`,
            // `payment_failed`), which a file cannot set.
            window: (p.window > 0).then(|| d(p.window)),
        };
        let by_name = |ps: &[AlertParams]| -> BTreeMap<String, RawAlertParams> {
            AlertKind::ALL
                .iter()
                .map(|k| (k.name().to_string(), params(&ps[*k as usize])))
                .collect()
        };
        let k = &self.kafka;
        RawConfig {
            reporting_currency: Some(self.decode.reporting_currency.clone()),
            currency_rates: Some(
                self.decode
                    .currency_rates
                    .iter()
                    .map(|(c, r)| (c.clone(), *r))
                    .collect(),
            ),
            allowed_lateness: Some(d(self.allowed_lateness)),
            dedup_horizon: Some(d(self.dedup_horizon)),
            dunning_grace: Some(d(self.dunning_grace)),
            dormant_after: Some(d(self.dormant_after)),
            max_future_skew: self.decode.max_future_skew.map(d),
            max_message_bytes: Some(self.decode.max_message_bytes as u64),
            max_label_values: Some(self.max_label_values as u32),
            population_sample: Some(self.population_sample as u64),
            new_customers_warn_per_minute: Some(self.new_customers_warn_per_minute),
            key_features: Some(self.decode.key_features.clone()),
            metrics_window: Some(d(self.metrics_window)),
            risk_high_below: Some(self.risk_high_below),
            risk_medium_below: Some(self.risk_medium_below),
            alerts: by_name(&self.alerts),
            plans: self
                .plan_alerts
                .iter()
                .map(|(plan, ps)| (plan.clone(), by_name(ps)))
                .collect(),
            kafka: RawKafka {
                brokers: Some(k.brokers.clone()),
                group_id: Some(k.group_id.clone()),
                usage_topic: Some(k.usage_topic.clone()),
                billing_topic: Some(k.billing_topic.clone()),
                feedback_topic: Some(k.feedback_topic.clone()),
                alerts_topic: Some(k.alerts_topic.clone()),
                dlq_topic: Some(k.dlq_topic.clone()),
                fetch_wait_max_ms: Some(k.fetch_wait_max_ms),
                fetch_queue_backoff_ms: Some(k.fetch_queue_backoff_ms),
                commit_interval: Some(d(k.commit_interval)),
                idle_timeout: Some(d(k.idle_timeout)),
                rebuild_hold_max: Some(k.rebuild_hold_max),
                properties: k.properties.clone(),
            },
            http: RawHttp {
                listen: Some(self.http.listen.clone()),
                api_token: None,
                ready_max_lag: Some(self.http.ready_max_lag),
            },
            shutdown_grace: Some(d(self.shutdown_grace)),
        }
    }
}

fn env_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![format!(
                "cannot read config file {}: {e}",
                path.display()
            )])
        })?;
        toml::from_str(&text)
            .map_err(|e| ConfigErrors(vec![format!("config file {}: {e}", path.display())]))
    }

    /// Applies `CHURNWATCH_*` variables from `vars` (normally `std::env::vars()`).
    /// Unknown `CHURNWATCH_*` names are reported, so a typo does not pass silently.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        for (k, v) in vars {
            let Some(key) = k.strip_prefix("CHURNWATCH_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let num = |errors: &mut Vec<String>| -> Option<u64> {
                v.parse()
                    .map_err(|_| errors.push(format!("{k}={v:?}: expected a whole number")))
                    .ok()
            };
            match key.as_str() {
                "reporting_currency" => self.reporting_currency = Some(v.clone()),
                "currency_rates" => {
                    let mut rates = BTreeMap::new();
                    for pair in env_list(&v) {
                        match pair
                            .split_once('=')
                            .map(|(c, r)| (c.trim(), r.trim().parse::<f64>()))
                        {
                            Some((c, Ok(r))) => {
                                rates.insert(c.to_string(), r);
                            }
                            _ => errors
                                .push(format!("{k}: {pair:?} is not CODE=RATE (e.g. EUR=1.08)")),
                        }
                    }
                    self.currency_rates = Some(rates);
                }
                "allowed_lateness" => self.allowed_lateness = Some(v.clone()),
                "dedup_horizon" => self.dedup_horizon = Some(v.clone()),
                "dunning_grace" => self.dunning_grace = Some(v.clone()),
                "dormant_after" => self.dormant_after = Some(v.clone()),
                "max_future_skew" => self.max_future_skew = Some(v.clone()),
                "key_features" => self.key_features = Some(env_list(&v)),
                "max_message_bytes" => self.max_message_bytes = num(&mut errors),
                "max_label_values" => {
                    self.max_label_values =
                        num(&mut errors).map(|n| n.min(u64::from(u32::MAX)) as u32)
                }
                "population_sample" => self.population_sample = num(&mut errors),
                "new_customers_warn_per_minute" => {
                    self.new_customers_warn_per_minute = num(&mut errors)
                }
                "metrics_window" => self.metrics_window = Some(v.clone()),
                "risk_high_below" => {
                    self.risk_high_below = num(&mut errors).map(|n| n.min(255) as u8)
                }
                "risk_medium_below" => {
                    self.risk_medium_below = num(&mut errors).map(|n| n.min(255) as u8)
                }
                "shutdown_grace" => self.shutdown_grace = Some(v.clone()),
                "brokers" | "kafka_brokers" => self.kafka.brokers = Some(v.clone()),
                "group_id" | "kafka_group_id" => self.kafka.group_id = Some(v.clone()),
                "usage_topic" => self.kafka.usage_topic = Some(v.clone()),
                "billing_topic" => self.kafka.billing_topic = Some(v.clone()),
                "feedback_topic" => self.kafka.feedback_topic = Some(v.clone()),
                "alerts_topic" => self.kafka.alerts_topic = Some(v.clone()),
                "dlq_topic" => self.kafka.dlq_topic = Some(v.clone()),
                "fetch_wait_max_ms" => {
                    self.kafka.fetch_wait_max_ms = num(&mut errors).map(|n| n as u32)
                }
                "fetch_queue_backoff_ms" => {
                    self.kafka.fetch_queue_backoff_ms = num(&mut errors).map(|n| n as u32)
                }
                "commit_interval" => self.kafka.commit_interval = Some(v.clone()),
                "idle_timeout" => self.kafka.idle_timeout = Some(v.clone()),
                "rebuild_hold_max" | "kafka_rebuild_hold_max" => {
                    self.kafka.rebuild_hold_max = num(&mut errors)
                }
                "http_listen" | "listen" => self.http.listen = Some(v.clone()),
                "api_token" => self.http.api_token = Some(v.clone()),
                "ready_max_lag" => self.http.ready_max_lag = num(&mut errors),
                // Logging is read by the binary, not the config.
                "log" | "log_format" => {}
                _ => errors.push(format!(
                    "{k}: unknown setting (see the README's config reference)"
                )),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Checks every key and builds the typed [`Config`], listing every problem.
    pub fn validate(&self) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut dur = |key: &str, v: &Option<String>, default: &str, min: Ts| -> Ts {
            let s = v.as_deref().unwrap_or(default);
            match parse_duration(s) {
                Ok(ms) if ms < min => {
                    errors.push(format!(
                        "{key} = {s:?}: must be at least {}",
                        format_duration(min)
                    ));
                    0
                }
                Ok(ms) => ms,
                Err(e) => {
                    errors.push(format!("{key}: {e}"));
                    0
                }
            }
        };
        let allowed_lateness = dur("allowed_lateness", &self.allowed_lateness, "2h", 0);
        let dedup_horizon = dur("dedup_horizon", &self.dedup_horizon, "24h", 0);
        let dunning_grace = dur("dunning_grace", &self.dunning_grace, "14d", 1);
        let dormant_after = dur("dormant_after", &self.dormant_after, "30d", DAY_MS);
        let max_future_skew = dur("max_future_skew", &self.max_future_skew, "1h", 0);
        let metrics_window = dur("metrics_window", &self.metrics_window, "30d", DAY_MS);
        let shutdown_grace = dur("shutdown_grace", &self.shutdown_grace, "30s", 0);
        let commit_interval = dur(
            "kafka.commit_interval",
            &self.kafka.commit_interval,
            "1s",
            1,
        );
        let idle_timeout = dur("kafka.idle_timeout", &self.kafka.idle_timeout, "30s", 1);

        let reporting_currency = self
            .reporting_currency
            .clone()
            .unwrap_or_else(|| "USD".into());
        let is_code = |c: &str| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase());
        if !is_code(&reporting_currency) {
            errors.push(format!(
                "reporting_currency = {reporting_currency:?}: must be an ISO 4217 code like USD"
            ));
        }
        let mut currency_rates = FxHashMap::default();
        for (c, r) in self.currency_rates.iter().flatten() {
            if !is_code(c) {
                errors.push(format!("currency_rates.{c}: not an ISO 4217 code like EUR"));
            }
            if !(r.is_finite() && *r > 0.0) {
                errors.push(format!(
                    "currency_rates.{c} = {r}: must be a positive number"
                ));
            }
            currency_rates.insert(c.clone(), *r);
        }

        let risk_high_below = self.risk_high_below.unwrap_or(40);
        let risk_medium_below = self.risk_medium_below.unwrap_or(70);
        if risk_high_below > risk_medium_below || risk_medium_below > 100 {
            errors.push(format!(
                "risk_high_below = {risk_high_below}, risk_medium_below = {risk_medium_below}: need risk_high_below <= risk_medium_below <= 100"
            ));
        }

        let max_message_bytes = self
            .max_message_bytes
            .map_or(crate::event::DEFAULT_MAX_MESSAGE_BYTES, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            });
        if max_message_bytes < 1024 {
            errors.push(format!(
                "max_message_bytes = {max_message_bytes}: must be at least 1024"
            ));
        }
        let max_label_values = self.max_label_values.unwrap_or(100);
        if !(1..=10_000).contains(&max_label_values) {
            errors.push(format!(
                "max_label_values = {max_label_values}: must be 1 to 10000 (each value is a Prometheus series per gauge)"
            ));
        }
        let population_sample = self.population_sample.unwrap_or(10_000);
        if !(100..=10_000_000).contains(&population_sample) {
            errors.push(format!(
                "population_sample = {population_sample}: must be 100 to 10000000 (a percentile needs customers; each is sampled every day)"
            ));
        }
        let new_customers_warn_per_minute = self.new_customers_warn_per_minute.unwrap_or(1000);
        if new_customers_warn_per_minute == 0 {
            errors.push("new_customers_warn_per_minute: must be at least 1".into());
        }

        let key_features = self.key_features.clone().unwrap_or_default();
        if key_features.iter().any(|f| f.is_empty()) {
            errors.push("key_features: feature names must not be empty".into());
        }
        if key_features.len() > crate::event::MAX_KEY_FEATURES {
            errors.push(format!(
                "key_features: {} named, at most {} are supported",
                key_features.len(),
                crate::event::MAX_KEY_FEATURES
            ));
        }

        let mut alerts: Vec<AlertParams> =
            AlertKind::ALL.iter().map(|k| k.default_params()).collect();
        for (name, raw) in &self.alerts {
            match AlertKind::from_name(name) {
                Some(k) => merge_params(
                    &mut alerts[k as usize],
                    raw,
                    &format!("alerts.{name}"),
                    &mut errors,
                ),
                None => errors.push(format!(
                    "alerts.{name}: unknown alert; known alerts are {}",
                    AlertKind::ALL.map(|k| k.name()).join(", ")
                )),
            }
        }
        let mut plan_alerts = BTreeMap::new();
        for (plan, per_alert) in &self.plans {
            let mut p = alerts.clone();
            for (name, raw) in per_alert {
                match AlertKind::from_name(name) {
                    Some(k) => merge_params(
                        &mut p[k as usize],
                        raw,
                        &format!("plans.{plan}.{name}"),
                        &mut errors,
                    ),
                    None => errors.push(format!("plans.{plan}.{name}: unknown alert")),
                }
            }
            plan_alerts.insert(plan.clone(), p);
        }

        let k = &self.kafka;
        let topic = |key: &str, v: &Option<String>, default: &str, errors: &mut Vec<String>| {
            let t = v.clone().unwrap_or_else(|| default.to_string());
            let valid = !t.is_empty()
                && t.len() <= 249
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid {
                errors.push(format!(
                    "kafka.{key} = {t:?}: a topic name is 1-249 of [a-zA-Z0-9._-]"
                ));
            }
            t
        };
        let kafka = KafkaConfig {
            brokers: k.brokers.clone().unwrap_or_else(|| "127.0.0.1:9092".into()),
            group_id: k.group_id.clone().unwrap_or_else(|| "churnwatch".into()),
            usage_topic: topic("usage_topic", &k.usage_topic, "product.usage", &mut errors),
            billing_topic: topic(
                "billing_topic",
                &k.billing_topic,
                "billing.events",
                &mut errors,
            ),
            feedback_topic: topic(
                "feedback_topic",
                &k.feedback_topic,
                "customer.feedback",
                &mut errors,
            ),
            alerts_topic: topic(
                "alerts_topic",
                &k.alerts_topic,
                "churnwatch.alerts",
                &mut errors,
            ),
            dlq_topic: topic("dlq_topic", &k.dlq_topic, "churnwatch.dlq", &mut errors),
            fetch_wait_max_ms: k.fetch_wait_max_ms.unwrap_or(10),
            fetch_queue_backoff_ms: k.fetch_queue_backoff_ms.unwrap_or(10),
            commit_interval,
            idle_timeout,
            rebuild_hold_max: k.rebuild_hold_max.unwrap_or(DEFAULT_REBUILD_HOLD_MAX),
            properties: k.properties.clone(),
        };
        if kafka.rebuild_hold_max == 0 {
            errors.push(format!(
                "kafka.rebuild_hold_max = 0: must be at least 1 (bytes; default {DEFAULT_REBUILD_HOLD_MAX} = 256 MiB)"
            ));
        }
        if kafka.brokers.trim().is_empty() {
            errors.push("kafka.brokers: must name at least one host:port".into());
        }
        if kafka.group_id.trim().is_empty() {
            errors.push("kafka.group_id: must not be empty".into());
        }
        for reserved in [
            "group.id",
            "bootstrap.servers",
            "enable.auto.commit",
            "enable.auto.offset.store",
        ] {
            if kafka.properties.contains_key(reserved) {
                errors.push(format!(
                    "kafka.properties.\"{reserved}\": set by churnwatch itself; use the dedicated key or remove it"
                ));
            }
        }

        let listen = self
            .http
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:9464".into());
        if listen.parse::<std::net::SocketAddr>().is_err() {
            errors.push(format!(
                "http.listen = {listen:?}: expected an address like 0.0.0.0:9464"
            ));
        }
        if self.http.api_token.as_deref().is_some_and(|t| t.len() < 16) {
            errors.push("http.api_token: must be at least 16 characters".into());
        }
        let http = HttpConfig {
            listen,
            api_token: self.http.api_token.clone().filter(|t| !t.is_empty()),
            ready_max_lag: self.http.ready_max_lag.unwrap_or(10_000),
        };

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            decode: DecodeConfig {
                reporting_currency,
                currency_rates,
                key_features,
                max_future_skew: Some(max_future_skew),
                max_message_bytes,
            },
            max_label_values: max_label_values as usize,
            population_sample: population_sample as usize,
            new_customers_warn_per_minute,
            allowed_lateness,
            dedup_horizon,
            dunning_grace,
            dormant_after,
            metrics_window,
            risk_high_below,
            risk_medium_below,
            alerts,
            plan_alerts,
            kafka,
            http,
            shutdown_grace,
        })
    }
}

fn merge_params(p: &mut AlertParams, raw: &RawAlertParams, key: &str, errors: &mut Vec<String>) {
    if let Some(e) = raw.enabled {
        p.enabled = e;
    }
    if let Some(s) = &raw.severity {
        if let Some(severity) = AlertSeverity::from_name(s) {
            p.severity = severity;
        } else {
            errors.push(format!(
                "{key}.severity = {s:?}: expected info, warning or critical"
            ));
        }
    }
    for (name, src, dst) in [
        ("fire", raw.fire, &mut p.fire),
        ("resolve", raw.resolve, &mut p.resolve),
        ("min_baseline", raw.min_baseline, &mut p.min_baseline),
        ("significance", raw.significance, &mut p.significance),
    ] {
        if let Some(v) = src {
            if v.is_finite() && v >= 0.0 {
                *dst = v;
            } else {
                errors.push(format!("{key}.{name} = {v}: must be a number >= 0"));
            }
        }
    }
    if let Some(w) = &raw.window {
        match parse_duration(w) {
            Ok(ms) if ms > 0 => p.window = ms,
            Ok(_) => errors.push(format!("{key}.window: must be positive")),
            Err(e) => errors.push(format!("{key}.window: {e}")),
        }
    }
}

/// Loads file (optional) + environment, and validates.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
    let raw = match path {
        Some(p) => RawConfig::from_file(p)?,
        None => RawConfig::default(),
    };
    finish(raw, std::env::vars(), |_| {})
}

/// Applies `CHURNWATCH_*` variables from `env`, then `flags` (command-line
/// overrides), and validates, listing the environment's and the file's
/// problems together.
pub fn finish(
    mut raw: RawConfig,
    env: impl IntoIterator<Item = (String, String)>,
    flags: impl FnOnce(&mut RawConfig),
) -> Result<Config, ConfigErrors> {
    let mut errors = raw.apply_env(env).err().map(|e| e.0).unwrap_or_default();
    flags(&mut raw);
    match raw.validate() {
        Ok(c) if errors.is_empty() => Ok(c),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(e) => {
            errors.extend(e.0);
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("2h"), Ok(2 * HOUR_MS));
        assert_eq!(parse_duration("14d"), Ok(14 * DAY_MS));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert!(parse_duration("14").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(14 * DAY_MS), "14d");
        assert_eq!(format_duration(2 * HOUR_MS), "2h");
    }

    /// `check-config` prints [`Config::effective`] as TOML: every value, in
    /// a user's units, and reading it back gives the same configuration.
    #[test]
    fn the_effective_config_reads_back_as_the_same_configuration() {
        let text = r#"
key_features = ["reports", "exports"]
reporting_currency = "EUR"
currency_rates = { USD = 0.92 }
dunning_grace = "10d"
max_label_values = 50
[alerts.inactivity]
fire = 5
[plans.enterprise.engagement_drop]
window = "56d"
[kafka]
brokers = "k:9092"
commit_interval = "500ms"
[kafka.properties]
"session.timeout.ms" = "6000"
[http]
api_token = "0123456789abcdef0123"
"#;
        let raw: RawConfig = toml::from_str(text).expect("parses");
        let cfg = raw.validate().expect("valid");
        let out = toml::to_string(&cfg.effective()).expect("serialises");
        for want in [
            r#"dunning_grace = "10d""#,
            r#"dedup_horizon = "1d""#,
            r#"allowed_lateness = "2h""#,
            r#"key_features = ["reports", "exports"]"#,
            r#"reporting_currency = "EUR""#,
            "USD = 0.92",
            "max_label_values = 50",
            "[alerts.engagement_drop]",
            r#"window = "42d""#,
            "[plans.enterprise.engagement_drop]",
            r#"window = "56d""#,
            "fire = 5.0",
            r#"commit_interval = "500ms""#,
            r#""session.timeout.ms" = "6000""#,
        ] {
            assert!(out.contains(want), "{want} missing in:\n{out}");
        }
        assert!(
            !out.contains("0123456789abcdef"),
            "the token is never printed"
        );
        let again: RawConfig = toml::from_str(&out).expect("the output parses as a config");
        let cfg2 = again.validate().expect("the output is valid");
        assert_eq!(toml::to_string(&cfg2.effective()).expect("serialises"), out);
        assert_eq!(cfg2.alerts, cfg.alerts);
        assert_eq!(cfg2.plan_alerts, cfg.plan_alerts);
        assert_eq!(cfg2.decode.currency_rates, cfg.decode.currency_rates);
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::default();
        assert_eq!(c.allowed_lateness, 2 * HOUR_MS);
        assert_eq!(c.dedup_horizon, 24 * HOUR_MS);
        assert_eq!(c.dunning_grace, 14 * DAY_MS);
        assert_eq!(c.dormant_after, 30 * DAY_MS);
        assert!(c.key_features().is_empty());
        assert_eq!(c.decode.reporting_currency, "USD");
        assert_eq!(c.kafka.usage_topic, "product.usage");
        assert_eq!(c.kafka.dlq_topic, "churnwatch.dlq");
        assert_eq!(c.kafka.rebuild_hold_max, 256 << 20, "256 MiB");
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let raw: RawConfig = toml::from_str(
            r#"
            allowed_lateness = "soon"
            dunning_grace = "0s"
            reporting_currency = "dollars"
            risk_high_below = 80
            [alerts.engagement_drop]
            fire = -1.0
            [alerts.nonsense]
            enabled = false
            [kafka]
            alerts_topic = "bad topic"
            rebuild_hold_max = 0
            [http]
            listen = "nowhere"
            "#,
        )
        .unwrap();
        let mut raw = raw;
        raw.key_features = Some((0..65).map(|i| format!("f{i}")).collect());
        let errs = raw.validate().unwrap_err().0;
        let all = errs.join("\n");
        for key in [
            "key_features: 65 named, at most 64",
            "allowed_lateness",
            "dunning_grace",
            "reporting_currency",
            "risk_high_below",
            "alerts.engagement_drop.fire",
            "alerts.nonsense",
            "kafka.alerts_topic",
            "kafka.rebuild_hold_max",
            "http.listen",
        ] {
            assert!(all.contains(key), "missing {key} in:\n{all}");
        }
        assert_eq!(errs.len(), 10, "{all}");
    }

    #[test]
    fn severity_is_one_of_three_words() {
        let raw: RawConfig = toml::from_str(
            r#"
            [alerts.churned]
            severity = "loud"
            [plans.pro.detractor]
            severity = "info"
            "#,
        )
        .unwrap();
        let errs = raw.validate().unwrap_err().0;
        assert_eq!(
            errs,
            [r#"alerts.churned.severity = "loud": expected info, warning or critical"#]
        );
        let raw: RawConfig = toml::from_str("[plans.pro.detractor]\nseverity = \"info\"").unwrap();
        let c = raw.validate().unwrap();
        assert_eq!(
            c.alert(AlertKind::Detractor, Some("pro")).severity,
            AlertSeverity::Info
        );
        assert_eq!(
            c.alert(AlertKind::Detractor, None).severity,
            AlertSeverity::Warning
        );
    }

    #[test]
    fn environment_and_file_problems_are_listed_together() {
        let raw: RawConfig = toml::from_str("allowed_lateness = \"soon\"").unwrap();
        let env = [("CHURNWATCH_DUNING_GRACE".to_string(), "3d".to_string())];
        let errs = finish(raw, env, |_| {}).unwrap_err().0;
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].contains("CHURNWATCH_DUNING_GRACE") && errs[1].contains("allowed_lateness")
        );
        let flagged = finish(RawConfig::default(), [], |r| {
            r.kafka.brokers = Some("k:9092".into())
        })
        .unwrap();
        assert_eq!(flagged.kafka.brokers, "k:9092");
    }

    #[test]
    fn env_overrides_and_plan_overrides() {
        let mut raw: RawConfig = toml::from_str(
            r#"
            [plans.enterprise.engagement_drop]
            fire = 0.45
            "#,
        )
        .unwrap();
        raw.apply_env([
            (
                "CHURNWATCH_KEY_FEATURES".to_string(),
                "reports, exports".to_string(),
            ),
            ("CHURNWATCH_DUNNING_GRACE".to_string(), "7d".to_string()),
            (
                "CHURNWATCH_CURRENCY_RATES".to_string(),
                "EUR=1.08".to_string(),
            ),
            (
                "CHURNWATCH_KAFKA_REBUILD_HOLD_MAX".to_string(),
                "4096".to_string(),
            ),
            ("PATH".to_string(), "/bin".to_string()),
        ])
        .unwrap();
        let c = raw.validate().unwrap();
        assert_eq!(c.kafka.rebuild_hold_max, 4096);
        assert_eq!(c.key_features(), ["reports", "exports"]);
        assert_eq!(c.dunning_grace, 7 * DAY_MS);
        assert_eq!(c.decode.currency_rates.get("EUR"), Some(&1.08));
        assert_eq!(
            c.alert(AlertKind::EngagementDrop, Some("enterprise")).fire,
            0.45
        );
        assert_ne!(c.alert(AlertKind::EngagementDrop, Some("pro")).fire, 0.45);
        let mut raw = RawConfig::default();
        let err = raw
            .apply_env([("CHURNWATCH_DUNING_GRACE".to_string(), "7d".to_string())])
            .unwrap_err();
        assert!(err.to_string().contains("unknown setting"));
        let err = RawConfig::default()
            .apply_env([(
                "CHURNWATCH_REBUILD_HOLD_MAX".to_string(),
                "256MiB".to_string(),
            )])
            .unwrap_err();
        assert!(err.to_string().contains("CHURNWATCH_REBUILD_HOLD_MAX"));
    }
}
