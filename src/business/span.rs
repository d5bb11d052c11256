//! Periods `[start, end)` kept up to date as facts arrive and as their
//! bounds move forward, so that a report costs O(plans + segments) instead
//! of a replay of the whole log.
//!
//! [`Views`] holds the book at `end` (`head`: every fact before it), shared
//! by every kept period, and per period a [`Span`]: the book at its `start`
//! (`tail`) and its counters. A fact entering the periods (`head` passes it)
//! adds its flow to each; a fact leaving one (its `tail` passes it) takes the
//! same flow back out, recomputed from the same customer state, so the
//! counters always equal a replay of the facts in the period. The facts
//! themselves stay in the ledger's log: bounds move over time ranges of it.
//!
//! The start cohort is kept in closed form per customer: a member
//! (subscribed at `start`) with churns in the period is lost, under the kind
//! of the first; any other member counts `head MRR - tail MRR` as expansion
//! or contraction. Each change to one of those inputs takes the customer's
//! old contribution out and puts the new one in.
//!
//! Per customer, facts are logged in time order (the ledger records a late
//! fact at the customer's previous fact's time), so a customer's state at any
//! instant is a prefix of its facts, and a late fact is simply applied to
//! every book whose bound is past it.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::{Acc, Book, Cust, Entry, Flow, SUBSCRIBED, count_flow, pos};
use crate::event::Ts;

/// Index of a customer in the ledger's books: dense over the customers with
/// a logged fact (most customers of a usage-heavy product have none).
pub(super) type Slot = u32;

/// One kept period's start and counters; its end is the [`Views`]' `end`.
#[derive(Debug, Default)]
pub(super) struct Span {
    /// Period start (inclusive).
    pub(super) start: Ts,
    /// The book before `start`.
    pub(super) tail: Book,
    /// The period's counters (flows and start cohort).
    pub(super) acc: Acc,
    /// Kinds of each customer's churns in the period, in order.
    churns: FxHashMap<Slot, VecDeque<u8>>,
}

impl Span {
    /// Takes a customer's start-cohort contribution out (`sign` -1) or puts
    /// it in (1).
    fn cohort(&mut self, head: &Book, slot: Slot, sign: i64) {
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
                let d = head.get(slot).mrr - s.mrr;
                self.acc.at(s.plan, s.segment, |r| {
                    r.cohort_expansion += sign * pos(d);
                    r.cohort_contraction += sign * pos(-d);
                });
            }
        }
    }

    /// A fact entered the period: its flow (what it did to the customer in
    /// `slot`) is counted.
    fn enter(&mut self, slot: Slot, (before, after, flow): (Cust, Cust, Flow)) {
        count_flow(&mut self.acc, before, after, flow, 1);
        if let Flow::Churned { kind, .. } = flow {
            let q = self.churns.entry(slot).or_default();
            q.push_back(kind as u8);
        }
    }

    /// `e` leaves the period: applied to the start book, its flow taken back.
    fn leave(&mut self, head: &Book, e: &Entry) {
        self.cohort(head, e.customer, -1);
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
        self.cohort(head, e.customer, 1);
    }

    /// Moves the start forward to `start` over `leaving` (the log's facts in
    /// `[self.start, start)`, in log order).
    pub(super) fn advance(&mut self, head: &Book, start: Ts, leaving: impl Iterator<Item = Entry>) {
        for e in leaving {
            self.leave(head, &e);
        }
        self.start = start;
    }

    /// The period `[start, end)` from the log's facts before `end` (in log
    /// order) and the book at `end`.
    pub(super) fn build(head: &Book, start: Ts, facts: impl Iterator<Item = Entry>) -> Span {
        let mut s = Span {
            start,
            ..Span::default()
        };
        let mut at: Option<Book> = None;
        for e in facts {
            if e.ts < start {
                s.tail.apply(&e);
                continue;
            }
            let book = at.get_or_insert_with(|| s.tail.clone());
            if let Some(change) = book.apply(&e) {
                s.enter(e.customer, change);
            }
        }
        for slot in 0..s.tail.custs.len() as Slot {
            s.cohort(head, slot, 1);
        }
        s
    }

    /// Starts the next period at `end` (a calendar month closed): the start
    /// book becomes the end book and the counters start from zero.
    pub(super) fn roll(&mut self, head: &Book, end: Ts) {
        self.tail = head.clone();
        self.acc = Acc::default();
        self.churns.clear();
        self.start = end;
    }

    /// Approximate heap bytes held.
    fn heap_bytes(&self) -> usize {
        self.tail.heap_bytes()
            + self.acc.heap_bytes()
            + self.churns.capacity() * (std::mem::size_of::<(Slot, VecDeque<u8>)>() + 1)
    }
}

/// The kept periods: the rolling window and the open calendar month, both
/// ending at `end`.
#[derive(Debug, Default)]
pub(super) struct Views {
    /// Where every kept period ends (exclusive); `None` until first asked for.
    pub(super) end: Option<Ts>,
    /// The book before `end`.
    pub(super) head: Book,
    /// The rolling window.
    pub(super) rolling: Option<Span>,
    /// The open calendar month.
    pub(super) month: Option<Span>,
}

impl Views {
    /// The book at `end` from the log's facts before it, and no period yet.
    pub(super) fn build(end: Ts, facts: impl Iterator<Item = Entry>) -> Views {
        let mut head = Book::default();
        for e in facts {
            head.apply(&e);
        }
        Views {
            end: Some(end),
            head,
            rolling: None,
            month: None,
        }
    }

    /// Applies a fact before `end` to the head and to every period: a flow
    /// where it is in the period, part of the start where it is before it.
    fn apply(&mut self, e: &Entry) {
        let Views {
            head,
            rolling,
            month,
            ..
        } = self;
        let mut spans = [rolling.as_mut(), month.as_mut()];
        for s in spans.iter_mut().flatten() {
            s.cohort(head, e.customer, -1);
        }
        let change = head.apply(e);
        for s in spans.iter_mut().flatten() {
            if e.ts < s.start {
                s.tail.apply(e);
            } else if let Some(change) = change {
                s.enter(e.customer, change);
            }
        }
        for s in spans.iter_mut().flatten() {
            s.cohort(head, e.customer, 1);
        }
    }

    /// A fact just logged, with its slot (its customer's latest: see the
    /// module doc). One at or after `end` waits in the log for `end` to pass it.
    pub(super) fn push(&mut self, e: Entry) {
        if self.end.is_some_and(|end| e.ts < end) {
            self.apply(&e);
        }
    }

    /// Moves `end` forward to `end` over `entering` (the log's facts in
    /// `[self.end, end)`, in log order).
    pub(super) fn advance(&mut self, end: Ts, entering: impl Iterator<Item = Entry>) {
        for e in entering {
            self.apply(&e);
        }
        self.end = Some(end);
    }

    /// Approximate heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.head.heap_bytes()
            + [&self.rolling, &self.month]
                .iter()
                .flat_map(|s| s.iter())
                .map(|s| s.heap_bytes())
                .sum::<usize>()
    }
}
