//! `lockstep seal`: kubeseal's flags and behaviour, plus sealing for several clusters at once
//! and telling which key sealed an object.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use lockstep_formats::sealed::{self, KeyRing, Scope, SealOptions, SealingCert};
use lockstep_formats::sops::stores::{from_json, to_json};
use lockstep_formats::tree::{MapItem, Value};
use lockstep_formats::yaml;
use serde_json::Value as Json;
use zeroize::Zeroizing;

use crate::{CliError, Result, cluster, replace_file, stdout_write};

/// Output format (kubeseal's `-o`).
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum OutFormat {
    /// Pretty JSON (kubeseal's default).
    #[default]
    Json,
    /// YAML, keys sorted, each document after `---`.
    Yaml,
}

/// Scopes on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScopeArg {
    /// Bound to namespace and name.
    Strict,
    /// Bound to the namespace.
    NamespaceWide,
    /// Unbound.
    ClusterWide,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Self {
        match s {
            ScopeArg::Strict => Scope::Strict,
            ScopeArg::NamespaceWide => Scope::NamespaceWide,
            ScopeArg::ClusterWide => Scope::ClusterWide,
        }
    }
}

/// `lockstep seal` (kubeseal-compatible flags; each also reads `SEALED_SECRETS_<FLAG>`).
#[derive(Args, Debug)]
pub struct SealArgs {
    /// Input Secret(s), YAML or JSON, several documents allowed (default: standard input).
    #[arg(
        short = 'f',
        long = "secret-file",
        value_name = "FILE",
        env = "SEALED_SECRETS_SECRET_FILE"
    )]
    pub secret_file: Option<PathBuf>,
    /// Output file, written atomically and only on success (default: standard output).
    #[arg(
        short = 'w',
        long = "sealed-secret-file",
        value_name = "FILE",
        env = "SEALED_SECRETS_SEALED_SECRET_FILE"
    )]
    pub sealed_secret_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "format", value_enum, default_value_t = OutFormat::Json, env = "SEALED_SECRETS_FORMAT")]
    pub format: OutFormat,
    /// Certificate file (repeatable: one SealedSecret per certificate, for several clusters).
    #[arg(
        long = "cert",
        value_name = "FILE",
        env = "SEALED_SECRETS_CERT",
        value_delimiter = ','
    )]
    pub certs: Vec<String>,
    /// Sealing scope; a non-strict value overrides the input's annotations.
    #[arg(long, value_enum, env = "SEALED_SECRETS_SCOPE")]
    pub scope: Option<ScopeArg>,
    /// Namespace for a Secret without one (an error if the Secret names another).
    #[arg(short = 'n', long, env = "SEALED_SECRETS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Encrypt one raw value (from standard input or --from-file) and print its base64.
    #[arg(long)]
    pub raw: bool,
    /// Secret name for --raw (needed unless cluster-wide).
    #[arg(long)]
    pub name: Option<String>,
    /// With --raw: read the value from this file (`name=` prefixes are ignored).
    #[arg(long = "from-file", value_name = "FILE")]
    pub from_file: Option<String>,
    /// Seal the input with FILE's name and namespace and merge the result into FILE in place.
    #[arg(long = "merge-into", value_name = "FILE")]
    pub merge_into: Option<PathBuf>,
    /// Decrypt one SealedSecret offline with --recovery-private-key (disaster recovery).
    #[arg(long = "recovery-unseal")]
    pub recovery_unseal: bool,
    /// Private key: PEM, a Secret with `tls.key`, or a backup `v1.List` (repeatable or comma-separated).
    #[arg(long = "recovery-private-key", value_name = "FILE", value_delimiter = ',')]
    pub recovery_private_keys: Vec<PathBuf>,
    /// Seal a Secret that has no data.
    #[arg(long = "allow-empty-data")]
    pub allow_empty_data: bool,
    /// Tell which certificate (or private key) each SealedSecret in FILE was sealed with.
    #[arg(long = "which-key", value_name = "FILE")]
    pub which_key: Option<PathBuf>,
    /// Print the certificate of --cert (or of the cluster's agent) and exit.
    #[arg(long = "fetch-cert")]
    pub fetch_cert: bool,
    /// Re-seal existing SealedSecrets with the newest key (needs the agent's API).
    #[arg(long = "re-encrypt", alias = "rotate")]
    pub re_encrypt: bool,
    /// Check with the agent that the input SealedSecrets can be unsealed.
    #[arg(long)]
    pub validate: bool,
    /// Namespace of the agent's Service (for --fetch-cert, --validate, --re-encrypt, and sealing
    /// without --cert).
    #[arg(
        long,
        env = "SEALED_SECRETS_CONTROLLER_NAMESPACE",
        default_value = "lockstep-system"
    )]
    pub controller_namespace: String,
    /// Name of the agent's Service.
    #[arg(
        long,
        env = "SEALED_SECRETS_CONTROLLER_NAME",
        default_value = "lockstep-agent"
    )]
    pub controller_name: String,
    /// kubeconfig file (default: `KUBECONFIG`, `~/.kube/config`, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
}

fn controller(a: &SealArgs) -> cluster::Controller {
    cluster::Controller {
        namespace: a.controller_namespace.clone(),
        name: a.controller_name.clone(),
        // KUBECONFIG may list several files; kube reads the variable itself then.
        kubeconfig: a
            .kubeconfig
            .clone()
            .filter(|p| !p.as_os_str().to_string_lossy().contains(':')),
        context: a.context.clone(),
    }
}

/// The certificates of --cert, or else the agent's current one.
fn certs_or_cluster(a: &SealArgs) -> Result<Vec<SealingCert>> {
    if !a.certs.is_empty() {
        return load_certs(&a.certs);
    }
    let c = controller(a);
    let pem = cluster::fetch_cert(&c)?;
    let source = format!("the certificate of service {}/{}", c.namespace, c.name);
    let cert = SealingCert::from_pem(&source, pem.as_bytes())?;
    warn_if_expired(&source, &cert);
    Ok(vec![cert])
}

fn warn_if_expired(source: &str, c: &SealingCert) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if c.expired_at(now) {
        eprintln!(
            "warning: {source}: the certificate has expired; sealing anyway (the agent still opens it), but fetch the current one"
        );
    }
}

/// The SealedSecrets of the input, each as the JSON body the agent takes.
fn input_sealed(a: &SealArgs) -> Result<Vec<Json>> {
    let input = read_input(a.secret_file.as_deref())?;
    let objs = parse_objects(&input)?;
    if objs.is_empty() {
        return Err(usage("no SealedSecret in the input"));
    }
    for (i, o) in objs.iter().enumerate() {
        if o.get("kind").and_then(Json::as_str) != Some("SealedSecret") {
            return Err(usage(format!(
                "input object {} ({}) is not a SealedSecret",
                i + 1,
                object_name(o)
            )));
        }
    }
    Ok(objs)
}

fn object_name(o: &Json) -> String {
    let ns = o
        .pointer("/metadata/namespace")
        .and_then(Json::as_str)
        .unwrap_or("default");
    let name = o.pointer("/metadata/name").and_then(Json::as_str).unwrap_or("?");
    format!("{ns}/{name}")
}

fn bodies(objs: &[Json]) -> Result<Vec<Vec<u8>>> {
    objs.iter()
        .map(|o| serde_json::to_vec(o).map_err(|e| usage(e.to_string())))
        .collect()
}

/// `--validate`: asks the agent whether every input SealedSecret opens.
fn validate(a: &SealArgs) -> Result<()> {
    let objs = input_sealed(a)?;
    let answers = cluster::post_each(&controller(a), "/v1/verify", &bodies(&objs)?)?;
    let failed: Vec<String> = objs
        .iter()
        .zip(answers)
        .filter_map(|(o, r)| r.err().map(|e| format!("{}: {e}", object_name(o))))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Cluster(format!(
            "unable to decrypt sealed secret: {} of {} cannot be unsealed by the agent:\n  {}",
            failed.len(),
            objs.len(),
            failed.join("\n  ")
        )))
    }
}

/// `--re-encrypt`: every input SealedSecret sealed again with the newest key, scope and
/// template unchanged. Through the agent's `/v1/rotate`, or offline with
/// `--recovery-private-key OLD --cert NEW`. With `-f FILE` and no `-w`, FILE is rewritten in
/// place in its own format.
fn re_encrypt(a: &SealArgs) -> Result<()> {
    let objs = input_sealed(a)?;
    let out: Vec<Json> = if a.recovery_private_keys.is_empty() {
        let answers = cluster::post_each(&controller(a), "/v1/rotate", &bodies(&objs)?)?;
        objs.iter()
            .zip(answers)
            .map(|(o, r)| {
                let body =
                    r.map_err(|e| CliError::Cluster(format!("re-encrypting {}: {e}", object_name(o))))?;
                serde_json::from_str(&body).map_err(|e| {
                    CliError::Cluster(format!(
                        "re-encrypting {}: the agent's answer is not JSON: {e}",
                        object_name(o)
                    ))
                })
            })
            .collect::<Result<_>>()?
    } else {
        let ring = load_ring(&a.recovery_private_keys)?;
        let certs = load_certs(&a.certs)?;
        let [cert] = certs.as_slice() else {
            return Err(usage(
                "offline --re-encrypt takes the old keys as --recovery-private-key and exactly one new --cert",
            ));
        };
        objs.iter()
            .map(|o| sealed::reseal(o, &ring, cert).map_err(CliError::from))
            .collect::<Result<_>>()?
    };
    let in_place = match (&a.sealed_secret_file, &a.secret_file) {
        (None, Some(f)) if f != Path::new("-") => Some(f.as_path()),
        _ => None,
    };
    let format = match in_place {
        Some(f) => {
            let original = read_input(Some(f))?;
            if original.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                OutFormat::Json
            } else {
                OutFormat::Yaml
            }
        }
        None => effective_format(a),
    };
    let text = render(&out, format)?;
    write_out(
        in_place.or(a.sealed_secret_file.as_deref()),
        text.as_bytes(),
        false,
    )
}

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(m.into())
}

/// Runs `lockstep seal`.
pub fn run(a: SealArgs) -> Result<()> {
    if a.recovery_unseal {
        return recovery_unseal(&a);
    }
    if let Some(file) = &a.which_key {
        return which_key(&a, file);
    }
    if a.validate {
        return validate(&a);
    }
    if a.re_encrypt {
        return re_encrypt(&a);
    }
    let certs = certs_or_cluster(&a)?;
    if a.fetch_cert {
        let pems: String = certs.iter().map(|c| c.pem().to_owned()).collect();
        return write_out(a.sealed_secret_file.as_deref(), pems.as_bytes(), false);
    }
    let opts = SealOptions {
        scope: a.scope.map(Scope::from),
        namespace: a.namespace.clone(),
        allow_empty_data: a.allow_empty_data,
    };
    if a.raw {
        return raw(&a, &certs, &opts);
    }
    if let Some(target) = &a.merge_into {
        return merge_into(&a, &certs, &opts, target);
    }
    let input = read_input(a.secret_file.as_deref())?;
    let secrets = parse_objects(&input)?;
    if secrets.is_empty() {
        return Err(usage("no Secret in the input"));
    }
    let mut out = Vec::new();
    for s in &secrets {
        for c in &certs {
            out.push(sealed::seal_secret(s, c, &opts)?);
        }
    }
    let text = render(&out, effective_format(&a))?;
    write_out(a.sealed_secret_file.as_deref(), text.as_bytes(), false)
}

fn effective_format(a: &SealArgs) -> OutFormat {
    // kubeseal: a .yaml/.yml output file forces YAML.
    match a
        .sealed_secret_file
        .as_deref()
        .and_then(Path::extension)
        .and_then(|e| e.to_str())
    {
        Some("yaml" | "yml") => OutFormat::Yaml,
        _ => a.format,
    }
}

/// Certificates from files, `file://` or `http(s)://` URLs. An expired one is used with a
/// warning, as the agent still opens what it seals.
fn load_certs(specs: &[String]) -> Result<Vec<SealingCert>> {
    if specs.is_empty() {
        return Err(usage(
            "no certificate: pass --cert FILE|URL (from `lockstep keygen sealing` or `lockstep seal --fetch-cert`)",
        ));
    }
    specs
        .iter()
        .map(|spec| {
            let (source, bytes) = if spec.starts_with("http://") || spec.starts_with("https://") {
                (spec.as_str(), cluster::fetch_url(spec)?)
            } else {
                let path = spec.strip_prefix("file://").unwrap_or(spec);
                let bytes = std::fs::read(path).map_err(|source| CliError::Io {
                    path: path.into(),
                    source,
                })?;
                (path, bytes)
            };
            let c = SealingCert::from_pem(source, &bytes)?;
            warn_if_expired(source, &c);
            Ok(c)
        })
        .collect()
}

fn read_input(path: Option<&Path>) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    match path {
        Some(p) if p != Path::new("-") => {
            let mut f = std::fs::File::open(p).map_err(|source| CliError::Io {
                path: p.into(),
                source,
            })?;
            f.read_to_end(&mut buf).map_err(|source| CliError::Io {
                path: p.into(),
                source,
            })?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|source| CliError::Io {
                    path: "<stdin>".into(),
                    source,
                })?;
        }
    }
    Ok(buf)
}

/// Every object of a YAML/JSON stream, `v1.List` items unpacked.
fn parse_objects(bytes: &[u8]) -> Result<Vec<Json>> {
    let text = std::str::from_utf8(bytes).map_err(|_| usage("input is not UTF-8 text"))?;
    let mut out = Vec::new();
    for doc in yaml::load_documents(text)? {
        let v = to_json(&doc)?;
        match v.get("kind").and_then(Json::as_str) {
            Some("List") => out.extend(
                v.get("items")
                    .and_then(Json::as_array)
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => out.push(v),
        }
    }
    Ok(out)
}

/// JSON: pretty, one object after another. YAML: keys sorted, `---` before each document.
fn render(objs: &[Json], format: OutFormat) -> Result<String> {
    let mut out = String::new();
    for o in objs {
        match format {
            OutFormat::Json => {
                out.push_str(&serde_json::to_string_pretty(o).map_err(|e| usage(e.to_string()))?);
                out.push('\n');
            }
            OutFormat::Yaml => {
                out.push_str("---\n");
                out.push_str(&yaml::emit_documents(&[sorted(from_json(o.clone()))])?);
            }
        }
    }
    Ok(out)
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Map(mut items) => {
            items.sort_by(|a, b| match (a, b) {
                (MapItem::Entry(x, _), MapItem::Entry(y, _)) => x.cmp(y),
                _ => std::cmp::Ordering::Equal,
            });
            Value::Map(
                items
                    .into_iter()
                    .map(|i| match i {
                        MapItem::Entry(k, v) => MapItem::Entry(k, sorted(v)),
                        c => c,
                    })
                    .collect(),
            )
        }
        Value::Seq(items) => Value::Seq(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn write_out(path: Option<&Path>, bytes: &[u8], private: bool) -> Result<()> {
    match path {
        None => stdout_write(bytes),
        Some(p) if p == Path::new("-") => stdout_write(bytes),
        Some(p) => replace_file(p, bytes, private),
    }
}

fn raw(a: &SealArgs, certs: &[SealingCert], opts: &SealOptions) -> Result<()> {
    let scope = opts.scope.unwrap_or_default();
    let name = a.name.clone().unwrap_or_default();
    if name.is_empty() && scope != Scope::ClusterWide {
        return Err(usage("--raw needs --name unless --scope cluster-wide"));
    }
    let namespace = a.namespace.clone().unwrap_or_else(|| "default".into());
    let value = match &a.from_file {
        Some(spec) => {
            // kubeseal ignores a `name=` prefix.
            let path = spec.split_once('=').map_or(spec.as_str(), |(_, p)| p);
            Zeroizing::new(std::fs::read(path).map_err(|source| CliError::Io {
                path: path.into(),
                source,
            })?)
        }
        None => read_input(None)?,
    };
    let label = scope.label(&namespace, &name);
    let lines: Vec<String> = certs
        .iter()
        .map(|c| sealed::hybrid_encrypt(c, &value, &label).map(|ct| sealed::encode_base64(&ct)))
        .collect::<std::result::Result<_, _>>()?;
    // One certificate: exactly kubeseal's output (no newline). Several: one line each.
    let text = if lines.len() == 1 {
        lines.concat()
    } else {
        lines.join("\n") + "\n"
    };
    write_out(a.sealed_secret_file.as_deref(), text.as_bytes(), false)
}

fn merge_into(a: &SealArgs, certs: &[SealingCert], opts: &SealOptions, target: &Path) -> Result<()> {
    let [cert] = certs else {
        return Err(usage("--merge-into takes exactly one --cert"));
    };
    let existing_text = std::fs::read(target).map_err(|source| CliError::Io {
        path: target.into(),
        source,
    })?;
    let mut existing = parse_objects(&existing_text)?
        .into_iter()
        .next()
        .ok_or_else(|| usage(format!("{}: no SealedSecret in it", target.display())))?;
    let input = read_input(a.secret_file.as_deref())?;
    let mut secret = parse_objects(&input)?
        .into_iter()
        .next()
        .ok_or_else(|| usage("no Secret in the input"))?;
    // Seal with the target's identity, keeping its scope unless --scope says otherwise.
    let tmeta = existing.get("metadata").cloned().unwrap_or(Json::Null);
    if let Some(m) = secret.get_mut("metadata").and_then(Json::as_object_mut) {
        for k in ["name", "namespace"] {
            match tmeta.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        if opts.scope.is_none() {
            let scope = Scope::from_annotations(tmeta.get("annotations").and_then(Json::as_object));
            let ann = m.entry("annotations").or_insert_with(|| serde_json::json!({}));
            if let (Some(ann), Some(key)) = (ann.as_object_mut(), scope_annotation(scope)) {
                ann.insert(key.into(), "true".into());
            }
        }
    }
    let sealed = sealed::seal_secret(&secret, cert, opts)?;
    let enc = existing
        .pointer_mut("/spec/encryptedData")
        .and_then(Json::as_object_mut)
        .ok_or_else(|| usage(format!("{}: no spec.encryptedData", target.display())))?;
    if let Some(new) = sealed.pointer("/spec/encryptedData").and_then(Json::as_object) {
        for (k, v) in new {
            enc.insert(k.clone(), v.clone());
        }
    }
    let json_input = existing_text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let text = render(
        &[existing],
        if json_input {
            OutFormat::Json
        } else {
            OutFormat::Yaml
        },
    )?;
    replace_file(target, text.as_bytes(), false)
}

fn scope_annotation(s: Scope) -> Option<&'static str> {
    match s {
        Scope::Strict => None,
        Scope::NamespaceWide => Some(sealed::NAMESPACE_WIDE),
        Scope::ClusterWide => Some(sealed::CLUSTER_WIDE),
    }
}

fn load_ring(paths: &[PathBuf]) -> Result<KeyRing> {
    let mut ring = KeyRing::new();
    for p in paths {
        let text = Zeroizing::new(std::fs::read_to_string(p).map_err(|source| CliError::Io {
            path: p.clone(),
            source,
        })?);
        ring.add_file_contents(&p.display().to_string(), &text)?;
    }
    Ok(ring)
}

fn recovery_unseal(a: &SealArgs) -> Result<()> {
    if a.recovery_private_keys.is_empty() {
        return Err(usage("--recovery-unseal needs --recovery-private-key"));
    }
    let ring = load_ring(&a.recovery_private_keys)?;
    let input = read_input(a.secret_file.as_deref())?;
    let objs = parse_objects(&input)?;
    let [ss] = objs.as_slice() else {
        return Err(usage(format!(
            "--recovery-unseal takes one SealedSecret; the input has {}",
            objs.len()
        )));
    };
    let secret = sealed::unseal(ss, &ring)?;
    let mut json = secret.to_secret_json();
    let text = Zeroizing::new(render(std::slice::from_ref(&json), effective_format(a))?);
    zeroize_json(&mut json);
    write_out(a.sealed_secret_file.as_deref(), text.as_bytes(), true)
}

fn zeroize_json(v: &mut Json) {
    use zeroize::Zeroize;
    if let Some(Json::Object(data)) = v.get_mut("data") {
        for (_, val) in data.iter_mut() {
            if let Json::String(s) = val {
                s.zeroize();
            }
        }
    }
}

fn which_key(a: &SealArgs, file: &Path) -> Result<()> {
    let text = std::fs::read(file).map_err(|source| CliError::Io {
        path: file.into(),
        source,
    })?;
    let objs = parse_objects(&text)?;
    let certs: Vec<(String, SealingCert)> = a
        .certs
        .iter()
        .map(|spec| load_certs(std::slice::from_ref(spec)).map(|mut c| (spec.clone(), c.remove(0))))
        .collect::<Result<_>>()?;
    let ring = load_ring(&a.recovery_private_keys)?;
    let mut out = String::new();
    for o in &objs {
        let ns = o
            .pointer("/metadata/namespace")
            .and_then(Json::as_str)
            .unwrap_or("default");
        let name = o.pointer("/metadata/name").and_then(Json::as_str).unwrap_or("?");
        let recorded = o
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(sealed::object::SEALED_WITH))
            .and_then(Json::as_str);
        let answer = if let Some(fp) = recorded {
            match certs.iter().find(|(_, c)| c.fingerprint() == fp) {
                Some((spec, _)) => format!("{spec} ({fp})"),
                None => format!("{fp} (recorded when sealed; none of the given certificates)"),
            }
        } else if !ring.is_empty() {
            match sealed::object::opening_key(o, &ring) {
                Some(k) => format!("{} ({})", k.source(), k.fingerprint()),
                None => "none of the given private keys opens it".into(),
            }
        } else {
            "unknown: it records no key (kubeseal output); pass --recovery-private-key to test keys".into()
        };
        out.push_str(&format!("{ns}/{name}: {answer}\n"));
    }
    write_out(None, out.as_bytes(), false)
}
