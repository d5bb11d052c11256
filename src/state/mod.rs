//! Per-customer state: what the engine keeps of each customer and the
//! signals read (activity windows, seats, billing, feedback, firing alerts).
//! A leaf: it imports neither the engine nor the signals.

pub mod customer;
pub mod window;
