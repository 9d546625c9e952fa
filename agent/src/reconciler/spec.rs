//! Spec → configuration: what a sync of a Sync needs, read from its spec and the Secrets it
//! names (repository credentials, SOPS identities), and the rules that are pure: the reference,
//! tenant confinement, and the commit a poll may skip.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use zeroize::Zeroize;

use super::Error;
use crate::api::{RECONCILE_ANNOTATION, Reason, Sync, SyncStatus};
use crate::plan::{Inventory, ObjectId};
use crate::secrets::DecryptionKeys;
use crate::secrets::sealing::LiveKeys;
use crate::source::{Credentials, Reference, credentials_from};
use crate::sync::Config;

/// The reference `spec.source.ref` names: exactly one of branch, tag, semver and commit;
/// branch `main` when none is.
pub fn reference(s: &Sync) -> Result<Reference, Error> {
    let Some(r) = &s.spec.source.reference else {
        return Ok(Reference::Branch("main".into()));
    };
    match (&r.branch, &r.tag, &r.semver, &r.commit) {
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
    Ok(Config {
        reference: reference(s)?,
        path: s.spec.source.path.clone().unwrap_or_default(),
        target_namespace: s.spec.target_namespace.clone(),
        create_namespace: s.spec.create_namespace == Some(true),
        prune: s.spec.prune != Some(false),
        prune_budget: f64::from(s.spec.prune_budget_percent.unwrap_or(50)) / 100.0,
        allow_mass_deletion: s.spec.allow_mass_deletion == Some(true),
        skip_if_commit: s.status.as_ref().and_then(|st| unchanged_commit(s, st)),
        wait: (s.spec.wait == Some(true)).then(|| super::schedule::timeout(s)),
        ignore: s.spec.ignore.clone(),
        tenant,
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
    let last = s.status.as_ref().map(inventory_of).unwrap_or_default();
    Ok((cfg, keys, last))
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
