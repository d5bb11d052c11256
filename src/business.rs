//! STUB: replaced by the business-metrics ledger at merge.
#![allow(missing_docs)]
use serde::Serialize;

use crate::event::{CancelKind, Ts};

/// Dense customer index.
pub type CustomerIx = u32;

/// A billing or feedback fact.
#[derive(Debug, Clone)]
pub enum Fact {
    /// Joined.
    Joined {
        plan: Box<str>,
        mrr: i64,
        reactivation: bool,
    },
    /// MRR changed.
    MrrChanged {
        plan: Box<str>,
        old_mrr: i64,
        new_mrr: i64,
    },
    /// Churned.
    Churned { kind: CancelKind, mrr: i64 },
    /// Segment.
    Segment { segment: Box<str> },
    /// Dunning opened.
    DunningOpened,
    /// Dunning closed.
    DunningClosed { recovered: bool },
    /// NPS.
    Nps { score: u8 },
    /// CSAT.
    Csat { score: u8 },
    /// CES.
    Ces { score: u8 },
    /// Refund.
    Refund { amount: i64 },
}

/// Ledger.
#[derive(Debug, Default)]
pub struct Ledger {
    n: usize,
}

/// Report.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodReport {
    /// Start.
    pub start: String,
}

impl Ledger {
    /// New.
    pub fn new() -> Self {
        Self::default()
    }
    /// Record.
    pub fn record(&mut self, _ts: Ts, _c: CustomerIx, _f: Fact) {
        self.n += 1;
    }
    /// Report.
    pub fn report(&self, start: Ts, _end: Ts) -> PeriodReport {
        PeriodReport {
            start: crate::event::format_ts(start),
        }
    }
    /// Monthly.
    pub fn monthly(&self, _until: Ts) -> Vec<PeriodReport> {
        Vec::new()
    }
}
