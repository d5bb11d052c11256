//! A versioned binary snapshot of one engine and its restore: everything
//! that decides what the engine does next (customers and their windows,
//! timers, the reorder buffer, the dedup horizon, the population context,
//! the business ledger, counters), so that snapshot, restore and carry on
//! gives what an uninterrupted replay gives, byte for byte.
//!
//! Layout (integers little-endian):
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `CHURNWSN` |
//! | 4 | format version ([`FORMAT_VERSION`]) |
//! | 4 + n | the configuration the state depends on ([`config_basis`]), UTF-8 |
//! | 8 + m | the state, [postcard](https://docs.rs/postcard) (serde, varints) |
//!
//! Derived structures (the customer index, the sample levels, the sweep's
//! weekly totals) are not stored: a restore rebuilds them. Only the
//! configuration that changes what the stored numbers mean is checked
//! (key features are stored by position, money in the reporting currency,
//! plan and segment names folded past `max_label_values`); alert
//! thresholds may change between a snapshot and its restore.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::customer::Customer;
use super::{Engine, Ids, Names, NewIds, Parked, Pending, Source, Stats, Timer};
use crate::business::Ledger;
use crate::config::Config;
use crate::event::Ts;
use crate::signals::Population;

/// First bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"CHURNWSN";

/// Format version written; a restore reads this one only (a later format
/// must keep reading the earlier ones: `tests/fixtures/snapshot-v1.bin`).
pub const FORMAT_VERSION: u32 = 1;

/// Why a snapshot was not written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Alerts are waiting to be taken: they would be lost or emitted twice.
    #[error("{0} alert transition(s) not taken yet: take the engine's alerts before a snapshot")]
    AlertsPending(usize),
    /// Encoding or writing failed.
    #[error("writing the snapshot: {0}")]
    Io(String),
}

/// Bytes of state encoded before they are handed to the writer thread.
const CHUNK_BYTES: usize = if cfg!(test) { 1 << 10 } else { 1 << 20 };

/// A postcard output that hands full chunks to the writer thread of
/// [`Engine::write_snapshot`].
struct Chunks {
    buf: Vec<u8>,
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    sent: u64,
}

impl Chunks {
    fn send(&mut self) -> postcard::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.sent += full.len() as u64;
        // The writer stopped: its own error is reported.
        (self.tx.send(full)).map_err(|_| postcard::Error::SerializeBufferFull)
    }
}

/// Encodes into the chunks as postcard's own `Vec` flavor does.
impl postcard::ser_flavors::Flavor for &mut Chunks {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RestoreError {
    /// Not a snapshot at all.
    #[error("not a churnwatch snapshot (it does not start with {MAGIC:?})")]
    NotASnapshot,
    /// Written by another format version.
    #[error("snapshot format version {found}; this build reads version {FORMAT_VERSION}")]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// Written under a configuration that gives its numbers another meaning.
    #[error(
        "snapshot written under another configuration: it has {snapshot}, this configuration {current}"
    )]
    Config {
        /// What the snapshot was written with.
        snapshot: String,
        /// What this configuration says.
        current: String,
    },
    /// Cut short or damaged.
    #[error("snapshot damaged or cut short: {0}")]
    Corrupt(String),
}

/// The configuration a snapshot's state depends on, as text: the key
/// features in order (usage is stored by their position), the reporting
/// currency (money is stored in its minor units) and `max_label_values`
/// (names past it are stored folded).
pub fn config_basis(cfg: &Config) -> String {
    format!(
        "key_features = {:?}; reporting_currency = {:?}; max_label_values = {}",
        cfg.key_features(),
        cfg.decode.reporting_currency,
        cfg.max_label_values
    )
}

/// The counters of [`Stats`], as stored.
type StatsRepr<M> = (u64, u64, u64, u64, u64, [u64; 12], M);

/// The stored state, borrowed for writing.
#[derive(Serialize)]
struct StateRef<'a> {
    customers: &'a [Customer],
    ids: &'a Ids,
    plans: &'a Names,
    segments: &'a Names,
    runs: &'a [VecDeque<Pending>],
    heap: &'a BinaryHeap<Reverse<Pending>>,
    timers: &'a BinaryHeap<Reverse<Timer>>,
    dedup_queue: &'a VecDeque<(Ts, u64)>,
    max_ts: Option<Ts>,
    sources: &'a [Source],
    watermark: Ts,
    clock: Ts,
    next_sweep: Ts,
    until: Option<Ts>,
    coordinated: bool,
    parked: Option<Parked>,
    /// By plan id, ascending (a map's order would make the bytes vary).
    population: Vec<(u16, &'a Population)>,
    overall: &'a Population,
    ledger: &'a Ledger,
    stats: StatsRepr<&'a BTreeMap<String, u64>>,
    new_ids: NewIds,
    hold_sweep_at: Option<Ts>,
}

/// The stored state, owned for reading (the fields of [`StateRef`], in order).
#[derive(Deserialize)]
struct State {
    customers: Vec<Customer>,
    ids: Ids,
    plans: Names,
    segments: Names,
    runs: Vec<VecDeque<Pending>>,
    heap: BinaryHeap<Reverse<Pending>>,
    timers: BinaryHeap<Reverse<Timer>>,
    dedup_queue: VecDeque<(Ts, u64)>,
    max_ts: Option<Ts>,
    sources: Vec<Source>,
    watermark: Ts,
    clock: Ts,
    next_sweep: Ts,
    until: Option<Ts>,
    coordinated: bool,
    parked: Option<Parked>,
    population: Vec<(u16, Population)>,
    overall: Population,
    ledger: Ledger,
    stats: StatsRepr<BTreeMap<String, u64>>,
    new_ids: NewIds,
    hold_sweep_at: Option<Ts>,
}

impl Engine {
    /// What a snapshot stores, once the alerts have been taken.
    fn state_ref(&self) -> Result<StateRef<'_>, SnapshotError> {
        let waiting = self.staged.len() + self.out.len();
        if waiting > 0 {
            return Err(SnapshotError::AlertsPending(waiting));
        }
        let s = &self.stats;
        Ok(StateRef {
            customers: &self.customers,
            ids: &self.ids,
            plans: &self.plans,
            segments: &self.segments,
            runs: &self.runs,
            heap: &self.heap,
            timers: &self.timers,
            dedup_queue: &self.dedup_queue,
            max_ts: self.max_ts,
            sources: &self.sources,
            watermark: self.watermark,
            clock: self.clock,
            next_sweep: self.next_sweep,
            until: self.until,
            coordinated: self.coordinated,
            parked: self.parked,
            population: {
                let mut p: Vec<(u16, &Population)> =
                    self.population.iter().map(|(k, v)| (*k, v)).collect();
                p.sort_unstable_by_key(|e| e.0);
                p
            },
            overall: &self.overall,
            ledger: &self.ledger,
            stats: (
                s.ingested,
                s.applied,
                s.late,
                s.duplicates,
                s.after_until,
                s.type_counts,
                &s.alerts,
            ),
            new_ids: self.new_ids,
            hold_sweep_at: self.hold_sweep_at,
        })
    }

    /// The header: magic, format version and configuration basis (the
    /// state's length follows it).
    fn snapshot_header(&self, capacity: usize) -> Vec<u8> {
        let basis = config_basis(&self.cfg);
        let mut out = Vec::with_capacity(capacity.max(20 + basis.len()));
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(basis.len() as u32).to_le_bytes());
        out.extend_from_slice(basis.as_bytes());
        out
    }

    /// The engine's state as a snapshot (see the module doc). Its alerts
    /// must have been taken ([`Engine::take_alerts`]).
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        let state = self.state_ref()?;
        let mut out = self.snapshot_header(64 + self.state_bytes());
        let len_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        let mut out =
            postcard::to_extend(&state, out).map_err(|e| SnapshotError::Io(e.to_string()))?;
        let len = (out.len() - len_at - 8) as u64;
        out[len_at..len_at + 8].copy_from_slice(&len.to_le_bytes());
        Ok(out)
    }

    /// Writes the snapshot of [`Engine::snapshot_bytes`] to `w` (from its
    /// current position) while encoding it: a second thread writes each
    /// encoded chunk, so encoding and writing overlap and the whole state is
    /// never held twice. Returns the bytes written.
    pub fn write_snapshot<W: Write + Seek + Send>(&self, w: &mut W) -> Result<u64, SnapshotError> {
        let state = self.state_ref()?;
        let io = |e: std::io::Error| SnapshotError::Io(e.to_string());
        let head = self.snapshot_header(0);
        let len_at = w.stream_position().map_err(io)? + head.len() as u64;
        w.write_all(&head).map_err(io)?;
        w.write_all(&0u64.to_le_bytes()).map_err(io)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let len = std::thread::scope(|s| {
            let out = &mut *w;
            let writer = s.spawn(move || rx.into_iter().try_for_each(|c| out.write_all(&c)));
            let mut sink = Chunks {
                buf: Vec::with_capacity(CHUNK_BYTES),
                tx,
                sent: 0,
            };
            let encoded = postcard::serialize_with_flavor(&state, &mut sink)
                .map_err(|e| SnapshotError::Io(e.to_string()));
            let sent = sink.sent;
            drop(sink);
            let written = match writer.join() {
                Ok(r) => r.map_err(io),
                Err(_) => Err(SnapshotError::Io("the snapshot writer panicked".into())),
            };
            // The writer's own error says more than "it stopped" does.
            written.and(encoded).map(|()| sent)
        })?;
        w.seek(SeekFrom::Start(len_at)).map_err(io)?;
        w.write_all(&len.to_le_bytes()).map_err(io)?;
        w.seek(SeekFrom::Start(len_at + 8 + len)).map_err(io)?;
        w.flush().map_err(io)?;
        Ok(len_at + 8 + len)
    }

    /// An engine restored from [`Engine::snapshot_bytes`] under `cfg`, or
    /// why the snapshot is refused.
    pub fn restore(cfg: Arc<Config>, bytes: &[u8]) -> Result<Engine, RestoreError> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(RestoreError::NotASnapshot);
        }
        let found = r.u32()?;
        if found != FORMAT_VERSION {
            return Err(RestoreError::Version { found });
        }
        let n = r.u32()? as usize;
        let basis = r.take(n).ok_or_else(|| cut("the configuration"))?;
        let basis = std::str::from_utf8(basis).map_err(|e| RestoreError::Corrupt(e.to_string()))?;
        let current = config_basis(&cfg);
        if basis != current {
            return Err(RestoreError::Config {
                snapshot: basis.to_string(),
                current,
            });
        }
        let m = usize::try_from(r.u64()?).map_err(|_| cut("the state"))?;
        let payload = r.take(m).ok_or_else(|| cut("the state"))?;
        if !r.0.is_empty() {
            return Err(RestoreError::Corrupt(format!(
                "{} bytes after the end of the state",
                r.0.len()
            )));
        }
        let st: State =
            postcard::from_bytes(payload).map_err(|e| RestoreError::Corrupt(e.to_string()))?;
        if st.ids.len() != st.customers.len() || st.runs.len() != st.sources.len() {
            return Err(RestoreError::Corrupt(
                "customer ids or input sources do not match their state".into(),
            ));
        }
        let mut e = Engine::new(cfg);
        let (label_p, label_s) = (e.plans.label, e.segments.label);
        e.customers = st.customers;
        e.ids = st.ids;
        e.plans = st.plans;
        e.plans.label = label_p;
        e.segments = st.segments;
        e.segments.label = label_s;
        e.runs = st.runs;
        e.heap = st.heap;
        e.timers = st.timers;
        e.dedup_queue = st.dedup_queue;
        e.max_ts = st.max_ts;
        e.sources = st.sources;
        e.watermark = st.watermark;
        e.clock = st.clock;
        e.next_sweep = st.next_sweep;
        e.until = st.until;
        e.coordinated = st.coordinated;
        e.parked = st.parked;
        e.population = st.population.into_iter().collect();
        e.overall = st.overall;
        e.ledger = st.ledger;
        let (ingested, applied, late, duplicates, after_until, type_counts, alerts) = st.stats;
        e.stats = Stats {
            ingested,
            applied,
            late,
            duplicates,
            after_until,
            type_counts,
            alerts,
        };
        e.new_ids = st.new_ids;
        e.hold_sweep_at = st.hold_sweep_at;
        e.rebuild_derived();
        Ok(e)
    }
}

fn cut(what: &str) -> RestoreError {
    RestoreError::Corrupt(format!("it ends inside {what}"))
}

/// Reads the header's fixed-size fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u32(&mut self) -> Result<u32, RestoreError> {
        let b = self.take(4).ok_or_else(|| cut("the header"))?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, RestoreError> {
        let b = self.take(8).ok_or_else(|| cut("the header"))?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::event::{Event, decode};
    use crate::generate::{GenerateOptions, Profile, generate_to_vec};

    /// An engine that ingested `evs`, numbered in order.
    fn ingested(cfg: &Arc<Config>, evs: impl IntoIterator<Item = Event>) -> Engine {
        let mut e = Engine::new(cfg.clone());
        for (i, ev) in evs.into_iter().enumerate() {
            e.ingest(ev, i as u64);
        }
        e
    }

    /// The generator's valid events for `opts`.
    fn generated(cfg: &Config, opts: &GenerateOptions) -> Vec<Event> {
        generate_to_vec(opts)
            .lines
            .iter()
            .filter_map(|l| decode(l.as_bytes(), &cfg.decode).ok())
            .collect()
    }

    /// Generated traffic with alerts, late and duplicated events, billing
    /// and feedback (standard profile, 60 customers over 120 days: 22 alert
    /// transitions of 9 kinds).
    fn events(cfg: &Config) -> Vec<Event> {
        let opts = GenerateOptions {
            seed: 11,
            customers: 60,
            days: 120,
            ..GenerateOptions::default()
        };
        generated(cfg, &opts)
    }

    /// Everything a user sees of a run: every alert (every field), every
    /// customer row, the API's firing alerts and customer detail, the
    /// business report and the counters.
    fn outcome(e: &mut Engine, alerts: &[String]) -> Vec<String> {
        let mut out = alerts.to_vec();
        out.extend(
            e.customers()
                .iter()
                .map(|r| serde_json::to_string(r).unwrap()),
        );
        out.extend(e.firing().iter().map(|a| a.to_json()));
        out.push(format!("{:?}", e.customer("c-000007")));
        out.push(serde_json::to_string(&e.business_rolling()).unwrap());
        out.push(serde_json::to_string(&e.business_monthly()).unwrap());
        out.push(serde_json::to_string(e.stats()).unwrap());
        out.push(format!("{:?} {}", e.max_ts(), e.watermark()));
        out
    }

    /// Replays `evs`, snapshotting and restoring the engine before each
    /// index in `cuts`. Each alert is noted with the event after which it
    /// came out, so an alert emitted late (a timer lost) shows.
    fn run(cfg: &Arc<Config>, evs: &[Event], cuts: &[usize]) -> Vec<String> {
        let mut e = Engine::new(cfg.clone());
        let mut alerts = Vec::new();
        for (i, ev) in evs.iter().enumerate() {
            if cuts.contains(&i) {
                let bytes = e.snapshot_bytes().expect("snapshot");
                e = Engine::restore(cfg.clone(), &bytes).expect("restore");
            }
            e.ingest(ev.clone(), i as u64);
            alerts.extend(
                e.take_alerts()
                    .iter()
                    .map(|a| format!("{i}: {}", a.to_json())),
            );
        }
        e.finish(None);
        alerts.extend(
            e.take_alerts()
                .iter()
                .map(|a| format!("end: {}", a.to_json())),
        );
        outcome(&mut e, &alerts)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]
        /// Snapshot, restore, carry on: the same alerts, customers, API
        /// views, business metrics and counters as without, at any cut.
        #[test]
        fn snapshot_restore_and_carry_on_is_the_uninterrupted_replay(
            cuts in proptest::collection::vec(0.0f64..1.0, 1..6)
        ) {
            let cfg = Arc::new(Config::default());
            let evs = events(&cfg);
            let want = run(&cfg, &evs, &[]);
            let cuts: Vec<usize> = cuts.iter().map(|f| (f * evs.len() as f64) as usize).collect();
            let got = run(&cfg, &evs, &cuts);
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert_eq!(g, w, "cuts {:?}", &cuts);
            }
        }
    }

    #[test]
    fn a_snapshot_written_while_encoded_is_the_same_bytes() {
        let cfg = Arc::new(Config::default());
        let mut e = ingested(&cfg, events(&cfg));
        e.take_alerts();
        let bytes = e.snapshot_bytes().unwrap();
        // After something already in the file, as a caller may have put there.
        let mut file = std::io::Cursor::new(b"prefix".to_vec());
        file.seek(SeekFrom::End(0)).unwrap();
        let n = e.write_snapshot(&mut file).unwrap();
        assert_eq!(n as usize, 6 + bytes.len());
        assert_eq!(&file.get_ref()[6..], &bytes[..]);
        assert!(
            bytes.len() > 2 * CHUNK_BYTES / 1024,
            "several chunks in tests"
        );
    }

    #[test]
    fn a_restored_engine_snapshots_to_the_same_bytes() {
        let cfg = Arc::new(Config::default());
        let evs = events(&cfg);
        let mut e = Engine::new(cfg.clone());
        for (i, ev) in evs.iter().take(evs.len() * 2 / 3).enumerate() {
            e.ingest(ev.clone(), i as u64);
        }
        assert!(e.buffered() > 0, "the reorder buffer is part of it");
        let pending = e.take_alerts().len();
        assert!(pending > 0);
        let bytes = e.snapshot_bytes().unwrap();
        let back = Engine::restore(cfg, &bytes).unwrap();
        assert_eq!(back.snapshot_bytes().unwrap(), bytes);
        assert_eq!(back.customer_count(), e.customer_count());
    }

    /// A replay's end leaves a sweep at its last event to run live
    /// (`Engine::finish_replay`); a snapshot keeps that, so the restored
    /// engine does not park at it either.
    #[test]
    fn a_sweep_left_to_run_live_stays_so_across_a_snapshot() {
        let cfg = Arc::new(Config::default());
        let evs = events(&cfg);
        let midnight = (evs[0].ts / crate::event::DAY_MS + 3) * crate::event::DAY_MS;
        let mut e = Engine::new(cfg.clone());
        e.set_coordinated(true);
        let mut last = evs[0].clone();
        for (i, ev) in evs.iter().take_while(|ev| ev.ts < midnight).enumerate() {
            e.ingest(ev.clone(), i as u64);
            last = ev.clone();
        }
        last.ts = midnight;
        e.ingest(last, u64::MAX);
        e.finish_replay();
        let pop = Default::default();
        while e.sweep_pending().is_some() {
            e.resume_sweep(&pop);
        }
        e.take_alerts();
        let mut back = Engine::restore(cfg, &e.snapshot_bytes().unwrap()).unwrap();
        // Processing up to the midnight, not past it, keeps the sweep held.
        for engine in [&mut e, &mut back] {
            engine.finish(Some(midnight));
            assert_eq!(engine.sweep_pending(), None, "parked at the held sweep");
        }
    }

    #[test]
    fn alerts_not_taken_refuse_a_snapshot() {
        let cfg = Arc::new(Config::default());
        let mut e = ingested(&cfg, events(&cfg));
        e.finish(None);
        let err = e.snapshot_bytes().unwrap_err().to_string();
        assert!(err.contains("take the engine's alerts"), "{err}");
    }

    #[test]
    fn a_refused_restore_says_why() {
        let cfg = Arc::new(Config::default());
        let mut e = ingested(&cfg, events(&cfg).into_iter().take(5000));
        e.take_alerts();
        let bytes = e.snapshot_bytes().unwrap();
        let refuse = |b: &[u8], c: &Arc<Config>| Engine::restore(c.clone(), b).err().unwrap();

        assert_eq!(
            refuse(b"{\"type\":\"usage\"}", &cfg),
            RestoreError::NotASnapshot
        );
        let mut v2 = bytes.clone();
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(refuse(&v2, &cfg), RestoreError::Version { found: 2 });
        let raw: crate::config::RawConfig = toml::from_str("key_features = [\"reports\"]").unwrap();
        let other = Arc::new(raw.validate().unwrap());
        let msg = refuse(&bytes, &other).to_string();
        assert!(
            msg.contains("key_features = []") && msg.contains("key_features = [\"reports\"]"),
            "{msg}"
        );
        for n in [10, 30, bytes.len() / 2, bytes.len() - 1] {
            let msg = refuse(&bytes[..n], &cfg).to_string();
            assert!(msg.contains("cut short"), "{n}: {msg}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(refuse(&extra, &cfg).to_string().contains("after the end"));
        // Alert thresholds are not part of what a snapshot depends on.
        let raw: crate::config::RawConfig =
            toml::from_str("[alerts.inactivity]\nfire = 5").unwrap();
        assert!(Engine::restore(Arc::new(raw.validate().unwrap()), &bytes).is_ok());
    }

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-v1.bin"
    );

    /// The fixture's input: the light profile, 200 customers, 28 days; the
    /// snapshot is taken after its first 60% (alerts taken): 179 customers.
    fn fixture_events(cfg: &Config) -> Vec<Event> {
        let opts = GenerateOptions {
            seed: 3,
            customers: 200,
            days: 28,
            profile: Profile::Light,
            activity_scale: 0.06,
            ..GenerateOptions::default()
        };
        generated(cfg, &opts)
    }

    /// A snapshot written by format version 1 (committed) still loads, and
    /// carries on: later versions must keep this test passing. Run with
    /// `CHURNWATCH_WRITE_SNAPSHOT_FIXTURE=1` to write the file (only when
    /// the format version changes, keeping the old file under its name).
    #[test]
    fn the_version_1_snapshot_fixture_still_loads() {
        let cfg = Arc::new(Config::default());
        if std::env::var_os("CHURNWATCH_WRITE_SNAPSHOT_FIXTURE").is_some() {
            let evs = fixture_events(&cfg);
            let mut e = Engine::new(cfg.clone());
            for (i, ev) in evs.iter().take(evs.len() * 6 / 10).enumerate() {
                e.ingest(ev.clone(), i as u64);
            }
            e.take_alerts();
            std::fs::create_dir_all(std::path::Path::new(FIXTURE).parent().unwrap()).unwrap();
            std::fs::write(FIXTURE, e.snapshot_bytes().unwrap()).unwrap();
        }
        let bytes = std::fs::read(FIXTURE).expect("tests/fixtures/snapshot-v1.bin");
        let mut e = Engine::restore(cfg, &bytes).expect("the v1 fixture loads");
        // What the fixture holds (written on 2026-12-04).
        assert_eq!(
            (e.customer_count(), e.buffered(), e.stats().applied),
            (179, 15, 1156)
        );
        assert_eq!(
            crate::event::format_ts(e.watermark()),
            "2026-01-21T15:24:41Z"
        );
        assert!(e.customer("c-000042").is_some());
        // Loaded into this version's structures and written back, it is the
        // same file: the format did not change under it.
        assert_eq!(e.snapshot_bytes().unwrap(), bytes);
        let before = e.stats().applied;
        e.finish(None);
        assert!(e.stats().applied > before, "its reorder buffer is applied");
        assert_eq!(e.buffered(), 0);
    }
}
