//! Decrypting sops-encrypted Kubernetes Secrets: Lockstep's library in-process, the `lockstep`
//! CLI, and the real `sops decrypt`, side by side on the same files made by real sops, beside
//! the floor (the age X25519 unwrap and the AES-GCM work alone).
//!
//! `cargo bench -p lockstep-cli --bench sops_decrypt` (LOCKSTEP_BENCH_FILES=N to change the
//! default of 1,000 files). Prints a table.

// Benchmark code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_formats::secret::DataKey;
use lockstep_formats::sops::{self, DecryptOptions, Format, Identities, cipher};
use lockstep_formats::tree::{MapItem, Value};
use lockstep_formats::yaml;
use lockstep_tests::{AgeKey, peer};

fn secret(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-{i}\n  namespace: team-{}\n  labels:\n    app.kubernetes.io/name: app-{i}\ntype: Opaque\nstringData:\n  username: user-{i}\n  password: pw-{i:08}-{}\n  url: postgres://db-{i}.internal:5432/app\ndata:\n  token: {}\n",
        i % 7,
        "x".repeat(24),
        "dG9rZW4tdmFsdWUtZm9yLXRlc3Rpbmc="
    )
}

/// Makes `n` files with real sops, two at a time (the machine has two cores).
fn make_files(dir: &Path, key: &AgeKey, n: usize) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("secret-{i:04}.yaml"))).collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("plain-{i:04}.yaml")), secret(i)).unwrap();
        let _ = f;
    }
    for chunk in (0..n).collect::<Vec<_>>().chunks(2) {
        let children: Vec<_> = chunk
            .iter()
            .map(|&i| {
                Command::new(peer("sops"))
                    .args([
                        "encrypt",
                        "--age",
                        &key.recipient,
                        "--encrypted-regex",
                        "^(data|stringData)$",
                        "--output",
                    ])
                    .arg(&files[i])
                    .arg(dir.join(format!("plain-{i:04}.yaml")))
                    .env("HOME", dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "sops encrypt: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for i in 0..n {
        std::fs::remove_file(dir.join(format!("plain-{i:04}.yaml"))).unwrap();
    }
    files
}

fn run_each(files: &[PathBuf], mut cmd: impl FnMut(&Path) -> Command) -> Duration {
    let start = Instant::now();
    for f in files {
        let out = cmd(f)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    start.elapsed()
}

/// The crypto work alone: unwrap each file's data key with age, open each `ENC[...]` value.
struct Floor {
    enc_key: String,
    values: Vec<(String, String)>,
}

fn floor_inputs(files: &[PathBuf]) -> Vec<Floor> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let doc = yaml::load_mappings(&text).unwrap().remove(0);
            let mut values = Vec::new();
            collect(&doc, &mut Vec::new(), &mut values);
            let meta = lockstep_formats::tree::get(&doc, "sops").unwrap();
            let Some(Value::Seq(age)) = meta.get("age") else {
                panic!("no age")
            };
            let enc_key = age[0].get("enc").and_then(Value::as_str).unwrap().to_owned();
            let lm = meta
                .get("lastmodified")
                .and_then(Value::as_str)
                .unwrap()
                .to_owned();
            values.retain(|(_, aad)| !aad.starts_with("sops:"));
            values.push((meta.get("mac").and_then(Value::as_str).unwrap().to_owned(), lm));
            Floor { enc_key, values }
        })
        .collect()
}

fn collect(items: &[MapItem], path: &mut Vec<String>, out: &mut Vec<(String, String)>) {
    for i in items {
        if let MapItem::Entry(k, v) = i {
            path.push(k.clone());
            match v {
                Value::Map(m) => collect(m, path, out),
                Value::Str(s) if cipher::is_encrypted(s) => {
                    out.push((s.clone(), format!("{}:", path.join(":"))))
                }
                _ => {}
            }
            path.pop();
        }
    }
}

fn floor_once(inputs: &[Floor], identity: &age::x25519::Identity) {
    use std::io::Read;
    for f in inputs {
        let reader = age::armor::ArmoredReader::new(f.enc_key.as_bytes());
        let dec = age::Decryptor::new_buffered(reader).unwrap();
        let mut r = dec
            .decrypt(std::iter::once(identity as &dyn age::Identity))
            .unwrap();
        let mut key = Vec::new();
        r.read_to_end(&mut key).unwrap();
        let key = DataKey::from_bytes(key.try_into().unwrap());
        for (v, aad) in &f.values {
            std::hint::black_box(cipher::decrypt(v, &key, aad.as_bytes()).unwrap());
        }
    }
}

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
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this unoptimised without
    // it, where the figures would mean nothing.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "sops_decrypt: skipped (a benchmark; run `cargo bench -p lockstep-cli --bench sops_decrypt`)"
        );
        return;
    }
    let n: usize = std::env::var("LOCKSTEP_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let key = AgeKey::generate(dir.path(), "key.txt");
    eprintln!("making {n} Secret files with real sops ...");
    let t = Instant::now();
    let files = make_files(dir.path(), &key, n);
    eprintln!("  done in {:.1} s", t.elapsed().as_secs_f64());

    let key_text = std::fs::read_to_string(&key.path).unwrap();
    let mut ids = Identities::new();
    ids.add_text("bench", &key_text).unwrap();
    let identity: age::x25519::Identity = key_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap()
        .parse()
        .unwrap();

    // Library, in-process: read, parse, unwrap, decrypt, verify MAC, emit plaintext YAML.
    eprintln!("library ...");
    let lib = best_of(5, || {
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            let d = sops::decrypt("bench", &bytes, Format::Yaml, &ids, DecryptOptions::default()).unwrap();
            std::hint::black_box(d.to_bytes(None).unwrap());
        }
    });
    eprintln!("floor ...");
    let inputs = floor_inputs(&files);
    let floor = best_of(5, || floor_once(&inputs, &identity));

    eprintln!("lockstep CLI ...");
    let cli = run_each(&files, |f| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lockstep"));
        c.args(["sops", "decrypt"])
            .arg(f)
            .env("SOPS_AGE_KEY_FILE", &key.path)
            .env("HOME", dir.path());
        c
    });
    eprintln!("sops ...");
    let sops_t = run_each(&files, |f| {
        let mut c = Command::new(peer("sops"));
        c.arg("decrypt")
            .arg(f)
            .env("SOPS_AGE_KEY_FILE", &key.path)
            .env("HOME", dir.path());
        c
    });

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!();
    println!(
        "Decrypting {n} sops-encrypted Kubernetes Secrets (files made by real sops {}), one core",
        sops_version()
    );
    println!(
        "| {:<44} | {:>9} | {:>10} | {:>9} | {:>9} |",
        "method", "total s", "files/s", "× sops", "× floor"
    );
    println!("|{:-<46}|{:->11}|{:->12}|{:->11}|{:->11}|", "", "", "", "", "");
    for (name, d) in [
        ("floor: age X25519 unwrap + AES-GCM only", floor),
        ("lockstep library, in-process", lib),
        ("lockstep CLI, one process per file", cli),
        ("sops decrypt, one process per file", sops_t),
    ] {
        println!(
            "| {:<44} | {:>9.3} | {:>10.0} | {:>9.1} | {:>9.2} |",
            name,
            d.as_secs_f64(),
            rate(d),
            rate(d) / rate(sops_t),
            d.as_secs_f64() / floor.as_secs_f64()
        );
    }
    println!();
    let speedup = rate(lib) / rate(sops_t);
    let over_floor = lib.as_secs_f64() / floor.as_secs_f64();
    println!(
        "targets: library ≥ 50× sops: {} ({speedup:.0}×); library within 2× of the floor: {} ({over_floor:.2}×)",
        if speedup >= 50.0 { "met" } else { "NOT met" },
        if over_floor <= 2.0 { "met" } else { "NOT met" }
    );
}

fn sops_version() -> String {
    Command::new(peer("sops"))
        .args(["--version", "--disable-version-check"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
