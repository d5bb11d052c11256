//! churnwatch: a real-time churn and retention monitor for SaaS.
//!
//! # Layout
//! - [`event`]: the input contract of `shared/EVENTS.md`: typed events and the decoder with typed rejects.
//! - [`config`]: raw config (file + env + flags) validated into the typed config, every error at once.
//! - [`signals`]: the alert catalogue and one pure function per alert family.
//! - [`business`]: the business-metrics ledger: billing facts in, period reports (churn, MRR, GRR/NRR, dunning, NPS) out.

pub mod business;
pub mod config;
pub mod event;
pub mod signals;
