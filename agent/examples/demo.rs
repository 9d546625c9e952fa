//! `cargo xtask demo`: the main job on the embedded default. Starts a real local control plane
//! (etcd + kube-apiserver on loopback), turns the bundled example tree into a Git repository,
//! and runs the agent's sync on it: fetch with gix, render, decrypt the SOPS Secret in memory
//! with the throwaway key in `keys-example/` (MAC verified), apply secrets before the workload
//! with server-side apply, then resync to show that nothing changed is written. Secret values
//! are never printed.

use std::path::Path;
use std::process::Command;

use lockstep_agent::plan::{Inventory, Stage};
use lockstep_agent::render::Keys;
use lockstep_agent::source::GitCache;
use lockstep_agent::sync::{Config, sync_once};
use lockstep_formats::sops::Identities;
use lockstep_tests::controlplane::{ControlPlane, Options};

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=lockstep-demo",
            "-c",
            "user.email=demo@lockstep.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    let work = tempfile::tempdir()?;
    let repo = work.path().join("example-repo");

    eprintln!("[1/4] starting a local control plane (etcd + kube-apiserver) ...");
    let cp = tokio::task::spawn_blocking(|| ControlPlane::start(&Options::default())).await??;
    eprintln!("      up in {:.1} s at {}", cp.start_seconds, cp.server());

    eprintln!("[2/4] making a Git repository of tests/example-repo ...");
    copy_dir(&root.join("tests/example-repo"), &repo)?;
    git(&repo, &["init", "-q"])?;
    git(&repo, &["add", "-A"])?;
    git(&repo, &["commit", "-qm", "example"])?;

    let mut ids = Identities::new();
    ids.add_file(&root.join("keys-example/age.agekey"))?;
    let keys = Keys {
        sops: Some(ids),
        sealed: None,
    };
    let cfg = Config::new(format!("file://{}", repo.display()), "lockstep-system.demo");
    let cache = GitCache::new(work.path().join("git-cache"));
    let client = cp.client().await?;

    eprintln!("[3/4] syncing: fetch, render, decrypt in memory, apply secrets first ...");
    let out = sync_once(client.clone(), &cache, &cfg, &keys, &Inventory::default()).await?;
    println!();
    println!(
        "Revision {}@{} applied in {} ms",
        out.reference,
        &out.commit[..12],
        out.duration.as_millis()
    );
    println!(
        "| {:<4} | {:<12} | {:<12} | {:<10} | {:<8} |",
        "step", "stage", "kind", "name", "result"
    );
    println!("|{:-<6}|{:-<14}|{:-<14}|{:-<12}|{:-<10}|", "", "", "", "", "");
    let mut step = 0;
    for (stage, _wave, ids) in &out.report.stages {
        let stage = match stage {
            Stage::Foundations => "foundations",
            Stage::Secrets => "secrets",
            Stage::Workloads => "workloads",
        };
        for id in ids {
            step += 1;
            println!(
                "| {step:<4} | {stage:<12} | {:<12} | {:<10} | {:<8} |",
                id.kind, id.name, "applied"
            );
        }
    }

    eprintln!("[4/4] resyncing the same commit ...");
    let again = sync_once(client, &cache, &cfg, &keys, &out.inventory).await?;
    println!();
    println!(
        "Resync: {} objects unchanged, {} written, {} pruned, in {} ms.",
        again.report.unchanged,
        again.report.applied.len(),
        again.pruned.len(),
        again.duration.as_millis()
    );
    Ok(())
}
