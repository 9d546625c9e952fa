//! `SealedSecret` objects (`bitnami.com/v1alpha1`): sealing a Secret like kubeseal does, and
//! unsealing into the Secret the controller would create.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::keys::{KeyRing, SealingCert};
use super::{Scope, decode_base64, encode_base64, hybrid_decrypt, hybrid_encrypt};
use crate::error::{Error, Result};
use crate::secret::SecretBytes;

/// API version of SealedSecrets.
pub const API_VERSION: &str = "bitnami.com/v1alpha1";
/// Annotation (template) that keeps the Secret free of an ownerReference.
pub const SKIP_OWNER_REFERENCES: &str = "sealedsecrets.bitnami.com/skip-set-owner-references";
/// Annotation (existing Secret) that lets a SealedSecret take it over.
pub const MANAGED: &str = "sealedsecrets.bitnami.com/managed";
/// Annotation (existing Secret) that makes the unsealed data merge into it.
pub const PATCH: &str = "sealedsecrets.bitnami.com/patch";
/// Lockstep's note of which certificate sealed an object (kubeseal writes none).
pub const SEALED_WITH: &str = "lockstep.dev/sealed-with";

const STRIPPED_ANNOTATIONS: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "kubecfg.ksonnet.io/garbage-collect-tag",
];
const STRIPPED_METADATA: [&str; 8] = [
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
];

/// How to seal.
#[derive(Clone, Debug, Default)]
pub struct SealOptions {
    /// `--scope`; a non-strict value overrides the Secret's annotations.
    pub scope: Option<Scope>,
    /// `-n`: the namespace when the Secret has none; an error when it has another.
    pub namespace: Option<String>,
    /// Allow a Secret with no data.
    pub allow_empty_data: bool,
}

fn err(m: impl Into<String>) -> Error {
    Error::Sealed(m.into())
}

/// Seals a `v1.Secret` (as JSON) for one certificate, as `kubeseal --cert` does: name and
/// namespace bound per scope, `data` and `stringData` encrypted (`stringData` wins), the rest of
/// the metadata kept as the template. Keys come out sorted, so re-sealing diffs stay small.
pub fn seal_secret(secret: &Value, cert: &SealingCert, opts: &SealOptions) -> Result<Value> {
    if secret.get("kind").and_then(Value::as_str) != Some("Secret") {
        return Err(err("input is not a Secret (kind: Secret, apiVersion: v1)"));
    }
    let mut meta = secret
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let secret_ns = meta.get("namespace").and_then(Value::as_str).map(str::to_owned);
    if let (Some(given), Some(own)) = (&opts.namespace, &secret_ns)
        && given != own
    {
        return Err(err(format!(
            "the Secret's namespace `{own}` differs from --namespace `{given}`"
        )));
    }
    let scope = match opts.scope {
        Some(s) if s != Scope::Strict => s,
        _ => Scope::from_annotations(meta.get("annotations").and_then(Value::as_object)),
    };
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    if name.is_empty() && scope != Scope::ClusterWide {
        return Err(err(
            "the Secret has no metadata.name (needed unless --scope cluster-wide)",
        ));
    }
    let namespace = secret_ns
        .or_else(|| opts.namespace.clone())
        .unwrap_or_else(|| "default".into());

    let mut values: BTreeMap<String, SecretBytes> = BTreeMap::new();
    if let Some(data) = secret.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let s = v
                .as_str()
                .ok_or_else(|| err(format!("data.{k} is not a string")))?;
            let bytes = decode_base64(s).ok_or_else(|| err(format!("data.{k} is not valid base64")))?;
            values.insert(k.clone(), SecretBytes::new(bytes));
        }
    }
    if let Some(data) = secret.get("stringData").and_then(Value::as_object) {
        for (k, v) in data {
            let s = v
                .as_str()
                .ok_or_else(|| err(format!("stringData.{k} is not a string")))?;
            values.insert(k.clone(), SecretBytes::new(s.as_bytes().to_vec()));
        }
    }
    if values.is_empty() && !opts.allow_empty_data {
        return Err(err(
            "the Secret has no data or stringData (pass --allow-empty-data to seal it anyway)",
        ));
    }
    let label = scope.label(&namespace, &name);
    let mut encrypted = Map::new();
    for (k, v) in &values {
        encrypted.insert(
            k.clone(),
            Value::String(encode_base64(&hybrid_encrypt(cert, v.expose(), &label)?)),
        );
    }

    for f in STRIPPED_METADATA {
        meta.remove(f);
    }
    let scope_annotation = match scope {
        Scope::Strict => None,
        Scope::NamespaceWide => Some(super::NAMESPACE_WIDE),
        Scope::ClusterWide => Some(super::CLUSTER_WIDE),
    };
    if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
        for a in STRIPPED_ANNOTATIONS {
            ann.remove(a);
        }
    }
    if let Some(a) = scope_annotation {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Value::Object(ann) = ann {
            ann.insert(a.into(), "true".into());
        }
    }
    if matches!(meta.get("annotations"), Some(Value::Object(a)) if a.is_empty()) {
        meta.remove("annotations");
    }
    meta.insert("namespace".into(), namespace.clone().into());
    if !name.is_empty() {
        meta.insert("name".into(), name.clone().into());
    }
    let mut template = Map::new();
    template.insert("metadata".into(), Value::Object(meta));
    for f in ["type", "immutable"] {
        if let Some(v) = secret.get(f) {
            template.insert(f.into(), v.clone());
        }
    }
    let mut top_ann = Map::new();
    if let Some(a) = scope_annotation {
        top_ann.insert(a.into(), "true".into());
    }
    top_ann.insert(SEALED_WITH.into(), cert.fingerprint().into());
    let mut top = Map::new();
    if !name.is_empty() {
        top.insert("name".into(), name.into());
    }
    top.insert("namespace".into(), namespace.into());
    top.insert("annotations".into(), Value::Object(top_ann));
    Ok(json!({
        "kind": "SealedSecret",
        "apiVersion": API_VERSION,
        "metadata": Value::Object(top),
        "spec": { "template": Value::Object(template), "encryptedData": Value::Object(encrypted) }
    }))
}

/// The Secret a SealedSecret unseals to. Its values are wiped when it is dropped.
#[derive(Debug)]
pub struct SealedSecret {
    /// Secret metadata (template metadata, name and namespace forced, ownerReference set).
    pub metadata: Map<String, Value>,
    /// Secret type (default `Opaque`).
    pub type_: String,
    /// `immutable`, from the template.
    pub immutable: Option<bool>,
    /// The plaintext values.
    pub data: BTreeMap<String, SecretBytes>,
}

impl SealedSecret {
    /// The Secret as JSON for the API server. The returned value holds plaintext (base64):
    /// send it and drop it.
    pub fn to_secret_json(&self) -> Value {
        let data: Map<String, Value> = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(encode_base64(v.expose()))))
            .collect();
        let mut s = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": Value::Object(self.metadata.clone()),
            "type": self.type_,
            "data": Value::Object(data),
        });
        if let (Some(i), Some(obj)) = (self.immutable, s.as_object_mut()) {
            obj.insert("immutable".into(), i.into());
        }
        s
    }
}

/// A SealedSecret's identity and its opened values.
struct Opened<'a> {
    name: &'a str,
    namespace: &'a str,
    meta: &'a Map<String, Value>,
    template: Option<&'a Map<String, Value>>,
    data: BTreeMap<String, SecretBytes>,
}

/// Opens every `encryptedData` item with every key of `ring`, under the scope the SealedSecret's
/// own (top-level) annotations claim. Templates are never executed here.
fn open_items<'a>(ss: &'a Value, ring: &KeyRing) -> Result<Opened<'a>> {
    let meta = ss
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| err("SealedSecret has no metadata"))?;
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| err("SealedSecret has no metadata.name"))?;
    let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("default");
    let scope = Scope::from_annotations(meta.get("annotations").and_then(Value::as_object));
    let spec = ss
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| err(format!("{namespace}/{name}: no spec")))?;
    if spec.get("data").is_some_and(|d| !d.is_null()) {
        return Err(err(format!(
            "{namespace}/{name}: spec.data (the pre-0.9 whole-object format) is not supported; re-seal it"
        )));
    }
    let template = spec.get("template").and_then(Value::as_object);
    let encrypted = spec
        .get("encryptedData")
        .and_then(Value::as_object)
        .ok_or_else(|| err(format!("{namespace}/{name}: spec.encryptedData is missing")))?;
    let label = scope.label(namespace, name);
    let mut data = BTreeMap::new();
    let mut failed = Vec::new();
    for (k, v) in encrypted {
        // Like the Go type, non-string values are ignored.
        let Some(s) = v.as_str() else { continue };
        let Some(ct) = decode_base64(s) else {
            failed.push(format!("{k} (not base64)"));
            continue;
        };
        match ring
            .keys()
            .iter()
            .find_map(|key| hybrid_decrypt(key, &ct, &label).ok())
        {
            Some(pt) => {
                data.insert(k.clone(), pt);
            }
            None => failed.push(k.clone()),
        }
    }
    if !failed.is_empty() {
        return Err(Error::NoSealingKey {
            object: format!("{namespace}/{name}"),
            scope: scope.name(),
            tried: ring.len(),
            items: failed,
        });
    }
    Ok(Opened {
        name,
        namespace,
        meta,
        template,
        data,
    })
}

/// Checks that every value of a SealedSecret opens with `ring` (the controller's `/v1/verify`),
/// without executing templates (so a crafted template cannot turn this into an oracle).
pub fn verify(ss: &Value, ring: &KeyRing) -> Result<()> {
    open_items(ss, ring).map(|_| ())
}

/// Re-encrypts every value of a SealedSecret for `cert` under the same scope, leaving everything
/// else as it is (the controller's `/v1/rotate`, `--re-encrypt`). The scope comes from the
/// top-level annotations only, never from the template, so a rotation cannot widen it
/// (CVE-2026-22728); templates are not executed. Keys come out sorted.
pub fn reseal(ss: &Value, ring: &KeyRing, cert: &SealingCert) -> Result<Value> {
    let opened = open_items(ss, ring)?;
    let scope = Scope::from_annotations(opened.meta.get("annotations").and_then(Value::as_object));
    let label = scope.label(opened.namespace, opened.name);
    let mut encrypted = Map::new();
    for (k, v) in &opened.data {
        encrypted.insert(
            k.clone(),
            encode_base64(&hybrid_encrypt(cert, v.expose(), &label)?).into(),
        );
    }
    let mut out = ss.clone();
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("encryptedData".into(), Value::Object(encrypted));
    }
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert(SEALED_WITH.into(), cert.fingerprint().into());
        }
    }
    Ok(out)
}

/// Unseals a SealedSecret (as JSON) with every key of `ring`, as the controller does. The scope
/// is read from the SealedSecret's own annotations only; the Secret's name and namespace are
/// forced to the SealedSecret's.
pub fn unseal(ss: &Value, ring: &KeyRing) -> Result<SealedSecret> {
    if let Some(tdata) = ss.pointer("/spec/template/data").and_then(Value::as_object)
        && !tdata.is_empty()
    {
        let name = ss
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let namespace = ss
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let keys: Vec<&str> = tdata.keys().map(String::as_str).collect();
        return Err(err(format!(
            "{namespace}/{name}: spec.template.data ({}) uses Go templates, which are not supported yet",
            keys.join(", ")
        )));
    }
    let Opened {
        name,
        namespace,
        meta,
        template,
        data,
    } = open_items(ss, ring)?;
    let mut smeta = template
        .and_then(|t| t.get("metadata"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    smeta.insert("name".into(), name.into());
    smeta.insert("namespace".into(), namespace.into());
    let skip_owner = smeta
        .get("annotations")
        .and_then(|a| a.get(SKIP_OWNER_REFERENCES))
        .and_then(Value::as_str)
        == Some("true");
    if let (false, Some(uid)) = (skip_owner, meta.get("uid").and_then(Value::as_str)) {
        smeta.insert(
            "ownerReferences".into(),
            json!([{ "apiVersion": API_VERSION, "kind": "SealedSecret", "name": name, "uid": uid, "controller": true }]),
        );
    }
    Ok(SealedSecret {
        metadata: smeta,
        type_: template
            .and_then(|t| t.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("Opaque")
            .to_owned(),
        immutable: template.and_then(|t| t.get("immutable")).and_then(Value::as_bool),
        data,
    })
}

/// The key of `ring` that opens a SealedSecret's first item, if any (`--which-key`).
pub fn opening_key<'a>(ss: &Value, ring: &'a KeyRing) -> Option<&'a super::keys::UnsealingKey> {
    let name = ss.pointer("/metadata/name")?.as_str()?;
    let namespace = ss
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let scope = Scope::from_annotations(ss.pointer("/metadata/annotations").and_then(Value::as_object));
    let label = scope.label(namespace, name);
    let (_, first) = ss.pointer("/spec/encryptedData")?.as_object()?.iter().next()?;
    let ct = decode_base64(first.as_str()?)?;
    ring.keys()
        .iter()
        .find(|k| hybrid_decrypt(k, &ct, &label).is_ok())
}

/// What to do with the Secret a SealedSecret unseals to, given what exists (the controller's
/// rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// No Secret yet: create it.
    Create,
    /// Ours (controlled by this SealedSecret) or annotated `managed`: replace data, labels,
    /// annotations and ownerReferences.
    Replace,
    /// Annotated `patch`: merge data, labels and annotations into it.
    Patch,
    /// Someone else's Secret: never overwrite it.
    Refuse,
}

/// Decides how to treat `existing` (the current Secret, if any) for the SealedSecret `ss_uid`.
pub fn takeover(existing: Option<&Value>, ss_uid: &str) -> Takeover {
    let Some(s) = existing else {
        return Takeover::Create;
    };
    let ann = |k: &str| {
        s.pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            == Some("true")
    };
    let controlled = s
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("controller").and_then(Value::as_bool) == Some(true)
                    && r.get("kind").and_then(Value::as_str) == Some("SealedSecret")
                    && r.get("uid").and_then(Value::as_str) == Some(ss_uid)
            })
        });
    if ann(PATCH) {
        Takeover::Patch
    } else if controlled || ann(MANAGED) {
        Takeover::Replace
    } else {
        Takeover::Refuse
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_follows_the_controller() {
        assert_eq!(takeover(None, "u"), Takeover::Create);
        let own = json!({"metadata": {"ownerReferences": [{"kind": "SealedSecret", "uid": "u", "controller": true}]}});
        assert_eq!(takeover(Some(&own), "u"), Takeover::Replace);
        assert_eq!(takeover(Some(&own), "other"), Takeover::Refuse);
        let managed = json!({"metadata": {"annotations": {MANAGED: "true"}}});
        assert_eq!(takeover(Some(&managed), "u"), Takeover::Replace);
        let patch = json!({"metadata": {"annotations": {PATCH: "true"}}});
        assert_eq!(takeover(Some(&patch), "u"), Takeover::Patch);
        assert_eq!(takeover(Some(&json!({"metadata": {}})), "u"), Takeover::Refuse);
    }
}
