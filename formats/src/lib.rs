//! File formats for Lockstep, free of Kubernetes, async runtimes and network clients so that
//! the `lockstep` CLI stays small and the parsers can be fuzzed in isolation.
//!
//! * [`tree`]: the ordered document tree (maps keep key order, comments are items).
//! * [`yaml`]: YAML loading with the scalar typing of `go.yaml.in/yaml/v3` (what sops uses) and a
//!   deterministic emitter.
//! * [`sops`]: the SOPS engine (age key groups, Shamir, MAC, value cipher, stores).
//! * [`sealed`]: Bitnami Sealed Secrets (hybrid RSA-OAEP + AES-GCM, scopes, keys, objects).
//! * [`secret`]: zeroizing containers (bytes, JSON objects) with redacting `Debug`.
//! * [`names`]: names of Lockstep's API shared by the agent and the CLI.

pub mod duration;
pub mod envsubst;
pub mod error;
pub mod names;
pub mod postbuild;
pub mod sealed;
pub mod secret;
pub mod sops;
pub mod tree;
pub mod yaml;

pub use error::{Error, Result};
