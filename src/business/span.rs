//! A period `[start, end)` kept up to date as facts arrive and as its bounds
//! move forward, so that its report costs O(plans + segments) instead of a
//! replay of the whole log.
//!
//! A [`Span`] holds the book at each bound (`tail`: every fact before
//! `start`; `head`: every fact before `end`), the facts from `start` on, and
//! the period's counters. A fact entering the period (`head` passes it) adds
//! its flow; a fact leaving it (`tail` passes it) takes the same flow back
//! out, recomputed from the same customer state, so the counters always
//! equal a replay of the facts in the period. The start cohort is kept in
//! closed form per customer: a member (subscribed at `start`) whose churns in
//! the period are non-empty is lost, under the kind of the first; any other
//! member counts `head MRR - tail MRR` as expansion or contraction. Each
//! change to one of those three inputs takes the customer's old contribution
//! out and puts the new one in.
//!
//! Per customer, facts are logged in time order (the ledger records a late
//! fact at the customer's previous fact's time), so a customer's state at any
//! instant is a prefix of its facts, and a late fact is simply applied to
//! every book whose bound is past it.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::{Acc, Book, Entry, Flow, SUBSCRIBED, count_flow, pos};
use crate::event::Ts;

/// Index of a customer in the spans' books: dense over the customers with a
/// logged fact (most customers of a usage-heavy product have none).
pub(super) type Slot = u32;

/// One period kept incrementally. Entries carry slots, not customer indexes.
#[derive(Debug, Default)]
pub(super) struct Span {
    /// Period start (inclusive).
    pub(super) start: Ts,
    /// Period end (exclusive).
    pub(super) end: Ts,
    /// The book before `start`.
    pub(super) tail: Book,
    /// The book before `end`.
    pub(super) head: Book,
    /// Entries at or after `start` in log order; the first `applied` are
    /// before `end` (applied to `head`).
    queue: VecDeque<Entry>,
    applied: usize,
    /// The period's counters (flows and start cohort).
    pub(super) acc: Acc,
    /// Kinds of each customer's churns in the period, in order.
    churns: FxHashMap<Slot, VecDeque<u8>>,
}

impl Span {
    /// The empty period `[at, at)`, starting from an empty book.
    pub(super) fn empty(at: Ts) -> Span {
        Span {
            start: at,
            end: at,
            ..Span::default()
        }
    }

    /// The period `[start, end)` built from `entries` (in log order, with slots).
    pub(super) fn from_log(entries: impl Iterator<Item = Entry>, start: Ts, end: Ts) -> Span {
        let mut s = Span::empty(Ts::MIN);
        s.queue = entries.collect();
        s.advance(start, end);
        s
    }

    /// Takes a customer's start-cohort contribution out (`sign` -1) or puts
    /// it in (1).
    fn cohort(&mut self, slot: Slot, sign: i64) {
        let s = self.tail.get(slot);
        if !s.has(SUBSCRIBED) {
            return;
        }
        match self.churns.get(&slot).and_then(VecDeque::front) {
            Some(&kind) => {
                let k = usize::from(kind);
                self.acc.at(s.plan, s.segment, |r| {
                    r.cohort_lost[k] += sign;
                    r.cohort_lost_mrr[k] += sign * s.mrr;
                });
            }
            None => {
                let d = self.head.get(slot).mrr - s.mrr;
                self.acc.at(s.plan, s.segment, |r| {
                    r.cohort_expansion += sign * pos(d);
                    r.cohort_contraction += sign * pos(-d);
                });
            }
        }
    }

    /// `e` enters the period: applied to the end book, its flow counted.
    fn enter(&mut self, e: &Entry) {
        self.cohort(e.customer, -1);
        if let Some((before, after, flow)) = self.head.apply(e) {
            count_flow(&mut self.acc, before, after, flow, 1);
            if let Flow::Churned { kind, .. } = flow {
                let q = self.churns.entry(e.customer).or_default();
                q.push_back(kind as u8);
            }
        }
        self.cohort(e.customer, 1);
    }

    /// `e` leaves the period: applied to the start book, its flow taken back.
    fn leave(&mut self, e: &Entry) {
        self.cohort(e.customer, -1);
        if let Some((before, after, flow)) = self.tail.apply(e) {
            count_flow(&mut self.acc, before, after, flow, -1);
            if matches!(flow, Flow::Churned { .. })
                && let Some(q) = self.churns.get_mut(&e.customer)
            {
                q.pop_front();
                if q.is_empty() {
                    self.churns.remove(&e.customer);
                }
            }
        }
        self.cohort(e.customer, 1);
    }

    /// A fact just logged (its customer's latest: see the module doc).
    pub(super) fn push(&mut self, e: Entry) {
        if e.ts < self.start {
            // Every earlier fact of this customer is in both books already.
            self.cohort(e.customer, -1);
            self.tail.apply(&e);
            self.head.apply(&e);
            self.cohort(e.customer, 1);
            return;
        }
        let at = self.queue.partition_point(|x| x.ts <= e.ts);
        self.queue.insert(at, e);
        if e.ts < self.end {
            // `at` is within the applied prefix: only entries before `end` precede it.
            self.applied += 1;
            self.enter(&e);
        }
    }

    /// Moves the period to `[start, end)`. Neither bound may move back, and
    /// `start <= end`.
    pub(super) fn advance(&mut self, start: Ts, end: Ts) {
        debug_assert!(start <= end && start >= self.start && end >= self.end);
        while let Some(&e) = self.queue.get(self.applied)
            && e.ts < end
        {
            self.applied += 1;
            self.enter(&e);
        }
        self.end = end;
        while let Some(&e) = self.queue.front()
            && e.ts < start
        {
            self.queue.pop_front();
            self.applied -= 1;
            self.leave(&e);
        }
        self.start = start;
    }

    /// Starts the next period at `end` (a calendar month closed): the start
    /// book becomes the end book and the counters start from zero.
    pub(super) fn roll(&mut self) {
        self.queue.drain(..self.applied);
        self.applied = 0;
        self.tail = self.head.clone();
        self.acc = Acc::default();
        self.churns.clear();
        self.start = self.end;
    }

    /// Approximate heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.tail.heap_bytes()
            + self.head.heap_bytes()
            + self.queue.capacity() * std::mem::size_of::<Entry>()
            + self.acc.heap_bytes()
            + self.churns.capacity() * (std::mem::size_of::<(Slot, VecDeque<u8>)>() + 1)
    }
}
