//! Stores: a SecretStore or ClusterSecretStore (from the revision or the cluster) resolved into
//! a provider client with its credentials, once per batch; the store's own status.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use zeroize::Zeroizing;

use super::{Backend, BackendKey, Engine, LocalStores};
use crate::api::conditions::{FALSE, TRUE};
use crate::secrets::external::api::{
    ClusterSecretStore, Provider, READY, STORE_INVALID, STORE_VALID, SecretKeySelector, SecretStore, StoreRef,
};
use crate::secrets::external::plan;
use crate::secrets::external::vault::{Login, Vault};
use crate::secrets::external::{aws::Aws, esc::Esc};

impl Engine {
    /// Resolves a store for an ExternalSecret in `ns` into a backend (cached per batch).
    pub(super) async fn backend(
        &self,
        cache: &mut HashMap<BackendKey, Result<Arc<Backend>, String>>,
        store: &StoreRef,
        ns: &str,
        local: &LocalStores,
    ) -> Result<BackendKey, String> {
        let cluster = store.is_cluster();
        let kind = if cluster {
            "ClusterSecretStore"
        } else {
            "SecretStore"
        };
        let key: BackendKey = (
            kind.to_owned(),
            if cluster { String::new() } else { ns.to_owned() },
            store.name.clone(),
            ns.to_owned(),
        );
        if !cache.contains_key(&key) {
            let r = self.make_backend(store, ns, local).await.map(Arc::new);
            cache.insert(key.clone(), r);
        }
        match &cache[&key] {
            Ok(_) => Ok(key),
            Err(m) => Err(m.clone()),
        }
    }

    async fn make_backend(&self, store: &StoreRef, ns: &str, local: &LocalStores) -> Result<Backend, String> {
        let (provider, creds_ns, is_cluster) = if store.is_cluster() {
            let css = match local.cluster.get(&store.name) {
                Some(s) => s.clone(),
                None => Api::<ClusterSecretStore>::all(self.client.clone())
                    .get_opt(&store.name)
                    .await
                    .map_err(|e| format!("reading ClusterSecretStore {}: {e}", store.name))?
                    .ok_or_else(|| format!("ClusterSecretStore {:?} does not exist", store.name))?,
            };
            let labels = Api::<Namespace>::all(self.client.clone())
                .get_opt(ns)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.metadata.labels)
                .unwrap_or_default();
            if !plan::namespace_allowed(&css.spec.store.conditions, ns, &labels) {
                return Err(format!(
                    "using cluster store {:?} is not allowed from namespace {ns:?}: denied by spec.conditions",
                    store.name
                ));
            }
            (css.spec.store.provider, ns.to_owned(), true)
        } else {
            let ss = match local.namespaced.get(&(ns.to_owned(), store.name.clone())) {
                Some(s) => s.clone(),
                None => Api::<SecretStore>::namespaced(self.client.clone(), ns)
                    .get_opt(&store.name)
                    .await
                    .map_err(|e| format!("reading SecretStore {ns}/{}: {e}", store.name))?
                    .ok_or_else(|| {
                        format!("SecretStore {:?} does not exist in namespace {ns:?}", store.name)
                    })?,
            };
            (ss.spec.provider, ns.to_owned(), false)
        };
        let what = format!(
            "{} {:?}",
            if is_cluster {
                "ClusterSecretStore"
            } else {
                "SecretStore"
            },
            store.name
        );
        let made = self.provider(&provider, &creds_ns, is_cluster).await;
        self.report_store(is_cluster, ns, &store.name, made.as_ref().err())
            .await;
        made.map_err(|m| format!("{what} is not ready: {m}"))
    }

    /// Writes a store's `Ready` condition as ESO does (`Valid`, or `InvalidProviderConfig` with
    /// the reason), when it differs from what this engine last wrote.
    async fn report_store(&self, cluster: bool, ns: &str, name: &str, error: Option<&String>) {
        let key = (cluster, if cluster { "" } else { ns }.to_owned(), name.to_owned());
        let (status, reason, message) = match error {
            None => (TRUE, STORE_VALID, "store validated".to_owned()),
            Some(m) => (FALSE, STORE_INVALID, m.clone()),
        };
        {
            let mut last = self
                .stores
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.get(&key) == Some(&message) {
                return;
            }
            last.insert(key, message.clone());
        }
        let patch = Patch::Merge(json!({ "status": {
            "conditions": [{ "type": READY, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": lockstep_formats::sops::now_rfc3339() }],
            "capabilities": "ReadOnly" } }));
        let pp = PatchParams::default();
        let written = if cluster {
            Api::<ClusterSecretStore>::all(self.client.clone())
                .patch_status(name, &pp, &patch)
                .await
                .map(drop)
        } else {
            Api::<SecretStore>::namespaced(self.client.clone(), ns)
                .patch_status(name, &pp, &patch)
                .await
                .map(drop)
        };
        if let Err(e) = written {
            tracing::debug!(store = name, namespace = ns, error = %e, "could not write store status");
        }
        if let Some(m) = error {
            tracing::warn!(store = name, namespace = ns, message = %m, "store not ready");
        }
    }

    async fn provider(&self, p: &Provider, ns: &str, cluster: bool) -> Result<Backend, String> {
        if let Some(a) = &p.aws {
            if a.service != "SecretsManager" {
                return Err(format!(
                    "spec.provider.aws.service {:?}: only SecretsManager is supported",
                    a.service
                ));
            }
            if a.role.is_some() {
                return Err("spec.provider.aws.role: assuming a role is not supported yet".into());
            }
            let keys = match a.auth.as_ref() {
                Some(auth) if auth.jwt.is_some() => {
                    return Err("spec.provider.aws.auth.jwt is not supported yet; use the agent's own IRSA role (the default chain) or secretRef".into());
                }
                Some(auth) => match &auth.secret_ref {
                    Some(r) => Some(crate::secrets::external::aws::StaticKeys {
                        access_key_id: self
                            .secret_value(&r.access_key_id_secret_ref, ns, cluster)
                            .await?,
                        secret_access_key: self
                            .secret_value(&r.secret_access_key_secret_ref, ns, cluster)
                            .await?,
                        session_token: match &r.session_token_secret_ref {
                            Some(t) => Some(self.secret_value(t, ns, cluster).await?),
                            None => None,
                        },
                    }),
                    None => None,
                },
                None => None,
            };
            let endpoint = self
                .aws_endpoint
                .clone()
                .or_else(|| std::env::var("AWS_SECRETSMANAGER_ENDPOINT").ok());
            return Ok(Backend::Aws(
                Aws::new(&a.region, a.prefix.as_deref(), keys, endpoint.as_deref()).await,
            ));
        }
        if let Some(v) = p.vault.as_ref().or(p.open_bao.as_ref()) {
            let auth = &v.auth;
            let login = if let Some(t) = &auth.token_secret_ref {
                Login::Token(self.secret_value(t, ns, cluster).await?)
            } else if let Some(a) = &auth.app_role {
                let role_id = match (&a.role_id, &a.role_ref) {
                    (Some(r), _) => Zeroizing::new(r.clone()),
                    (None, Some(r)) => self.secret_value(r, ns, cluster).await?,
                    (None, None) => {
                        return Err("spec.provider.vault.auth.appRole: roleId or roleRef is required".into());
                    }
                };
                Login::AppRole {
                    mount: a.path.clone().unwrap_or_else(|| "approle".into()),
                    role_id,
                    secret_id: self.secret_value(&a.secret_ref, ns, cluster).await?,
                }
            } else if let Some(k) = &auth.kubernetes {
                let jwt = match (&k.service_account_ref, &k.secret_ref) {
                    (Some(sa), _) => {
                        let sa_ns = if cluster {
                            sa.namespace.clone().unwrap_or_else(|| ns.to_owned())
                        } else {
                            ns.to_owned()
                        };
                        self.service_account_token(&sa.name, &sa_ns, &sa.audiences)
                            .await?
                    }
                    (None, Some(r)) => {
                        let mut r = r.clone();
                        if r.key.is_empty() {
                            r.key = "token".into();
                        }
                        self.secret_value(&r, ns, cluster).await?
                    }
                    (None, None) => {
                        // The agent's own token, as ESO uses its pod's.
                        Zeroizing::new(
                            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/token")
                                .map_err(|_| "spec.provider.vault.auth.kubernetes: no serviceAccountRef or secretRef, and the agent has no service-account token".to_owned())?,
                        )
                    }
                };
                Login::Kubernetes {
                    mount: k.mount_path.clone().unwrap_or_else(|| "kubernetes".into()),
                    role: k.role.clone(),
                    jwt,
                }
            } else if let Some(other) = auth.other.keys().next() {
                return Err(format!(
                    "spec.provider.vault.auth.{other} is not supported yet (supported: tokenSecretRef, appRole, kubernetes)"
                ));
            } else {
                return Err("spec.provider.vault.auth: one method is required".into());
            };
            let ca = match (&v.ca_bundle, &v.ca_provider) {
                (Some(b), _) => {
                    use base64::Engine as _;
                    Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(b.trim())
                            .map_err(|_| "spec.provider.vault.caBundle is not base64".to_owned())?,
                    )
                }
                (None, Some(c)) if c.type_ == "Secret" => Some(
                    self.secret_value(
                        &SecretKeySelector {
                            name: c.name.clone(),
                            key: c.key.clone(),
                            namespace: c.namespace.clone(),
                        },
                        ns,
                        cluster,
                    )
                    .await?
                    .as_bytes()
                    .to_vec(),
                ),
                (None, Some(c)) => {
                    let c_ns = if cluster {
                        c.namespace.clone().unwrap_or_else(|| ns.to_owned())
                    } else {
                        ns.to_owned()
                    };
                    let cm =
                        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(self.client.clone(), &c_ns)
                            .get(&c.name)
                            .await
                            .map_err(|e| format!("caProvider ConfigMap {c_ns}/{}: {e}", c.name))?;
                    Some(
                        cm.data
                            .and_then(|d| d.get(&c.key).cloned())
                            .ok_or_else(|| {
                                format!("caProvider ConfigMap {c_ns}/{} has no key {:?}", c.name, c.key)
                            })?
                            .into_bytes(),
                    )
                }
                (None, None) => None,
            };
            return Vault::new(
                &v.server,
                v.path.as_deref(),
                v.version.as_deref(),
                v.namespace.as_deref(),
                auth.namespace.as_deref(),
                login,
                ca.as_deref(),
                self.tokens.clone(),
            )
            .map(Backend::Vault)
            .map_err(|m| format!("spec.provider.vault: {m}"));
        }
        if let Some(pu) = &p.pulumi {
            let r = pu
                .auth
                .as_ref()
                .and_then(|a| a.access_token.as_ref())
                .or(pu.access_token.as_ref())
                .ok_or("spec.provider.pulumi: auth.accessToken.secretRef is required")?;
            let token = self.secret_value(&r.secret_ref, ns, cluster).await?;
            return Ok(Backend::Esc(Esc::new(
                self.http.clone(),
                pu.api_url.as_deref(),
                &pu.organization,
                &pu.project,
                &pu.environment,
                token,
            )));
        }
        match p.other.keys().next() {
            Some(name) => Err(format!(
                "spec.provider.{name} is not supported (supported: aws, vault, openBao, pulumi)"
            )),
            None => Err("spec.provider: no provider".into()),
        }
    }

    /// A Secret key; a namespace in the selector counts only for ClusterSecretStores.
    async fn secret_value(
        &self,
        r: &SecretKeySelector,
        ns: &str,
        cluster: bool,
    ) -> Result<Zeroizing<String>, String> {
        let ns = match (&r.namespace, cluster) {
            (Some(n), true) => n.clone(),
            _ => ns.to_owned(),
        };
        let s = Api::<Secret>::namespaced(self.client.clone(), &ns)
            .get_opt(&r.name)
            .await
            .map_err(|e| format!("reading secret {ns}/{}: {e}", r.name))?
            .ok_or_else(|| format!("secret {ns}/{} does not exist", r.name))?;
        let mut s = crate::secrets::WipedSecret(s);
        let v = s.data.as_mut().and_then(|d| d.remove(&r.key));
        drop(s);
        let v = v.ok_or_else(|| format!("secret {ns}/{} has no key {:?}", r.name, r.key))?;
        String::from_utf8(v.0)
            .map(|mut s| {
                let trimmed = Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_owned());
                zeroize::Zeroize::zeroize(&mut s);
                trimmed
            })
            .map_err(|e| {
                let mut b = e.into_bytes();
                zeroize::Zeroize::zeroize(&mut b);
                format!("secret {ns}/{} key {:?} is not UTF-8 text", r.name, r.key)
            })
    }

    /// A short-lived token for a ServiceAccount (TokenRequest).
    async fn service_account_token(
        &self,
        name: &str,
        ns: &str,
        audiences: &[String],
    ) -> Result<Zeroizing<String>, String> {
        let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let req = k8s_openapi::api::authentication::v1::TokenRequest {
            spec: Some(k8s_openapi::api::authentication::v1::TokenRequestSpec {
                audiences: Some(audiences.to_vec()),
                expiration_seconds: Some(600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = api
            .create_token_request(name, &Default::default(), &req)
            .await
            .map_err(|e| format!("a token for service account {ns}/{name}: {e}"))?;
        resp.status
            .and_then(|s| s.token)
            .map(Zeroizing::new)
            .ok_or_else(|| format!("a token for service account {ns}/{name}: empty response"))
    }
}
