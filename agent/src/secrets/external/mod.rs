//! ExternalSecrets: values from AWS Secrets Manager, Vault/OpenBao and Pulumi ESC materialised
//! into Secrets, ESO-compatible. One [`Engine::run`] call takes a batch of
//! ExternalSecrets (every one in a sync's secrets stage, or every one due for a refresh) and
//! reads each distinct remote reference once: identical `(store, key, version)` across the
//! batch cost one read, AWS reads of the current version go 20 to a `BatchGetSecretValue`, an
//! ESC environment is opened once, and Vault logins are reused. Calls are counted per provider
//! and call in [`Calls`].
//!
//! * [`api`]: the resources; [`plan`] (pure): the items of an ExternalSecret and the Secret
//!   built from fetched values; [`values`] and [`template`] (pure): ESO's value rules and
//!   template functions.
//! * [`aws`], [`vault`], [`esc`]: the providers; [`engine`]: stores, credentials, the batch,
//!   writing Secrets and status.
//!
//! Within a sync they are materialised by [`crate::sync::externals`]; in the cluster, refreshed
//! by [`crate::reconciler::external_secrets`].

pub mod api;
pub mod aws;
pub mod engine;
pub mod esc;
pub mod plan;
pub mod template;
pub mod values;
pub mod vault;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use engine::Engine;

/// The result of one remote read.
pub enum Fetched {
    /// The value (for Vault: the secret's data as a JSON object).
    Value(values::Bytes),
    /// The remote secret does not exist.
    NotFound,
    /// The read failed (the message names the key, never a value).
    Failed(String),
}

/// Backend calls, by `(provider, call)`: what the `…_provider_api_calls` metric exports.
#[derive(Clone, Debug, Default)]
pub struct Calls(Arc<Mutex<BTreeMap<(&'static str, &'static str), u64>>>);

impl Calls {
    /// Counts one call.
    pub fn count(&self, provider: &'static str, call: &'static str) {
        let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry((provider, call)).or_default() += 1;
    }

    /// A snapshot.
    pub fn snapshot(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// All calls of one provider.
    pub fn total(&self, provider: &str) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((p, _), _)| *p == provider)
            .map(|(_, n)| n)
            .sum()
    }
}
