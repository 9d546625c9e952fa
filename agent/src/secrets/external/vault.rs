//! HashiCorp Vault and OpenBao KV (v1 and v2) with vaultrs. Paths are built as ESO builds them;
//! tokens from a login are kept and reused until 80 % of their TTL has passed (ESO logs in and
//! revokes on every reconcile unless told otherwise), and a 403 with a cached token logs in
//! once more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::Zeroizing;

use super::{Calls, Fetched};

/// How to get a token.
#[derive(Clone)]
pub enum Login {
    /// A token as it is.
    Token(Zeroizing<String>),
    /// AppRole.
    AppRole {
        /// Mount.
        mount: String,
        /// Role id.
        role_id: Zeroizing<String>,
        /// Secret id.
        secret_id: Zeroizing<String>,
    },
    /// Kubernetes service-account JWT.
    Kubernetes {
        /// Mount.
        mount: String,
        /// Vault role.
        role: String,
        /// The JWT.
        jwt: Zeroizing<String>,
    },
}

impl Login {
    /// A cache key: the method and who logs in, hashed (never the secret itself).
    fn cache_key(&self, server: &str, namespace: Option<&str>) -> String {
        use sha2::Digest;
        let who = match self {
            Login::Token(t) => format!("token:{}", t.as_str()),
            Login::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                format!("approle:{mount}:{}:{}", role_id.as_str(), secret_id.as_str())
            }
            Login::Kubernetes { mount, role, jwt } => format!("k8s:{mount}:{role}:{}", jwt.as_str()),
        };
        let who = Zeroizing::new(who);
        format!(
            "{server}|{}|{}",
            namespace.unwrap_or_default(),
            hex::encode(sha2::Sha256::digest(who.as_bytes()))
        )
    }
}

/// A token and when to stop using it.
type Cached = (Zeroizing<String>, Instant);

/// Tokens obtained by logging in, shared by every store of the agent.
#[derive(Clone, Default)]
pub struct TokenCache(Arc<Mutex<HashMap<String, Cached>>>);

/// A KV client for one store.
pub struct Vault {
    server: String,
    mount: Option<String>,
    v2: bool,
    namespace: Option<String>,
    auth_namespace: Option<String>,
    login: Login,
    ca_file: Option<tempfile::NamedTempFile>,
    tokens: TokenCache,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// A client. `ca_pem` (public certificates) is written to a temporary file, which is how
    /// vaultrs takes CAs.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: &str,
        mount: Option<&str>,
        version: Option<&str>,
        namespace: Option<&str>,
        auth_namespace: Option<&str>,
        login: Login,
        ca_pem: Option<&[u8]>,
        tokens: TokenCache,
    ) -> Result<Self, String> {
        reqwest::Url::parse(server).map_err(|e| format!("server {server:?} is not a URL: {e}"))?;
        let v2 = match version.unwrap_or("v2") {
            "v2" => true,
            "v1" => false,
            other => return Err(format!("version {other:?}: expected v1 or v2")),
        };
        let ca_file = match ca_pem {
            None => None,
            Some(pem) => {
                use std::io::Write;
                let mut f = tempfile::NamedTempFile::new().map_err(|e| format!("caBundle: {e}"))?;
                f.write_all(pem).map_err(|e| format!("caBundle: {e}"))?;
                Some(f)
            }
        };
        Ok(Self {
            server: server.to_owned(),
            mount: mount
                .map(|m| m.trim_matches('/').to_owned())
                .filter(|m| !m.is_empty()),
            v2,
            namespace: namespace.map(str::to_owned),
            auth_namespace: auth_namespace.or(namespace).map(str::to_owned),
            login,
            ca_file,
            tokens,
        })
    }

    fn client(&self, token: &str, namespace: Option<&str>) -> Result<VaultClient, String> {
        let mut b = VaultClientSettingsBuilder::default();
        b.address(&self.server)
            .token(token)
            .timeout(Some(Duration::from_secs(30)));
        if let Some(ns) = namespace {
            b.set_namespace(ns.to_owned());
        }
        if let Some(f) = &self.ca_file {
            b.ca_certs(vec![f.path().display().to_string()]);
        }
        let settings = b.build().map_err(|e| e.to_string())?;
        VaultClient::new(settings).map_err(|e| e.to_string())
    }

    /// A token: the store's own, or a cached login, or a new login.
    async fn token(&self, calls: &Calls, fresh: bool) -> Result<Zeroizing<String>, String> {
        if let Login::Token(t) = &self.login {
            return Ok(t.clone());
        }
        let key = self.login.cache_key(&self.server, self.auth_namespace.as_deref());
        let mut cache = self.tokens.0.lock().await;
        if !fresh && let Some((t, _)) = cache.get(&key).filter(|(_, until)| Instant::now() < *until) {
            return Ok(t.clone());
        }
        let client = self.client("", self.auth_namespace.as_deref())?;
        calls.count("vault", "Login");
        let info = match &self.login {
            Login::AppRole {
                mount,
                role_id,
                secret_id,
            } => vaultrs::auth::approle::login(&client, mount, role_id, secret_id).await,
            Login::Kubernetes { mount, role, jwt } => {
                vaultrs::auth::kubernetes::login(&client, mount, role, jwt).await
            }
            Login::Token(t) => return Ok(t.clone()),
        }
        .map_err(|e| format!("login: {}", vault_message(&e)))?;
        let token = Zeroizing::new(info.client_token);
        let ttl = Duration::from_secs(info.lease_duration.max(1));
        cache.insert(key, (token.clone(), Instant::now() + ttl.mul_f64(0.8)));
        Ok(token)
    }

    /// `(mount, path)` of a key, as ESO's `buildPath` does.
    fn split(&self, key: &str) -> Result<(String, String), String> {
        let key = key.trim_start_matches('/');
        match &self.mount {
            Some(m) => {
                let mut k = key.strip_prefix(&format!("{m}/")).unwrap_or(key);
                if self.v2 {
                    k = k.strip_prefix("data/").unwrap_or(k);
                }
                Ok((m.clone(), k.to_owned()))
            }
            None => {
                let (m, rest) = key.split_once('/').ok_or_else(|| {
                    format!("key {key:?} names no mount (set the store's path, or use <mount>/<path>)")
                })?;
                let rest = if self.v2 {
                    rest.strip_prefix("data/").unwrap_or(rest)
                } else {
                    rest
                };
                Ok((m.to_owned(), rest.to_owned()))
            }
        }
    }

    /// Reads `(key, version)` pairs: each the secret's data as a JSON object (keys sorted).
    pub async fn read_many(&self, reads: &[(String, Option<String>)], calls: &Calls) -> Vec<Fetched> {
        let mut out = Vec::with_capacity(reads.len());
        for (key, version) in reads {
            out.push(self.read_one(key, version.as_deref(), calls).await);
        }
        out
    }

    async fn read_one(&self, key: &str, version: Option<&str>, calls: &Calls) -> Fetched {
        let (mount, path) = match self.split(key) {
            Ok(x) => x,
            Err(m) => return Fetched::Failed(m),
        };
        let version = match version.map(str::parse::<u64>).transpose() {
            Ok(v) => v,
            Err(_) => return Fetched::Failed(format!("version of {key}: a KV v2 version is a number")),
        };
        let mut fresh = false;
        loop {
            let token = match self.token(calls, fresh).await {
                Ok(t) => t,
                Err(m) => return Fetched::Failed(m),
            };
            let client = match self.client(&token, self.namespace.as_deref()) {
                Ok(c) => c,
                Err(m) => return Fetched::Failed(m),
            };
            calls.count("vault", "ReadSecretData");
            let r: Result<serde_json::Value, ClientError> = match (self.v2, version) {
                (true, Some(v)) => vaultrs::kv2::read_version(&client, &mount, &path, v).await,
                (true, None) => vaultrs::kv2::read(&client, &mount, &path).await,
                (false, _) => vaultrs::kv1::get(&client, &mount, &path).await,
            };
            return match r {
                Ok(serde_json::Value::Null) => Fetched::NotFound,
                Ok(v) => {
                    // Sorted keys, as Go's json.Marshal writes a map.
                    let sorted: std::collections::BTreeMap<String, serde_json::Value> =
                        serde_json::from_value(v).unwrap_or_default();
                    match serde_json::to_vec(&sorted) {
                        Ok(b) => Fetched::Value(Zeroizing::new(b)),
                        Err(e) => Fetched::Failed(e.to_string()),
                    }
                }
                Err(ClientError::APIError { code: 404, .. }) => Fetched::NotFound,
                Err(ClientError::APIError { code: 403, .. })
                    if !fresh && !matches!(self.login, Login::Token(_)) =>
                {
                    fresh = true;
                    continue;
                }
                Err(e) => Fetched::Failed(format!("reading {mount}/{path}: {}", vault_message(&e))),
            };
        }
    }
}

fn vault_message(e: &ClientError) -> String {
    match e {
        ClientError::APIError { code, errors } if errors.is_empty() => format!("HTTP {code}"),
        ClientError::APIError { code, errors } => format!("HTTP {code}: {}", errors.join("; ")),
        other => crate::errors::chain(other),
    }
}
