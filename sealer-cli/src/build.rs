//! `lockstep build PATH`: renders a local directory exactly as the agent renders a Sync's path
//! (the same rules and the same kustomize helper, [`lockstep_kustomize`]; a chart directory,
//! one with `Chart.yaml`, with Helm's engine, [`lockstep_helm`], and the values a Sync's
//! `spec.helm` gives) and prints the objects, each under a `# Source:` comment. SOPS values are decrypted only with `--decrypt`
//! (MAC verified, every `ENC[]` value checked against its file); Secret values are printed as
//! `<redacted>` unless `--show-secrets`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use lockstep_formats::secret::{SecretJson, wipe_json};
use lockstep_formats::sops::{self, DecryptOptions, Identities, stores};
use lockstep_kustomize::plain::{Plain, plain};
use lockstep_kustomize::{Helper, Unit};
use serde_json::Value as Json;

use crate::{CliError, IdentityArgs, Result, stdout_write};

/// `lockstep build`
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The directory to render (a Sync's `spec.source.path`).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The repository's root: what a kustomization may reach (default: the nearest directory
    /// above PATH holding `.git`, else PATH).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Decrypt SOPS values (MAC verified) with the identities given.
    #[arg(long)]
    pub decrypt: bool,
    /// Print Secret values instead of `<redacted>`.
    #[arg(long)]
    pub show_secrets: bool,
    /// Identities, for --decrypt.
    #[command(flatten)]
    pub ids: IdentityArgs,
    /// The kustomize helper (`lockstep-kustomize`; default: beside this binary, else on PATH).
    #[arg(long, env = "LOCKSTEP_KUSTOMIZE_HELPER")]
    pub kustomize_helper: Option<PathBuf>,
    /// The longest a kustomize build may take, as a Go duration.
    #[arg(long, env = "LOCKSTEP_RENDER_TIMEOUT", default_value = "60s")]
    pub render_timeout: String,
    /// The most a kustomize build may print, in bytes.
    #[arg(long, env = "LOCKSTEP_RENDER_MAX_OUTPUT", default_value_t = Helper::DEFAULT_MAX_OUTPUT)]
    pub render_max_output: usize,
    /// A chart: its values, as `spec.helm`'s.
    #[command(flatten)]
    pub chart: ChartArgs,
}

/// How a chart directory is rendered (`spec.helm` of a Sync).
#[derive(Args, Debug, Default)]
pub struct ChartArgs {
    /// A values file, relative to PATH, as `spec.helm.valuesFiles` (repeatable, merged in
    /// order; a SOPS file needs --decrypt).
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values: Vec<String>,
    /// `--set NAME=VALUE`, as `spec.helm.set` (repeatable, applied last).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// `--set-string NAME=VALUE`, as `spec.helm.set` with `forceString`.
    #[arg(long = "set-string", value_name = "NAME=VALUE")]
    pub set_string: Vec<String>,
    /// `.Release.Name` (default: the directory's name).
    #[arg(long)]
    pub release_name: Option<String>,
    /// `.Release.Namespace`.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// `.Capabilities.KubeVersion`.
    #[arg(long)]
    pub kube_version: Option<String>,
    /// Added to `.Capabilities.APIVersions` (repeatable).
    #[arg(long = "api-versions", value_name = "GROUP/VERSION[/KIND]")]
    pub api_versions: Vec<String>,
    /// Leave out the chart's `crds/` (`spec.helm.includeCRDs: false`).
    #[arg(long)]
    pub skip_crds: bool,
    /// Leave out `helm.sh/hook: test` objects.
    #[arg(long)]
    pub skip_tests: bool,
    /// The Helm helper (`lockstep-helm`; default: beside this binary, else on PATH).
    #[arg(long, env = "LOCKSTEP_HELM_HELPER")]
    pub helm_helper: Option<PathBuf>,
}

/// The largest file read from the repository (the agent's YAML bound).
const MAX_FILE: u64 = 16 * 1024 * 1024;

impl From<lockstep_kustomize::Error> for CliError {
    fn from(e: lockstep_kustomize::Error) -> Self {
        match e {
            lockstep_kustomize::Error::Format(f) => CliError::Formats(f),
            e => CliError::Render(e),
        }
    }
}

/// Runs `lockstep build`.
pub fn run(a: BuildArgs) -> Result<()> {
    let path = a.path.canonicalize().map_err(|source| CliError::Io {
        path: a.path.clone(),
        source,
    })?;
    let root = match &a.root {
        Some(r) => r.canonicalize().map_err(|source| CliError::Io {
            path: r.clone(),
            source,
        })?,
        None => path
            .ancestors()
            .find(|d| d.join(".git").exists())
            .unwrap_or(&path)
            .to_owned(),
    };
    let rel = path
        .strip_prefix(&root)
        .map_err(|_| CliError::Usage(format!("{} is not inside {}", path.display(), root.display())))?
        .to_string_lossy()
        .into_owned();
    let files = read_repository(&root)?;
    let ids = a.decrypt.then(|| crate::identities(&a.ids)).transpose()?;
    let timeout = lockstep_formats::duration::parse(&a.render_timeout)
        .ok_or_else(|| CliError::Usage(format!("--render-timeout {}: not a duration", a.render_timeout)))?;
    let helper = Helper::locate(a.kustomize_helper.as_deref()).map(|p| Helper {
        program: p,
        timeout,
        max_output: a.render_max_output,
        origins: true,
    });
    let mut secrets = Vec::new();
    let objects = if files.contains_key(&lockstep_kustomize::paths::child(&rel, "Chart.yaml")) {
        chart(&files, &rel, &path, &a, timeout, ids.as_ref(), &mut secrets)?
    } else {
        render(&files, &rel, helper.as_ref(), ids.as_ref())?
    };
    let mut text = zeroize::Zeroizing::new(String::new());
    for (origin, mut object) in objects {
        if !a.show_secrets {
            redact(&mut object);
            redact_strings(&mut object, &secrets);
        }
        let mut doc = stores::from_json((*object).clone());
        let yaml = zeroize::Zeroizing::new(lockstep_formats::yaml::emit_documents(std::slice::from_ref(
            &doc,
        ))?);
        zeroize::Zeroize::zeroize(&mut doc);
        text.push_str("---\n# Source: ");
        text.push_str(&origin);
        text.push('\n');
        text.push_str(&yaml);
    }
    stdout_write(text.as_bytes())
}

/// Every file under `root` (`.git` aside), repository-relative.
fn read_repository(root: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) -> Result<()> {
        let io = |source| CliError::Io {
            path: dir.to_owned(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let p = entry.path();
            let kind = entry.file_type().map_err(io)?;
            if kind.is_dir() {
                if entry.file_name() != ".git" {
                    walk(root, &p, out)?;
                }
            } else if kind.is_file() {
                let len = entry.metadata().map_err(io)?.len();
                if len > MAX_FILE {
                    return Err(CliError::Usage(format!(
                        "{}: larger than {MAX_FILE} bytes",
                        p.display()
                    )));
                }
                let bytes = std::fs::read(&p).map_err(|source| CliError::Io {
                    path: p.clone(),
                    source,
                })?;
                let rel = p
                    .strip_prefix(root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, bytes);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// The objects of `path` as the agent renders them, decrypted when `ids` are given.
fn render(
    files: &BTreeMap<String, Vec<u8>>,
    path: &str,
    helper: Option<&Helper>,
    ids: Option<&Identities>,
) -> Result<Vec<(String, SecretJson)>> {
    let mut out = Vec::new();
    for unit in lockstep_kustomize::units(files, path) {
        match unit {
            Unit::File(f) => {
                let Some(bytes) = files.get(&f) else { continue };
                match plain(&f, bytes)? {
                    Plain::Skipped => {}
                    Plain::Objects(objects) => {
                        out.extend(objects.into_iter().map(|(o, j)| (o, SecretJson::new(j))))
                    }
                    Plain::Sops(format) => out.extend(sops_file(&f, bytes, format, ids)?),
                }
            }
            Unit::Kustomization { dir } => {
                let helper = helper.ok_or_else(|| {
                    CliError::Usage(format!(
                        "{}: a kustomization, but the kustomize helper ({}) was not found (--kustomize-helper)",
                        lockstep_kustomize::kustomization_file(files, &dir).unwrap_or_default(),
                        lockstep_kustomize::helper::PROGRAM
                    ))
                })?;
                for b in lockstep_kustomize::build(helper, files, &dir)? {
                    let object = match (&b.encrypted, ids) {
                        (Some(_), Some(ids)) => lockstep_kustomize::decrypt(files, &b, Some(ids))?,
                        _ => SecretJson::new(b.object.clone()),
                    };
                    out.push((b.origin_label(), object));
                }
            }
        }
    }
    Ok(out)
}

/// The objects of the chart directory `dir`, as a Sync's `spec.helm` renders them; the secret
/// values (of SOPS values files) go to `redact`.
fn chart(
    files: &BTreeMap<String, Vec<u8>>,
    dir: &str,
    path: &Path,
    a: &BuildArgs,
    timeout: std::time::Duration,
    ids: Option<&Identities>,
    redact: &mut Vec<zeroize::Zeroizing<String>>,
) -> Result<Vec<(String, SecretJson)>> {
    use lockstep_helm::{Request, Values};
    let c = &a.chart;
    let program = lockstep_helm::Helper::locate(c.helm_helper.as_deref()).ok_or_else(|| {
        CliError::Usage(format!(
            "{}: a chart, but the Helm helper ({}) was not found (--helm-helper)",
            lockstep_kustomize::paths::child(dir, "Chart.yaml"),
            lockstep_helm::PROGRAM
        ))
    })?;
    let helper = lockstep_helm::Helper {
        program,
        timeout,
        max_output: a.render_max_output,
    };
    let mut values = Vec::new();
    for f in &c.values {
        let file = lockstep_kustomize::paths::join(dir, f)
            .ok_or_else(|| CliError::Usage(format!("--values {f}: leaves the repository")))?;
        let bytes = files
            .get(&file)
            .ok_or_else(|| CliError::Usage(format!("--values {f}: {file} is not in the repository")))?;
        values.push(
            lockstep_helm::values::file(&file, bytes, ids, "--decrypt was not given", redact)
                .map_err(CliError::Chart)?,
        );
    }
    values.extend(c.set.iter().cloned().map(Values::Set));
    values.extend(c.set_string.iter().cloned().map(Values::SetString));
    let release_name = c.release_name.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "release".into())
    });
    let req = Request {
        release_name,
        namespace: c.namespace.clone(),
        kube_version: c.kube_version.clone(),
        api_versions: c.api_versions.clone(),
        include_crds: !c.skip_crds,
        skip_tests: c.skip_tests,
        is_upgrade: false,
        values,
        post_renderers: Vec::new(),
        redact: redact.clone(),
        dependencies: Default::default(),
    };
    let rendered = lockstep_helm::template(&helper, lockstep_helm::Chart::Directory { files, dir }, &req)
        .map_err(CliError::Chart)?;
    Ok(rendered
        .into_iter()
        .map(|r| (format!("{} ({})", r.source, r.describe()), r.object))
        .collect())
}

/// Every string of `o` holding one of `secrets` replaced by `<redacted>` (the old one wiped).
fn redact_strings(o: &mut Json, secrets: &[zeroize::Zeroizing<String>]) {
    if secrets.is_empty() {
        return;
    }
    match o {
        Json::String(s) if secrets.iter().any(|x| !x.is_empty() && s.contains(x.as_str())) => {
            zeroize::Zeroize::zeroize(s);
            *s = "<redacted>".into();
        }
        Json::Array(a) => a.iter_mut().for_each(|v| redact_strings(v, secrets)),
        Json::Object(m) => m.values_mut().for_each(|v| redact_strings(v, secrets)),
        _ => {}
    }
}

/// A plain SOPS file's objects: decrypted with `ids`, else as they are (ciphertext).
fn sops_file(
    file: &str,
    bytes: &[u8],
    format: sops::Format,
    ids: Option<&Identities>,
) -> Result<Vec<(String, SecretJson)>> {
    let docs: Vec<Json> = match ids {
        Some(ids) => {
            let d = sops::decrypt(file, bytes, format, ids, DecryptOptions::default())?;
            d.documents()
                .iter()
                .map(|b| stores::branch_to_json(b))
                .collect::<lockstep_formats::Result<_>>()?
        }
        None => {
            let text =
                std::str::from_utf8(bytes).map_err(|_| CliError::Usage(format!("{file}: not UTF-8")))?;
            lockstep_formats::yaml::load_documents(text)?
                .iter()
                .map(stores::to_json)
                .collect::<lockstep_formats::Result<_>>()?
        }
    };
    let count = docs.len();
    Ok(docs
        .into_iter()
        .enumerate()
        .filter(|(_, d)| d.as_object().is_some_and(|m| !m.is_empty()))
        .map(|(i, d)| {
            (
                lockstep_kustomize::plain::origin(file, i, count),
                SecretJson::new(d),
            )
        })
        .collect())
}

/// A Secret's `data` and `stringData` values replaced by `<redacted>` (the old ones wiped).
fn redact(o: &mut Json) {
    if o.get("kind").and_then(Json::as_str) != Some("Secret") {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(m) = o.get_mut(field).and_then(Json::as_object_mut) {
            for v in m.values_mut() {
                wipe_json(v);
                *v = Json::String("<redacted>".into());
            }
        }
    }
}
