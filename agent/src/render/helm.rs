//! Helm charts ([`lockstep_helm`]): a chart directory of the revision or a fetched archive,
//! rendered with its values as `helm template` renders it. This is the one renderer that sees
//! plaintext: SOPS values files are decrypted here, in memory and with their MAC verified, and
//! reach Helm over its pipe only; `valuesFrom` Secrets likewise. Every rendered Secret, and
//! every object in which a secret value turns up, is secret material whose inventory hash
//! stands on [`Chart::inputs`], a digest of ciphertext and versions, never of plaintext.

use std::collections::BTreeMap;

use lockstep_formats::sops::Identities;
use lockstep_helm::{Helper, Request, Values};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Error, Manifest};

/// What a Helm Sync renders, read from its spec and the objects it names.
#[derive(Debug, Default)]
pub struct HelmConfig {
    /// The chart's reference, for messages and status (`web` for a chart of the revision).
    pub release_name: String,
    /// `.Release.Namespace`: objects without a namespace go there.
    pub namespace: String,
    /// Values files, repository-relative, in order.
    pub values_files: Vec<String>,
    /// `valuesFrom` entries, as read from the cluster, in order.
    pub values_from: Vec<FromObject>,
    /// Inline values (`spec.helm.values`).
    pub values: Option<Json>,
    /// `--set` overrides: (expression, as a string).
    pub set: Vec<(String, bool)>,
    /// `--include-crds`.
    pub include_crds: bool,
    /// `--kube-version`.
    pub kube_version: Option<String>,
    /// `--api-versions`.
    pub api_versions: Vec<String>,
    /// `--skip-tests`.
    pub skip_tests: bool,
    /// Flux's `postRenderers[].kustomize`.
    pub post_renderers: Vec<Json>,
}

/// One `valuesFrom` entry's content.
pub struct FromObject {
    /// `ConfigMap web-values` (with the key), for messages.
    pub name: String,
    /// The key's bytes; wiped when dropped.
    pub bytes: Zeroizing<Vec<u8>>,
    /// Flux's `targetPath`.
    pub target_path: Option<String>,
    /// From a Secret: its values are secret material.
    pub secret: bool,
    /// Its identity and version (`uid/resourceVersion`), for [`Chart::inputs`].
    pub version: String,
}

impl std::fmt::Debug for FromObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromObject")
            .field("name", &self.name)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// The chart to render.
#[derive(Clone, Copy, Debug)]
pub enum Chart<'a> {
    /// The chart directory at the Sync's path.
    Directory(&'a str),
    /// A fetched archive.
    Archive {
        /// `name version` (and where from), for messages.
        label: &'a str,
        /// The archive.
        bytes: &'a [u8],
        /// Its SHA-256.
        digest: &'a str,
    },
}

impl Chart<'_> {
    /// The digest of everything a render reads besides the revision (which the commit stands
    /// for): the archive, the `valuesFrom` objects' versions and the rendering options.
    pub fn inputs(&self, cfg: &HelmConfig) -> String {
        let chart = match self {
            Chart::Directory(dir) => *dir,
            Chart::Archive { digest, .. } => *digest,
        };
        let values = cfg
            .values_from
            .iter()
            .flat_map(|v| [v.name.as_str(), v.version.as_str()]);
        super::inputs_digest(
            std::iter::once(chart)
                .chain(values)
                .chain([lockstep_helm::HELM_VERSION]),
        )
    }
}

/// What Helm is given for `chart`: `cfg`'s values in order, SOPS values files of `files`
/// decrypted with `ids` (their values, and those of `valuesFrom` Secrets, to be redacted), and
/// the digest that rendered secret material stands on.
pub fn request(
    files: &BTreeMap<String, Vec<u8>>,
    chart: Chart<'_>,
    cfg: &HelmConfig,
    ids: Option<&Identities>,
) -> Result<(Request, String), Error> {
    let mut req = Request {
        release_name: cfg.release_name.clone(),
        namespace: cfg.namespace.clone(),
        kube_version: cfg.kube_version.clone(),
        api_versions: cfg.api_versions.clone(),
        include_crds: cfg.include_crds,
        skip_tests: cfg.skip_tests,
        is_upgrade: false,
        values: Vec::new(),
        post_renderers: cfg.post_renderers.clone(),
        redact: Vec::new(),
        dependencies: Default::default(),
    };
    // The digest the secret objects' hashes stand on: the inputs, the values files' bytes as
    // they are in Git (ciphertext for SOPS files), the inline values and overrides.
    let mut source = Sha256::new();
    source.update(chart.inputs(cfg).as_bytes());
    for (i, file) in cfg.values_files.iter().enumerate() {
        let bytes = files.get(file).ok_or_else(|| Error::Values {
            field: format!("spec.helm.valuesFiles[{i}]"),
            message: format!("{file}: not in the revision"),
        })?;
        source.update(Sha256::digest(bytes));
        req.values.push(lockstep_helm::values::file(
            file,
            bytes,
            ids,
            "the Sync configures no decryption (spec.decryption.sops.secretRef)",
            &mut req.redact,
        )?);
    }
    for v in &cfg.values_from {
        if v.secret {
            lockstep_helm::values::redact_document(&v.bytes, v.target_path.is_some(), &mut req.redact);
        }
        req.values.push(Values::Document {
            name: v.name.clone(),
            bytes: v.bytes.clone(),
            target_path: v.target_path.clone(),
        });
    }
    if let Some(values) = &cfg.values {
        let bytes = Zeroizing::new(serde_json::to_vec(values).map_err(|e| Error::Values {
            field: "spec.helm.values".into(),
            message: e.to_string(),
        })?);
        source.update(Sha256::digest(&bytes));
        req.values.push(Values::Document {
            name: "spec.helm.values".into(),
            bytes,
            target_path: None,
        });
    }
    for (expr, string) in &cfg.set {
        source.update(expr.as_bytes());
        req.values.push(if *string {
            Values::SetString(expr.clone())
        } else {
            Values::Set(expr.clone())
        });
    }
    Ok((req, hex::encode(&source.finalize()[..16])))
}

/// How messages name `chart`.
pub fn label(chart: Chart<'_>) -> String {
    match chart {
        Chart::Directory("") => ".".to_owned(),
        Chart::Directory(d) => d.to_owned(),
        Chart::Archive { label, .. } => label.to_owned(),
    }
}

/// Renders `chart` of `files` with `req` ([`request`]), as `helm template` would; `source` is
/// what secret objects' hashes stand on.
pub fn render(
    helper: Option<&Helper>,
    files: &BTreeMap<String, Vec<u8>>,
    chart: Chart<'_>,
    req: &Request,
    source: &str,
) -> Result<Vec<Manifest>, Error> {
    let label = label(chart);
    let helper = helper.ok_or_else(|| Error::NoHelmHelper { chart: label.clone() })?;
    let helm_chart = match chart {
        Chart::Directory(dir) => lockstep_helm::Chart::Directory { files, dir },
        Chart::Archive { label, bytes, .. } => lockstep_helm::Chart::Archive { name: label, bytes },
    };
    let rendered = lockstep_helm::template(helper, helm_chart, req)?;
    let mut out = Vec::with_capacity(rendered.len());
    for r in rendered {
        let origin = format!("chart {label}: {} ({})", r.source, r.describe());
        let secret = r.object.get("kind").and_then(Json::as_str) == Some("Secret")
            || lockstep_helm::values::holds_any(&r.object, &req.redact);
        out.push(if secret {
            let id = format!(
                "{source}/{}/{}",
                r.object
                    .pointer("/kind")
                    .and_then(Json::as_str)
                    .unwrap_or_default(),
                r.object
                    .pointer("/metadata/name")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
            );
            Manifest::secret(
                origin,
                r.object,
                hex::encode(&Sha256::digest(id.as_bytes())[..16]),
            )
        } else {
            Manifest {
                origin,
                object: r.object,
                secret: false,
                source_digest: None,
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_inputs_change_with_the_archive_and_the_values_objects() {
        let cfg = HelmConfig::default();
        let a = Chart::Archive {
            label: "web 1",
            bytes: b"",
            digest: "d1",
        };
        let b = Chart::Archive {
            label: "web 1",
            bytes: b"",
            digest: "d2",
        };
        assert_ne!(a.inputs(&cfg), b.inputs(&cfg));
        let mut cfg2 = HelmConfig::default();
        cfg2.values_from.push(FromObject {
            name: "Secret s".into(),
            bytes: Zeroizing::new(Vec::new()),
            target_path: None,
            secret: true,
            version: "u/2".into(),
        });
        assert_ne!(a.inputs(&cfg), a.inputs(&cfg2));
    }
}
