//! churnwatch: a real-time churn and retention monitor for SaaS.
//!
//! # Layout
//! - [`event`]: the input contract of `shared/EVENTS.md`: typed events and the decoder with typed rejects.
//! - [`catalogue`]: every alert, its severity and its tunables with their defaults (imports neither `config` nor `signals`).
//! - [`config`]: raw config (file + env + flags) validated into the typed config, every error at once.
//! - [`state`]: per-customer state and its rolling windows, what the engine keeps and the signals read (imports neither `engine` nor `signals`).
//! - [`engine`]: sans-IO engine over the customers' state: reorder buffer, timers, the daily sweep (its population context merged over an instance's engines in `engine::population`) and typed read models.
//! - [`signals`]: one pure function per alert family, the health score and its risk band.
//! - [`alert`]: alert transitions and their CloudEvents wire format with deterministic ids.
//! - [`business`]: the business-metrics ledger: billing facts in, period reports (churn, CRR, MRR movements, GRR/NRR, dunning, NPS, LTV) out; the rolling window and open month kept as facts arrive.
//! - [`backtest`]: the `backtest` command: replay a JSONL file, write alerts, customers, rejects and a summary.
//! - [`generate`]: the seeded traffic generator (`churnwatch generate`) and its story labels.
//! - [`metrics`]: every Prometheus metric name and help text, and the gauges fed from engine snapshots.
//! - [`kafka`]: the Kafka edge: consumer group (at-least-once, rebuild on assign, idle ticks), outbox producer for alerts and dead letters, topic checks, `alerts --follow`.
//! - [`shared`]: what the consume loop and HTTP share: each partition's engine, the read view last published for it, the status.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` and the customer API (its JSON built from the published read views and, for one customer, the engine's read model).
//! - [`app`]: wires config, Kafka, engines and HTTP together; owns shutdown.
//! - [`demo`]: `churnwatch demo`: embedded broker, generated live traffic in accelerated time, the service, a live summary.

pub mod alert;
pub mod app;
pub mod backtest;
pub mod business;
pub mod catalogue;
pub mod config;
pub mod demo;
pub mod engine;
pub mod event;
pub mod generate;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod shared;
pub mod signals;
pub mod state;

/// Locks a mutex, ignoring poisoning: a panic while holding one of our locks
/// leaves plain data behind, so keep going.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
