//! Helm charts, as the Lockstep agent and CLI render them: Helm's own engine
//! (`helm.sh/helm/v4`) in a helper process, `lockstep-helm` (Go, under `agent/helm/helper/`),
//! rendering client-side exactly as `helm template` does: no release state, `lookup` returns
//! nothing; the objects are applied by Lockstep like any others.
//!
//! ```text
//! chart (a directory of the revision, or a fetched .tgz) + values (SOPS values decrypted by
//! the caller) ─► helper (tar on stdin, JSON on stdout; time and size limits) ─► Rendered
//! objects, each with its template's path, held in wiped-on-drop memory
//! ```
//!
//! Values are merged by Helm itself, in the order given, with its own rules (`-f` documents map
//! by map, `--set` expressions by strvals, Flux's `targetPath`). Plaintext values reach the
//! helper only over its stdin, never a file.

pub mod deps;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep_formats::secret::SecretJson;
use lockstep_formats::tree::{MapItem, Value};
use lockstep_kustomize::process::{self, Failure, Limits, write_tar};
use serde_json::Value as Json;
use zeroize::Zeroizing;

/// The helper's file name.
pub const PROGRAM: &str = "lockstep-helm";
/// The environment variable naming the helper.
pub const ENV: &str = "LOCKSTEP_HELM_HELPER";
/// The Helm release the helper is built from (`helm.sh/helm/v4`), and the tests' `helm` CLI.
pub const HELM_VERSION: &str = "v4.3.2";

/// Everything that can go wrong in a render; each names the chart and never a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Helm refused the chart or its values; its own words (they name the template and line).
    #[error("chart {chart}: helm: {message}")]
    Chart {
        /// The chart (its path in the repository, or its reference).
        chart: String,
        /// Helm's message.
        message: String,
    },
    /// The render ran past its time limit and was killed.
    #[error("chart {chart}: rendering took longer than the time limit of {limit:?} (--render-timeout)")]
    Timeout {
        /// The chart.
        chart: String,
        /// The limit.
        limit: Duration,
    },
    /// The render printed more than the output limit and was stopped.
    #[error("chart {chart}: the rendered output exceeds the limit of {limit} bytes (--render-max-output)")]
    OutputTooLarge {
        /// The chart.
        chart: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The helper could not be started or talked to.
    #[error("chart {chart}: the helper {program} could not be run: {source}")]
    Helper {
        /// The chart.
        chart: String,
        /// The helper's path.
        program: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The helper failed without a Helm error (a panic, a signal, a bad request).
    #[error("chart {chart}: the helper failed ({status}): {message}")]
    Crashed {
        /// The chart.
        chart: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        message: String,
    },
    /// A rendered document could not be parsed (names the template).
    #[error("chart {chart}: {source}")]
    Format {
        /// The chart.
        chart: String,
        /// The parse error, naming the template.
        #[source]
        source: lockstep_formats::Error,
    },
    /// A dependency of the chart cannot be had.
    #[error("chart {chart}: dependency {name}: {message}")]
    Dependency {
        /// The chart.
        chart: String,
        /// The dependency.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A values file (or a chart's own `Chart.yaml`, `Chart.lock`) cannot be read or decrypted
    /// (names the file, never a value).
    #[error("{file}: {message}")]
    ValuesFile {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A SOPS values file could not be decrypted (its MAC, its keys).
    #[error(transparent)]
    Sops(lockstep_formats::Error),
    /// A rendered object is not what it must be.
    #[error("chart {chart}: {source_file}: {message}")]
    Object {
        /// The chart.
        chart: String,
        /// The template it came from.
        source_file: String,
        /// What is wrong.
        message: String,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The Helm helper and its limits.
#[derive(Clone, Debug)]
pub struct Helper {
    /// The `lockstep-helm` binary.
    pub program: PathBuf,
    /// The longest a render may take.
    pub timeout: Duration,
    /// The most a render may print, in bytes.
    pub max_output: usize,
}

impl Helper {
    /// The helper at `program`, with the kustomize helper's default limits.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            timeout: lockstep_kustomize::Helper::DEFAULT_TIMEOUT,
            max_output: lockstep_kustomize::Helper::DEFAULT_MAX_OUTPUT,
        }
    }

    /// Where the helper is: `explicit`, else `$LOCKSTEP_HELM_HELPER`, else beside the running
    /// binary, else on `PATH`.
    pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
        process::locate(explicit, ENV, PROGRAM)
    }
}

/// A chart to render.
#[derive(Clone, Copy, Debug)]
pub enum Chart<'a> {
    /// A chart directory of a revision: `dir` (repository-relative) among its `files`, its
    /// dependencies vendored under `charts/` (directories or .tgz), `.helmignore` applied.
    Directory {
        /// The revision's files.
        files: &'a BTreeMap<String, Vec<u8>>,
        /// The chart's directory.
        dir: &'a str,
    },
    /// A packaged chart (.tgz), as a chart repository or an OCI registry serves it.
    Archive {
        /// Its reference, for messages (`podinfo 6.7.1 from https://…`).
        name: &'a str,
        /// The archive.
        bytes: &'a [u8],
    },
}

impl Chart<'_> {
    /// How messages name it.
    pub fn label(&self) -> String {
        match self {
            Chart::Directory { dir: "", .. } => ".".into(),
            Chart::Directory { dir, .. } => (*dir).to_owned(),
            Chart::Archive { name, .. } => (*name).to_owned(),
        }
    }
}

/// One source of values, merged in order over the chart's `values.yaml`.
#[derive(Debug)]
pub enum Values {
    /// A YAML document (a values file, a `valuesFrom` entry, the spec's inline `values`), whole;
    /// with `target_path`, the document is one string value set there (Flux's `targetPath`).
    Document {
        /// Where it came from, for messages (`values/prod.yaml`, `Secret web-values`).
        name: String,
        /// Its bytes; wiped when dropped (SOPS values decrypted).
        bytes: Zeroizing<Vec<u8>>,
        /// Flux's `valuesFrom[].targetPath`.
        target_path: Option<String>,
    },
    /// `--set a.b=c`.
    Set(String),
    /// `--set-string a.b=c`.
    SetString(String),
    /// `--set-json 'a.b={"c":1}'`.
    SetJson(String),
    /// `--set-literal a.b=c`.
    SetLiteral(String),
}

/// What `helm template` is given besides the chart.
#[derive(Debug, Default)]
pub struct Request {
    /// `.Release.Name`.
    pub release_name: String,
    /// `.Release.Namespace`.
    pub namespace: String,
    /// `.Capabilities.KubeVersion` (`--kube-version`); Helm's default when `None`.
    pub kube_version: Option<String>,
    /// Added to `.Capabilities.APIVersions` (`--api-versions`).
    pub api_versions: Vec<String>,
    /// Put the chart's `crds/` in the output (`--include-crds`).
    pub include_crds: bool,
    /// Leave out `helm.sh/hook: test` objects (`--skip-tests`).
    pub skip_tests: bool,
    /// `.Release.IsUpgrade` instead of `.Release.IsInstall`.
    pub is_upgrade: bool,
    /// The values, in order.
    pub values: Vec<Values>,
    /// Flux's `postRenderers[].kustomize` objects (patches, images), run in order.
    pub post_renderers: Vec<Json>,
    /// Values that must never reach a message (those of SOPS files and Secrets): replaced by
    /// `<redacted>` in whatever Helm says (a chart's `fail` or `required` may print a value).
    pub redact: Vec<Zeroizing<String>>,
    /// A chart directory's dependencies fetched from their repositories, by name: (version,
    /// archive), put under `charts/` as `helm dependency build` would.
    pub dependencies: BTreeMap<String, (String, std::sync::Arc<Vec<u8>>)>,
}

/// The strings of a values tree worth redacting ([`Request::redact`]): every leaf of four
/// characters or more (shorter ones would blank out ordinary words of a message).
pub fn secret_strings(values: &Json) -> Vec<Zeroizing<String>> {
    let mut out = Vec::new();
    let mut stack = vec![values];
    while let Some(v) = stack.pop() {
        match v {
            Json::String(s) if s.chars().count() >= 4 => out.push(Zeroizing::new(s.clone())),
            Json::Array(a) => stack.extend(a),
            Json::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
    out
}

/// `message` with every string of `secrets` replaced by `<redacted>`, longest first.
fn redacted(message: String, secrets: &[Zeroizing<String>]) -> String {
    let mut order: Vec<&str> = secrets
        .iter()
        .map(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut m = Zeroizing::new(message);
    for s in order {
        if m.contains(s) {
            m = Zeroizing::new(m.replace(s, "<redacted>"));
        }
    }
    m.to_string()
}

/// A rendered object.
#[derive(Debug)]
pub struct Rendered {
    /// The template it came from (`web/templates/deployment.yaml`; chart-name-relative, as
    /// `helm template`'s `# Source:` lines).
    pub source: String,
    /// The object; wiped when dropped (a chart's Secrets are plaintext).
    pub object: SecretJson,
}

impl Rendered {
    /// `Kind name` (or `Kind generateName*`).
    pub fn describe(&self) -> String {
        let f = |p: &str| self.object.pointer(p).and_then(Json::as_str);
        let name = f("/metadata/name")
            .map(str::to_owned)
            .or_else(|| f("/metadata/generateName").map(|g| format!("{g}*")))
            .unwrap_or_default();
        format!("{} {name}", f("/kind").unwrap_or_default())
    }
}

/// The helper's answer.
#[derive(serde::Deserialize)]
struct Output {
    objects: Vec<OutputObject>,
}

#[derive(serde::Deserialize)]
struct OutputObject {
    source: String,
    manifest: Zeroizing<String>,
}

/// Renders `chart` with `req`, as `helm template` would.
pub fn template(helper: &Helper, chart: Chart<'_>, req: &Request) -> Result<Vec<Rendered>> {
    let label = chart.label();
    let (request, entries) = request(chart, req)?;
    let limits = Limits {
        timeout: helper.timeout,
        max_output: helper.max_output,
    };
    // Unbuffered: a buffer would keep a copy of the plaintext values.
    let feed = |stdin| {
        write_tar(
            stdin,
            std::iter::once(("request.json", request.as_slice()))
                .chain(entries.iter().map(|(p, b)| (p.as_str(), *b))),
        );
    };
    let done = match process::run(&helper.program, &["template"], limits, feed) {
        Ok(done) => done,
        Err(Failure::Io(source)) => {
            return Err(Error::Helper {
                chart: label,
                program: helper.program.display().to_string(),
                source,
            });
        }
        Err(Failure::Timeout) => {
            return Err(Error::Timeout {
                chart: label,
                limit: helper.timeout,
            });
        }
        Err(Failure::TooLarge) => {
            return Err(Error::OutputTooLarge {
                chart: label,
                limit: helper.max_output,
            });
        }
    };
    match done.code {
        Some(0) => {}
        Some(1) => {
            return Err(Error::Chart {
                chart: label,
                message: redacted(done.stderr, &req.redact),
            });
        }
        _ => {
            return Err(Error::Crashed {
                chart: label,
                status: done.status,
                message: redacted(done.stderr, &req.redact),
            });
        }
    }
    let out: Output = serde_json::from_slice(&done.stdout).map_err(|e| Error::Crashed {
        chart: label.clone(),
        status: "0".into(),
        message: format!("unreadable answer: {e}"),
    })?;
    let mut rendered = Vec::new();
    for o in out.objects {
        for object in objects(&label, &o.source, &o.manifest)? {
            rendered.push(Rendered {
                source: o.source.clone(),
                object,
            });
        }
    }
    Ok(rendered)
}

/// The archive's entries besides `request.json`: (path in the archive, bytes).
type Entries<'a> = Vec<(String, &'a [u8])>;

/// `request.json` and the archive's other entries.
fn request<'a>(chart: Chart<'a>, req: &'a Request) -> Result<(Zeroizing<Vec<u8>>, Entries<'a>)> {
    let mut entries: Vec<(String, &[u8])> = Vec::new();
    let chart_entry = match chart {
        Chart::Directory { files, dir } => {
            add_dir(&mut entries, files, dir, "chart");
            // `file://` dependencies of the repository go under charts/, as `helm dependency
            // build` copies them; vendored ones are there already.
            for (dep, place) in deps::dependencies(files, dir)? {
                match place {
                    deps::Place::Vendored => {}
                    deps::Place::Local(path) => {
                        add_dir(&mut entries, files, &path, &format!("chart/charts/{}", dep.name));
                    }
                    deps::Place::Remote if req.dependencies.contains_key(&dep.name) => {
                        if let Some((version, archive)) = req.dependencies.get(&dep.name) {
                            entries.push((
                                format!("chart/charts/{}-{version}.tgz", dep.name),
                                archive.as_slice(),
                            ));
                        }
                    }
                    deps::Place::Remote => {
                        return Err(Error::Dependency {
                            chart: chart.label(),
                            name: dep.name,
                            message: format!(
                                "{} {} is not under charts/ (vendor it: `helm dependency build`)",
                                dep.repository, dep.version
                            ),
                        });
                    }
                }
            }
            "chart"
        }
        Chart::Archive { bytes, .. } => {
            entries.push(("chart.tgz".into(), bytes));
            "chart.tgz"
        }
    };
    let mut values = Vec::new();
    for (i, v) in req.values.iter().enumerate() {
        values.push(match v {
            Values::Document {
                name,
                bytes,
                target_path,
            } => {
                let file = format!("values/{i}");
                entries.push((file.clone(), bytes.as_slice()));
                let mut o = serde_json::json!({ "name": name, "file": file });
                if let Some(t) = target_path {
                    o["targetPath"] = Json::from(t.as_str());
                }
                o
            }
            Values::Set(s) => serde_json::json!({ "set": s }),
            Values::SetString(s) => serde_json::json!({ "setString": s }),
            Values::SetJson(s) => serde_json::json!({ "setJSON": s }),
            Values::SetLiteral(s) => serde_json::json!({ "setLiteral": s }),
        });
    }
    let mut r = serde_json::json!({
        "chart": chart_entry,
        "releaseName": req.release_name,
        "namespace": req.namespace,
        "apiVersions": req.api_versions,
        "includeCRDs": req.include_crds,
        "skipTests": req.skip_tests,
        "isUpgrade": req.is_upgrade,
        "values": values,
        "postRenderers": req.post_renderers,
    });
    if let Some(k) = &req.kube_version {
        r["kubeVersion"] = Json::from(k.as_str());
    }
    // `--set` expressions may hold secrets: the request is wiped too.
    let bytes = Zeroizing::new(serde_json::to_vec(&r).unwrap_or_default());
    Ok((bytes, entries))
}

/// The files under `dir` of `files`, as entries under `under`.
fn add_dir<'a>(entries: &mut Entries<'a>, files: &'a BTreeMap<String, Vec<u8>>, dir: &str, under: &str) {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    for (path, bytes) in files.range(prefix.clone()..) {
        let Some(rel) = path.strip_prefix(&prefix) else {
            break;
        };
        entries.push((format!("{under}/{rel}"), bytes.as_slice()));
    }
}

/// The objects of one rendered document (a template may hold several, or none).
fn objects(chart: &str, source: &str, manifest: &str) -> Result<Vec<SecretJson>> {
    let docs = lockstep_formats::yaml::load_documents(manifest).map_err(|e| Error::Format {
        chart: chart.to_owned(),
        source: e.in_file(source),
    })?;
    let mut out = Vec::new();
    for doc in &docs {
        match doc {
            Value::Map(items) if items.iter().any(|i| matches!(i, MapItem::Entry(..))) => {
                let object = SecretJson::new(lockstep_formats::sops::stores::to_json(doc).map_err(|e| {
                    Error::Format {
                        chart: chart.to_owned(),
                        source: e.in_file(source),
                    }
                })?);
                check(chart, source, &object)?;
                out.push(object);
            }
            Value::Map(_) | Value::Null => {}
            _ => {
                return Err(Error::Object {
                    chart: chart.to_owned(),
                    source_file: source.to_owned(),
                    message: "a rendered document is not a mapping".into(),
                });
            }
        }
    }
    Ok(out)
}

/// An object needs `apiVersion`, `kind` and a name (or, for a hook, `generateName`).
fn check(chart: &str, source: &str, o: &Json) -> Result<()> {
    let s = |p: &str| o.pointer(p).and_then(Json::as_str).filter(|v| !v.is_empty());
    let missing = if s("/apiVersion").is_none() {
        Some("apiVersion")
    } else if s("/kind").is_none() {
        Some("kind")
    } else if s("/metadata/name").is_none() && s("/metadata/generateName").is_none() {
        Some("metadata.name")
    } else {
        None
    };
    match missing {
        Some(field) => Err(Error::Object {
            chart: chart.to_owned(),
            source_file: source.to_owned(),
            message: format!("`{field}` is missing"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_chart_is_sent_under_chart_and_values_in_order() {
        let mut files = BTreeMap::new();
        files.insert("charts/web/Chart.yaml".to_owned(), b"name: web".to_vec());
        files.insert("charts/web/templates/a.yaml".to_owned(), b"a".to_vec());
        files.insert("charts/webx/Chart.yaml".to_owned(), b"other".to_vec());
        files.insert("values.yaml".to_owned(), b"v".to_vec());
        let req = Request {
            values: vec![
                Values::Document {
                    name: "values.yaml".into(),
                    bytes: Zeroizing::new(b"a: 1".to_vec()),
                    target_path: None,
                },
                Values::Set("b=2".into()),
            ],
            ..Request::default()
        };
        let (json, entries) = request(
            Chart::Directory {
                files: &files,
                dir: "charts/web",
            },
            &req,
        )
        .unwrap();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["chart/Chart.yaml", "chart/templates/a.yaml", "values/0"]);
        let r: Json = serde_json::from_slice(&json).unwrap();
        assert_eq!(r["chart"], "chart");
        assert_eq!(
            r["values"],
            serde_json::json!([{ "name": "values.yaml", "file": "values/0" }, { "set": "b=2" }])
        );
    }

    #[test]
    fn secret_values_are_redacted_from_messages() {
        let values = serde_json::json!({ "db": { "password": "hunter2-long", "port": 5432, "user": "app" }, "keys": ["k-0001"] });
        let secrets = secret_strings(&values);
        assert_eq!(secrets.len(), 2, "`app` is too short to redact");
        assert_eq!(
            redacted("bad password hunter2-long for key k-0001 (app)".into(), &secrets),
            "bad password <redacted> for key <redacted> (app)"
        );
    }

    #[test]
    fn hooks_may_have_a_generated_name_and_objects_need_one() {
        let ok = serde_json::json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "generateName": "m-" } });
        assert!(check("web", "web/templates/j.yaml", &ok).is_ok());
        let bad = serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": {} });
        assert_eq!(
            check("web", "web/templates/c.yaml", &bad)
                .unwrap_err()
                .to_string(),
            "chart web: web/templates/c.yaml: `metadata.name` is missing"
        );
    }
}
