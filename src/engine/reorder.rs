//! The reorder buffer and what moves events through it: the input sources
//! and the watermark that follows the slowest busy one, and the `event_id`
//! dedup horizon that drops a repeat before it is buffered.

use std::cmp::{Ordering, Reverse};
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};

use rustc_hash::FxHashMap;

use super::Engine;
use crate::event::{Event, Ts};

/// An event waiting in the reorder buffer, ordered by (ts, customer, type,
/// event_id, arrival) so the apply order does not depend on arrival order.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Pending {
    /// Copy of `ev.ts`, kept inline so heap moves compare without a pointer chase.
    pub(super) ts: Ts,
    pub(super) ev: Event,
    seq: u64,
    type_ix: u8,
    /// The source it came from ([`Engine::ingest_from`]), for
    /// [`Engine::pending_min_seq_by_source`] (not part of the order).
    source: u8,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> Ordering {
        self.ts.cmp(&o.ts).then_with(|| {
            (
                &self.ev.customer_id,
                self.type_ix,
                &self.ev.event_id,
                self.seq,
            )
                .cmp(&(&o.ev.customer_id, o.type_ix, &o.ev.event_id, o.seq))
        })
    }
}

/// Progress of one input source.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Source {
    max: Option<Ts>,
    pub(super) idle: bool,
}

impl Engine {
    /// Declares `n` input sources (e.g. the three input topics of a
    /// partition). The watermark then follows the slowest source that is not
    /// idle, so one topic read ahead of another in a backlog does not make
    /// the other's events late.
    pub fn set_sources(&mut self, n: usize) {
        self.sources = vec![Source::default(); n.max(1)];
        self.runs.resize_with(n.max(1), VecDeque::new);
    }

    /// Marks a source drained: it no longer holds the watermark back until
    /// its next event.
    pub fn source_idle(&mut self, source: usize) {
        if let Some(s) = self.sources.get_mut(source) {
            if !s.idle {
                s.idle = true;
                self.advance_watermark();
            }
        }
    }

    /// Moves the watermark to the slowest busy source less the allowed
    /// lateness, applying what it passes.
    fn advance_watermark(&mut self) {
        let busy = self.sources.iter().filter(|s| !s.idle);
        // A busy source that has sent nothing yet holds everything back.
        let slowest = if self.sources.iter().any(|s| !s.idle) {
            busy.map(|s| s.max.unwrap_or(Ts::MIN)).min()
        } else {
            self.max_ts
        };
        if let Some(t) = slowest.filter(|t| *t != Ts::MIN) {
            let wm = t.saturating_sub(self.cfg.allowed_lateness);
            if wm > self.watermark {
                self.watermark = wm;
                self.process(wm, false);
            }
        }
    }

    /// Whether `ev`'s `event_id` was seen within the dedup horizon; if not,
    /// it is remembered for the events after it.
    pub(super) fn is_duplicate(&mut self, ev: &Event) -> bool {
        if let Some(id) = &ev.event_id {
            let mut h = self.hasher.build_hasher();
            ev.customer_id.hash(&mut h);
            0xffu8.hash(&mut h);
            id.hash(&mut h);
            let key = h.finish();
            match self.dedup.get(&key) {
                Some(&first) if (ev.ts - first).abs() <= self.cfg.dedup_horizon => {
                    return true;
                }
                _ => {
                    self.dedup.insert(key, ev.ts);
                    self.dedup_queue.push_back((ev.ts, key));
                }
            }
        }
        false
    }

    /// Puts an on-time event of source `source` in the reorder buffer, and
    /// moves the watermark (applying what it passes) if the event moved its source on.
    pub(super) fn buffer(&mut self, source: usize, ev: Event, seq: u64) {
        let type_ix = ev.kind.type_index() as u8;
        let ts = ev.ts;
        let src = source.min(self.runs.len() - 1);
        let p = Pending {
            ts,
            ev,
            seq,
            type_ix,
            source: src as u8,
        };
        let run = &mut self.runs[src];
        if run.back().is_none_or(|b| *b <= p) {
            run.push_back(p);
        } else {
            self.heap.push(Reverse(p));
        }
        if self.max_ts.is_none_or(|m| ts > m) {
            self.max_ts = Some(ts);
        }
        let s = &mut self.sources[src];
        s.idle = false;
        if s.max.is_none_or(|m| ts > m) {
            s.max = Some(ts);
            self.advance_watermark();
        }
    }

    /// Per source ([`Self::set_sources`]), the least arrival number ingested
    /// from it and not yet applied (`None`: nothing pending). A source's
    /// arrival numbers below it are all applied (or dropped as duplicates).
    pub fn pending_min_seq_by_source(&self) -> Vec<Option<u64>> {
        let mut min = vec![None::<u64>; self.sources.len()];
        for p in self
            .runs
            .iter()
            .flatten()
            .chain(self.heap.iter().map(|r| &r.0))
        {
            let m = &mut min[usize::from(p.source)];
            *m = Some(m.map_or(p.seq, |m| m.min(p.seq)));
        }
        min
    }

    /// Events waiting in the reorder buffer.
    pub fn buffered(&self) -> usize {
        self.runs.iter().map(VecDeque::len).sum::<usize>() + self.heap.len()
    }

    /// The earliest pending event: the least of the runs' fronts and the heap's top.
    pub(super) fn next_pending(&self) -> Option<&Pending> {
        self.next_pending_at().map(|(_, p)| p)
    }

    /// Where the earliest pending event is (`Some(i)`: run `i`, `None`: heap) and the event.
    fn next_pending_at(&self) -> Option<(Option<usize>, &Pending)> {
        let mut best = self.heap.peek().map(|r| (None, &r.0));
        for (i, run) in self.runs.iter().enumerate() {
            if let Some(a) = run.front()
                && best.is_none_or(|(_, b)| a <= b)
            {
                best = Some((Some(i), a));
            }
        }
        best
    }

    /// Takes the earliest pending event out of the buffer.
    pub(super) fn pop_pending(&mut self) -> Option<Pending> {
        match self.next_pending_at()?.0 {
            Some(i) => self.runs[i].pop_front(),
            None => self.heap.pop().map(|r| r.0),
        }
    }

    /// Forgets the `event_id`s that the watermark has left beyond the dedup horizon.
    pub(super) fn expire_dedup(&mut self) {
        let horizon = self.cfg.dedup_horizon;
        while let Some(&(ts, key)) = self.dedup_queue.front() {
            if ts + horizon >= self.watermark {
                break;
            }
            self.dedup_queue.pop_front();
            if self.dedup.get(&key) == Some(&ts) {
                self.dedup.remove(&key);
            }
        }
    }

    /// Rebuilds the dedup map from its queue (after a restore).
    pub(super) fn rebuild_dedup(&mut self) {
        // Each key's latest entry in the queue is the one the map holds: both
        // are written together and the sweep removes a key with its entry.
        self.dedup = FxHashMap::default();
        for &(ts, key) in &self.dedup_queue {
            self.dedup.insert(key, ts);
        }
    }
}
