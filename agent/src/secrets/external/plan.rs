//! Pure: what an ExternalSecret asks for (its items, each with its store) and the Secret built
//! from what was fetched (conversion, decoding, templates, bookkeeping labels and annotations).

use std::collections::BTreeMap;

use base64::Engine as _;
use lockstep_formats::secret::SecretJson;
use serde_json::{Value as Json, json};
use zeroize::Zeroizing;

use super::api::{ExternalSecret, Find, RemoteRef, StoreRef};
use super::template;
use super::values::{self, Bytes};

/// ESO's label on the Secrets it manages.
pub const MANAGED_LABEL: &str = "reconcile.external-secrets.io/managed";
/// ESO's annotation with the hash of the Secret's data.
pub const DATA_HASH_ANNOTATION: &str = "reconcile.external-secrets.io/data-hash";

/// One thing to fetch for an ExternalSecret.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// `data[]`: one value under `secret_key`.
    Value {
        /// Field path, for messages (`spec.data[2]`).
        field: String,
        /// The Secret key.
        secret_key: &'a str,
        /// The store.
        store: StoreRef,
        /// Where the store was named (`spec.secretStoreRef`, or the item's `sourceRef.storeRef`).
        store_field: String,
        /// What to read.
        remote: &'a RemoteRef,
    },
    /// `dataFrom[].extract`: a JSON object's keys.
    Extract {
        /// Field path.
        field: String,
        /// The store.
        store: StoreRef,
        /// Where the store was named (`spec.secretStoreRef`, or the item's `sourceRef.storeRef`).
        store_field: String,
        /// What to read.
        remote: &'a RemoteRef,
    },
    /// `dataFrom[].find`.
    Find {
        /// Field path.
        field: String,
        /// The store.
        store: StoreRef,
        /// Where the store was named (`spec.secretStoreRef`, or the item's `sourceRef.storeRef`).
        store_field: String,
        /// The search.
        find: &'a Find,
    },
}

/// The items of an ExternalSecret, `dataFrom` first (so `data` overrides it), or the first
/// thing that makes it invalid, naming the field.
pub fn items(es: &ExternalSecret) -> Result<Vec<Item<'_>>, String> {
    let spec = &es.spec;
    if spec.data.is_empty() && spec.data_from.is_empty() {
        return Err("spec: at least one of data and dataFrom is required".into());
    }
    if let Some(t) = spec.target.as_ref().and_then(|t| t.template.as_ref()) {
        if t.engine_version.as_deref().is_some_and(|v| v != "v2") {
            return Err("spec.target.template.engineVersion: only v2 is supported (as in ESO ≥ 0.16)".into());
        }
        if !t.template_from.is_empty() {
            return Err("spec.target.template.templateFrom is not supported yet; use template.data".into());
        }
    }
    let store_of = |own: Option<&super::api::SourceRef>, field: &str| -> Result<(StoreRef, String), String> {
        if own.is_some_and(|s| s.generator_ref.is_some()) {
            return Err(format!(
                "{field}.sourceRef.generatorRef: generators are not supported"
            ));
        }
        if let Some(s) = own.and_then(|s| s.store_ref.clone()) {
            return Ok((s, format!("{field}.sourceRef.storeRef")));
        }
        spec.secret_store_ref
            .clone()
            .map(|s| (s, "spec.secretStoreRef".to_owned()))
            .ok_or_else(|| format!("{field}: no store (spec.secretStoreRef or sourceRef.storeRef)"))
    };
    let mut out = Vec::new();
    for (i, d) in spec.data_from.iter().enumerate() {
        let field = format!("spec.dataFrom[{i}]");
        if !d.rewrite.is_empty() {
            return Err(format!("{field}.rewrite is not supported yet"));
        }
        let (store, store_field) = store_of(d.source_ref.as_ref(), &field)?;
        match (&d.extract, &d.find) {
            (Some(r), None) => {
                check_remote(r, &format!("{field}.extract"))?;
                out.push(Item::Extract {
                    field: format!("{field}.extract"),
                    store,
                    store_field,
                    remote: r,
                });
            }
            (None, Some(f)) => {
                if f.name.is_none() && f.tags.is_empty() && f.path.is_none() {
                    return Err(format!("{field}.find: one of name, tags and path is required"));
                }
                out.push(Item::Find {
                    field: format!("{field}.find"),
                    store,
                    store_field,
                    find: f,
                });
            }
            _ => return Err(format!("{field}: exactly one of extract and find is required")),
        }
    }
    for (i, d) in spec.data.iter().enumerate() {
        let field = format!("spec.data[{i}]");
        if !values::valid_key(&d.secret_key) {
            return Err(format!(
                "{field}.secretKey {:?}: not a valid Secret key",
                d.secret_key
            ));
        }
        check_remote(&d.remote_ref, &format!("{field}.remoteRef"))?;
        let (store, store_field) = store_of(d.source_ref.as_ref(), &field)?;
        out.push(Item::Value {
            store,
            store_field,
            field,
            secret_key: &d.secret_key,
            remote: &d.remote_ref,
        });
    }
    Ok(out)
}

fn check_remote(r: &RemoteRef, field: &str) -> Result<(), String> {
    if r.key.is_empty() {
        return Err(format!("{field}.key is empty"));
    }
    if r.metadata_policy.as_deref().is_some_and(|p| p != "None") {
        return Err(format!("{field}.metadataPolicy: only None is supported yet"));
    }
    Ok(())
}

/// The fetched values of one ExternalSecret, keyed as in the Secret, before templating.
pub type Data = BTreeMap<String, Bytes>;

/// Adds a `dataFrom` result (key → value) under converted, validated keys.
pub fn merge_from(
    data: &mut Data,
    entries: Vec<(String, Bytes)>,
    conversion: Option<&str>,
    decoding: Option<&str>,
    field: &str,
) -> Result<(), String> {
    for (k, v) in entries {
        let key = values::convert_key(conversion, &k).map_err(|e| format!("{field}: {e}"))?;
        if key.is_empty() {
            continue;
        }
        if !values::valid_key(&key) {
            return Err(format!("{field}: key {key:?} is not a valid Secret key"));
        }
        let v = values::decode(decoding, v, &format!("{field} key {key}"))?;
        data.insert(key, v);
    }
    Ok(())
}

/// The Secret an ExternalSecret produces, as an object to apply: data (templated where a
/// template says so), type, labels and annotations (ESO's bookkeeping included), immutable, and
/// an owner reference when `creationPolicy` is `Owner`.
pub fn secret(es: &ExternalSecret, data: &Data) -> Result<SecretJson, String> {
    let ns = es.metadata.namespace.clone().unwrap_or_default();
    let target = es.spec.target.clone().unwrap_or_default();
    let name = target
        .name
        .clone()
        .unwrap_or_else(|| es.metadata.name.clone().unwrap_or_default());
    let tpl = target.template.as_ref();
    let strings: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let strings = Wiped(strings);
    let out: Data = match tpl {
        Some(t) if !t.data.is_empty() => {
            let mut out = if t.merge_policy.as_deref() == Some("Merge") {
                data.clone()
            } else {
                Data::new()
            };
            for (k, text) in &t.data {
                let v = template::render(text, &strings.0)
                    .map_err(|e| format!("spec.target.template.data.{k}: {e}"))?;
                out.insert(k.clone(), Zeroizing::new(v.into_bytes()));
            }
            out
        }
        _ => data.clone(),
    };
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    match tpl.and_then(|t| t.metadata.as_ref()) {
        Some(m) => {
            for (k, v) in &m.labels {
                let v = template::render(v, &strings.0)
                    .map_err(|e| format!("spec.target.template.metadata.labels.{k}: {e}"))?;
                labels.insert(k.clone(), v);
            }
            for (k, v) in &m.annotations {
                let v = template::render(v, &strings.0)
                    .map_err(|e| format!("spec.target.template.metadata.annotations.{k}: {e}"))?;
                annotations.insert(k.clone(), v);
            }
        }
        // No template: ESO copies the ExternalSecret's own labels and annotations; Argo CD's
        // tracking and kubectl's last-applied are left out (they cause drift fights).
        None if tpl.is_none() => {
            let keep = |k: &String| {
                !k.starts_with("argocd.argoproj.io/")
                    && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
                    && k.as_str() != crate::api::OWNER_LABEL
            };
            for (k, v) in es.metadata.labels.iter().flatten().filter(|(k, _)| keep(k)) {
                labels.insert(k.clone(), v.clone());
            }
            for (k, v) in es.metadata.annotations.iter().flatten().filter(|(k, _)| keep(k)) {
                annotations.insert(k.clone(), v.clone());
            }
        }
        None => {}
    }
    labels.insert(MANAGED_LABEL.into(), "true".into());
    annotations.insert(DATA_HASH_ANNOTATION.into(), values::data_hash(&out));
    let b64: serde_json::Map<String, Json> = out
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Json::String(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    let mut secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "namespace": ns, "labels": labels, "annotations": annotations },
        "data": b64,
    });
    if let Some(t) = tpl.and_then(|t| t.type_.clone()) {
        secret["type"] = t.into();
    }
    if target.immutable == Some(true) {
        secret["immutable"] = true.into();
    }
    if creation_policy(es) == "Owner"
        && let Some(uid) = &es.metadata.uid
    {
        secret["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "name": es.metadata.name, "uid": uid, "controller": true, "blockOwnerDeletion": true,
        }]);
    }
    Ok(SecretJson::new(secret))
}

/// Text copies of secret values, wiped on drop.
struct Wiped(BTreeMap<String, String>);

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.values_mut().for_each(zeroize::Zeroize::zeroize);
    }
}

/// `spec.target.creationPolicy` with its default.
pub fn creation_policy(es: &ExternalSecret) -> &str {
    es.spec
        .target
        .as_ref()
        .and_then(|t| t.creation_policy.as_deref())
        .unwrap_or("Owner")
}

/// `spec.target.deletionPolicy` with its default.
pub fn deletion_policy(es: &ExternalSecret) -> &str {
    es.spec
        .target
        .as_ref()
        .and_then(|t| t.deletion_policy.as_deref())
        .unwrap_or("Retain")
}

/// The ExternalSecret's current `syncedResourceVersion` (generation, labels, annotations).
pub fn resource_version(es: &ExternalSecret) -> String {
    values::resource_version(
        es.metadata.generation.unwrap_or_default(),
        &es.metadata.labels.clone().unwrap_or_default(),
        &es.metadata.annotations.clone().unwrap_or_default(),
    )
}

/// The target Secret's name.
pub fn target_name(es: &ExternalSecret) -> String {
    es.spec
        .target
        .as_ref()
        .and_then(|t| t.name.clone())
        .unwrap_or_else(|| es.metadata.name.clone().unwrap_or_default())
}

/// Whether a ClusterSecretStore's conditions let `namespace` (with `labels`) use it.
pub fn namespace_allowed(
    conditions: &[super::api::ClusterStoreCondition],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if conditions.is_empty() {
        return true;
    }
    conditions.iter().any(|c| {
        c.namespaces.iter().any(|n| n == namespace)
            || c.namespace_regexes
                .iter()
                .any(|r| regex::Regex::new(r).is_ok_and(|r| r.is_match(namespace)))
            || c.namespace_selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, labels))
    })
}

fn selector_matches(
    s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let ok_labels = s
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let ok_exprs = s.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    ok_labels && ok_exprs
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn es(spec: Json) -> ExternalSecret {
        serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": { "name": "db", "namespace": "app", "uid": "u-1",
                "labels": { "team": "a", "argocd.argoproj.io/instance": "x" } },
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn items_name_the_field_that_is_wrong() {
        let e = es(
            json!({ "data": [{ "secretKey": "a/b", "remoteRef": { "key": "k" } }], "secretStoreRef": { "name": "s" } }),
        );
        assert!(items(&e).unwrap_err().contains("spec.data[0].secretKey"));
        let e = es(json!({ "data": [{ "secretKey": "a", "remoteRef": { "key": "k" } }] }));
        assert!(items(&e).unwrap_err().contains("spec.data[0]: no store"));
        let e = es(json!({ "secretStoreRef": { "name": "s" }, "dataFrom": [{ }] }));
        assert!(items(&e).unwrap_err().contains("spec.dataFrom[0]: exactly one"));
        let e = es(
            json!({ "secretStoreRef": { "name": "s" }, "data": [{ "secretKey": "a", "remoteRef": { "key": "k" } }],
            "target": { "template": { "templateFrom": [{ "literal": "x" }] } } }),
        );
        assert!(items(&e).unwrap_err().contains("templateFrom"));
    }

    #[test]
    fn the_secret_carries_esos_bookkeeping() {
        let e = es(
            json!({ "secretStoreRef": { "name": "s" }, "data": [{ "secretKey": "pw", "remoteRef": { "key": "k" } }] }),
        );
        let data: Data = [("pw".to_owned(), Zeroizing::new(b"hunter2".to_vec()))]
            .into_iter()
            .collect();
        let s = secret(&e, &data).unwrap();
        assert_eq!(s["data"]["pw"], "aHVudGVyMg==");
        assert_eq!(s["metadata"]["labels"][MANAGED_LABEL], "true");
        assert_eq!(s["metadata"]["labels"]["team"], "a");
        assert!(
            s["metadata"]["labels"]
                .get("argocd.argoproj.io/instance")
                .is_none()
        );
        assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(
            s["metadata"]["annotations"][DATA_HASH_ANNOTATION],
            values::data_hash(&data)
        );

        let e = es(
            json!({ "secretStoreRef": { "name": "s" }, "data": [{ "secretKey": "pw", "remoteRef": { "key": "k" } }],
            "target": { "name": "other", "creationPolicy": "Orphan", "immutable": true,
                "template": { "type": "kubernetes.io/basic-auth", "metadata": { "labels": { "l": "{{ .pw | upper }}" } },
                    "data": { "password": "{{ .pw }}", "auth": "{{ printf \"u:%s\" .pw | b64enc }}" } } } }),
        );
        let s = secret(&e, &data).unwrap();
        assert_eq!(s["metadata"]["name"], "other");
        assert_eq!(s["type"], "kubernetes.io/basic-auth");
        assert_eq!(s["immutable"], true);
        assert!(s["metadata"].get("ownerReferences").is_none());
        assert!(s["data"].get("pw").is_none(), "Replace drops fetched keys");
        assert_eq!(s["metadata"]["labels"]["l"], "HUNTER2");
        assert!(s["metadata"]["labels"].get("team").is_none());
    }

    #[test]
    fn cluster_store_conditions() {
        let conds: Vec<super::super::api::ClusterStoreCondition> = serde_json::from_value(json!([
            { "namespaces": ["team-a"] },
            { "namespaceRegexes": ["prod"] },
            { "namespaceSelector": { "matchLabels": { "tier": "gold" } } }
        ]))
        .unwrap();
        let none = BTreeMap::new();
        let gold: BTreeMap<String, String> = [("tier".to_owned(), "gold".to_owned())].into_iter().collect();
        assert!(namespace_allowed(&conds, "team-a", &none));
        assert!(
            namespace_allowed(&conds, "my-prod-x", &none),
            "unanchored, as ESO"
        );
        assert!(namespace_allowed(&conds, "x", &gold));
        assert!(!namespace_allowed(&conds, "team-b", &none));
        assert!(namespace_allowed(&[], "anything", &none));
    }
}
