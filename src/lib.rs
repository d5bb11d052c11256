//! churnwatch: a real-time churn and retention monitor for SaaS.
//!
//! # Layout
//! - [`event`]: the input contract of `shared/EVENTS.md`: typed events and the decoder with typed rejects.
//! - [`config`]: raw config (file + env + flags) validated into the typed config, every error at once.
//! - [`engine`]: sans-IO per-customer state, rolling windows, reorder buffer, timers and the daily sweep (its population context merged over an instance's engines in `engine::population`).
//! - [`signals`]: the alert catalogue, one pure function per alert family, and the health score.
//! - [`alert`]: alert transitions and their CloudEvents wire format with deterministic ids.
//! - [`business`]: the business-metrics ledger: billing facts in, period reports (churn, CRR, MRR movements, GRR/NRR, dunning, NPS, LTV) out.
//! - [`backtest`]: the `backtest` command: replay a JSONL file, write alerts, customers, rejects and a summary.
//! - [`generate`]: the seeded traffic generator (`churnwatch generate`) and its story labels.
//! - [`metrics`]: every Prometheus metric name and help text, and the gauges fed from engine snapshots.
//! - [`kafka`]: the Kafka edge: consumer group (at-least-once, rebuild on assign, idle ticks), outbox producer for alerts and dead letters, topic checks, `alerts --follow`.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` and the customer API.
//! - [`app`]: wires config, Kafka, engines and HTTP together; owns shutdown.
//! - [`demo`]: `churnwatch demo`: embedded broker, generated live traffic in accelerated time, the service, a live summary.

pub mod alert;
pub mod app;
pub mod backtest;
pub mod business;
pub mod config;
pub mod demo;
pub mod engine;
pub mod event;
pub mod generate;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod signals;

/// Locks a mutex, ignoring poisoning: a panic while holding one of our locks
/// leaves plain data behind, so keep going.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
