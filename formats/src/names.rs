//! Names of Lockstep's API that the agent and the CLI share, so that both spell them the same.

/// The API group of Lockstep's own kinds.
pub const GROUP: &str = "lockstep.dev";
/// The version of the `Sync` kind.
pub const SYNC_VERSION: &str = "v1alpha1";
/// The annotation that asks for a sync now: any new value (a time) triggers one. Set by
/// `lockstep reconcile`, by the agent's webhooks, and by hand.
pub const RECONCILE_ANNOTATION: &str = "lockstep.dev/reconcile-requested-at";
