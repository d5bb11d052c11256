//! Periods `[start, end)` kept up to date as facts arrive and as their
//! bounds move forward, so that a report costs O(plans + segments) instead
//! of a replay of the whole log.
//!
//! [`Views`] holds the state at `end` (every fact before it), shared by
//! every kept period: the ledger's live book, but for the few customers with
//! facts at or after `end` ([`Head`]). Per period a [`Span`] holds the book
//! at its `start` (`tail`) and its counters. A fact entering the periods (`head` passes it)
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

use super::{Acc, Book, Cust, Entry, Flow, SUBSCRIBED, count_flow, pos, transition};
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
    /// it in (1), given its MRR at the end.
    fn cohort(&mut self, slot: Slot, end_mrr: i64, sign: i64) {
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
                let d = end_mrr - s.mrr;
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
    fn leave(&mut self, end: End<'_>, e: &Entry) {
        let end_mrr = end.get(e.customer).mrr;
        self.cohort(e.customer, end_mrr, -1);
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
        self.cohort(e.customer, end_mrr, 1);
    }

    /// Moves the start forward to `start` over `leaving` (the log's facts in
    /// `[self.start, start)`, in log order).
    pub(super) fn advance(
        &mut self,
        end: End<'_>,
        start: Ts,
        leaving: impl Iterator<Item = Entry>,
    ) {
        for e in leaving {
            self.leave(end, &e);
        }
        self.start = start;
    }

    /// The period `[start, end)` from the log's facts before `end` (in log
    /// order) and the state at `end`.
    pub(super) fn build(end: End<'_>, start: Ts, facts: impl Iterator<Item = Entry>) -> Span {
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
            s.cohort(slot, end.get(slot).mrr, 1);
        }
        s
    }

    /// Starts the next period at `at`, the views' end (a calendar month
    /// closed): the start book becomes the end book and the counters start
    /// from zero.
    pub(super) fn roll(&mut self, end: End<'_>, at: Ts) {
        self.tail = end.book();
        self.acc = Acc::default();
        self.churns.clear();
        self.start = at;
    }

    /// Approximate heap bytes held.
    fn heap_bytes(&self) -> usize {
        self.tail.heap_bytes()
            + self.acc.heap_bytes()
            + self.churns.capacity() * (std::mem::size_of::<(Slot, VecDeque<u8>)>() + 1)
    }
}

/// The state before the kept periods' end: the ledger's live book, but for
/// the customers with facts at or after the end (few: facts come at or
/// before the clock the periods end at), whose state before the first of
/// those is kept here. So the end costs no book of its own.
#[derive(Debug, Default)]
pub(super) struct Head {
    /// The stock before the end (its `custs` stay empty).
    stock: Book,
    /// Customers with facts at or after the end: their state before the
    /// first of them, and how many there are.
    pending: FxHashMap<Slot, (Cust, u32)>,
}

/// The state at the views' end: [`Head`] over the live book.
#[derive(Clone, Copy)]
pub(super) struct End<'a> {
    head: &'a Head,
    live: &'a Book,
}

impl<'a> End<'a> {
    pub(super) fn new(head: &'a Head, live: &'a Book) -> Self {
        End { head, live }
    }

    fn get(&self, slot: Slot) -> Cust {
        match self.head.pending.get(&slot) {
            Some(&(c, _)) => c,
            None => self.live.get(slot),
        }
    }

    /// The whole book at the end.
    fn book(&self) -> Book {
        let mut b = self.live.clone();
        for (&slot, &(c, _)) in &self.head.pending {
            b.set(slot, c);
        }
        b
    }
}

/// The kept periods: the rolling window and the open calendar month, both
/// ending at `end`.
#[derive(Debug, Default)]
pub(super) struct Views {
    /// Where every kept period ends (exclusive); `None` until first asked for.
    pub(super) end: Option<Ts>,
    /// The state before `end`.
    pub(super) head: Head,
    /// The rolling window.
    pub(super) rolling: Option<Span>,
    /// The open calendar month.
    pub(super) month: Option<Span>,
}

impl Views {
    /// The state at `end` from the whole log (in log order), and no period yet.
    pub(super) fn build(end: Ts, log: impl Iterator<Item = Entry>) -> Views {
        let mut book = Book::default();
        let mut pending: FxHashMap<Slot, (Cust, u32)> = FxHashMap::default();
        for e in log {
            if e.ts < end {
                book.apply(&e);
            } else {
                let p = pending
                    .entry(e.customer)
                    .or_insert((book.get(e.customer), 0));
                p.1 += 1;
            }
        }
        let stock = Book {
            custs: Vec::new(),
            ..book
        };
        Views {
            end: Some(end),
            head: Head { stock, pending },
            rolling: None,
            month: None,
        }
    }

    /// The stock at `end`.
    pub(super) fn end_stock(&self) -> &Book {
        &self.head.stock
    }

    /// A fact before `end` moved a customer from `before` to `after`: the
    /// end's stock follows, and every period counts it as a flow where it is
    /// in the period, as part of the start where it is before it.
    fn apply(&mut self, e: &Entry, (before, after, flow): (Cust, Cust, Flow)) {
        let Views {
            head,
            rolling,
            month,
            ..
        } = self;
        let mut spans = [rolling.as_mut(), month.as_mut()];
        for s in spans.iter_mut().flatten() {
            s.cohort(e.customer, before.mrr, -1);
        }
        head.stock.add_stock(&before, -1);
        head.stock.add_stock(&after, 1);
        for s in spans.iter_mut().flatten() {
            if e.ts < s.start {
                s.tail.apply(e);
            } else {
                s.enter(e.customer, (before, after, flow));
            }
        }
        for s in spans.iter_mut().flatten() {
            s.cohort(e.customer, after.mrr, 1);
        }
    }

    /// A fact just logged, with its slot and what it did to the live book
    /// (it is its customer's latest: see the module doc). One at or after
    /// `end` waits in the log for `end` to pass it.
    pub(super) fn push(&mut self, e: Entry, change: (Cust, Cust, Flow)) {
        let Some(end) = self.end else { return };
        if e.ts < end {
            // The customer has no fact at or after `end` (this one is its latest).
            self.apply(&e, change);
        } else {
            let p = self.head.pending.entry(e.customer).or_insert((change.0, 0));
            p.1 += 1;
        }
    }

    /// Moves `end` forward to `end` over `entering` (the log's facts in
    /// `[self.end, end)`, in log order; each is pending in the head).
    pub(super) fn advance(&mut self, end: Ts, entering: impl Iterator<Item = Entry>) {
        for e in entering {
            let Some(&(before, left)) = self.head.pending.get(&e.customer) else {
                continue;
            };
            let change = transition(before, &e);
            if left > 1 {
                let after = change.map_or(before, |(after, _)| after);
                self.head.pending.insert(e.customer, (after, left - 1));
            } else {
                self.head.pending.remove(&e.customer);
            }
            if let Some((after, flow)) = change {
                self.apply(&e, (before, after, flow));
            }
        }
        self.end = Some(end);
    }

    /// Approximate heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.head.stock.heap_bytes()
            + self.head.pending.capacity() * (std::mem::size_of::<(Slot, (Cust, u32))>() + 1)
            + [&self.rolling, &self.month]
                .iter()
                .flat_map(|s| s.iter())
                .map(|s| s.heap_bytes())
                .sum::<usize>()
    }
}
