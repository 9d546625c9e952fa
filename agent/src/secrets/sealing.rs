//! Sealing keys in the cluster, stored exactly as Bitnami sealed-secrets stores them, so keys
//! move both ways: `kubernetes.io/tls` Secrets in the agent's namespace, named
//! `sealed-secrets-key<random>`, labelled `sealedsecrets.bitnami.com/sealed-secrets-key=active`,
//! with a PKCS#1 `tls.key` and a self-signed `tls.crt`.
//!
//! * Every `active` key decrypts; the newest (by certificate NotBefore) seals and is served.
//! * A key labelled anything else (`compromised`) is never loaded, never used.
//! * Renewal adds a key when the newest is older than the period (default 30 days) or older
//!   than a cut-off time (early renewal after a suspected compromise), or on demand. Old keys
//!   are kept: everything sealed with them must still open.
//!
//! The decision ([`renewal`]) is pure and takes `now`; the I/O is in [`KeyStore`].

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use lockstep_formats::sealed::{self, KeyRing, SealingCert, UnsealingKey};

pub use lockstep_formats::sealed::keys::{ACTIVE, KEY_LABEL, KEY_PREFIX};
/// The label value of a key that must never be used again.
pub const COMPROMISED: &str = "compromised";
/// Default renewal period (sealed-secrets' `--key-renew-period`).
pub const DEFAULT_RENEW_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A key Secret is unusable.
    #[error("{0}")]
    Format(#[from] lockstep_formats::Error),
}

/// What the key store should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// A new key is due.
    Now,
    /// Nothing to do until this time (seconds since the epoch).
    At(i64),
}

/// Decides whether a key is due: none yet, the newest older than `period`, or older than
/// `cutoff`. `newest` is the newest active key's NotBefore; all times in seconds.
pub fn renewal(newest: Option<i64>, now: i64, period: Duration, cutoff: Option<i64>) -> Renewal {
    let Some(newest) = newest else { return Renewal::Now };
    if cutoff.is_some_and(|c| newest < c) {
        return Renewal::Now;
    }
    let due = newest.saturating_add(i64::try_from(period.as_secs()).unwrap_or(i64::MAX));
    if period.is_zero() {
        // A zero period disables automatic renewal.
        return Renewal::At(i64::MAX);
    }
    if now >= due {
        Renewal::Now
    } else {
        Renewal::At(due)
    }
}

/// The loaded keys: every active key to decrypt, the newest certificate to seal with.
#[derive(Debug)]
pub struct SealingKeys {
    /// All active keys.
    pub ring: std::sync::Arc<KeyRing>,
    /// The newest active key's certificate and its Secret's name.
    pub newest: Option<(String, SealingCert)>,
}

/// Sealing-key Secrets in one namespace.
#[derive(Clone)]
pub struct KeyStore {
    api: Api<Secret>,
    namespace: String,
}

impl KeyStore {
    /// The store in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    fn kube(&self, action: &str) -> impl FnOnce(kube::Error) -> Error {
        let action = format!("{action} in namespace {}", self.namespace);
        move |source| Error::Kube { action, source }
    }

    /// Loads every active key. A broken key Secret is an error naming it (never its content).
    pub async fn load(&self) -> Result<SealingKeys, Error> {
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{KEY_LABEL}={ACTIVE}")))
            .await
            .map_err(self.kube("listing sealing keys"))?;
        let mut ring = KeyRing::new();
        // Newest by certificate NotBefore; ties (keys made within one second) go to the Secret
        // written last.
        let mut newest: Option<((i64, u64), String, SealingCert)> = None;
        for s in list.items {
            // The key Secret's values are wiped when this iteration ends.
            let s = super::WipedSecret(s);
            let name = s.metadata.name.clone().unwrap_or_default();
            let written: u64 = s
                .metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let source = format!("secret {}/{name}", self.namespace);
            let field = |k: &str| {
                s.data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map(|b| zeroize::Zeroizing::new(b.0.clone()))
                    .ok_or_else(|| lockstep_formats::Error::Sealed(format!("{source}: no {k}")))
            };
            let key_pem = zeroize::Zeroizing::new(
                String::from_utf8(std::mem::take(&mut *field("tls.key")?)).map_err(|e| {
                    zeroize::Zeroize::zeroize(&mut e.into_bytes());
                    lockstep_formats::Error::Sealed(format!("{source}: tls.key is not PEM text"))
                })?,
            );
            ring.push(UnsealingKey::from_pem(&source, &key_pem)?);
            let cert = SealingCert::from_pem(&source, &field("tls.crt")?)?;
            let order = (cert.not_before(), written);
            if newest.as_ref().is_none_or(|(o, _, _)| order > *o) {
                newest = Some((order, name, cert));
            }
        }
        Ok(SealingKeys {
            ring: ring.into(),
            newest: newest.map(|(_, n, c)| (n, c)),
        })
    }

    /// Generates and stores a new active key (RSA-`bits`, certificate valid `ttl_days`).
    /// Returns the new Secret's name.
    pub async fn renew(&self, bits: usize, ttl_days: i64) -> Result<String, Error> {
        // Seconds of RSA work: off the async threads, which must keep renewing the lease.
        let (key, cert) = tokio::task::spawn_blocking(move || sealed::generate_key_pair(bits, "", ttl_days))
            .await
            .map_err(|e| lockstep_formats::Error::Sealed(format!("generating a key: {e}")))??;
        let secret: Secret = serde_json::from_value(sealed::key_secret(&key, &cert))
            .map_err(|e| lockstep_formats::Error::Sealed(format!("a key Secret: {e}")))?;
        let created = self
            .api
            .create(&PostParams::default(), &secret)
            .await
            .map_err(self.kube("storing a new sealing key"))?;
        Ok(created.metadata.name.unwrap_or_default())
    }

    /// Renews if [`renewal`] says a key is due, with sealed-secrets' defaults (RSA-4096, ten-year
    /// certificate); returns the new key's name, if any.
    pub async fn renew_if_due(
        &self,
        now: i64,
        period: Duration,
        cutoff: Option<i64>,
    ) -> Result<Option<String>, Error> {
        let keys = self.load().await?;
        match renewal(
            keys.newest.as_ref().map(|(_, c)| c.not_before()),
            now,
            period,
            cutoff,
        ) {
            Renewal::Now => self.renew(4096, 3650).await.map(Some),
            Renewal::At(_) => Ok(None),
        }
    }

    /// Marks a key compromised: it stays for forensics and manual recovery, but is never
    /// loaded again.
    pub async fn mark_compromised(&self, name: &str) -> Result<(), Error> {
        let patch = serde_json::json!({ "metadata": { "labels": { KEY_LABEL: COMPROMISED } } });
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(self.kube(&format!("marking sealing key {name} compromised")))?;
        Ok(())
    }
}

/// The keys in use, shared by the Sync controller, the SealedSecret controller and the HTTP
/// endpoints; replaced whole when a key Secret changes.
pub type LiveKeys = tokio::sync::watch::Receiver<std::sync::Arc<SealingKeys>>;

/// Keys that never change (tests, tools).
pub fn fixed(keys: SealingKeys) -> LiveKeys {
    tokio::sync::watch::channel(std::sync::Arc::new(keys)).1
}

/// How [`maintain`] renews keys.
#[derive(Clone, Copy, Debug)]
pub struct RenewPolicy {
    /// Renewal period (zero: never renew automatically).
    pub period: Duration,
    /// Renew when the newest key is older than this time (seconds since the epoch).
    pub cutoff: Option<i64>,
}

impl Default for RenewPolicy {
    fn default() -> Self {
        Self {
            period: DEFAULT_RENEW_PERIOD,
            cutoff: None,
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Loads the keys (renewing first when a key is due) and returns them as a [`LiveKeys`] value, kept
/// current by a background task: every change to a key Secret (a key added by hand or by the
/// rotation CronJob, a key marked compromised) reloads them, and a new key is generated when
/// one falls due. A failed reload keeps the keys in use and is retried.
///
/// Only a replica whose `leading` holds `true` generates keys (at once when it starts leading
/// and a key is due); every replica loads them.
pub async fn maintain(
    store: KeyStore,
    policy: RenewPolicy,
    mut leading: tokio::sync::watch::Receiver<bool>,
) -> Result<LiveKeys, Error> {
    if *leading.borrow() {
        store
            .renew_if_due(unix_now(), policy.period, policy.cutoff)
            .await?;
    }
    let first = store.load().await?;
    let (tx, rx) = tokio::sync::watch::channel(std::sync::Arc::new(first));
    tokio::spawn(async move {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let cfg = watcher::Config::default().labels(KEY_LABEL);
        let mut events = std::pin::pin!(watcher(store.api.clone(), cfg));
        let mut leading_open = true;
        loop {
            let due = tx.borrow().newest.as_ref().map(|(_, c)| c.not_before());
            let wait = match renewal(due, unix_now(), policy.period, policy.cutoff) {
                Renewal::Now => Duration::ZERO,
                Renewal::At(t) => {
                    Duration::from_secs(u64::try_from(t.saturating_sub(unix_now())).unwrap_or(0).min(3600))
                }
            };
            tokio::select! {
                ev = events.next() => match ev {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watching sealing keys");
                        continue;
                    }
                    // Reload on the end of a (re)list and on every change.
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                    Some(Ok(_)) => {}
                },
                changed = leading.changed(), if leading_open => {
                    // No more changes: lead (or not) as last told.
                    leading_open = changed.is_ok();
                    continue;
                }
                () = tokio::time::sleep(wait), if *leading.borrow() => {
                    match store.renew_if_due(unix_now(), policy.period, policy.cutoff).await {
                        Ok(Some(name)) => tracing::info!(secret = %name, "sealing key renewed"),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "renewing the sealing key");
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                    }
                }
            }
            match store.load().await {
                Ok(keys) => {
                    tracing::info!(
                        keys = keys.ring.len(),
                        newest = keys.newest.as_ref().map(|(n, _)| n.as_str()).unwrap_or(""),
                        "sealing keys reloaded"
                    );
                    tx.send_replace(std::sync::Arc::new(keys));
                }
                Err(e) => tracing::warn!(error = %e, "reloading sealing keys; the keys in use are kept"),
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;

    #[test]
    fn renewal_follows_the_newest_key_and_the_cutoff() {
        let p = DEFAULT_RENEW_PERIOD;
        assert_eq!(renewal(None, 0, p, None), Renewal::Now);
        assert_eq!(renewal(Some(0), 29 * DAY, p, None), Renewal::At(30 * DAY));
        assert_eq!(renewal(Some(0), 30 * DAY, p, None), Renewal::Now);
        assert_eq!(
            renewal(Some(10), 11, p, Some(20)),
            Renewal::Now,
            "older than the cut-off"
        );
        assert_eq!(renewal(Some(30), 31, p, Some(20)), Renewal::At(30 + 30 * DAY));
        assert_eq!(
            renewal(Some(0), 1000 * DAY, Duration::ZERO, None),
            Renewal::At(i64::MAX)
        );
    }
}
