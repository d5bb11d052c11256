//! `churnwatch backtest`: replays a JSONL file of input events through the
//! engine and writes alerts, customers, rejects and a summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, ConfigErrors};
use crate::engine::{Engine, Stats};
use crate::event::{self, Ts, format_ts};

/// Flags of `churnwatch backtest` (see `shared/EVENTS.md`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BacktestArgs {
    /// JSONL file of input events, or `-` for standard input.
    #[arg(long)]
    pub input: PathBuf,
    /// RFC 3339 instant: later events are not applied; the clock runs to it at the end.
    #[arg(long)]
    pub until: Option<String>,
    /// Accept events dated more than `max_future_skew` ahead of this
    /// machine's clock (a synthetic file dated ahead); by default they are
    /// rejected as `ts_in_future`, as the service does.
    #[arg(long)]
    pub allow_future: bool,
    /// TOML config file (env `CHURNWATCH_*` also applies).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write alert CloudEvents here, one per line, in the order they happened.
    #[arg(long)]
    pub alerts_out: Option<PathBuf>,
    /// Write one JSON object per customer here, sorted by customer_id.
    #[arg(long)]
    pub customers_out: Option<PathBuf>,
    /// Write rejected lines here with line number and reason.
    #[arg(long)]
    pub rejects_out: Option<PathBuf>,
    /// Write the summary as one JSON object here.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Do not print the summary on stdout.
    #[arg(long)]
    pub quiet: bool,
}

/// What can stop a backtest (bad lines never do).
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// `--until` is not a timestamp.
    #[error("--until {0:?}: expected an RFC 3339 instant with a zone, like 2026-11-24T00:00:00Z")]
    Until(String),
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// Reading or writing.
        what: &'static str,
        /// Which file.
        path: String,
        /// Cause.
        source: io::Error,
    },
}

/// Counts of a backtest, printed and written with `--summary-json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Non-blank input lines.
    pub events_read: u64,
    /// Applied to state.
    pub applied: u64,
    /// Later than the allowed lateness (still applied where possible).
    pub late: u64,
    /// Dropped as repeated `event_id`.
    pub duplicates: u64,
    /// After `--until`, not applied.
    pub after_until: u64,
    /// Rejected lines.
    pub rejected: u64,
    /// Rejected lines by reason code.
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Applied events by type.
    pub events_by_type: BTreeMap<&'static str, u64>,
    /// Customers seen.
    pub customers: u64,
    /// Customers by lifecycle.
    pub customers_by_lifecycle: BTreeMap<&'static str, u64>,
    /// Customers by risk.
    pub customers_by_risk: BTreeMap<&'static str, u64>,
    /// Alert transitions by `alert/status`.
    pub alerts: BTreeMap<String, u64>,
    /// Alerts firing at the end, by alert.
    pub firing_at_end: BTreeMap<&'static str, u64>,
    /// The clock at the end.
    pub as_of: Option<String>,
    /// Business metrics over the rolling `metrics_window` ending at `as_of`.
    pub business_rolling: Value,
    /// Business metrics per calendar month (UTC).
    pub business_monthly: Value,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BacktestError + 'a {
    move |source| BacktestError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

fn create(path: &Option<PathBuf>) -> Result<Option<BufWriter<File>>, BacktestError> {
    path.as_ref()
        .map(|p| {
            File::create(p)
                .map(BufWriter::new)
                .map_err(io_err("cannot create", p))
        })
        .transpose()
}

/// [`replay`] with nothing done per alert, reject or progress step (the
/// benchmarks): the engine and the summary.
pub fn replay_quietly(cfg: Arc<Config>, reader: impl Read) -> io::Result<(Engine, Summary)> {
    replay(cfg, reader, None, |_| Ok(()), |_, _, _| Ok(()), |_| {})
}

/// Replays `reader` through a fresh engine. Returns the engine (for tests and
/// callers that want more than the files) and the summary.
pub fn replay(
    cfg: Arc<Config>,
    reader: impl Read,
    until: Option<Ts>,
    mut on_alert: impl FnMut(&crate::alert::AlertEvent) -> io::Result<()>,
    mut on_reject: impl FnMut(u64, &event::RejectReason, &[u8]) -> io::Result<()>,
    mut progress: impl FnMut(u64),
) -> io::Result<(Engine, Summary)> {
    let mut engine = Engine::new(cfg.clone());
    engine.set_until(until);
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut line = Vec::with_capacity(1024);
    let (mut read, mut rejected) = (0u64, BTreeMap::<&'static str, u64>::new());
    let mut lineno = 0u64;
    let mut bytes = 0u64;
    let max = cfg.decode.max_message_bytes;
    loop {
        line.clear();
        let (n, oversized) = read_line_bounded(&mut reader, &mut line, max)?;
        if n == 0 {
            break;
        }
        lineno += 1;
        bytes += n as u64;
        if lineno.is_multiple_of(65_536) {
            progress(bytes);
        }
        if let Some(len) = oversized {
            // Never held in memory whole: the rejects file gets its first
            // `max_message_bytes`.
            read += 1;
            let reason = event::RejectReason::TooLarge { len, max };
            *rejected.entry(reason.code()).or_default() += 1;
            on_reject(lineno, &reason, &line)?;
            continue;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        read += 1;
        match event::decode(body, &cfg.decode) {
            Ok(ev) => {
                engine.ingest(ev, lineno);
            }
            Err(reason) => {
                *rejected.entry(reason.code()).or_default() += 1;
                on_reject(lineno, &reason, body)?;
            }
        }
        for a in engine.take_alerts() {
            on_alert(&a)?;
        }
    }
    engine.finish(until);
    for a in engine.take_alerts() {
        on_alert(&a)?;
    }
    progress(bytes);
    let summary = summarize(&mut engine, read, rejected);
    Ok((engine, summary))
}

/// Reads one line into `line`, at most `max` bytes of it plus its line
/// end: a longer line is skipped to its end without being kept. Returns the
/// bytes consumed and, for a longer line, its length (without the line end).
fn read_line_bounded(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<(usize, Option<usize>)> {
    // A line of `max` bytes may end in "\r\n".
    let n = reader
        .by_ref()
        .take(max as u64 + 2)
        .read_until(b'\n', line)?;
    if n == 0 || line.last() == Some(&b'\n') || n < max + 2 {
        return Ok((n, None));
    }
    line.truncate(max);
    let mut len = n;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((len, Some(len)));
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok((len + i + 1, Some(len + i)));
            }
            None => {
                let k = buf.len();
                reader.consume(k);
                len += k;
            }
        }
    }
}

fn summarize(
    engine: &mut Engine,
    read: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
) -> Summary {
    let s: &Stats = engine.stats();
    let mut lifecycle = BTreeMap::new();
    let mut risk = BTreeMap::new();
    let mut firing = BTreeMap::new();
    for g in engine.snapshot().groups {
        for (k, v) in g.by_lifecycle {
            *lifecycle.entry(k.as_str()).or_default() += v;
        }
        for (k, v) in g.by_risk {
            *risk.entry(k.as_str()).or_default() += v;
        }
        for (k, v) in g.firing {
            *firing.entry(k).or_default() += v;
        }
    }
    let has_clock = engine.max_ts().is_some();
    Summary {
        events_read: read,
        applied: s.applied,
        late: s.late,
        duplicates: s.duplicates,
        after_until: s.after_until,
        rejected: rejected_by_reason.values().sum(),
        rejected_by_reason,
        events_by_type: s.by_type(),
        customers: engine.customer_count() as u64,
        customers_by_lifecycle: lifecycle,
        customers_by_risk: risk,
        alerts: s.alerts.clone(),
        firing_at_end: firing,
        as_of: has_clock.then(|| format_ts(engine.clock())),
        business_rolling: if has_clock {
            serde_json::to_value(engine.business_rolling()).unwrap_or(Value::Null)
        } else {
            Value::Null
        },
        business_monthly: if has_clock {
            serde_json::to_value(engine.business_monthly()).unwrap_or(Value::Null)
        } else {
            Value::Null
        },
    }
}

/// Runs the `backtest` command.
pub fn run(args: &BacktestArgs) -> Result<Summary, BacktestError> {
    let mut cfg = crate::config::load(args.config.as_deref())?;
    if args.allow_future {
        cfg.decode.max_future_skew = None;
    }
    let cfg = Arc::new(cfg);
    let until = args
        .until
        .as_deref()
        .map(|u| event::parse_ts(u).map_err(|_| BacktestError::Until(u.to_string())))
        .transpose()?;
    let input_path = args.input.clone();
    let (reader, size): (Box<dyn Read>, Option<u64>) = if input_path.as_os_str() == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = File::open(&input_path).map_err(io_err("cannot open", &input_path))?;
        let size = f.metadata().ok().map(|m| m.len());
        (Box::new(f), size)
    };
    let bar = (io::stderr().is_terminal() && size.is_some_and(|s| s > 8 << 20)).then(|| {
        let b = indicatif::ProgressBar::new(size.unwrap_or(0));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut alerts = create(&args.alerts_out)?;
    let mut rejects = create(&args.rejects_out)?;
    let write_err = |p: &Option<PathBuf>| {
        let path = p.clone().unwrap_or_default();
        move |source| BacktestError::Io {
            what: "cannot write",
            path: path.display().to_string(),
            source,
        }
    };
    let (engine, summary) = replay(
        cfg.clone(),
        reader,
        until,
        |a| match alerts.as_mut() {
            Some(w) => {
                w.write_all(a.to_json().as_bytes())?;
                w.write_all(b"\n")
            }
            None => Ok(()),
        },
        |line, reason, body| match rejects.as_mut() {
            Some(w) => {
                let input = String::from_utf8_lossy(&body[..body.len().min(4096)]);
                let v = serde_json::json!({"line": line, "reason": reason.code(), "error": reason.to_string(), "input": input});
                serde_json::to_writer(&mut *w, &v)?;
                w.write_all(b"\n")
            }
            None => Ok(()),
        },
        |b| {
            if let Some(bar) = &bar {
                bar.set_position(b);
            }
        },
    )
    .map_err(|source| BacktestError::Io { what: "cannot read", path: input_path.display().to_string(), source })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(mut w) = alerts {
        w.flush().map_err(write_err(&args.alerts_out))?;
    }
    if let Some(mut w) = rejects {
        w.flush().map_err(write_err(&args.rejects_out))?;
    }
    if let Some(mut w) = create(&args.customers_out)? {
        for row in engine.customers() {
            serde_json::to_writer(&mut w, &row)
                .map_err(io::Error::from)
                .map_err(write_err(&args.customers_out))?;
            w.write_all(b"\n").map_err(write_err(&args.customers_out))?;
        }
        w.flush().map_err(write_err(&args.customers_out))?;
    }
    if let Some(p) = &args.summary_json {
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        std::fs::write(p, text + "\n").map_err(io_err("cannot write", p))?;
    }
    if !args.quiet {
        print!("{}", render(&summary));
    }
    Ok(summary)
}

/// The human-readable summary.
pub fn render(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "churnwatch backtest summary (as of {})",
        s.as_of.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        o,
        "  events: {} read, {} applied, {} late, {} duplicate, {} after --until, {} rejected",
        s.events_read, s.applied, s.late, s.duplicates, s.after_until, s.rejected
    );
    for (r, n) in &s.rejected_by_reason {
        let _ = writeln!(o, "    rejected {r}: {n}");
    }
    let _ = writeln!(o, "  customers: {}", s.customers);
    let kv = |m: &BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(o, "    by lifecycle: {}", kv(&s.customers_by_lifecycle));
    let _ = writeln!(o, "    by risk: {}", kv(&s.customers_by_risk));
    let _ = writeln!(o, "  alerts:");
    for (k, v) in &s.alerts {
        let _ = writeln!(o, "    {k}: {v}");
    }
    let _ = writeln!(o, "    firing at end: {}", kv(&s.firing_at_end));
    if let Some(overall) = s.business_rolling.get("overall").and_then(Value::as_object) {
        let _ = writeln!(
            o,
            "  business metrics, rolling window {} .. {}:",
            s.business_rolling
                .get("start")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            s.business_rolling
                .get("end")
                .and_then(Value::as_str)
                .unwrap_or("?")
        );
        for (k, v) in overall {
            let shown = match v {
                Value::Null => "n/a".to_string(),
                Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(0.0)),
                other => other.to_string(),
            };
            let _ = writeln!(o, "    {k}: {shown}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::read_line_bounded;
    use std::io::{BufReader, Cursor};

    /// A line over the limit is skipped to its end without being kept,
    /// even across the reader's buffer; the lines around it are intact.
    #[test]
    fn an_oversized_line_is_skipped_unkept() {
        let big = "x".repeat(5000);
        let text = format!("ok\n{big}\n{}\r\nlast", "y".repeat(100));
        let mut r = BufReader::with_capacity(64, Cursor::new(text.into_bytes()));
        let mut line = Vec::new();
        let mut next = |r: &mut BufReader<Cursor<Vec<u8>>>| {
            line.clear();
            let got = read_line_bounded(r, &mut line, 100).expect("read");
            (got, String::from_utf8_lossy(&line).into_owned())
        };
        assert_eq!(next(&mut r), ((3, None), "ok\n".into()));
        let ((n, over), kept) = next(&mut r);
        assert_eq!((n, over), (5001, Some(5000)));
        assert_eq!(kept.len(), 100, "only the limit is kept");
        // Exactly the limit, with CRLF: not oversized.
        let ((n, over), kept) = next(&mut r);
        assert_eq!((n, over), (102, None));
        assert!(kept.ends_with("\r\n"));
        assert_eq!(next(&mut r), ((4, None), "last".into()));
        assert_eq!(next(&mut r).0, (0, None));
    }
}
