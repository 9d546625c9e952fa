//! Project automation: `cargo xtask <command>`.
//!
//! * `setup`: installs the real peers the tests run against into a cache outside the
//!   repository (`~/.cache/lockstep-testbin`, or `$LOCKSTEP_CACHE`), keyed by version, so a warm
//!   run does nothing: sops, age, OpenBao, moto, kubectl, and a Kubernetes control plane
//!   (kube-apiserver, etcd, kube-controller-manager) plus kubeseal and the sealed-secrets
//!   controller built from the Go module proxy.
//! * `test`: `setup`, then the whole test suite, then a short fuzz smoke run when a nightly
//!   toolchain is present. This is what `.ci/run` runs.
//! * `bench`: `setup`, then the side-by-side benchmarks.
//! * `fuzz`: runs every cargo-fuzz target for a while.
//! * `demo`: the README's first command: a local control plane, the bundled example repository
//!   made a Git repository, local moto and OpenBao, and the agent syncing it as it would run
//!   in a cluster (the install's RBAC, the throwaway keys of `keys-example/`).
//! * `manifests`: writes `deploy/install.yaml` from the kustomize base in `deploy/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod gobuild;
mod peers;

/// Tests run at once within a test binary by `cargo xtask test`.
const E2E_THREADS: &str = "4";

/// cargo-fuzz, for the fuzz targets.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(Parser)]
#[command(about = "Lockstep project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the peers the tests need into the cache: sops, age, bao, moto_server, kubectl,
    /// kube-apiserver, etcd, kube-controller-manager, kubeseal and the sealed-secrets controller,
    /// the helpers, helm, kustomize, the registry, and (`test` and `bench` add) Flux.
    Setup,
    /// Set up, then run every test (the CI entry point).
    Test {
        /// Seconds each fuzz target runs in the smoke run (0 skips it).
        #[arg(long, default_value_t = 15)]
        fuzz_seconds: u64,
    },
    /// Set up, then run the benchmarks and print their tables.
    Bench,
    /// Run every fuzz target.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Start a local control plane and run the agent on the bundled example repository.
    Demo {
        /// Leave the control plane, the backends and the agent running until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// Write deploy/install.yaml from deploy/ (`kubectl kustomize`).
    Manifests,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Cmd::Setup => {
            setup()?;
            peers::flux(&cache_dir())
        }
        Cmd::Test { fuzz_seconds } => {
            setup()?;
            peers::flux(&cache_dir())?;
            step("cargo test --workspace", || {
                let mut test = Command::new(cargo());
                test.current_dir(&root)
                    .args(["test", "--workspace", "--all-targets"]);
                // The end-to-end tests mostly wait on the control plane and the peers: four at a
                // time keep two cores busy (RUST_TEST_THREADS set by the caller wins).
                if std::env::var_os("RUST_TEST_THREADS").is_none() {
                    test.env("RUST_TEST_THREADS", E2E_THREADS);
                }
                // Incremental state doubles the build's disk use (CI's disk once filled up): off
                // here unless the caller sets it.
                if std::env::var_os("CARGO_INCREMENTAL").is_none() {
                    test.env("CARGO_INCREMENTAL", "0");
                }
                run(&mut test)
            })?;
            if fuzz_seconds > 0 {
                fuzz(&root, fuzz_seconds, true)?;
            }
            Ok(())
        }
        Cmd::Bench => {
            setup()?;
            peers::bench_setup(&cache_dir())?;
            step("cargo bench", || {
                run(Command::new(cargo())
                    .current_dir(&root)
                    .args(["bench", "--workspace"]))
            })
        }
        Cmd::Fuzz { seconds } => fuzz(&root, seconds, false),
        Cmd::Manifests => step("deploy/install.yaml", || manifests(&root)),
        Cmd::Demo { keep } => step("demo", || {
            setup()?;
            run(Command::new(cargo()).current_dir(&root).args([
                "build",
                "--quiet",
                "--package",
                "lockstep-agent",
                "--bin",
                "lockstep-agent",
            ]))?;
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            let mut demo = Command::new(cargo());
            demo.current_dir(&root)
                .args([
                    "run",
                    "--quiet",
                    "--package",
                    "lockstep-tests",
                    "--example",
                    "demo",
                    "--",
                ])
                .arg("--agent")
                .arg(target.join("debug/lockstep-agent"));
            if keep {
                demo.arg("--keep");
            }
            run(&mut demo)
        }),
    }
}

/// The header of `deploy/install.yaml`.
const INSTALL_HEADER: &str = "\
# Lockstep's in-cluster install as one file: what `kubectl apply -k deploy/` applies and
# `lockstep install --export` prints. Generated from deploy/ by `cargo xtask manifests`: edit
# deploy/base/ instead. The image `lockstep:0.1.0` is built from deploy/Dockerfile.
";

/// Writes `deploy/install.yaml`: the kustomize build of `deploy/` under [`INSTALL_HEADER`].
fn manifests(root: &Path) -> Result<()> {
    let kubectl = which("kubectl").unwrap_or_else(|| cache_dir().join("bin/kubectl"));
    let out = Command::new(&kubectl)
        .current_dir(root)
        .args(["kustomize", "deploy"])
        .output()
        .with_context(|| format!("could not start {}", kubectl.display()))?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize deploy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut text = INSTALL_HEADER.to_owned();
    text.push_str(&String::from_utf8(out.stdout).context("kubectl kustomize printed non-UTF-8")?);
    std::fs::write(root.join("deploy/install.yaml"), text).context("writing deploy/install.yaml")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn workspace_root() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// `$LOCKSTEP_CACHE`, else `$XDG_CACHE_HOME/lockstep-testbin`, else `~/.cache/lockstep-testbin`.
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LOCKSTEP_CACHE") {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("lockstep-testbin")
}

pub(crate) fn step(what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("==> {what}");
    let t = Instant::now();
    let r = f();
    match &r {
        Ok(()) => eprintln!("==> {what}: done in {:.1} s", t.elapsed().as_secs_f64()),
        Err(e) => eprintln!(
            "==> {what}: FAILED after {:.1} s: {e:#}",
            t.elapsed().as_secs_f64()
        ),
    }
    r
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} exited with {status}", cmd.get_program());
    }
    Ok(())
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn setup() -> Result<()> {
    let t = Instant::now();
    let r = workspace_root().and_then(|root| peers::setup(&cache_dir(), &root));
    eprintln!(
        "==> set-up {} in {:.1} s",
        if r.is_ok() { "complete" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    r
}

/// Runs each fuzz target for `seconds`. With `optional`, a missing nightly toolchain skips.
fn fuzz(root: &Path, seconds: u64, optional: bool) -> Result<()> {
    let has_nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_nightly {
        if optional {
            eprintln!("==> fuzz smoke run skipped: no nightly toolchain (cargo-fuzz needs one)");
            return Ok(());
        }
        bail!("cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly");
    }
    let tools = cache_dir().join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"));
    let cargo_fuzz = tools.join("bin/cargo-fuzz");
    if !cargo_fuzz.is_file() {
        step(&format!("install cargo-fuzz {CARGO_FUZZ_VERSION}"), || {
            run(Command::new(cargo())
                .args([
                    "install",
                    "--locked",
                    "--quiet",
                    "cargo-fuzz",
                    "--version",
                    CARGO_FUZZ_VERSION,
                    "--root",
                ])
                .arg(&tools))
        })?;
    }
    let dir = root.join("tests/fuzz");
    for target in ["sops_parse", "yaml_load", "sealed_parse"] {
        step(&format!("fuzz {target} for {seconds} s"), || {
            run(Command::new(&cargo_fuzz)
                .current_dir(&dir)
                .env("RUSTUP_TOOLCHAIN", "nightly")
                // Build outside the clone, so a fresh checkout reuses the instrumented build.
                .args(["fuzz", "run", target, "--target-dir"])
                .arg(cache_dir().join("fuzz-target"))
                .args(["--", &format!("-max_total_time={seconds}")]))
        })?;
    }
    Ok(())
}
