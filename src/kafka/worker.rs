//! The engine thread: decodes input messages and applies them to the
//! partitions' engines, off the consume loop's thread.
//!
//! The consume loop ([`super::consumer`]) does the Kafka side: it receives
//! messages, copies or decodes them into a [`Batch`] and hands it over, sends the
//! outputs that come back to the [`super::producer::Outbox`] and stores
//! offsets. This thread does the deciding: decoding what the loop only
//! copied, ingest, the daily sweeps with one population over every partition
//! of the instance, idle ticks, dead letters, and the bookkeeping of which
//! offsets are applied. Which thread decodes a batch depends on how full this
//! thread's queue is, so both stay about equally busy.
//!
//! Everything that changes an engine happens here, in the order it was
//! handed over, so the alerts of a customer reach the outbox in the order the
//! engine raised them. Work and results travel over two channels; a result
//! ([`Done`]) is sent only after every output of the work before it, so a
//! [`Done::Checkpoint`] covers only messages whose outputs the consume loop
//! has already handed to the outbox.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::engine::population::{force_next_sweep, release_sweeps};
use crate::engine::{Disposition, Engine};
use crate::event::Ts;
use crate::event::{EVENT_TYPES, Event, RejectReason, decode_keyed};
use crate::kafka::producer::{Output, OutputKind};
use crate::lock;
use crate::metrics::Metrics;

/// Events a partition parked at a daily sweep may buffer while it waits for
/// the other partitions of the instance; past this, the sweep is released
/// with the partitions that reached it (not pausing: pause/resume against
/// Tansu skipped messages).
pub const MAX_PARKED: usize = 200_000;

/// Releases, without the partitions behind, each sweep that an engine waits
/// at with [`MAX_PARKED`] or more events buffered (plus `held[i]` events
/// held outside engine `i`), warning each time; returns how many.
pub(crate) fn release_overfull(engines: &mut [&mut Engine], held: &[usize], phase: &str) -> usize {
    let mut released = 0;
    while engines.iter().enumerate().any(|(i, e)| {
        e.sweep_pending().is_some()
            && e.buffered() + held.get(i).copied().unwrap_or(0) >= MAX_PARKED
    }) && force_next_sweep(engines)
    {
        released += 1;
        tracing::warn!(
            max_parked = MAX_PARKED,
            phase,
            "a partition buffered too much waiting at a daily sweep; released it without the partitions behind"
        );
    }
    released
}

/// One input message in a [`Batch`]: where it came from and what it holds.
#[derive(Debug)]
pub struct Msg {
    /// Index of the input topic ([`super::input_topics`]).
    pub topic: usize,
    /// Partition number.
    pub partition: i32,
    /// Offset in its topic-partition.
    pub offset: i64,
    item: Item,
}

#[derive(Debug)]
enum Item {
    /// Not decoded yet: its key and payload (spans of `Batch::data`).
    Raw {
        key: Option<(u32, u32)>,
        payload: (u32, u32),
    },
    Event(Event),
    /// Rejected by decode: its original key and payload (spans of `Batch::data`),
    /// for the dead-letter topic.
    Rejected {
        reason: RejectReason,
        key: Option<(u32, u32)>,
        payload: (u32, u32),
    },
}

/// Messages received together, decoded or not. Those not decoded yet and
/// those rejected keep their key and payload, in one buffer per batch.
#[derive(Debug)]
pub struct Batch {
    data: Vec<u8>,
    msgs: Vec<Msg>,
    /// Approximate bytes held (payload sizes), to bound what is held.
    held: usize,
    /// When the batch was received (for the consume-to-ack latency).
    pub consumed_at: Instant,
}

impl Batch {
    /// An empty batch received at `consumed_at`: a spare one if there is one.
    pub fn reuse(spare: &std::sync::mpsc::Receiver<Batch>, consumed_at: Instant) -> Self {
        match spare.try_recv() {
            Ok(mut b) => {
                b.consumed_at = consumed_at;
                b
            }
            Err(_) => Batch::new(consumed_at),
        }
    }

    /// An empty batch received at `consumed_at`.
    pub fn new(consumed_at: Instant) -> Self {
        Batch {
            data: Vec::new(),
            msgs: Vec::with_capacity(64),
            held: 0,
            consumed_at,
        }
    }

    fn span(&mut self, bytes: &[u8]) -> (u32, u32) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        (start, self.data.len() as u32)
    }

    /// Appends a message. With `decode`, it is decoded here (a rejected one
    /// keeps a copy of its key and payload); without, its bytes are copied and
    /// the engine thread decodes it.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        topic: usize,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        decode: Option<&crate::event::DecodeConfig>,
    ) {
        self.held += payload.len() + std::mem::size_of::<Msg>();
        let item = match decode.map(|cfg| decode_keyed(key, payload, cfg)) {
            Some(Ok(ev)) => Item::Event(ev),
            Some(Err(reason)) => Item::Rejected {
                reason,
                key: key.map(|k| self.span(k)),
                payload: self.span(payload),
            },
            None => Item::Raw {
                key: key.map(|k| self.span(k)),
                payload: self.span(payload),
            },
        };
        self.msgs.push(Msg {
            topic,
            partition,
            offset,
            item,
        });
    }

    /// Moves the messages of `other` to the end of this batch, keeping only
    /// those `keep` accepts.
    pub fn append_filtered(&mut self, other: Batch, mut keep: impl FnMut(&Msg) -> bool) {
        let base = self.data.len() as u32;
        self.data.extend_from_slice(&other.data);
        let shift = |(a, b): (u32, u32)| (a + base, b + base);
        for mut m in other.msgs {
            if !keep(&m) {
                continue;
            }
            if let Item::Rejected { key, payload, .. } | Item::Raw { key, payload } = &mut m.item {
                *key = key.map(shift);
                *payload = shift(*payload);
            }
            self.msgs.push(m);
        }
        self.held += other.held;
    }

    /// No messages.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Approximate bytes held (payloads and per-message overhead).
    pub fn bytes(&self) -> usize {
        self.held
    }

    fn bytes_of(&self, (start, end): (u32, u32)) -> &[u8] {
        &self.data[start as usize..end as usize]
    }
}

/// What the consume loop hands to the engine thread, in order.
pub enum Work {
    /// A rebuilt partition goes live with its engine; `committed` is the
    /// next offset per input topic (where its messages start).
    Live {
        /// Partition number.
        partition: i32,
        /// Its engine (shared with the HTTP API and the metrics refresh).
        engine: Arc<Mutex<Engine>>,
        /// Next offset per input topic.
        committed: [Option<i64>; 3],
    },
    /// Partitions revoked: forget them.
    Drop(Vec<i32>),
    /// Messages of live partitions.
    Batch(Batch),
    /// Whether a rebuild is running: live sweeps wait for it.
    Rebuilding(bool),
    /// Idle ticks: input topics of a partition that are drained (caught up
    /// and quiet), and partitions idle for this many ms of wall time.
    Tick {
        /// (partition, topic index).
        drained: Vec<(i32, usize)>,
        /// (partition, wall-clock ms without input).
        idle: Vec<(i32, i64)>,
    },
    /// Report, per topic-partition, the offset below which everything is applied.
    Checkpoint,
}

/// What the engine thread sends back, in order.
#[derive(Debug)]
pub enum Done {
    /// Alerts and dead letters to produce, in the order they arose.
    Outputs(Vec<Output>),
    /// (topic index, partition, offset): every message below `offset` is
    /// applied, and its outputs were in earlier [`Done::Outputs`].
    Checkpoint(Vec<(usize, i32, i64)>),
}

#[derive(Debug, Default)]
struct TpTrack {
    /// (seq, offset) of messages from the first possibly-unapplied one on.
    records: VecDeque<(u64, i64)>,
    /// Offset after the last message handed over (starts at the committed offset).
    next_offset: Option<i64>,
    /// Last reported checkpoint.
    checkpointed: Option<i64>,
}

struct Part {
    engine: Arc<Mutex<Engine>>,
    tps: [TpTrack; 3],
    /// Rebuilt, and still applying what it replayed: parked at a daily sweep
    /// that the other partitions have not reached yet (they were committed
    /// at earlier event times). It waits for them, so the sweep's population
    /// is the whole instance's, as it was before the restart. Its alerts
    /// until then were emitted before the restart and are dropped; its live
    /// events wait in `held` (in arrival order) until it is done.
    settling: bool,
    /// (topic index, arrival number, event) of live events held while `settling`.
    held: VecDeque<(usize, u64, Event)>,
}

/// The engine thread's state. Start with [`spawn`].
struct Worker {
    cfg: Arc<Config>,
    metrics: Metrics,
    topics: [String; 3],
    parts: BTreeMap<i32, Part>,
    rebuilding: bool,
    seq: Arc<AtomicU64>,
    out: Vec<Output>,
    done: mpsc::UnboundedSender<Done>,
    /// Emptied batches go back to the consume loop for reuse (their buffers
    /// keep their capacity: no regrowth, no fresh pages per batch).
    spare: std::sync::mpsc::Sender<Batch>,
    /// `events_consumed` children by (topic, type index), looked up once:
    /// a label lookup per message shows in profiles.
    consumed: [[Option<IntCounter>; EVENT_TYPES.len()]; 3],
}

/// Starts the engine thread. It runs until the sender of `work` is dropped
/// and everything handed over is done; then `done` closes.
pub fn spawn(
    cfg: Arc<Config>,
    metrics: Metrics,
    seq: Arc<AtomicU64>,
    mut work: mpsc::Receiver<Work>,
    done: mpsc::UnboundedSender<Done>,
    spare: std::sync::mpsc::Sender<Batch>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let topics = super::input_topics(&cfg.kafka).map(str::to_string);
    let mut w = Worker {
        cfg,
        metrics,
        topics,
        parts: BTreeMap::new(),
        rebuilding: false,
        seq,
        out: Vec::new(),
        done,
        spare,
        consumed: Default::default(),
    };
    std::thread::Builder::new()
        .name("churnwatch-engine".into())
        .spawn(move || {
            while let Some(job) = work.blocking_recv() {
                w.handle(job);
            }
        })
}

impl Worker {
    fn handle(&mut self, job: Work) {
        match job {
            Work::Live {
                partition,
                engine,
                committed,
            } => {
                let mut tps: [TpTrack; 3] = Default::default();
                for (i, tp) in tps.iter_mut().enumerate() {
                    tp.next_offset = committed[i];
                    tp.checkpointed = committed[i];
                }
                let settling = lock(&engine).sweep_pending().is_some();
                if settling {
                    tracing::info!(
                        partition,
                        "rebuilt partition waits at a daily sweep for the other partitions; its live events wait until it is past what it replayed"
                    );
                }
                self.parts.insert(
                    partition,
                    Part {
                        engine,
                        tps,
                        settling,
                        held: VecDeque::new(),
                    },
                );
                self.sweeps();
            }
            Work::Drop(ps) => {
                for p in ps {
                    self.parts.remove(&p);
                }
                self.sweeps();
            }
            Work::Batch(mut batch) => {
                // Messages come in runs of one partition (librdkafka hands
                // over a fetch at a time): one engine lock per run.
                let mut all = std::mem::take(&mut batch.msgs);
                let mut msgs = all.drain(..).peekable();
                while let Some(first) = msgs.next() {
                    let p = first.partition;
                    let Some(engine) = self.parts.get(&p).map(|part| part.engine.clone()) else {
                        tracing::debug!(
                            partition = p,
                            offset = first.offset,
                            "message for a partition not live here; skipped"
                        );
                        continue;
                    };
                    let mut e = lock(&engine);
                    self.message(&batch, first, &mut e);
                    while let Some(m) = msgs.next_if(|m| m.partition == p) {
                        self.message(&batch, m, &mut e);
                    }
                    let alerts = e.take_alerts();
                    drop(e);
                    self.alerts_out(alerts, batch.consumed_at);
                }
                drop(msgs);
                batch.msgs = all;
                batch.data.clear();
                batch.held = 0;
                let _ = self.spare.send(batch);
                self.sweeps();
            }
            Work::Rebuilding(on) => {
                self.rebuilding = on;
                self.sweeps();
            }
            Work::Tick { drained, idle } => {
                self.tick(&drained, &idle);
                self.sweeps();
            }
            Work::Checkpoint => {
                self.flush();
                let c = self.checkpoint();
                let _ = self.done.send(Done::Checkpoint(c));
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            let _ = self.done.send(Done::Outputs(std::mem::take(&mut self.out)));
        }
    }

    fn alerts_out(&mut self, alerts: Vec<crate::alert::AlertEvent>, consumed_at: Instant) {
        for a in alerts {
            self.out
                .push(Output::alert(&self.cfg.kafka.alerts_topic, &a, consumed_at));
        }
    }

    /// One message of a live partition, applied to its (locked) engine;
    /// the caller takes the alerts.
    fn message(&mut self, batch: &Batch, m: Msg, engine: &mut Engine) {
        let Some(part) = self.parts.get_mut(&m.partition) else {
            return;
        };
        let topic_name = self.topics[m.topic].as_str();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let tp = &mut part.tps[m.topic];
        tp.records.push_back((seq, m.offset));
        tp.next_offset = Some(m.offset + 1);
        let decoded = match m.item {
            Item::Event(ev) => Ok(ev),
            Item::Raw { key, payload } => decode_keyed(
                key.map(|k| batch.bytes_of(k)),
                batch.bytes_of(payload),
                &self.cfg.decode,
            )
            .map_err(|reason| (reason, key, payload)),
            Item::Rejected {
                reason,
                key,
                payload,
            } => Err((reason, key, payload)),
        };
        match decoded {
            Err((reason, key, payload)) => {
                let code = reason.code();
                self.metrics
                    .events_rejected
                    .with_label_values(&[topic_name, code])
                    .inc();
                tracing::debug!(topic = topic_name, partition = m.partition, offset = m.offset, reason = code, error = %reason, "event rejected; sent to the dead-letter topic");
                self.out.push(Output {
                    topic: self.cfg.kafka.dlq_topic.clone(),
                    key: key.map(|k| batch.bytes_of(k).to_vec()),
                    payload: batch.bytes_of(payload).to_vec(),
                    headers: vec![
                        ("source_topic".into(), topic_name.as_bytes().to_vec()),
                        (
                            "source_partition".into(),
                            m.partition.to_string().into_bytes(),
                        ),
                        ("source_offset".into(), m.offset.to_string().into_bytes()),
                        ("reason".into(), code.as_bytes().to_vec()),
                        ("error".into(), reason.to_string().into_bytes()),
                    ],
                    kind: OutputKind::DeadLetter { reason: code },
                });
            }
            Ok(ev) => {
                self.consumed[m.topic][ev.kind.type_index()]
                    .get_or_insert_with(|| {
                        self.metrics
                            .events_consumed
                            .with_label_values(&[topic_name, ev.kind.type_name()])
                    })
                    .inc();
                if part.settling {
                    part.held.push_back((m.topic, seq, ev));
                } else {
                    self.ingest(engine, m.topic, ev, seq);
                }
            }
        }
    }

    /// Applies one live event to its (locked) engine, counting late and
    /// duplicate ones.
    fn ingest(&self, engine: &mut Engine, topic: usize, ev: Event, seq: u64) {
        let topic_name = self.topics[topic].as_str();
        match engine.ingest_from(topic, ev, seq) {
            Disposition::Late => self
                .metrics
                .events_late
                .with_label_values(&[topic_name])
                .inc(),
            Disposition::Duplicate => self
                .metrics
                .events_duplicate
                .with_label_values(&[topic_name])
                .inc(),
            Disposition::Buffered | Disposition::AfterUntil => {}
        }
    }

    /// Releases the daily sweeps every live partition has reached, with one
    /// population merged over them all (see [`crate::engine::population`]).
    /// While a partition is being rebuilt, sweeps wait for it. A partition
    /// parked with [`MAX_PARKED`] events buffered does not wait longer.
    fn sweeps(&mut self) {
        // A settling partition that is done takes its held events, which can
        // park it (or another) at the next sweep: release again.
        while self.sweeps_once() {}
    }

    /// One round of [`Self::sweeps`]; whether a settling partition got done
    /// (and took its held events).
    fn sweeps_once(&mut self) -> bool {
        let (alerts, settled) = {
            let mut guards: Vec<_> = self.parts.values().map(|p| lock(&p.engine)).collect();
            if guards.iter().all(|e| e.sweep_pending().is_none()) {
                return false;
            }
            let held: Vec<usize> = self.parts.values().map(|p| p.held.len()).collect();
            let mut engines: Vec<&mut Engine> = guards.iter_mut().map(|g| &mut **g).collect();
            let mut released = 0;
            if !self.rebuilding {
                released = release_sweeps(&mut engines, |_| false);
            }
            released += release_overfull(&mut engines, &held, "live");
            if released > 0 {
                tracing::debug!(released, partitions = engines.len(), "sweeps released");
            }
            let mut alerts = Vec::new();
            let mut settled = Vec::new();
            for ((p, part), e) in self.parts.iter().zip(engines.iter_mut()) {
                let fired = e.take_alerts();
                if !part.settling {
                    alerts.extend(fired);
                } else if e.sweep_pending().is_none() {
                    // Past everything it replayed: what it raised on the
                    // way was emitted before the restart.
                    settled.push(*p);
                }
            }
            (alerts, settled)
        };
        self.alerts_out(alerts, Instant::now());
        for p in &settled {
            self.settle(*p);
        }
        !settled.is_empty()
    }

    /// A settling partition is past what it replayed: it takes its held
    /// live events and goes on like any other.
    fn settle(&mut self, p: i32) {
        let Some(part) = self.parts.get_mut(&p) else {
            return;
        };
        part.settling = false;
        let held = std::mem::take(&mut part.held);
        let engine = part.engine.clone();
        tracing::info!(
            partition = p,
            held = held.len(),
            "rebuilt partition is past what it replayed; live"
        );
        let mut e = lock(&engine);
        for (topic, seq, ev) in held {
            self.ingest(&mut e, topic, ev, seq);
        }
        let alerts = e.take_alerts();
        drop(e);
        self.alerts_out(alerts, Instant::now());
    }

    /// Drained topics stop holding back their partition's watermark; idle
    /// partitions' event-time clocks advance by their idle wall time.
    fn tick(&mut self, drained: &[(i32, usize)], idle: &[(i32, i64)]) {
        let mut alerts = Vec::new();
        for (p, t) in drained {
            if let Some(part) = self.parts.get(p).filter(|part| !part.settling) {
                let mut e = lock(&part.engine);
                e.source_idle(*t);
                alerts.extend(e.take_alerts());
            }
        }
        for (p, idle_ms) in idle {
            // A settling partition's clock is its replayed events'.
            let Some(part) = self.parts.get(p).filter(|part| !part.settling) else {
                continue;
            };
            let mut e = lock(&part.engine);
            // Parked at a sweep, it waits for the others, not for time: moving
            // its clock on would make its topics' next events late.
            if e.sweep_pending().is_some() {
                continue;
            }
            // Event time follows the wall clock from the last event on:
            // the newest event time seen plus the idle wall time. The
            // watermark stays `allowed_lateness` behind it, as with input, so
            // an event that arrives after the pause is late exactly when it
            // would be in a backtest of the same sequence (the pause then
            // counted as event time) and the buffered events are applied
            // `allowed_lateness` of wall time after input stopped.
            let Some(max_ts) = e.max_ts() else { continue };
            let to: Ts = max_ts
                .saturating_add(*idle_ms)
                .saturating_sub(self.cfg.allowed_lateness);
            e.advance_to(to);
            let fired = e.take_alerts();
            if !fired.is_empty() {
                tracing::debug!(
                    partition = p,
                    advance_to = to,
                    alerts = fired.len(),
                    "idle tick fired alerts"
                );
            }
            alerts.extend(fired);
        }
        self.alerts_out(alerts, Instant::now());
    }

    /// Per topic-partition, the offset up to which every message is applied
    /// (only where it moved since the last report).
    fn checkpoint(&mut self) -> Vec<(usize, i32, i64)> {
        let mut out = Vec::new();
        for (p, part) in &mut self.parts {
            // Each topic is its own source of the engine: a topic's records
            // before its least pending arrival number are applied.
            let pending = lock(&part.engine).pending_min_seq_by_source();
            for (i, tp) in part.tps.iter_mut().enumerate() {
                // Held events are not applied either (the first held of a
                // topic is its least: they are held in arrival order).
                let held = part.held.iter().find(|h| h.0 == i).map(|h| h.1);
                let first_pending = [pending.get(i).copied().flatten(), held]
                    .into_iter()
                    .flatten()
                    .min();
                while let Some(&(seq, _)) = tp.records.front() {
                    if first_pending.is_some_and(|m| seq >= m) {
                        break;
                    }
                    tp.records.pop_front();
                }
                let candidate = tp.records.front().map(|r| r.1).or(tp.next_offset);
                if let Some(c) = candidate
                    && tp.checkpointed.is_none_or(|done| c > done)
                {
                    tp.checkpointed = Some(c);
                    out.push((i, *p, c));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DAY_MS, HOUR_MS, format_ts};

    fn usage(customer: &str, ts: Ts) -> String {
        format!(
            r#"{{"type":"usage","customer_id":"{customer}","action":"login","ts":"{}"}}"#,
            format_ts(ts)
        )
    }

    /// A rebuilt engine as the rebuild leaves it: coordinated, its replayed
    /// events applied as far as the sweeps let it, three sources.
    fn rebuilt(cfg: &Arc<Config>, lines: &[String], seq: &AtomicU64) -> Arc<Mutex<Engine>> {
        let mut e = Engine::new(cfg.clone());
        e.set_coordinated(true);
        for l in lines {
            let ev = crate::event::decode(l.as_bytes(), &cfg.decode).expect("valid");
            e.ingest(ev, seq.fetch_add(1, Ordering::Relaxed));
        }
        e.finish_replay();
        drop(e.take_alerts());
        e.set_sources(3);
        Arc::new(Mutex::new(e))
    }

    fn batch(partition: i32, offset: i64, line: &str) -> Work {
        let mut b = Batch::new(Instant::now());
        b.push(0, partition, offset, None, line.as_bytes(), None);
        Work::Batch(b)
    }

    /// A partition rebuilt past a daily sweep the other has not reached waits
    /// for it there, holds its live events (and keeps them out of the
    /// checkpoint) until it is past what it replayed, then applies them.
    #[test]
    fn a_partition_rebuilt_past_a_sweep_waits_for_the_others_and_holds_its_live_events() {
        let cfg = Arc::new(Config::default());
        let seq = Arc::new(AtomicU64::new(0));
        let day1 = 20_000 * DAY_MS;
        // Partition 0 was committed before day 1's sweep, partition 1 after it.
        let a = rebuilt(&cfg, &[usage("a", day1 - 14 * HOUR_MS)], &seq);
        let b = rebuilt(
            &cfg,
            &[
                usage("b", day1 - 14 * HOUR_MS),
                usage("b", day1 + 5 * HOUR_MS),
            ],
            &seq,
        );
        assert_eq!(lock(&a).sweep_pending(), None);
        assert_eq!(lock(&b).sweep_pending(), Some(day1));
        let (work_tx, work_rx) = mpsc::channel(8);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let (spare_tx, _spare_rx) = std::sync::mpsc::channel();
        let metrics = Metrics::new().expect("metrics");
        let engine_thread = spawn(
            cfg.clone(),
            metrics,
            seq.clone(),
            work_rx,
            done_tx,
            spare_tx,
        )
        .expect("spawn");
        let send = |w: Work| work_tx.blocking_send(w).expect("engine thread runs");
        let checkpoint = |done_rx: &mut mpsc::UnboundedReceiver<Done>| loop {
            match done_rx.blocking_recv().expect("engine thread runs") {
                Done::Checkpoint(c) => break c,
                Done::Outputs(_) => {}
            }
        };
        send(Work::Rebuilding(true));
        send(Work::Live {
            partition: 0,
            engine: a.clone(),
            committed: [Some(1), None, None],
        });
        send(Work::Live {
            partition: 1,
            engine: b.clone(),
            committed: [Some(2), None, None],
        });
        send(Work::Rebuilding(false));
        // Partition 1's live event is held: not in its engine, not checkpointed.
        send(batch(1, 2, &usage("b", day1 + 6 * HOUR_MS)));
        send(Work::Checkpoint);
        assert!(
            checkpoint(&mut done_rx).iter().all(|c| c.1 != 1),
            "nothing of partition 1 is applied"
        );
        assert_eq!(lock(&b).stats().ingested, 2, "the live event is held");
        assert_eq!(lock(&b).sweep_pending(), Some(day1));
        // Partition 0 reaches day 1's sweep: both sweep with one population,
        // partition 1 goes past what it replayed and takes its held event.
        // (Its billing and feedback topics are drained.)
        send(Work::Tick {
            drained: vec![(0, 1), (0, 2)],
            idle: vec![],
        });
        send(batch(0, 1, &usage("a", day1 + 3 * HOUR_MS)));
        send(Work::Checkpoint);
        let c = checkpoint(&mut done_rx);
        assert_eq!(lock(&a).sweep_pending(), None);
        assert_eq!(lock(&b).sweep_pending(), None);
        assert_eq!(lock(&b).stats().ingested, 3, "the held event is applied");
        // Still in the reorder buffer (the watermark is behind it): its
        // offset is the checkpoint, nothing past it.
        assert!(!c.iter().any(|&(_, p, o)| p == 1 && o > 2), "{c:?}");
        drop(work_tx);
        engine_thread.join().expect("engine thread ends");
    }
}
