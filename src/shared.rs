//! State shared between the consume loop and the HTTP handlers: each live
//! partition's engine, the read view the consume loop last published for it,
//! and the service status for `/readyz`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::engine::{Engine, ReadView};

/// Readiness as seen by `/readyz`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    /// The group has assigned partitions (possibly none) at least once.
    pub assigned: bool,
    /// Partition numbers being rebuilt.
    pub rebuilding: usize,
    /// Partition numbers live.
    pub live_partitions: usize,
    /// Sum of consumer lag over live partitions.
    pub total_lag: u64,
    /// Shutdown has begun.
    pub stopping: bool,
}

/// Engine handles, their published read views and the status, shared
/// between the consume loop and HTTP. Locks are held only for one engine
/// call or to clone a handle.
#[derive(Default)]
pub struct SharedState {
    engines: RwLock<BTreeMap<i32, Arc<Mutex<Engine>>>>,
    views: RwLock<BTreeMap<i32, Arc<ReadView>>>,
    status: Mutex<Status>,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// The live engines, by partition number.
    pub fn engines(&self) -> Vec<(i32, Arc<Mutex<Engine>>)> {
        listed(&self.engines)
    }

    /// Publishes a partition's engine.
    pub fn insert_engine(&self, partition: i32, e: Arc<Mutex<Engine>>) {
        self.engines
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition, e);
    }

    /// Withdraws a partition's engine and its read view.
    pub fn remove_engine(&self, partition: i32) {
        self.engines
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&partition);
        self.views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&partition);
    }

    /// Publishes what readers see of a partition's engine (computed by the
    /// consume loop, so that no reader computes every customer under the
    /// engine's lock).
    pub fn publish_view(&self, partition: i32, view: Arc<ReadView>) {
        let engines = self.engines.read().unwrap_or_else(|e| e.into_inner());
        // A view computed just before its partition was revoked is dropped.
        if engines.contains_key(&partition) {
            self.views
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(partition, view);
        }
    }

    /// The published read views, by partition number.
    pub fn views(&self) -> Vec<(i32, Arc<ReadView>)> {
        listed(&self.views)
    }

    /// Current status.
    pub fn status(&self) -> Status {
        crate::lock(&self.status).clone()
    }

    /// Updates the status.
    pub fn update_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut crate::lock(&self.status));
    }
}

/// A copy of the handles in `m`, by partition number (the lock is held only
/// to clone them).
fn listed<T: Clone>(m: &RwLock<BTreeMap<i32, T>>) -> Vec<(i32, T)> {
    let m = m.read().unwrap_or_else(|e| e.into_inner());
    m.iter().map(|(p, v)| (*p, v.clone())).collect()
}
