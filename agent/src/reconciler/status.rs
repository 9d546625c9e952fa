//! A Sync's status after each attempt (pure, `now` given): kstatus conditions (`Ready`,
//! `Reconciling`, `Stalled`, `Healthy`), revisions, inventory, history and the failure count,
//! decided from the previous status, what the attempt did and the health read after it.

use crate::api::conditions::{FALSE, HEALTHY, READY, RECONCILING, STALLED, TRUE, UNKNOWN};
use crate::api::{Condition, HistoryEntry, InventoryEntry, RECONCILE_ANNOTATION, Reason, Sync, SyncStatus};
use crate::apply::{self, health::Health};
use crate::plan::ObjectId;
use crate::sync;

use super::depends_on::Blocked;

/// History entries kept, newest first.
pub const HISTORY: usize = 5;

/// A reading of the inventory's health.
pub type HealthReading = Result<Vec<(ObjectId, Health)>, apply::Error>;

/// What one attempt did.
#[derive(Debug)]
pub enum Attempt<'a> {
    /// The revision was applied (or found unchanged).
    Applied(&'a sync::Outcome),
    /// The attempt failed.
    Failed {
        /// Why.
        reason: Reason,
        /// The error's message (names files, objects and fields, never values).
        message: String,
        /// The revision it tried, when the fetch got that far.
        revision: Option<String>,
    },
}

/// A condition of type `type_` for `generation`, keeping the previous one's transition time
/// when its status did not change.
pub fn condition(
    prev: &[Condition],
    type_: &str,
    status: &str,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    let same = prev
        .iter()
        .find(|c| c.type_ == type_)
        .filter(|c| c.status == status);
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message: message.into(),
        last_transition_time: same.map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone()),
        observed_generation: generation,
    }
}

/// `Ready`, `Reconciling` and `Stalled` for an attempt that ended with `reason`: ready when it
/// succeeded; otherwise not ready, and stalled (not reconciling) when a retry cannot help.
fn readiness(
    prev: &[Condition],
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    if reason == Reason::Succeeded {
        return vec![
            condition(prev, READY, TRUE, reason, message, generation, now),
            condition(prev, RECONCILING, FALSE, reason, "", generation, now),
            condition(prev, STALLED, FALSE, reason, "", generation, now),
        ];
    }
    let stalled = reason.stalls();
    vec![
        condition(prev, READY, FALSE, reason, message, generation, now),
        condition(
            prev,
            RECONCILING,
            if stalled { FALSE } else { TRUE },
            reason,
            "",
            generation,
            now,
        ),
        condition(
            prev,
            STALLED,
            if stalled { TRUE } else { FALSE },
            reason,
            if stalled { message } else { "" },
            generation,
            now,
        ),
    ]
}

/// The `Healthy` condition of a status, if it has one.
pub fn healthy_condition(st: &SyncStatus) -> Option<&Condition> {
    st.conditions.iter().find(|c| c.type_ == HEALTHY)
}

/// Whether the objects are still rolling out (`Healthy` is `Unknown`).
pub fn progressing(st: &SyncStatus) -> bool {
    healthy_condition(st).is_some_and(|c| c.status == UNKNOWN)
}

/// Sets (or replaces) the `Healthy` condition from a health reading.
pub fn set_healthy(
    st: &mut SyncStatus,
    prev: &[Condition],
    health: &HealthReading,
    generation: Option<i64>,
    now: &str,
) {
    let (status, reason, msg) = match health {
        Ok(all) => apply::health::condition_of(all),
        Err(e) => (UNKNOWN, Reason::HealthCheckFailed, format!("reading health: {e}")),
    };
    st.conditions.retain(|c| c.type_ != HEALTHY);
    st.conditions
        .push(condition(prev, HEALTHY, status, reason, &msg, generation, now));
}

/// The status of a Sync held back by its dependencies: `Ready` `False` with
/// `DependencyNotReady` (still reconciling) or `DependencyCycle` (stalled); revisions,
/// inventory, history, failures and health unchanged.
pub fn blocked_status(prev: &SyncStatus, b: &Blocked, generation: Option<i64>, now: &str) -> SyncStatus {
    let (reason, msg) = match b {
        Blocked::Waiting(m) => (Reason::DependencyNotReady, m),
        Blocked::Cycle(m) => (Reason::DependencyCycle, m),
    };
    let mut st = prev.clone();
    st.conditions = readiness(&prev.conditions, reason, msg, generation, now);
    st.conditions.extend(healthy_condition(prev).cloned());
    st
}

/// Adds an attempt to the history, newest first. A repeat of the newest entry (same revision,
/// same result: a poll that found nothing new) only moves its time and keeps its counts of the
/// attempt that did the work, so the history lists distinct events.
fn record(history: &mut Vec<HistoryEntry>, e: HistoryEntry) {
    match history.first_mut() {
        Some(h) if h.revision == e.revision && h.result == e.result => h.time = e.time,
        _ => history.insert(0, e),
    }
    history.truncate(HISTORY);
}

/// The status after an attempt at `now` (RFC 3339), from the status it started from: the
/// generation and reconcile request handled; on success the revision, inventory and a reset
/// failure count, with `Healthy` from `health`; on failure the reason, one more failure when
/// it backs off, and `Healthy` as a failed wait found it or as it was.
pub fn next_status(
    prev: &SyncStatus,
    s: &Sync,
    attempt: &Attempt<'_>,
    health: Option<&HealthReading>,
    now: &str,
) -> SyncStatus {
    let generation = s.metadata.generation;
    let mut st = prev.clone();
    st.observed_generation = generation;
    st.last_handled_reconcile_at = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RECONCILE_ANNOTATION))
        .cloned();
    match attempt {
        Attempt::Applied(out) => {
            st.failures = 0;
            let rev = out.revision();
            st.last_applied_revision = Some(rev.clone());
            st.last_attempted_revision = Some(rev.clone());
            st.last_applied_chart.clone_from(&out.chart);
            st.last_applied_inputs.clone_from(&out.inputs);
            st.inventory = out
                .inventory
                .entries
                .values()
                .map(|(id, h)| InventoryEntry {
                    api_version: id.api_version.clone(),
                    kind: id.kind.clone(),
                    namespace: id.namespace.clone(),
                    name: id.name.clone(),
                    hash: h.clone(),
                })
                .collect();
            let msg = format!("Applied revision {rev}");
            st.conditions = readiness(&prev.conditions, Reason::Succeeded, &msg, generation, now);
            match health {
                Some(h) => set_healthy(&mut st, &prev.conditions, h, generation, now),
                None => st.conditions.extend(healthy_condition(prev).cloned()),
            }
            record(
                &mut st.history,
                HistoryEntry {
                    revision: rev,
                    time: now.to_owned(),
                    result: Reason::Succeeded.as_str().into(),
                    applied: out.report.applied.len(),
                    pruned: out.pruned.len(),
                },
            );
        }
        Attempt::Failed {
            reason,
            message,
            revision,
        } => {
            if revision.is_some() {
                st.last_attempted_revision.clone_from(revision);
            }
            if reason.backs_off() {
                st.failures = prev.failures.saturating_add(1);
            }
            st.conditions = readiness(&prev.conditions, *reason, message, generation, now);
            // The objects' health: what a failed wait found, or as it was.
            if *reason == Reason::HealthCheckFailed {
                st.conditions.push(condition(
                    &prev.conditions,
                    HEALTHY,
                    FALSE,
                    *reason,
                    message,
                    generation,
                    now,
                ));
            } else {
                st.conditions.extend(healthy_condition(prev).cloned());
            }
            record(
                &mut st.history,
                HistoryEntry {
                    revision: st.last_attempted_revision.clone().unwrap_or_default(),
                    time: now.to_owned(),
                    result: reason.as_str().into(),
                    applied: 0,
                    pruned: 0,
                },
            );
        }
    }
    st
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::apply::health::Status;
    use crate::plan::Inventory;

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:01:00Z";

    fn sync() -> Sync {
        let mut s = Sync::new("app", crate::api::SyncSpec::default());
        s.metadata.generation = Some(4);
        s.metadata.annotations = Some([(RECONCILE_ANNOTATION.to_owned(), "req-2".to_owned())].into());
        s
    }

    fn id(name: &str) -> ObjectId {
        ObjectId {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn outcome() -> sync::Outcome {
        let mut inventory = Inventory::default();
        inventory.entries.insert(id("web").key(), (id("web"), "h".into()));
        sync::Outcome {
            commit: "c2".into(),
            reference: "main".into(),
            report: apply::Report {
                applied: vec![id("web")],
                ..apply::Report::default()
            },
            pruned: Vec::new(),
            inventory,
            duration: std::time::Duration::from_secs(1),
            skipped: false,
            chart: None,
            inputs: None,
        }
    }

    /// A Sync that last applied `main@sha1:c1`, Ready and Healthy since `T0`, with `failures`.
    fn ready_before(failures: u32) -> SyncStatus {
        let s = sync();
        let ok = Attempt::Applied(&outcome());
        let mut st = next_status(&SyncStatus::default(), &s, &ok, Some(&Ok(vec![])), T0);
        st.last_applied_revision = Some("main@sha1:c1".into());
        st.history[0].revision = "main@sha1:c1".into();
        st.failures = failures;
        st
    }

    fn failed(reason: Reason) -> Attempt<'static> {
        Attempt::Failed {
            reason,
            message: format!("{reason} happened"),
            revision: Some("main@sha1:c2".into()),
        }
    }

    /// `(status, reason)` of a condition type.
    fn cond(st: &SyncStatus, t: &str) -> (String, String) {
        let c = st.conditions.iter().find(|c| c.type_ == t).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn every_outcome_gives_the_conditions_kstatus_expects() {
        let current = Ok(vec![(
            id("web"),
            Health {
                status: Status::Current,
                message: "ok".into(),
            },
        )]);
        let rolling = Ok(vec![(
            id("web"),
            Health {
                status: Status::InProgress,
                message: "1/2".into(),
            },
        )]);
        let out = outcome();
        // (case, attempt, health, Ready, Reconciling, Stalled, Healthy, failures, history result)
        type Row<'a> = (
            &'a str,
            Attempt<'a>,
            Option<&'a HealthReading>,
            [&'a str; 4],
            u32,
            &'a str,
        );
        let table: Vec<Row<'_>> = vec![
            (
                "applied, current",
                Attempt::Applied(&out),
                Some(&current),
                ["True", "False", "False", "True"],
                0,
                "Succeeded",
            ),
            (
                "applied, rolling out",
                Attempt::Applied(&out),
                Some(&rolling),
                ["True", "False", "False", "Unknown"],
                0,
                "Succeeded",
            ),
            (
                "source failed",
                failed(Reason::SourceFailed),
                None,
                ["False", "True", "False", "True"],
                3,
                "SourceFailed",
            ),
            (
                "apply failed",
                failed(Reason::ApplyFailed),
                None,
                ["False", "True", "False", "True"],
                3,
                "ApplyFailed",
            ),
            (
                "timed out: transient",
                failed(Reason::TimedOut),
                None,
                ["False", "True", "False", "True"],
                3,
                "TimedOut",
            ),
            (
                "render failed: stalls",
                failed(Reason::RenderFailed),
                None,
                ["False", "False", "True", "True"],
                3,
                "RenderFailed",
            ),
            (
                "unsupported: stalls",
                failed(Reason::Unsupported),
                None,
                ["False", "False", "True", "True"],
                3,
                "Unsupported",
            ),
            (
                "budget: stalls",
                failed(Reason::PruneBudgetExceeded),
                None,
                ["False", "False", "True", "True"],
                3,
                "PruneBudgetExceeded",
            ),
            (
                "wait failed",
                failed(Reason::HealthCheckFailed),
                None,
                ["False", "True", "False", "False"],
                3,
                "HealthCheckFailed",
            ),
            (
                "wait canceled: no backoff",
                failed(Reason::HealthCheckCanceled),
                None,
                ["False", "True", "False", "True"],
                2,
                "HealthCheckCanceled",
            ),
        ];
        for (case, attempt, health, [ready, reconciling, stalled, healthy], failures, result) in table {
            let prev = ready_before(2);
            let st = next_status(&prev, &sync(), &attempt, health, T1);
            assert_eq!(cond(&st, READY).0, ready, "{case}: Ready");
            assert_eq!(cond(&st, RECONCILING).0, reconciling, "{case}: Reconciling");
            assert_eq!(cond(&st, STALLED).0, stalled, "{case}: Stalled");
            assert_eq!(cond(&st, HEALTHY).0, healthy, "{case}: Healthy");
            assert_eq!(st.failures, failures, "{case}: failures");
            assert_eq!(st.history[0].result, result, "{case}: history");
            assert_eq!(st.observed_generation, Some(4), "{case}");
            assert_eq!(st.last_handled_reconcile_at.as_deref(), Some("req-2"), "{case}");
            if let Attempt::Failed { reason, .. } = &attempt {
                assert_eq!(cond(&st, READY).1, reason.as_str(), "{case}: reason");
                assert_eq!(
                    st.last_applied_revision.as_deref(),
                    Some("main@sha1:c1"),
                    "{case}: kept"
                );
                assert_eq!(
                    st.last_attempted_revision.as_deref(),
                    Some("main@sha1:c2"),
                    "{case}"
                );
                assert_eq!(
                    st.inventory, prev.inventory,
                    "{case}: the last good inventory stays"
                );
                let stalled_msg = &st.conditions.iter().find(|c| c.type_ == STALLED).unwrap().message;
                assert_eq!(
                    stalled_msg.is_empty(),
                    !reason.stalls(),
                    "{case}: Stalled message"
                );
            } else {
                assert_eq!(
                    st.last_applied_revision.as_deref(),
                    Some("main@sha1:c2"),
                    "{case}"
                );
                assert_eq!(st.inventory.len(), 1, "{case}");
            }
        }
    }

    #[test]
    fn a_count_back_at_zero_is_written_so_the_merge_patch_resets_it() {
        let st = next_status(&ready_before(4), &sync(), &Attempt::Applied(&outcome()), None, T1);
        assert_eq!(st.failures, 0);
        let patch = serde_json::to_value(&st).unwrap();
        assert_eq!(
            patch["failures"], 0,
            "a field left out of a merge patch keeps its old value"
        );
    }

    #[test]
    fn transition_times_move_only_when_a_status_changes() {
        let prev = ready_before(0);
        let again = next_status(
            &prev,
            &sync(),
            &Attempt::Applied(&outcome()),
            Some(&Ok(vec![])),
            T1,
        );
        let ready = again.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.last_transition_time, T0, "still True: the time stays");
        let failed = next_status(&prev, &sync(), &failed(Reason::ApplyFailed), None, T1);
        let ready = failed.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.last_transition_time, T1, "True → False: the time moves");
    }

    #[test]
    fn the_history_lists_distinct_attempts_newest_first_and_is_bounded() {
        let mut st = ready_before(0);
        for i in 0..3 {
            st = next_status(
                &st,
                &sync(),
                &failed(Reason::SourceFailed),
                None,
                &format!("2026-01-01T00:0{}:00Z", i + 2),
            );
        }
        assert_eq!(st.history.len(), 2, "a repeat moves the newest entry's time");
        assert_eq!(st.history[0].time, "2026-01-01T00:04:00Z");
        assert_eq!(st.failures, 3, "but every failure counts");
        for i in 0..10 {
            st = next_status(&st, &sync(), &failed(Reason::ApplyFailed), None, T1);
            st = next_status(
                &st,
                &sync(),
                &failed(if i % 2 == 0 {
                    Reason::SourceFailed
                } else {
                    Reason::TimedOut
                }),
                None,
                T1,
            );
        }
        assert_eq!(st.history.len(), HISTORY);
    }

    #[test]
    fn a_blocked_sync_keeps_everything_but_its_readiness() {
        let prev = ready_before(1);
        let waiting = blocked_status(
            &prev,
            &Blocked::Waiting("dependency ns/infra is not ready".into()),
            Some(4),
            T1,
        );
        assert_eq!(
            cond(&waiting, READY),
            ("False".into(), "DependencyNotReady".into())
        );
        assert_eq!(cond(&waiting, STALLED).0, "False");
        assert_eq!(cond(&waiting, HEALTHY).0, "True", "health as it was");
        assert_eq!((waiting.failures, &waiting.history), (1, &prev.history));
        let cycle = blocked_status(&prev, &Blocked::Cycle("a → b → a".into()), Some(4), T1);
        assert_eq!(cond(&cycle, STALLED), ("True".into(), "DependencyCycle".into()));
        assert_eq!(cond(&cycle, RECONCILING).0, "False");
    }

    #[test]
    fn a_health_reading_that_fails_leaves_health_unknown() {
        let err: HealthReading = Err(apply::Error::Unhealthy {
            stage: crate::plan::Stage::Workloads,
            wave: 0,
            objects: "x".into(),
        });
        let st = next_status(
            &SyncStatus::default(),
            &sync(),
            &Attempt::Applied(&outcome()),
            Some(&err),
            T0,
        );
        let h = healthy_condition(&st).unwrap();
        assert_eq!(
            (h.status.as_str(), h.reason.as_str()),
            ("Unknown", "HealthCheckFailed")
        );
        assert!(h.message.starts_with("reading health: "), "{}", h.message);
        assert!(progressing(&st));
    }
}
