//! The billing state machine: how a billing event, or a dunning that
//! outlived its grace, moves a customer's [`Billing`] (subscribed, in
//! dunning, churned, reactivated) and the business facts each move records.

use super::Engine;
use crate::business::Fact;
use crate::event::{CancelKind, EventKind, Ts};
use crate::state::customer::{Billing, SubStatus};

impl Engine {
    /// Applies billing event `kind` at `ts` to customer `ix` ([`apply`]) and
    /// records its facts in the ledger.
    pub(super) fn apply_billing(&mut self, ix: u32, ts: Ts, kind: EventKind) {
        let plan_id = match &kind {
            EventKind::SubscriptionStarted { plan, .. } | EventKind::PlanChanged { plan, .. } => {
                Some(self.plans.id(plan))
            }
            EventKind::SubscriptionRenewed {
                plan: Some(plan), ..
            } => Some(self.plans.id(plan)),
            _ => None,
        };
        let plans = &self.plans;
        let name = |id: u16| -> Box<str> { plans.name(id).unwrap_or("none").into() };
        let c = &mut self.customers[ix as usize];
        let b: &mut Billing = c.billing.get_or_insert_with(Default::default);
        for f in apply(b, ts, kind, plan_id, name) {
            self.ledger.record(ts, ix, f);
        }
    }
}

/// Moves `b` by billing event `kind` at `ts` (`plan_id`: the event's plan,
/// interned; `name`: the name of a plan id), returning the facts the move records.
fn apply(
    b: &mut Billing,
    ts: Ts,
    kind: EventKind,
    plan_id: Option<u16>,
    name: impl Fn(u16) -> Box<str>,
) -> Vec<Fact> {
    let mut facts: Vec<Fact> = Vec::new();
    // A churned customer that starts or pays again is reactivated.
    let rejoin = |b: &mut Billing, facts: &mut Vec<Fact>, plan: u16, mrr: i64| {
        let reactivation = b.status == Some(SubStatus::Churned);
        b.status = Some(SubStatus::Active);
        b.plan = plan;
        b.mrr = mrr;
        b.sub_started = ts;
        b.set_dunning_since(None);
        b.set_dunning_attempts(0);
        b.set_downgrade(None);
        if reactivation {
            b.clear_churned();
            b.set_reactivated_at(ts);
        }
        facts.push(Fact::Joined {
            plan: name(plan),
            mrr,
            reactivation,
        });
    };
    match kind {
        EventKind::SubscriptionStarted { mrr, .. } => {
            let plan = plan_id.unwrap_or(0);
            if b.status == Some(SubStatus::Active) {
                change_mrr(b, &mut facts, plan, mrr, name(plan));
            } else {
                rejoin(b, &mut facts, plan, mrr);
            }
        }
        EventKind::SubscriptionRenewed { mrr, .. } => {
            let plan = plan_id.unwrap_or(b.plan);
            let mrr = mrr.unwrap_or(b.mrr);
            match b.status {
                Some(SubStatus::Active) => change_mrr(b, &mut facts, plan, mrr, name(plan)),
                _ => rejoin(b, &mut facts, plan, mrr),
            }
        }
        EventKind::PlanChanged {
            mrr, previous_mrr, ..
        } => {
            let plan = plan_id.unwrap_or(0);
            if b.status == Some(SubStatus::Active) {
                let old = b.mrr;
                let prev_for_downgrade = previous_mrr.unwrap_or(old);
                let old_plan = b.plan;
                if mrr < prev_for_downgrade {
                    b.set_downgrade(Some((ts, old_plan, prev_for_downgrade, mrr)));
                } else if b.downgrade().is_some_and(|(_, _, prev, _)| mrr >= prev) {
                    b.set_downgrade(None);
                }
                if mrr != old || plan != old_plan {
                    facts.push(Fact::MrrChanged {
                        plan: name(plan),
                        old_mrr: old,
                        new_mrr: mrr,
                    });
                }
                b.mrr = mrr;
                b.plan = plan;
            } else {
                rejoin(b, &mut facts, plan, mrr);
            }
        }
        EventKind::PaymentFailed {
            mrr,
            reason,
            attempt,
        } => {
            if b.status == Some(SubStatus::Active) {
                if b.dunning_since().is_none() {
                    b.set_dunning_since(Some(ts));
                    b.set_dunning_attempts(0);
                    facts.push(Fact::DunningOpened);
                }
                let n = b
                    .dunning_attempts()
                    .saturating_add(1)
                    .max(attempt.unwrap_or(0));
                b.set_dunning_attempts(n);
                b.note_dunning_reason(reason);
                if b.mrr == 0 {
                    if let Some(m) = mrr {
                        b.mrr = m;
                    }
                }
            }
        }
        EventKind::PaymentSucceeded { .. } => match b.status {
            Some(SubStatus::Active) => {
                if b.take_dunning_since().is_some() {
                    b.set_dunning_attempts(0);
                    facts.push(Fact::DunningClosed { recovered: true });
                }
            }
            Some(SubStatus::Churned) => {
                let (plan, mrr) = (b.plan, b.churned_mrr());
                rejoin(b, &mut facts, plan, mrr);
            }
            None => {}
        },
        EventKind::RefundIssued { amount } => facts.push(Fact::Refund {
            amount: amount.unwrap_or(0),
        }),
        EventKind::SubscriptionCancelled { cancel_kind, .. } => {
            if b.status != Some(SubStatus::Churned) {
                churn(b, ts, cancel_kind, &mut facts);
            }
        }
        _ => {}
    }
    facts
}

/// A dunning of `b` open since more than `grace` at `at` is an involuntary
/// churn at the instant its grace ended: the facts that records.
pub(super) fn expire_dunning(b: &mut Billing, at: Ts, grace: Ts) -> Vec<Fact> {
    let mut facts = Vec::new();
    if let Some(since) = b.dunning_since() {
        if b.status == Some(SubStatus::Active) && since + grace <= at {
            churn(b, since + grace, CancelKind::Involuntary, &mut facts);
        }
    }
    facts
}

/// A subscribed customer's plan or MRR changed (without a downgrade record).
fn change_mrr(b: &mut Billing, facts: &mut Vec<Fact>, plan: u16, mrr: i64, plan_name: Box<str>) {
    if b.mrr != mrr || b.plan != plan {
        facts.push(Fact::MrrChanged {
            plan: plan_name,
            old_mrr: b.mrr,
            new_mrr: mrr,
        });
        b.mrr = mrr;
        b.plan = plan;
    }
}

/// `b` churns at `ts` (closing any dunning as not recovered).
fn churn(b: &mut Billing, ts: Ts, kind: CancelKind, facts: &mut Vec<Fact>) {
    let had_sub = b.status == Some(SubStatus::Active);
    if b.take_dunning_since().is_some() {
        facts.push(Fact::DunningClosed { recovered: false });
    }
    b.set_dunning_attempts(0);
    b.status = Some(SubStatus::Churned);
    b.set_churned(ts, kind, b.mrr);
    if had_sub {
        facts.push(Fact::Churned { kind, mrr: b.mrr });
    }
}

#[cfg(test)]
mod tests {
    use super::{apply, expire_dunning};
    use crate::business::Fact;
    use crate::event::{CancelKind, EventKind};
    use crate::state::customer::{Billing, SubStatus};

    /// The machine on its own, without an engine: a failed payment opens
    /// dunning; a dunning past its grace is an involuntary churn at the end
    /// of the grace (not at the timer); a payment after it reactivates at
    /// the churned MRR.
    #[test]
    fn dunning_past_its_grace_churns_and_a_payment_reactivates() {
        let name = |_: u16| -> Box<str> { "pro".into() };
        let mut b = Billing::default();
        let started = EventKind::SubscriptionStarted {
            plan: "pro".into(),
            mrr: 500,
        };
        let joined = Fact::Joined {
            plan: "pro".into(),
            mrr: 500,
            reactivation: false,
        };
        assert_eq!(apply(&mut b, 0, started, Some(1), name), [joined]);
        let failed = EventKind::PaymentFailed {
            mrr: None,
            reason: None,
            attempt: None,
        };
        assert_eq!(apply(&mut b, 10, failed, None, name), [Fact::DunningOpened]);
        assert_eq!(b.dunning_since(), Some(10));
        assert!(expire_dunning(&mut b, 14, 5).is_empty(), "within its grace");
        let churned = Fact::Churned {
            kind: CancelKind::Involuntary,
            mrr: 500,
        };
        let closed = Fact::DunningClosed { recovered: false };
        assert_eq!(expire_dunning(&mut b, 20, 5), [closed, churned]);
        assert_eq!(b.status, Some(SubStatus::Churned));
        assert_eq!(b.churned(), Some((15, CancelKind::Involuntary)));
        let paid = EventKind::PaymentSucceeded { amount: None };
        let rejoined = Fact::Joined {
            plan: "pro".into(),
            mrr: 500,
            reactivation: true,
        };
        assert_eq!(apply(&mut b, 30, paid, None, name), [rejoined]);
        assert_eq!(
            (b.status, b.reactivated_at()),
            (Some(SubStatus::Active), Some(30))
        );
    }
}
