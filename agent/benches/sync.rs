//! A cold sync of 1,000 objects (800 ConfigMaps, 100 SOPS Secrets made by real sops, 100
//! SealedSecrets made by real kubeseal) to the real apiserver, beside `kubectl apply
//! --server-side` of the same objects already decrypted; then a no-op resync (agent CPU, writes)
//! and the agent's peak RSS.
//!
//! `cargo bench -p lockstep-agent --bench sync`

// Benchmark code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_agent::plan::Inventory;
use lockstep_agent::secrets::DecryptionKeys as Keys;
use lockstep_agent::source::GitCache;
use lockstep_agent::sync::{Config, sync_once};
use lockstep_formats::sealed::{self, KeyRing, UnsealingKey};
use lockstep_formats::sops::Identities;
use lockstep_tests::controlplane::{ControlPlane, Options};
use lockstep_tests::{AgeKey, peer};

const SEALED_CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: sealedsecrets.bitnami.com\nspec:\n  group: bitnami.com\n  scope: Namespaced\n  names: {kind: SealedSecret, plural: sealedsecrets, singular: sealedsecret, listKind: SealedSecretList}\n  versions:\n    - name: v1alpha1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n";

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

/// CPU time of this process (user + system), from /proc.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("sync: skipped (a benchmark; run `cargo bench -p lockstep-agent --bench sync`)");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    eprintln!("starting the control plane ...");
    let cp = ControlPlane::start(&Options::default()).unwrap();
    let kubectl = |args: &[&str]| {
        cp.kubectl(args);
    };
    std::fs::write(w.join("crd.yaml"), SEALED_CRD).unwrap();
    kubectl(&[
        "apply",
        "--server-side",
        "-f",
        w.join("crd.yaml").to_str().unwrap(),
    ]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/sealedsecrets.bitnami.com",
        "--timeout=60s",
    ]);
    for ns in ["bench-ls", "bench-kc"] {
        kubectl(&["create", "namespace", ns]);
    }

    eprintln!(
        "making the repository: 800 ConfigMaps, 100 SOPS Secrets (sops), 100 SealedSecrets (kubeseal) ..."
    );
    let repo = w.join("repo");
    let plain = w.join("decrypted"); // what kubectl gets: the same objects, already decrypted
    std::fs::create_dir_all(repo.join("cm")).unwrap();
    std::fs::create_dir_all(repo.join("secrets")).unwrap();
    std::fs::create_dir_all(&plain).unwrap();
    for i in 0..800 {
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  key: value-{i}\n  other: \"{i}\"\n"
        );
        std::fs::write(repo.join(format!("cm/cm-{i}.yaml")), &cm).unwrap();
        std::fs::write(plain.join(format!("cm-{i}.yaml")), &cm).unwrap();
    }
    let age = AgeKey::generate(w, "age.txt");
    let mut encrypt = Vec::new();
    for i in 0..100 {
        let s = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sops-{i}\nstringData:\n  password: pw-{i}\n  user: u-{i}\n"
        );
        std::fs::write(plain.join(format!("sops-{i}.yaml")), &s).unwrap();
        let p = repo.join(format!("secrets/sops-{i}.yaml"));
        std::fs::write(&p, &s).unwrap();
        encrypt.push(p);
    }
    lockstep_tests::sops_encrypt(
        &encrypt.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &age.recipient,
        w,
    );
    let (skey, scert) = sealed::generate_key_pair(4096, "bench", 30).unwrap();
    std::fs::write(w.join("tls.crt"), &scert).unwrap();
    let mut input = String::new();
    for i in 0..100 {
        input.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: sealed-{i}\n  namespace: bench-ls\nstringData:\n  token: t-{i}\n"
        ));
        // kubectl gets the SealedSecret's Secret already unsealed.
        std::fs::write(
            plain.join(format!("sealed-{i}-secret.yaml")),
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sealed-{i}\nstringData:\n  token: t-{i}\n"
            ),
        )
        .unwrap();
    }
    let mut k = Command::new(peer("kubeseal"))
        .args(["--cert", "tls.crt", "-o", "yaml"])
        .current_dir(w)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    k.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let sealed_yaml = String::from_utf8(k.wait_with_output().unwrap().stdout).unwrap();
    std::fs::write(repo.join("secrets/sealed.yaml"), &sealed_yaml).unwrap();
    std::fs::write(
        plain.join("sealed.yaml"),
        sealed_yaml.replace("namespace: bench-ls", "namespace: bench-kc"),
    )
    .unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "bench"]);

    let mut ids = Identities::new();
    ids.add_file(&age.path).unwrap();
    let mut ring = KeyRing::new();
    ring.push(UnsealingKey::from_pem("bench", &skey).unwrap());
    let keys = Keys {
        sops: Some(ids),
        sealed: Some(ring.into()),
    };
    let cfg = Config {
        target_namespace: Some("bench-ls".into()),
        ..Config::new(format!("file://{}", repo.display()), "bench.sync")
    };
    let cache = GitCache::new(w.join("git-cache"));
    let client = rt.block_on(cp.client()).unwrap();

    eprintln!("lockstep: cold sync ...");
    let t = Instant::now();
    let out = rt
        .block_on(sync_once(
            client.clone(),
            &cache,
            &cfg,
            &keys,
            &Inventory::default(),
        ))
        .unwrap();
    let cold = t.elapsed();
    let objects = out.report.applied.len();

    eprintln!("lockstep: no-op resync ...");
    let (c0, t) = (cpu(), Instant::now());
    let again = rt
        .block_on(sync_once(client, &cache, &cfg, &keys, &out.inventory))
        .unwrap();
    let (noop_wall, noop_cpu) = (t.elapsed(), cpu() - c0);
    let writes = again.report.applied.len() + again.pruned.len();

    eprintln!("kubectl apply --server-side of the decrypted files ...");
    let t = Instant::now();
    kubectl(&[
        "apply",
        "--server-side",
        "-n",
        "bench-kc",
        "-f",
        plain.to_str().unwrap(),
    ]);
    let kubectl_cold = t.elapsed();
    let t = Instant::now();
    kubectl(&[
        "apply",
        "--server-side",
        "-n",
        "bench-kc",
        "-f",
        plain.to_str().unwrap(),
    ]);
    let kubectl_again = t.elapsed();
    let rss = peak_rss_kib();

    println!();
    println!(
        "Syncing 1,000 objects from Git (800 ConfigMaps, 100 SOPS Secrets, 100 SealedSecrets) to a real apiserver"
    );
    println!("| {:<58} | {:>9} | {:>8} |", "what", "seconds", "objects");
    println!("|{:-<60}|{:->11}|{:->10}|", "", "", "");
    println!(
        "| {:<58} | {:>9.2} | {:>8} |",
        "lockstep cold sync (fetch, decrypt, unseal, staged SSA)",
        cold.as_secs_f64(),
        objects
    );
    println!(
        "| {:<58} | {:>9.2} | {:>8} |",
        "kubectl apply --server-side, already-decrypted files",
        kubectl_cold.as_secs_f64(),
        objects
    );
    println!(
        "| {:<58} | {:>9.2} | {:>8} |",
        "lockstep no-op resync (wall)",
        noop_wall.as_secs_f64(),
        again.report.unchanged
    );
    println!(
        "| {:<58} | {:>9.2} | {:>8} |",
        "kubectl apply --server-side again (wall)",
        kubectl_again.as_secs_f64(),
        objects
    );
    println!();
    println!(
        "no-op resync: {:.2} s of agent CPU, {writes} writes; agent peak RSS {:.1} MiB",
        noop_cpu.as_secs_f64(),
        rss as f64 / 1024.0
    );
    println!(
        "targets: cold sync faster than kubectl: {}; no-op resync < 1 s CPU with zero writes: {}; RSS < 64 MiB: {}",
        if cold < kubectl_cold { "met" } else { "NOT met" },
        if noop_cpu < Duration::from_secs(1) && writes == 0 {
            "met"
        } else {
            "NOT met"
        },
        if rss < 64 * 1024 { "met" } else { "NOT met" }
    );
}
