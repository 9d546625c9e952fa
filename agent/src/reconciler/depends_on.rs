//! `dependsOn` (pure, over the controller's cache of Syncs): who depends on whom, whether a
//! Sync's dependencies let it be applied now, and cycles, which stall every Sync on them.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::Sync;
use crate::api::conditions::{HEALTHY, READY, TRUE};

/// The Syncs in `all` that depend on `s` (pure).
pub fn dependents(all: &[Arc<Sync>], s: &Sync) -> Vec<ObjectRef<Sync>> {
    let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
    all.iter()
        .filter(|d| {
            let own = d.namespace().unwrap_or_default();
            d.spec
                .depends_on
                .iter()
                .any(|r| r.name == name && r.namespace.as_deref().unwrap_or(&own) == ns)
        })
        .map(|d| ObjectRef::from_obj(&**d))
        .collect()
}

/// Why a Sync may not be applied yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// A dependency is missing, not reconciled at its generation, not `Ready` or not `Healthy`.
    Waiting(String),
    /// The dependencies form a cycle through this Sync (it can never run).
    Cycle(String),
}

/// `(namespace, name)` of a Sync.
type SyncKey = (String, String);

/// Whether `s`'s dependencies let it be applied now (pure, over `lookup(namespace, name)`).
pub fn blocked(s: &Sync, lookup: &dyn Fn(&str, &str) -> Option<Arc<Sync>>) -> Option<Blocked> {
    let ns = s.namespace().unwrap_or_default();
    let key = |d: &crate::api::DependencyRef, own: &str| {
        (
            d.namespace.clone().unwrap_or_else(|| own.to_owned()),
            d.name.clone(),
        )
    };
    // Depth-first from `s`: a path back to `s` is a cycle.
    let me = (ns.clone(), s.name_any());
    let mut stack: Vec<(Vec<SyncKey>, SyncKey)> = s
        .spec
        .depends_on
        .iter()
        .map(|d| (vec![me.clone()], key(d, &ns)))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some((path, next)) = stack.pop() {
        if next == me {
            let names: Vec<String> = path
                .iter()
                .chain(std::iter::once(&me))
                .map(|(n, m)| format!("{n}/{m}"))
                .collect();
            return Some(Blocked::Cycle(format!(
                "spec.dependsOn: the dependencies form a cycle: {}",
                names.join(" → ")
            )));
        }
        if !seen.insert(next.clone()) {
            continue;
        }
        if let Some(d) = lookup(&next.0, &next.1) {
            let own = d.namespace().unwrap_or_default();
            let mut p = path.clone();
            p.push(next.clone());
            stack.extend(d.spec.depends_on.iter().map(|r| (p.clone(), key(r, &own))));
        }
    }
    for d in &s.spec.depends_on {
        let (dns, dname) = key(d, &ns);
        let why = match lookup(&dns, &dname) {
            None => "does not exist".to_owned(),
            Some(dep) => match dependency_ready(&dep) {
                Ok(()) => continue,
                Err(why) => why,
            },
        };
        return Some(Blocked::Waiting(format!("dependency {dns}/{dname} {why}")));
    }
    None
}

/// Whether a dependency is ready for its dependents (pure): reconciled at its current
/// generation, `Ready`, and `Healthy` when it reports health.
fn dependency_ready(d: &Sync) -> Result<(), String> {
    let Some(st) = &d.status else {
        return Err("has not been reconciled yet".into());
    };
    if st.observed_generation != d.metadata.generation {
        return Err(format!(
            "has not reconciled its generation {} yet",
            d.metadata.generation.unwrap_or_default()
        ));
    }
    let cond = |t: &str| st.conditions.iter().find(|c| c.type_ == t);
    match cond(READY) {
        Some(c) if c.status == TRUE => {}
        Some(c) => return Err(format!("is not ready ({}: {})", c.reason, c.message)),
        None => return Err("is not ready".into()),
    }
    match cond(HEALTHY) {
        Some(c) if c.status != TRUE => Err(format!("is not healthy ({}: {})", c.reason, c.message)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, SyncStatus};

    fn with_deps(ns: &str, name: &str, deps: &[(&str, Option<&str>)]) -> Arc<Sync> {
        let mut s = Sync::new(name, crate::api::SyncSpec::default());
        s.metadata.namespace = Some(ns.into());
        s.metadata.generation = Some(1);
        s.spec.depends_on = deps
            .iter()
            .map(|(n, m)| crate::api::DependencyRef {
                name: (*n).into(),
                namespace: m.map(Into::into),
            })
            .collect();
        Arc::new(s)
    }

    fn with_conditions(s: &Arc<Sync>, observed: i64, conds: &[(&str, &str)]) -> Arc<Sync> {
        let mut s = (**s).clone();
        s.status = Some(SyncStatus {
            observed_generation: Some(observed),
            conditions: conds
                .iter()
                .map(|(t, st)| Condition {
                    type_: (*t).into(),
                    status: (*st).into(),
                    reason: "R".into(),
                    message: "m".into(),
                    ..Condition::default()
                })
                .collect(),
            ..SyncStatus::default()
        });
        Arc::new(s)
    }

    #[test]
    fn dependencies_gate_a_sync_until_ready_and_healthy_and_cycles_stall() {
        let app = with_deps("apps", "app", &[("infra", Some("ops")), ("db", None)]);
        let mut all: Vec<Arc<Sync>> = vec![app.clone()];
        let lookup_in = |all: &Vec<Arc<Sync>>| {
            let all = all.clone();
            move |ns: &str, name: &str| {
                all.iter()
                    .find(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == name)
                    .cloned()
            }
        };
        let b = blocked(&app, &lookup_in(&all));
        assert_eq!(
            b,
            Some(Blocked::Waiting("dependency ops/infra does not exist".into()))
        );
        let infra = with_deps("ops", "infra", &[]);
        all.push(infra.clone());
        let Some(Blocked::Waiting(m)) = blocked(&app, &lookup_in(&all)) else {
            panic!()
        };
        assert!(m.contains("has not been reconciled yet"), "{m}");
        all[1] = with_conditions(&infra, 0, &[("Ready", "True")]);
        let Some(Blocked::Waiting(m)) = blocked(&app, &lookup_in(&all)) else {
            panic!()
        };
        assert!(m.contains("generation 1"), "{m}");
        all[1] = with_conditions(&infra, 1, &[("Ready", "True"), ("Healthy", "Unknown")]);
        let Some(Blocked::Waiting(m)) = blocked(&app, &lookup_in(&all)) else {
            panic!()
        };
        assert!(m.contains("is not healthy"), "{m}");
        all[1] = with_conditions(&infra, 1, &[("Ready", "True"), ("Healthy", "True")]);
        let Some(Blocked::Waiting(m)) = blocked(&app, &lookup_in(&all)) else {
            panic!()
        };
        assert_eq!(m, "dependency apps/db does not exist");
        all.push(with_conditions(
            &with_deps("apps", "db", &[]),
            1,
            &[("Ready", "True")],
        ));
        assert_eq!(blocked(&app, &lookup_in(&all)), None);
        // Who is triggered when infra changes.
        let deps = dependents(&all, &infra);
        assert_eq!(deps, vec![ObjectRef::from_obj(&*app)]);
        assert!(dependents(&all, &app).is_empty());
        // A cycle through app: app → db → app.
        all[2] = with_conditions(
            &with_deps("apps", "db", &[("app", None)]),
            1,
            &[("Ready", "True")],
        );
        let Some(Blocked::Cycle(m)) = blocked(&app, &lookup_in(&all)) else {
            panic!()
        };
        assert_eq!(
            m,
            "spec.dependsOn: the dependencies form a cycle: apps/app → apps/db → apps/app"
        );
    }
}
