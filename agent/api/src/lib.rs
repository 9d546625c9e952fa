//! What users write and read (the agent's `api` module; the CLI's `lockstep import` reads it too): the `Sync` custom resource (`lockstep.dev/v1alpha1`), its status
//! vocabulary, the labels and annotations the agent puts on objects, and the CRDs generated from
//! the types. No I/O; every other module may use it.

pub mod argocd;
pub mod conditions;
pub mod crd;
pub mod flux;
mod sync;

pub use conditions::Reason;
pub use sync::*;

/// The label the agent puts on every object it applies: the owning Sync, `namespace.name`.
pub const OWNER_LABEL: &str = "lockstep.dev/sync";
/// `lockstep.dev/prune: disabled` keeps an object when it leaves Git.
pub const PRUNE_ANNOTATION: &str = "lockstep.dev/prune";
/// The annotations that set an object's wave within its stage, Lockstep's first.
pub const WAVE_ANNOTATIONS: [&str; 2] = ["lockstep.dev/sync-wave", "argocd.argoproj.io/sync-wave"];
/// The annotation that asks for a sync now (any new value, e.g. a time), shared with the CLI.
pub use lockstep_formats::names::RECONCILE_ANNOTATION;
/// The field manager of every object a sync applies.
pub const FIELD_MANAGER: &str = "lockstep";
