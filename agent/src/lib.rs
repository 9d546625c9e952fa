//! Lockstep's in-cluster agent: pulls a Git repository, decrypts SOPS files and SealedSecrets,
//! materialises ExternalSecrets, and applies everything with secrets first.
//!
//! The modules are the pipeline of one sync, in order, then what runs it. Dependencies run one
//! way, down this list's layers (a test checks it):
//!
//! | layer | module | what |
//! |---|---|---|
//! | api | [`api`] | the `Sync` resource, its status vocabulary ([`api::Reason`]), labels and annotations |
//! | api | [`errors`] | one-line error reports |
//! | pipeline | [`source`] | fetch one reference with gix (HTTPS, SSH, file) into a bare cache; files under the path |
//! | pipeline | [`render`] | files → documents, still in ciphertext (plain directories now; kustomize and Helm next) |
//! | pipeline | [`secrets`] | SOPS decrypted (MAC verified) and SealedSecrets unsealed; the keys; ExternalSecrets |
//! | pipeline | [`plan`] | pure: stages, waves, what changed, what leaves Git, the prune budget |
//! | pipeline | [`apply`] | server-side apply step by step, health waits, prune |
//! | pipeline | [`sync`] | one sync through all of the above, and its dry run (`lockstep diff`) |
//! | reconciler | [`reconciler`] | the Sync, SealedSecret and ExternalSecret controllers: schedule, `dependsOn`, spec → config, status, events, drift, readiness |
//! | http | [`http`] | kubeseal's endpoints, `/v1/diff`, webhooks, `/metrics`, `/healthz`, `/readyz` |
//! | runtime | [`runtime`] | flags → the running agent: leader election, wiring, shutdown |
//!
//! `lockstep-agent` (`main.rs`) only parses the flags and calls [`runtime::run`].

pub use lockstep_api as api;
pub mod errors;

pub mod source;

pub mod render;

pub mod secrets;

pub mod plan;

pub mod apply;

pub mod sync;

pub mod reconciler;

pub mod http;

pub mod runtime;

#[cfg(test)]
mod layering;
