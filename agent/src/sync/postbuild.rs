//! `spec.postBuild`: Flux's variable substitution over a revision's rendered, decrypted
//! objects ([`lockstep_formats::postbuild`]), before they are planned.

use lockstep_formats::postbuild::{self, Options, Variables};

use crate::render::{Manifest, inputs_digest};

/// The variables of one Sync, read from its spec and the cluster.
#[derive(Debug, Default)]
pub struct PostBuildConfig {
    /// `substituteFrom` in order, then `substitute` (values wiped when dropped).
    pub vars: Variables,
    /// `substituteStrategy: Always`.
    pub always: bool,
    /// A digest ([`inputs_digest`]) of the `substituteFrom` objects' identities and versions
    /// (never their values): a change renders the commit again.
    pub inputs: String,
}

/// Why substitution failed: the object and the field, never a value.
#[derive(Debug, thiserror::Error)]
#[error("postBuild: {object}: {source}")]
pub struct PostBuildError {
    /// The object and where it came from (`app/web.yaml (Deployment web)`, `Deployment web
    /// (kustomize build app)`).
    pub object: String,
    /// What went wrong, at which field.
    #[source]
    pub source: lockstep_formats::Error,
}

/// Substitutes `cfg`'s variables into every manifest, strict as current Flux is. An object a
/// Secret's variable reached becomes secret material, its change detected through `inputs`
/// and its source rather than its values.
pub fn substitute(manifests: &mut [Manifest], cfg: &PostBuildConfig) -> Result<(), PostBuildError> {
    let opts = Options {
        strict: true,
        always: cfg.always,
    };
    let secret_vars = cfg.vars.any_secret();
    for m in manifests.iter_mut() {
        // What an object that a Secret's value may reach is known by: its source before
        // substitution (holding no value of that Secret).
        let before = match (&m.source_digest, secret_vars) {
            (Some(d), _) => Some(d.clone()),
            (None, true) => Some(inputs_digest([m.object.to_string().as_str()])),
            (None, false) => None,
        };
        let outcome = postbuild::substitute(&mut m.object, &cfg.vars, opts).map_err(|source| {
            let id = format!("{} {}", m.field("/kind"), m.field("/metadata/name"));
            PostBuildError {
                object: if m.origin.contains(&id) {
                    m.origin.clone()
                } else {
                    format!("{} ({id})", m.origin)
                },
                source,
            }
        })?;
        if outcome.used_secret {
            let base = before.unwrap_or_default();
            m.source_digest = Some(inputs_digest([base.as_str(), cfg.inputs.as_str()]));
            m.secret = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_secret_variable_makes_secret_material_known_by_its_source() {
        let mut cfg = PostBuildConfig {
            inputs: "v1".into(),
            ..Default::default()
        };
        cfg.vars.insert("host", b"db", false);
        cfg.vars.insert("token", b"CANARY", true);
        let mut ms = vec![
            Manifest::plain(
                "a.yaml#0",
                json!({ "kind": "ConfigMap", "metadata": { "name": "a" }, "data": { "t": "${token}" } }),
            ),
            Manifest::plain(
                "b.yaml#0",
                json!({ "kind": "ConfigMap", "metadata": { "name": "b" }, "data": { "h": "${host}" } }),
            ),
        ];
        substitute(&mut ms, &cfg).unwrap();
        assert!(ms[0].secret && !ms[1].secret);
        let digest = ms[0].source_digest.clone().unwrap();
        assert!(!digest.contains("CANARY"));
        assert_eq!(ms[1].object["data"]["h"], "db");

        // The same source and inputs give the same digest; other inputs another.
        let again = |inputs: &str| {
            let cfg = PostBuildConfig {
                inputs: inputs.into(),
                vars: {
                    let mut v = Variables::default();
                    v.insert("token", b"OTHER", true);
                    v
                },
                always: false,
            };
            let mut m = vec![Manifest::plain(
                "a.yaml#0",
                json!({ "kind": "ConfigMap", "metadata": { "name": "a" }, "data": { "t": "${token}" } }),
            )];
            substitute(&mut m, &cfg).unwrap();
            m[0].source_digest.clone().unwrap()
        };
        assert_eq!(again("v1"), digest);
        assert_ne!(again("v2"), digest);

        let mut bad = vec![Manifest::plain(
            "c.yaml#0",
            json!({ "kind": "ConfigMap", "metadata": { "name": "c" }, "data": { "x": "${nope}" } }),
        )];
        let e = substitute(&mut bad, &cfg).unwrap_err().to_string();
        assert_eq!(
            e,
            "postBuild: c.yaml#0 (ConfigMap c): at data.x: variable substitution failed: variable not set (strict mode): \"nope\""
        );
    }
}
