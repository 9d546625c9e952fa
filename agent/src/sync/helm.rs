//! A Helm Sync's two steps besides the Git fetch: the chart resolved (a directory of the
//! revision, or a version of a repository's chart fetched through the shared
//! [`ChartCache`]), then rendered with its values ([`crate::render::helm`]) on a blocking
//! thread, after the keys are at hand (SOPS values files are decrypted for Helm).

use std::sync::Arc;
use std::time::Duration;

use crate::render::Manifest;
use crate::render::helm::{Chart, HelmConfig};
use crate::secrets::DecryptionKeys;
use crate::source::charts::{ChartCache, ChartError, Fetched, Repository};
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
}

impl Resolved {
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

/// Resolves the chart: nothing to do for a chart of the revision; else the version the range
/// picks, fetched or taken from `charts` (an index younger than `max_age` is not read again).
pub async fn resolve(charts: &ChartCache, h: &HelmSync, max_age: Duration) -> Result<Resolved, Error> {
    match &h.chart {
        ChartSource::Git => Ok(Resolved {
            archive: None,
            label: String::new(),
            status: None,
        }),
        ChartSource::Repository { repo, name, version } => {
            let f = charts.fetch(repo, name, version.as_deref(), max_age).await?;
            Ok(Resolved {
                label: format!("{name} {} from {}", f.version, repo.url),
                status: Some(format!("{name} {} (sha256:{})", f.version, f.digest)),
                archive: Some(f),
            })
        }
        ChartSource::Oci(c) => {
            let f = oci::fetch(charts, c).await.map_err(ChartError::from)?;
            Ok(Resolved {
                label: format!("{} {} from {}", c.name, f.version, c.repository),
                status: Some(format!("{} {} (sha256:{})", c.name, f.version, f.digest)),
                archive: Some(f),
            })
        }
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
    let (req, source) = crate::render::helm::request(
        &rev.files,
        resolved.chart(&rev.path),
        &h.config,
        keys.sops.as_ref(),
    )?;
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
