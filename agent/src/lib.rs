//! Lockstep's in-cluster agent: pulls a Git repository, decrypts SOPS files and SealedSecrets,
//! materialises ExternalSecrets, and applies everything with secrets first.
//!
//! This crate holds the agent's logic; `lockstep-agent` is a thin binary over it.

pub mod admin;
pub mod api;
pub mod apply;
pub mod controller;
pub mod diff;
pub mod drift;
pub mod external;
pub mod externals;
pub mod health;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod render;
pub mod sealing;
pub mod source;
pub mod ssh;
pub mod sync;
pub mod unsealer;
pub mod webhook;
