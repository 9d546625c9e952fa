//! A Helm Sync's two steps besides the Git fetch: the chart resolved (a directory of the
//! revision, or a version of a repository's chart fetched through the shared
//! [`ChartCache`]), then rendered with its values ([`crate::render::helm`]) on a blocking
//! thread, after the keys are at hand (SOPS values files are decrypted for Helm).

use std::sync::Arc;
use std::time::Duration;

use crate::render::Manifest;
use crate::render::helm::{Chart, HelmConfig};
use crate::secrets::DecryptionKeys;
use crate::source::charts::{ChartCache, Fetched, Repository};
use crate::source::oci::{self, OciChart};

use super::Error;

/// Where a Helm Sync's chart comes from.
#[derive(Clone)]
pub enum ChartSource {
    /// The chart directory at the Sync's path.
    Git,
    /// A Helm repository (`index.yaml`).
    Repository {
        /// How it is reached.
        repo: Repository,
        /// The chart's name.
        name: String,
        /// A version or range.
        version: Option<String>,
    },
    /// An OCI registry.
    Oci(OciChart),
}

/// A Helm Sync: where its chart comes from and how it is rendered.
pub struct HelmSync {
    /// The chart's source.
    pub chart: ChartSource,
    /// Sources with credentials for the repositories of the chart's dependencies, by URL (their
    /// chart names and versions set per dependency).
    pub repositories: Vec<(String, ChartSource)>,
    /// The release and its values.
    pub config: HelmConfig,
}

impl std::fmt::Debug for HelmSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelmSync")
            .field("release", &self.config.release_name)
            .finish_non_exhaustive()
    }
}

/// A chart, resolved for one sync.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The fetched archive (`None`: the chart directory of the revision).
    pub archive: Option<Fetched>,
    /// `name version` and where from (the directory for a chart of the revision).
    pub label: String,
    /// What status records as the chart applied.
    pub status: Option<String>,
    /// A chart directory's dependencies fetched from their repositories: name → (version,
    /// archive), with each archive's digest.
    pub dependencies: std::collections::BTreeMap<String, (String, Arc<Vec<u8>>, String)>,
}

impl Resolved {
    /// The digest of what a render reads besides the revision ([`Chart::inputs`]), the fetched
    /// dependencies' digests included.
    pub fn inputs(&self, dir: &str, cfg: &HelmConfig) -> String {
        let mut text = self.chart(dir).inputs(cfg);
        for (name, (version, _, digest)) in &self.dependencies {
            text = format!("{text}\0{name}\0{version}\0{digest}");
        }
        crate::plan::digest(text.as_bytes())
    }

    /// The chart as the renderer takes it (`dir`: the Sync's path).
    pub fn chart<'a>(&'a self, dir: &'a str) -> Chart<'a> {
        match &self.archive {
            None => Chart::Directory(dir),
            Some(f) => Chart::Archive {
                label: &self.label,
                bytes: &f.archive,
                digest: &f.digest,
            },
        }
    }
}

/// Resolves the chart: for a chart of the revision, its dependencies that are neither vendored
/// nor in the repository, fetched; else the version the range picks, fetched or taken from
/// `charts` (an index younger than `max_age` is not read again).
pub async fn resolve(
    charts: &ChartCache,
    h: &HelmSync,
    rev: &crate::source::Revision,
    max_age: Duration,
) -> Result<Resolved, Error> {
    match &h.chart {
        ChartSource::Git => {
            let mut dependencies = std::collections::BTreeMap::new();
            let listed = lockstep_helm::deps::dependencies(&rev.files, &rev.path)
                .map_err(crate::render::Error::from)?;
            for (dep, place) in listed {
                if place != lockstep_helm::deps::Place::Remote || dep.repository.is_empty() {
                    continue;
                }
                let source = dependency_source(h, &dep);
                let f = fetch(charts, &source, max_age).await?;
                dependencies.insert(
                    dep.name.clone(),
                    (f.version.clone(), f.archive.clone(), f.digest.clone()),
                );
            }
            Ok(Resolved {
                archive: None,
                label: String::new(),
                status: None,
                dependencies,
            })
        }
        source => {
            let f = fetch(charts, source, max_age).await?;
            let (name, repository) = match source {
                ChartSource::Repository { repo, name, .. } => (name.clone(), repo.url.clone()),
                ChartSource::Oci(c) => (c.name.clone(), c.repository.clone()),
                ChartSource::Git => (String::new(), String::new()),
            };
            Ok(Resolved {
                label: format!("{name} {} from {repository}", f.version),
                status: Some(format!("{name} {} (sha256:{})", f.version, f.digest)),
                archive: Some(f),
                dependencies: Default::default(),
            })
        }
    }
}

/// A chart from a repository, fetched.
async fn fetch(charts: &ChartCache, source: &ChartSource, max_age: Duration) -> Result<Fetched, Error> {
    match source {
        ChartSource::Git => Err(Error::Render(crate::render::Error::Task(
            "a chart of the revision is not fetched".into(),
        ))),
        ChartSource::Repository { repo, name, version } => {
            Ok(charts.fetch(repo, name, version.as_deref(), max_age).await?)
        }
        ChartSource::Oci(c) => Ok(oci::fetch(charts, c).await?),
    }
}

/// Where a dependency comes from: its repository, with the credentials `spec.helm.repositories`
/// gives for its URL (anonymous otherwise).
fn dependency_source(h: &HelmSync, dep: &lockstep_helm::deps::Dependency) -> ChartSource {
    let url = dep.repository.trim_end_matches('/');
    let version = (!dep.version.is_empty()).then(|| dep.version.clone());
    let known = h
        .repositories
        .iter()
        .find(|(u, _)| u == url)
        .map(|(_, s)| s.clone());
    match known {
        Some(ChartSource::Oci(mut c)) => {
            c.name.clone_from(&dep.name);
            c.version = version;
            ChartSource::Oci(c)
        }
        Some(ChartSource::Repository { repo, .. }) => ChartSource::Repository {
            repo,
            name: dep.name.clone(),
            version,
        },
        _ if url.starts_with("oci://") => ChartSource::Oci(OciChart {
            repository: url.to_owned(),
            name: dep.name.clone(),
            version,
            digest: None,
            auth: None,
            ca_pem: None,
            plain_http: false,
            timeout: Duration::from_secs(60),
        }),
        _ => ChartSource::Repository {
            repo: Repository {
                url: url.to_owned(),
                auth: None,
                ca_pem: None,
                timeout: Duration::from_secs(60),
            },
            name: dep.name.clone(),
            version,
        },
    }
}

/// Renders the resolved chart of `rev` (at its path): values prepared here (SOPS values files
/// decrypted), Helm run on a blocking thread.
pub async fn render(
    render: &crate::render::Render,
    h: Arc<HelmSync>,
    keys: &DecryptionKeys,
    rev: Arc<crate::source::Revision>,
    resolved: Resolved,
) -> Result<Vec<Manifest>, Error> {
    let (mut req, source) = crate::render::helm::request(
        &rev.files,
        resolved.chart(&rev.path),
        &h.config,
        keys.sops.as_ref(),
    )?;
    req.dependencies = resolved
        .dependencies
        .iter()
        .map(|(name, (version, archive, _))| (name.clone(), (version.clone(), archive.clone())))
        .collect();
    let helper = render.helm.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _in_reconcile = span.enter();
        let started = std::time::Instant::now();
        let out = crate::render::helm::render(
            helper.as_ref(),
            &rev.files,
            resolved.chart(&rev.path),
            &req,
            &source,
        );
        if let Ok(objects) = &out {
            tracing::debug!(
                objects = objects.len(),
                ms = started.elapsed().as_millis() as u64,
                "helm template"
            );
        }
        out
    })
    .await
    .map_err(|e| crate::render::Error::Task(e.to_string()))?
    .map_err(Error::from)
}
