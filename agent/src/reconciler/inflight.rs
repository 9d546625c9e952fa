//! Reconciles in progress, by `namespace/name`: what each started from (the Sync's generation
//! and reconcile request), and how to cut its health waits short when the Sync asks for
//! something else or the agent shuts down.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use kube::ResourceExt;

use crate::api::{RECONCILE_ANNOTATION, Sync};

/// A reconcile in progress.
struct InFlight {
    generation: Option<i64>,
    requested: Option<String>,
    cut: tokio::sync::watch::Sender<Option<String>>,
}

/// The reconciles in progress.
#[derive(Default)]
pub struct Registry(Mutex<HashMap<String, InFlight>>);

/// A registered reconcile; unregisters it when dropped.
pub struct Registration<'a> {
    registry: &'a Registry,
    key: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}

fn key(s: &Sync) -> String {
    format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any())
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, InFlight>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a reconcile of `s` that `cut` interrupts.
    pub fn register(&self, s: &Sync, cut: tokio::sync::watch::Sender<Option<String>>) -> Registration<'_> {
        let key = key(s);
        self.lock().insert(
            key.clone(),
            InFlight {
                generation: s.metadata.generation,
                requested: s.annotations().get(RECONCILE_ANNOTATION).cloned(),
                cut,
            },
        );
        Registration { registry: self, key }
    }

    /// Cuts short the health wait of `s`'s reconcile in progress when `s` now asks for
    /// something else: a new generation of its spec, or a new reconcile request.
    pub fn interrupt_if_changed(&self, s: &Sync) {
        let inflight = self.lock();
        let Some(f) = inflight.get(&key(s)) else {
            return;
        };
        let requested = s.annotations().get(RECONCILE_ANNOTATION);
        let reason = if f.generation != s.metadata.generation {
            format!(
                "the Sync's spec changed (generation {})",
                s.metadata.generation.unwrap_or_default()
            )
        } else if f.requested.as_ref() != requested {
            "a reconcile was requested".to_owned()
        } else {
            return;
        };
        f.cut.send_replace(Some(reason));
    }

    /// Cuts short every health wait in progress (shutdown).
    pub fn interrupt_all(&self, reason: &str) {
        for f in self.lock().values() {
            f.cut.send_replace(Some(reason.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_generation_or_request_cuts_the_wait_and_nothing_else_does() {
        let reg = Registry::default();
        let mut s = Sync::new("app", crate::api::SyncSpec::default());
        s.metadata.namespace = Some("ns".into());
        s.metadata.generation = Some(1);
        let (tx, rx) = tokio::sync::watch::channel(None);
        let r = reg.register(&s, tx);
        reg.interrupt_if_changed(&s);
        assert_eq!(*rx.borrow(), None, "a status write is no reason");
        s.metadata.annotations = Some([(RECONCILE_ANNOTATION.to_owned(), "now".to_owned())].into());
        reg.interrupt_if_changed(&s);
        assert_eq!(rx.borrow().as_deref(), Some("a reconcile was requested"));
        s.metadata.generation = Some(2);
        reg.interrupt_if_changed(&s);
        assert_eq!(
            rx.borrow().as_deref(),
            Some("the Sync's spec changed (generation 2)")
        );
        drop(r);
        assert!(reg.lock().is_empty(), "unregistered when done");
    }
}
