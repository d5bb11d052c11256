//! The consume loop: one consumer group over the three input topics,
//! at-least-once, state sharded by partition number.
//!
//! # Two threads
//! This loop does the Kafka side: it receives messages, copies each batch
//! into one buffer and hands it to the engine thread ([`super::worker`]),
//! which decodes and applies them; the outputs that come back (alerts, dead
//! letters) go to the [`Outbox`] in the order they arose. So receiving and
//! deciding run on two cores.
//!
//! # Offsets (at-least-once)
//! `enable.auto.commit=true` with `enable.auto.offset.store=false`: librdkafka
//! commits only offsets we store. Every `kafka.commit_interval` the loop asks
//! the engine thread for a checkpoint: per topic-partition, the offset below
//! which every message is applied (its seq is below the least pending one
//! of its topic, [`Engine::pending_min_seq_by_source`]). Since results come back in order, every output
//! of those messages is already in the [`Outbox`] then; the offset is stored
//! once every output handed over up to then (alerts, dead letters) is
//! acknowledged by the broker, and committed by librdkafka on its interval
//! (`kafka.commit_interval` too), on revoke and on shutdown (explicitly).
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
//! handled once it is live. Past `kafka.rebuild_hold_max` bytes of them the
//! loop stops receiving until the rebuild is done (librdkafka then stops
//! fetching once its queue is full), counted in
//! [`crate::metrics::REBUILD_HOLD_FULL`]; it does not pause partitions,
//! because pause/resume against Tansu skipped messages whose offsets were
//! then committed.
//!
//! # One population per instance
//! Engines are coordinated ([`Engine::set_coordinated`]): each parks at its
//! daily sweep until every live partition is there or past it, then all
//! parked ones sweep with one population merged over them
//! ([`release_sweeps`], called by the engine thread after each batch and
//! tick). A partition parked with [`super::worker::MAX_PARKED`] events
//! buffered stops waiting. Rebuilds replay through the same barrier; live
//! sweeps wait while one runs. A rebuilt partition still parked at a sweep
//! that a partition committed earlier has not reached waits for it live
//! (the engine thread's *settling*, see `worker::Part`).
//!
//! # Idle partitions
//! After `kafka.idle_timeout` of wall-clock time without input, each tick
//! advances the partition's watermark to `max_ts + idle wall time -
//! allowed_lateness` (event time follows the wall clock; the watermark keeps
//! its lateness), so time-based alerts (inactivity, dunning expiry) fire;
//! their times stay event time.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::population::release_sweeps;
use crate::engine::{Engine, ViewBuilder};
use crate::event::decode_keyed;
use crate::kafka::producer::Outbox;
use crate::kafka::worker::{self, Batch, Done, Work};
use crate::lock;
use crate::metrics::Metrics;
use crate::shared::SharedState;

/// How often the loop wakes up without input (acks, idle ticks, checkpoints).
const TICK: Duration = Duration::from_millis(200);
/// Most messages handled per wake-up of the loop before it looks at acks,
/// ticks and cancellation again.
const BATCH: usize = 512;
/// Batches handed to the engine thread and not yet taken before the loop waits.
const WORK_QUEUE: usize = 64;
/// How often lag, readiness and engine gauges are refreshed.
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// Customers of a partition added to its read view per refresh (about
/// 50 ms of work): a refresh holds an engine no longer than that.
const VIEW_SLICE: usize = 50_000;

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

/// When a costly metrics refresh that took `spent` may run again: at most
/// every [`METRICS_EVERY`], and spending ~2% of the loop's time on it.
/// `spent` excludes waiting for engine locks: a refresh that waited for an
/// engine thread applying a large batch would otherwise put the next one off
/// by 50 times that wait, leaving the gauges stale well after the input ends.
fn next_refresh(spent: Duration) -> Instant {
    Instant::now() + METRICS_EVERY.max(spent * 50)
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
            // the loop holds its messages (and stops receiving past
            // `kafka.rebuild_hold_max`).
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
        // librdkafka commits what `store_ready` stored, on its timer. (An
        // explicit async commit after each store was measured: it cut the
        // pipeline's throughput through Tansu by about a fifth.)
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

/// A caught-up topic of a partition without messages this long no longer
/// holds back the partition's watermark.
const SOURCE_IDLE: Duration = Duration::from_millis(500);
/// The same when librdkafka has not reported the topic's high watermark yet.
const SOURCE_IDLE_UNKNOWN: Duration = Duration::from_secs(5);

/// A live partition, as the consume loop sees it (its engine is driven by
/// the engine thread; the loop reads it for metrics).
struct Part {
    engine: Arc<Mutex<Engine>>,
    /// Offset after the last message received, per input topic (starts at
    /// the committed offset).
    next_offset: [Option<i64>; 3],
    assigned: [bool; 3],
    last_input: Instant,
    /// Last message per input topic, to tell a drained topic from a slow one.
    topic_input: [Option<Instant>; 3],
    /// The read view being built, a slice of customers per refresh.
    view: ViewBuilder,
}

impl Part {
    /// Whether a received message is new (not below the next offset of its
    /// topic-partition); if so, records it as received.
    fn accept(&mut self, topic: usize, offset: i64, at: Instant) -> bool {
        match self.next_offset[topic] {
            Some(n) if offset < n => {
                // Fetched again (after a seek, or a broker answering from an
                // earlier batch): it is applied already.
                tracing::debug!(topic, offset, "message seen before; skipped");
                return false;
            }
            Some(n) if offset > n => {
                // Not an error in itself (transaction markers and compaction
                // leave gaps), but messages below `offset` were never received.
                tracing::debug!(topic, offset, expected = n, "gap in offsets");
            }
            _ => {}
        }
        self.next_offset[topic] = Some(offset + 1);
        self.last_input = at;
        self.topic_input[topic] = Some(at);
        true
    }
}

/// A rebuilt partition: its engine and committed offsets per topic.
struct Rebuilt {
    partition: i32,
    engine: Engine,
    committed: [Option<i64>; 3],
    /// Messages at or after the committed offset that the replay read
    /// anyway (the rest of the fetched record batch): applied live, before
    /// what the group consumer held. A broker that answers a fetch at an
    /// offset inside a record batch with the next batch (Tansu does) would
    /// otherwise skip them: the group consumer starts at the committed offset.
    tail: Batch,
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
    /// Messages received for partitions being rebuilt.
    held: BTreeMap<i32, Batch>,
    held_bytes: usize,
    /// `kafka.rebuild_hold_max`: at `held_bytes` this high, receiving stops
    /// until the rebuild is done.
    hold_max: usize,
    rebuilds: JoinSet<RebuildResult>,
    generation: u64,
    seq: Arc<AtomicU64>,
    checkpoints: VecDeque<Checkpoint>,
    cancel: CancellationToken,
    assigned_once: bool,
    /// When the business gauges are next recomputed (each replays the ledgers).
    business_due: Instant,
    snapshot_due: Instant,
    /// To the engine thread; `None` once shutting down.
    work: Option<mpsc::Sender<Work>>,
    /// From the engine thread, in order.
    done: mpsc::UnboundedReceiver<Done>,
    /// Emptied batches back from the engine thread, for reuse.
    spare: std::sync::mpsc::Receiver<Batch>,
    engine_thread: Option<std::thread::JoinHandle<()>>,
    /// Decode on this thread (the engine thread is behind: its queue is
    /// more than half full), else leave it to the engine thread.
    decode_here: bool,
}

impl ConsumerLoop {
    /// Wires the loop and starts its engine thread; `cancel` stops consuming
    /// and starts the shutdown sequence.
    pub fn new(
        cfg: Arc<Config>,
        consumer: GroupConsumer,
        outbox: Outbox,
        metrics: Metrics,
        shared: Arc<SharedState>,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let topics = super::input_topics(&cfg.kafka).map(str::to_string);
        let seq = Arc::new(AtomicU64::new(0));
        let (work_tx, work_rx) = mpsc::channel(WORK_QUEUE);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (spare_tx, spare_rx) = std::sync::mpsc::channel();
        let engine_thread = worker::spawn(
            cfg.clone(),
            metrics.clone(),
            seq.clone(),
            work_rx,
            done_tx,
            spare_tx,
        )?;
        let hold_max = usize::try_from(cfg.kafka.rebuild_hold_max).unwrap_or(usize::MAX);
        Ok(ConsumerLoop {
            cfg,
            consumer: Arc::new(consumer),
            outbox,
            metrics,
            shared,
            topics,
            parts: BTreeMap::new(),
            rebuilding: BTreeMap::new(),
            held: BTreeMap::new(),
            held_bytes: 0,
            hold_max,
            rebuilds: JoinSet::new(),
            generation: 0,
            seq,
            checkpoints: VecDeque::new(),
            cancel,
            assigned_once: false,
            business_due: Instant::now(),
            snapshot_due: Instant::now(),
            work: Some(work_tx),
            done: done_rx,
            spare: spare_rx,
            engine_thread: Some(engine_thread),
            decode_here: false,
        })
    }

    /// Hands work to the engine thread (waits while its queue is full).
    async fn hand_over(&mut self, w: Work) {
        if let Some(tx) = &self.work
            && tx.send(w).await.is_err()
        {
            tracing::error!("the engine thread has stopped");
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
        // One stream for the whole loop: `recv()` makes a stream per message,
        // and registering and dropping its waker slot takes a lock each time.
        let mut stream = consumer.stream();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let commit_every = Duration::from_millis(self.cfg.kafka.commit_interval.max(1) as u64);
        let mut last_checkpoint = Instant::now();
        let mut last_metrics = Instant::now() - METRICS_EVERY;
        let result = loop {
            let receiving = self.receiving();
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break Ok(()),
                _ = consumer.context().noted.notified() => self.handle_notes().await,
                Some(res) = self.rebuilds.join_next(), if !self.rebuilds.is_empty() => {
                    match res {
                        Ok(r) => if let Err(e) = self.finish_rebuild(r).await { break Err(e) },
                        Err(e) => break Err(ConsumeError::Rebuild { partitions: vec![], reason: e.to_string() }),
                    }
                }
                Some(done) = self.done.recv() => self.handle_done(done).await,
                true = self.outbox.next_ack(), if self.outbox.in_flight() > 0 => self.store_ready(),
                _ = tick.tick() => {
                    self.handle_notes().await;
                    self.outbox.poll_acks();
                    self.idle_ticks().await;
                    // Within half a tick counts as due: the ticks and the
                    // interval drift by microseconds, and a strict test would
                    // skip every other tick (a 200 ms interval checkpointing
                    // every 400 ms).
                    if last_checkpoint.elapsed() + TICK / 2 >= commit_every {
                        self.hand_over(Work::Checkpoint).await;
                        last_checkpoint = Instant::now();
                    }
                    self.store_ready();
                    if last_metrics.elapsed() >= METRICS_EVERY {
                        self.refresh_metrics();
                        last_metrics = Instant::now();
                    }
                }
                Some(msg) = stream.next(), if receiving => {
                    let now = Instant::now();
                    self.handle_notes().await;
                    // Balance decoding between the two threads by how far
                    // behind the engine thread is.
                    self.decode_here = self
                        .work
                        .as_ref()
                        .is_some_and(|w| w.capacity() < WORK_QUEUE / 2);
                    // Take what is already fetched in one go: one select and
                    // one clock read per batch instead of per message.
                    let mut batch = Batch::reuse(&self.spare, now);
                    let mut next = Some(msg);
                    let mut n = 0;
                    while let Some(msg) = next.take() {
                        match msg {
                            Ok(m) => {
                                if let Some(topic) = self.topics.iter().position(|t| t == m.topic()) {
                                    self.receive(&mut batch, topic, m.partition(), m.offset(), m.key(), m.payload().unwrap_or(&[]), now);
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "consumer error"),
                        }
                        n += 1;
                        // Past the hold bound, what is fetched stays in
                        // librdkafka's queue until the rebuild is done.
                        if n < BATCH && !self.cancel.is_cancelled() && self.receiving() {
                            next = ready_now(stream.next()).flatten();
                        }
                    }
                    if !batch.is_empty() {
                        self.hand_over(Work::Batch(batch)).await;
                    }
                }
            }
        };
        self.shutdown().await;
        result
    }

    /// Whether the loop takes messages: not while those held for partitions
    /// being rebuilt reach `kafka.rebuild_hold_max`.
    fn receiving(&self) -> bool {
        self.held_bytes < self.hold_max
    }

    /// Sends the engine thread's outputs to the outbox, or records its checkpoint.
    async fn handle_done(&mut self, done: Done) {
        match done {
            Done::Outputs(outs) => {
                for out in outs {
                    self.outbox.send(out).await;
                }
            }
            Done::Checkpoint(offsets) => {
                // Every output of the messages below these offsets was in an
                // earlier `Done`, so it is numbered below `sent()`.
                let barrier = self.outbox.sent();
                for (topic, partition, offset) in offsets {
                    if !self.parts.contains_key(&partition) {
                        continue;
                    }
                    self.checkpoints.push_back(Checkpoint {
                        barrier,
                        topic,
                        partition,
                        offset,
                    });
                }
                self.store_ready();
            }
        }
    }

    async fn handle_notes(&mut self) {
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
                        if let Some(b) = self.held.remove(p) {
                            self.held_bytes -= b.bytes();
                        }
                        self.shared.remove_engine(*p);
                        for t in &self.topics {
                            let _ = self
                                .metrics
                                .consumer_lag
                                .remove_label_values(&[t.as_str(), &p.to_string()]);
                        }
                    }
                    self.checkpoints.retain(|c| !ps.contains(&c.partition));
                    self.hand_over(Work::Drop(ps.into_iter().collect())).await;
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
                    self.hand_over(Work::Drop(by_part.keys().copied().collect()))
                        .await;
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
        self.hand_over(Work::Rebuilding(!self.rebuilding.is_empty()))
            .await;
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
            let held = self.held.remove(&r.partition);
            let consumed_at = held.as_ref().map_or_else(Instant::now, |b| b.consumed_at);
            self.parts.insert(
                r.partition,
                Part {
                    engine: engine.clone(),
                    next_offset: r.committed,
                    assigned,
                    last_input: Instant::now(),
                    topic_input: [None; 3],
                    view: ViewBuilder::default(),
                },
            );
            self.shared.insert_engine(r.partition, engine.clone());
            self.hand_over(Work::Live {
                partition: r.partition,
                engine,
                committed: r.committed,
            })
            .await;
            tracing::info!(partition = r.partition, "partition rebuilt; live");
            let mut batch = Batch::new(consumed_at);
            let part = self.parts.get_mut(&r.partition).expect("inserted above");
            // In offset order per topic: what the replay read past the
            // committed offset, then what the group consumer delivered;
            // `accept` drops what was seen before. They count as received
            // now: received when the rebuild began, the partition would look
            // quiet for the rebuild's length and get an idle tick that moves
            // its clock past input still to come.
            let live_at = Instant::now();
            batch.append_filtered(r.tail, |m| part.accept(m.topic, m.offset, live_at));
            if let Some(held) = held {
                self.held_bytes -= held.bytes();
                batch.append_filtered(held, |m| part.accept(m.topic, m.offset, live_at));
            }
            if !batch.is_empty() {
                self.hand_over(Work::Batch(batch)).await;
            }
        }
        self.hand_over(Work::Rebuilding(!self.rebuilding.is_empty()))
            .await;
        self.publish_status();
        Ok(())
    }

    /// Takes one received message: held while its partition is rebuilt,
    /// skipped if seen before, else added to `batch` for the engine thread.
    #[allow(clippy::too_many_arguments)]
    fn receive(
        &mut self,
        batch: &mut Batch,
        topic: usize,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        consumed_at: Instant,
    ) {
        if self.rebuilding.contains_key(&partition) {
            let held = self
                .held
                .entry(partition)
                .or_insert_with(|| Batch::new(consumed_at));
            let before = held.bytes();
            held.push(topic, partition, offset, key, payload, None);
            let added = held.bytes() - before;
            let was_receiving = self.receiving();
            self.held_bytes += added;
            if was_receiving && !self.receiving() {
                self.metrics.rebuild_hold_full.inc();
                tracing::warn!(
                    held_bytes = self.held_bytes,
                    rebuild_hold_max = self.hold_max,
                    rebuilding = ?self.rebuilding.keys().collect::<Vec<_>>(),
                    "holding too much for partitions being rebuilt; receiving stops until the rebuild is done (raise kafka.rebuild_hold_max to keep receiving)"
                );
            }
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
        if part.accept(topic, offset, consumed_at) {
            let decode = self.decode_here.then_some(&self.cfg.decode);
            batch.push(topic, partition, offset, key, payload, decode);
        }
    }

    /// Tells the engine thread which topics are drained and which partitions
    /// are idle (their event-time clocks then advance).
    async fn idle_ticks(&mut self) {
        let idle_timeout = Duration::from_millis(self.cfg.kafka.idle_timeout.max(0) as u64);
        let now = Instant::now();
        // A topic that is quiet and caught up (its fetch high watermark, as
        // librdkafka last reported it, reached) is drained: it stops holding
        // back its partition's watermark until its next message. Without a
        // reported high watermark, a longer silence counts as drained.
        let high = lock(&self.consumer.context().high).clone();
        let mut drained = Vec::new();
        let mut idle = Vec::new();
        for (p, part) in &self.parts {
            let mut all_caught_up = true;
            for (t, last) in part.topic_input.iter().enumerate() {
                let quiet = last.map_or(now, |l| l);
                let quiet_for = now.saturating_duration_since(quiet);
                let caught_up = match (high.get(&(self.topics[t].clone(), *p)), part.next_offset[t])
                {
                    _ if !part.assigned[t] => true,
                    (Some(hi), Some(next)) => next >= *hi,
                    (Some(hi), None) => *hi <= 0,
                    (None, _) => quiet_for >= SOURCE_IDLE_UNKNOWN,
                };
                all_caught_up &= caught_up;
                if caught_up && (last.is_none() || quiet_for >= SOURCE_IDLE) {
                    drained.push((*p, t));
                }
            }
            // Idle: quiet, and nothing left to read (a partition with lag is
            // behind, not idle: its clock must wait for its input).
            let quiet_for = now.saturating_duration_since(part.last_input);
            if quiet_for >= idle_timeout && all_caught_up {
                idle.push((*p, i64::try_from(quiet_for.as_millis()).unwrap_or(i64::MAX)));
            }
        }
        self.hand_over(Work::Tick { drained, idle }).await;
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
        // A read view computes every customer's health: built a slice per
        // refresh (the engine is never held for a whole pass), paced
        // (`next_refresh`), and published for the HTTP handlers and gauges.
        let take_snapshot = Instant::now() >= self.snapshot_due;
        let mut snapshot_spent = Duration::ZERO;
        let mut published = false;
        let (mut customers, mut bytes) = (0usize, 0usize);
        for (p, part) in self.parts.iter_mut() {
            for (i, t) in self.topics.iter().enumerate() {
                if !part.assigned[i] {
                    continue;
                }
                let Some(hi) = high.get(&(t.clone(), *p)) else {
                    continue;
                };
                let lag = (hi - part.next_offset[i].unwrap_or(0)).max(0);
                total_lag += lag as u64;
                self.metrics
                    .consumer_lag
                    .with_label_values(&[t.as_str(), &p.to_string()])
                    .set(lag);
            }
            let e = lock(&part.engine);
            if take_snapshot {
                let t = Instant::now();
                if let Some(view) = e.build_view(&mut part.view, VIEW_SLICE) {
                    self.shared.publish_view(*p, Arc::new(view));
                    published = true;
                }
                snapshot_spent += t.elapsed();
            }
            customers += e.customer_count();
            bytes += e.state_bytes();
        }
        // With no partition left, the gauges empty.
        if published || (take_snapshot && self.parts.is_empty()) {
            let views = self.shared.views();
            let snapshots: Vec<_> = views.iter().map(|(_, v)| v.snapshot.clone()).collect();
            self.metrics.set_engine(&snapshots);
        }
        if take_snapshot {
            self.snapshot_due = next_refresh(snapshot_spent);
        }
        if Instant::now() >= self.business_due {
            // Each partition's ledger keeps its rolling window as facts arrive.
            let mut spent = Duration::ZERO;
            let reports: Vec<_> = self
                .parts
                .values()
                .map(|part| {
                    let mut e = lock(&part.engine);
                    let t = Instant::now();
                    let r = e.business_rolling();
                    spent += t.elapsed();
                    r
                })
                .collect();
            self.metrics.set_business(&reports);
            self.business_due = next_refresh(spent);
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
        // Let the engine thread finish what it was handed, report a last
        // checkpoint and stop; hand everything it sent back to the outbox.
        self.hand_over(Work::Checkpoint).await;
        self.work = None;
        while let Some(done) = self.done.recv().await {
            self.handle_done(done).await;
        }
        if let Some(t) = self.engine_thread.take()
            && tokio::task::spawn_blocking(move || t.join()).await.is_err()
        {
            tracing::error!("the engine thread panicked");
        }
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
                        // As live: each input topic is a source of its own, so
                        // a small topic replayed ahead of a big one does not
                        // move the watermark (and the daily sweeps) past
                        // events the big one has not delivered yet.
                        e.set_sources(self.topics.len());
                        e
                    },
                    committed: [None; 3],
                    tail: Batch::new(Instant::now()),
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
        // A topic-partition with nothing to replay holds nothing back.
        for (p, r) in out.iter_mut() {
            for i in 0..self.topics.len() {
                if !ends.contains_key(&(i, *p)) {
                    r.engine.source_idle(i);
                }
            }
        }
        let started = Instant::now();
        let mut replayed = 0u64;
        // Partitions with nothing committed (by index in `out`): nothing to
        // replay, so they hold no sweep back.
        let fresh: Vec<bool> = out
            .keys()
            .map(|p| !ends.keys().any(|k| k.1 == *p))
            .collect();
        if !ends.is_empty() {
            replayed = self.replay(&ends, &fresh, &mut out)?;
        }
        for r in out.values_mut() {
            settle(&mut r.engine);
        }
        // Sweeps every partition reached run now; one still parked waits,
        // live, for the partitions committed at earlier event times (the
        // engine thread's `settling`), so its population is the instance's.
        let mut engines: Vec<&mut Engine> = out.values_mut().map(|r| &mut r.engine).collect();
        release_sweeps(&mut engines, |i| fresh[i]);
        for e in engines {
            drop(e.take_alerts());
        }
        tracing::info!(partitions = ?self.parts.keys().collect::<Vec<_>>(), replayed, elapsed_ms = started.elapsed().as_millis() as u64, "state rebuilt");
        Ok(out.into_values().collect())
    }

    fn replay(
        &self,
        ends: &HashMap<(usize, i32), i64>,
        fresh: &[bool],
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
        // What the replay reads past the committed offsets is kept up to the
        // hold bound (see `Rebuilt::tail`).
        let hold_max = usize::try_from(self.cfg.kafka.rebuild_hold_max).unwrap_or(usize::MAX);
        let mut tail_bytes = 0usize;
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
                    if m.offset() >= *end && tail_bytes < hold_max {
                        tail_bytes += keep_tail(out, i, &m);
                    }
                    if m.offset() < *end
                        && let (Ok(ev), Some(r)) = (
                            decode_keyed(m.key(), m.payload().unwrap_or(&[]), &self.cfg.decode),
                            out.get_mut(&m.partition()),
                        )
                    {
                        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                        r.engine.ingest_from(i, ev, seq);
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
                        if let Some(r) = out.get_mut(&key.1) {
                            r.engine.source_idle(i);
                            drop(r.engine.take_alerts());
                        }
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
                    // Partitions replay through the same sweeps as live. One
                    // done replaying holds the others back too: it reaches
                    // the sweep live, and the sweep's population must have
                    // its customers (as before the restart). One with nothing
                    // committed holds none back. Past MAX_PARKED buffered,
                    // a sweep goes without the partitions behind.
                    let mut engines: Vec<&mut Engine> =
                        out.values_mut().map(|r| &mut r.engine).collect();
                    release_sweeps(&mut engines, |i| fresh[i]);
                    worker::release_overfull(&mut engines, &[], "replay");
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
        // The rest of the record batches already fetched (see `Rebuilt::tail`).
        while let Some(res) = replay.poll(Duration::ZERO) {
            let Ok(m) = res else { continue };
            let Some(i) = self.topics.iter().position(|t| t == m.topic()) else {
                continue;
            };
            if ends
                .get(&(i, m.partition()))
                .is_some_and(|end| m.offset() >= *end)
                && tail_bytes < hold_max
            {
                tail_bytes += keep_tail(out, i, &m);
            }
        }
        Ok(replayed)
    }
}

/// Keeps a message the replay read past its committed offset in its
/// partition's [`Rebuilt::tail`]; returns the bytes it added.
fn keep_tail<M: Message>(out: &mut BTreeMap<i32, Rebuilt>, topic: usize, m: &M) -> usize {
    let Some(r) = out.get_mut(&m.partition()) else {
        return 0;
    };
    let before = r.tail.bytes();
    r.tail.push(
        topic,
        m.partition(),
        m.offset(),
        m.key(),
        m.payload().unwrap_or(&[]),
        None,
    );
    r.tail.bytes() - before
}

/// After a replay, applies what the engine still buffers: every replayed event
/// was applied in the run that committed it, so its alerts were emitted then.
fn settle(engine: &mut Engine) {
    // Everything replayed was applied before the restart (offsets are only
    // committed past applied events), so apply all of it, inclusively.
    engine.finish_replay();
}
