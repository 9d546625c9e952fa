//! Spec → configuration: what a sync of a Sync needs, read from its spec and the Secrets it
//! names (repository credentials, SOPS identities), and the rules that are pure: the reference,
//! tenant confinement, and the commit a poll may skip.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::Api;
use zeroize::Zeroize;

use super::Error;
use crate::api::{RECONCILE_ANNOTATION, Reason, Sync, SyncStatus};
use crate::plan::{Inventory, ObjectId};
use crate::render::helm::{FromObject, HelmConfig};
use crate::secrets::DecryptionKeys;
use crate::secrets::sealing::LiveKeys;
use crate::source::charts::{Auth, Repository};
use crate::source::oci::OciChart;
use crate::source::{Credentials, Reference, credentials_from};
use crate::sync::Config;
use crate::sync::helm::{ChartSource, HelmSync};
use crate::sync::postbuild::PostBuildConfig;
use lockstep_formats::postbuild::Variables;
use zeroize::Zeroizing;

/// The reference `spec.source.ref` names: exactly one of branch, tag, semver and commit;
/// branch `main` when none is.
pub fn reference(s: &Sync) -> Result<Reference, Error> {
    let Some(r) = &s.spec.source.reference else {
        return Ok(Reference::Branch("main".into()));
    };
    match (&r.branch, &r.tag, &r.semver, &r.commit) {
        // `HEAD`: the remote's default branch (no branch may be called so).
        (Some(b), None, None, None) if b == "HEAD" => Ok(Reference::Head),
        (Some(b), None, None, None) => Ok(Reference::Branch(b.clone())),
        (None, Some(t), None, None) => Ok(Reference::Tag(t.clone())),
        (None, None, Some(v), None) => Ok(Reference::Semver(v.clone())),
        (None, None, None, Some(c)) => Ok(Reference::Commit(c.clone())),
        (None, None, None, None) => Ok(Reference::Branch("main".into())),
        _ => Err(Error::AmbiguousRef),
    }
}

/// The namespace a Sync is confined to under tenant isolation (`isolation`: the agent's
/// namespace, when it is on): none for Syncs in the agent's namespace, their own for the others,
/// whose `spec.targetNamespace` may then only name it.
pub fn confinement(s: &Sync, isolation: Option<&str>) -> Result<Option<String>, Error> {
    let ns = s.namespace().unwrap_or_default();
    match isolation {
        Some(agent) if agent != ns => match &s.spec.target_namespace {
            Some(t) if *t != ns => Err(Error::Confined {
                target: t.clone(),
                namespace: ns,
                agent: agent.to_owned(),
            }),
            _ => Ok(Some(ns)),
        },
        _ => Ok(None),
    }
}

/// The commit to skip: the last applied one, when the last attempt succeeded with this same
/// spec and no reconcile was requested since. (Drift between commits is the watches' job.)
pub fn unchanged_commit(s: &Sync, st: &SyncStatus) -> Option<String> {
    let last = st.history.first()?;
    let same = last.result == Reason::Succeeded.as_str()
        && st.observed_generation == s.metadata.generation
        && s.annotations().get(RECONCILE_ANNOTATION) == st.last_handled_reconcile_at.as_ref();
    let rev = st.last_applied_revision.as_deref()?;
    same.then(|| rev.rsplit_once("sha1:").map(|(_, c)| c.to_owned()))?
}

/// The inventory a status records.
pub fn inventory_of(status: &SyncStatus) -> Inventory {
    Inventory {
        entries: status
            .inventory
            .iter()
            .map(|e| {
                let id = ObjectId {
                    api_version: e.api_version.clone(),
                    kind: e.kind.clone(),
                    namespace: e.namespace.clone(),
                    name: e.name.clone(),
                };
                (id.key(), (id, e.hash.clone()))
            })
            .collect(),
    }
}

/// The configuration of a sync of `s` from its spec alone (no credentials, keys, objects
/// forced or interrupt), confined as `tenant` says.
pub fn config(s: &Sync, tenant: Option<String>) -> Result<Config, Error> {
    let helm = s.spec.helm.is_some();
    let skip_if_commit = s.status.as_ref().and_then(|st| unchanged_commit(s, st));
    Ok(Config {
        reference: reference(s)?,
        path: s.spec.source.path.clone().unwrap_or_default(),
        // A chart's objects keep the namespace they declare; `targetNamespace` is its release
        // namespace instead, where the others go (as Flux's HelmRelease reads it).
        target_namespace: if helm {
            None
        } else {
            s.spec.target_namespace.clone()
        },
        create_namespace: s.spec.create_namespace == Some(true),
        prune: s.spec.prune != Some(false),
        prune_budget: f64::from(s.spec.prune_budget_percent.unwrap_or(50)) / 100.0,
        allow_mass_deletion: s.spec.allow_mass_deletion == Some(true),
        skip_if_inputs: skip_if_commit
            .as_ref()
            .and_then(|_| s.status.as_ref()?.last_applied_inputs.clone()),
        skip_if_commit,
        chart_interval: super::schedule::interval(s),
        timeout: super::schedule::timeout(s),
        wait: (s.spec.wait == Some(true)).then(|| super::schedule::timeout(s)),
        ignore: s.spec.ignore.clone(),
        tenant,
        kustomize: s.spec.kustomize.as_ref().filter(|_| !helm).map(|k| {
            std::sync::Arc::new(lockstep_kustomize::overlay::Overlay {
                namespace: s.spec.target_namespace.clone(),
                name_prefix: k.name_prefix.clone(),
                name_suffix: k.name_suffix.clone(),
                patches: k.patches.clone(),
                components: k.components.clone(),
                ignore_missing_components: k.ignore_missing_components == Some(true),
                images: k.images.clone(),
                common_labels: k.common_labels.clone(),
                replicas: k.replicas.clone(),
            })
        }),
        recurse: s.spec.source.recurse != Some(false),
        default_namespace: s.spec.default_namespace.clone(),
        common_metadata: s
            .spec
            .kustomize
            .as_ref()
            .filter(|_| !helm)
            .and_then(|k| k.common_metadata.clone()),
        ..Config::new(s.spec.source.url.clone(), s.owner())
    })
}

/// Reads a Secret the spec names, at `field`.
async fn secret(client: &kube::Client, ns: &str, name: &str, field: &'static str) -> Result<Secret, Error> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|source| Error::SecretRead {
            field,
            namespace: ns.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        })
}

/// What a sync of `s` needs: its configuration (confined to its namespace when `isolation`,
/// the agent's namespace, is given and differs), its repository credentials, its decryption
/// keys (the age identities of the Secret it names, the agent's sealing keys) and its last
/// inventory. Every Secret value read is wiped once parsed.
pub async fn prepare(
    s: &Sync,
    client: &kube::Client,
    sealing: &LiveKeys,
    external: Option<crate::secrets::external::Engine>,
    isolation: Option<&str>,
) -> Result<(Config, DecryptionKeys, Inventory), Error> {
    let tenant = confinement(s, isolation)?;
    let mut cfg = config(s, tenant)?;
    cfg.external = external;
    let ns = s.namespace().unwrap_or_default();
    if let Some(r) = &s.spec.source.secret_ref {
        let found = secret(client, &ns, &r.name, "spec.source.secretRef").await?;
        let (credentials, ca_pem) =
            credentials_from(&format!("{ns}/{}", r.name), found.data.unwrap_or_default())?;
        cfg.credentials = credentials;
        cfg.ca_pem = ca_pem;
    } else {
        cfg.credentials = Credentials::None;
    }
    let mut keys = DecryptionKeys::default();
    if let Some(sops) = s.spec.decryption.as_ref().and_then(|d| d.sops.as_ref()) {
        let name = &sops.secret_ref.name;
        let found = secret(client, &ns, name, "spec.decryption.sops.secretRef").await?;
        let mut data = found.data.unwrap_or_default();
        let entries: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())).collect();
        let ids = crate::secrets::sops::identities_from_secret(&format!("{ns}/{name}"), entries);
        data.values_mut().for_each(|v| v.0.zeroize());
        keys.sops = Some(ids.map_err(Error::Identities)?);
    }
    if s.spec.decryption.as_ref().and_then(|d| d.sealed_secrets) != Some(false) {
        let ring = sealing.borrow().ring.clone();
        if !ring.is_empty() {
            keys.sealed = Some(ring);
        }
    }
    if let Some(h) = &s.spec.helm {
        cfg.helm = Some(std::sync::Arc::new(helm_sync(s, h, client).await?));
    } else if let Some(pb) = &s.spec.post_build {
        cfg.post_build = Some(std::sync::Arc::new(post_build(s, pb, client).await?));
    }
    let last = s.status.as_ref().map(inventory_of).unwrap_or_default();
    Ok((cfg, keys, last))
}

/// `spec.postBuild`'s variables: `substituteFrom` read in order (every key of each object;
/// Secret values wiped once copied), then `substitute`.
pub async fn post_build(
    s: &Sync,
    pb: &crate::api::PostBuild,
    client: &kube::Client,
) -> Result<PostBuildConfig, Error> {
    use crate::api::ValuesKind;
    let ns = s.namespace().unwrap_or_default();
    let mut vars = Variables::default();
    let mut versions = Vec::new();
    for (i, r) in pb.substitute_from.iter().enumerate() {
        let input = |message: String| Error::SpecInput {
            field: format!("spec.postBuild.substituteFrom[{i}]"),
            object: format!("{:?} {ns}/{}", r.kind, r.name),
            message,
        };
        let version = match r.kind {
            ValuesKind::ConfigMap => match Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt(&r.name)
                .await
            {
                Ok(Some(cm)) => {
                    for (k, v) in cm.data.iter().flatten() {
                        vars.insert(k, v.as_bytes(), false);
                    }
                    Some(version_of(&cm.metadata))
                }
                Ok(None) => None,
                Err(e) => return Err(input(crate::errors::kube_message(&e))),
            },
            ValuesKind::Secret => match Api::<Secret>::namespaced(client.clone(), &ns)
                .get_opt(&r.name)
                .await
            {
                Ok(Some(mut secret)) => {
                    for (k, v) in secret.data.iter_mut().flatten() {
                        vars.insert(k, &v.0, true);
                        v.0.zeroize();
                    }
                    Some(version_of(&secret.metadata))
                }
                Ok(None) => None,
                Err(e) => return Err(input(crate::errors::kube_message(&e))),
            },
        };
        match version {
            Some(v) => versions.push(v),
            None if r.optional == Some(true) => versions.push("absent".into()),
            None => return Err(input("not found (set optional: true to go on without it)".into())),
        }
    }
    for (k, v) in &pb.substitute {
        vars.insert(k, v.as_bytes(), false);
    }
    Ok(PostBuildConfig {
        vars,
        always: pb.substitute_strategy == Some(crate::api::SubstituteStrategy::Always),
        inputs: crate::render::inputs_digest(versions.iter().map(String::as_str)),
    })
}

/// A Helm Sync's chart source and values: its chart's credentials and CA, and its
/// `valuesFrom` objects, read from the cluster (every Secret value wiped once copied into
/// wiped-on-drop memory).
pub async fn helm_sync(s: &Sync, h: &crate::api::HelmSpec, client: &kube::Client) -> Result<HelmSync, Error> {
    use crate::api::ValuesKind;
    let ns = s.namespace().unwrap_or_default();
    let chart = match &h.chart {
        None => ChartSource::Git,
        Some(c) => chart_source(c, client, &ns).await?,
    };
    let mut values_from = Vec::new();
    for (i, v) in h.values_from.iter().enumerate() {
        let field = format!("spec.helm.valuesFrom[{i}]");
        let key = v.values_key.clone().unwrap_or_else(|| "values.yaml".into());
        let object = format!("{:?} {ns}/{}", v.kind, v.name);
        let input = |message: String| Error::SpecInput {
            field: field.clone(),
            object: object.clone(),
            message,
        };
        let optional = v.optional == Some(true);
        let found: Option<(Option<Zeroizing<Vec<u8>>>, String)> = match v.kind {
            ValuesKind::ConfigMap => {
                match Api::<ConfigMap>::namespaced(client.clone(), &ns)
                    .get_opt(&v.name)
                    .await
                {
                    Ok(Some(cm)) => Some((
                        cm.data
                            .as_ref()
                            .and_then(|d| d.get(&key))
                            .map(|t| Zeroizing::new(t.clone().into_bytes()))
                            .or_else(|| {
                                cm.binary_data
                                    .as_ref()
                                    .and_then(|d| d.get(&key))
                                    .map(|b| Zeroizing::new(b.0.clone()))
                            }),
                        version_of(&cm.metadata),
                    )),
                    Ok(None) => None,
                    Err(e) => return Err(input(crate::errors::kube_message(&e))),
                }
            }
            ValuesKind::Secret => {
                match Api::<Secret>::namespaced(client.clone(), &ns)
                    .get_opt(&v.name)
                    .await
                {
                    Ok(Some(mut secret)) => {
                        let value = secret
                            .data
                            .as_mut()
                            .and_then(|d| d.get_mut(&key))
                            .map(|b| Zeroizing::new(std::mem::take(&mut b.0)));
                        if let Some(d) = secret.data.as_mut() {
                            d.values_mut().for_each(|v| v.0.zeroize());
                        }
                        Some((value, version_of(&secret.metadata)))
                    }
                    Ok(None) => None,
                    Err(e) => return Err(input(crate::errors::kube_message(&e))),
                }
            }
        };
        match found {
            Some((Some(bytes), version)) => values_from.push(FromObject {
                name: format!("{object} key {key}"),
                bytes,
                target_path: v.target_path.clone(),
                secret: v.kind == ValuesKind::Secret,
                version,
            }),
            Some((None, _)) if !optional => return Err(input(format!("has no key {key:?} (valuesKey)"))),
            None if !optional => {
                return Err(input("not found (set optional: true to go on without it)".into()));
            }
            _ => {}
        }
    }
    let base = s.spec.source.path.clone().unwrap_or_default();
    let mut values_files = Vec::new();
    for (i, f) in h.values_files.iter().enumerate() {
        values_files.push(
            lockstep_kustomize::paths::join(&base, f).ok_or_else(|| Error::SpecInput {
                field: format!("spec.helm.valuesFiles[{i}]"),
                object: f.clone(),
                message: "leaves the repository (paths are relative to spec.source.path)".into(),
            })?,
        );
    }
    let mut repositories = Vec::new();
    for r in &h.repositories {
        let c = crate::api::ChartRef {
            repository: r.url.clone(),
            secret_ref: Some(r.secret_ref.clone()),
            ..Default::default()
        };
        repositories.push((
            r.url.trim_end_matches('/').to_owned(),
            chart_source(&c, client, &ns).await?,
        ));
    }
    Ok(HelmSync {
        chart,
        repositories,
        config: HelmConfig {
            release_name: h.release_name.clone().unwrap_or_else(|| s.name_any()),
            namespace: s.spec.target_namespace.clone().unwrap_or_else(|| ns.clone()),
            values_files,
            values_from,
            values: h.values.clone(),
            set: h
                .set
                .iter()
                .map(|p| (format!("{}={}", p.name, p.value), p.force_string == Some(true)))
                .collect(),
            include_crds: h.include_crds != Some(false),
            kube_version: h.kube_version.clone(),
            api_versions: h.api_versions.clone(),
            skip_tests: h.skip_tests == Some(true),
            post_renderers: h
                .post_renderers
                .iter()
                .filter_map(|p| p.kustomize.clone())
                .collect(),
        },
    })
}

/// `uid/resourceVersion`: what stands for an object's content in a Helm Sync's inputs.
fn version_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.uid.as_deref().unwrap_or_default(),
        m.resource_version.as_deref().unwrap_or_default()
    )
}

/// A chart repository's source, with its credentials and CA.
async fn chart_source(
    c: &crate::api::ChartRef,
    client: &kube::Client,
    ns: &str,
) -> Result<ChartSource, Error> {
    let timeout = std::time::Duration::from_secs(60);
    let mut ca_pem = None;
    let mut entries = BTreeMap::new();
    if let Some(r) = &c.secret_ref {
        let found = secret(client, ns, &r.name, "spec.helm.chart.secretRef").await?;
        entries = found.data.unwrap_or_default();
    }
    if let Some(r) = &c.cert_secret_ref {
        let found = secret(client, ns, &r.name, "spec.helm.chart.certSecretRef").await?;
        let mut data = found.data.unwrap_or_default();
        ca_pem = data.remove("ca.crt").map(|b| b.0);
        data.values_mut().for_each(|v| v.0.zeroize());
    }
    if ca_pem.is_none() {
        ca_pem = entries.get("ca.crt").map(|b| b.0.clone());
    }
    let object = c
        .secret_ref
        .as_ref()
        .map(|r| format!("Secret {ns}/{}", r.name))
        .unwrap_or_default();
    let input = |message: String| Error::SpecInput {
        field: "spec.helm.chart.secretRef".into(),
        object: object.clone(),
        message,
    };
    let text = |entries: &BTreeMap<String, k8s_openapi::ByteString>,
                k: &str|
     -> Result<Option<Zeroizing<String>>, Error> {
        entries
            .get(k)
            .map(|b| {
                String::from_utf8(b.0.clone())
                    .map(Zeroizing::new)
                    .map_err(|_| input(format!("entry {k} is not UTF-8 text")))
            })
            .transpose()
    };
    let result = if c.repository.starts_with("oci://") {
        let host = c.repository["oci://".len()..]
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let auth = match (
            text(&entries, "username")?,
            text(&entries, "password")?,
            text(&entries, ".dockerconfigjson")?,
        ) {
            (Some(u), Some(p), _) => Some((u.to_string(), p)),
            (_, _, Some(config)) => Some(docker_auth(&config, &host).map_err(input)?),
            _ if c.secret_ref.is_some() => {
                return Err(input(
                    "expected a kubernetes.io/dockerconfigjson Secret (.dockerconfigjson), or username and password".into(),
                ));
            }
            _ => None,
        };
        ChartSource::Oci(OciChart {
            repository: c.repository.clone(),
            name: c.name.clone(),
            version: c.version.clone(),
            digest: c.digest.clone(),
            auth,
            ca_pem,
            plain_http: false,
            timeout,
        })
    } else {
        let auth = match (
            text(&entries, "username")?,
            text(&entries, "password")?,
            text(&entries, "bearerToken")?,
        ) {
            (Some(u), Some(p), _) => Some(Auth::Basic {
                username: u.to_string(),
                password: p,
            }),
            (_, _, Some(t)) => Some(Auth::Bearer(t)),
            _ if c.secret_ref.is_some() && !entries.contains_key("ca.crt") => {
                return Err(input(
                    "expected username and password, or bearerToken (and optionally ca.crt)".into(),
                ));
            }
            _ => None,
        };
        ChartSource::Repository {
            repo: Repository {
                url: c.repository.clone(),
                auth,
                ca_pem,
                timeout,
            },
            name: c.name.clone(),
            version: c.version.clone(),
        }
    };
    entries.values_mut().for_each(|v| v.0.zeroize());
    Ok(result)
}

/// The (username, password) a `.dockerconfigjson` has for `host` (`auths[host]`, with
/// `username`/`password` or `auth`, base64 of `user:password`).
pub fn docker_auth(config: &str, host: &str) -> Result<(String, Zeroizing<String>), String> {
    let v: Zeroizing<String> = Zeroizing::new(config.to_owned());
    let json: serde_json::Value =
        serde_json::from_str(&v).map_err(|_| "entry .dockerconfigjson is not JSON".to_owned())?;
    let auths = json.get("auths").and_then(serde_json::Value::as_object);
    let entry = auths
        .and_then(|a| {
            a.iter().find(|(k, _)| {
                let k = k.trim_start_matches("https://").trim_start_matches("http://");
                k.split('/').next() == Some(host)
            })
        })
        .map(|(_, e)| e)
        .ok_or_else(|| format!(".dockerconfigjson has no auths entry for {host}"))?;
    let s = |k: &str| entry.get(k).and_then(serde_json::Value::as_str);
    if let (Some(u), Some(p)) = (s("username"), s("password")) {
        return Ok((u.to_owned(), Zeroizing::new(p.to_owned())));
    }
    let auth = s("auth")
        .ok_or_else(|| format!(".dockerconfigjson auths[{host}] has neither username/password nor auth"))?;
    let decoded = Zeroizing::new(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, auth)
            .map_err(|_| format!(".dockerconfigjson auths[{host}].auth is not base64"))?,
    );
    let text = std::str::from_utf8(&decoded)
        .map_err(|_| format!(".dockerconfigjson auths[{host}].auth is not UTF-8"))?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| format!(".dockerconfigjson auths[{host}].auth is not user:password"))?;
    Ok((u.to_owned(), Zeroizing::new(p.to_owned())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::{GitRef, HistoryEntry};

    fn sync(ns: &str, target: Option<&str>) -> Sync {
        let mut s = Sync::new("apps", crate::api::SyncSpec::default());
        s.metadata.namespace = Some(ns.into());
        s.spec.target_namespace = target.map(str::to_owned);
        s
    }

    #[test]
    fn tenant_isolation_confines_syncs_outside_the_agents_namespace() {
        // Off: nobody is confined.
        assert_eq!(confinement(&sync("team-a", Some("prod")), None).unwrap(), None);
        // On: the agent's own Syncs are not; the others are, to their namespace.
        let on = Some("lockstep-system");
        assert_eq!(
            confinement(&sync("lockstep-system", Some("prod")), on).unwrap(),
            None
        );
        assert_eq!(
            confinement(&sync("team-a", None), on).unwrap().as_deref(),
            Some("team-a")
        );
        assert_eq!(
            confinement(&sync("team-a", Some("team-a")), on)
                .unwrap()
                .as_deref(),
            Some("team-a")
        );
        let err = confinement(&sync("team-a", Some("prod")), on).unwrap_err();
        assert_eq!(err.reason(), Reason::Unsupported);
        let err = err.to_string();
        assert!(
            err.contains("spec.targetNamespace \"prod\"") && err.contains("own namespace \"team-a\""),
            "{err}"
        );
    }

    #[test]
    fn the_reference_is_exactly_one_of_four() {
        let mut s = sync("x", None);
        assert_eq!(reference(&s).unwrap(), Reference::Branch("main".into()));
        s.spec.source.reference = Some(GitRef {
            semver: Some("~1".into()),
            ..GitRef::default()
        });
        assert_eq!(reference(&s).unwrap(), Reference::Semver("~1".into()));
        s.spec.source.reference = Some(GitRef {
            tag: Some("v1".into()),
            commit: Some("abc".into()),
            ..GitRef::default()
        });
        let e = reference(&s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.source.ref: set exactly one of branch, tag, semver, commit"
        );
        assert!(e.reason().stalls());
    }

    #[test]
    fn a_poll_skips_the_commit_last_applied_with_the_same_spec() {
        let mut s = sync("x", None);
        s.metadata.generation = Some(3);
        let mut st = SyncStatus {
            observed_generation: Some(3),
            last_applied_revision: Some("main@sha1:abc".into()),
            history: vec![HistoryEntry {
                result: "Succeeded".into(),
                ..HistoryEntry::default()
            }],
            ..SyncStatus::default()
        };
        assert_eq!(unchanged_commit(&s, &st).as_deref(), Some("abc"));
        s.metadata.generation = Some(4);
        assert_eq!(unchanged_commit(&s, &st), None, "the spec changed");
        s.metadata.generation = Some(3);
        st.history[0].result = "ApplyFailed".into();
        assert_eq!(unchanged_commit(&s, &st), None, "the last attempt failed");
    }

    #[test]
    fn the_spec_becomes_a_configuration() {
        let mut s = sync("apps", Some("web"));
        s.spec.source.url = "https://git.example.com/r.git".into();
        s.spec.source.path = Some("clusters/prod".into());
        s.spec.prune_budget_percent = Some(20);
        s.spec.wait = Some(true);
        s.spec.timeout = Some("2m".into());
        let cfg = config(&s, None).unwrap();
        assert_eq!(cfg.owner, "apps.apps");
        assert_eq!(cfg.path, "clusters/prod");
        assert_eq!(cfg.target_namespace.as_deref(), Some("web"));
        assert!(cfg.prune && !cfg.allow_mass_deletion && !cfg.create_namespace);
        assert!((cfg.prune_budget - 0.2).abs() < f64::EPSILON);
        assert_eq!(cfg.wait, Some(std::time::Duration::from_secs(120)));
    }
}
