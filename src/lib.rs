//! churnwatch: a real-time churn and retention monitor for SaaS.
//!
//! # Layout
//! - [`event`]: the input contract of `shared/EVENTS.md`: typed events and the decoder with typed rejects.
//! - [`config`]: raw config (file + env + flags) validated into the typed config, every error at once.
//! - [`signals`]: the alert catalogue and one pure function per alert family.

pub mod config;
pub mod event;
pub mod signals;
