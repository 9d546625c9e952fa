//! The webhook receiver: a push to a repository triggers an immediate sync of every Sync that
//! pulls it, instead of waiting for the next poll.
//!
//! | path | provider | authentication | events |
//! |---|---|---|---|
//! | `POST /hook/github` | GitHub (and Gitea) | `X-Hub-Signature-256: sha256=HMAC(secret, body)` | `push` (`ping` answered) |
//! | `POST /hook/gitlab` | GitLab | `X-Gitlab-Token: secret` | `Push Hook`, `Tag Push Hook` |
//! | `POST /hook/generic` | anything (CI) | `X-Signature: sha256=HMAC(secret, body)` | a JSON body `{"repository": URL, "ref": "refs/heads/main"}` |
//!
//! The shared secrets are the entries `github`, `gitlab` and `generic` of one Secret in the
//! agent's namespace (`--webhook-secret`), kept current by a watch, so an unauthenticated
//! request costs one HMAC and no API call; a provider without an entry answers 404. Signatures
//! and tokens are compared in constant time.
//!
//! A verified push triggers the Syncs whose `spec.source.url` names the same repository (any
//! of its https, ssh or scp-like forms) and whose ref the push moved (a branch's head; any tag
//! for a tag or semver ref; a pinned commit never), by setting the annotation
//! `lockstep.dev/reconcile-requested-at` (as `lockstep reconcile` and Flux's receivers do). The
//! annotation goes through the API server, so any replica can receive the hook and the leader
//! syncs; a health wait in progress is cut short. Nothing of the payload but the repository
//! and ref is read, and nothing of it is logged.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::Value as Json;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::api::Sync;

/// The providers, as named in paths, Secret entries and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// GitHub and Gitea.
    Github,
    /// GitLab.
    Gitlab,
    /// Any sender that signs its body.
    Generic,
}

impl Provider {
    /// Its name (path segment and Secret entry).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Generic => "generic",
        }
    }

    /// The provider a path segment names.
    pub fn from_path(s: &str) -> Option<Self> {
        [Provider::Github, Provider::Gitlab, Provider::Generic]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// The shared secrets, by provider (zeroized when replaced).
#[derive(Default)]
pub struct Secrets {
    entries: std::collections::BTreeMap<Provider, Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("providers", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    /// The secrets from a Secret's entries (`github`, `gitlab`, `generic`); other entries are
    /// ignored and wiped.
    pub fn from_entries(mut data: std::collections::BTreeMap<String, k8s_openapi::ByteString>) -> Self {
        let mut entries = std::collections::BTreeMap::new();
        for p in [Provider::Github, Provider::Gitlab, Provider::Generic] {
            if let Some(mut v) = data.remove(p.as_str()) {
                let mut bytes = std::mem::take(&mut v.0);
                // A trailing newline (`kubectl create secret --from-file`) is not part of it.
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                if !bytes.is_empty() {
                    entries.insert(p, Zeroizing::new(bytes));
                }
            }
        }
        data.values_mut()
            .for_each(|v| zeroize::Zeroize::zeroize(&mut v.0));
        Self { entries }
    }

    /// Whether a provider is configured.
    pub fn has(&self, p: Provider) -> bool {
        self.entries.contains_key(&p)
    }
}

/// Why a request was refused or ignored (each maps to an HTTP status).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// No secret is configured for the provider (404).
    #[error("no webhook secret for {0} (add a `{0}` entry to the webhook Secret)")]
    NotConfigured(&'static str),
    /// The signature or token is missing or wrong (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The body is not what the provider sends (400).
    #[error("{0}")]
    BadRequest(String),
}

/// A verified push: the repository and, when the payload says, the ref it moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// Every URL the payload gives for the repository.
    pub urls: Vec<String>,
    /// `refs/heads/…` or `refs/tags/…`.
    pub reference: Option<String>,
}

/// What a verified request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Trigger the Syncs of this push.
    Push(Push),
    /// Answer 200 and do nothing (GitHub's `ping`, an event that moves no ref).
    Ignore(&'static str),
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Checks `sha256=<hex>` against HMAC-SHA256(secret, body), in constant time.
fn check_hmac(secret: &[u8], body: &[u8], signature: Option<&str>) -> Result<(), Refused> {
    let sig = signature
        .and_then(|s| s.strip_prefix("sha256="))
        .ok_or(Refused::Unauthorized("missing sha256 signature"))?;
    let sig = hex::decode(sig).map_err(|_| Refused::Unauthorized("signature is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Refused::Unauthorized("bad secret"))?;
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| Refused::Unauthorized("signature does not match"))
}

/// Verifies a request and reads what it asks for (pure).
pub fn verify(
    provider: Provider,
    secrets: &Secrets,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Verdict, Refused> {
    let secret = secrets
        .entries
        .get(&provider)
        .ok_or(Refused::NotConfigured(provider.as_str()))?;
    match provider {
        Provider::Github | Provider::Generic => {
            let name = if provider == Provider::Github {
                "x-hub-signature-256"
            } else {
                "x-signature"
            };
            check_hmac(secret, body, header(headers, name))?;
        }
        Provider::Gitlab => {
            let token =
                header(headers, "x-gitlab-token").ok_or(Refused::Unauthorized("missing X-Gitlab-Token"))?;
            if !bool::from(token.as_bytes().ct_eq(secret.as_slice())) {
                return Err(Refused::Unauthorized("X-Gitlab-Token does not match"));
            }
        }
    }
    let event = match provider {
        Provider::Github => header(headers, "x-github-event").or_else(|| header(headers, "x-gitea-event")),
        Provider::Gitlab => header(headers, "x-gitlab-event"),
        Provider::Generic => Some("push"),
    };
    match (provider, event) {
        (Provider::Github, Some("ping")) => return Ok(Verdict::Ignore("pong")),
        (Provider::Github, Some("push")) | (Provider::Gitlab, Some("Push Hook" | "Tag Push Hook")) => {}
        (Provider::Generic, _) => {}
        _ => return Ok(Verdict::Ignore("not a push event")),
    }
    let json: Json = serde_json::from_slice(body)
        .map_err(|e| Refused::BadRequest(format!("the body is not JSON: {e}")))?;
    let strings = |pointers: &[&str]| -> Vec<String> {
        pointers
            .iter()
            .filter_map(|p| json.pointer(p).and_then(Json::as_str))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let urls = match provider {
        Provider::Github => strings(&[
            "/repository/clone_url",
            "/repository/ssh_url",
            "/repository/html_url",
            "/repository/git_url",
        ]),
        Provider::Gitlab => strings(&[
            "/project/git_http_url",
            "/project/git_ssh_url",
            "/project/web_url",
            "/repository/git_http_url",
            "/repository/git_ssh_url",
            "/repository/homepage",
        ]),
        Provider::Generic => strings(&["/repository"]),
    };
    if urls.is_empty() {
        return Err(Refused::BadRequest(match provider {
            Provider::Generic => "the body names no repository (expected {\"repository\": URL})".into(),
            _ => "the payload names no repository".into(),
        }));
    }
    let reference = json.get("ref").and_then(Json::as_str).map(str::to_owned);
    Ok(Verdict::Push(Push { urls, reference }))
}

/// A repository URL reduced to `host/path` (pure): scheme, credentials, port, a trailing
/// `.git` and `/` dropped, lowercased; the scp-like `git@host:org/repo` form too. Two URLs of
/// one repository (https and ssh) give the same key.
pub fn repository_key(url: &str) -> String {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest.to_owned(),
        // scp-like: [user@]host:path
        None => match url.split_once(':') {
            Some((host, path)) if !host.contains('/') => format!("{host}/{path}"),
            _ => url.to_owned(),
        },
    };
    let (authority, path) = rest.split_once('/').unwrap_or((&rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_matches('/');
    format!("{host}/{path}").to_lowercase()
}

/// Whether a push moves what a Sync follows (pure): same repository, and the Sync's branch (a
/// tag push for a tag or semver Sync; a Sync pinned to a commit never). A push that names no
/// ref matches any Sync of the repository.
pub fn matches(s: &Sync, push: &Push) -> bool {
    let key = repository_key(&s.spec.source.url);
    if !push.urls.iter().any(|u| repository_key(u) == key) {
        return false;
    }
    let Some(pushed) = &push.reference else {
        return true;
    };
    match &s.spec.source.reference {
        None => pushed == "refs/heads/main",
        Some(r) => match (&r.branch, &r.tag, &r.semver, &r.commit) {
            (Some(b), ..) => *pushed == format!("refs/heads/{b}"),
            (None, Some(_), _, _) | (None, None, Some(_), _) => pushed.starts_with("refs/tags/"),
            (None, None, None, Some(_)) => false,
            (None, None, None, None) => pushed == "refs/heads/main",
        },
    }
}

/// The receiver: the current secrets (kept by [`watch_secret`]) and a client to trigger Syncs.
#[derive(Clone)]
pub struct Receiver {
    client: kube::Client,
    secrets: tokio::sync::watch::Receiver<Arc<Secrets>>,
    scope: crate::reconciler::Scope,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// What a handled request did.
#[derive(Debug)]
pub enum Handled {
    /// The Syncs triggered (`namespace/name`).
    Triggered(Vec<String>),
    /// Nothing to do, and why.
    Ignored(&'static str),
}

/// Errors of the receiver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request was refused.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Listing Syncs failed.
    #[error("triggering Syncs: listing Syncs: {}", crate::errors::kube_message(.0))]
    List(#[source] kube::Error),
    /// Annotating a Sync failed.
    #[error("triggering Syncs: {sync}: {}", crate::errors::kube_message(.source))]
    Trigger {
        /// `namespace/name`.
        sync: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

impl Receiver {
    /// A receiver with the secrets `secrets` holds.
    pub fn new(client: kube::Client, secrets: tokio::sync::watch::Receiver<Arc<Secrets>>) -> Self {
        Self {
            client,
            secrets,
            scope: crate::reconciler::Scope::All,
        }
    }

    /// Triggers only the Syncs within `scope` (the controllers' own).
    #[must_use]
    pub fn with_scope(mut self, scope: crate::reconciler::Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Verifies a request and triggers the Syncs it names.
    pub async fn handle(
        &self,
        provider: Provider,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Handled, Error> {
        let verdict = {
            let secrets = self.secrets.borrow().clone();
            verify(provider, &secrets, headers, body)?
        };
        let push = match verdict {
            Verdict::Ignore(why) => return Ok(Handled::Ignored(why)),
            Verdict::Push(p) => p,
        };
        let api: kube::Api<Sync> = self.scope.api(&self.client);
        let syncs = api.list(&Default::default()).await.map_err(Error::List)?;
        let at = lockstep_formats::sops::now_rfc3339_nanos();
        let mut triggered = Vec::new();
        for s in syncs.items.iter().filter(|s| matches(s, &push)) {
            use kube::ResourceExt;
            let ns = s.namespace().unwrap_or_default();
            let name = s.name_any();
            request_reconcile(&self.client, &ns, &name, &at)
                .await
                .map_err(|source| Error::Trigger {
                    sync: format!("{ns}/{name}"),
                    source,
                })?;
            triggered.push(format!("{ns}/{name}"));
        }
        tracing::info!(
            provider = provider.as_str(),
            repository = %push.urls.first().map(|u| crate::source::display_url(u)).unwrap_or_default(),
            reference = push.reference.as_deref().unwrap_or(""),
            triggered = triggered.len(),
            "webhook"
        );
        Ok(Handled::Triggered(triggered))
    }
}

/// Asks for a sync of `namespace/name` now: sets `lockstep.dev/reconcile-requested-at` to
/// `at` (merge patch; the Sync's controller sees the change at once).
pub async fn request_reconcile(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    at: &str,
) -> Result<(), kube::Error> {
    let api: kube::Api<Sync> = kube::Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "metadata": { "annotations": { crate::api::RECONCILE_ANNOTATION: at } }
    });
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// Keeps the secrets of the Secret `namespace/name` current (a watch of that one Secret); the
/// returned channel starts empty, and `listed` is called once the first list is done.
pub fn watch_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
    listed: impl FnOnce() + Send + 'static,
) -> tokio::sync::watch::Receiver<Arc<Secrets>> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Secret;
    use kube::runtime::{WatchStreamExt, watcher};
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Secrets::default()));
    let api: kube::Api<Secret> = kube::Api::namespaced(client, namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut listed = Some(listed);
        let mut events = std::pin::pin!(watcher(api, cfg).default_backoff());
        while let Some(e) = events.next().await {
            match e {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    let secrets = Secrets::from_entries(s.data.unwrap_or_default());
                    tracing::info!(secret = %name, providers = ?secrets.entries.keys().map(|p| p.as_str()).collect::<Vec<_>>(), "webhook secrets loaded");
                    tx.send_replace(Arc::new(secrets));
                }
                Ok(watcher::Event::Delete(_)) => {
                    tracing::warn!(secret = %name, "the webhook Secret was deleted: webhooks are refused");
                    tx.send_replace(Arc::new(Secrets::default()));
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(f) = listed.take() {
                        f();
                    }
                }
                Ok(watcher::Event::Init) => {}
                Err(e) => tracing::warn!(secret = %name, error = %e, "watching the webhook Secret"),
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn secrets() -> Secrets {
        Secrets::from_entries(
            [
                (
                    "github".to_owned(),
                    k8s_openapi::ByteString(b"gh-secret\n".to_vec()),
                ),
                ("gitlab".to_owned(), k8s_openapi::ByteString(b"gl-token".to_vec())),
                ("other".to_owned(), k8s_openapi::ByteString(b"x".to_vec())),
            ]
            .into(),
        )
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const GITHUB_PUSH: &str = r#"{"ref":"refs/heads/main","repository":{"clone_url":"https://github.com/Acme/Fleet.git","ssh_url":"git@github.com:Acme/Fleet.git","html_url":"https://github.com/Acme/Fleet"}}"#;

    #[test]
    fn github_signatures_are_checked_and_pings_answered() {
        let s = secrets();
        let body = GITHUB_PUSH.as_bytes();
        let good = sign(b"gh-secret", body);
        let v = verify(
            Provider::Github,
            &s,
            &headers(&[("x-hub-signature-256", &good), ("x-github-event", "push")]),
            body,
        )
        .unwrap();
        let Verdict::Push(p) = v else { panic!() };
        assert_eq!(p.reference.as_deref(), Some("refs/heads/main"));
        assert_eq!(p.urls.len(), 3);
        let bad = sign(b"another", body);
        assert_eq!(
            verify(
                Provider::Github,
                &s,
                &headers(&[("x-hub-signature-256", &bad), ("x-github-event", "push")]),
                body
            ),
            Err(Refused::Unauthorized("signature does not match"))
        );
        let tampered = GITHUB_PUSH.replace("main", "evil");
        assert!(matches!(
            verify(
                Provider::Github,
                &s,
                &headers(&[("x-hub-signature-256", &good), ("x-github-event", "push")]),
                tampered.as_bytes()
            ),
            Err(Refused::Unauthorized(_))
        ));
        assert_eq!(
            verify(
                Provider::Github,
                &s,
                &headers(&[("x-github-event", "push")]),
                body
            ),
            Err(Refused::Unauthorized("missing sha256 signature"))
        );
        let ping = br#"{"zen":"x"}"#;
        let sig = sign(b"gh-secret", ping);
        assert_eq!(
            verify(
                Provider::Github,
                &s,
                &headers(&[("x-hub-signature-256", &sig), ("x-github-event", "ping")]),
                ping
            ),
            Ok(Verdict::Ignore("pong"))
        );
        assert_eq!(
            verify(Provider::Generic, &s, &headers(&[]), body),
            Err(Refused::NotConfigured("generic"))
        );
    }

    #[test]
    fn gitlab_tokens_and_generic_bodies() {
        let s = secrets();
        let body = br#"{"ref":"refs/tags/v1.2.0","project":{"git_http_url":"https://gitlab.com/acme/fleet.git","git_ssh_url":"git@gitlab.com:acme/fleet.git"}}"#;
        let ok = verify(
            Provider::Gitlab,
            &s,
            &headers(&[
                ("x-gitlab-token", "gl-token"),
                ("x-gitlab-event", "Tag Push Hook"),
            ]),
            body,
        );
        assert!(matches!(ok, Ok(Verdict::Push(_))), "{ok:?}");
        assert_eq!(
            verify(
                Provider::Gitlab,
                &s,
                &headers(&[("x-gitlab-token", "gl-tokeN"), ("x-gitlab-event", "Push Hook")]),
                body
            ),
            Err(Refused::Unauthorized("X-Gitlab-Token does not match"))
        );
        assert_eq!(
            verify(
                Provider::Gitlab,
                &s,
                &headers(&[("x-gitlab-token", "gl-token"), ("x-gitlab-event", "Issue Hook")]),
                body
            ),
            Ok(Verdict::Ignore("not a push event"))
        );
        let g =
            Secrets::from_entries([("generic".to_owned(), k8s_openapi::ByteString(b"ci".to_vec()))].into());
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = sign(b"ci", body);
        assert!(matches!(
            verify(Provider::Generic, &g, &headers(&[("x-signature", &sig)]), body),
            Err(Refused::BadRequest(m)) if m.contains("names no repository")
        ));
        let body = b"not json";
        let sig = sign(b"ci", body);
        assert!(matches!(
            verify(Provider::Generic, &g, &headers(&[("x-signature", &sig)]), body),
            Err(Refused::BadRequest(m)) if m.starts_with("the body is not JSON")
        ));
    }

    #[test]
    fn repository_urls_of_one_repository_agree() {
        let k = repository_key("https://github.com/Acme/Fleet.git");
        assert_eq!(k, "github.com/acme/fleet");
        for u in [
            "git@github.com:acme/fleet.git",
            "ssh://git@github.com:22/acme/fleet",
            "https://user:token@github.com/acme/fleet/",
            "http://github.com:443/acme/fleet.git",
        ] {
            assert_eq!(repository_key(u), k, "{u}");
        }
        assert_ne!(repository_key("https://github.com/acme/fleet-2"), k);
        assert_eq!(repository_key("file:///srv/git/repo.git"), "/srv/git/repo");
    }

    #[test]
    fn a_push_triggers_the_syncs_that_follow_its_ref() {
        let sync = |url: &str, r: serde_json::Value| -> Sync {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "lockstep.dev/v1alpha1", "kind": "Sync", "metadata": { "name": "x" },
                "spec": { "source": { "url": url, "ref": r } }
            }))
            .unwrap()
        };
        let push = |r: Option<&str>| Push {
            urls: vec![
                "https://github.com/acme/fleet.git".into(),
                "git@github.com:acme/fleet.git".into(),
            ],
            reference: r.map(Into::into),
        };
        let main = sync(
            "ssh://git@github.com/acme/fleet",
            serde_json::json!({ "branch": "main" }),
        );
        assert!(matches(&main, &push(Some("refs/heads/main"))));
        assert!(!matches(&main, &push(Some("refs/heads/dev"))));
        assert!(!matches(&main, &push(Some("refs/tags/v1"))));
        assert!(matches(&main, &push(None)));
        let semver = sync(
            "https://github.com/acme/fleet",
            serde_json::json!({ "semver": ">=1" }),
        );
        assert!(matches(&semver, &push(Some("refs/tags/v1.3.0"))));
        assert!(!matches(&semver, &push(Some("refs/heads/main"))));
        let pinned = sync(
            "https://github.com/acme/fleet",
            serde_json::json!({ "commit": "abc" }),
        );
        assert!(!matches(&pinned, &push(Some("refs/heads/main"))));
        let other = sync(
            "https://github.com/acme/other",
            serde_json::json!({ "branch": "main" }),
        );
        assert!(!matches(&other, &push(Some("refs/heads/main"))));
    }
}
