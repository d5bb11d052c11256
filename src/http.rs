//! The HTTP surface: `/healthz`, `/readyz`, `/metrics` (open) and the
//! customer API under `/api` (bearer token when `http.api_token` is set).
//! Errors are JSON `{"error": ...}` with a matching status code.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::engine::{CustomerRow, CustomerView};
use crate::event::{Ts, format_ts};
use crate::metrics::Metrics;
use crate::shared::SharedState;
use crate::signals::{r2, r3};
use crate::state::customer::SubStatus;

/// Largest `limit` accepted by `/api/at-risk` (what each read view keeps).
pub const MAX_LIMIT: usize = crate::engine::AT_RISK_KEPT;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Engines and readiness.
    pub shared: Arc<SharedState>,
    /// Prometheus registry.
    pub metrics: Metrics,
    /// Bearer token for `/api/*`, when set.
    pub api_token: Option<String>,
    /// `/readyz` threshold.
    pub ready_max_lag: u64,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    let api = Router::new()
        .route("/customers/{id}", get(customer))
        .route("/at-risk", get(at_risk))
        .route("/alerts", get(alerts))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API endpoint") })
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api", api)
        .with_state(state)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // The length leaks, the content does not.
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

async fn require_token(
    State(st): State<HttpState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &st.api_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => {}
            Some(_) => {
                return with_challenge(error(StatusCode::UNAUTHORIZED, "invalid bearer token"));
            }
            None => {
                return with_challenge(error(
                    StatusCode::UNAUTHORIZED,
                    "missing bearer token: send Authorization: Bearer <http.api_token>",
                ));
            }
        }
    }
    next.run(req).await
}

/// The token of an `Authorization` value of the Bearer scheme, whose name
/// is case-insensitive (RFC 9110 section 11.1): `bearer x` is `Bearer x`.
fn bearer_token(v: &str) -> Option<&str> {
    let (scheme, token) = v.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn with_challenge(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

async fn readyz(State(st): State<HttpState>) -> Response {
    let s = st.shared.status();
    let reason = if s.stopping {
        Some("shutting down".to_string())
    } else if !s.assigned {
        Some("waiting for a partition assignment".to_string())
    } else if s.rebuilding > 0 {
        Some(format!("rebuilding {} partition(s)", s.rebuilding))
    } else if s.total_lag > st.ready_max_lag {
        Some(format!(
            "consumer lag {} exceeds http.ready_max_lag {}",
            s.total_lag, st.ready_max_lag
        ))
    } else {
        None
    };
    let body = json!({
        "ready": reason.is_none(),
        "reason": reason,
        "live_partitions": s.live_partitions,
        "rebuilding": s.rebuilding,
        "lag": s.total_lag,
    });
    let code = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(st): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.encode(),
    )
        .into_response()
}

async fn customer(State(st): State<HttpState>, Path(id): Path<String>) -> Response {
    for (_, e) in st.shared.engines() {
        let found = crate::lock(&e).customer(&id);
        if let Some(v) = found {
            return Json(customer_json(&v)).into_response();
        }
    }
    error(StatusCode::NOT_FOUND, format!("unknown customer {id:?}"))
}

/// The body of `GET /api/customers/{id}`: the customer's row with its
/// windows, billing, feedback and firing alerts with their evidence.
pub fn customer_json(v: &CustomerView) -> serde_json::Value {
    let row = &v.row;
    let weeks: Vec<serde_json::Value> = v
        .weeks
        .iter()
        .map(|w| {
            json!({
                "from": format_ts(w.from),
                "to": format_ts(w.to),
                "events": w.events,
                "quantity": r2(w.quantity),
                "active_days": w.active_days,
                "active_users": w.active_users,
            })
        })
        .collect();
    let alerts: Vec<serde_json::Value> = v
        .alerts
        .iter()
        .map(|a| {
            json!({
                "alert": a.kind.name(),
                "starts_at": format_ts(a.starts_at),
                "summary": a.summary,
                "evidence": a.evidence,
            })
        })
        .collect();
    let score = |s: Option<(u8, Ts)>| s.map(|(s, t)| json!({"score": s, "at": format_ts(t)}));
    let mut out = serde_json::to_value(row).unwrap_or_default();
    let extra = json!({
        "as_of": format_ts(v.as_of),
        "first_seen": format_ts(v.first_seen),
        "mrr_at_risk": row.mrr_at_risk,
        "alerts": alerts,
        "windows": {"weeks": weeks, "typical_gap_days": v.typical_gap_days.map(r3)},
        "billing": v.billing.map(|b| json!({
            "status": match b.status {
                Some(SubStatus::Active) => "active",
                Some(SubStatus::Churned) => "churned",
                None => "none",
            },
            "subscribed_since": b.subscribed_since.map(format_ts),
            "dunning_since": b.dunning_since.map(format_ts),
            "dunning_attempts": b.dunning_attempts,
            "churned_at": b.churned.map(|(t, _)| format_ts(t)),
            "churn_kind": b.churned.map(|(_, k)| k.as_str()),
        })),
        "feedback": v.feedback.map(|f| json!({
            "nps": score(f.nps),
            "csat": score(f.csat),
            "ces": score(f.ces),
            "open_tickets": f.open_tickets,
        })),
    });
    if let (Some(o), serde_json::Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    out
}

/// Query of `/api/at-risk`.
#[derive(Debug, Deserialize)]
pub struct AtRiskQuery {
    /// Rows returned (default 50, at most [`MAX_LIMIT`]).
    pub limit: Option<String>,
    /// Only this plan.
    pub plan: Option<String>,
    /// Only this segment.
    pub segment: Option<String>,
}

pub use crate::engine::rank_at_risk;

async fn at_risk(State(st): State<HttpState>, Query(q): Query<AtRiskQuery>) -> Response {
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
            );
        }
    };
    // Each partition's published view holds its customers at risk, ranked.
    let mut rows: Vec<CustomerRow> = Vec::new();
    for (_, v) in st.shared.views() {
        let matching = v.at_risk.iter().filter(|r| {
            q.plan
                .as_deref()
                .is_none_or(|p| r.plan.as_deref() == Some(p))
                && q.segment
                    .as_deref()
                    .is_none_or(|s| r.segment.as_deref() == Some(s))
        });
        rows.extend(matching.take(limit).cloned());
    }
    rank_at_risk(&mut rows);
    rows.truncate(limit);
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("mrr_at_risk".into(), r.mrr_at_risk.into());
            }
            v
        })
        .collect();
    Json(json!({"customers": rows})).into_response()
}

/// Query of `/api/alerts`.
#[derive(Debug, Deserialize)]
pub struct AlertsQuery {
    /// Only `firing` is supported (the default).
    pub status: Option<String>,
}

async fn alerts(State(st): State<HttpState>, Query(q): Query<AlertsQuery>) -> Response {
    if q.status.as_deref().is_some_and(|s| s != "firing") {
        return error(
            StatusCode::BAD_REQUEST,
            "status must be `firing`; resolved alerts are on the alert topic (churnwatch alerts --from-beginning)",
        );
    }
    let mut firing = Vec::new();
    for (_, v) in st.shared.views() {
        firing.extend(v.firing.iter().cloned());
    }
    // Each engine sorts its own; merged, the order must not depend on which
    // partitions this instance holds.
    crate::engine::sort_firing(&mut firing);
    let mut out = Vec::new();
    for a in firing {
        match serde_json::from_str::<serde_json::Value>(&a.to_json()) {
            Ok(v) => out.push(v.get("data").cloned().unwrap_or(v)),
            Err(err) => tracing::error!(error = %err, "alert JSON did not parse"),
        }
    }
    Json(json!({"alerts": out})).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in ["Bearer tok", "bearer tok", "BEARER  tok ", " bEaReR tok"] {
            assert_eq!(super::bearer_token(v), Some("tok"), "{v:?}");
        }
        for v in ["Basic tok", "Bearertok", "tok", ""] {
            assert_eq!(super::bearer_token(v), None, "{v:?}");
        }
    }

    use super::*;

    #[test]
    fn constant_time_eq_matches_only_equal_bytes() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-123", b"secret-token-124"));
        assert!(!constant_time_eq(b"secret", b"secret-token-123"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn at_risk_orders_by_mrr_at_risk_then_health() {
        use crate::signals::health::Risk;
        let row = |id: &str, mrr_at_risk, health_score| CustomerRow {
            customer_id: id.into(),
            health_score,
            risk: Risk::High,
            firing: vec![],
            plan: None,
            segment: None,
            mrr: None,
            mrr_at_risk,
            lifecycle: crate::engine::Lifecycle::AtRisk,
            currency: "USD".into(),
            last_seen: None,
            breakdown: Default::default(),
        };
        let mut rows = vec![row("a", 100, 50), row("b", 900, 30), row("c", 100, 10)];
        rank_at_risk(&mut rows);
        let ids: Vec<&str> = rows.iter().map(|r| &*r.customer_id).collect();
        assert_eq!(ids, ["b", "c", "a"]);
    }
}
