//! The consume loop: one consumer group over the three input topics,
//! at-least-once, state sharded by partition number.
//!
//! # Offsets (at-least-once)
//! `enable.auto.commit=true` with `enable.auto.offset.store=false`: librdkafka
//! commits only offsets we store. Every consumed message gets a `seq`; the
//! offset of a message is stored once (1) the engine has applied it (its seq is
//! not in [`Engine::pending_seqs`]) and (2) every output handed to the
//! [`Outbox`] up to then (its alerts, or its dead letter) is acknowledged by
//! the broker. Checkpoints are taken every `kafka.commit_interval`, stored as
//! acks arrive, and committed by librdkafka on its interval, on revoke (also
//! explicitly) and on shutdown (explicitly).
//!
//! # Rebuild on assign (retention requirement)
//! Until durable state exists, an assigned partition number's engine is
//! rebuilt by replaying its three topic-partitions from the earliest retained
//! offset up to the committed offset, with alert output suppressed; then the
//! partition goes live from the committed offset. The input topics therefore
//! need retention at least as long as the longest window the engine looks back
//! (baselines, dunning grace, dedup horizon: default 8 weeks + 14 days), or
//! `retention.ms=-1`; shorter retention starts customers with less history.
//! Messages fetched while a partition is rebuilt are held in memory and
//! handled once it is live; past [`MAX_HELD`] of them the partition is paused
//! in the group consumer until the rebuild is done. (Pausing every newly
//! assigned partition up front costs about a second of fetch restart per
//! assignment, even when there is nothing to replay.)
//!
//! # One population per instance
//! Engines are coordinated ([`Engine::set_coordinated`]): each parks at its
//! daily sweep until every live partition is there or past it, then all
//! parked ones sweep with one population merged over them
//! ([`release_sweeps`], called after each batch and tick). A partition parked
//! with [`MAX_PARKED`] events buffered stops waiting. Rebuilds replay through
//! the same barrier; live sweeps wait while one runs.
//!
//! # Idle partitions
//! After `kafka.idle_timeout` of wall-clock time without input, each tick
//! advances the partition's event-time clock to `max_ts + idle wall time`, so
//! time-based alerts (inactivity, dunning expiry) fire; their times stay event time.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::SharedState;
use crate::config::Config;
use crate::engine::population::{force_next_sweep, release_sweeps};
use crate::engine::{Disposition, Engine};
use crate::event::{EVENT_TYPES, decode};
use crate::kafka::producer::{Outbox, Output, OutputKind};
use crate::metrics::Metrics;

/// How often the loop wakes up without input (acks, idle ticks, checkpoints).
const TICK: Duration = Duration::from_millis(200);
/// Messages held per partition number during a rebuild before its
/// topic-partitions are paused.
pub const MAX_HELD: usize = 20_000;
/// Events a partition parked at a daily sweep may buffer while it waits for
/// the other partitions of the instance; past this, the sweep is released
/// with the partitions that reached it (not pausing: pause/resume against
/// Tansu skipped messages).
pub const MAX_PARKED: usize = 200_000;
/// Most messages handled per wake-up of the loop before it looks at acks,
/// ticks and cancellation again.
const BATCH: usize = 512;
/// How often lag, readiness and engine gauges are refreshed.
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// Why the consume loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The consumer could not be created or could not subscribe.
    #[error("cannot start the Kafka consumer for group {group}: {source}")]
    Start {
        /// Consumer group.
        group: String,
        /// The client error.
        source: KafkaError,
    },
    /// Rebuilding a partition's state failed.
    #[error("cannot rebuild state of partition(s) {partitions:?}: {reason}")]
    Rebuild {
        /// Partition numbers.
        partitions: Vec<i32>,
        /// What failed.
        reason: String,
    },
}

/// A rebalance seen by the context, handled by the loop after `recv` returns.
#[derive(Debug, Clone)]
enum Note {
    Assign(Vec<(String, i32)>),
    Revoke(Vec<(String, i32)>),
}

/// Rebalance callbacks and statistics for the group consumer.
pub struct EdgeContext {
    notes: Mutex<Vec<Note>>,
    /// Wakes the loop when a note arrives (paused partitions deliver nothing).
    noted: tokio::sync::Notify,
    /// High watermark per (topic, partition) from fetch responses (statistics).
    high: Mutex<HashMap<(String, i32), i64>>,
    metrics: Metrics,
}

impl EdgeContext {
    fn new(metrics: Metrics) -> Self {
        EdgeContext {
            notes: Mutex::new(Vec::new()),
            noted: tokio::sync::Notify::new(),
            high: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn push(&self, n: Note) {
        lock(&self.notes).push(n);
        self.noted.notify_one();
    }
}

/// The output of `fut` if it is ready without waiting (e.g. a message
/// librdkafka has already fetched), else `None` (the future is dropped).
fn ready_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// When a costly metrics refresh that began at `started` may run again: at
/// most every [`METRICS_EVERY`], and spending ~2% of the loop's time on it.
fn next_refresh(started: Instant) -> Instant {
    Instant::now() + METRICS_EVERY.max(started.elapsed() * 50)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of our locks leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn tpl_list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

fn is_no_offset(e: &KafkaError) -> bool {
    matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
}

impl ClientContext for EdgeContext {
    fn stats(&self, s: Statistics) {
        // Tansu's ListOffsets is unreliable, so lag uses the high watermark
        // carried by fetch responses, which librdkafka reports here.
        let mut high = lock(&self.high);
        for (topic, t) in s.topics {
            for (p, part) in t.partitions {
                if p >= 0 && part.hi_offset >= 0 {
                    high.insert((topic.clone(), p), part.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for EdgeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.metrics.rebalances.with_label_values(&["revoke"]).inc();
                // Commit what is stored (effects done) before the partitions go.
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
                    && !is_no_offset(&e)
                {
                    self.metrics.commit_errors.inc();
                    tracing::warn!(error = %e, "commit on revoke failed");
                }
                tracing::info!(partitions = ?tpl_list(tpl), "partitions revoked");
                self.push(Note::Revoke(tpl_list(tpl)));
            }
            Rebalance::Error(e) => {
                self.metrics.rebalances.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, "rebalance error");
            }
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.metrics.rebalances.with_label_values(&["assign"]).inc();
            // Nothing is applied live until the partition's state is rebuilt:
            // the loop holds its messages (and pauses it past MAX_HELD).
            tracing::info!(partitions = ?tpl_list(tpl), "partitions assigned");
            self.push(Note::Assign(tpl_list(tpl)));
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => tracing::debug!(offsets = ?offsets.to_topic_map(), "offsets committed"),
            Err(e) if is_no_offset(&e) => {}
            Err(e) => {
                self.metrics.commit_errors.inc();
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
    }
}

/// The group consumer type.
pub type GroupConsumer = StreamConsumer<EdgeContext>;

/// Creates the group consumer (not yet subscribed).
pub fn create_consumer(cfg: &Config, metrics: &Metrics) -> Result<GroupConsumer, ConsumeError> {
    let k = &cfg.kafka;
    let mut c = super::consumer_config(k);
    c.set("group.id", &k.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            k.commit_interval.max(1).to_string(),
        );
    if !k.properties.contains_key("statistics.interval.ms") {
        c.set("statistics.interval.ms", "1000");
    }
    if let Some(s) = k.properties.get("partition.assignment.strategy")
        && s != "range"
    {
        tracing::warn!(strategy = %s, "partition.assignment.strategy overridden to range: co-partitioned state needs partition p of every input topic on one instance");
    }
    // Range gives each member the same partition numbers of every topic.
    c.set("partition.assignment.strategy", "range");
    c.create_with_context(EdgeContext::new(metrics.clone()))
        .map_err(|source| ConsumeError::Start {
            group: k.group_id.clone(),
            source,
        })
}

/// One stored-offset candidate, storable once `barrier` outputs are acked.
#[derive(Debug)]
struct Checkpoint {
    barrier: u64,
    topic: usize,
    partition: i32,
    offset: i64,
}

#[derive(Debug, Default)]
struct TpTrack {
    /// (seq, offset) of messages from the first possibly-unapplied one on.
    records: VecDeque<(u64, i64)>,
    /// Offset after the last consumed message (starts at the committed offset).
    next_offset: Option<i64>,
    /// Last checkpointed offset.
    checkpointed: Option<i64>,
}

/// A caught-up topic of a partition without messages this long no longer
/// holds back the partition's watermark.
const SOURCE_IDLE: Duration = Duration::from_millis(500);
/// The same when librdkafka has not reported the topic's high watermark yet.
const SOURCE_IDLE_UNKNOWN: Duration = Duration::from_secs(5);

struct Part {
    engine: Arc<Mutex<Engine>>,
    tps: [TpTrack; 3],
    assigned: [bool; 3],
    last_input: Instant,
    /// Last message per input topic, to tell a drained topic from a slow one.
    topic_input: [Option<Instant>; 3],
}

/// A message held while its partition is being rebuilt.
#[derive(Debug)]
struct Held {
    topic: usize,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    consumed_at: Instant,
}

/// A rebuilt partition: its engine and committed offsets per topic.
struct Rebuilt {
    partition: i32,
    engine: Engine,
    committed: [Option<i64>; 3],
}

type RebuildResult = (u64, Result<Vec<Rebuilt>, ConsumeError>);

/// The consume loop. Create with [`ConsumerLoop::new`], drive with [`ConsumerLoop::run`].
pub struct ConsumerLoop {
    cfg: Arc<Config>,
    consumer: Arc<GroupConsumer>,
    outbox: Outbox,
    metrics: Metrics,
    shared: Arc<SharedState>,
    topics: [String; 3],
    parts: BTreeMap<i32, Part>,
    /// Partition number -> (rebuild generation, assigned topics).
    rebuilding: BTreeMap<i32, (u64, [bool; 3])>,
    held: BTreeMap<i32, Vec<Held>>,
    rebuilds: JoinSet<RebuildResult>,
    generation: u64,
    seq: Arc<AtomicU64>,
    checkpoints: VecDeque<Checkpoint>,
    cancel: CancellationToken,
    assigned_once: bool,
    /// When the business gauges are next recomputed (each replays the ledgers).
    business_due: Instant,
    snapshot_due: Instant,
    /// `events_consumed` children by (topic, type index), looked up once:
    /// a label lookup per message shows in profiles.
    consumed: [[Option<IntCounter>; EVENT_TYPES.len()]; 3],
}

impl ConsumerLoop {
    /// Wires the loop; `cancel` stops consuming and starts the shutdown sequence.
    pub fn new(
        cfg: Arc<Config>,
        consumer: GroupConsumer,
        outbox: Outbox,
        metrics: Metrics,
        shared: Arc<SharedState>,
        cancel: CancellationToken,
    ) -> Self {
        let topics = super::input_topics(&cfg.kafka).map(str::to_string);
        ConsumerLoop {
            cfg,
            consumer: Arc::new(consumer),
            outbox,
            metrics,
            shared,
            topics,
            parts: BTreeMap::new(),
            rebuilding: BTreeMap::new(),
            held: BTreeMap::new(),
            rebuilds: JoinSet::new(),
            generation: 0,
            seq: Arc::new(AtomicU64::new(0)),
            checkpoints: VecDeque::new(),
            cancel,
            assigned_once: false,
            business_due: Instant::now(),
            snapshot_due: Instant::now(),
            consumed: Default::default(),
        }
    }

    /// Subscribes and consumes until cancelled, then shuts down cleanly:
    /// waits for in-flight outputs, stores and commits offsets, flushes.
    pub async fn run(mut self) -> Result<(), ConsumeError> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&topics)
            .map_err(|source| ConsumeError::Start {
                group: self.cfg.kafka.group_id.clone(),
                source,
            })?;
        tracing::info!(topics = ?topics, group = %self.cfg.kafka.group_id, "consuming");
        let consumer = self.consumer.clone();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let commit_every = Duration::from_millis(self.cfg.kafka.commit_interval.max(1) as u64);
        let mut last_checkpoint = Instant::now();
        let mut last_metrics = Instant::now() - METRICS_EVERY;
        let result = loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break Ok(()),
                _ = consumer.context().noted.notified() => self.handle_notes(),
                Some(res) = self.rebuilds.join_next(), if !self.rebuilds.is_empty() => {
                    match res {
                        Ok(r) => if let Err(e) = self.finish_rebuild(r).await { break Err(e) },
                        Err(e) => break Err(ConsumeError::Rebuild { partitions: vec![], reason: e.to_string() }),
                    }
                }
                true = self.outbox.next_ack(), if self.outbox.in_flight() > 0 => self.store_ready(),
                _ = tick.tick() => {
                    self.handle_notes();
                    self.outbox.poll_acks();
                    self.idle_ticks().await;
                    self.sweeps().await;
                    if last_checkpoint.elapsed() >= commit_every {
                        self.checkpoint();
                        last_checkpoint = Instant::now();
                    }
                    self.store_ready();
                    if last_metrics.elapsed() >= METRICS_EVERY {
                        self.refresh_metrics();
                        last_metrics = Instant::now();
                    }
                }
                msg = consumer.recv() => {
                    let now = Instant::now();
                    self.handle_notes();
                    // Take what is already fetched in one go: one select and
                    // one clock read per batch instead of per message.
                    let mut next = Some(msg);
                    let mut n = 0;
                    while let Some(msg) = next.take() {
                        match msg {
                            Ok(m) => {
                                if let Some(topic) = self.topics.iter().position(|t| t == m.topic()) {
                                    self.handle_message(topic, m.partition(), m.offset(), m.key(), m.payload().unwrap_or(&[]), now).await;
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "consumer error"),
                        }
                        n += 1;
                        if n < BATCH && !self.cancel.is_cancelled() {
                            next = ready_now(consumer.recv());
                        }
                    }
                    self.sweeps().await;
                }
            }
        };
        self.shutdown().await;
        result
    }

    fn handle_notes(&mut self) {
        let notes = std::mem::take(&mut *lock(&self.consumer.context().notes));
        if notes.is_empty() {
            return;
        }
        for n in notes {
            match n {
                Note::Revoke(tps) => {
                    let ps: HashSet<i32> = tps.iter().map(|t| t.1).collect();
                    for p in &ps {
                        self.parts.remove(p);
                        self.rebuilding.remove(p);
                        self.held.remove(p);
                        self.shared.remove_engine(*p);
                        for t in &self.topics {
                            let _ = self
                                .metrics
                                .consumer_lag
                                .remove_label_values(&[t.as_str(), &p.to_string()]);
                        }
                    }
                    self.checkpoints.retain(|c| !ps.contains(&c.partition));
                }
                Note::Assign(tps) => {
                    self.assigned_once = true;
                    let mut by_part: BTreeMap<i32, [bool; 3]> = BTreeMap::new();
                    for (t, p) in &tps {
                        if let Some(i) = self.topics.iter().position(|x| x == t) {
                            by_part.entry(*p).or_default()[i] = true;
                        }
                    }
                    if by_part.is_empty() {
                        continue;
                    }
                    self.generation += 1;
                    let generation = self.generation;
                    for (p, assigned) in &by_part {
                        self.parts.remove(p);
                        self.shared.remove_engine(*p);
                        self.rebuilding.insert(*p, (generation, *assigned));
                    }
                    let job = RebuildJob {
                        cfg: self.cfg.clone(),
                        consumer: self.consumer.clone(),
                        topics: self.topics.clone(),
                        parts: by_part,
                        seq: self.seq.clone(),
                        metrics: self.metrics.clone(),
                        cancel: self.cancel.clone(),
                    };
                    self.rebuilds.spawn(async move {
                        let r = tokio::task::spawn_blocking(move || job.run())
                            .await
                            .unwrap_or_else(|e| {
                                Err(ConsumeError::Rebuild {
                                    partitions: vec![],
                                    reason: e.to_string(),
                                })
                            });
                        (generation, r)
                    });
                }
            }
        }
        self.publish_status();
    }

    async fn finish_rebuild(
        &mut self,
        (generation, res): RebuildResult,
    ) -> Result<(), ConsumeError> {
        let rebuilt = match res {
            Ok(r) => r,
            Err(e) if self.cancel.is_cancelled() => {
                tracing::debug!(error = %e, "rebuild interrupted by shutdown");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for r in rebuilt {
            let Some((g, assigned)) = self.rebuilding.get(&r.partition).copied() else {
                continue;
            };
            if g != generation {
                continue;
            }
            self.rebuilding.remove(&r.partition);
            let mut engine = r.engine;
            // Live, each input topic is a source of its own: the watermark
            // follows the slowest one that still has input.
            engine.set_sources(self.topics.len());
            let engine = Arc::new(Mutex::new(engine));
            let mut tps: [TpTrack; 3] = Default::default();
            for (i, tp) in tps.iter_mut().enumerate() {
                tp.next_offset = r.committed[i];
                tp.checkpointed = r.committed[i];
            }
            self.parts.insert(
                r.partition,
                Part {
                    engine: engine.clone(),
                    tps,
                    assigned,
                    last_input: Instant::now(),
                    topic_input: [None; 3],
                },
            );
            self.shared.insert_engine(r.partition, engine);
            let mut tpl = TopicPartitionList::new();
            for (i, t) in self.topics.iter().enumerate() {
                if assigned[i] {
                    tpl.add_partition(t, r.partition);
                }
            }
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::error!(partition = r.partition, error = %e, "cannot resume partition after rebuild");
            }
            tracing::info!(partition = r.partition, "partition rebuilt; live");
            for h in self.held.remove(&r.partition).unwrap_or_default() {
                self.handle_message(
                    h.topic,
                    h.partition,
                    h.offset,
                    h.key.as_deref(),
                    &h.payload,
                    h.consumed_at,
                )
                .await;
            }
        }
        self.sweeps().await;
        self.publish_status();
        Ok(())
    }

    async fn handle_message(
        &mut self,
        topic: usize,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        consumed_at: Instant,
    ) {
        if let Some((_, assigned)) = self.rebuilding.get(&partition) {
            let held = self.held.entry(partition).or_default();
            if held.len() == MAX_HELD {
                // A long replay: stop fetching until it is done (finish_rebuild resumes).
                let mut tpl = TopicPartitionList::new();
                for (i, t) in self.topics.iter().enumerate() {
                    if assigned[i] {
                        tpl.add_partition(t, partition);
                    }
                }
                if let Err(e) = self.consumer.pause(&tpl) {
                    tracing::warn!(partition, error = %e, "cannot pause a partition being rebuilt; holding its messages in memory");
                }
            }
            held.push(Held {
                topic,
                partition,
                offset,
                key: key.map(<[u8]>::to_vec),
                payload: payload.to_vec(),
                consumed_at,
            });
            return;
        }
        let Some(part) = self.parts.get_mut(&partition) else {
            tracing::debug!(
                partition,
                offset,
                "message for a partition not assigned here; skipped"
            );
            return;
        };
        let topic_name = self.topics[topic].as_str();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let tp = &mut part.tps[topic];
        if tp.next_offset.is_some_and(|n| offset < n) {
            // Fetched again (after a seek, or a broker answering from an
            // earlier batch): it is applied already.
            tracing::debug!(
                topic = topic_name,
                partition,
                offset,
                "message seen before; skipped"
            );
            return;
        }
        tp.records.push_back((seq, offset));
        tp.next_offset = Some(offset + 1);
        part.last_input = consumed_at;
        part.topic_input[topic] = Some(consumed_at);
        match decode(payload, &self.cfg.decode) {
            Err(reason) => {
                let code = reason.code();
                self.metrics
                    .events_rejected
                    .with_label_values(&[topic_name, code])
                    .inc();
                tracing::debug!(topic = topic_name, partition, offset, reason = code, error = %reason, "event rejected; sent to the dead-letter topic");
                let out = Output {
                    topic: self.cfg.kafka.dlq_topic.clone(),
                    key: key.map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    headers: vec![
                        ("source_topic".into(), topic_name.as_bytes().to_vec()),
                        (
                            "source_partition".into(),
                            partition.to_string().into_bytes(),
                        ),
                        ("source_offset".into(), offset.to_string().into_bytes()),
                        ("reason".into(), code.as_bytes().to_vec()),
                        ("error".into(), reason.to_string().into_bytes()),
                    ],
                    kind: OutputKind::DeadLetter { reason: code },
                };
                self.outbox.send(out).await;
            }
            Ok(ev) => {
                self.consumed[topic][ev.kind.type_index()]
                    .get_or_insert_with(|| {
                        self.metrics
                            .events_consumed
                            .with_label_values(&[topic_name, ev.kind.type_name()])
                    })
                    .inc();
                let (disposition, alerts) = {
                    let mut e = lock(&part.engine);
                    let d = e.ingest_from(topic, ev, seq);
                    (d, e.take_alerts())
                };
                match disposition {
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
                for a in alerts {
                    let out = Output::alert(&self.cfg.kafka.alerts_topic, &a, consumed_at);
                    self.outbox.send(out).await;
                }
            }
        }
    }

    /// Releases the daily sweeps every live partition has reached, with one
    /// population merged over them all (see [`crate::engine::population`]).
    /// While a partition is being rebuilt, sweeps wait for it. A partition
    /// parked with [`MAX_PARKED`] events buffered does not wait longer.
    async fn sweeps(&mut self) {
        let alerts = {
            let mut guards: Vec<_> = self.parts.values().map(|p| lock(&p.engine)).collect();
            if guards.iter().all(|e| e.sweep_pending().is_none()) {
                Vec::new()
            } else {
                let mut engines: Vec<&mut Engine> = guards.iter_mut().map(|g| &mut **g).collect();
                let mut released = 0;
                if self.rebuilding.is_empty() {
                    released = release_sweeps(&mut engines, |_| false);
                }
                while engines
                    .iter()
                    .any(|e| e.sweep_pending().is_some() && e.buffered() >= MAX_PARKED)
                    && force_next_sweep(&mut engines)
                {
                    released += 1;
                    tracing::warn!(
                        max_parked = MAX_PARKED,
                        "a partition buffered too much waiting at a daily sweep; released it without the partitions behind"
                    );
                }
                if released > 0 {
                    tracing::debug!(released, partitions = engines.len(), "sweeps released");
                }
                engines.iter_mut().flat_map(|e| e.take_alerts()).collect()
            }
        };
        let now = Instant::now();
        for a in alerts {
            let out = Output::alert(&self.cfg.kafka.alerts_topic, &a, now);
            self.outbox.send(out).await;
        }
    }

    /// Advances the event-time clock of partitions idle for `idle_timeout`.
    async fn idle_ticks(&mut self) {
        let idle_timeout = Duration::from_millis(self.cfg.kafka.idle_timeout.max(0) as u64);
        let now = Instant::now();
        let mut outs = Vec::new();
        // A topic that is quiet and caught up (its fetch high watermark, as
        // librdkafka last reported it, reached) is drained: it stops holding
        // back its partition's watermark until its next message. Without a
        // reported high watermark, a longer silence counts as drained.
        let high = lock(&self.consumer.context().high).clone();
        for (p, part) in &self.parts {
            for (t, last) in part.topic_input.iter().enumerate() {
                let quiet = last.map_or(now, |l| l);
                let quiet_for = now.saturating_duration_since(quiet);
                let caught_up = match (
                    high.get(&(self.topics[t].clone(), *p)),
                    part.tps[t].next_offset,
                ) {
                    _ if !part.assigned[t] => true,
                    (Some(hi), Some(next)) => next >= *hi,
                    (Some(hi), None) => *hi <= 0,
                    (None, _) => quiet_for >= SOURCE_IDLE_UNKNOWN,
                };
                if caught_up && (last.is_none() || quiet_for >= SOURCE_IDLE) {
                    let mut e = lock(&part.engine);
                    e.source_idle(t);
                    outs.extend(e.take_alerts());
                }
            }
        }
        for (p, part) in &self.parts {
            let idle = now.saturating_duration_since(part.last_input);
            if idle < idle_timeout {
                continue;
            }
            let mut e = lock(&part.engine);
            // Parked at a sweep, it waits for the others, not for time: moving
            // its clock on would make its topics' next events late.
            if e.sweep_pending().is_some() {
                continue;
            }
            let Some(max_ts) = e.max_ts() else { continue };
            let to = max_ts.saturating_add(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX));
            e.advance_to(to);
            let alerts = e.take_alerts();
            if !alerts.is_empty() {
                tracing::debug!(
                    partition = p,
                    advance_to = to,
                    alerts = alerts.len(),
                    "idle tick fired alerts"
                );
            }
            outs.extend(alerts);
        }
        for a in outs {
            let out = Output::alert(&self.cfg.kafka.alerts_topic, &a, now);
            self.outbox.send(out).await;
        }
    }

    /// Records, per topic-partition, the offset up to which every message is
    /// applied, to be stored once the outputs handed over so far are acked.
    fn checkpoint(&mut self) {
        let barrier = self.outbox.sent();
        for (p, part) in &mut self.parts {
            let pending: HashSet<u64> = lock(&part.engine).pending_seqs().into_iter().collect();
            for (i, tp) in part.tps.iter_mut().enumerate() {
                while let Some(&(seq, _)) = tp.records.front() {
                    if pending.contains(&seq) {
                        break;
                    }
                    tp.records.pop_front();
                }
                let candidate = tp.records.front().map(|r| r.1).or(tp.next_offset);
                if let Some(c) = candidate
                    && tp.checkpointed.is_none_or(|done| c > done)
                {
                    tp.checkpointed = Some(c);
                    self.checkpoints.push_back(Checkpoint {
                        barrier,
                        topic: i,
                        partition: *p,
                        offset: c,
                    });
                }
            }
        }
    }

    /// Stores the offsets of checkpoints whose outputs are all acknowledged.
    fn store_ready(&mut self) {
        let acked = self.outbox.acked_prefix();
        let mut ready: BTreeMap<(usize, i32), i64> = BTreeMap::new();
        while let Some(c) = self.checkpoints.front() {
            if c.barrier > acked {
                break;
            }
            ready.insert((c.topic, c.partition), c.offset);
            self.checkpoints.pop_front();
        }
        if ready.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), off) in &ready {
            if let Err(e) = tpl.add_partition_offset(&self.topics[*t], *p, Offset::Offset(*off)) {
                tracing::warn!(error = %e, "bad offset in checkpoint");
            }
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            tracing::warn!(error = %e, "cannot store offsets (partition revoked?)");
        }
    }

    fn refresh_metrics(&mut self) {
        let high = lock(&self.consumer.context().high).clone();
        let mut total_lag: u64 = 0;
        // A snapshot computes every customer's health: paced like the
        // business report below (`next_refresh`).
        let snapshot_started = Instant::now();
        let take_snapshot = snapshot_started >= self.snapshot_due;
        let mut snapshots = Vec::with_capacity(self.parts.len());
        let (mut customers, mut bytes) = (0usize, 0usize);
        for (p, part) in &self.parts {
            for (i, t) in self.topics.iter().enumerate() {
                if !part.assigned[i] {
                    continue;
                }
                let Some(hi) = high.get(&(t.clone(), *p)) else {
                    continue;
                };
                let lag = (hi - part.tps[i].next_offset.unwrap_or(0)).max(0);
                total_lag += lag as u64;
                self.metrics
                    .consumer_lag
                    .with_label_values(&[t.as_str(), &p.to_string()])
                    .set(lag);
            }
            let e = lock(&part.engine);
            if take_snapshot {
                snapshots.push(e.snapshot());
            }
            customers += e.customer_count();
            bytes += e.state_bytes();
        }
        if take_snapshot {
            self.metrics.set_engine(&snapshots);
            self.snapshot_due = next_refresh(snapshot_started);
        }
        if Instant::now() >= self.business_due {
            // A report replays each partition's ledger (`next_refresh`).
            let started = Instant::now();
            let reports: Vec<_> = self
                .parts
                .values()
                .map(|part| lock(&part.engine).business_rolling())
                .collect();
            self.metrics.set_business(&reports);
            self.business_due = next_refresh(started);
        }
        self.metrics.customers_tracked.set(customers as i64);
        self.metrics.state_bytes.set(bytes as i64);
        self.metrics.partitions_live.set(self.parts.len() as i64);
        self.shared.update_status(|s| s.total_lag = total_lag);
    }

    fn publish_status(&self) {
        let (assigned, rebuilding, live) =
            (self.assigned_once, self.rebuilding.len(), self.parts.len());
        self.shared.update_status(|s| {
            s.assigned = assigned;
            s.rebuilding = rebuilding;
            s.live_partitions = live;
        });
    }

    async fn shutdown(mut self) {
        tracing::info!(
            in_flight = self.outbox.in_flight(),
            "stopping: finishing in-flight alerts"
        );
        self.shared.update_status(|s| s.stopping = true);
        self.rebuilds.abort_all();
        self.checkpoint();
        self.outbox.drain().await;
        self.store_ready();
        let consumer = self.consumer.clone();
        let outbox = self.outbox;
        drop(self.parts);
        let done = tokio::task::spawn_blocking(move || {
            outbox.flush(Duration::from_secs(5));
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!("offsets committed"),
                Err(e) if is_no_offset(&e) => {}
                Err(e) => tracing::warn!(error = %e, "final commit failed"),
            }
            consumer.unsubscribe();
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "shutdown task failed");
        }
    }
}

/// Replays partitions from the earliest retained offset up to the committed one.
struct RebuildJob {
    cfg: Arc<Config>,
    consumer: Arc<GroupConsumer>,
    topics: [String; 3],
    parts: BTreeMap<i32, [bool; 3]>,
    seq: Arc<AtomicU64>,
    metrics: Metrics,
    cancel: CancellationToken,
}

impl RebuildJob {
    fn err(&self, reason: impl std::fmt::Display) -> ConsumeError {
        ConsumeError::Rebuild {
            partitions: self.parts.keys().copied().collect(),
            reason: reason.to_string(),
        }
    }

    fn committed(&self) -> Result<TopicPartitionList, ConsumeError> {
        let mut tpl = TopicPartitionList::new();
        for (p, assigned) in &self.parts {
            for (i, t) in self.topics.iter().enumerate() {
                if assigned[i] {
                    tpl.add_partition(t, *p);
                }
            }
        }
        let mut last = None;
        for attempt in 0..5u32 {
            match self
                .consumer
                .committed_offsets(tpl.clone(), Duration::from_secs(10))
            {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "cannot read committed offsets; retrying");
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
            }
            if self.cancel.is_cancelled() {
                break;
            }
        }
        Err(self.err(format!(
            "cannot read committed offsets: {}",
            last.map(|e| e.to_string())
                .unwrap_or_else(|| "shutdown".into())
        )))
    }

    fn run(self) -> Result<Vec<Rebuilt>, ConsumeError> {
        let committed = self.committed()?;
        let mut ends: HashMap<(usize, i32), i64> = HashMap::new();
        let mut out: BTreeMap<i32, Rebuilt> = BTreeMap::new();
        for p in self.parts.keys() {
            out.insert(
                *p,
                Rebuilt {
                    partition: *p,
                    engine: {
                        let mut e = Engine::new(self.cfg.clone());
                        e.set_coordinated(true);
                        e
                    },
                    committed: [None; 3],
                },
            );
        }
        for e in committed.elements() {
            let Some(i) = self.topics.iter().position(|t| t == e.topic()) else {
                continue;
            };
            if let (Offset::Offset(n), Some(r)) = (e.offset(), out.get_mut(&e.partition())) {
                r.committed[i] = Some(n);
                if n > 0 {
                    ends.insert((i, e.partition()), n);
                }
            }
        }
        let started = Instant::now();
        let mut replayed = 0u64;
        if !ends.is_empty() {
            replayed = self.replay(&ends, &mut out)?;
        }
        for r in out.values_mut() {
            settle(&mut r.engine);
        }
        // Nothing more comes for any of them: release every parked sweep.
        let mut engines: Vec<&mut Engine> = out.values_mut().map(|r| &mut r.engine).collect();
        release_sweeps(&mut engines, |_| true);
        for e in engines {
            drop(e.take_alerts());
        }
        tracing::info!(partitions = ?self.parts.keys().collect::<Vec<_>>(), replayed, elapsed_ms = started.elapsed().as_millis() as u64, "state rebuilt");
        Ok(out.into_values().collect())
    }

    fn replay(
        &self,
        ends: &HashMap<(usize, i32), i64>,
        out: &mut BTreeMap<i32, Rebuilt>,
    ) -> Result<u64, ConsumeError> {
        let k = &self.cfg.kafka;
        let mut c = super::consumer_config(k);
        c.set("group.id", format!("{}.replay", k.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        let replay: BaseConsumer<super::ReaderContext> = c
            .create_with_context(super::ReaderContext)
            .map_err(|e| self.err(e))?;
        let mut tpl = TopicPartitionList::new();
        for (i, p) in ends.keys() {
            tpl.add_partition_offset(&self.topics[*i], *p, Offset::Beginning)
                .map_err(|e| self.err(e))?;
        }
        replay.assign(&tpl).map_err(|e| self.err(e))?;
        let mut remaining: HashSet<(usize, i32)> = ends.keys().copied().collect();
        let mut replayed = 0u64;
        let mut quiet_since = Instant::now();
        while !remaining.is_empty() {
            if self.cancel.is_cancelled() {
                return Err(self.err("shutdown"));
            }
            match replay.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    quiet_since = Instant::now();
                    let Some(i) = self.topics.iter().position(|t| t == m.topic()) else {
                        continue;
                    };
                    let key = (i, m.partition());
                    let Some(end) = ends.get(&key) else { continue };
                    if m.offset() < *end
                        && let (Ok(ev), Some(r)) = (
                            decode(m.payload().unwrap_or(&[]), &self.cfg.decode),
                            out.get_mut(&m.partition()),
                        )
                    {
                        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                        r.engine.ingest(ev, seq);
                        // Replayed effects were emitted before: drop them.
                        drop(r.engine.take_alerts());
                        replayed += 1;
                        self.metrics
                            .events_replayed
                            .with_label_values(&[self.topics[i].as_str()])
                            .inc();
                    }
                    if m.offset() + 1 >= *end {
                        remaining.remove(&key);
                        if !remaining.iter().any(|k| k.1 == key.1)
                            && let Some(r) = out.get_mut(&key.1)
                        {
                            settle(&mut r.engine);
                            drop(r.engine.take_alerts());
                        }
                    }
                    if out.values().all(|r| r.engine.sweep_pending().is_none()) {
                        continue;
                    }
                    // Partitions replay through the same sweeps as live; one
                    // done replaying holds none back.
                    let parts: Vec<i32> = out.keys().copied().collect();
                    let mut engines: Vec<&mut Engine> =
                        out.values_mut().map(|r| &mut r.engine).collect();
                    release_sweeps(&mut engines, |i| !remaining.iter().any(|k| k.1 == parts[i]));
                    for e in engines {
                        drop(e.take_alerts());
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    // EOF below the committed offset: the tail is gone (deleted
                    // records or transaction markers). Give up after a quiet spell.
                    if quiet_since.elapsed() > Duration::from_secs(5) {
                        tracing::warn!(left = ?remaining, "replay stopped before the committed offset; state may be partial");
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "replay consumer error");
                }
            }
        }
        Ok(replayed)
    }
}

/// After a replay, applies what the engine still buffers: every replayed event
/// was applied in the run that committed it, so its alerts were emitted then.
fn settle(engine: &mut Engine) {
    // Everything replayed was applied before the restart (offsets are only
    // committed past applied events), so apply all of it, inclusively.
    engine.finish_replay();
}
