//! The agent end to end: one test binary, one module per feature, every test against the real
//! control plane (etcd, kube-apiserver, kube-controller-manager) and the real peers (sops,
//! kubeseal, moto, OpenBao, OpenSSH, `git http-backend`). Each test has its own namespace, and
//! its controllers (in-process, or the agent binary with `--watch-all-namespaces=false`) see
//! only that namespace, so the tests run side by side on one control plane; the install and the
//! demo, which are cluster-wide, bring their own. [`fixtures`] is what they share.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;

mod argocd;
mod bad_input;
mod charts;
mod crds;
mod demo;
mod depends_on;
mod deploy;
mod drift;
mod external;
mod flux;
mod health;
mod helm;
mod image;
mod kustomize;
mod operations;
mod postbuild;
mod prune;
mod sealed;
mod sops;
mod source;
mod sync;
mod tenancy;
mod waves;
mod webhooks;
