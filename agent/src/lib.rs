//! Lockstep's in-cluster agent: pulls a Git repository, decrypts SOPS files and SealedSecrets,
//! materialises ExternalSecrets, and applies everything with secrets first.
//!
//! This crate holds the agent's logic; `lockstep-agent` is a thin binary over it. Only the
//! decryption-key plumbing (age identities, sealing keys) exists so far; the reconcile pipeline is tracked in the project's
//! issues (source, render, decrypt, plan, apply, prune).

pub mod api;
pub mod apply;
pub mod controller;
pub mod keys;
pub mod plan;
pub mod render;
pub mod sealing;
pub mod source;
pub mod sync;
