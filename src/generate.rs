//! `churnwatch generate`: a deterministic generator of realistic traffic
//! (usage, billing and feedback events of `shared/EVENTS.md`, one JSON object
//! per line) plus a labels file naming the injected churn stories.
//!
//! Same [`GenerateOptions`] (seed included) give byte-identical output. The
//! generator walks the period one day at a time, keeps a small state per
//! customer, and emits lines in arrival order through a callback, so a
//! million customers never sit in memory as events.
//!
//! # The simulated population
//! - Plans and MRR (cents): `free` 0, `starter` 2900, `pro` 9900, `business`
//!   49900, `enterprise` 199900; segment `smb` / `mid_market` / `enterprise`
//!   on every billing event. Seats (distinct `user_id`s) from 1 to 400, a few
//!   power users doing most of the work (Zipf-like).
//! - Activity per active day is log-normal across customers (orders of
//!   magnitude), weekends are quieter, and one shared **quiet week** (see
//!   [`GenerateOptions::quiet_week_start_day`]) cuts everybody's usage to
//!   [`GenerateOptions::quiet_factor`] (a holiday week).
//! - Rhythms: daily users; users active every 2-5 days; **weekend-idle**
//!   customers (no usage on Saturday or Sunday, UTC); **bursty** low-activity
//!   customers (one-day bursts, median gap 21 days between bursts).
//! - Customers present from the start (first billing event is a monthly
//!   renewal in the first month; free ones have no billing events) and new
//!   customers joining during the period (`subscription_started`).
//! - Monthly billing: `subscription_renewed` + `payment_succeeded` on the
//!   anniversary; free plans are not billed.
//! - Features: `dashboard`, `reports`, `exports`, `search`, `api`,
//!   `integrations`, `collaboration`, `editor`, `settings`, plus `login`
//!   without a feature. **Key features are `reports` and `exports`** (the
//!   evaluation config sets `key_features = ["reports","exports"]`): a
//!   customer either never uses a key feature or uses it again within 2-5
//!   active days.
//! - Feedback at low rates: NPS 7-10, CSAT 3-5, CES 1-5 for healthy
//!   customers; support tickets (`low`/`normal`/`high`, never `urgent`) at
//!   most one per 10 days, each resolved (same `ticket_id`) within 3 days.
//! - Late events: [`GenerateOptions::late_fraction`] of the events arrive 1-60
//!   minutes after later events (within the default 2 h lateness); one in
//!   twenty of those arrives 2-8 h late instead. Duplicates:
//!   [`GenerateOptions::dup_fraction`] of the events are sent twice, byte for
//!   byte, the copy 1 s to 10 min later, always with an `event_id`.
//!
//! # Stories and labels
//! See [`Story`] for each story's onset and alerts, and [`Label`] for the
//! labels file. Healthy customers show none of the story patterns.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Months, Utc};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::event::{DAY_MS, HOUR_MS, Ts, format_ts, parse_ts};

const MINUTE_MS: Ts = 60_000;
const SECOND_MS: Ts = 1_000;

/// Plans and their MRR in cents, cheapest first.
pub const PLANS: [(&str, i64); 5] = [
    ("free", 0),
    ("starter", 2900),
    ("pro", 9900),
    ("business", 49900),
    ("enterprise", 199900),
];

/// The key features the stories and the evaluation config use.
pub const KEY_FEATURES: [&str; 2] = ["reports", "exports"];

/// Dunning grace the labels assume for involuntary churn (the service default).
pub const DUNNING_GRACE_MS: Ts = 14 * DAY_MS;

/// Least history before a story's onset: 9 weeks plus 5 days, so an
/// 8-week baseline exists.
const MIN_HISTORY_MS: Ts = 68 * DAY_MS;

/// Share of a seat-loss customer's events made by the seats it loses.
/// Share of a seat-loss customer's events its leaving seats carry, unless
/// its story says otherwise.
const SEAT_LOSS_LIGHT_SHARE: f64 = 0.15;

/// Usage features: (feature, actions, base weight). Index 0 is a plain login.
const FEATURES: [(Option<&str>, &[&str], f64); 10] = [
    (None, &["login"], 0.14),
    (Some("dashboard"), &["dashboard_viewed"], 0.22),
    (
        Some("reports"),
        &["report_viewed", "report_created", "report_scheduled"],
        0.0,
    ),
    (Some("exports"), &["csv_exported", "pdf_exported"], 0.0),
    (Some("search"), &["search_run"], 0.12),
    (Some("api"), &["api_call"], 0.10),
    (Some("integrations"), &["sync_completed"], 0.05),
    (
        Some("collaboration"),
        &["comment_added", "user_invited"],
        0.08,
    ),
    (Some("editor"), &["document_edited"], 0.07),
    (Some("settings"), &["settings_changed"], 0.02),
];
const F_DASHBOARD: u8 = 1;
/// Index in [`FEATURES`] of key feature `k` (0 = reports, 1 = exports).
const fn key_feature_index(k: usize) -> u8 {
    2 + k as u8
}

/// How much traffic per customer.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Realistic volumes (about 5-10 events per customer per day on average).
    #[default]
    Standard,
    /// Few events per customer (about 10 over 4 weeks) for memory benchmarks
    /// with a million customers; 28 days by default, so no stories fit.
    Light,
    /// A shop's purchase log (365 days by default): usage events only, one
    /// per order; most customers order once, repeat buyers every few weeks
    /// to months, and each may stop after any order. No stories and no
    /// labels: who churned is read from what follows a cut-off.
    Retail,
}

/// Command-line arguments of `churnwatch generate`.
#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Random seed; the same seed and arguments give byte-identical output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of customers (ids `c-000000`, `c-000001`, ...).
    #[arg(long, default_value_t = 2000)]
    pub customers: u32,
    /// Length of the period in days [default: 120, or 28 with `--profile light`].
    #[arg(long)]
    pub days: Option<u32>,
    /// First instant of the period, RFC 3339 (the default is a Monday).
    #[arg(long, default_value = "2026-01-05T00:00:00Z")]
    pub start: String,
    /// Where the events go, JSONL; `-` is stdout.
    #[arg(long, short, default_value = "-")]
    pub out: PathBuf,
    /// Where the story labels go, JSONL (not written when absent).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Share of events that arrive late (after later events).
    #[arg(long, default_value_t = 0.01)]
    pub late_fraction: f64,
    /// Share of events that carry an `event_id` and are sent twice.
    #[arg(long, default_value_t = 0.05)]
    pub dup_fraction: f64,
    /// Share of customers (among those with enough history) given a churn story.
    #[arg(long, default_value_t = 0.3)]
    pub story_fraction: f64,
    /// Traffic profile.
    #[arg(long, value_enum, default_value_t = Profile::Standard)]
    pub profile: Profile,
    /// Multiplies every customer's usage volume (story customers keep the
    /// minimum volume their story needs to be detectable).
    #[arg(long, default_value_t = 1.0)]
    pub events_per_customer_scale: f64,
    /// Day (0-based, from `--start`) the shared quiet week starts
    /// [default: day 42 when the period has at least 70 days, else a week in the middle].
    #[arg(long)]
    pub quiet_week_start_day: Option<u32>,
    /// Usage multiplier in the quiet week (1 disables it).
    #[arg(long, default_value_t = 0.4)]
    pub quiet_factor: f64,
}

impl Default for GenerateArgs {
    fn default() -> Self {
        Self {
            seed: 42,
            customers: 2000,
            days: None,
            start: "2026-01-05T00:00:00Z".into(),
            out: PathBuf::from("-"),
            labels: None,
            late_fraction: 0.01,
            dup_fraction: 0.05,
            story_fraction: 0.3,
            profile: Profile::Standard,
            events_per_customer_scale: 1.0,
            quiet_week_start_day: None,
            quiet_factor: 0.4,
        }
    }
}

/// Validated generator settings. Build with [`GenerateArgs::options`] or
/// start from [`GenerateOptions::default`] and change fields.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Random seed.
    pub seed: u64,
    /// Number of customers.
    pub customers: u32,
    /// Length of the period in days.
    pub days: u32,
    /// First instant of the period.
    pub start: Ts,
    /// Share of events that arrive late.
    pub late_fraction: f64,
    /// Share of events sent twice with the same `event_id`.
    pub dup_fraction: f64,
    /// Share of eligible customers given a story.
    pub story_fraction: f64,
    /// Traffic profile.
    pub profile: Profile,
    /// Usage volume multiplier.
    pub activity_scale: f64,
    /// First day of the shared quiet week, `None` for no quiet week.
    pub quiet_week_start_day: Option<u32>,
    /// Usage multiplier in the quiet week.
    pub quiet_factor: f64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateArgs::default()
            .options()
            .expect("default arguments are valid")
    }
}

impl GenerateOptions {
    /// The instant the period ends (exclusive); no event is at or after it.
    pub fn end(&self) -> Ts {
        self.start + Ts::from(self.days) * DAY_MS
    }

    /// The shared quiet week `[start, end)`, if any.
    pub fn quiet_week(&self) -> Option<(Ts, Ts)> {
        self.quiet_week_start_day.map(|d| {
            let s = self.start + Ts::from(d) * DAY_MS;
            (s, s + 7 * DAY_MS)
        })
    }
}

impl GenerateArgs {
    /// Validates the arguments, reporting every bad one at once.
    pub fn options(&self) -> Result<GenerateOptions, GenerateError> {
        let mut errors = Vec::new();
        let days = self.days.unwrap_or(match self.profile {
            Profile::Standard => 120,
            Profile::Light => 28,
            Profile::Retail => 365,
        });
        if days == 0 {
            errors.push("--days: must be at least 1".to_string());
        }
        let start = match parse_ts(&self.start) {
            Ok(ts) => ts,
            Err(e) => {
                errors.push(format!(
                    "--start: {e}; give an RFC 3339 instant such as 2026-01-05T00:00:00Z"
                ));
                0
            }
        };
        for (name, v) in [
            ("--late-fraction", self.late_fraction),
            ("--dup-fraction", self.dup_fraction),
            ("--story-fraction", self.story_fraction),
            ("--quiet-factor", self.quiet_factor),
        ] {
            if !(0.0..=1.0).contains(&v) {
                errors.push(format!("{name}: {v} is not between 0 and 1"));
            }
        }
        let scale = self.events_per_customer_scale;
        if !(scale.is_finite() && scale > 0.0 && scale <= 1000.0) {
            errors.push(format!(
                "--events-per-customer-scale: {scale} must be above 0 and at most 1000"
            ));
        }
        let quiet = match self.quiet_week_start_day {
            Some(d) if d.saturating_add(7) > days => {
                errors.push(format!(
                    "--quiet-week-start-day: day {d} + 7 is past the end of the {days}-day period"
                ));
                None
            }
            Some(d) => Some(d),
            None if days >= 70 => Some(42),
            None if days >= 14 => Some((days / 2 - 3) / 7 * 7),
            None => None,
        };
        if !errors.is_empty() {
            return Err(GenerateError::InvalidArgs(errors.join("; ")));
        }
        let profile_scale = match self.profile {
            Profile::Standard | Profile::Retail => 1.0,
            Profile::Light => 0.06,
        };
        Ok(GenerateOptions {
            seed: self.seed,
            customers: self.customers,
            days,
            start,
            late_fraction: self.late_fraction,
            dup_fraction: self.dup_fraction,
            story_fraction: self.story_fraction,
            profile: self.profile,
            activity_scale: scale * profile_scale,
            quiet_week_start_day: quiet,
            quiet_factor: self.quiet_factor,
        })
    }
}

/// What can go wrong in `generate`.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Bad arguments (all of them, separated by `; `).
    #[error("invalid generate arguments: {0}")]
    InvalidArgs(String),
    /// A file could not be written or read.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// `write` or `read`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A labels line is not a [`Label`].
    #[error("{path} line {line}: not a label: {message}")]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The injected churn stories. Every story customer has at least 9 weeks of
/// history before its onset, and no story's consequences run past the end of
/// the period (except `abrupt_stop`'s optional cancel, then `churn_at` is null).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Story {
    /// Usage decays exponentially from the onset instant toward 10-40% of
    /// normal (a fall of 60-90%), nine tenths of the way within 14-28 days
    /// (the label's `detect_within_days`), then a voluntary
    /// `subscription_cancelled` 21-35 days after onset.
    /// Onset: the start of the decline (no event there). Alerts:
    /// `engagement_drop`, `churned` (at `churn_at` = the cancel).
    GradualDeclineCancel,
    /// Usage stops completely. Onset: the last usage event (a key-feature use
    /// when the customer uses a key feature). No feedback after it; billing
    /// goes on. In 60% a voluntary cancel 21-42 days later when that is still
    /// in the period. Alerts: `engagement_drop`, `inactivity`, plus
    /// `key_feature_unused` when the customer used a key feature, plus
    /// `churned` when the cancel is in the period.
    AbruptStop,
    /// 10-30 seats; after the onset instant only the core 35% of seats stay
    /// active (a 65% drop in distinct users) with unchanged per-user
    /// activity; the lost seats carried 15% of the events, so total activity
    /// falls about 15%. Onset: the instant the light seats stop (no event).
    /// Alerts: `seat_contraction`.
    SeatLoss,
    /// A key feature used again every 2-5 days is never used after the
    /// onset, its events turn into `dashboard` views (volume unchanged).
    /// Onset: the last use of that feature. Alerts: `key_feature_unused`.
    KeyFeatureDropped,
    /// A `plan_changed` to a cheaper plan (a third of them, and every starter,
    /// to `free` with mrr 0). Onset: that event. Alerts: `downgrade`.
    Downgrade,
    /// A renewal's payment fails (attempt 1 at the renewal instant, attempt 2
    /// when the recovery takes 3 days or more) and succeeds 1-10 days later.
    /// Onset: the first `payment_failed`. Alerts: `payment_failed`.
    PaymentRecovered,
    /// A renewal's payment fails at attempts 1-4 (days 0, 3, 7, 12) and never
    /// succeeds. Onset: the first `payment_failed`; churn at onset + 14 days
    /// (the service's dunning grace); usage stops then, and in 60% an
    /// involuntary `subscription_cancelled` follows 1-48 h later. Alerts:
    /// `payment_failed`, `churned`.
    PaymentNotRecovered,
    /// An NPS 0-6 (70%) or CSAT 1-2 response. Onset: that event.
    /// Alerts: `detractor`.
    Detractor,
    /// 5-8 tickets within 3 days (the first `high`, the second `high` or
    /// `urgent`) from a customer that files at most one ticket a month.
    /// Onset: the first ticket of the burst. Alerts: `support_spike`.
    SupportSpike,
}

impl Story {
    /// Every story, in the order customers are assigned to them.
    pub const ALL: [Story; 9] = [
        Story::GradualDeclineCancel,
        Story::AbruptStop,
        Story::SeatLoss,
        Story::KeyFeatureDropped,
        Story::Downgrade,
        Story::PaymentRecovered,
        Story::PaymentNotRecovered,
        Story::Detractor,
        Story::SupportSpike,
    ];

    /// The name used in the labels file.
    pub fn name(self) -> &'static str {
        match self {
            Story::GradualDeclineCancel => "gradual_decline_cancel",
            Story::AbruptStop => "abrupt_stop",
            Story::SeatLoss => "seat_loss",
            Story::KeyFeatureDropped => "key_feature_dropped",
            Story::Downgrade => "downgrade",
            Story::PaymentRecovered => "payment_recovered",
            Story::PaymentNotRecovered => "payment_not_recovered",
            Story::Detractor => "detractor",
            Story::SupportSpike => "support_spike",
        }
    }

    /// Days needed after the onset for the story to play out in the period.
    fn tail_days(self) -> i64 {
        match self {
            Story::GradualDeclineCancel => 36,
            _ => 15,
        }
    }

    fn needs_paid_plan(self) -> bool {
        matches!(
            self,
            Story::GradualDeclineCancel
                | Story::AbruptStop
                | Story::Downgrade
                | Story::PaymentRecovered
                | Story::PaymentNotRecovered
        )
    }
}

/// One line of the labels file: a customer with an injected story.
///
/// ```json
/// {"customer_id":"c-000017","story":"abrupt_stop","onset":"2026-03-18T14:03:12Z",
///  "alerts":["engagement_drop","inactivity"],"churn_at":null}
/// ```
///
/// `alerts` lists every alert of `EVENTS.md` the story causes, in the
/// service's alert order; a sensible detector fires each of them with
/// `starts_at` within `detect_within_days` (inclusive; 14, or for a gradual
/// decline the days it takes to fall most of its way, 14-28) after `onset`,
/// except `churned`, which starts at `churn_at`. `churn_at` is when the customer churns in the
/// data (the cancel's `ts`, or first failure + 14 days for
/// `payment_not_recovered`), null when it does not churn within the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// The customer.
    pub customer_id: String,
    /// What happens to it.
    pub story: Story,
    /// When the story starts, RFC 3339 UTC.
    pub onset: String,
    /// Alert names the story causes.
    pub alerts: Vec<String>,
    /// When the customer churns, RFC 3339 UTC, or null.
    pub churn_at: Option<String>,
    /// Days after `onset` by which the story's alerts should have fired.
    #[serde(default = "default_detect_within_days")]
    pub detect_within_days: u32,
    /// Alerts the story may also cause, in the same window, without being
    /// required to (seat loss: `engagement_drop`, when the activity falls
    /// with the seats).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_fire: Vec<String>,
}

fn default_detect_within_days() -> u32 {
    14
}

impl Label {
    /// `onset` as event time.
    pub fn onset_ts(&self) -> Option<Ts> {
        parse_ts(&self.onset).ok()
    }

    /// `churn_at` as event time.
    pub fn churn_at_ts(&self) -> Option<Ts> {
        self.churn_at.as_deref().and_then(|s| parse_ts(s).ok())
    }
}

/// Reads a labels file written by [`run`].
pub fn read_labels(path: &Path) -> Result<Vec<Label>, GenerateError> {
    let io = |source| GenerateError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut labels = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        labels.push(
            serde_json::from_str(&line).map_err(|e| GenerateError::BadLabel {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?,
        );
    }
    Ok(labels)
}

/// Counts of what was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GenerateStats {
    /// Customers simulated.
    pub customers: u64,
    /// Customers with a story (= labels).
    pub stories: u64,
    /// Lines written, duplicates included.
    pub lines: u64,
    /// Usage events (originals).
    pub usage: u64,
    /// Billing events (originals).
    pub billing: u64,
    /// Feedback events (originals).
    pub feedback: u64,
    /// Extra copies sent with a repeated `event_id`.
    pub duplicates: u64,
    /// Events delayed within the default allowed lateness (<= 1 h).
    pub late: u64,
    /// Events delayed beyond 2 h.
    pub very_late: u64,
}

/// The outcome of [`generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// One label per story customer, sorted by `customer_id`.
    pub labels: Vec<Label>,
    /// Counts.
    pub stats: GenerateStats,
}

/// Everything in memory, from [`generate_to_vec`] (tests and small demos).
#[derive(Debug, Clone)]
pub struct Generated {
    /// The JSONL lines in arrival order, without newlines.
    pub lines: Vec<String>,
    /// One label per story customer.
    pub labels: Vec<Label>,
    /// Counts.
    pub stats: GenerateStats,
}

/// What [`run`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateSummary {
    /// Where the events went (`-` = stdout).
    pub out: String,
    /// Where the labels went, if anywhere.
    pub labels_out: Option<String>,
    /// First instant of the period.
    pub start: String,
    /// End of the period (exclusive).
    pub end: String,
    /// Shared quiet week `[start, end)`, if any.
    pub quiet_week: Option<(String, String)>,
    /// Counts.
    #[serde(flatten)]
    pub stats: GenerateStats,
}

/// Generates into memory.
pub fn generate_to_vec(opts: &GenerateOptions) -> Generated {
    let mut lines = Vec::new();
    let g = generate(opts, &mut |l| lines.push(l.to_string()));
    Generated {
        lines,
        labels: g.labels,
        stats: g.stats,
    }
}

/// Writes labels as JSONL, one per line (the `--labels` file).
pub fn write_labels(path: &Path, labels: &[Label]) -> Result<(), GenerateError> {
    let io = |source| GenerateError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let mut w = BufWriter::new(File::create(path).map_err(io)?);
    for l in labels {
        let json = serde_json::to_string(l).expect("labels serialize");
        writeln!(w, "{json}").map_err(io)?;
    }
    w.flush().map_err(io)
}

/// Writes the events (and the labels, when asked) and says what it wrote.
pub fn run(args: &GenerateArgs) -> Result<GenerateSummary, GenerateError> {
    let opts = args.options()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError::Io {
            action: "write",
            path,
            source,
        }
    };
    let mut out: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout().lock()))
    } else {
        Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(&args.out).map_err(io(&args.out))?,
        ))
    };
    let mut err = None;
    let g = generate(&opts, &mut |line| {
        if err.is_none()
            && let Err(e) = out
                .write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
        {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(io(&args.out)(e));
    }
    out.flush().map_err(io(&args.out))?;
    if let Some(path) = &args.labels {
        write_labels(path, &g.labels)?;
    }
    Ok(GenerateSummary {
        out: args.out.display().to_string(),
        labels_out: args.labels.as_ref().map(|p| p.display().to_string()),
        start: format_ts(opts.start),
        end: format_ts(opts.end()),
        quiet_week: opts.quiet_week().map(|(s, e)| (format_ts(s), format_ts(e))),
        stats: g.stats,
    })
}

// ---------------------------------------------------------------------------
// The simulation.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rhythm {
    /// Active most weekdays.
    Daily,
    /// Active every `g` days, give or take 40%.
    Every(f32),
    /// One-day bursts, median 21 days apart.
    Bursty,
}

/// How long before churning a churner's usage starts to drift down (a gradual
/// decliner's decline then continues from the drifted level).
const PRE_CHURN_DRIFT: Ts = 60 * DAY_MS;
/// How far it would have drifted by the churn (0.5 = usage at 50%).
const PRE_CHURN_DRIFT_DEPTH: f64 = 0.5;
/// Share of voluntary churners who also run into support friction before
/// they go: a ticket every 7-14 days, followed by lukewarm CSAT/CES answers.
const PRE_CHURN_SUPPORT_SHARE: f64 = 0.5;
/// How long before the churn that friction starts, shortest and longest
/// (uniform in between).
const PRE_CHURN_SUPPORT_LEAD: (Ts, Ts) = (30 * DAY_MS, 90 * DAY_MS);
/// Share of voluntary churners (drawn apart from friction) whose users leave
/// before the account does: the least active seats stop one by one.
const PRE_CHURN_SEATS_SHARE: f64 = 0.5;
/// Share of the seats that have left by the churn.
const PRE_CHURN_SEATS_LEFT: f64 = 0.4;
/// How long before the churn the first of them leaves, shortest and longest.
const PRE_CHURN_SEATS_LEAD: (Ts, Ts) = (30 * DAY_MS, 90 * DAY_MS);
/// Days between friction tickets, least and most (never 3 in a week, so no
/// `support_spike`).
const PRE_CHURN_TICKET_GAP_DAYS: (Ts, Ts) = (7, 14);

/// The churn a churner's lead counts back from.
fn pre_churn_end(s: &StoryPlan) -> Option<Ts> {
    match s.story {
        Story::PaymentNotRecovered => s.churn_at,
        Story::GradualDeclineCancel | Story::AbruptStop => s.cancel_at,
        _ => None,
    }
}

/// Whether seat `user` (1 = the most active) of a churner has left by `t`:
/// the least active [`PRE_CHURN_SEATS_LEFT`] of the seats leave one by one,
/// evenly spread from `seats_leave_from` to the churn.
fn seat_left(seats: u16, s: &StoryPlan, user: u16, t: Ts) -> bool {
    let from = s.seats_leave_from;
    let Some(end) = pre_churn_end(s).filter(|_| t >= from) else {
        return false;
    };
    let leaving = (f64::from(seats) * PRE_CHURN_SEATS_LEFT).floor() as u16;
    if user + leaving <= seats {
        return false;
    }
    // The least active seat leaves first.
    let nth = i64::from(seats - user + 1);
    t >= from + (end - from) * nth / i64::from(leaving + 1)
}

/// Usage level (1 = normal) of a churner at `t` during the pre-churn drift:
/// falls linearly over [`PRE_CHURN_DRIFT`] before the churn.
fn pre_churn_level(s: &StoryPlan, t: Ts) -> f64 {
    let Some(end) = pre_churn_end(s) else {
        return 1.0;
    };
    let x = (t - (end - PRE_CHURN_DRIFT)) as f64 / PRE_CHURN_DRIFT as f64;
    1.0 - PRE_CHURN_DRIFT_DEPTH * x.clamp(0.0, 1.0)
}

#[derive(Debug, Clone)]
struct StoryPlan {
    story: Story,
    onset: Ts,
    churn_at: Option<Ts>,
    /// Instant of a `subscription_cancelled`, if one is sent.
    cancel_at: Option<Ts>,
    /// Gradual decline time constant, ms.
    tau: f64,
    /// Gradual decline: the usage level it settles at (0.1-0.4 of normal).
    floor: f64,
    /// Seat loss: share of the events the leaving seats carried (0.15-0.45).
    light_share: f64,
    /// Downgrade target plan.
    target_plan: u8,
    /// Payment recovery delay, ms.
    recover_after: Ts,
    /// Key feature (0 = reports, 1 = exports) of `KeyFeatureDropped`.
    dropped_kf: usize,
    /// When a churner's seats start to leave (`Ts::MAX`: they stay).
    seats_leave_from: Ts,
}

#[derive(Debug, Clone)]
struct Customer {
    idx: u32,
    /// First instant of the customer's activity.
    start: Ts,
    existing: bool,
    rhythm: Rhythm,
    weekend_idle: bool,
    plan: u8,
    seats: u16,
    /// For seat loss: seats that stay (0 = plain Zipf over all seats).
    core: u16,
    /// Usage events per active weekday.
    lambda: f64,
    /// Working hours start at 07:00 + `shift_h` UTC.
    shift_h: u8,
    feat_cum: [f32; FEATURES.len()],
    kf_use: [bool; 2],
    /// `reports` on a fixed rhythm instead of a habit: used once every
    /// `period` days (on days `phase + k period`), each period skipped with
    /// probability `skip` (three times that in the quiet week).
    kf_periodic: Option<Periodic>,
    /// Billing anchor: renewals at anchor + k months.
    anchor: Ts,
    /// First k that is a renewal (0 for existing customers, 1 for new ones).
    first_k: u32,
    /// Mean days between healthy tickets.
    ticket_gap_days: f64,
    /// Least days between healthy tickets.
    ticket_min_gap_days: f64,
    /// Boxed: few customers have one, and a million customers are kept.
    story: Option<Box<StoryPlan>>,
    // Mutable state.
    next_active_day: i64,
    renewal_k: u32,
    next_ticket: Ts,
    /// Next support-friction ticket of a churner's lead.
    next_friction_ticket: Ts,
    next_nps: Ts,
    kf_last: [Ts; 2],
    tickets: u32,
}

impl Customer {
    fn id(&self) -> String {
        format!("c-{:06}", self.idx)
    }

    fn plan_at(&self, ts: Ts) -> u8 {
        match &self.story {
            Some(s) if s.story == Story::Downgrade && ts >= s.onset => s.target_plan,
            _ => self.plan,
        }
    }

    fn segment(&self) -> &'static str {
        if self.plan == 4 || self.seats >= 150 {
            "enterprise"
        } else if self.plan == 3 || self.seats >= 25 {
            "mid_market"
        } else {
            "smb"
        }
    }

    /// Instant from which the customer is gone (no usage, feedback or renewals).
    fn gone_at(&self) -> Ts {
        match &self.story {
            Some(s) => match s.story {
                Story::PaymentNotRecovered => s.churn_at.unwrap_or(Ts::MAX),
                Story::GradualDeclineCancel | Story::AbruptStop => s.cancel_at.unwrap_or(Ts::MAX),
                _ => Ts::MAX,
            },
            None => Ts::MAX,
        }
    }

    /// Instant from which no usage at all is generated.
    fn usage_end(&self) -> Ts {
        match &self.story {
            Some(s) if s.story == Story::AbruptStop => s.onset,
            _ => self.gone_at(),
        }
    }

    /// Instant from which no feedback is generated.
    fn feedback_end(&self) -> Ts {
        self.usage_end()
    }

    fn renewal_ts(&self, k: u32) -> Ts {
        add_months(self.anchor, k)
    }

    fn uses_kf_at(&self, k: usize, ts: Ts) -> bool {
        if !self.kf_use[k] {
            return false;
        }
        match &self.story {
            Some(s) if s.story == Story::KeyFeatureDropped && s.dropped_kf == k => ts <= s.onset,
            _ => true,
        }
    }
}

/// See [`Customer::kf_periodic`].
#[derive(Debug, Clone, Copy)]
struct Periodic {
    period: u8,
    phase: u8,
    skip: f32,
}

/// One in four active customers exports a report on a fixed rhythm: weekly
/// (half of them), fortnightly or monthly (28-31 days), skipping 1-12% of
/// the periods.
fn periodic_feature(seed: u64, idx: u32, rhythm: Rhythm) -> Option<Periodic> {
    let mut rng = rng_for(seed, STREAM_PERIODIC, u64::from(idx), 0);
    if matches!(rhythm, Rhythm::Bursty) || unit(&mut rng) >= 0.25 {
        return None;
    }
    let r = unit(&mut rng);
    let period: u8 = if r < 0.5 {
        7
    } else if r < 0.75 {
        14
    } else {
        rng.random_range(28..=31)
    };
    Some(Periodic {
        period,
        phase: rng.random_range(0..period),
        skip: rng.random_range(0.01f32..0.12),
    })
}

fn add_months(ts: Ts, k: u32) -> Ts {
    DateTime::<Utc>::from_timestamp_millis(ts)
        .and_then(|d| d.checked_add_months(Months::new(k)))
        .map(|d| d.timestamp_millis())
        .unwrap_or(Ts::MAX)
}

/// Monday = 0 .. Sunday = 6, UTC.
fn weekday(ts: Ts) -> i64 {
    (ts.div_euclid(DAY_MS) + 3).rem_euclid(7)
}

fn is_weekend(ts: Ts) -> bool {
    weekday(ts) >= 5
}

fn mix(a: u64, b: u64) -> u64 {
    // SplitMix64 finaliser over a combination; good enough to decorrelate streams.
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng_for(seed: u64, stream: u64, idx: u64, day: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(mix(mix(mix(seed, stream), idx), day))
}

type Rng = Xoshiro256PlusPlus;

fn unit(rng: &mut Rng) -> f64 {
    rng.random::<f64>()
}

fn normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - unit(rng); // (0, 1]
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Exponentially distributed, whole seconds.
fn exp_ms(rng: &mut Rng, mean_ms: f64) -> Ts {
    (-(1.0 - unit(rng)).ln() * mean_ms / 1000.0) as Ts * SECOND_MS
}

fn poisson(rng: &mut Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * normal(rng)).round().max(0.0) as u32;
    }
    let limit = (-lambda).exp();
    let mut p = 1.0;
    let mut k = 0;
    loop {
        p *= unit(rng);
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// Rank 1..=n with P(k) ~ 1/k (log-uniform), so a few power users dominate.
fn zipf_rank(rng: &mut Rng, n: u16) -> u16 {
    let n = n.max(1);
    let r = ((f64::from(n) + 1.0).ln() * unit(rng)).exp().floor() as u16;
    r.clamp(1, n)
}

fn secs(rng: &mut Rng, lo: Ts, hi: Ts) -> Ts {
    // Whole seconds keep timestamps short.
    rng.random_range(lo / SECOND_MS..hi / SECOND_MS) * SECOND_MS
}

/// An offset into a day: mostly working hours, sometimes any time.
fn time_of_day(rng: &mut Rng, shift_h: u8) -> Ts {
    if unit(rng) < 0.88 {
        let lo = (7 + Ts::from(shift_h)) * HOUR_MS;
        secs(rng, lo, (lo + 11 * HOUR_MS).min(DAY_MS))
    } else {
        secs(rng, 0, DAY_MS)
    }
}

fn pick<T: Copy>(rng: &mut Rng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut x = unit(rng) * total;
    for &(v, w) in items {
        if x < w {
            return v;
        }
        x -= w;
    }
    items[items.len() - 1].0
}

const STREAM_PROFILE: u64 = 1;
const STREAM_STORY: u64 = 2;
const STREAM_DAY: u64 = 3;
/// Periodic key-feature use: its own stream, so the other draws stay put.
const STREAM_PERIODIC: u64 = 4;

/// Builds every customer's profile and story plan.
fn build_customers(opts: &GenerateOptions) -> Vec<Customer> {
    let end = opts.end();
    let mut story_counter = 0usize;
    (0..opts.customers)
        .map(|idx| {
            let mut c = base_customer(opts, idx);
            let mut rng = rng_for(opts.seed, STREAM_STORY, u64::from(idx), 0);
            if c.rhythm != Rhythm::Bursty && unit(&mut rng) < opts.story_fraction {
                let story = Story::ALL[story_counter % Story::ALL.len()];
                if assign_story(opts, &mut c, story, end, &mut rng) {
                    story_counter += 1;
                }
            }
            // Periodic use is a healthy archetype: the stories keep their
            // habitual use, so their labelled delays hold.
            if c.story.is_some() {
                c.kf_periodic = None;
            } else if c.kf_periodic.is_some() && c.lambda >= 0.3 {
                c.kf_use[0] = true;
            } else {
                c.kf_periodic = None;
            }
            c
        })
        .collect()
}

fn base_customer(opts: &GenerateOptions, idx: u32) -> Customer {
    let mut rng = rng_for(opts.seed, STREAM_PROFILE, u64::from(idx), 0);
    let period = Ts::from(opts.days) * DAY_MS;
    let existing = unit(&mut rng) >= 0.15 || opts.days < 14;
    let start = if existing {
        opts.start
    } else {
        let latest = (period - 14 * DAY_MS).max(DAY_MS);
        opts.start + DAY_MS + secs(&mut rng, 0, latest)
    };
    let plan = pick(
        &mut rng,
        &[(0u8, 0.22), (1, 0.30), (2, 0.28), (3, 0.14), (4, 0.06)],
    );
    let (lo, hi) = match plan {
        0 => (1.0, 2.0),
        1 => (1.0, 5.0),
        2 => (3.0, 25.0),
        3 => (10.0, 100.0),
        _ => (40.0, 400.0),
    };
    let seats = log_uniform(&mut rng, lo, hi).round() as u16;
    let r = unit(&mut rng);
    let (rhythm, weekend_idle) = if r < 0.05 {
        (Rhythm::Bursty, false)
    } else if r < 0.20 {
        (Rhythm::Daily, true)
    } else if r < 0.40 {
        (
            Rhythm::Every(rng.random_range(2.0f32..5.0f32)),
            unit(&mut rng) < 0.2,
        )
    } else {
        (Rhythm::Daily, false)
    };
    let lambda =
        (opts.activity_scale * 1.2 * f64::from(seats).powf(0.55) * (0.9 * normal(&mut rng)).exp())
            .clamp(0.05, 5000.0);
    let shift_h = rng.random_range(0u8..=5);
    let mut weights = [0.0; FEATURES.len()];
    for (w, f) in weights.iter_mut().zip(FEATURES.iter()) {
        *w = f.2 * rng.random_range(0.4..1.6);
    }
    // Key features: used regularly, or not at all.
    let mut kf_use = [false; 2];
    let regular = match rhythm {
        Rhythm::Daily => true,
        Rhythm::Every(g) => g <= 3.0,
        Rhythm::Bursty => false,
    };
    for (k, (p_use, share_lo, share_hi)) in [(0.7, 0.10, 0.22), (0.5, 0.05, 0.12)]
        .into_iter()
        .enumerate()
    {
        let share = rng.random_range(share_lo..share_hi);
        if regular && lambda * share >= 0.5 && unit(&mut rng) < p_use {
            kf_use[k] = true;
            weights[key_feature_index(k) as usize] = share;
        }
    }
    let anchor = if existing {
        opts.start + secs(&mut rng, 0, 28 * DAY_MS)
    } else {
        start
    };
    let ticket_gap_days = rng.random_range(30.0..120.0);
    let next_nps = start + secs(&mut rng, 0, 150 * DAY_MS);
    let next_ticket = start + exp_ms(&mut rng, ticket_gap_days * DAY_MS as f64);
    let first_active = match rhythm {
        Rhythm::Bursty => rng.random_range(0..21),
        Rhythm::Every(g) => rng.random_range(0..(g.ceil() as i64).max(1)),
        Rhythm::Daily => 0,
    };
    let start_day = (start - opts.start).div_euclid(DAY_MS);
    let mut c = Customer {
        idx,
        start,
        existing,
        rhythm,
        weekend_idle,
        plan,
        seats: seats.max(1),
        core: 0,
        lambda,
        shift_h,
        feat_cum: [0.0; FEATURES.len()],
        kf_periodic: periodic_feature(opts.seed, idx, rhythm),
        kf_use,
        anchor,
        first_k: if existing { 0 } else { 1 },
        ticket_gap_days,
        ticket_min_gap_days: 10.0,
        story: None,
        next_active_day: start_day + first_active,
        renewal_k: 0,
        next_ticket,
        next_friction_ticket: Ts::MAX,
        next_nps,
        kf_last: [Ts::MIN / 2; 2],
        tickets: 0,
    };
    c.renewal_k = c.first_k;
    set_weights(&mut c, weights);
    c
}

fn set_weights(c: &mut Customer, weights: [f64; FEATURES.len()]) {
    let mut acc = 0.0;
    for (cum, w) in c.feat_cum.iter_mut().zip(weights) {
        acc += w;
        *cum = acc as f32;
    }
}

fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + (hi.ln() - lo.ln()) * unit(rng)).exp()
}

/// Candidate onset days (weekday starts) in `[earliest, latest]`.
fn weekday_starts(opts: &GenerateOptions, earliest: Ts, latest: Ts) -> Vec<Ts> {
    let first_day = (earliest - opts.start + DAY_MS - 1).div_euclid(DAY_MS);
    let mut out = Vec::new();
    let mut d = opts.start + first_day * DAY_MS;
    while d <= latest {
        if !is_weekend(d + 12 * HOUR_MS) {
            out.push(d);
        }
        d += DAY_MS;
    }
    out
}

/// Turns `c` into a story customer, adapting what the story needs. False
/// when the customer's history does not allow the story.
fn assign_story(
    opts: &GenerateOptions,
    c: &mut Customer,
    story: Story,
    end: Ts,
    rng: &mut Rng,
) -> bool {
    let earliest = c.start.max(opts.start) + MIN_HISTORY_MS;
    let latest = end - story.tail_days() * DAY_MS;
    if latest < earliest {
        return false;
    }
    if story.needs_paid_plan() && c.plan == 0 {
        c.plan = rng.random_range(1..=2);
        c.seats = c.seats.max(2);
    }
    // Story customers are regular daily users, so their history starts on
    // the first day and their baseline is stable.
    c.rhythm = Rhythm::Daily;
    let min_lambda = match story {
        Story::GradualDeclineCancel => 12.0,
        Story::AbruptStop => 8.0,
        Story::KeyFeatureDropped => 10.0,
        _ => 3.0,
    };
    c.lambda = c.lambda.max(min_lambda);
    let onset_time = |rng: &mut Rng, day: Ts| day + 9 * HOUR_MS + secs(rng, 0, 8 * HOUR_MS);
    let onset = match story {
        Story::PaymentRecovered | Story::PaymentNotRecovered => {
            let renewals: Vec<Ts> = (c.first_k..c.first_k + 12)
                .map(|k| c.renewal_ts(k))
                .filter(|t| (earliest..=latest).contains(t))
                .collect();
            if renewals.is_empty() {
                return false;
            }
            renewals[rng.random_range(0..renewals.len())]
        }
        _ => {
            let days = weekday_starts(opts, earliest, latest);
            if days.is_empty() {
                return false;
            }
            let day = days[rng.random_range(0..days.len())];
            onset_time(rng, day)
        }
    };
    let mut plan = StoryPlan {
        story,
        onset,
        churn_at: None,
        cancel_at: None,
        tau: 0.0,
        floor: 0.1,
        light_share: SEAT_LOSS_LIGHT_SHARE,
        target_plan: c.plan,
        recover_after: 0,
        dropped_kf: 0,
        seats_leave_from: Ts::MAX,
    };
    match story {
        Story::GradualDeclineCancel => {
            // Usage falls 60-90% (to `floor`), most of the way (nine tenths
            // of the fall) in 14-28 days.
            let days_to_most = rng.random_range(14.0..28.0);
            plan.tau = days_to_most * DAY_MS as f64 / std::f64::consts::LN_10;
            plan.floor = rng.random_range(0.1..0.4);
            let cancel = onset + secs(rng, 21 * DAY_MS, 35 * DAY_MS);
            plan.cancel_at = Some(cancel);
            plan.churn_at = Some(cancel);
        }
        Story::AbruptStop => {
            if unit(rng) < 0.6 {
                let cancel = onset + secs(rng, 21 * DAY_MS, 42 * DAY_MS);
                if cancel < end {
                    plan.cancel_at = Some(cancel);
                    plan.churn_at = Some(cancel);
                }
            }
        }
        Story::SeatLoss => {
            c.seats = log_uniform(rng, 10.0, 30.0).round() as u16;
            // 60-80% of the seats leave, carrying 15-45% of the events:
            // activity falls with the seats, more or less.
            c.core = (f64::from(c.seats) * rng.random_range(0.2..0.4))
                .floor()
                .max(1.0) as u16;
            plan.light_share = rng.random_range(0.15..0.45);
            c.plan = c.plan.max(2);
            // Each light seat gets >= 1 event per active weekday on average,
            // so every seat shows up in a week before the onset.
            let light = f64::from(c.seats - c.core);
            c.lambda = c.lambda.max(light / plan.light_share).max(10.0);
        }
        Story::KeyFeatureDropped => {
            let k = rng.random_range(0..2usize);
            plan.dropped_kf = k;
            let mut weights = [0.0; FEATURES.len()];
            let mut prev = 0.0;
            for (w, cum) in weights.iter_mut().zip(c.feat_cum) {
                let cum = f64::from(cum);
                *w = cum - prev;
                prev = cum;
            }
            let share: f64 = rng.random_range(0.12..0.2);
            weights[key_feature_index(k) as usize] = share;
            c.kf_use[k] = true;
            set_weights(c, weights);
            c.lambda = c.lambda.max(1.0 / share);
        }
        Story::Downgrade => {
            plan.target_plan = if c.plan == 1 || unit(rng) < 1.0 / 3.0 {
                0
            } else {
                c.plan - rng.random_range(1..=(c.plan - 1).min(2))
            };
        }
        Story::PaymentRecovered => {
            plan.recover_after = secs(rng, 3 * DAY_MS, 10 * DAY_MS);
        }
        Story::PaymentNotRecovered => {
            let churn = onset + DUNNING_GRACE_MS;
            plan.churn_at = Some(churn);
            if unit(rng) < 0.6 {
                let cancel = churn + secs(rng, HOUR_MS, 48 * HOUR_MS);
                if cancel < end {
                    plan.cancel_at = Some(cancel);
                }
            }
        }
        Story::Detractor => {}
        Story::SupportSpike => {
            c.ticket_gap_days = c.ticket_gap_days.max(60.0);
            c.ticket_min_gap_days = 31.0;
        }
    }
    // Not every churner shows the same leading signals: half of those who
    // leave by choice also struggle with the product and say so to support.
    if let Some(end) = pre_churn_end(&plan).filter(|_| story != Story::PaymentNotRecovered) {
        if unit(rng) < PRE_CHURN_SUPPORT_SHARE {
            let (lo, hi) = PRE_CHURN_SUPPORT_LEAD;
            c.next_friction_ticket = end - secs(rng, lo, hi);
        }
        // ... and for some, people leave before the account does.
        if unit(rng) < PRE_CHURN_SEATS_SHARE {
            let (lo, hi) = PRE_CHURN_SEATS_LEAD;
            plan.seats_leave_from = end - secs(rng, lo, hi);
        }
    }
    c.story = Some(Box::new(plan));
    true
}

fn label_of(c: &Customer) -> Option<Label> {
    let s = c.story.as_ref()?;
    let mut alerts: Vec<&str> = match s.story {
        Story::GradualDeclineCancel => vec!["engagement_drop", "churned"],
        Story::AbruptStop => {
            let mut a = vec!["engagement_drop", "inactivity"];
            if c.kf_use.iter().any(|&u| u) {
                a.push("key_feature_unused");
            }
            if s.churn_at.is_some() {
                a.push("churned");
            }
            a
        }
        Story::SeatLoss => vec!["seat_contraction"],
        Story::KeyFeatureDropped => vec!["key_feature_unused"],
        Story::Downgrade => vec!["downgrade"],
        Story::PaymentRecovered => vec!["payment_failed"],
        Story::PaymentNotRecovered => vec!["payment_failed", "churned"],
        Story::Detractor => vec!["detractor"],
        Story::SupportSpike => vec!["support_spike"],
    };
    alerts.dedup();
    Some(Label {
        customer_id: c.id(),
        story: s.story,
        onset: format_ts(s.onset),
        alerts: alerts.into_iter().map(String::from).collect(),
        churn_at: s.churn_at.map(format_ts),
        // Inside the slide: the days it takes to fall nine tenths of its way.
        detect_within_days: match s.story {
            Story::GradualDeclineCancel => {
                ((s.tau * std::f64::consts::LN_10 / DAY_MS as f64).ceil() as u32).max(14)
            }
            _ => 14,
        },
        may_fire: match s.story {
            Story::SeatLoss => vec!["engagement_drop".into()],
            _ => Vec::new(),
        },
    })
}

/// Lines waiting for their arrival time.
struct Pending {
    arrival: Ts,
    seq: u64,
    line: String,
}

/// Collects one day's events, assigning late and duplicate arrivals.
struct Emitter<'a> {
    opts: &'a GenerateOptions,
    end: Ts,
    seq: u64,
    pending: Vec<Pending>,
    stats: GenerateStats,
}

#[derive(Clone, Copy, PartialEq)]
enum Cat {
    Usage,
    Billing,
    Feedback,
}

impl Emitter<'_> {
    /// Queues one event. `body` is the JSON object without its closing
    /// brace, `ts` and `event_id`; they are added here.
    fn push(&mut self, rng: &mut Rng, cat: Cat, ts: Ts, mut body: String) {
        if ts >= self.end || ts < self.opts.start {
            return;
        }
        self.seq += 1;
        let dup = unit(rng) < self.opts.dup_fraction;
        let with_id = dup || cat == Cat::Billing || unit(rng) < 0.5;
        let _ = write!(body, ",\"ts\":\"{}\"", format_ts(ts));
        if with_id {
            let _ = write!(body, ",\"event_id\":\"e-{}\"", self.seq);
        }
        body.push('}');
        let r = unit(rng);
        let arrival = if r < self.opts.late_fraction * 0.05 {
            self.stats.very_late += 1;
            ts + secs(rng, 2 * HOUR_MS + MINUTE_MS, 8 * HOUR_MS)
        } else if r < self.opts.late_fraction {
            self.stats.late += 1;
            ts + secs(rng, MINUTE_MS, HOUR_MS)
        } else {
            ts
        };
        match cat {
            Cat::Usage => self.stats.usage += 1,
            Cat::Billing => self.stats.billing += 1,
            Cat::Feedback => self.stats.feedback += 1,
        }
        if dup {
            self.stats.duplicates += 1;
            self.seq += 1;
            self.pending.push(Pending {
                arrival: arrival + secs(rng, SECOND_MS, 10 * MINUTE_MS),
                seq: self.seq,
                line: body.clone(),
            });
        }
        self.pending.push(Pending {
            arrival,
            seq: self.seq - u64::from(dup),
            line: body,
        });
    }

    /// Sends every queued line that arrives before `until`, in arrival order.
    fn flush(&mut self, until: Ts, sink: &mut dyn FnMut(&str)) {
        // Newest first, so the oldest pops off the end.
        self.pending
            .sort_unstable_by_key(|p| std::cmp::Reverse((p.arrival, p.seq)));
        while let Some(p) = self.pending.last() {
            if p.arrival >= until {
                break;
            }
            let p = self.pending.pop().expect("checked");
            self.stats.lines += 1;
            sink(&p.line);
        }
    }
}

fn head(ty: &str, c: &Customer) -> String {
    let mut s = String::with_capacity(200);
    let _ = write!(s, "{{\"type\":\"{ty}\",\"customer_id\":\"c-{:06}\"", c.idx);
    s
}

fn billing_head(ty: &str, c: &Customer) -> String {
    let mut s = head(ty, c);
    let _ = write!(s, ",\"segment\":\"{}\"", c.segment());
    s
}

/// Streams the generated events, one JSON object per call (no newline), in
/// arrival order, and returns the labels and counts.
pub fn generate(opts: &GenerateOptions, sink: &mut dyn FnMut(&str)) -> Generation {
    if opts.profile == Profile::Retail {
        return generate_retail(opts, sink);
    }
    let mut customers = build_customers(opts);
    let mut labels: Vec<Label> = customers.iter().filter_map(label_of).collect();
    labels.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    let mut em = Emitter {
        opts,
        end: opts.end(),
        seq: 0,
        pending: Vec::new(),
        stats: GenerateStats {
            customers: u64::from(opts.customers),
            stories: labels.len() as u64,
            ..GenerateStats::default()
        },
    };
    let mut day_events: Vec<(Ts, String)> = Vec::new();
    for d in 0..i64::from(opts.days) {
        let day_start = opts.start + d * DAY_MS;
        let day_end = day_start + DAY_MS;
        for c in customers.iter_mut() {
            if c.start >= day_end {
                continue;
            }
            let mut rng = rng_for(opts.seed, STREAM_DAY, u64::from(c.idx), d as u64);
            billing_day(c, day_start, day_end, &mut rng, &mut em);
            feedback_day(c, day_start, day_end, &mut rng, &mut em);
            usage_day(opts, c, d, day_start, &mut rng, &mut day_events);
            for (ts, body) in day_events.drain(..) {
                em.push(&mut rng, Cat::Usage, ts, body);
            }
        }
        em.flush(day_end, sink);
    }
    em.flush(Ts::MAX, sink);
    Generation {
        labels,
        stats: em.stats,
    }
}

const STREAM_RETAIL: u64 = 5;

/// [`Profile::Retail`]: each customer's first order falls anywhere in the
/// period; after each order it stops for good with its own probability
/// (1-95%, so most customers order once), otherwise orders again after a
/// gamma-distributed gap (shape 1-4: from irregular to regular) with its own
/// mean of 7-180 days (log-uniform). Shop hours, one line per order, in time
/// order; no late lines or duplicates.
fn generate_retail(opts: &GenerateOptions, sink: &mut dyn FnMut(&str)) -> Generation {
    let end = opts.end();
    let mut orders: Vec<(Ts, u32, u32)> = Vec::new();
    for idx in 0..opts.customers {
        let mut rng = rng_for(opts.seed, STREAM_RETAIL, u64::from(idx), 0);
        let stop = rng.random_range(0.01..0.95);
        let mean_gap = log_uniform(&mut rng, 7.0, 180.0);
        let shape = rng.random_range(1.0..4.0);
        let mut t = opts.start + secs(&mut rng, 0, end - opts.start);
        let mut n = 0u32;
        while t < end {
            let day = t - t.rem_euclid(DAY_MS);
            orders.push((day + time_of_day(&mut rng, 2), idx, n));
            n += 1;
            if unit(&mut rng) < stop {
                break;
            }
            let gap = gamma(&mut rng, shape) * mean_gap / shape;
            t = day + ((gap.max(1.0)) * DAY_MS as f64) as Ts;
        }
    }
    orders.sort_unstable();
    let mut stats = GenerateStats {
        customers: u64::from(opts.customers),
        ..GenerateStats::default()
    };
    for (ts, idx, n) in orders {
        let mut rng = rng_for(opts.seed, STREAM_RETAIL, u64::from(idx), u64::from(n) + 1);
        let items = 1 + ((-(1.0 - unit(&mut rng)).ln() * 2.0) as u32).min(40);
        let line = format!(
            "{{\"type\":\"usage\",\"customer_id\":\"r-{idx:06}\",\"user_id\":\"u-{idx:06}-1\",\"action\":\"order_placed\",\"feature\":\"checkout\",\"quantity\":{items},\"ts\":\"{}\",\"event_id\":\"o-{idx:06}-{n}\"}}",
            format_ts(ts)
        );
        sink(&line);
        stats.lines += 1;
        stats.usage += 1;
    }
    Generation {
        labels: Vec::new(),
        stats,
    }
}

/// Gamma(shape, 1) by Marsaglia-Tsang (shape >= 1).
fn gamma(rng: &mut Rng, shape: f64) -> f64 {
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v > 0.0 && unit(rng).ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

fn billing_day(c: &mut Customer, day_start: Ts, day_end: Ts, rng: &mut Rng, em: &mut Emitter) {
    let gone = c.gone_at();
    if !c.existing && (day_start..day_end).contains(&c.start) {
        let (plan, mrr) = PLANS[c.plan_at(c.start) as usize];
        let mut b = billing_head("subscription_started", c);
        let _ = write!(b, ",\"plan\":\"{plan}\",\"mrr\":{mrr},\"currency\":\"USD\"");
        em.push(rng, Cat::Billing, c.start, b);
    }
    loop {
        let t = c.renewal_ts(c.renewal_k);
        if t >= day_end {
            break;
        }
        c.renewal_k += 1;
        if t < day_start || t >= gone {
            continue;
        }
        let (plan, mrr) = PLANS[c.plan_at(t) as usize];
        if mrr == 0 {
            continue;
        }
        let failing = c
            .story
            .as_ref()
            .filter(|s| s.onset == t)
            .map(|s| (s.story, s.recover_after));
        match failing {
            Some((Story::PaymentRecovered, recover_after)) => {
                let reason = pick(
                    rng,
                    &[
                        ("card_declined", 0.6),
                        ("insufficient_funds", 0.25),
                        ("expired_card", 0.15),
                    ],
                );
                let mut attempts = vec![t];
                if recover_after >= 3 * DAY_MS {
                    attempts.push(t + recover_after / 2);
                }
                for (i, at) in attempts.into_iter().enumerate() {
                    let mut b = billing_head("payment_failed", c);
                    let _ = write!(
                        b,
                        ",\"plan\":\"{plan}\",\"mrr\":{mrr},\"currency\":\"USD\",\"reason\":\"{reason}\",\"attempt\":{}",
                        i + 1
                    );
                    em.push(rng, Cat::Billing, at, b);
                }
                let paid = t + recover_after;
                renewal(c, paid, plan, mrr, rng, em);
            }
            Some((Story::PaymentNotRecovered, _)) => {
                let reason = pick(rng, &[("card_declined", 0.5), ("expired_card", 0.5)]);
                for (i, day) in [0, 3, 7, 12].into_iter().enumerate() {
                    let at = t + day * DAY_MS + if i == 0 { 0 } else { secs(rng, 0, HOUR_MS) };
                    let mut b = billing_head("payment_failed", c);
                    let _ = write!(
                        b,
                        ",\"plan\":\"{plan}\",\"mrr\":{mrr},\"currency\":\"USD\",\"reason\":\"{reason}\",\"attempt\":{}",
                        i + 1
                    );
                    em.push(rng, Cat::Billing, at, b);
                }
            }
            _ => renewal(c, t, plan, mrr, rng, em),
        }
    }
    let Some(s) = c.story.clone() else {
        return;
    };
    if s.story == Story::Downgrade && (day_start..day_end).contains(&s.onset) {
        let (plan, mrr) = PLANS[s.target_plan as usize];
        let (prev, prev_mrr) = PLANS[c.plan as usize];
        let mut b = billing_head("plan_changed", c);
        let _ = write!(
            b,
            ",\"plan\":\"{plan}\",\"mrr\":{mrr},\"previous_plan\":\"{prev}\",\"previous_mrr\":{prev_mrr},\"currency\":\"USD\""
        );
        em.push(rng, Cat::Billing, s.onset, b);
    }
    if let Some(cancel) = s.cancel_at.filter(|t| (day_start..day_end).contains(t)) {
        let (kind, reason) = match s.story {
            Story::PaymentNotRecovered => ("involuntary", "dunning_exhausted"),
            Story::AbruptStop => ("voluntary", "not_using"),
            _ => (
                "voluntary",
                pick(
                    rng,
                    &[
                        ("too_expensive", 0.4),
                        ("missing_features", 0.3),
                        ("switched_competitor", 0.3),
                    ],
                ),
            ),
        };
        let mut b = billing_head("subscription_cancelled", c);
        let _ = write!(b, ",\"reason\":\"{reason}\",\"cancel_kind\":\"{kind}\"");
        em.push(rng, Cat::Billing, cancel, b);
    }
}

fn renewal(c: &Customer, t: Ts, plan: &str, mrr: i64, rng: &mut Rng, em: &mut Emitter) {
    let mut b = billing_head("subscription_renewed", c);
    let _ = write!(b, ",\"plan\":\"{plan}\",\"mrr\":{mrr},\"currency\":\"USD\"");
    em.push(rng, Cat::Billing, t, b);
    let mut b = billing_head("payment_succeeded", c);
    let _ = write!(b, ",\"amount\":{mrr},\"currency\":\"USD\"");
    let paid = t + secs(rng, 5 * SECOND_MS, 2 * MINUTE_MS);
    em.push(rng, Cat::Billing, paid, b);
}

fn feedback_day(c: &mut Customer, day_start: Ts, day_end: Ts, rng: &mut Rng, em: &mut Emitter) {
    let stop = c.feedback_end();
    // Voluntary churners turn lukewarm (passives) while they drift.
    let drifting = |t: Ts| {
        c.story
            .as_ref()
            .is_some_and(|s| pre_churn_level(s, t) < 1.0)
    };
    while c.next_nps < day_end {
        let t = c.next_nps;
        c.next_nps += 90 * DAY_MS + secs(rng, 0, 60 * DAY_MS);
        if t >= day_start && t < stop && unit(rng) < 0.45 {
            let score = if drifting(t) {
                pick(rng, &[(7, 0.5), (8, 0.5)])
            } else {
                pick(rng, &[(7, 0.2), (8, 0.3), (9, 0.3), (10, 0.2)])
            };
            let mut b = head("nps", c);
            let _ = write!(b, ",\"score\":{score}");
            em.push(rng, Cat::Feedback, t, b);
        }
    }
    while c.next_ticket < day_end {
        let t = c.next_ticket;
        let gap = (c.ticket_gap_days - c.ticket_min_gap_days).max(1.0) * DAY_MS as f64;
        c.next_ticket += (c.ticket_min_gap_days * DAY_MS as f64) as Ts + exp_ms(rng, gap);
        if t >= day_start && t < stop {
            let sev = pick(rng, &[("low", 0.35), ("normal", 0.55), ("high", 0.10)]);
            ticket(
                c,
                t,
                sev,
                secs(rng, 4 * HOUR_MS, 72 * HOUR_MS),
                Survey::Healthy,
                rng,
                em,
            );
        }
    }
    // A churner's support friction: tickets until it is gone.
    while c.next_friction_ticket < day_end {
        let t = c.next_friction_ticket;
        let (lo, hi) = PRE_CHURN_TICKET_GAP_DAYS;
        c.next_friction_ticket += secs(rng, lo * DAY_MS, hi * DAY_MS);
        if t >= day_start && t < stop {
            let sev = pick(rng, &[("low", 0.1), ("normal", 0.6), ("high", 0.3)]);
            let resolve_after = secs(rng, DAY_MS, 5 * DAY_MS);
            ticket(c, t, sev, resolve_after, Survey::Lukewarm, rng, em);
        }
    }
    let Some(s) = c.story.clone() else {
        return;
    };
    if !(day_start..day_end).contains(&s.onset) {
        return;
    }
    match s.story {
        Story::Detractor => {
            let mut b;
            if unit(rng) < 0.7 {
                b = head("nps", c);
                let _ = write!(b, ",\"score\":{}", rng.random_range(0..=6));
            } else {
                b = head("csat", c);
                let _ = write!(b, ",\"score\":{}", rng.random_range(1..=2));
            }
            em.push(rng, Cat::Feedback, s.onset, b);
        }
        Story::SupportSpike => {
            let n = rng.random_range(5..=8);
            let mut times: Vec<Ts> = (1..n)
                .map(|_| s.onset + secs(rng, 10 * MINUTE_MS, 3 * DAY_MS))
                .collect();
            times.sort_unstable();
            times.insert(0, s.onset);
            for (i, t) in times.into_iter().enumerate() {
                let sev = match i {
                    0 => "high",
                    1 => pick(rng, &[("urgent", 0.5), ("high", 0.5)]),
                    _ => pick(rng, &[("normal", 0.6), ("high", 0.3), ("low", 0.1)]),
                };
                ticket(
                    c,
                    t,
                    sev,
                    secs(rng, DAY_MS, 5 * DAY_MS),
                    Survey::None,
                    rng,
                    em,
                );
            }
        }
        _ => {}
    }
}

/// Survey scores with their weights.
type Answers = &'static [(u8, f64)];

/// Which CSAT/CES answers may follow a resolved ticket.
#[derive(Clone, Copy, PartialEq)]
enum Survey {
    /// None.
    None,
    /// Occasional, mostly satisfied.
    Healthy,
    /// More often, lukewarm (CSAT 3-4, CES 4-5): never a detractor.
    Lukewarm,
}

/// A ticket opened at `t` and resolved `resolve_after` later, with an
/// occasional CSAT/CES answer afterwards as `survey` says.
fn ticket(
    c: &mut Customer,
    t: Ts,
    sev: &str,
    resolve_after: Ts,
    survey: Survey,
    rng: &mut Rng,
    em: &mut Emitter,
) {
    c.tickets += 1;
    let id = format!("t-{:06}-{}", c.idx, c.tickets);
    let mut b = head("support_ticket", c);
    let _ = write!(
        b,
        ",\"severity\":\"{sev}\",\"ticket_id\":\"{id}\",\"status\":\"opened\""
    );
    em.push(rng, Cat::Feedback, t, b);
    let resolved = t + resolve_after;
    if resolved >= c.feedback_end() {
        return;
    }
    let mut b = head("support_ticket", c);
    let _ = write!(
        b,
        ",\"severity\":\"{sev}\",\"ticket_id\":\"{id}\",\"status\":\"resolved\""
    );
    em.push(rng, Cat::Feedback, resolved, b);
    // (chance of an answer, scores and their weights) for CSAT, then CES.
    let (p_csat, csat, p_ces, ces): (f64, Answers, f64, Answers) = match survey {
        Survey::None => return,
        Survey::Healthy => (
            0.35,
            &[(3, 0.15), (4, 0.35), (5, 0.5)],
            0.15,
            &[(1, 0.2), (2, 0.3), (3, 0.25), (4, 0.15), (5, 0.1)],
        ),
        Survey::Lukewarm => (0.5, &[(3, 0.6), (4, 0.4)], 0.3, &[(4, 0.4), (5, 0.6)]),
    };
    for (kind, p, answers) in [("csat", p_csat, csat), ("ces", p_ces, ces)] {
        if unit(rng) < p {
            let at = resolved + secs(rng, 10 * MINUTE_MS, DAY_MS);
            let score = pick(rng, answers);
            let mut b = head(kind, c);
            let _ = write!(b, ",\"score\":{score}");
            em.push(rng, Cat::Feedback, at.min(c.feedback_end() - 1), b);
        }
    }
}

/// One usage event before formatting.
struct Use {
    ts: Ts,
    user: u16,
    light: bool,
    feature: u8,
}

fn usage_day(
    opts: &GenerateOptions,
    c: &mut Customer,
    d: i64,
    day_start: Ts,
    rng: &mut Rng,
    out: &mut Vec<(Ts, String)>,
) {
    let usage_end = c.usage_end();
    if day_start >= usage_end {
        return;
    }
    let weekend = is_weekend(day_start + 12 * HOUR_MS);
    let quiet = opts
        .quiet_week()
        .is_some_and(|(s, e)| (s..e).contains(&(day_start + 12 * HOUR_MS)));
    let quiet_factor = if quiet { opts.quiet_factor } else { 1.0 };
    let mut lambda = match c.rhythm {
        Rhythm::Daily => {
            if weekend {
                if c.weekend_idle { 0.0 } else { c.lambda * 0.2 }
            } else if c.story.is_some() || unit(rng) < 0.98 {
                c.lambda
            } else {
                0.0
            }
        }
        Rhythm::Every(g) => {
            if d < c.next_active_day {
                0.0
            } else {
                let mut next =
                    d + (f64::from(g) * rng.random_range(0.6..1.4)).round().max(1.0) as i64;
                let wd = weekday(opts.start + next * DAY_MS + 12 * HOUR_MS);
                if wd >= 5 && (c.weekend_idle || unit(rng) < 0.6) {
                    next += 7 - wd;
                }
                c.next_active_day = next;
                if weekend { c.lambda * 0.6 } else { c.lambda }
            }
        }
        Rhythm::Bursty => {
            if d < c.next_active_day {
                0.0
            } else {
                let gap = (21.0f64.ln() + 0.25 * normal(rng)).exp().clamp(12.0, 35.0);
                c.next_active_day = d + gap.round() as i64;
                rng.random_range(2.0..8.0)
            }
        }
    };
    lambda *= quiet_factor;
    let mut n = poisson(rng, lambda);
    if c.rhythm == Rhythm::Bursty && lambda > 0.0 {
        n = n.max(1);
    }
    let story = c.story.as_ref();
    let mut uses: Vec<Use> = Vec::with_capacity(n as usize + 2);
    for _ in 0..n {
        let ts = day_start + time_of_day(rng, c.shift_h);
        let (user, light) = if c.core > 0 {
            let light_share = story.map_or(SEAT_LOSS_LIGHT_SHARE, |s| s.light_share);
            if unit(rng) < 1.0 - light_share {
                (zipf_rank(rng, c.core), false)
            } else {
                (rng.random_range(c.core + 1..=c.seats), true)
            }
        } else {
            (zipf_rank(rng, c.seats), false)
        };
        let x = unit(rng) as f32 * c.feat_cum[FEATURES.len() - 1];
        let feature = c.feat_cum.iter().position(|&cum| x < cum).unwrap_or(0) as u8;
        uses.push(Use {
            ts,
            user,
            light,
            feature,
        });
    }
    // Story effects on the day's usage.
    uses.retain(|u| {
        if u.ts < c.start || u.ts >= usage_end {
            return false;
        }
        if c.weekend_idle && is_weekend(u.ts) {
            return false;
        }
        let Some(s) = story else {
            return true;
        };
        match s.story {
            Story::GradualDeclineCancel if u.ts > s.onset => {
                // The decline continues from where the pre-churn drift left it.
                let decay = (-((u.ts - s.onset) as f64) / s.tau).exp();
                let f = pre_churn_level(s, s.onset) * (s.floor + (1.0 - s.floor) * decay);
                !seat_left(c.seats, s, u.user, u.ts) && unit(rng) < f
            }
            Story::SeatLoss => !(u.light && u.ts >= s.onset),
            // Leading signal: churners drift down for weeks before the story proper.
            Story::GradualDeclineCancel | Story::AbruptStop | Story::PaymentNotRecovered => {
                !seat_left(c.seats, s, u.user, u.ts) && unit(rng) < pre_churn_level(s, u.ts)
            }
            _ => true,
        }
    });
    let periodic = c.kf_periodic;
    for u in uses.iter_mut() {
        for k in 0..2 {
            if u.feature == key_feature_index(k)
                && (!c.uses_kf_at(k, u.ts) || (k == 0 && periodic.is_some()))
            {
                u.feature = F_DASHBOARD;
            }
        }
    }
    // A report on a fixed rhythm: on its day, unless this period is skipped.
    if let Some(p) = periodic {
        let mut prng = rng_for(opts.seed, STREAM_PERIODIC, u64::from(c.idx), d as u64 + 1);
        let skip = f64::from(p.skip) * if quiet { 3.0 } else { 1.0 };
        let ts = day_start + time_of_day(&mut prng, c.shift_h);
        if (d - i64::from(p.phase)).rem_euclid(i64::from(p.period)) == 0
            && unit(&mut prng) >= skip
            && !(c.weekend_idle && weekend)
            && ts >= c.start
            && ts < usage_end
        {
            let user = zipf_rank(&mut prng, c.seats);
            uses.push(Use {
                ts,
                user,
                light: false,
                feature: key_feature_index(0),
            });
        }
    }
    // Habit: a key-feature user touches it again once 2 days have passed,
    // on the next day it may use the product at all.
    let may_use = lambda > 0.0 && !(c.weekend_idle && weekend);
    for k in 0..2 {
        let f = key_feature_index(k);
        let due = day_start - c.kf_last[k] >= 2 * DAY_MS;
        if (k == 0 && periodic.is_some())
            || !due
            || !may_use
            || !c.uses_kf_at(k, day_start + DAY_MS)
            || uses.iter().any(|u| u.feature == f)
        {
            continue;
        }
        let other = key_feature_index(1 - k);
        let candidates: Vec<usize> = (0..uses.len())
            .filter(|&i| uses[i].feature != other)
            .collect();
        if candidates.is_empty() {
            let ts = day_start + time_of_day(rng, c.shift_h);
            if ts >= c.start && ts < usage_end {
                let user = zipf_rank(rng, if c.core > 0 { c.core } else { c.seats });
                uses.push(Use {
                    ts,
                    user,
                    light: false,
                    feature: f,
                });
            }
        } else {
            let i = candidates[rng.random_range(0..candidates.len())];
            uses[i].feature = f;
        }
    }
    // Forced story events: the onset is an actual event.
    if let Some(s) = story.filter(|s| (day_start..day_start + DAY_MS).contains(&s.onset)) {
        let feature = match s.story {
            Story::AbruptStop => c
                .kf_use
                .iter()
                .position(|&u| u)
                .map_or(F_DASHBOARD, key_feature_index),
            Story::KeyFeatureDropped => key_feature_index(s.dropped_kf),
            _ => u8::MAX,
        };
        if feature != u8::MAX {
            uses.push(Use {
                ts: s.onset,
                user: 1,
                light: false,
                feature,
            });
        }
        if s.story == Story::AbruptStop {
            // The usage-end cut keeps ts < onset; the forced event is the last one.
            uses.retain(|u| u.ts <= s.onset);
        }
    }
    // Habit and story events added above come from seats still there.
    if let Some(s) = story {
        for u in uses
            .iter_mut()
            .filter(|u| seat_left(c.seats, s, u.user, u.ts))
        {
            u.user = 1;
        }
    }
    uses.sort_by_key(|u| u.ts);
    for u in &uses {
        for k in 0..2 {
            if u.feature == key_feature_index(k) {
                c.kf_last[k] = c.kf_last[k].max(u.ts);
            }
        }
        out.push((u.ts, usage_line(c, u, rng)));
    }
}

fn usage_line(c: &Customer, u: &Use, rng: &mut Rng) -> String {
    let (feature, actions, _) = FEATURES[u.feature as usize];
    let action = actions[rng.random_range(0..actions.len())];
    let mut b = head("usage", c);
    let _ = write!(
        b,
        ",\"user_id\":\"u-{:06}-{}\",\"action\":\"{action}\"",
        c.idx, u.user
    );
    if let Some(f) = feature {
        let _ = write!(b, ",\"feature\":\"{f}\"");
    }
    match feature {
        Some("api") => {
            let q = log_uniform(rng, 1.0, 2000.0).round();
            let _ = write!(b, ",\"quantity\":{q}");
        }
        Some("integrations") => {
            let q = log_uniform(rng, 10.0, 5000.0).round();
            let _ = write!(b, ",\"quantity\":{q}");
        }
        Some("editor") => {
            let q = (log_uniform(rng, 0.5, 90.0) * 10.0).round() / 10.0;
            let _ = write!(b, ",\"quantity\":{q}");
        }
        _ => {}
    }
    b
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::sync::OnceLock;

    use super::*;
    use crate::event::{
        CancelKind, DecodeConfig, Event, EventKind, Severity, decode_str, user_hash,
    };

    fn opts(customers: u32, seed: u64) -> GenerateOptions {
        GenerateOptions {
            customers,
            seed,
            ..GenerateOptions::default()
        }
    }

    struct Fixture {
        opts: GenerateOptions,
        out: Generated,
        /// Decoded events per customer, in arrival order, duplicates included.
        by_customer: HashMap<String, Vec<Event>>,
        customers: Vec<Customer>,
    }

    /// One standard run shared by the tests (decoding is the slow part).
    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let opts = opts(450, 7);
            let out = generate_to_vec(&opts);
            // Usage events keep the key feature they used as an index in this list.
            let cfg = DecodeConfig {
                key_features: KEY_FEATURES.map(String::from).to_vec(),
                ..DecodeConfig::default()
            };
            let mut by_customer: HashMap<String, Vec<Event>> = HashMap::new();
            for line in &out.lines {
                let e = decode_str(line, &cfg)
                    .unwrap_or_else(|r| panic!("line does not decode ({r:?}): {line}"));
                by_customer
                    .entry(e.customer_id.to_string())
                    .or_default()
                    .push(e);
            }
            let customers = build_customers(&opts);
            Fixture {
                opts,
                out,
                by_customer,
                customers,
            }
        })
    }

    fn events<'a>(f: &'a Fixture, id: &str) -> Vec<&'a Event> {
        // Deduplicated by event_id, sorted by event time.
        let mut seen = HashSet::new();
        let mut v: Vec<&Event> = f.by_customer[id]
            .iter()
            .filter(|e| e.event_id.as_ref().is_none_or(|i| seen.insert(i.clone())))
            .collect();
        v.sort_by_key(|e| e.ts);
        v
    }

    fn usage<'a>(evs: &[&'a Event]) -> Vec<&'a Event> {
        evs.iter()
            .copied()
            .filter(|e| matches!(e.kind, EventKind::Usage { .. }))
            .collect()
    }

    fn labels_of(f: &Fixture, story: Story) -> Vec<&Label> {
        f.out.labels.iter().filter(|l| l.story == story).collect()
    }

    #[test]
    fn same_seed_same_bytes_and_other_seed_differs() {
        let o = GenerateOptions {
            days: 80,
            ..opts(60, 3)
        };
        let a = generate_to_vec(&o);
        let b = generate_to_vec(&o);
        assert!(a.lines.len() > 1000);
        assert_eq!(a.lines, b.lines);
        assert_eq!(a.labels, b.labels);
        let c = generate_to_vec(&GenerateOptions { seed: 4, ..o });
        assert_ne!(a.lines, c.lines);
    }

    #[test]
    fn streaming_and_run_write_the_same_lines() {
        let dir = std::env::temp_dir().join(format!("churnwatch-gen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = GenerateArgs {
            customers: 30,
            days: Some(75),
            out: dir.join("events.jsonl"),
            labels: Some(dir.join("labels.jsonl")),
            ..GenerateArgs::default()
        };
        let summary = run(&args).unwrap();
        let text = std::fs::read_to_string(&args.out).unwrap();
        let g = generate_to_vec(&args.options().unwrap());
        assert_eq!(
            text,
            g.lines.iter().map(|l| format!("{l}\n")).collect::<String>()
        );
        assert_eq!(summary.stats.lines as usize, g.lines.len());
        assert_eq!(
            read_labels(args.labels.as_ref().unwrap()).unwrap(),
            g.labels
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_line_decodes_and_stays_in_the_period() {
        let f = fixture();
        let (start, end) = (f.opts.start, f.opts.end());
        for evs in f.by_customer.values() {
            for e in evs {
                assert!((start..end).contains(&e.ts), "{e:?}");
            }
        }
        let total: usize = f.by_customer.values().map(Vec::len).sum();
        assert_eq!(total, f.out.lines.len());
        assert_eq!(f.out.stats.lines as usize, f.out.lines.len());
    }

    #[test]
    fn every_story_is_labelled_with_enough_history() {
        let f = fixture();
        for story in Story::ALL {
            assert!(
                labels_of(f, story).len() >= 8,
                "{story:?} has too few customers"
            );
        }
        let by_id: HashMap<String, &Customer> = f.customers.iter().map(|c| (c.id(), c)).collect();
        for l in &f.out.labels {
            let c = by_id[&l.customer_id];
            let onset = l.onset_ts().unwrap();
            assert!(onset >= c.start.max(f.opts.start) + 63 * DAY_MS, "{l:?}");
            assert!(onset + 14 * DAY_MS <= f.opts.end(), "{l:?}");
            assert!(!l.alerts.is_empty());
            // The first event of the customer is at least 9 weeks before the onset.
            let first = events(f, &l.customer_id)[0].ts;
            assert!(onset - first >= 63 * DAY_MS, "{l:?}");
        }
        let storied: HashSet<&str> = f
            .out
            .labels
            .iter()
            .map(|l| l.customer_id.as_str())
            .collect();
        assert_eq!(storied.len(), f.out.labels.len(), "one story per customer");
    }

    #[test]
    fn abrupt_stop_onset_is_the_last_usage() {
        let f = fixture();
        for l in labels_of(f, Story::AbruptStop) {
            let onset = l.onset_ts().unwrap();
            let evs = events(f, &l.customer_id);
            let u = usage(&evs);
            assert_eq!(u.last().unwrap().ts, onset, "{l:?}");
            // Busy right before the stop: >= 5 events a week over the 4 weeks before.
            let before = u.iter().filter(|e| e.ts > onset - 28 * DAY_MS).count();
            assert!(before >= 20, "{l:?}: {before}");
            assert!(!evs.iter().any(|e| e.ts > onset && !e.kind.is_billing()));
            assert!(
                l.alerts
                    .starts_with(&["engagement_drop".into(), "inactivity".into()])
            );
            assert_eq!(
                l.churn_at.is_some(),
                l.alerts.contains(&"churned".to_string())
            );
        }
    }

    #[test]
    fn payment_stories_follow_the_dunning_contract() {
        let f = fixture();
        for l in labels_of(f, Story::PaymentNotRecovered) {
            let onset = l.onset_ts().unwrap();
            let evs = events(f, &l.customer_id);
            let first_fail = evs
                .iter()
                .find(|e| matches!(e.kind, EventKind::PaymentFailed { .. }))
                .unwrap();
            assert_eq!(first_fail.ts, onset);
            assert!(
                !evs.iter()
                    .any(|e| e.ts >= onset && matches!(e.kind, EventKind::PaymentSucceeded { .. }))
            );
            assert_eq!(l.churn_at_ts(), Some(onset + DUNNING_GRACE_MS));
            assert_eq!(l.alerts, ["payment_failed", "churned"]);
            for e in &evs {
                if let EventKind::SubscriptionCancelled { cancel_kind, .. } = e.kind {
                    assert_eq!(cancel_kind, CancelKind::Involuntary);
                    assert!(e.ts > onset + DUNNING_GRACE_MS);
                }
            }
        }
        for l in labels_of(f, Story::PaymentRecovered) {
            let onset = l.onset_ts().unwrap();
            let evs = events(f, &l.customer_id);
            let fails: Vec<Ts> = evs
                .iter()
                .filter(|e| matches!(e.kind, EventKind::PaymentFailed { .. }))
                .map(|e| e.ts)
                .collect();
            assert_eq!(fails[0], onset);
            assert_eq!(fails.len(), 2, "{l:?}");
            let paid = evs
                .iter()
                .find(|e| e.ts > onset && matches!(e.kind, EventKind::PaymentSucceeded { .. }))
                .unwrap();
            assert!((3 * DAY_MS..=10 * DAY_MS).contains(&(paid.ts - onset)));
            assert_eq!(l.churn_at, None);
        }
    }

    #[test]
    fn feedback_and_billing_stories_have_their_event_at_onset() {
        let f = fixture();
        for l in labels_of(f, Story::Downgrade) {
            let e = events(f, &l.customer_id)
                .into_iter()
                .find(|e| matches!(e.kind, EventKind::PlanChanged { .. }))
                .unwrap();
            assert_eq!(e.ts, l.onset_ts().unwrap());
            let EventKind::PlanChanged {
                mrr, previous_mrr, ..
            } = e.kind
            else {
                unreachable!()
            };
            assert!(mrr < previous_mrr.unwrap());
        }
        assert!(labels_of(f, Story::Downgrade).iter().any(|l| {
            events(f, &l.customer_id)
                .iter()
                .any(|e| matches!(e.kind, EventKind::PlanChanged { mrr: 0, .. }))
        }));
        for l in labels_of(f, Story::Detractor) {
            let onset = l.onset_ts().unwrap();
            let bad = events(f, &l.customer_id).into_iter().any(|e| {
                e.ts == onset
                    && matches!(
                        e.kind,
                        EventKind::Nps { score: 0..=6 } | EventKind::Csat { score: 1..=2 }
                    )
            });
            assert!(bad, "{l:?}");
        }
        for l in labels_of(f, Story::SupportSpike) {
            let onset = l.onset_ts().unwrap();
            let evs = events(f, &l.customer_id);
            let opened: Vec<&Event> = evs
                .iter()
                .copied()
                .filter(|e| {
                    matches!(
                        e.kind,
                        EventKind::SupportTicket {
                            resolved: false,
                            ..
                        }
                    )
                })
                .collect();
            let burst = opened
                .iter()
                .filter(|e| (onset..=onset + 3 * DAY_MS).contains(&e.ts))
                .count();
            assert!(burst >= 5, "{l:?}");
            assert!(opened.iter().any(|e| e.ts == onset));
            let before = opened
                .iter()
                .filter(|e| (onset - 60 * DAY_MS..onset).contains(&e.ts))
                .count();
            assert!(before <= 2, "{l:?}: {before} tickets in the 60 days before");
        }
    }

    fn distinct_users(u: &[&Event], from: Ts, to: Ts) -> usize {
        u.iter()
            .filter(|e| (from..to).contains(&e.ts))
            .filter_map(|e| match &e.kind {
                EventKind::Usage { user, .. } => *user,
                _ => None,
            })
            .collect::<HashSet<_>>()
            .len()
    }

    #[test]
    fn usage_stories_change_usage_as_labelled() {
        let f = fixture();
        let count = |u: &[&Event], from: Ts, to: Ts| {
            u.iter().filter(|e| (from..to).contains(&e.ts)).count() as f64
        };
        for l in labels_of(f, Story::SeatLoss) {
            let onset = l.onset_ts().unwrap();
            let u = usage(&events(f, &l.customer_id));
            for w in 1..=2 {
                let (a, b) = (onset - w * 7 * DAY_MS, onset - (w - 1) * 7 * DAY_MS);
                let before = distinct_users(&u, a, b) as f64;
                let after = distinct_users(&u, onset + 7 * DAY_MS, onset + 14 * DAY_MS) as f64;
                assert!(
                    after <= 0.4 * before + 0.5,
                    "{l:?}: {before} -> {after} users"
                );
            }
            let before = count(&u, onset - 14 * DAY_MS, onset) / 2.0;
            let after = count(&u, onset, onset + 14 * DAY_MS) / 2.0;
            assert!(
                after > 0.45 * before,
                "{l:?}: {before} -> {after} events/week"
            );
            assert_eq!(l.may_fire, ["engagement_drop"], "{l:?}");
        }
        for l in labels_of(f, Story::GradualDeclineCancel) {
            let onset = l.onset_ts().unwrap();
            let evs = events(f, &l.customer_id);
            let u = usage(&evs);
            let before = count(&u, onset - 14 * DAY_MS, onset) / 2.0;
            let week2 = count(&u, onset + 7 * DAY_MS, onset + 14 * DAY_MS);
            // Falls 60-90%, nine tenths of the way within 14-28 days (the
            // label's detect_within_days); the cancel comes from day 21.
            let week3 = count(&u, onset + 14 * DAY_MS, onset + 21 * DAY_MS);
            assert!(before >= 30.0, "{l:?}: {before}");
            assert!(week2 < 0.9 * before, "{l:?}: {before} -> {week2}");
            assert!(week3 < 0.75 * before, "{l:?}: {before} -> {week3}");
            assert!((14..=28).contains(&l.detect_within_days), "{l:?}");
            let churn = l.churn_at_ts().unwrap();
            assert!((21 * DAY_MS..=35 * DAY_MS).contains(&(churn - onset)));
            assert!(evs.iter().any(|e| e.ts == churn
                && matches!(
                    e.kind,
                    EventKind::SubscriptionCancelled {
                        cancel_kind: CancelKind::Voluntary,
                        ..
                    }
                )));
            assert!(!evs.iter().any(|e| e.ts > churn));
        }
        for l in labels_of(f, Story::KeyFeatureDropped) {
            let onset = l.onset_ts().unwrap();
            let u = usage(&events(f, &l.customer_id));
            let uses_of = |k: &str| -> Vec<Ts> {
                u.iter()
                    .filter(|e| matches!(e.kind, EventKind::Usage { key_feature: Some(f), .. } if KEY_FEATURES[usize::from(f)] == k))
                    .map(|e| e.ts)
                    .collect()
            };
            let dropped: Vec<&str> = KEY_FEATURES
                .into_iter()
                .filter(|k| uses_of(k).last() == Some(&onset))
                .collect();
            assert_eq!(dropped.len(), 1, "{l:?}");
            let ts = uses_of(dropped[0]);
            // Regular before: never more than 6 days without it in the 8 weeks before.
            let recent: Vec<Ts> = ts
                .into_iter()
                .filter(|&t| t > onset - 56 * DAY_MS)
                .collect();
            assert!(
                recent.first().unwrap() - (onset - 56 * DAY_MS) <= 6 * DAY_MS,
                "{l:?}"
            );
            for w in recent.windows(2) {
                assert!(w[1] - w[0] <= 6 * DAY_MS, "{l:?}: gap {}", format_ts(w[0]));
            }
            let before = count(&u, onset - 14 * DAY_MS, onset) / 2.0;
            let after = count(&u, onset, onset + 14 * DAY_MS) / 2.0;
            assert!(after > 0.65 * before, "{l:?}: {before} -> {after}");
        }
    }

    #[test]
    fn churners_leading_signals_vary_and_stay_below_every_alert() {
        let f = fixture();
        let (mut churners, mut friction, mut leaving) = (0, 0, 0);
        for c in &f.customers {
            let Some(s) = c.story.as_deref() else {
                continue;
            };
            let Some(end) = pre_churn_end(s) else {
                continue;
            };
            churners += 1;
            let evs = events(f, &c.id());
            let mut opened = Vec::new();
            for e in &evs {
                match &e.kind {
                    EventKind::SupportTicket {
                        severity,
                        resolved: false,
                        ..
                    } => {
                        assert_ne!(*severity, Severity::Urgent, "{}", c.id());
                        opened.push(e.ts);
                    }
                    EventKind::Nps { score } => assert!(*score >= 7, "{}", c.id()),
                    EventKind::Csat { score } => assert!(*score >= 3, "{}", c.id()),
                    EventKind::Ces { score } => assert!(*score <= 5, "{}", c.id()),
                    _ => {}
                }
            }
            // Never a support spike (3 tickets within 7 days).
            for w in opened.windows(3) {
                assert!(w[2] - w[0] >= 7 * DAY_MS, "{}: {opened:?}", c.id());
            }
            if c.next_friction_ticket != Ts::MAX {
                assert_ne!(s.story, Story::PaymentNotRecovered, "{}", c.id());
                let first = c.next_friction_ticket;
                if first >= f.opts.start && first < c.feedback_end() {
                    friction += 1;
                    assert!(opened.contains(&first), "{}: {opened:?}", c.id());
                }
            }
            // The least active seat leaves first and is not seen again.
            let leavers = (f64::from(c.seats) * PRE_CHURN_SEATS_LEFT).floor() as u16;
            if s.seats_leave_from != Ts::MAX && leavers > 0 {
                leaving += 1;
                let gone = s.seats_leave_from + (end - s.seats_leave_from) / i64::from(leavers + 1);
                let last = format!("u-{:06}-{}", c.idx, c.seats);
                assert!(
                    usage(&evs).iter().all(|e| e.ts < gone
                        || !matches!(e.kind, EventKind::Usage { user: Some(u), .. } if u == user_hash(&last))),
                    "{}",
                    c.id()
                );
            }
        }
        assert!(churners >= 20, "{churners}");
        // Some, not all, show each secondary signal.
        assert!(
            friction > 0 && friction < churners,
            "{friction} of {churners}"
        );
        assert!(leaving > 0 && leaving < churners, "{leaving} of {churners}");
    }

    #[test]
    fn healthy_customers_show_no_story_pattern() {
        let f = fixture();
        let storied: HashSet<&str> = f
            .out
            .labels
            .iter()
            .map(|l| l.customer_id.as_str())
            .collect();
        let (mut checked, mut periodic) = (0, 0);
        for c in &f.customers {
            let id = c.id();
            if storied.contains(id.as_str()) || !f.by_customer.contains_key(&id) {
                continue;
            }
            checked += 1;
            let evs = events(f, &id);
            let mut opened = Vec::new();
            for e in &evs {
                match &e.kind {
                    EventKind::Nps { score } => assert!(*score >= 7, "{id}"),
                    EventKind::Csat { score } => assert!(*score >= 3, "{id}"),
                    EventKind::Ces { score } => assert!(*score <= 5, "{id}"),
                    EventKind::PaymentFailed { .. }
                    | EventKind::PlanChanged { .. }
                    | EventKind::SubscriptionCancelled { .. } => panic!("{id}: {e:?}"),
                    EventKind::SupportTicket {
                        severity, resolved, ..
                    } => {
                        assert_ne!(*severity, Severity::Urgent, "{id}");
                        if !resolved {
                            opened.push(e.ts);
                        }
                    }
                    _ => {}
                }
            }
            for w in opened.windows(2) {
                assert!(w[1] - w[0] >= 10 * DAY_MS, "{id}: tickets too close");
            }
            // Key features are used on a habit (again within days) or never,
            // or `reports` on a fixed rhythm (checked below).
            let u = usage(&evs);
            if let Some(p) = c.kf_periodic {
                let days: Vec<i64> = u
                    .iter()
                    .filter(|e| {
                        matches!(
                            e.kind,
                            EventKind::Usage {
                                key_feature: Some(0),
                                ..
                            }
                        )
                    })
                    .map(|e| (e.ts - f.opts.start).div_euclid(DAY_MS))
                    .collect();
                assert!(
                    days.iter()
                        .all(|d| (d - i64::from(p.phase)).rem_euclid(i64::from(p.period)) == 0),
                    "{id}: reports off its {}-day rhythm: {days:?}",
                    p.period
                );
                periodic += 1;
            }
            for k in KEY_FEATURES
                .iter()
                .skip(usize::from(c.kf_periodic.is_some()))
            {
                let k = *k;
                let ts: Vec<Ts> = u
                    .iter()
                    .filter(|e| matches!(e.kind, EventKind::Usage { key_feature: Some(f), .. } if KEY_FEATURES[usize::from(f)] == k))
                    .map(|e| e.ts)
                    .collect();
                for w in ts.windows(2) {
                    assert!(
                        w[1] - w[0] < 12 * DAY_MS,
                        "{id}: {k} unused from {}",
                        format_ts(w[0])
                    );
                }
                if let Some(last) = ts.last() {
                    assert!(f.opts.end() - last < 12 * DAY_MS, "{id}: {k} stops");
                }
            }
        }
        assert!(checked > 250);
        assert!(periodic > 20, "periodic report users: {periodic}");
    }

    #[test]
    fn weekend_idle_customers_never_use_the_product_on_weekends() {
        let f = fixture();
        let mut checked = 0;
        for c in f.customers.iter().filter(|c| c.weekend_idle) {
            let Some(evs) = f.by_customer.get(&c.id()) else {
                continue;
            };
            let u = usage(&evs.iter().collect::<Vec<_>>());
            checked += usize::from(!u.is_empty());
            assert!(!u.iter().any(|e| is_weekend(e.ts)), "{}", c.id());
        }
        assert!(checked >= 40, "{checked}");
        // Everybody else does use it on weekends sometimes.
        let weekend = f
            .by_customer
            .values()
            .flatten()
            .filter(|e| matches!(e.kind, EventKind::Usage { .. }) && is_weekend(e.ts))
            .count();
        assert!(weekend > 1000);
    }

    #[test]
    fn bursty_customers_burst_about_every_three_weeks() {
        let f = fixture();
        let mut gaps = Vec::new();
        for c in f.customers.iter().filter(|c| c.rhythm == Rhythm::Bursty) {
            assert!(c.story.is_none());
            if c.start > f.opts.start + 30 * DAY_MS {
                continue;
            }
            let evs = events(f, &c.id());
            let days: Vec<i64> = usage(&evs)
                .iter()
                .map(|e| e.ts.div_euclid(DAY_MS))
                .collect();
            let mut bursts: Vec<i64> = days.clone();
            bursts.dedup();
            assert!(bursts.len() >= 3, "{}", c.id());
            gaps.extend(bursts.windows(2).map(|w| w[1] - w[0]));
        }
        gaps.sort_unstable();
        assert!(gaps.len() >= 40, "{}", gaps.len());
        let median = gaps[gaps.len() / 2];
        assert!((18..=24).contains(&median), "median gap {median} days");
        assert!(gaps[0] >= 10);
    }

    #[test]
    fn duplicates_and_late_events_match_the_fractions() {
        let f = fixture();
        let mut ids: HashMap<(&str, &str), usize> = HashMap::new();
        for (c, evs) in &f.by_customer {
            for e in evs {
                if let Some(id) = &e.event_id {
                    *ids.entry((c.as_str(), &**id)).or_default() += 1;
                }
            }
        }
        let repeats: usize = ids.values().map(|n| n - 1).sum();
        assert!(ids.values().all(|&n| n <= 2));
        let originals = f.out.lines.len() - repeats;
        let share = repeats as f64 / originals as f64;
        assert!((0.045..0.055).contains(&share), "dup share {share}");
        assert_eq!(repeats as u64, f.out.stats.duplicates);
        // Lines are in arrival order: each line is at most ~1 h behind the
        // newest ts seen, apart from a tiny share of very late ones.
        let cfg = DecodeConfig::default();
        let (mut max_ts, mut behind, mut very_late) = (Ts::MIN, 0usize, 0usize);
        for line in &f.out.lines {
            let ts = decode_str(line, &cfg).unwrap().ts;
            if ts < max_ts.saturating_sub(2 * HOUR_MS) {
                very_late += 1;
            } else if ts < max_ts.saturating_sub(10 * MINUTE_MS) {
                behind += 1;
            }
            max_ts = max_ts.max(ts);
        }
        let n = originals as f64;
        assert!(
            behind as f64 > 0.003 * n && (behind as f64) < 0.03 * n,
            "{behind}"
        );
        assert!(
            very_late > 0 && (very_late as f64) < 0.002 * n,
            "{very_late}"
        );
    }

    #[test]
    fn quiet_week_cuts_everyones_usage() {
        let f = fixture();
        let (qs, qe) = f.opts.quiet_week().unwrap();
        assert_eq!(weekday(qs), 0, "the quiet week starts on a Monday");
        let mut weekly: BTreeMap<i64, usize> = BTreeMap::new();
        for e in f.by_customer.values().flatten() {
            if matches!(e.kind, EventKind::Usage { .. }) {
                *weekly
                    .entry((e.ts - qs).div_euclid(7 * DAY_MS))
                    .or_default() += 1;
            }
        }
        let quiet = weekly[&0] as f64;
        let around = (weekly[&-2] + weekly[&-1] + weekly[&1] + weekly[&2]) as f64 / 4.0;
        let ratio = quiet / around;
        assert!((0.3..0.5).contains(&ratio), "quiet week ratio {ratio}");
        assert_eq!(qe - qs, 7 * DAY_MS);
    }

    #[test]
    fn activity_spreads_over_orders_of_magnitude_and_customers_join() {
        let f = fixture();
        let mut per: Vec<usize> = f
            .by_customer
            .values()
            .map(|evs| usage(&evs.iter().collect::<Vec<_>>()).len())
            .collect();
        per.sort_unstable();
        let (p10, p90) = (per[per.len() / 10], per[per.len() * 9 / 10]);
        assert!(p90 >= 20 * p10.max(1), "p10 {p10}, p90 {p90}");
        let started = f
            .by_customer
            .values()
            .filter(|evs| {
                evs.iter()
                    .any(|e| matches!(e.kind, EventKind::SubscriptionStarted { .. }))
            })
            .count();
        assert!(started >= 30, "{started} new customers");
        let max_seats = f
            .by_customer
            .values()
            .map(|evs| distinct_users(&evs.iter().collect::<Vec<_>>(), Ts::MIN, Ts::MAX))
            .max()
            .unwrap();
        assert!(max_seats >= 100, "{max_seats}");
    }

    #[test]
    fn light_profile_gives_few_events_per_customer() {
        let args = GenerateArgs {
            customers: 3000,
            profile: Profile::Light,
            ..GenerateArgs::default()
        };
        let o = args.options().unwrap();
        assert_eq!(o.days, 28);
        let mut lines = 0u64;
        let g = generate(&o, &mut |_| lines += 1);
        let per = lines as f64 / 3000.0;
        assert!((2.0..30.0).contains(&per), "{per} events per customer");
        assert!(g.labels.is_empty());
    }

    #[test]
    fn bad_arguments_are_all_reported() {
        let args = GenerateArgs {
            start: "yesterday".into(),
            dup_fraction: 1.5,
            days: Some(0),
            ..GenerateArgs::default()
        };
        let err = args.options().unwrap_err().to_string();
        for key in ["--start", "--dup-fraction", "--days"] {
            assert!(err.contains(key), "{err}");
        }
    }
}
