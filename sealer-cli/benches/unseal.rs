//! Unsealing 1,000 SealedSecrets of 3 values each (RSA-4096): Lockstep's library in-process
//! beside `kubeseal --recovery-unseal` (one process per object, as it takes one object) on the
//! same objects, and the floor: the RSA-4096 private operation and AES-GCM alone.
//!
//! `cargo bench -p lockstep-cli --bench unseal` (LOCKSTEP_BENCH_OBJECTS=N to change 1,000).

// Benchmark code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_formats::sealed::{self, KeyRing, Scope, UnsealingKey};
use lockstep_tests::peer;

fn best_of(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("unseal: skipped (a benchmark; run `cargo bench -p lockstep-cli --bench unseal`)");
        return;
    }
    let n: usize = std::env::var("LOCKSTEP_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    eprintln!("generating an RSA-4096 sealing key ...");
    let (key_pem, cert_pem) = sealed::generate_key_pair(4096, "bench", 30).unwrap();
    std::fs::write(dir.path().join("tls.key"), key_pem.as_bytes()).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &cert_pem).unwrap();

    // The objects are sealed by real kubeseal, all in one process (it takes many documents).
    eprintln!("sealing {n} Secrets of 3 values with kubeseal ...");
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: app-{i}\n  namespace: team-{}\nstringData:\n  username: user-{i}\n  password: pw-{i:08}-xxxxxxxxxxxxxxxx\n  url: postgres://db-{i}.internal:5432/app\n",
            i % 7
        ));
    }
    let mut child = Command::new(peer("kubeseal"))
        .args(["--cert", "tls.crt", "-o", "json"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let objects: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(objects.len(), n);
    let files: Vec<std::path::PathBuf> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let p = dir.path().join(format!("ss-{i:04}.json"));
            std::fs::write(&p, serde_json::to_vec(o).unwrap()).unwrap();
            p
        })
        .collect();

    let mut ring = KeyRing::new();
    ring.push(UnsealingKey::from_pem("bench", &key_pem).unwrap());
    let values = n * 3;

    eprintln!("library ...");
    let lib = best_of(3, || {
        for o in &objects {
            std::hint::black_box(sealed::unseal(o, &ring).unwrap());
        }
    });

    eprintln!("floor ...");
    let key = UnsealingKey::from_pem("bench", &key_pem).unwrap();
    let inputs: Vec<(Vec<u8>, Vec<u8>)> = objects
        .iter()
        .flat_map(|o| {
            let ns = o["metadata"]["namespace"].as_str().unwrap().to_owned();
            let name = o["metadata"]["name"].as_str().unwrap().to_owned();
            let label = Scope::Strict.label(&ns, &name);
            o["spec"]["encryptedData"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| (sealed::decode_base64(v.as_str().unwrap()).unwrap(), label.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let floor = best_of(3, || {
        for (ct, label) in &inputs {
            std::hint::black_box(sealed::hybrid_decrypt(&key, ct, label).unwrap());
        }
    });

    eprintln!("kubeseal --recovery-unseal, one process per object ...");
    let start = Instant::now();
    for f in &files {
        let o = Command::new(peer("kubeseal"))
            .args(["--recovery-unseal", "--recovery-private-key", "tls.key", "-f"])
            .arg(f)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let kubeseal = start.elapsed();

    let rate = |d: Duration| values as f64 / d.as_secs_f64();
    println!();
    println!("Unsealing {n} SealedSecrets × 3 values (RSA-4096, sealed by real kubeseal), one core");
    println!(
        "| {:<50} | {:>9} | {:>10} | {:>10} | {:>9} |",
        "method", "total s", "values/s", "× kubeseal", "× floor"
    );
    println!("|{:-<52}|{:->11}|{:->12}|{:->12}|{:->11}|", "", "", "", "", "");
    for (name, d) in [
        ("floor: RSA-4096 OAEP private op + AES-GCM only", floor),
        ("lockstep library, in-process", lib),
        ("kubeseal --recovery-unseal, one process per object", kubeseal),
    ] {
        println!(
            "| {:<50} | {:>9.3} | {:>10.0} | {:>10.1} | {:>9.2} |",
            name,
            d.as_secs_f64(),
            rate(d),
            rate(d) / rate(kubeseal),
            d.as_secs_f64() / floor.as_secs_f64()
        );
    }
    let over = lib.as_secs_f64() / floor.as_secs_f64();
    println!();
    println!(
        "target: library within 1.3× of the floor: {} ({over:.3}×)",
        if over <= 1.3 { "met" } else { "NOT met" }
    );
}
