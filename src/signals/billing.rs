//! `downgrade`, `payment_failed` and `churned`: read from the billing state
//! the engine keeps (dunning, churn, last downgrade).

use serde_json::json;

use super::{Ctx, Finding, pct, r1};
use crate::event::{DAY_MS, format_ts};
use crate::state::customer::{Customer, SubStatus};

/// A plan change lowered MRR by at least `fire` (fraction); fires for `window`.
pub fn downgrade(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    let b = c.billing.as_ref()?;
    if b.status != Some(SubStatus::Active) {
        return None;
    }
    let (ts, _prev_plan, prev_mrr, new_mrr) = b.downgrade()?;
    if ctx.now >= ts + ctx.params.window || b.mrr >= prev_mrr {
        return None;
    }
    let drop = if prev_mrr > 0 {
        (prev_mrr - new_mrr) as f64 / prev_mrr as f64
    } else {
        0.0
    };
    if drop < ctx.params.fire {
        return None;
    }
    Some(Finding {
        starts_at: ts,
        summary: format!(
            "Downgraded: MRR fell {}% from {} to {} (minor units)",
            pct(drop),
            prev_mrr,
            new_mrr
        ),
        evidence: json!({
            "previous_mrr": prev_mrr,
            "mrr": new_mrr,
            "mrr_delta": new_mrr - prev_mrr,
            "drop_pct": pct(drop),
            "changed_at": format_ts(ts),
            "to_free_plan": new_mrr == 0,
        }),
    })
}

/// A dunning period is open.
pub fn payment_failed(c: &Customer, ctx: &Ctx<'_>) -> Option<Finding> {
    let b = c.billing.as_ref()?;
    let since = b.dunning_since()?;
    if b.status == Some(SubStatus::Churned) {
        return None;
    }
    let deadline = since + ctx.dunning_grace;
    Some(Finding {
        starts_at: since,
        summary: format!(
            "Payment failed ({} attempt(s)); involuntary churn at {} unless a payment succeeds",
            b.dunning_attempts(),
            format_ts(deadline)
        ),
        evidence: json!({
            "first_failed_at": format_ts(since),
            "attempts": b.dunning_attempts(),
            "reason": b.dunning_reason(),
            "mrr": b.mrr,
            "grace_days": r1(ctx.dunning_grace as f64 / DAY_MS as f64),
            "churns_at": format_ts(deadline),
        }),
    })
}

/// The customer cancelled or dunning expired.
pub fn churned(c: &Customer, _ctx: &Ctx<'_>) -> Option<Finding> {
    let b = c.billing.as_ref()?;
    if b.status != Some(SubStatus::Churned) {
        return None;
    }
    let (ts, kind) = b.churned()?;
    let how = match kind {
        crate::event::CancelKind::Voluntary => "cancelled",
        crate::event::CancelKind::Involuntary => "churned involuntarily (payment not recovered)",
    };
    Some(Finding {
        starts_at: ts,
        summary: format!("Customer {how}; {} MRR lost (minor units)", b.churned_mrr()),
        evidence: json!({
            "kind": kind.as_str(),
            "churned_at": format_ts(ts),
            "mrr_lost": b.churned_mrr(),
            "subscribed_since": (b.sub_started != crate::state::customer::NEVER).then(|| format_ts(b.sub_started)),
        }),
    })
}
