//! Bad input: every failure names the file and the key path, exits non-zero, writes no output
//! file, leaves an in-place target untouched, and never prints a secret value.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Env, ok};

const CANARY: &str = "CANARY-7f3a9c-do-not-print";
const FILE: &str = "secret.enc.yaml";

/// A Secret encrypted by real sops, with canary values.
fn setup() -> (Env, String) {
    let env = Env::new();
    let plain = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  user: {CANARY}-user\n  password: {CANARY}-password\n  hosts:\n    - {CANARY}-a\n    - {CANARY}-b\n"
    );
    env.write("secret.yaml", plain.as_bytes());
    ok(
        env.sops(
            None,
            &[
                "encrypt",
                "--age",
                &env.k1.recipient,
                "--encrypted-regex",
                "^(data|stringData)$",
                "--output",
                FILE,
                "secret.yaml",
            ],
        ),
        "sops encrypt",
    );
    let text = std::fs::read_to_string(env.path(FILE)).unwrap();
    (env, text)
}

/// Runs `lockstep sops decrypt -o out.yaml FILE` and checks the invariants of a failure.
fn decrypt_fails(env: &Env, key: Option<&std::path::Path>, expect: &[&str]) -> i32 {
    let out_file = env.path("out.yaml");
    let _ = std::fs::remove_file(&out_file);
    let out = env.lockstep(key, &["sops", "decrypt", "-o", "out.yaml", FILE]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(stderr.contains(FILE), "error must name the file: {stderr}");
    for e in expect {
        assert!(stderr.contains(e), "error must mention {e:?}: {stderr}");
    }
    assert!(
        !stderr.contains(CANARY) && !stdout.contains(CANARY),
        "a secret value leaked: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one clear error line: {stderr}");
    assert!(!out_file.exists(), "no partial output file may be written");
    out.status.code().unwrap()
}

fn edit(env: &Env, text: &str, f: impl FnOnce(&str) -> String) {
    std::fs::write(env.path(FILE), f(text)).unwrap();
}

/// The line of `key:` (first match).
fn line_of<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines().find(|l| l.trim_start().starts_with(key)).unwrap()
}

#[test]
fn a_plain_file_is_not_sops() {
    let (env, _) = setup();
    std::fs::copy(env.path("secret.yaml"), env.path(FILE)).unwrap();
    decrypt_fails(&env, Some(&env.k1.path), &["not a SOPS file"]);
}

#[test]
fn a_truncated_value_names_its_key_path() {
    let (env, text) = setup();
    edit(&env, &text, |t| {
        let line = line_of(t, "password:");
        t.replace(line, &line[..line.len() - 30])
    });
    decrypt_fails(
        &env,
        Some(&env.k1.path),
        &["stringData.password", "malformed encrypted value"],
    );
}

#[test]
fn an_unknown_type_is_rejected() {
    let (env, text) = setup();
    edit(&env, &text, |t| {
        let line = line_of(t, "password:");
        t.replace(line, &line.replace("type:str]", "type:blob]"))
    });
    decrypt_fails(
        &env,
        Some(&env.k1.path),
        &["stringData.password", "unknown value type `blob`"],
    );
}

#[test]
fn a_value_moved_to_another_key_fails_authentication() {
    let (env, text) = setup();
    edit(&env, &text, |t| {
        let user = line_of(t, "user:").to_owned();
        let pass = line_of(t, "password:").to_owned();
        let pass_val = pass.split_once(": ").unwrap().1;
        t.replace(
            &user,
            &format!("{}: {pass_val}", user.split_once(": ").unwrap().0),
        )
    });
    decrypt_fails(
        &env,
        Some(&env.k1.path),
        &["stringData.user", "could not decrypt value"],
    );
}

#[test]
fn wrong_key_and_missing_key() {
    let (env, _) = setup();
    let code = decrypt_fails(
        &env,
        Some(&env.k2.path),
        &["no identity could decrypt the data key", "tried 1 age identity"],
    );
    assert_eq!(code, 128, "sops' exit code for an unavailable data key");
    decrypt_fails(&env, None, &["no age identity available"]);
}

#[test]
fn unsupported_key_types_are_named_not_fatal() {
    let (env, _) = setup();
    let pq = "AGE-SECRET-KEY-PQ-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQS";
    let only_pq = env.write("pq.txt", format!("# post-quantum only\n{pq}\n").as_bytes());
    decrypt_fails(
        &env,
        Some(&only_pq),
        &["unsupported key type AGE-SECRET-KEY-PQ-1", "pq.txt line 2"],
    );
    // With a usable key beside it, the file decrypts.
    let mixed = env.write(
        "mixed.txt",
        format!("{pq}\n{}", std::fs::read_to_string(&env.k1.path).unwrap()).as_bytes(),
    );
    ok(
        env.lockstep(Some(&mixed), &["sops", "decrypt", FILE]),
        "decrypt with a mixed key file",
    );
    // A line that is no key at all is an error naming the line, never echoing it.
    let junk = env.write("junk.txt", format!("{CANARY}\n").as_bytes());
    let out = env.lockstep(Some(&junk), &["sops", "decrypt", FILE]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("junk.txt line 1: not an age identity"),
        "{stderr}"
    );
    assert!(!stderr.contains(CANARY));
}

#[test]
fn mac_catches_reorder_deletion_plaintext_edits_and_lastmodified() {
    let (env, text) = setup();
    type Mutation = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "reordered list",
            Box::new(|t: &str| {
                let lines: Vec<&str> = t.lines().collect();
                let i = lines
                    .iter()
                    .position(|l| l.trim_start().starts_with("hosts:"))
                    .unwrap();
                let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
                l.swap(i + 1, i + 2);
                l.join("\n") + "\n"
            }),
            "MAC mismatch",
        ),
        (
            "deleted key",
            Box::new(|t: &str| t.replace(&format!("{}\n", line_of(t, "user:")), "")),
            "MAC mismatch",
        ),
        (
            "edited plaintext",
            Box::new(|t: &str| t.replace("name: db", "name: dB")),
            "MAC mismatch",
        ),
        (
            "edited lastmodified",
            Box::new(|t: &str| {
                let l = line_of(t, "lastmodified:");
                t.replace(l, "    lastmodified: \"2001-01-01T00:00:00Z\"")
            }),
            "cannot decrypt MAC",
        ),
    ];
    for (what, f, expect) in cases {
        edit(&env, &text, f);
        let code = decrypt_fails(&env, Some(&env.k1.path), &[expect]);
        if expect == "MAC mismatch" {
            assert_eq!(code, 51, "{what}: sops' exit code for a MAC mismatch");
            // --ignore-mac recovers the data, with a warning.
            let out = env.lockstep(Some(&env.k1.path), &["sops", "decrypt", "--ignore-mac", FILE]);
            assert!(out.status.success(), "{what}: --ignore-mac must recover");
            assert!(String::from_utf8_lossy(&out.stderr).contains("MAC not verified"));
        }
    }
}

#[test]
fn failed_in_place_operations_leave_the_file_untouched() {
    let (env, text) = setup();
    // Encrypting an encrypted file.
    let out = env.lockstep(None, &["sops", "encrypt", "--age", &env.k1.recipient, "-i", FILE]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already encrypted"));
    assert_eq!(std::fs::read_to_string(env.path(FILE)).unwrap(), text);
    // Decrypting in place with the wrong key.
    let out = env.lockstep(Some(&env.k2.path), &["sops", "decrypt", "-i", FILE]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(env.path(FILE)).unwrap(), text);
    // Rotating a tampered file.
    edit(&env, &text, |t| t.replace("name: db", "name: x"));
    let tampered = std::fs::read_to_string(env.path(FILE)).unwrap();
    let out = env.lockstep(Some(&env.k1.path), &["sops", "rotate", "-i", FILE]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(env.path(FILE)).unwrap(), tampered);
    // A bad recipient names itself (public data) and writes nothing.
    env.write("p.yaml", b"a: b\n");
    let out = env.lockstep(
        None,
        &[
            "sops",
            "encrypt",
            "--age",
            "age1notarecipient",
            "-o",
            "p.enc.yaml",
            "p.yaml",
        ],
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("invalid age recipient `age1notarecipient`")
    );
    assert!(!env.path("p.enc.yaml").exists());
    // No recipients at all.
    let out = env.lockstep(None, &["sops", "encrypt", "p.yaml"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no recipients"));
}

#[test]
fn keygen_never_overwrites_and_writes_0600() {
    let env = Env::new();
    ok(env.lockstep(None, &["keygen", "age", "-o", "id.txt"]), "keygen");
    let before = std::fs::read(env.path("id.txt")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(env.path("id.txt"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let out = env.lockstep(None, &["keygen", "age", "-o", "id.txt"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(env.path("id.txt")).unwrap(), before);
}

/// Runs `lockstep ARGS` with its address space capped (`prlimit --as`), so that a document
/// that expanded without bound would abort the process instead of passing the test.
fn lockstep_capped(env: &Env, args: &[&str], cap_mib: u64) -> std::process::Output {
    let mut c = std::process::Command::new("prlimit");
    c.current_dir(env.dir.path())
        .arg(format!("--as={}", cap_mib * 1024 * 1024))
        .arg(env!("CARGO_BIN_EXE_lockstep"))
        .args(args);
    common::run(&mut c, env.dir.path(), None)
}

#[test]
fn a_billion_laughs_document_is_refused_at_once_within_bounded_memory() {
    let env = Env::new();
    let laughs = lockstep_tests::billion_laughs();
    assert!(laughs.len() < 1024, "{} bytes", laughs.len());
    env.write("laughs.yaml", laughs.as_bytes());
    let started = std::time::Instant::now();
    let out = lockstep_capped(
        &env,
        &[
            "sops",
            "encrypt",
            "--age",
            &env.k1.recipient,
            "-o",
            "laughs.enc.yaml",
            "laughs.yaml",
        ],
        512,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a clean refusal, not a crash: {stderr}"
    );
    assert!(
        stderr.contains("laughs.yaml") && stderr.contains("excessive aliasing"),
        "{stderr}"
    );
    assert!(!env.path("laughs.enc.yaml").exists());
    // Nesting beyond the bound, likewise.
    let deep = format!("a: {}1{}\n", "[".repeat(210), "]".repeat(210));
    env.write("deep.yaml", deep.as_bytes());
    let out = lockstep_capped(
        &env,
        &["sops", "encrypt", "--age", &env.k1.recipient, "deep.yaml"],
        512,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("deep.yaml") && stderr.contains("nested deeper than"),
        "{stderr}"
    );
}

#[test]
fn a_file_only_for_pgp_names_its_key_instead_of_asking_for_an_age_key() {
    let env = Env::new();
    let pgp = lockstep_tests::PgpKey::generate(env.dir.path());
    env.write(
        FILE,
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {CANARY}\n")
            .as_bytes(),
    );
    pgp.sops_encrypt(&env.path(FILE), env.dir.path());
    let expect = format!(
        "encrypted for PGP key {} only; Lockstep decrypts age keys",
        pgp.fingerprint
    );
    // With no age identity at all, and with one: the same answer, not "set SOPS_AGE_KEY_FILE".
    for key in [None, Some(env.k1.path.as_path())] {
        let code = decrypt_fails(&env, key, &[&expect]);
        assert_eq!(code, 128, "sops' exit code for an unavailable data key");
        let out = env.lockstep(key, &["sops", "decrypt", FILE]);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("SOPS_AGE_KEY_FILE"));
    }
}
