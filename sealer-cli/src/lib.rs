//! The `lockstep` command line: SOPS encryption and decryption, sealing, key generation, and
//! operating Syncs in a cluster ([`ops`]).
//!
//! The binary is a thin `main` over [`run`]. Every command computes its whole output before it
//! writes anything, and writes files atomically (a temporary file in the same directory, then a
//! rename), so a failure never leaves a partial or truncated file behind.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lockstep_formats::sops::{self, Config, DecryptOptions, EncryptOptions, Format, Identities, Rule};
use zeroize::Zeroizing;

pub mod build;
pub mod cluster;
pub mod import;
pub mod install;
pub mod ops;
pub mod seal;

/// Lockstep's companion CLI: encrypt secrets for Git on a laptop or in CI.
#[derive(Parser, Debug)]
#[command(name = "lockstep", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
// Parsed once per process; boxing the variants would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// SOPS files (age keys): encrypt, decrypt, updatekeys, rotate.
    #[command(subcommand)]
    Sops(SopsCommand),
    /// Seal Secrets into SealedSecrets (kubeseal's flags), unseal for recovery.
    Seal(seal::SealArgs),
    /// Generate keys.
    #[command(subcommand)]
    Keygen(KeygenCommand),
    /// Render a directory as the agent would (plain files, kustomize overlays) and print the
    /// objects; SOPS values decrypted only with --decrypt, Secret values redacted unless
    /// --show-secrets.
    Build(build::BuildArgs),
    /// Install the agent in a cluster (`deploy/`), or print its manifests with --export.
    Install(install::InstallArgs),
    /// Translate a repository's Flux GitRepositories and Kustomizations into Syncs (printed),
    /// reporting what changes meaning and what is not acted on.
    Import(import::ImportArgs),
    /// Operate Syncs in a cluster: status, history, diff, suspend, resume, reconcile.
    #[command(flatten)]
    Ops(ops::OpsCommand),
}

/// `lockstep sops ...`
#[derive(Subcommand, Debug)]
pub enum SopsCommand {
    /// Encrypt a plaintext file so that `sops decrypt` (and Lockstep) can read it.
    Encrypt(EncryptArgs),
    /// Decrypt a SOPS file, verifying its MAC.
    Decrypt(DecryptArgs),
    /// Re-wrap the data key for the recipients the `.sops.yaml` creation rule names now.
    Updatekeys(UpdatekeysArgs),
    /// Generate a new data key and re-encrypt every value with it.
    Rotate(RotateArgs),
}

/// `lockstep keygen ...`
#[derive(Subcommand, Debug)]
pub enum KeygenCommand {
    /// Generate an age X25519 identity (written 0600; an existing file is never overwritten).
    Age {
        /// Write the identity to FILE instead of standard output.
        #[arg(short, long, value_name = "FILE", conflicts_with = "in_cluster")]
        output: Option<PathBuf>,
        /// Add the identity to a decryption Secret in the cluster instead (a new
        /// `age-<time>.agekey` entry; the others are kept), which Syncs naming that Secret
        /// decrypt with from their next sync. The identity never touches the disk; the new
        /// recipient is printed, for `.sops.yaml`. This is what the rotation CronJob runs.
        #[arg(long)]
        in_cluster: bool,
        /// With --in-cluster: the decryption Secret (created when missing).
        #[arg(long, default_value = "sops-age")]
        secret: String,
        /// With --in-cluster: the Secret's namespace.
        #[arg(long, env = "POD_NAMESPACE", default_value = "lockstep-system")]
        namespace: String,
        /// With --in-cluster: kubeconfig file (default: `KUBECONFIG`, `~/.kube/config`, or
        /// the pod's ServiceAccount).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
    /// Generate a sealing key pair for offline use, as sealed-secrets makes them (both files
    /// written 0600, never overwritten).
    Sealing {
        /// The private key (PKCS#1 PEM, `tls.key`).
        #[arg(long, value_name = "FILE", default_value = "tls.key")]
        key_file: PathBuf,
        /// The certificate (`tls.crt`), to hand to `lockstep seal --cert` or `kubeseal --cert`.
        #[arg(long, value_name = "FILE", default_value = "tls.crt")]
        cert_file: PathBuf,
        /// RSA key size.
        #[arg(long, default_value_t = 4096)]
        bits: usize,
        /// Certificate common name.
        #[arg(long, default_value = "")]
        cn: String,
        /// Certificate lifetime in days (sealed-secrets: 10 years).
        #[arg(long, default_value_t = 3650)]
        days: i64,
        /// Store the key in the cluster instead of files: a new active key Secret in the
        /// agent's namespace, which the agent picks up at once and seals with from then on
        /// (old keys are kept). The private key never touches the disk; the certificate is
        /// printed. This is what the rotation CronJob runs.
        #[arg(long)]
        in_cluster: bool,
        /// With --in-cluster: the agent's namespace.
        #[arg(long, env = "POD_NAMESPACE", default_value = "lockstep-system")]
        namespace: String,
        /// With --in-cluster: kubeconfig file (default: `KUBECONFIG`, `~/.kube/config`, or
        /// the pod's ServiceAccount).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
}

/// File formats on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
    /// KEY=value lines.
    Dotenv,
    /// Any bytes.
    Binary,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Yaml => Format::Yaml,
            FormatArg::Json => Format::Json,
            FormatArg::Dotenv => Format::Dotenv,
            FormatArg::Binary => Format::Binary,
        }
    }
}

/// Input and output options shared by the commands that read one file and write one.
#[derive(Args, Debug)]
pub struct Io {
    /// The file to read; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Format of the input (default: from the file extension; YAML for standard input).
    #[arg(long, value_enum)]
    pub input_type: Option<FormatArg>,
    /// Write the result back to FILE.
    #[arg(short, long, conflicts_with = "output")]
    pub in_place: bool,
    /// Write the result to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Where identities come from, in addition to `SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE` and
/// `~/.config/sops/age/keys.txt`.
#[derive(Args, Debug)]
pub struct IdentityArgs {
    /// An age identity file (repeatable).
    #[arg(long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
}

/// `lockstep sops encrypt`
#[derive(Args, Debug)]
pub struct EncryptArgs {
    /// Input and output.
    #[command(flatten)]
    pub io: Io,
    /// age recipient (repeatable, or comma-separated); replaces the `.sops.yaml` rule's keys.
    #[arg(
        long = "age",
        env = "SOPS_AGE_RECIPIENTS",
        value_delimiter = ',',
        value_name = "RECIPIENT"
    )]
    pub age: Vec<String>,
    /// Encrypt only values under keys matching this regex (e.g. `^(data|stringData)$`).
    #[arg(long, group = "rule")]
    pub encrypted_regex: Option<String>,
    /// Leave values under keys matching this regex in plaintext.
    #[arg(long, group = "rule")]
    pub unencrypted_regex: Option<String>,
    /// Encrypt only values under keys ending with this suffix.
    #[arg(long, group = "rule")]
    pub encrypted_suffix: Option<String>,
    /// Leave values under keys ending with this suffix in plaintext.
    #[arg(long, group = "rule")]
    pub unencrypted_suffix: Option<String>,
    /// Encrypt only values under comments matching this regex.
    #[arg(long, group = "rule")]
    pub encrypted_comment_regex: Option<String>,
    /// Leave values under comments matching this regex in plaintext.
    #[arg(long, group = "rule")]
    pub unencrypted_comment_regex: Option<String>,
    /// Only encrypted values enter the MAC, so plaintext fields may be edited later.
    #[arg(long)]
    pub mac_only_encrypted: bool,
    /// Number of key groups needed to decrypt.
    #[arg(long = "shamir-secret-sharing-threshold", value_name = "N")]
    pub shamir_threshold: Option<usize>,
    /// The `.sops.yaml` to use (default: searched from the working directory upward).
    #[arg(long, env = "SOPS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `lockstep sops decrypt`
#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// Input and output.
    #[command(flatten)]
    pub io: Io,
    /// Format of the output (default: the input format).
    #[arg(long, value_enum)]
    pub output_type: Option<FormatArg>,
    /// Do not verify the MAC. For recovering data from a damaged file only.
    #[arg(long)]
    pub ignore_mac: bool,
    /// Identities.
    #[command(flatten)]
    pub ids: IdentityArgs,
}

/// `lockstep sops updatekeys`
#[derive(Args, Debug)]
pub struct UpdatekeysArgs {
    /// The SOPS file to update in place.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Format of the file (default: from the extension).
    #[arg(long, value_enum)]
    pub input_type: Option<FormatArg>,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub yes: bool,
    /// The `.sops.yaml` to use.
    #[arg(long, env = "SOPS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Identities.
    #[command(flatten)]
    pub ids: IdentityArgs,
}

/// `lockstep sops rotate`
#[derive(Args, Debug)]
pub struct RotateArgs {
    /// Input and output.
    #[command(flatten)]
    pub io: Io,
    /// Add this age recipient to the first key group (repeatable).
    #[arg(long, value_name = "RECIPIENT")]
    pub add_age: Vec<String>,
    /// Remove this age recipient from every key group (repeatable).
    #[arg(long, value_name = "RECIPIENT")]
    pub rm_age: Vec<String>,
    /// Identities.
    #[command(flatten)]
    pub ids: IdentityArgs,
}

/// Errors of the CLI, each with an exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A format-level failure (parse, decrypt, MAC, keys).
    #[error(transparent)]
    Formats(#[from] lockstep_formats::Error),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// Reaching the cluster or the agent failed, or the agent refused.
    #[error("{0}")]
    Cluster(String),
    /// A kustomize build failed or was refused, or its SOPS values do not stand as in their
    /// files.
    #[error(transparent)]
    Render(lockstep_kustomize::Error),
    /// A chart could not be rendered (Helm's message names the template and line).
    #[error(transparent)]
    Chart(lockstep_helm::Error),
    /// `diff` found objects that a sync would change (exit code 1, as `kubectl diff`).
    #[error("{0} object(s) would change")]
    Differences(usize),
}

impl CliError {
    /// The process exit code, following sops' codes where one exists.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Formats(e) | CliError::Chart(lockstep_helm::Error::Sops(e)) => formats_code(e),
            CliError::Io { .. } => 2,
            CliError::Usage(_) => 8,
            CliError::Cluster(_) | CliError::Differences(_) | CliError::Render(_) | CliError::Chart(_) => 1,
        }
    }
}

/// The exit code of a format error, following sops' codes where one exists.
fn formats_code(e: &lockstep_formats::Error) -> u8 {
    use lockstep_formats::Error as F;
    match e.root() {
        F::MacMismatch => 51,
        F::MacUndecryptable => 24,
        F::NoIdentityMatched { .. }
        | F::NoIdentities { .. }
        | F::NotForAge { .. }
        | F::NotEnoughShares { .. } => 128,
        F::AlreadyEncrypted => 203,
        F::NoRecipients => 111,
        F::Config { .. } => 5,
        F::Io { .. } => 2,
        F::ValueDecrypt { .. } | F::BadCiphertext { .. } | F::UnknownType { .. } => 25,
        _ => 1,
    }
}

pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

/// Runs a parsed command line; the binary's `main` reports the error.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sops(SopsCommand::Encrypt(a)) => encrypt(a),
        Command::Sops(SopsCommand::Decrypt(a)) => decrypt(a),
        Command::Sops(SopsCommand::Updatekeys(a)) => updatekeys(a),
        Command::Sops(SopsCommand::Rotate(a)) => rotate(a),
        Command::Seal(a) => seal::run(a),
        Command::Build(a) => build::run(a),
        Command::Install(a) => install::run(a),
        Command::Import(a) => import::run(a),
        Command::Ops(c) => ops::run(c),
        Command::Keygen(KeygenCommand::Age {
            in_cluster: true,
            secret,
            namespace,
            kubeconfig,
            ..
        }) => {
            let (text, public) = new_identity_file();
            let added = cluster::add_age_identity(&namespace, kubeconfig, &secret, &text, &public)?;
            eprintln!(
                "age identity added to Secret {namespace}/{secret} as {}; it now holds {} identities \
                 (annotation {}). Add the new recipient to .sops.yaml, then run `lockstep sops \
                 updatekeys` on the repository.",
                added.entry,
                added.recipients.len(),
                cluster::RECIPIENTS_ANNOTATION,
            );
            stdout_write(format!("{public}\n").as_bytes())
        }
        Command::Keygen(KeygenCommand::Age { output, .. }) => keygen_age(output.as_deref()),
        Command::Keygen(KeygenCommand::Sealing {
            in_cluster: true,
            bits,
            cn,
            days,
            namespace,
            kubeconfig,
            ..
        }) => {
            let (key, cert) = lockstep_formats::sealed::generate_key_pair(bits, &cn, days)?;
            let c = lockstep_formats::sealed::SealingCert::from_pem("the new certificate", cert.as_bytes())?;
            let name = cluster::store_sealing_key(&namespace, kubeconfig, &key, &cert)?;
            eprintln!(
                "Sealing key stored as Secret {namespace}/{name} ({}); old keys are kept",
                c.fingerprint()
            );
            stdout_write(cert.as_bytes())
        }
        Command::Keygen(KeygenCommand::Sealing {
            key_file,
            cert_file,
            bits,
            cn,
            days,
            ..
        }) => keygen_sealing(&key_file, &cert_file, bits, &cn, days),
    }
}

/// Runs and turns the outcome into an exit code, printing the error (which never contains a
/// secret value) on standard error.
pub fn main_with(cli: Cli) -> ExitCode {
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstep: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

// ==== commands ====

fn encrypt(a: EncryptArgs) -> Result<()> {
    let EncryptArgs {
        io,
        age,
        encrypted_regex,
        unencrypted_regex,
        encrypted_suffix,
        unencrypted_suffix,
        encrypted_comment_regex,
        unencrypted_comment_regex,
        mac_only_encrypted,
        shamir_threshold,
        config,
    } = a;
    let input = read_input(&io.file)?;
    let format = input_format(&io);
    let creation = load_config(config.as_deref())?.and_then(|c| c.rule_for(&io.file).cloned());
    let mut opts = creation
        .as_ref()
        .map(EncryptOptions::from_creation_rule)
        .unwrap_or_default();
    let age: Vec<String> = age
        .into_iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    if !age.is_empty() {
        // Key flags replace the rule's keys, as one group.
        opts.key_groups = vec![age];
        opts.shamir_threshold = None;
    }
    let flags = [
        ("encrypted_regex", encrypted_regex),
        ("unencrypted_regex", unencrypted_regex),
        ("encrypted_suffix", encrypted_suffix),
        ("unencrypted_suffix", unencrypted_suffix),
        ("encrypted_comment_regex", encrypted_comment_regex),
        ("unencrypted_comment_regex", unencrypted_comment_regex),
    ];
    if let Some((field, value)) = flags.iter().find_map(|(f, v)| v.as_deref().map(|v| (*f, v))) {
        opts.rule = Some(Rule::from_field(field, value)?);
    }
    if mac_only_encrypted {
        opts.mac_only_encrypted = true;
    }
    if shamir_threshold.is_some() {
        opts.shamir_threshold = shamir_threshold;
    }
    let out = sops::encrypt(&display(&io.file), &input, format, &opts)?;
    write_output(&io, out.as_bytes(), false)
}

fn decrypt(a: DecryptArgs) -> Result<()> {
    let ids = identities(&a.ids)?;
    let input = read_input(&a.io.file)?;
    let format = input_format(&a.io);
    let d = sops::decrypt(
        &display(&a.io.file),
        &input,
        format,
        &ids,
        DecryptOptions {
            ignore_mac: a.ignore_mac,
        },
    )?;
    if a.ignore_mac {
        eprintln!("lockstep: warning: MAC not verified (--ignore-mac); the content may have been altered");
    }
    let out = d.to_bytes(a.output_type.map(Format::from))?;
    write_output(&a.io, out.expose(), true)
}

fn updatekeys(a: UpdatekeysArgs) -> Result<()> {
    let ids = identities(&a.ids)?;
    let config = load_config(a.config.as_deref())?.ok_or_else(|| {
        CliError::Usage("no .sops.yaml found from the working directory upward (pass --config)".into())
    })?;
    let rule = config.rule_for(&a.file).ok_or_else(|| {
        CliError::Usage(format!(
            "no creation rule in {} matches {}",
            config.path.display(),
            a.file.display()
        ))
    })?;
    if rule.key_groups.is_empty() {
        return Err(CliError::Usage(format!(
            "the matching creation rule in {} has no age keys",
            config.path.display()
        )));
    }
    let input = read_input(&a.file)?;
    let format = a
        .input_type
        .map(Format::from)
        .unwrap_or_else(|| Format::from_path(&a.file));
    let name = display(&a.file);
    let Some(out) = sops::update_keys(
        &name,
        &input,
        format,
        &ids,
        &rule.key_groups,
        rule.shamir_threshold,
    )?
    else {
        eprintln!("{name}: already up to date");
        return Ok(());
    };
    eprintln!("{name}: new key groups:");
    for (i, g) in rule.key_groups.iter().enumerate() {
        eprintln!("  group {i}: {}", g.join(", "));
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "not a terminal: pass -y to confirm the key change".into(),
            ));
        }
        eprint!("Is this okay? (y/n): ");
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(|source| CliError::Io {
                path: "<stdin>".into(),
                source,
            })?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CliError::Usage("aborted; the file was not changed".into()));
        }
    }
    let io = Io {
        file: a.file.clone(),
        input_type: a.input_type,
        in_place: true,
        output: None,
    };
    write_output(&io, out.as_bytes(), false)?;
    eprintln!("{name}: updated");
    Ok(())
}

fn rotate(a: RotateArgs) -> Result<()> {
    let ids = identities(&a.ids)?;
    let input = read_input(&a.io.file)?;
    let format = input_format(&a.io);
    let opts = sops::RotateOptions {
        add_age: a.add_age,
        rm_age: a.rm_age,
    };
    let out = sops::rotate(&display(&a.io.file), &input, format, &ids, &opts)?;
    write_output(&a.io, out.as_bytes(), false)
}

/// A new age identity as age-keygen writes its file (`# created`, `# public key`, the key),
/// and its recipient.
fn new_identity_file() -> (Zeroizing<String>, String) {
    let (secret, public) = sops::keys::generate_identity();
    let text = Zeroizing::new(format!(
        "# created: {}\n# public key: {public}\n{}\n",
        sops::now_rfc3339(),
        secret.as_str()
    ));
    (text, public)
}

fn keygen_age(output: Option<&Path>) -> Result<()> {
    let (text, public) = new_identity_file();
    match output {
        Some(path) => {
            write_new_private(path, text.as_bytes())?;
            eprintln!("Public key: {public}");
        }
        None => {
            if !std::io::stdout().is_terminal() {
                eprintln!("Public key: {public}");
            }
            stdout_write(text.as_bytes())?;
        }
    }
    Ok(())
}

fn keygen_sealing(key_file: &Path, cert_file: &Path, bits: usize, cn: &str, days: i64) -> Result<()> {
    for p in [key_file, cert_file] {
        if p.exists() {
            return Err(CliError::Usage(format!(
                "{}: already exists; refusing to overwrite a key file",
                p.display()
            )));
        }
    }
    let (key, cert) = lockstep_formats::sealed::generate_key_pair(bits, cn, days)?;
    write_new_private(key_file, key.as_bytes())?;
    write_new_private(cert_file, cert.as_bytes())?;
    let fp =
        lockstep_formats::sealed::SealingCert::from_pem(&cert_file.display().to_string(), cert.as_bytes())?;
    eprintln!(
        "Sealing key {} ({}), certificate {}",
        key_file.display(),
        fp.fingerprint(),
        cert_file.display()
    );
    Ok(())
}

// ==== helpers ====

fn display(p: &Path) -> String {
    if p == Path::new("-") {
        "<stdin>".into()
    } else {
        p.display().to_string()
    }
}

fn input_format(io: &Io) -> Format {
    match io.input_type {
        Some(f) => f.into(),
        None if io.file == Path::new("-") => Format::Yaml,
        None => Format::from_path(&io.file),
    }
}

fn load_config(explicit: Option<&Path>) -> Result<Option<Config>> {
    match explicit {
        Some(p) => Ok(Some(Config::load(p)?)),
        None => {
            let cwd = std::env::current_dir().map_err(|source| CliError::Io {
                path: ".".into(),
                source,
            })?;
            Ok(Config::find(&cwd)?)
        }
    }
}

pub(crate) fn identities(a: &IdentityArgs) -> Result<Identities> {
    let mut ids = Identities::from_sops_env()?;
    for p in &a.identities {
        ids.add_file(p)?;
    }
    Ok(ids)
}

fn read_input(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|source| CliError::Io {
                path: "<stdin>".into(),
                source,
            })?;
    } else {
        let mut f = std::fs::File::open(path).map_err(|source| CliError::Io {
            path: path.into(),
            source,
        })?;
        f.read_to_end(&mut buf).map_err(|source| CliError::Io {
            path: path.into(),
            source,
        })?;
    }
    Ok(buf)
}

pub(crate) fn stdout_write(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Io {
            path: "<stdout>".into(),
            source,
        })
}

/// Writes the result: standard output, `-o FILE`, or back over the input with `-i`. Files are
/// replaced atomically; plaintext files are created with mode 0600.
fn write_output(io: &Io, bytes: &[u8], plaintext: bool) -> Result<()> {
    let target = if io.in_place {
        if io.file == Path::new("-") {
            return Err(CliError::Usage(
                "--in-place needs a file, not standard input".into(),
            ));
        }
        Some(io.file.as_path())
    } else {
        io.output.as_deref()
    };
    match target {
        None => stdout_write(bytes),
        Some(path) => replace_file(path, bytes, plaintext),
    }
}

pub(crate) fn replace_file(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let io_err = |source| CliError::Io {
        path: path.into(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The temporary file is created 0600 and only renamed into place once fully written.
    let mut tmp = tempfile::Builder::new()
        .prefix(".lockstep-")
        .tempfile_in(&dir)
        .map_err(io_err)?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err)?;
    #[cfg(unix)]
    if !private {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o644);
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
    }
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// Creates a new private file; an existing file is never overwritten.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |source| CliError::Io {
        path: path.into(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::Usage(format!(
                "{}: already exists; refusing to overwrite a key file",
                path.display()
            ))
        } else {
            io_err(e)
        }
    })?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_err)
}
