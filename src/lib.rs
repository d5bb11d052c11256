//! churnwatch: a real-time churn and retention monitor for SaaS.
//!
//! # Layout
//! - [`event`]: the input contract of `shared/EVENTS.md`: typed events and the decoder with typed rejects.
//! - [`config`]: raw config (file + env + flags) validated into the typed config, every error at once.
//! - [`signals`]: the alert catalogue and one pure function per alert family.
//! - [`engine`]: per-partition customer state, windows and alert transitions (sans-IO).
//! - [`alert`]: alert transitions and their CloudEvent encoding.
//! - [`metrics`]: every Prometheus metric name and help text, and the gauges fed from engine snapshots.
//! - [`kafka`]: the Kafka edge: consumer group (at-least-once, rebuild on assign, idle ticks), outbox producer for alerts and dead letters, topic checks, `alerts --follow`.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` and the customer API.
//! - [`app`]: wires config, Kafka, engines and HTTP together; owns shutdown.

pub mod alert;
pub mod app;
pub mod config;
pub mod engine;
pub mod event;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod signals;
