//! What a sync tells the outside: a Kubernetes Event on the Sync and its metrics (decided here,
//! pure; published by the reconciler).

use std::collections::BTreeMap;
use std::time::Duration;

use kube::runtime::events::{Event, EventType};

use super::Error;
use super::metrics::{FormatLabels, Metrics, SyncLabels};
use crate::sync;

/// How many drifted objects a forced apply actually changed back: written with a
/// resourceVersion other than the drifted one (a deleted object: written at all). A no-op apply
/// (a field left to another manager) is not a correction.
pub fn corrections(drifted: &BTreeMap<String, Option<String>>, written: &BTreeMap<String, String>) -> usize {
    drifted
        .iter()
        .filter(|(k, seen)| {
            written
                .get(*k)
                .is_some_and(|rv| seen.as_deref() != Some(rv.as_str()))
        })
        .count()
}

/// The Event a sync deserves: a new revision applied, drift corrected (`corrected` of the
/// objects a heal forced), or a failure (the error's message names files and objects, never
/// values); none for a poll or a heal that changed nothing.
pub fn event(result: &Result<sync::Outcome, Error>, healing: bool, corrected: usize) -> Option<Event> {
    let (type_, reason, note, action) = match result {
        Ok(_) if healing && corrected == 0 => return None,
        Ok(_) if healing => (
            EventType::Normal,
            "DriftCorrected",
            format!("{corrected} object(s) put back"),
            "Heal",
        ),
        Ok(out) if out.skipped || (out.report.applied.is_empty() && out.pruned.is_empty()) => return None,
        Ok(out) => (
            EventType::Normal,
            "Synced",
            format!(
                "{}: {} applied, {} unchanged, {} pruned",
                out.revision(),
                out.report.applied.len(),
                out.report.unchanged,
                out.pruned.len()
            ),
            "Sync",
        ),
        Err(e) => (EventType::Warning, e.reason().as_str(), e.to_string(), "Sync"),
    };
    Some(Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    })
}

/// Records a sync's result in the metrics.
pub fn observe(m: &Metrics, ns: &str, name: &str, result: &Result<sync::Outcome, Error>, took: Duration) {
    let labels = SyncLabels {
        namespace: ns.to_owned(),
        name: name.to_owned(),
    };
    match result {
        Ok(out) => {
            m.sync_done(ns, name, true, took, out.report.applied.len(), out.pruned.len());
            m.ready.get_or_create(&labels).set(1);
        }
        Err(e) => {
            m.sync_done(ns, name, false, took, 0, 0);
            m.ready.get_or_create(&labels).set(0);
            if let Error::Sync(sync::Error::Decrypt(d)) = e
                && let Some(format) = d.decryption_failure()
            {
                m.decryption_failures
                    .get_or_create(&FormatLabels { format })
                    .inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_that_changed_something_are_corrections() {
        let drifted: BTreeMap<String, Option<String>> = [
            ("a".to_owned(), Some("5".to_owned())),
            ("b".to_owned(), Some("7".to_owned())),
            ("c".to_owned(), None),
            ("d".to_owned(), Some("9".to_owned())),
        ]
        .into();
        // a rewritten (6), b a no-op (still 7), c recreated, d not written.
        let written: BTreeMap<String, String> = [
            ("a".to_owned(), "6".to_owned()),
            ("b".to_owned(), "7".to_owned()),
            ("c".to_owned(), "1".to_owned()),
        ]
        .into();
        assert_eq!(corrections(&drifted, &written), 2);
    }

    #[test]
    fn a_timeout_is_a_warning_with_its_own_reason() {
        let e = Error::Timeout {
            what: "sync",
            after: Duration::from_secs(300),
        };
        let ev = event(&Err(e), false, 0).unwrap();
        assert_eq!((ev.type_, ev.reason.as_str()), (EventType::Warning, "TimedOut"));
        assert_eq!(ev.note.as_deref(), Some("the sync did not finish within 300 s"));
    }
}
