//! The input event contract of `shared/EVENTS.md`: typed events, and a
//! decoder that turns raw bytes into an [`Event`] or a typed [`RejectReason`].
//!
//! Decoding never panics; every kind of bad input has its own reason, and
//! [`RejectReason::code`] is a low-cardinality label for metrics.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Event time: milliseconds since the Unix epoch, UTC.
pub type Ts = i64;

/// Milliseconds in one hour.
pub const HOUR_MS: Ts = 3_600_000;
/// Milliseconds in one day.
pub const DAY_MS: Ts = 86_400_000;
/// Longest accepted `customer_id`, in bytes.
pub const MAX_CUSTOMER_ID_BYTES: usize = 256;

/// Formats an event time as RFC 3339 UTC with second precision
/// (millisecond precision when the instant has a fractional second).
pub fn format_ts(ts: Ts) -> String {
    let dt = DateTime::<Utc>::from_timestamp_millis(ts).unwrap_or_default();
    let fmt = if ts.rem_euclid(1000) == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Millis
    };
    dt.to_rfc3339_opts(fmt, true)
}

/// Parses an RFC 3339 timestamp that carries a zone.
pub fn parse_ts(s: &str) -> Result<Ts, RejectReason> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(dt) => Ok(dt.timestamp_millis()),
        Err(e) => {
            let zoneless = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
                || NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").is_ok();
            if zoneless {
                Err(RejectReason::TimestampWithoutZone(s.to_string()))
            } else {
                Err(RejectReason::BadTimestamp(format!("{s:?}: {e}")))
            }
        }
    }
}

/// An id carried by every event (customer, event, ticket): held inline up
/// to 24 bytes, so that the common short id costs no allocation per event.
pub type Id = compact_str::CompactString;

/// One validated input event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// The customer the event is about (the Kafka key).
    pub customer_id: Id,
    /// Event time.
    pub ts: Ts,
    /// Optional producer id used for deduplication.
    pub event_id: Option<Id>,
    /// Segment carried by a billing event (`smb`, `enterprise`, ...).
    pub segment: Option<Box<str>>,
    /// What happened.
    pub kind: EventKind,
}

/// How a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelKind {
    /// The customer chose to leave.
    Voluntary,
    /// Billing ended it (dunning exhausted).
    Involuntary,
}

impl CancelKind {
    /// Contract spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelKind::Voluntary => "voluntary",
            CancelKind::Involuntary => "involuntary",
        }
    }
}

/// Support ticket severity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Severity {
    /// `low`
    Low,
    /// `normal` (default)
    Normal,
    /// `high`
    High,
    /// `urgent`
    Urgent,
}

/// Event-specific fields. Money is in minor units of the reporting currency
/// (already converted).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    /// Product usage.
    /// Only what the engine reads is kept, with no allocation: `action` is
    /// required and checked but not kept, `feature` only as the configured
    /// key feature it is, `user_id` as a hash ([`user_hash`]).
    Usage {
        /// Index in [`DecodeConfig::key_features`] of `feature`, when it is
        /// a configured key feature (other features are not tracked).
        key_feature: Option<u8>,
        /// Seat: [`user_hash`] of `user_id` (distinct active users are counted by it).
        user: Option<u32>,
        /// Weight, >= 0.
        quantity: f64,
    },
    /// New paying customer, or a reactivation.
    SubscriptionStarted {
        /// Plan name.
        plan: Box<str>,
        /// Monthly recurring revenue.
        mrr: i64,
    },
    /// Period renewed; MRR unchanged unless given.
    SubscriptionRenewed {
        /// Plan, when given.
        plan: Option<Box<str>>,
        /// MRR, when given.
        mrr: Option<i64>,
    },
    /// Upgrade or downgrade.
    PlanChanged {
        /// New plan.
        plan: Box<str>,
        /// New MRR.
        mrr: i64,
        /// Plan before, when the producer knows it.
        previous_plan: Option<Box<str>>,
        /// MRR before, when the producer knows it.
        previous_mrr: Option<i64>,
    },
    /// A payment failed: opens dunning.
    PaymentFailed {
        /// MRR at stake, when given.
        mrr: Option<i64>,
        /// Processor's reason.
        reason: Option<Box<str>>,
        /// Retry attempt number.
        attempt: Option<u32>,
    },
    /// A payment went through: closes dunning.
    PaymentSucceeded {
        /// Amount paid.
        amount: Option<i64>,
    },
    /// Money returned.
    RefundIssued {
        /// Amount refunded.
        amount: Option<i64>,
    },
    /// The customer churned.
    SubscriptionCancelled {
        /// Free-text reason.
        reason: Option<Box<str>>,
        /// Voluntary (default) or involuntary.
        cancel_kind: CancelKind,
    },
    /// Net promoter score 0..=10.
    Nps {
        /// Score.
        score: u8,
    },
    /// Satisfaction 1..=5.
    Csat {
        /// Score.
        score: u8,
    },
    /// Customer effort 1..=7 (higher is harder).
    Ces {
        /// Score.
        score: u8,
    },
    /// A support ticket opened or resolved.
    SupportTicket {
        /// Severity.
        severity: Severity,
        /// Ticket id; a repeated id is the same ticket.
        ticket_id: Option<Id>,
        /// `false` = opened, `true` = resolved.
        resolved: bool,
    },
}

impl EventKind {
    /// The contract's `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Usage { .. } => "usage",
            EventKind::SubscriptionStarted { .. } => "subscription_started",
            EventKind::SubscriptionRenewed { .. } => "subscription_renewed",
            EventKind::PlanChanged { .. } => "plan_changed",
            EventKind::PaymentFailed { .. } => "payment_failed",
            EventKind::PaymentSucceeded { .. } => "payment_succeeded",
            EventKind::RefundIssued { .. } => "refund_issued",
            EventKind::SubscriptionCancelled { .. } => "subscription_cancelled",
            EventKind::Nps { .. } => "nps",
            EventKind::Csat { .. } => "csat",
            EventKind::Ces { .. } => "ces",
            EventKind::SupportTicket { .. } => "support_ticket",
        }
    }

    /// Position of [`Self::type_name`] in [`EVENT_TYPES`].
    pub fn type_index(&self) -> usize {
        match self {
            EventKind::Usage { .. } => 0,
            EventKind::SubscriptionStarted { .. } => 1,
            EventKind::SubscriptionRenewed { .. } => 2,
            EventKind::PlanChanged { .. } => 3,
            EventKind::PaymentFailed { .. } => 4,
            EventKind::PaymentSucceeded { .. } => 5,
            EventKind::RefundIssued { .. } => 6,
            EventKind::SubscriptionCancelled { .. } => 7,
            EventKind::Nps { .. } => 8,
            EventKind::Csat { .. } => 9,
            EventKind::Ces { .. } => 10,
            EventKind::SupportTicket { .. } => 11,
        }
    }

    /// True for billing events.
    pub fn is_billing(&self) -> bool {
        matches!(
            self,
            EventKind::SubscriptionStarted { .. }
                | EventKind::SubscriptionRenewed { .. }
                | EventKind::PlanChanged { .. }
                | EventKind::PaymentFailed { .. }
                | EventKind::PaymentSucceeded { .. }
                | EventKind::RefundIssued { .. }
                | EventKind::SubscriptionCancelled { .. }
        )
    }
}

/// Every event `type` of the contract, for metrics and docs.
pub const EVENT_TYPES: [&str; 12] = [
    "usage",
    "subscription_started",
    "subscription_renewed",
    "plan_changed",
    "payment_failed",
    "payment_succeeded",
    "refund_issued",
    "subscription_cancelled",
    "nps",
    "csat",
    "ces",
    "support_ticket",
];

/// Why an input was rejected. Each kind of bad input has its own variant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RejectReason {
    /// The bytes are not UTF-8.
    #[error("event is not valid UTF-8")]
    NotUtf8,
    /// The bytes are not JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("event must be a JSON object")]
    NotAnObject,
    /// A required field is absent or null.
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// Field name.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// `customer_id` is the empty string.
    #[error("`customer_id` is empty")]
    EmptyCustomerId,
    /// `customer_id` is longer than 256 bytes.
    #[error("`customer_id` is {0} bytes long; at most 256 are allowed")]
    CustomerIdTooLong(usize),
    /// `ts` is not RFC 3339.
    #[error("`ts` is not an RFC 3339 timestamp: {0}")]
    BadTimestamp(String),
    /// `ts` has no zone.
    #[error("`ts` {0:?} has no time zone; add `Z` or an offset")]
    TimestampWithoutZone(String),
    /// `type` is not one the contract knows.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// A quantity or amount is negative.
    #[error("field `{0}` must not be negative")]
    Negative(&'static str),
    /// A score outside its scale.
    #[error("field `{field}` = {value} is outside {min}..={max}")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// Value seen.
        value: f64,
        /// Smallest allowed.
        min: u8,
        /// Largest allowed.
        max: u8,
    },
    /// A currency with no configured rate.
    #[error(
        "currency {0:?} has no configured rate to the reporting currency; add it to `currency_rates`"
    )]
    UnknownCurrency(String),
    /// Event time further ahead of the clock than `max_future_skew`: a
    /// producer with a broken clock. Never applied, so it cannot move the
    /// watermark (and event time) ahead for everyone.
    #[error(
        "ts {} is more than the allowed skew ahead of the clock ({}); fix the producer's clock, or raise `max_future_skew` (backtest: --allow-future for a file dated ahead)",
        format_ts(*ts), format_ts(*clock)
    )]
    TsInFuture {
        /// The event's time.
        ts: Ts,
        /// The clock it was compared with.
        clock: Ts,
    },
    /// The Kafka key names another customer than the body: the producer
    /// routes by something else, and the event would land on a stray
    /// customer (or another partition's).
    #[error(
        "message key {key:?} is not the event's customer_id {customer_id:?}; key messages by customer_id"
    )]
    KeyMismatch {
        /// The key (lossy UTF-8, at most 100 characters).
        key: String,
        /// The body's `customer_id`.
        customer_id: String,
    },
    /// A message larger than `max_message_bytes`, rejected unread.
    #[error("message is {len} bytes; at most {max} are accepted (`max_message_bytes`)")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// JSON nested deeper than [`MAX_DEPTH`] arrays and objects.
    #[error("JSON nested deeper than {MAX_DEPTH} arrays or objects")]
    TooDeep,
    /// `plan`, `previous_plan` or `segment` that cannot be a label value:
    /// longer than [`MAX_LABEL_BYTES`] or with a control character.
    #[error(
        "field `{field}` {why}; plan and segment names are labels: at most {MAX_LABEL_BYTES} bytes, printable"
    )]
    InvalidLabel {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A quantity or amount above its bound (see [`MAX_QUANTITY`], [`MAX_MONEY`]).
    #[error("field `{field}` = {value} is above its bound {max}")]
    ValueTooLarge {
        /// Field name.
        field: &'static str,
        /// Value seen.
        value: f64,
        /// The bound.
        max: f64,
    },
    /// A field with a value outside its allowed set.
    #[error("field `{field}` has invalid value {value:?}; expected {expected}")]
    InvalidValue {
        /// Field name.
        field: &'static str,
        /// Value seen.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

impl RejectReason {
    /// A stable, low-cardinality code for metrics and summaries.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::InvalidJson(_) => "invalid_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField(_) => "missing_field",
            RejectReason::WrongType { .. } => "wrong_type",
            RejectReason::EmptyCustomerId => "empty_customer_id",
            RejectReason::CustomerIdTooLong(_) => "customer_id_too_long",
            RejectReason::BadTimestamp(_) => "bad_timestamp",
            RejectReason::TimestampWithoutZone(_) => "timestamp_without_zone",
            RejectReason::UnknownType(_) => "unknown_type",
            RejectReason::Negative(_) => "negative_value",
            RejectReason::OutOfRange { .. } => "out_of_range",
            RejectReason::UnknownCurrency(_) => "unknown_currency",
            RejectReason::InvalidValue { .. } => "invalid_value",
            RejectReason::TsInFuture { .. } => "ts_in_future",
            RejectReason::KeyMismatch { .. } => "key_mismatch",
            RejectReason::TooLarge { .. } => "too_large",
            RejectReason::TooDeep => "too_deep",
            RejectReason::InvalidLabel { .. } => "invalid_label",
            RejectReason::ValueTooLarge { .. } => "value_too_large",
        }
    }

    /// Every code, for pre-registering metric series.
    pub const CODES: [&'static str; 20] = [
        "not_utf8",
        "invalid_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "empty_customer_id",
        "customer_id_too_long",
        "bad_timestamp",
        "timestamp_without_zone",
        "unknown_type",
        "negative_value",
        "out_of_range",
        "unknown_currency",
        "invalid_value",
        "ts_in_future",
        "key_mismatch",
        "too_large",
        "too_deep",
        "invalid_label",
        "value_too_large",
    ];
}

/// What the decoder needs to know: the reporting currency and the rates.
#[derive(Debug, Clone)]
pub struct DecodeConfig {
    /// ISO 4217 code money is reported in.
    pub reporting_currency: String,
    /// Minor units of the reporting currency per minor unit of the key.
    pub currency_rates: FxHashMap<String, f64>,
    /// The configured key features (`Config::key_features`), at most
    /// [`MAX_KEY_FEATURES`]: a usage event keeps which of them it used.
    pub key_features: Vec<String>,
    /// Events more than this far ahead of the machine's clock are rejected
    /// (`ts_in_future`); `None`: no guard (unit tests, `--allow-future`).
    pub max_future_skew: Option<Ts>,
    /// Larger messages are rejected unread (`too_large`).
    pub max_message_bytes: usize,
}

/// Default of `max_message_bytes`: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Deepest nesting of arrays and objects accepted (`too_deep` beyond).
pub const MAX_DEPTH: usize = 32;
/// Longest `plan`, `previous_plan` or `segment`, in bytes (`invalid_label` beyond).
pub const MAX_LABEL_BYTES: usize = 64;
/// Largest `quantity` of one usage event (`value_too_large` beyond).
pub const MAX_QUANTITY: f64 = 1e6;
/// Largest `mrr`, `previous_mrr` or `amount`, in minor units (about 11
/// billion in major units; `value_too_large` beyond), so that sums over
/// millions of customers stay exact in `i64`.
pub const MAX_MONEY: i64 = 1 << 40;

/// Most key features a config may name (a usage event keeps the index in a `u8`).
pub const MAX_KEY_FEATURES: usize = 64;

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            reporting_currency: "USD".into(),
            currency_rates: FxHashMap::default(),
            key_features: Vec::new(),
            max_future_skew: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// The 32-bit hash a usage event keeps of its `user_id`: active seats are
/// counted as distinct hashes.
pub fn user_hash(user_id: &str) -> u32 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(user_id) as u32
}

/// A JSON value as the decoder sees it: enough to give typed reasons
/// without building a `serde_json::Value` tree.
#[derive(Debug)]
enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool,
    Null,
    Compound,
}

impl<'de: 'a, 'a> Deserialize<'de> for Val<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Val<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val<'a>, E> {
                Ok(Val::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<'a>, E> {
                Ok(Val::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Val<'a>, E> {
                Ok(Val::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'a>, E> {
                Ok(Val::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'a>, E> {
                Ok(i64::try_from(v)
                    .map(Val::Int)
                    .unwrap_or(Val::Float(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val<'a>, E> {
                Ok(Val::Float(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Val<'a>, E> {
                Ok(Val::Bool)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Val<'a>, E> {
                Ok(Val::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Val<'a>, E> {
                Ok(Val::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Val<'a>, D2::Error> {
                Val::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Val<'a>, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Val::Compound)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Val<'a>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Val::Compound)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The raw object. Unknown fields are ignored; duplicate keys are invalid JSON.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<Val<'a>>,
    #[serde(borrow)]
    customer_id: Option<Val<'a>>,
    #[serde(borrow)]
    ts: Option<Val<'a>>,
    #[serde(borrow)]
    event_id: Option<Val<'a>>,
    #[serde(borrow)]
    segment: Option<Val<'a>>,
    #[serde(borrow)]
    action: Option<Val<'a>>,
    #[serde(borrow)]
    feature: Option<Val<'a>>,
    #[serde(borrow)]
    user_id: Option<Val<'a>>,
    #[serde(borrow)]
    quantity: Option<Val<'a>>,
    #[serde(borrow)]
    plan: Option<Val<'a>>,
    #[serde(borrow)]
    mrr: Option<Val<'a>>,
    #[serde(borrow)]
    currency: Option<Val<'a>>,
    #[serde(borrow)]
    previous_plan: Option<Val<'a>>,
    #[serde(borrow)]
    previous_mrr: Option<Val<'a>>,
    #[serde(borrow)]
    reason: Option<Val<'a>>,
    #[serde(borrow)]
    attempt: Option<Val<'a>>,
    #[serde(borrow)]
    amount: Option<Val<'a>>,
    #[serde(borrow)]
    cancel_kind: Option<Val<'a>>,
    #[serde(borrow)]
    score: Option<Val<'a>>,
    #[serde(borrow)]
    severity: Option<Val<'a>>,
    #[serde(borrow)]
    ticket_id: Option<Val<'a>>,
    #[serde(borrow)]
    status: Option<Val<'a>>,
}

fn present<'a, 'b>(v: &'b Option<Val<'a>>) -> Option<&'b Val<'a>> {
    match v {
        None | Some(Val::Null) => None,
        Some(v) => Some(v),
    }
}

fn req_str<'a, 'b>(v: &'b Option<Val<'a>>, field: &'static str) -> Result<&'b str, RejectReason> {
    match present(v) {
        None => Err(RejectReason::MissingField(field)),
        Some(Val::Str(s)) => Ok(s),
        Some(_) => Err(RejectReason::WrongType {
            field,
            expected: "a string",
        }),
    }
}

/// Whether `b` nests arrays and objects deeper than [`MAX_DEPTH`] (brackets
/// inside strings do not count). Most messages have fewer brackets than that
/// in all, which a SIMD search tells without the scan.
fn too_deep(b: &[u8]) -> bool {
    // A SIMD search (a typical event has one `{`, so about one pass).
    if memchr::memchr2_iter(b'[', b'{', b).nth(MAX_DEPTH).is_none() {
        return false;
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &c in b {
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    false
}

/// A plan or segment name: it becomes a Prometheus label value and an API key.
fn label<'b>(s: &'b str, field: &'static str) -> Result<&'b str, RejectReason> {
    if s.len() > MAX_LABEL_BYTES {
        return Err(RejectReason::InvalidLabel {
            field,
            why: format!("is {} bytes long", s.len()),
        });
    }
    if s.chars().any(char::is_control) {
        return Err(RejectReason::InvalidLabel {
            field,
            why: "contains a control character".into(),
        });
    }
    Ok(s)
}

fn opt_label(v: &Option<Val<'_>>, field: &'static str) -> Result<Option<Box<str>>, RejectReason> {
    opt_borrowed_str(v, field)?
        .map(|s| label(s, field).map(Box::from))
        .transpose()
}

/// An optional string field, owned as `T` (`Box<str>`, or [`Id`] for ids).
fn opt_str<T: for<'s> From<&'s str>>(
    v: &Option<Val<'_>>,
    field: &'static str,
) -> Result<Option<T>, RejectReason> {
    Ok(opt_borrowed_str(v, field)?.map(T::from))
}

fn opt_borrowed_str<'b>(
    v: &'b Option<Val<'_>>,
    field: &'static str,
) -> Result<Option<&'b str>, RejectReason> {
    match present(v) {
        None => Ok(None),
        Some(Val::Str(s)) => Ok(Some(s)),
        Some(_) => Err(RejectReason::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn opt_num(v: &Option<Val<'_>>, field: &'static str) -> Result<Option<f64>, RejectReason> {
    match present(v) {
        None => Ok(None),
        Some(Val::Int(i)) => Ok(Some(*i as f64)),
        Some(Val::Float(f)) if f.is_finite() => Ok(Some(*f)),
        Some(_) => Err(RejectReason::WrongType {
            field,
            expected: "a number",
        }),
    }
}

/// Money: a non-negative integer in minor units.
fn opt_money(v: &Option<Val<'_>>, field: &'static str) -> Result<Option<i64>, RejectReason> {
    let n = match present(v) {
        None => return Ok(None),
        Some(Val::Int(i)) => *i,
        Some(Val::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => *f as i64,
        Some(_) => {
            return Err(RejectReason::WrongType {
                field,
                expected: "an integer amount in minor units (cents)",
            });
        }
    };
    if n < 0 {
        return Err(RejectReason::Negative(field));
    }
    if n > MAX_MONEY {
        return Err(RejectReason::ValueTooLarge {
            field,
            value: n as f64,
            max: MAX_MONEY as f64,
        });
    }
    Ok(Some(n))
}

fn req_money(v: &Option<Val<'_>>, field: &'static str) -> Result<i64, RejectReason> {
    opt_money(v, field)?.ok_or(RejectReason::MissingField(field))
}

fn score(v: &Option<Val<'_>>, min: u8, max: u8) -> Result<u8, RejectReason> {
    let field = "score";
    let s = opt_num(v, field)?.ok_or(RejectReason::MissingField(field))?;
    if s.fract() != 0.0 {
        return Err(RejectReason::WrongType {
            field,
            expected: "an integer",
        });
    }
    if s < f64::from(min) || s > f64::from(max) {
        return Err(RejectReason::OutOfRange {
            field,
            value: s,
            min,
            max,
        });
    }
    Ok(s as u8)
}

/// Decodes one message or JSONL line.
pub fn decode(bytes: &[u8], cfg: &DecodeConfig) -> Result<Event, RejectReason> {
    if bytes.len() > cfg.max_message_bytes {
        return Err(RejectReason::TooLarge {
            len: bytes.len(),
            max: cfg.max_message_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| RejectReason::NotUtf8)?;
    decode_str(text, cfg)
}

/// [`decode`] for a Kafka message: a key, when there is one, must be the
/// event's `customer_id` (`key_mismatch` otherwise). A message without a
/// key is accepted.
pub fn decode_keyed(
    key: Option<&[u8]>,
    bytes: &[u8],
    cfg: &DecodeConfig,
) -> Result<Event, RejectReason> {
    let ev = decode(bytes, cfg)?;
    match key {
        Some(k) if k != ev.customer_id.as_bytes() => Err(RejectReason::KeyMismatch {
            key: String::from_utf8_lossy(k).chars().take(100).collect(),
            customer_id: ev.customer_id.to_string(),
        }),
        _ => Ok(ev),
    }
}

/// The machine's clock, ms since the epoch.
fn wall_clock_ms() -> Ts {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Ts)
}

/// Decodes one JSON object.
pub fn decode_str(text: &str, cfg: &DecodeConfig) -> Result<Event, RejectReason> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        // Distinguish "valid JSON but not an object" from garbage.
        return match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Err(RejectReason::NotAnObject),
            Err(e) => Err(RejectReason::InvalidJson(e.to_string())),
        };
    }
    if too_deep(text.as_bytes()) {
        return Err(RejectReason::TooDeep);
    }
    let raw: Raw<'_> =
        serde_json::from_str(text).map_err(|e| RejectReason::InvalidJson(e.to_string()))?;

    let customer_id = req_str(&raw.customer_id, "customer_id")?;
    if customer_id.is_empty() {
        return Err(RejectReason::EmptyCustomerId);
    }
    if customer_id.len() > MAX_CUSTOMER_ID_BYTES {
        return Err(RejectReason::CustomerIdTooLong(customer_id.len()));
    }
    let ty = req_str(&raw.ty, "type")?;
    let ts = parse_ts(req_str(&raw.ts, "ts")?)?;
    if let Some(skew) = cfg.max_future_skew {
        let clock = wall_clock_ms();
        if ts > clock.saturating_add(skew) {
            return Err(RejectReason::TsInFuture { ts, clock });
        }
    }
    let event_id = opt_str(&raw.event_id, "event_id")?;
    let segment = opt_label(&raw.segment, "segment")?;

    let kind = match ty {
        "usage" => {
            let quantity = opt_num(&raw.quantity, "quantity")?.unwrap_or(1.0);
            if quantity < 0.0 {
                return Err(RejectReason::Negative("quantity"));
            }
            if quantity > MAX_QUANTITY {
                return Err(RejectReason::ValueTooLarge {
                    field: "quantity",
                    value: quantity,
                    max: MAX_QUANTITY,
                });
            }
            req_str(&raw.action, "action")?;
            let feature = opt_borrowed_str(&raw.feature, "feature")?;
            EventKind::Usage {
                key_feature: feature.and_then(|f| {
                    cfg.key_features
                        .iter()
                        .position(|k| k == f)
                        .map(|i| i as u8)
                }),
                user: opt_borrowed_str(&raw.user_id, "user_id")?.map(user_hash),
                quantity,
            }
        }
        "subscription_started"
        | "subscription_renewed"
        | "plan_changed"
        | "payment_failed"
        | "payment_succeeded"
        | "refund_issued"
        | "subscription_cancelled" => decode_billing(ty, &raw, cfg)?,
        "nps" => EventKind::Nps {
            score: score(&raw.score, 0, 10)?,
        },
        "csat" => EventKind::Csat {
            score: score(&raw.score, 1, 5)?,
        },
        "ces" => EventKind::Ces {
            score: score(&raw.score, 1, 7)?,
        },
        "support_ticket" => {
            let severity = match opt_borrowed_str(&raw.severity, "severity")? {
                None | Some("normal") => Severity::Normal,
                Some("low") => Severity::Low,
                Some("high") => Severity::High,
                Some("urgent") => Severity::Urgent,
                Some(other) => {
                    return Err(RejectReason::InvalidValue {
                        field: "severity",
                        value: other.into(),
                        expected: "low, normal, high or urgent",
                    });
                }
            };
            let resolved = match opt_borrowed_str(&raw.status, "status")? {
                None | Some("opened") => false,
                Some("resolved") => true,
                Some(other) => {
                    return Err(RejectReason::InvalidValue {
                        field: "status",
                        value: other.into(),
                        expected: "opened or resolved",
                    });
                }
            };
            EventKind::SupportTicket {
                severity,
                ticket_id: opt_str(&raw.ticket_id, "ticket_id")?,
                resolved,
            }
        }
        other => return Err(RejectReason::UnknownType(other.chars().take(64).collect())),
    };
    Ok(Event {
        customer_id: Id::from(customer_id),
        ts,
        event_id,
        segment,
        kind,
    })
}

fn decode_billing(ty: &str, raw: &Raw<'_>, cfg: &DecodeConfig) -> Result<EventKind, RejectReason> {
    let rate = match opt_borrowed_str(&raw.currency, "currency")? {
        None => 1.0,
        Some(c) if c == cfg.reporting_currency => 1.0,
        Some(c) => *cfg
            .currency_rates
            .get(c)
            .ok_or_else(|| RejectReason::UnknownCurrency(c.chars().take(16).collect()))?,
    };
    let conv = |m: Option<i64>| m.map(|m| (m as f64 * rate).round() as i64);
    Ok(match ty {
        "subscription_started" => EventKind::SubscriptionStarted {
            plan: Box::from(label(req_str(&raw.plan, "plan")?, "plan")?),
            mrr: conv(Some(req_money(&raw.mrr, "mrr")?)).unwrap_or(0),
        },
        "subscription_renewed" => EventKind::SubscriptionRenewed {
            plan: opt_label(&raw.plan, "plan")?,
            mrr: conv(opt_money(&raw.mrr, "mrr")?),
        },
        "plan_changed" => EventKind::PlanChanged {
            plan: Box::from(label(req_str(&raw.plan, "plan")?, "plan")?),
            mrr: conv(Some(req_money(&raw.mrr, "mrr")?)).unwrap_or(0),
            previous_plan: opt_label(&raw.previous_plan, "previous_plan")?,
            previous_mrr: conv(opt_money(&raw.previous_mrr, "previous_mrr")?),
        },
        "payment_failed" => {
            let attempt = match opt_num(&raw.attempt, "attempt")? {
                None => None,
                Some(a) if a >= 1.0 && a.fract() == 0.0 && a <= f64::from(u32::MAX) => {
                    Some(a as u32)
                }
                Some(_) => {
                    return Err(RejectReason::WrongType {
                        field: "attempt",
                        expected: "a positive integer",
                    });
                }
            };
            EventKind::PaymentFailed {
                mrr: conv(opt_money(&raw.mrr, "mrr")?),
                reason: opt_str(&raw.reason, "reason")?,
                attempt,
            }
        }
        "payment_succeeded" => EventKind::PaymentSucceeded {
            amount: conv(opt_money(&raw.amount, "amount")?),
        },
        "refund_issued" => EventKind::RefundIssued {
            amount: conv(opt_money(&raw.amount, "amount")?),
        },
        _ => {
            let cancel_kind = match opt_borrowed_str(&raw.cancel_kind, "cancel_kind")? {
                None | Some("voluntary") => CancelKind::Voluntary,
                Some("involuntary") => CancelKind::Involuntary,
                Some(other) => {
                    return Err(RejectReason::InvalidValue {
                        field: "cancel_kind",
                        value: other.into(),
                        expected: "voluntary or involuntary",
                    });
                }
            };
            EventKind::SubscriptionCancelled {
                reason: opt_str(&raw.reason, "reason")?,
                cancel_kind,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_that_is_not_the_customer_id_is_rejected() {
        let line =
            br#"{"type":"usage","customer_id":"c-7","action":"a","ts":"2026-01-05T00:00:00Z"}"#;
        let cfg = DecodeConfig::default();
        assert!(decode_keyed(Some(b"c-7"), line, &cfg).is_ok());
        assert!(decode_keyed(None, line, &cfg).is_ok(), "no key: accepted");
        let err = decode_keyed(Some(b"c-1"), line, &cfg).unwrap_err();
        assert_eq!(err.code(), "key_mismatch");
        assert!(
            err.to_string().contains("\"c-1\"") && err.to_string().contains("\"c-7\""),
            "{err}"
        );
    }

    #[test]
    fn an_event_dated_ahead_of_the_clock_is_rejected_when_the_guard_is_on() {
        let now = super::wall_clock_ms();
        let line = |ts: Ts| {
            format!(
                r#"{{"type":"usage","customer_id":"c","action":"a","ts":"{}"}}"#,
                format_ts(ts)
            )
        };
        let cfg = DecodeConfig {
            max_future_skew: Some(3_600_000),
            ..DecodeConfig::default()
        };
        let far = parse_ts("2099-01-01T00:00:00Z").unwrap();
        let err = decode_str(&line(far), &cfg).unwrap_err();
        assert_eq!(err.code(), "ts_in_future");
        assert!(err.to_string().contains("2099-01-01T00:00:00"), "{err}");
        assert_eq!(
            decode_str(&line(now + 2 * 3_600_000), &cfg)
                .unwrap_err()
                .code(),
            "ts_in_future"
        );
        assert!(
            decode_str(&line(now + 1_800_000), &cfg).is_ok(),
            "within the skew"
        );
        assert!(
            decode_str(&line(now - 86_400_000), &cfg).is_ok(),
            "the past is fine"
        );
        assert!(
            decode_str(&line(far), &DecodeConfig::default()).is_ok(),
            "guard off"
        );
    }

    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Result<Event, RejectReason> {
        let mut cfg = DecodeConfig::default();
        cfg.currency_rates.insert("EUR".into(), 1.1);
        decode_str(s, &cfg)
    }

    fn code(s: &str) -> &'static str {
        d(s).expect_err("should be rejected").code()
    }

    #[test]
    fn usage_keeps_its_key_feature_index_and_a_user_hash() {
        let cfg = DecodeConfig {
            key_features: vec!["exports".into(), "reports".into()],
            ..DecodeConfig::default()
        };
        let line = |feature: &str| {
            format!(
                r#"{{"type":"usage","customer_id":"c","user_id":"u-77","action":"a","feature":"{feature}","ts":"2026-11-24T10:00:00Z"}}"#
            )
        };
        let kind = |feature: &str| decode_str(&line(feature), &cfg).unwrap().kind;
        assert_eq!(
            kind("reports"),
            EventKind::Usage {
                key_feature: Some(1),
                user: Some(user_hash("u-77")),
                quantity: 1.0
            }
        );
        assert!(matches!(
            kind("exports"),
            EventKind::Usage {
                key_feature: Some(0),
                ..
            }
        ));
        assert!(matches!(
            kind("billing"),
            EventKind::Usage {
                key_feature: None,
                ..
            }
        ));
        assert_ne!(user_hash("u-77"), user_hash("u-78"));
        // `action` is required, and must be a string, though it is not kept.
        let no_action = r#"{"type":"usage","customer_id":"c","ts":"2026-11-24T10:00:00Z"}"#;
        assert_eq!(
            decode_str(no_action, &cfg).unwrap_err().code(),
            "missing_field"
        );
        let bad_user = r#"{"type":"usage","customer_id":"c","action":"a","user_id":7,"ts":"2026-11-24T10:00:00Z"}"#;
        assert_eq!(decode_str(bad_user, &cfg).unwrap_err().code(), "wrong_type");
    }

    #[test]
    fn decodes_every_contract_example() {
        let e = d(r#"{"type":"usage","customer_id":"c-4821","user_id":"u-77","action":"report_exported","feature":"reports","quantity":1,"ts":"2026-11-24T10:00:00Z","event_id":"e-123"}"#).unwrap();
        assert_eq!(&*e.customer_id, "c-4821");
        assert_eq!(format_ts(e.ts), "2026-11-24T10:00:00Z");
        assert!(matches!(e.kind, EventKind::Usage { quantity, .. } if quantity == 1.0));
        let e = d(r#"{"type":"payment_failed","customer_id":"c-4821","plan":"pro","mrr":4900,"currency":"USD","reason":"card_declined","ts":"2026-11-24T10:00:00Z"}"#).unwrap();
        assert!(matches!(
            e.kind,
            EventKind::PaymentFailed {
                mrr: Some(4900),
                ..
            }
        ));
        let e = d(
            r#"{"type":"nps","customer_id":"c-4821","score":4,"ts":"2026-11-24T10:00:00+01:00"}"#,
        )
        .unwrap();
        assert_eq!(format_ts(e.ts), "2026-11-24T09:00:00Z");
        let e = d(r#"{"type":"subscription_started","customer_id":"c","plan":"pro","mrr":1000,"currency":"EUR","ts":"2026-11-24T10:00:00Z","extra":{"x":[1,2]}}"#).unwrap();
        assert!(matches!(
            e.kind,
            EventKind::SubscriptionStarted { mrr: 1100, .. }
        ));
        let e = d(r#"{"type":"support_ticket","customer_id":"c","ts":"2026-11-24T10:00:00Z","severity":"urgent","ticket_id":"t1","status":"resolved"}"#).unwrap();
        assert!(matches!(
            e.kind,
            EventKind::SupportTicket {
                severity: Severity::Urgent,
                resolved: true,
                ..
            }
        ));
        let e = d(r#"{"type":"subscription_cancelled","customer_id":"c","ts":"2026-11-24T10:00:00Z","cancel_kind":"involuntary"}"#).unwrap();
        assert!(matches!(
            e.kind,
            EventKind::SubscriptionCancelled {
                cancel_kind: CancelKind::Involuntary,
                ..
            }
        ));
    }

    #[test]
    fn type_index_matches_the_type_table() {
        let kinds = [
            EventKind::Usage {
                key_feature: None,
                user: None,
                quantity: 1.0,
            },
            EventKind::SubscriptionStarted {
                plan: "p".into(),
                mrr: 1,
            },
            EventKind::SubscriptionRenewed {
                plan: None,
                mrr: None,
            },
            EventKind::PlanChanged {
                plan: "p".into(),
                mrr: 1,
                previous_plan: None,
                previous_mrr: None,
            },
            EventKind::PaymentFailed {
                mrr: None,
                reason: None,
                attempt: None,
            },
            EventKind::PaymentSucceeded { amount: None },
            EventKind::RefundIssued { amount: None },
            EventKind::SubscriptionCancelled {
                reason: None,
                cancel_kind: CancelKind::Voluntary,
            },
            EventKind::Nps { score: 1 },
            EventKind::Csat { score: 1 },
            EventKind::Ces { score: 1 },
            EventKind::SupportTicket {
                severity: Severity::Low,
                ticket_id: None,
                resolved: false,
            },
        ];
        for k in &kinds {
            assert_eq!(EVENT_TYPES[k.type_index()], k.type_name());
        }
    }

    #[test]
    fn each_bad_input_has_its_own_reason() {
        let ok_tail = r#""ts":"2026-11-24T10:00:00Z","action":"login""#;
        assert_eq!(code("{not json"), "invalid_json");
        assert_eq!(code("[1,2]"), "not_an_object");
        assert_eq!(code("42"), "not_an_object");
        assert_eq!(
            code(&format!(r#"{{"type":"usage",{ok_tail}}}"#)),
            "missing_field"
        );
        assert_eq!(
            code(&format!(r#"{{"type":"usage","customer_id":"",{ok_tail}}}"#)),
            "empty_customer_id"
        );
        assert_eq!(
            code(&format!(r#"{{"type":"usage","customer_id":7,{ok_tail}}}"#)),
            "wrong_type"
        );
        let long = "x".repeat(257);
        assert_eq!(
            code(&format!(
                r#"{{"type":"usage","customer_id":"{long}",{ok_tail}}}"#
            )),
            "customer_id_too_long"
        );
        let fine = "x".repeat(256);
        assert!(
            d(&format!(
                r#"{{"type":"usage","customer_id":"{fine}",{ok_tail}}}"#
            ))
            .is_ok()
        );
        assert_eq!(
            code(r#"{"type":"usage","customer_id":"c","ts":"yesterday","action":"a"}"#),
            "bad_timestamp"
        );
        assert_eq!(
            code(r#"{"type":"usage","customer_id":"c","ts":"2026-11-24T10:00:00","action":"a"}"#),
            "timestamp_without_zone"
        );
        assert_eq!(
            code(r#"{"type":"bogus","customer_id":"c","ts":"2026-11-24T10:00:00Z"}"#),
            "unknown_type"
        );
        assert_eq!(
            code(&format!(
                r#"{{"type":"usage","customer_id":"c",{ok_tail},"quantity":-1}}"#
            )),
            "negative_value"
        );
        assert_eq!(
            code(&format!(
                r#"{{"type":"usage","customer_id":"c",{ok_tail},"quantity":"many"}}"#
            )),
            "wrong_type"
        );
        assert_eq!(
            code(
                r#"{"type":"subscription_started","customer_id":"c","ts":"2026-11-24T10:00:00Z","plan":"p","mrr":-5}"#
            ),
            "negative_value"
        );
        assert_eq!(
            code(
                r#"{"type":"subscription_started","customer_id":"c","ts":"2026-11-24T10:00:00Z","plan":"p","mrr":"lots"}"#
            ),
            "wrong_type"
        );
        assert_eq!(
            code(r#"{"type":"nps","customer_id":"c","ts":"2026-11-24T10:00:00Z","score":11}"#),
            "out_of_range"
        );
        assert_eq!(
            code(r#"{"type":"csat","customer_id":"c","ts":"2026-11-24T10:00:00Z","score":0}"#),
            "out_of_range"
        );
        assert_eq!(
            code(
                r#"{"type":"subscription_started","customer_id":"c","ts":"2026-11-24T10:00:00Z","plan":"p","mrr":5,"currency":"XYZ"}"#
            ),
            "unknown_currency"
        );
        assert_eq!(
            code(
                r#"{"type":"support_ticket","customer_id":"c","ts":"2026-11-24T10:00:00Z","severity":"meh"}"#
            ),
            "invalid_value"
        );
        assert_eq!(
            decode(&[0xff, 0xfe], &DecodeConfig::default())
                .unwrap_err()
                .code(),
            "not_utf8"
        );
    }

    #[test]
    fn reject_messages_tell_what_to_do() {
        let e = d(r#"{"type":"usage","customer_id":"c","ts":"2026-11-24T10:00:00","action":"a"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("add `Z`"), "{e}");
        let e = d(r#"{"type":"subscription_started","customer_id":"c","ts":"2026-11-24T10:00:00Z","plan":"p","mrr":5,"currency":"XYZ"}"#).unwrap_err();
        assert!(e.to_string().contains("currency_rates"), "{e}");
    }

    /// Issue 12: valid JSON, wrong values, each with its own reason.
    #[test]
    fn hostile_values_get_their_own_reason() {
        let ts = r#""ts":"2026-11-24T10:00:00Z""#;
        // Too large: rejected before it is read as UTF-8 or JSON.
        let cfg = DecodeConfig {
            max_message_bytes: 2048,
            ..DecodeConfig::default()
        };
        let mut big =
            format!(r#"{{"type":"usage","customer_id":"c","action":"a",{ts},"pad":""#).into_bytes();
        big.resize(2049, b'x');
        let e = decode(&big, &cfg).unwrap_err();
        assert_eq!(e.code(), "too_large", "{e}");
        assert!(e.to_string().contains("2049 bytes"), "{e}");
        // Nesting: counted outside strings only.
        let nest = |n: usize| {
            format!(
                r#"{{"type":"usage","customer_id":"c","action":"a",{ts},"x":{}1{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(
            d(&nest(MAX_DEPTH - 1)).is_ok(),
            "the object itself is one level"
        );
        assert_eq!(code(&nest(MAX_DEPTH)), "too_deep");
        let in_string = format!(
            r#"{{"type":"usage","customer_id":"c","action":"{}\"{{",{ts}}}"#,
            "[".repeat(100)
        );
        assert!(d(&in_string).is_ok(), "brackets inside strings do not nest");
        // Labels: plan, previous_plan, segment.
        let long = "p".repeat(MAX_LABEL_BYTES + 1);
        let e = d(&format!(
            r#"{{"type":"subscription_started","customer_id":"c","plan":"{long}","mrr":5,{ts}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.code(), "invalid_label");
        assert!(e.to_string().contains("`plan` is 65 bytes long"), "{e}");
        let ok = "p".repeat(MAX_LABEL_BYTES);
        assert!(
            d(&format!(
                r#"{{"type":"subscription_started","customer_id":"c","plan":"{ok}","mrr":5,{ts}}}"#
            ))
            .is_ok()
        );
        assert_eq!(
            code(&format!(
                r#"{{"type":"usage","customer_id":"c","action":"a","segment":"s\u0007",{ts}}}"#
            )),
            "invalid_label"
        );
        assert_eq!(
            code(&format!(
                r#"{{"type":"plan_changed","customer_id":"c","plan":"a","mrr":5,"previous_plan":"{long}",{ts}}}"#
            )),
            "invalid_label"
        );
        // Bounds.
        let e = d(&format!(
            r#"{{"type":"subscription_started","customer_id":"c","plan":"p","mrr":1e15,{ts}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.code(), "value_too_large", "{e}");
        assert!(d(&format!(r#"{{"type":"subscription_started","customer_id":"c","plan":"p","mrr":{MAX_MONEY},{ts}}}"#)).is_ok());
        assert_eq!(
            code(&format!(
                r#"{{"type":"refund_issued","customer_id":"c","amount":{},{ts}}}"#,
                MAX_MONEY + 1
            )),
            "value_too_large"
        );
        assert_eq!(
            code(&format!(
                r#"{{"type":"usage","customer_id":"c","action":"a","quantity":1e9,{ts}}}"#
            )),
            "value_too_large"
        );
        assert!(
            d(&format!(
                r#"{{"type":"usage","customer_id":"c","action":"a","quantity":1e6,{ts}}}"#
            ))
            .is_ok()
        );
    }

    const VALID: &str = r#"{"type":"usage","customer_id":"c-1","user_id":"u-7","action":"login","feature":"reports","quantity":2.5,"ts":"2026-11-24T10:00:00Z","event_id":"e-1"}"#;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, &DecodeConfig::default());
        }

        #[test]
        fn mutated_valid_events_never_panic(pos in 0usize..VALID.len(), len in 0usize..12, ins in "[ -~]{0,8}") {
            let mut s = VALID.as_bytes().to_vec();
            let end = (pos + len).min(s.len());
            s.splice(pos..end, ins.bytes());
            let _ = decode(&s, &DecodeConfig::default());
        }

        #[test]
        fn valid_events_roundtrip_their_fields(cid in "[a-z0-9-]{1,40}", q in 0.0f64..1e6, secs in 0i64..4_000_000_000i64) {
            let ts = format_ts(secs * 1000);
            let line = serde_json::json!({"type":"usage","customer_id":cid,"action":"a","quantity":q,"ts":ts}).to_string();
            let e = decode_str(&line, &DecodeConfig::default()).unwrap();
            prop_assert_eq!(&*e.customer_id, cid.as_str());
            prop_assert_eq!(e.ts, secs * 1000);
        }
    }
}
