//! Readiness: named gates that `/readyz` waits for, each opened once (a watch's first list, a
//! sealing key loaded), and the stop flag set when shutdown begins. The controllers open
//! gates; the HTTP surface reads them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What `/readyz` waits for. Cheap to clone; every clone sees the same gates.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    gates: Arc<Mutex<BTreeMap<String, bool>>>,
    stopping: Arc<AtomicBool>,
}

/// A closed gate of [`Readiness`]; [`Gate::open`] opens it.
#[derive(Debug)]
pub struct Gate {
    name: String,
    of: Readiness,
}

impl Readiness {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.gates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a closed gate named `name` (`/readyz` says what it waits for by name).
    pub fn gate(&self, name: impl Into<String>) -> Gate {
        let name = name.into();
        self.lock().insert(name.clone(), false);
        Gate {
            name,
            of: self.clone(),
        }
    }

    /// The gates not yet open.
    pub fn pending(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, open)| !**open)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Marks the process as shutting down: not ready from now on.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Whether every gate is open and the process is not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.is_stopping() && self.pending().is_empty()
    }
}

impl Gate {
    /// Opens the gate.
    pub fn open(self) {
        tracing::debug!(gate = %self.name, "ready");
        self.of.lock().insert(self.name, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_gate_opens_and_unready_when_stopping() {
        let r = Readiness::default();
        assert!(r.is_ready(), "no gates: nothing to wait for");
        let keys = r.gate("a sealing key");
        let syncs = r.gate("watch Syncs");
        assert_eq!(r.pending(), ["a sealing key", "watch Syncs"]);
        assert!(!r.is_ready());
        syncs.open();
        assert_eq!(r.pending(), ["a sealing key"]);
        keys.open();
        assert!(r.is_ready());
        r.stop();
        assert!(!r.is_ready(), "shutting down");
        assert!(r.pending().is_empty());
    }
}
