//! Interop with the real Bitnami sealed-secrets, both ways: `kubeseal` (built from the Go module)
//! seals and Lockstep unseals; Lockstep seals and `kubeseal --recovery-unseal` unseals; with our
//! keys and with keys the real controller generated in a real cluster (the migration path).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{Env, ok, peer, run};

const CANARY: &str = "CANARY-5eal-never-print";

fn secret(ns: &str, name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: web\n{annotations}type: Opaque\nstringData:\n  password: {CANARY}\n  empty: \"\"\ndata:\n  binary: AAEC/w==\n"
    )
}

fn kubeseal(env: &Env, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut c = Command::new(peer("kubeseal"));
    c.current_dir(env.dir.path()).args(args);
    run(&mut c, env.dir.path(), Some(stdin))
}

const SCOPES: [(&str, &str); 3] = [
    ("strict", ""),
    (
        "namespace-wide",
        "  annotations:\n    sealedsecrets.bitnami.com/namespace-wide: \"true\"\n",
    ),
    (
        "cluster-wide",
        "  annotations:\n    sealedsecrets.bitnami.com/cluster-wide: \"true\"\n",
    ),
];

/// Moves a SealedSecret (JSON) to another name and/or namespace.
fn moved(ss: &[u8], ns: &str, name: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(ss).unwrap();
    v["metadata"]["namespace"] = ns.into();
    v["metadata"]["name"] = name.into();
    serde_json::to_vec(&v).unwrap()
}

/// Both tools must agree on which moves keep a SealedSecret openable.
fn check_moves(env: &Env, ss: &[u8], scope: &str, unseal: impl Fn(&[u8]) -> std::process::Output) {
    let out = unseal(ss);
    let text = String::from_utf8_lossy(&ok(out, &format!("unseal {scope}"))).into_owned();
    assert!(
        text.contains(&common_b64(CANARY)),
        "{scope}: the value must come back"
    );
    let _ = env;
    for (ns, name, strict_ok, ns_ok) in [("prod", "other", false, true), ("staging", "db", false, false)] {
        let out = unseal(&moved(ss, ns, name));
        let expect = match scope {
            "strict" => strict_ok,
            "namespace-wide" => ns_ok,
            _ => true,
        };
        assert_eq!(
            out.status.success(),
            expect,
            "{scope} moved to {ns}/{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains(CANARY));
    }
}

fn common_b64(s: &str) -> String {
    lockstep_formats::sealed::encode_base64(s.as_bytes())
}

#[test]
fn kubeseal_sealed_values_unseal_with_lockstep_in_every_scope() {
    let env = Env::new();
    ok(
        env.lockstep(None, &["keygen", "sealing", "--bits", "2048"]),
        "keygen sealing",
    );
    for (scope, ann) in SCOPES {
        let ss = ok(
            kubeseal(
                &env,
                &["--cert", "tls.crt", "-o", "json"],
                secret("prod", "db", ann).as_bytes(),
            ),
            "kubeseal",
        );
        check_moves(&env, &ss, scope, |input| {
            env.lockstep_with(
                None,
                &[
                    "seal",
                    "--recovery-unseal",
                    "--recovery-private-key",
                    "tls.key",
                    "-o",
                    "yaml",
                ],
                Some(input),
            )
        });
        // The scope flag, not only the annotation.
        let ss = ok(
            kubeseal(
                &env,
                &["--cert", "tls.crt", "--scope", scope],
                secret("prod", "db", "").as_bytes(),
            ),
            "kubeseal --scope",
        );
        check_moves(&env, &ss, scope, |input| {
            env.lockstep_with(
                None,
                &["seal", "--recovery-unseal", "--recovery-private-key", "tls.key"],
                Some(input),
            )
        });
    }
    // --raw values, and a binary value that is not UTF-8.
    let raw = ok(
        kubeseal(
            &env,
            &[
                "--cert",
                "tls.crt",
                "--raw",
                "--namespace",
                "prod",
                "--name",
                "db",
            ],
            b"\x00\xffraw",
        ),
        "kubeseal --raw",
    );
    let ss = format!(
        "{{\"apiVersion\":\"bitnami.com/v1alpha1\",\"kind\":\"SealedSecret\",\"metadata\":{{\"name\":\"db\",\"namespace\":\"prod\"}},\"spec\":{{\"encryptedData\":{{\"k\":\"{}\"}}}}}}",
        String::from_utf8(raw).unwrap()
    );
    let out = ok(
        env.lockstep_with(
            None,
            &["seal", "--recovery-unseal", "--recovery-private-key", "tls.key"],
            Some(ss.as_bytes()),
        ),
        "unseal raw",
    );
    assert!(String::from_utf8_lossy(&out).contains(&lockstep_formats::sealed::encode_base64(b"\x00\xffraw")));
}

#[test]
fn lockstep_sealed_values_unseal_with_kubeseal_in_every_scope() {
    let env = Env::new();
    ok(
        env.lockstep(None, &["keygen", "sealing", "--bits", "2048"]),
        "keygen sealing",
    );
    for (scope, ann) in SCOPES {
        env.write("in.yaml", secret("prod", "db", ann).as_bytes());
        let ss = ok(
            env.lockstep(None, &["seal", "--cert", "tls.crt", "-f", "in.yaml"]),
            "lockstep seal",
        );
        check_moves(&env, &ss, scope, |input| {
            kubeseal(
                &env,
                &[
                    "--recovery-unseal",
                    "--recovery-private-key",
                    "tls.key",
                    "-o",
                    "yaml",
                ],
                input,
            )
        });
        env.write("plain.yaml", secret("prod", "db", "").as_bytes());
        let ss = ok(
            env.lockstep(
                None,
                &["seal", "--cert", "tls.crt", "--scope", scope, "-f", "plain.yaml"],
            ),
            "lockstep seal --scope",
        );
        check_moves(&env, &ss, scope, |input| {
            kubeseal(
                &env,
                &["--recovery-unseal", "--recovery-private-key", "tls.key"],
                input,
            )
        });
    }
    // --raw from lockstep, placed into a SealedSecret by hand, opens with kubeseal.
    env.write("value.bin", b"raw-value");
    let raw = ok(
        env.lockstep(
            None,
            &[
                "seal",
                "--cert",
                "tls.crt",
                "--raw",
                "-n",
                "prod",
                "--name",
                "db",
                "--from-file",
                "k=value.bin",
            ],
        ),
        "lockstep --raw",
    );
    let ss = format!(
        "{{\"apiVersion\":\"bitnami.com/v1alpha1\",\"kind\":\"SealedSecret\",\"metadata\":{{\"name\":\"db\",\"namespace\":\"prod\"}},\"spec\":{{\"encryptedData\":{{\"k\":\"{}\"}}}}}}",
        String::from_utf8(raw).unwrap()
    );
    let out = ok(
        kubeseal(
            &env,
            &["--recovery-unseal", "--recovery-private-key", "tls.key"],
            ss.as_bytes(),
        ),
        "kubeseal unseal raw",
    );
    assert!(String::from_utf8_lossy(&out).contains(&common_b64("raw-value")));
}

#[test]
fn several_certificates_seal_for_several_clusters_and_which_key_tells_them_apart() {
    let env = Env::new();
    for c in ["a", "b"] {
        ok(
            env.lockstep(
                None,
                &[
                    "keygen",
                    "sealing",
                    "--bits",
                    "2048",
                    "--key-file",
                    &format!("{c}.key"),
                    "--cert-file",
                    &format!("{c}.crt"),
                ],
            ),
            "keygen",
        );
    }
    env.write("in.yaml", secret("prod", "db", "").as_bytes());
    ok(
        env.lockstep(
            None,
            &[
                "seal",
                "--cert",
                "a.crt",
                "--cert",
                "b.crt",
                "-f",
                "in.yaml",
                "-w",
                "both.yaml",
            ],
        ),
        "seal twice",
    );
    let text = std::fs::read_to_string(env.path("both.yaml")).unwrap();
    assert_eq!(text.matches("kind: SealedSecret").count(), 2, "{text}");
    assert!(!text.contains(CANARY));
    // Each document opens with its own cluster's key in real kubeseal, and only with it.
    let docs: Vec<&str> = text.split("---\n").filter(|d| !d.trim().is_empty()).collect();
    for (doc, (own, other)) in docs.iter().zip([("a.key", "b.key"), ("b.key", "a.key")]) {
        ok(
            kubeseal(
                &env,
                &["--recovery-unseal", "--recovery-private-key", own],
                doc.as_bytes(),
            ),
            "own key",
        );
        assert!(
            !kubeseal(
                &env,
                &["--recovery-unseal", "--recovery-private-key", other],
                doc.as_bytes()
            )
            .status
            .success()
        );
    }
    let out = String::from_utf8(ok(
        env.lockstep(
            None,
            &[
                "seal",
                "--which-key",
                "both.yaml",
                "--cert",
                "a.crt",
                "--cert",
                "b.crt",
            ],
        ),
        "which-key",
    ))
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("prod/db: a.crt (SHA256:") && lines[1].starts_with("prod/db: b.crt (SHA256:"),
        "{out}"
    );
    // kubeseal output records no key: private keys tell.
    let k = ok(
        kubeseal(
            &env,
            &["--cert", "b.crt", "-o", "yaml"],
            secret("prod", "db", "").as_bytes(),
        ),
        "kubeseal",
    );
    env.write("k.yaml", &k);
    let out = String::from_utf8(ok(
        env.lockstep(
            None,
            &[
                "seal",
                "--which-key",
                "k.yaml",
                "--recovery-private-key",
                "a.key,b.key",
            ],
        ),
        "which-key keys",
    ))
    .unwrap();
    assert!(out.starts_with("prod/db: b.key (SHA256:"), "{out}");
    let out = String::from_utf8(ok(
        env.lockstep(None, &["seal", "--which-key", "k.yaml"]),
        "which-key unknown",
    ))
    .unwrap();
    assert!(out.contains("unknown"), "{out}");
}

#[test]
fn merge_into_updates_one_key_in_place_and_output_is_deterministic() {
    let env = Env::new();
    ok(
        env.lockstep(None, &["keygen", "sealing", "--bits", "2048"]),
        "keygen",
    );
    env.write("in.yaml", secret("prod", "db", "").as_bytes());
    ok(
        env.lockstep(
            None,
            &[
                "seal",
                "--cert",
                "tls.crt",
                "-f",
                "in.yaml",
                "-o",
                "yaml",
                "-w",
                "sealed.yaml",
            ],
        ),
        "seal",
    );
    let before = std::fs::read_to_string(env.path("sealed.yaml")).unwrap();
    env.write(
        "update.yaml",
        b"apiVersion: v1\nkind: Secret\nmetadata:\n  name: ignored\nstringData:\n  token: new-token\n",
    );
    ok(
        env.lockstep(
            None,
            &[
                "seal",
                "--cert",
                "tls.crt",
                "-f",
                "update.yaml",
                "--merge-into",
                "sealed.yaml",
            ],
        ),
        "merge-into",
    );
    let after = std::fs::read_to_string(env.path("sealed.yaml")).unwrap();
    // The untouched values keep their ciphertext; a new key appears; keys stay sorted.
    let line = |t: &str, k: &str| {
        t.lines()
            .find(|l| l.trim_start().starts_with(k))
            .map(str::to_owned)
    };
    assert_eq!(line(&before, "password:"), line(&after, "password:"));
    let keys: Vec<String> = after
        .lines()
        .skip_while(|l| !l.contains("encryptedData:"))
        .skip(1)
        .take_while(|l| l.starts_with("        "))
        .map(|l| l.trim().split(':').next().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["binary", "empty", "password", "token"], "{after}");
    let out = ok(
        kubeseal(
            &env,
            &[
                "--recovery-unseal",
                "--recovery-private-key",
                "tls.key",
                "-o",
                "yaml",
            ],
            after.as_bytes(),
        ),
        "kubeseal reads the merged file",
    );
    assert!(String::from_utf8_lossy(&out).contains(&common_b64("new-token")));
}

#[test]
fn bad_input_names_the_object_and_leaks_nothing() {
    let env = Env::new();
    ok(
        env.lockstep(None, &["keygen", "sealing", "--bits", "2048"]),
        "keygen",
    );
    ok(
        env.lockstep(
            None,
            &[
                "keygen",
                "sealing",
                "--bits",
                "2048",
                "--key-file",
                "other.key",
                "--cert-file",
                "other.crt",
            ],
        ),
        "keygen 2",
    );
    env.write("in.yaml", secret("prod", "db", "").as_bytes());
    let ss = ok(
        env.lockstep(None, &["seal", "--cert", "tls.crt", "-f", "in.yaml"]),
        "seal",
    );
    env.write("ss.json", &ss);
    let out = env.lockstep(
        None,
        &[
            "seal",
            "--recovery-unseal",
            "--recovery-private-key",
            "other.key",
            "-f",
            "ss.json",
            "-w",
            "out.yaml",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no key could decrypt SealedSecret prod/db (scope strict; 1 key tried)"),
        "{err}"
    );
    assert!(err.contains("binary, empty, password"), "{err}");
    assert!(!err.contains(CANARY) && !env.path("out.yaml").exists());
    // Overwriting keys is refused.
    let out = env.lockstep(None, &["keygen", "sealing"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    // A Secret without a name, and garbage certificates, are named.
    let out = env.lockstep_with(
        None,
        &["seal", "--cert", "tls.crt"],
        Some(b"kind: Secret\nstringData: {a: b}\n"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no metadata.name"));
    env.write("bad.crt", b"not a cert");
    let out = env.lockstep(None, &["seal", "--cert", "bad.crt", "-f", "in.yaml"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.crt: not a PEM certificate"));
    // An expired certificate seals with a warning (its private key still opens what it
    // seals); a certificate without an RSA key is refused, named.
    ok(
        env.lockstep(
            None,
            &[
                "keygen",
                "sealing",
                "--bits",
                "2048",
                "--days=-1",
                "--key-file",
                "old.key",
                "--cert-file",
                "old.crt",
            ],
        ),
        "keygen expired",
    );
    let out = env.lockstep(None, &["seal", "--cert", "old.crt", "-f", "in.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: old.crt: the certificate has expired"),
        "{err}"
    );
    let mut c = Command::new("openssl");
    c.current_dir(env.dir.path()).args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=ec",
        "-days",
        "1",
        "-keyout",
        "ec.key",
        "-out",
        "ec.crt",
    ]);
    ok(run(&mut c, env.dir.path(), None), "openssl req");
    let out = env.lockstep(None, &["seal", "--cert", "ec.crt", "-f", "in.yaml"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("ec.crt: the certificate does not hold an RSA public key")
    );
}
