//! Charts from OCI registries (`oci://`), as Helm pushes them and Flux's `OCIRepository` pulls
//! them: a manifest whose layer is `application/vnd.cncf.helm.chart.content.v1.tar+gzip`,
//! reached by digest, by tag, or by the highest tag a version range picks, with registry
//! credentials (a `kubernetes.io/dockerconfigjson` Secret) and a private CA. The registry
//! protocol is `oci-client`'s; the archive is checked against the layer's digest and kept by
//! manifest digest, so a poll whose tag still names the same manifest downloads nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::charts::{ChartCache, ChartError, Fetched, MAX_ARCHIVE_BYTES};
use super::semver_range::{Range, version};

/// The media type of a Helm chart's layer.
pub const CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The media type of a Helm chart's config.
pub const CHART_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";

/// Tags listed, at most, to pick a version from.
const MAX_TAGS: usize = 10_000;

/// A chart in an OCI registry.
#[derive(Clone)]
pub struct OciChart {
    /// `oci://registry.example.com/charts`.
    pub repository: String,
    /// The chart's name (the last path segment).
    pub name: String,
    /// A tag's version or a range (`None`: the highest stable tag).
    pub version: Option<String>,
    /// The manifest digest it must have (`sha256:…`); wins over `version`.
    pub digest: Option<String>,
    /// Registry credentials: (username, password).
    pub auth: Option<(String, Zeroizing<String>)>,
    /// A private CA (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Plain HTTP instead of HTTPS (a registry on loopback only).
    pub plain_http: bool,
    /// The longest a request may take.
    pub timeout: Duration,
}

impl OciChart {
    /// `host/path/name`, as the registry names the repository.
    fn repository_path(&self) -> Result<String, ChartError> {
        let rest = self
            .repository
            .strip_prefix("oci://")
            .ok_or_else(|| self.error("not an oci:// URL"))?;
        Ok(format!("{}/{}", rest.trim_end_matches('/'), self.name))
    }

    fn error(&self, message: impl Into<String>) -> ChartError {
        ChartError::Oci {
            reference: format!("{}/{}", self.repository.trim_end_matches('/'), self.name),
            message: message.into(),
        }
    }

    fn auth(&self) -> RegistryAuth {
        match &self.auth {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.to_string()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// The registry's message for an error, without the URL's query or a credential.
fn message(e: &oci_client::errors::OciDistributionError) -> String {
    e.to_string()
}

/// A client for `c`'s CA and timeout, shared by the Syncs (its token cache with it).
fn client(cache: &ChartCache, c: &OciChart) -> Result<Arc<Client>, ChartError> {
    let key = format!(
        "{:?}\0{}\0{}",
        c.timeout,
        c.plain_http,
        c.ca_pem
            .as_deref()
            .map(|p| hex::encode(Sha256::digest(p)))
            .unwrap_or_default()
    );
    if let Some(found) = cache.oci_clients.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(found);
    }
    let mut extra_root_certificates = Vec::new();
    if let Some(pem) = &c.ca_pem {
        extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: pem.clone(),
        });
    }
    let config = ClientConfig {
        protocol: if c.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        extra_root_certificates,
        read_timeout: Some(c.timeout),
        connect_timeout: Some(c.timeout),
        ..ClientConfig::default()
    };
    let client = Arc::new(Client::try_from(config).map_err(|e| c.error(message(&e)))?);
    if let Ok(mut m) = cache.oci_clients.lock() {
        m.insert(key, client.clone());
    }
    Ok(client)
}

/// The tag `c` names: its version as a tag (Helm writes `+` as `_`), or the highest tag within
/// its range.
async fn pick_tag(
    cache: &ChartCache,
    client: &Client,
    image: &Reference,
    c: &OciChart,
) -> Result<String, ChartError> {
    let spelled = c.version.as_deref().map(str::trim).filter(|v| !v.is_empty());
    if let Some(v) = spelled
        && version(v).is_some()
        && !v.contains(['*', 'x', 'X', '^', '~', '<', '>', '=', '|', ' '])
    {
        return Ok(v.replace('+', "_"));
    }
    let spelled = spelled.unwrap_or("*");
    let range = Range::parse(spelled).map_err(|r| c.error(format!("version {spelled:?}: {r}")))?;
    cache.index_reads.fetch_add(1, Ordering::Relaxed);
    let mut tags = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let page = client
            .list_tags(image, &c.auth(), Some(1000), last.as_deref())
            .await
            .map_err(|e| c.error(format!("listing tags: {}", message(&e))))?;
        let n = page.tags.len();
        last = page.tags.last().cloned();
        tags.extend(page.tags);
        if n < 1000 || tags.len() >= MAX_TAGS {
            break;
        }
    }
    let mut versions: Vec<(semver::Version, String)> = tags
        .iter()
        .filter_map(|t| version(&t.replace('_', "+")).map(|v| (v, t.clone())))
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions
        .iter()
        .find(|(v, _)| range.matches(v))
        .map(|(_, t)| t.clone())
        .ok_or_else(|| {
            let newest: Vec<&str> = versions.iter().take(3).map(|(_, t)| t.as_str()).collect();
            c.error(format!(
                "no tag matches `{spelled}` (the newest: {})",
                if newest.is_empty() {
                    "none".into()
                } else {
                    newest.join(", ")
                }
            ))
        })
}

/// The chart `c` names: its manifest read (by digest, or by the tag picked), its chart layer
/// downloaded unless the same manifest's was, and checked against the layer's digest.
pub async fn fetch(cache: &ChartCache, c: &OciChart) -> Result<Fetched, ChartError> {
    let client = client(cache, c)?;
    let path = c.repository_path()?;
    let base: Reference = path
        .parse()
        .map_err(|e| c.error(format!("not a reference: {e}")))?;
    let (image, tag) = match &c.digest {
        Some(d) => (
            Reference::with_digest(base.registry().into(), base.repository().into(), d.clone()),
            None,
        ),
        None => {
            let tag = pick_tag(cache, &client, &base, c).await?;
            (
                Reference::with_tag(base.registry().into(), base.repository().into(), tag.clone()),
                Some(tag),
            )
        }
    };
    cache.index_reads.fetch_add(1, Ordering::Relaxed);
    let (manifest, digest) = client
        .pull_image_manifest(&image, &c.auth())
        .await
        .map_err(|e| c.error(format!("{}: {}", image.whole(), message(&e))))?;
    if let Some(want) = &c.digest
        && !want.eq_ignore_ascii_case(&digest)
    {
        return Err(c.error(format!(
            "the manifest's digest is {digest}, spec.helm.chart.digest is {want}; nothing was rendered"
        )));
    }
    if manifest.config.media_type != CHART_CONFIG {
        return Err(c.error(format!(
            "{}: not a Helm chart (its config is {})",
            image.whole(),
            manifest.config.media_type
        )));
    }
    let layer = manifest
        .layers
        .iter()
        .find(|l| l.media_type == CHART_LAYER)
        .ok_or_else(|| c.error(format!("{}: no chart layer ({CHART_LAYER})", image.whole())))?;
    let version = manifest
        .annotations
        .as_ref()
        .and_then(|a| a.get("org.opencontainers.image.version").cloned())
        .or_else(|| tag.map(|t| t.replace('_', "+")))
        .unwrap_or_else(|| digest.clone());
    let key = format!("{path}@{digest}");
    let cached = cache.oci_archives.lock().ok().and_then(|a| a.get(&key).cloned());
    let archive = match cached {
        Some(a) => a,
        None => {
            if usize::try_from(layer.size).unwrap_or(usize::MAX) > MAX_ARCHIVE_BYTES {
                return Err(ChartError::TooLarge {
                    url: image.whole(),
                    limit: MAX_ARCHIVE_BYTES,
                });
            }
            cache.archive_downloads.fetch_add(1, Ordering::Relaxed);
            let mut stream = client
                .pull_blob_stream(&image, layer)
                .await
                .map_err(|e| c.error(format!("{}: {}", layer.digest, message(&e))))?;
            let mut body = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| c.error(format!("{}: {e}", layer.digest)))?;
                if body.len() + chunk.len() > MAX_ARCHIVE_BYTES {
                    return Err(ChartError::TooLarge {
                        url: image.whole(),
                        limit: MAX_ARCHIVE_BYTES,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            let got = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
            if !got.eq_ignore_ascii_case(&layer.digest) {
                return Err(ChartError::Digest {
                    url: format!("{}@{}", path, layer.digest),
                    want: layer.digest.clone(),
                    got,
                });
            }
            let a = Arc::new(body);
            if let Ok(mut m) = cache.oci_archives.lock() {
                if m.len() >= 256 {
                    m.clear();
                }
                m.insert(key, a.clone());
            }
            a
        }
    };
    Ok(Fetched {
        version,
        digest: hex::encode(Sha256::digest(archive.as_slice())),
        archive,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_repository_and_name_make_the_registry_path() {
        let c = OciChart {
            repository: "oci://ghcr.io/stefanprodan/charts/".into(),
            name: "podinfo".into(),
            version: None,
            digest: None,
            auth: None,
            ca_pem: None,
            plain_http: false,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            c.repository_path().unwrap(),
            "ghcr.io/stefanprodan/charts/podinfo"
        );
        let bad = OciChart {
            repository: "https://ghcr.io".into(),
            ..c
        };
        assert!(
            bad.repository_path()
                .unwrap_err()
                .to_string()
                .contains("not an oci:// URL")
        );
    }
}
