//! Charts from Helm repositories over HTTP(S), as Flux's `HelmRepository` takes them: the
//! repository's `index.yaml`, then the archive of the version a range picks
//! ([`super::chart_index`]), with basic auth or a bearer token and a private CA. Each archive is
//! checked against the index's SHA-256 digest and kept, by (URL, version, digest), so a poll
//! whose range resolves to the same version reads the index only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::chart_index::{Index, IndexError, MAX_INDEX_BYTES};

/// The largest chart archive fetched, in bytes (Helm's own bound on a chart is 100 MiB
/// decompressed; archives are far smaller).
pub const MAX_ARCHIVE_BYTES: usize = 32 * 1024 * 1024;

/// How a repository is reached.
#[derive(Clone)]
pub struct Repository {
    /// Its URL (`https://charts.example.com/stable`).
    pub url: String,
    /// Its credentials.
    pub auth: Option<Auth>,
    /// A private CA (PEM), trusted beside the platform's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The longest a request may take.
    pub timeout: Duration,
}

/// A repository's credentials (Flux's `username`/`password` keys, or a bearer token).
#[derive(Clone)]
pub enum Auth {
    /// HTTP basic authentication.
    Basic {
        /// The user.
        username: String,
        /// The password; wiped when dropped.
        password: Zeroizing<String>,
    },
    /// `Authorization: Bearer`.
    Bearer(Zeroizing<String>),
}

/// A fetched chart.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The version picked.
    pub version: String,
    /// The archive's SHA-256, hex.
    pub digest: String,
    /// The archive (.tgz).
    pub archive: Arc<Vec<u8>>,
}

/// Why a chart could not be fetched; each names the URL and never a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChartError {
    /// The index did not give a version.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A request failed.
    #[error("{url}: {message}")]
    Http {
        /// What was fetched.
        url: String,
        /// What went wrong (the status, or the transport error).
        message: String,
    },
    /// A response was larger than allowed.
    #[error("{url}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// What was fetched.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The archive is not the one the index lists.
    #[error("{url}: the archive's SHA-256 is {got}, the index lists {want}; nothing was rendered")]
    Digest {
        /// The archive's URL.
        url: String,
        /// What the index lists.
        want: String,
        /// What was fetched.
        got: String,
    },
    /// The CA is not PEM.
    #[error("{url}: the CA is not a PEM certificate bundle: {message}")]
    Ca {
        /// The repository.
        url: String,
        /// Why.
        message: String,
    },
    /// An OCI registry refused or failed a request, or its artifact is not a chart.
    #[error("{reference}: {message}")]
    Oci {
        /// The chart's reference (`oci://host/path/name:tag`).
        reference: String,
        /// What went wrong.
        message: String,
    },
}

/// An archive's key: (URL, version, digest).
type ArchiveKey = (String, String, String);

/// An index read: when, and what it said.
type IndexRead = (std::time::Instant, Arc<Index>);

/// Archives fetched so far, indexes read within their Syncs' interval, HTTP clients by CA, and
/// counts of what was read (for metrics and the benchmark). One is shared by all Syncs: twenty
/// Syncs of one repository read its index once per interval.
#[derive(Default)]
pub struct ChartCache {
    archives: Mutex<HashMap<ArchiveKey, Arc<Vec<u8>>>>,
    indexes: Mutex<HashMap<String, IndexRead>>,
    clients: Mutex<HashMap<String, reqwest::Client>>,
    pub(super) oci_clients: Mutex<HashMap<String, Arc<oci_client::Client>>>,
    pub(super) oci_archives: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    /// Index reads (for OCI: tag lists and manifest reads).
    pub index_reads: AtomicU64,
    /// Archive downloads.
    pub archive_downloads: AtomicU64,
}

impl std::fmt::Debug for ChartCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartCache")
            .field("index_reads", &self.index_reads)
            .field("archive_downloads", &self.archive_downloads)
            .finish_non_exhaustive()
    }
}

/// Indexes kept, at most (beyond, the oldest reads are forgotten).
const KEPT_INDEXES: usize = 256;

impl ChartCache {
    /// The version of `chart` that `range` picks in `repo` (`None`: the latest stable), and its
    /// archive: from the cache when the index lists the same URL, version and digest. The
    /// index is read again only when the last read (by any Sync, with the same credentials) is
    /// older than `max_age`.
    pub async fn fetch(
        &self,
        repo: &Repository,
        chart: &str,
        range: Option<&str>,
        max_age: Duration,
    ) -> Result<Fetched, ChartError> {
        let client = self.client(repo)?;
        let index = self.index(&client, repo, max_age).await?;
        let picked = index.pick(chart, range)?;
        let key = (
            picked.url.clone(),
            picked.version.clone(),
            picked.digest.clone().unwrap_or_default(),
        );
        let cached = self.archives.lock().ok().and_then(|a| a.get(&key).cloned());
        // An index without digests: fetched each time, as there is nothing to key it by.
        if let (Some(archive), Some(digest)) = (cached, &picked.digest) {
            return Ok(Fetched {
                version: picked.version,
                digest: digest.clone(),
                archive,
            });
        }
        self.archive_downloads.fetch_add(1, Ordering::Relaxed);
        let archive = get(&client, repo, &picked.url, MAX_ARCHIVE_BYTES).await?;
        let got = hex::encode(Sha256::digest(&archive));
        if let Some(want) = &picked.digest
            && !want.eq_ignore_ascii_case(&got)
        {
            return Err(ChartError::Digest {
                url: picked.url,
                want: want.clone(),
                got,
            });
        }
        let archive = Arc::new(archive);
        if picked.digest.is_some()
            && let Ok(mut a) = self.archives.lock()
        {
            a.insert(key, archive.clone());
        }
        Ok(Fetched {
            version: picked.version,
            digest: got,
            archive,
        })
    }

    /// The repository's index: the last read when it is younger than `max_age`.
    async fn index(
        &self,
        client: &reqwest::Client,
        repo: &Repository,
        max_age: Duration,
    ) -> Result<Arc<Index>, ChartError> {
        let base = repo.url.trim_end_matches('/');
        let index_url = if base.ends_with("/index.yaml") {
            base.to_owned()
        } else {
            format!("{base}/index.yaml")
        };
        // Keyed by the credentials too (as a digest): a Sync whose Secret is wrong must not be
        // served what another's read.
        let key = format!("{index_url}\0{}", repo.auth_digest());
        if let Some((at, index)) = self.indexes.lock().ok().and_then(|i| i.get(&key).cloned())
            && at.elapsed() < max_age
        {
            return Ok(index);
        }
        self.index_reads.fetch_add(1, Ordering::Relaxed);
        let bytes = get(client, repo, &index_url, MAX_INDEX_BYTES).await?;
        let index = Arc::new(Index::parse(&repo.url, &bytes)?);
        if let Ok(mut i) = self.indexes.lock() {
            if i.len() >= KEPT_INDEXES {
                i.clear();
            }
            i.insert(key, (std::time::Instant::now(), index.clone()));
        }
        Ok(index)
    }

    /// A client trusting the repository's CA, reused across fetches (its connections with it).
    fn client(&self, repo: &Repository) -> Result<reqwest::Client, ChartError> {
        let key = format!(
            "{:?}\0{}",
            repo.timeout,
            repo.ca_pem
                .as_deref()
                .map(|p| hex::encode(Sha256::digest(p)))
                .unwrap_or_default()
        );
        if let Some(c) = self.clients.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(c);
        }
        let c = client(repo)?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(key, c.clone());
        }
        Ok(c)
    }
}

impl Repository {
    /// A digest of the credentials (empty without), to key what they read by.
    fn auth_digest(&self) -> String {
        let mut h = Sha256::new();
        match &self.auth {
            None => return String::new(),
            Some(Auth::Basic { username, password }) => {
                h.update(b"basic\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.as_bytes());
            }
            Some(Auth::Bearer(t)) => {
                h.update(b"bearer\0");
                h.update(t.as_bytes());
            }
        }
        hex::encode(h.finalize())
    }
}

fn client(repo: &Repository) -> Result<reqwest::Client, ChartError> {
    let mut b = reqwest::Client::builder().timeout(repo.timeout);
    if let Some(pem) = &repo.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ChartError::Ca {
            url: repo.url.clone(),
            message: e.to_string(),
        })?;
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| ChartError::Http {
        url: repo.url.clone(),
        message: e.to_string(),
    })
}

/// GETs `url` with the repository's credentials, at most `limit` bytes. Credentials go to the
/// repository's own host only (an archive on a CDN gets none), as Helm's `--pass-credentials`
/// default does.
async fn get(
    client: &reqwest::Client,
    repo: &Repository,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, ChartError> {
    let http = |message: String| ChartError::Http {
        url: url.to_owned(),
        message,
    };
    let mut req = client.get(url);
    if same_host(&repo.url, url) {
        req = match &repo.auth {
            Some(Auth::Basic { username, password }) => req.basic_auth(username, Some(password.as_str())),
            Some(Auth::Bearer(token)) => req.bearer_auth(token.as_str()),
            None => req,
        };
    }
    let mut resp = req.send().await.map_err(|e| http(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(http(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| http(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ChartError::TooLarge {
                url: url.to_owned(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn same_host(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host() == b.host()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_to_the_repository_host_only() {
        assert!(same_host(
            "https://charts.example.com/stable",
            "https://charts.example.com/x.tgz"
        ));
        assert!(!same_host(
            "https://charts.example.com",
            "https://cdn.example.com/x.tgz"
        ));
        assert!(!same_host(
            "https://charts.example.com",
            "http://charts.example.com/x.tgz"
        ));
        assert!(!same_host("https://h:8443", "https://h/x.tgz"));
    }
}
