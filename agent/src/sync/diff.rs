//! What a sync would change, for `lockstep diff`: the Sync's revision is fetched, rendered and
//! decrypted in the cluster (the keys never leave it), every object is dry-run with
//! server-side apply, and each result is compared with the live object. Secret values are
//! never shown: each is replaced by a marker that says only whether it changed.

use std::collections::BTreeSet;

use futures::{FutureExt, StreamExt, TryStreamExt};
use lockstep_formats::secret::SecretJson;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::apply::{self, Applier};
use crate::plan::{self, Inventory, ObjectId};
use crate::secrets::DecryptionKeys;
use crate::source::GitCache;
use crate::sync::{self, Config};

/// What a sync of one revision would change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The revision compared (`branch@sha1:…`).
    pub revision: String,
    /// The objects that would change, in id order.
    pub changes: Vec<Change>,
    /// How many objects would stay as they are.
    pub unchanged: usize,
}

/// One object that would change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `Kind namespace/name`.
    pub object: String,
    /// `created`, `configured` or `pruned`.
    pub action: String,
    /// A unified diff of the object's YAML (live → desired), secret values redacted.
    pub diff: String,
}

/// Fields the API server manages, and status: never part of a diff.
const VOLATILE: [&str; 6] = [
    "managedFields",
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "selfLink",
];

/// The object without what only the server writes (pure): the fields above, `status`, and
/// kubectl's last-applied annotation (which can hold a Secret in plain text). The copy is
/// wiped when dropped.
pub fn normalize(o: &Json) -> SecretJson {
    let mut o = SecretJson::new(o.clone());
    if let Some(mut status) = o.as_object_mut().and_then(|m| m.remove("status")) {
        lockstep_formats::secret::wipe_json(&mut status);
    }
    if let Some(meta) = o.get_mut("metadata").and_then(Json::as_object_mut) {
        for f in VOLATILE {
            meta.remove(f);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Json::as_object_mut) {
            if let Some(mut last) = a.remove("kubectl.kubernetes.io/last-applied-configuration") {
                lockstep_formats::secret::wipe_json(&mut last);
            }
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    o
}

/// Replaces the values of a Secret's `data` and `stringData` on both sides by markers (pure):
/// `<redacted>` where a value is the same on both sides (or on one side only), and
/// `<redacted: before>`/`<redacted: after>` where it differs. The values replaced are wiped.
pub fn redact(before: Option<&mut Json>, after: Option<&mut Json>) {
    let (mut before, mut after) = (before, after);
    for field in ["data", "stringData"] {
        // Which keys differ, decided before anything is replaced.
        let differs = |own: &Option<&mut Json>, other: &Option<&mut Json>| -> Vec<(String, bool)> {
            let Some(mine) = own.as_ref().and_then(|o| o.get(field)).and_then(Json::as_object) else {
                return Vec::new();
            };
            let theirs = other
                .as_ref()
                .and_then(|o| o.get(field))
                .and_then(Json::as_object);
            mine.iter()
                .map(|(k, v)| {
                    let same = theirs.and_then(|m| m.get(k)).is_none_or(|w| w == v);
                    (k.clone(), !same)
                })
                .collect()
        };
        let (b, a) = (differs(&before, &after), differs(&after, &before));
        for (side, keys, tag) in [(&mut before, b, "before"), (&mut after, a, "after")] {
            let Some(values) = side
                .as_mut()
                .and_then(|o| o.get_mut(field))
                .and_then(Json::as_object_mut)
            else {
                continue;
            };
            for (k, changed) in keys {
                if let Some(v) = values.get_mut(&k) {
                    lockstep_formats::secret::wipe_json(v);
                    *v = Json::String(if changed {
                        format!("<redacted: {tag}>")
                    } else {
                        "<redacted>".to_owned()
                    });
                }
            }
        }
    }
}

fn yaml(o: &Json) -> String {
    lockstep_formats::yaml::emit_documents(&[lockstep_formats::sops::stores::from_json(o.clone())])
        .unwrap_or_else(|e| format!("# cannot show: {e}\n"))
}

/// The change from `live` to `desired` of one object (pure), `None` when there is none.
/// `desired: None` is a prune.
pub fn change(id: &ObjectId, live: Option<&Json>, desired: Option<&Json>) -> Option<Change> {
    let mut before = live.map(normalize);
    let mut after = desired.map(normalize);
    if before == after {
        return None;
    }
    if id.kind == "Secret" && id.api_version == "v1" {
        redact(before.as_deref_mut(), after.as_deref_mut());
    }
    let action = match (&before, &after) {
        (None, _) => "created",
        (_, None) => "pruned",
        _ => "configured",
    };
    let (b, a) = (
        before.as_deref().map(yaml).unwrap_or_default(),
        after.as_deref().map(yaml).unwrap_or_default(),
    );
    let diff = similar::TextDiff::from_lines(&b, &a)
        .unified_diff()
        .context_radius(3)
        .header("live", "desired")
        .to_string();
    Some(Change {
        object: id.to_string(),
        action: action.into(),
        diff,
    })
}

/// The change one manifest would make.
async fn dry_run(
    applier: &Applier,
    m: &crate::render::Manifest,
) -> Result<(ObjectId, Option<Change>), apply::Error> {
    match applier.dry_run(m).await {
        Ok((id, live, after)) => {
            let c = change(&id, live.as_deref(), Some(&*after));
            Ok((id, c))
        }
        // A custom resource whose CRD this revision brings: shown as it is in Git.
        Err(apply::Error::UnknownKind { .. }) => {
            let id = ObjectId::of(&m.object).unwrap_or_else(|| ObjectId {
                api_version: String::new(),
                kind: String::new(),
                namespace: String::new(),
                name: m.origin.clone(),
            });
            let c = change(&id, None, Some(&*m.object));
            Ok((id, c))
        }
        Err(e) => Err(e),
    }
}

/// Dry-runs one revision of a Sync (`cfg`, `keys`, its last inventory) and reports what would
/// change; nothing is written.
pub async fn diff(
    client: kube::Client,
    cache: &GitCache,
    cfg: &Config,
    keys: &DecryptionKeys,
    last: &Inventory,
) -> Result<Report, sync::Error> {
    let rev = sync::fetch(cache, cfg).await?;
    let revision = rev.revision();
    let resolved = sync::resolve_chart(cfg, &rev).await?;
    let manifests = sync::render_revision(cfg, keys, std::sync::Arc::new(rev), resolved).await?;
    // Hooks are created when they run, not applied: they have no diff.
    let (manifests, _hooks) = crate::plan::hooks::split(manifests)?;
    let applier = &cfg.applier(client).await?;
    // Built before streaming: a closure in the stream trips rustc's higher-ranked `Send` check
    // (rust-lang/rust#102211) once axum needs the handler's future to be `Send`.
    let runs: Vec<_> = manifests.iter().map(|m| dry_run(applier, m).boxed()).collect();
    let results: Vec<(ObjectId, Option<Change>)> = futures::stream::iter(runs)
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let desired: BTreeSet<String> = results.iter().map(|(id, _)| id.key()).collect();
    let mut changes: Vec<(ObjectId, Change)> = Vec::new();
    let mut unchanged = 0;
    for (id, c) in results {
        match c {
            Some(c) => changes.push((id, c)),
            None => unchanged += 1,
        }
    }
    if cfg.prune {
        let kept = Inventory {
            entries: last
                .entries
                .iter()
                .filter(|(k, _)| desired.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        for id in plan::prune_set(last, &kept) {
            if let Some(c) = change(
                &id,
                Some(
                    &serde_json::json!({ "apiVersion": id.api_version, "kind": id.kind, "metadata": { "name": id.name, "namespace": id.namespace } }),
                ),
                None,
            ) {
                changes.push((id, c));
            }
        }
    }
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Report {
        revision,
        changes: changes.into_iter().map(|(_, c)| c).collect(),
        unchanged,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn id(kind: &str) -> ObjectId {
        ObjectId {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: "x".into(),
        }
    }

    #[test]
    fn server_fields_and_status_make_no_diff() {
        let live = json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "x", "resourceVersion": "7", "uid": "u", "managedFields": [{}],
                "annotations": { "kubectl.kubernetes.io/last-applied-configuration": "{}" } },
            "data": { "a": "1" }, "status": {} });
        let desired = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "x" }, "data": { "a": "1" } });
        assert_eq!(change(&id("ConfigMap"), Some(&live), Some(&desired)), None);
        let changed = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "x" }, "data": { "a": "2" } });
        let c = change(&id("ConfigMap"), Some(&live), Some(&changed)).unwrap();
        assert_eq!(c.action, "configured");
        assert!(
            c.diff.contains("-    a: \"1\"") && c.diff.contains("+    a: \"2\""),
            "{}",
            c.diff
        );
        let created = change(&id("ConfigMap"), None, Some(&changed)).unwrap();
        assert_eq!(created.action, "created");
        let pruned = change(&id("ConfigMap"), Some(&live), None).unwrap();
        assert_eq!(pruned.action, "pruned");
    }

    #[test]
    fn secret_values_are_never_shown_only_whether_they_changed() {
        let live = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "x" },
            "data": { "same": "Q0FOQVJZLXNhbWU=", "old": "Q0FOQVJZLW9sZA==", "gone": "Z29uZQ==" } });
        let desired = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "x" },
            "data": { "same": "Q0FOQVJZLXNhbWU=", "old": "Q0FOQVJZLW5ldw==", "added": "YWRkZWQ=" } });
        let c = change(&id("Secret"), Some(&live), Some(&desired)).unwrap();
        for v in ["Q0FOQVJZ", "Z29uZQ", "YWRkZWQ"] {
            assert!(!c.diff.contains(v), "a value leaked: {}", c.diff);
        }
        assert!(c.diff.contains("-    old: \"<redacted: before>\""), "{}", c.diff);
        assert!(c.diff.contains("+    old: \"<redacted: after>\""), "{}", c.diff);
        assert!(
            c.diff.contains("-    gone: <redacted>") || c.diff.contains("-    gone: \"<redacted>\""),
            "{}",
            c.diff
        );
        assert!(
            !c.diff.contains("-    same"),
            "an unchanged value is not a change: {}",
            c.diff
        );
        // Equal Secrets: no change at all, and nothing to show.
        assert_eq!(change(&id("Secret"), Some(&live), Some(&live)), None);
        let created = change(&id("Secret"), None, Some(&desired)).unwrap();
        assert!(!created.diff.contains("Q0FOQVJZ"), "{}", created.diff);
    }
}
