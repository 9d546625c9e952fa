//! Kustomizations, built by kustomize's own engine in the helper ([`lockstep_kustomize`]):
//! objects without SOPS values become manifests here; the others stay in ciphertext, as
//! [`Document::Kustomized`], for the secrets step.

use std::collections::BTreeMap;

use lockstep_kustomize::Helper;

use super::{Document, Error, Manifest, check_object};

/// The documents of the kustomization in `dir` (repository-relative), appended to `out`.
pub fn build(
    helper: Option<&Helper>,
    files: &BTreeMap<String, Vec<u8>>,
    dir: &str,
    out: &mut Vec<Document>,
) -> Result<(), Error> {
    let helper = helper.ok_or_else(|| Error::NoHelper {
        kustomization: lockstep_kustomize::kustomization_file(files, dir).unwrap_or_default(),
    })?;
    for b in lockstep_kustomize::build(helper, files, dir)? {
        let origin = b.origin_label();
        check_object(&origin, &b.object)?;
        out.push(match b.encrypted {
            None => Document::Object(Manifest::plain(origin, b.object)),
            Some(_) => Document::Kustomized(Box::new(b)),
        });
    }
    Ok(())
}
