//! A Helm chart repository's `index.yaml` (pure): which version of a chart a range picks, as
//! `helm pull --version` and Flux's `HelmChart` pick it (the highest version within the range;
//! no range is the latest stable version), where its archive is, and the digest it must have.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::semver_range::{Range, version};

/// The most an index may be, in bytes (large public indexes are a few tens of MiB).
pub const MAX_INDEX_BYTES: usize = 64 * 1024 * 1024;

/// Why an index gave no chart.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The index does not parse.
    #[error("{url}: not a Helm repository index: {reason}")]
    Parse {
        /// The index's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The index has no chart of that name.
    #[error("{url}: no chart named `{chart}` in the repository")]
    NoChart {
        /// The index's URL.
        url: String,
        /// The chart.
        chart: String,
    },
    /// No version of the chart is within the range.
    #[error("{url}: no version of chart `{chart}` matches `{range}` (the newest: {newest})")]
    NoVersion {
        /// The index's URL.
        url: String,
        /// The chart.
        chart: String,
        /// The range asked for (`*` for the latest stable).
        range: String,
        /// The newest versions the index has.
        newest: String,
    },
    /// The range does not parse.
    #[error("chart `{chart}`: invalid version range `{range}`: {reason}")]
    Range {
        /// The chart.
        chart: String,
        /// The range.
        range: String,
        /// Why.
        reason: String,
    },
    /// The picked version lists no archive URL, or one that cannot be resolved.
    #[error("{url}: chart `{chart}` {version}: no usable archive URL")]
    NoUrl {
        /// The index's URL.
        url: String,
        /// The chart.
        chart: String,
        /// The version.
        version: String,
    },
}

#[derive(Deserialize)]
struct IndexFile {
    #[serde(default)]
    entries: BTreeMap<String, Vec<Entry>>,
}

#[derive(Clone, Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    version: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

/// A parsed index.
pub struct Index {
    url: String,
    entries: BTreeMap<String, Vec<Entry>>,
}

/// A chart version picked from an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picked {
    /// The version, as the index writes it.
    pub version: String,
    /// The archive's URL, resolved against the repository's.
    pub url: String,
    /// The archive's SHA-256, hex, when the index gives one (`helm repo index` always does).
    pub digest: Option<String>,
}

impl Index {
    /// Parses the index fetched from `url` (the repository URL, with or without
    /// `/index.yaml`).
    pub fn parse(url: &str, bytes: &[u8]) -> Result<Self, IndexError> {
        let parse = |reason: String| IndexError::Parse {
            url: url.to_owned(),
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| parse("not UTF-8 text".into()))?;
        let limits = lockstep_formats::yaml::Limits {
            max_bytes: MAX_INDEX_BYTES,
            ..Default::default()
        };
        let docs =
            lockstep_formats::yaml::load_documents_with(text, limits).map_err(|e| parse(e.to_string()))?;
        let doc = docs.first().ok_or_else(|| parse("empty".into()))?;
        let json = lockstep_formats::sops::stores::to_json(doc).map_err(|e| parse(e.to_string()))?;
        let file: IndexFile = serde_json::from_value(json).map_err(|e| parse(e.to_string()))?;
        Ok(Self {
            url: url.to_owned(),
            entries: file.entries,
        })
    }

    /// The highest version of `chart` within `range` (`None`: the latest stable version).
    pub fn pick(&self, chart: &str, range: Option<&str>) -> Result<Picked, IndexError> {
        let entries = self.entries.get(chart).ok_or_else(|| IndexError::NoChart {
            url: self.url.clone(),
            chart: chart.to_owned(),
        })?;
        let spelled = range.map(str::trim).filter(|r| !r.is_empty()).unwrap_or("*");
        let req = Range::parse(spelled).map_err(|reason| IndexError::Range {
            chart: chart.to_owned(),
            range: spelled.to_owned(),
            reason,
        })?;
        let mut versions: Vec<(semver::Version, &Entry)> = entries
            .iter()
            .filter_map(|e| version(&e.version).map(|v| (v, e)))
            .collect();
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        let Some((_, entry)) = versions.iter().find(|(v, _)| req.matches(v)) else {
            let newest: Vec<&str> = versions.iter().take(3).map(|(_, e)| e.version.as_str()).collect();
            return Err(IndexError::NoVersion {
                url: self.url.clone(),
                chart: chart.to_owned(),
                range: spelled.to_owned(),
                newest: if newest.is_empty() {
                    "none".into()
                } else {
                    newest.join(", ")
                },
            });
        };
        let no_url = || IndexError::NoUrl {
            url: self.url.clone(),
            chart: chart.to_owned(),
            version: entry.version.clone(),
        };
        let first = entry.urls.first().ok_or_else(no_url)?;
        Ok(Picked {
            version: entry.version.clone(),
            url: resolve(&self.url, first).ok_or_else(no_url)?,
            digest: entry.digest.clone().filter(|d| !d.is_empty()),
        })
    }
}

/// An archive URL of an index, resolved as Helm resolves it: absolute as written, else
/// relative to the repository URL (taken as a directory).
fn resolve(repo: &str, archive: &str) -> Option<String> {
    if let Ok(u) = url::Url::parse(archive) {
        return Some(u.to_string());
    }
    let base = repo.strip_suffix("/index.yaml").unwrap_or(repo);
    let base = url::Url::parse(&format!("{}/", base.trim_end_matches('/'))).ok()?;
    base.join(archive).ok().map(|u| u.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const INDEX: &str = r#"apiVersion: v1
entries:
  web:
  - name: web
    version: 1.2.3
    digest: aaa
    urls: [charts/web-1.2.3.tgz]
  - name: web
    version: 1.10.0
    digest: bbb
    urls: ["https://cdn.example.com/web-1.10.0.tgz"]
  - name: web
    version: 2.0.0-rc.1
    urls: [web-2.0.0-rc.1.tgz]
  empty: []
generated: "2026-12-01T00:00:00Z"
"#;

    fn index() -> Index {
        Index::parse("https://charts.example.com/stable", INDEX.as_bytes()).unwrap()
    }

    #[test]
    fn the_highest_version_within_the_range_is_picked() {
        let i = index();
        assert_eq!(
            i.pick("web", None).unwrap(),
            Picked {
                version: "1.10.0".into(),
                url: "https://cdn.example.com/web-1.10.0.tgz".into(),
                digest: Some("bbb".into())
            }
        );
        let p = i.pick("web", Some("~1.2")).unwrap();
        assert_eq!(p.url, "https://charts.example.com/stable/charts/web-1.2.3.tgz");
        assert_eq!(i.pick("web", Some(">=2.0.0-0")).unwrap().version, "2.0.0-rc.1");
        assert_eq!(i.pick("web", Some("1.2.3")).unwrap().version, "1.2.3");
    }

    #[test]
    fn misses_are_named() {
        let i = index();
        assert_eq!(
            i.pick("web", Some("^3")).unwrap_err().to_string(),
            "https://charts.example.com/stable: no version of chart `web` matches `^3` (the newest: 2.0.0-rc.1, 1.10.0, 1.2.3)"
        );
        assert_eq!(
            i.pick("api", None).unwrap_err().to_string(),
            "https://charts.example.com/stable: no chart named `api` in the repository"
        );
        assert!(matches!(i.pick("empty", None), Err(IndexError::NoVersion { .. })));
        assert!(matches!(
            Index::parse("https://x", b"entries: [1, 2]"),
            Err(IndexError::Parse { .. })
        ));
    }

    #[test]
    fn archive_urls_resolve_against_the_repository() {
        assert_eq!(
            resolve("https://h/charts/index.yaml", "web-1.tgz").unwrap(),
            "https://h/charts/web-1.tgz"
        );
        assert_eq!(
            resolve("https://h/charts/", "../web-1.tgz").unwrap(),
            "https://h/web-1.tgz"
        );
        assert_eq!(resolve("https://h", "oci://r/web").unwrap(), "oci://r/web");
    }
}
