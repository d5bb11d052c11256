//! churnwatch: a real-time churn and retention monitor for SaaS.
//!
//! # Layout
//! - [`event`]: the input contract of `shared/EVENTS.md`: typed events and the decoder with typed rejects.
//! - [`config`]: raw config (file + env + flags) validated into the typed config, every error at once.
//! - [`signals`]: the alert catalogue and one pure function per alert family.
//! - [`generate`]: the seeded traffic generator (`churnwatch generate`) and its story labels.

pub mod config;
pub mod event;
pub mod generate;
pub mod signals;
