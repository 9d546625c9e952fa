//! `postBuild` substitution against Flux's own code: every case goes through
//! `lockstep_formats::postbuild` and through `flux-envsubst` (`tests/flux-envsubst`: Flux's
//! envsubst v1.7.1 between sigs.k8s.io/yaml's JSONToYAML and YAMLToJSON, as kustomize-controller
//! v1.9.6 runs them; built by `cargo xtask setup`), and the two must agree: the same object, or
//! both an error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};

use lockstep_formats::postbuild::{self, Options, Variables};
use serde_json::{Value as Json, json};

/// Values chosen for how YAML reads them back unquoted.
const VALUES: &[&str] = &[
    "web",
    "3",
    "-7",
    "1.5",
    "1e3",
    "0x1F",
    "0o17",
    "0755",
    "1_000",
    "true",
    "on",
    "Off",
    "yes",
    "n",
    "null",
    "~",
    "",
    "2024-01-01",
    "9223372036854775808",
    ".5",
    "+12",
    "a b",
    "é-ü",
    "😀",
    "\tt",
    "x:y",
    "{a: 1}",
    "[1, 2]",
    "#c",
    " lead",
    "trail ",
    "a: b",
    "- x",
    "*alias",
    "'q'",
    "\"dq\"",
    "ab\ncd",
    "$",
    "$$",
    "}",
    "50%",
    "0b101",
    "-0b11",
    "+9223372036854775808",
    "18446744073709551616",
    "1e400",
    ".5e3",
];

/// Expressions over the variable `v` (and `u`, never set).
const EXPRESSIONS: &[&str] = &[
    "${v}",
    "x-${v}",
    "${v}-x",
    "${v}${v}",
    "${u:=d}",
    "${u:-${v}}",
    "${v:=d}",
    "${u=}",
    "${#v}",
    "${v:1}",
    "${v:1:2}",
    "${v:-1}",
    "${v:0:-1}",
    "${v^^}",
    "${v,}",
    "${v/a/b}",
    "${v//./_}",
    "${v/#w/W}",
    "${v/%b/B}",
    "${v#*.}",
    "${v##*e}",
    "${v%.*}",
    "${v%%[0-9]*}",
    "$${v}",
    "$v",
    "a$$b",
    "${u}",
    "${v",
    "${}",
    "${v-x}",
    "${v:+set}",
    "k ${v} #c",
    "${v}: z",
    "- ${v}",
    "'${v}'",
    "\"${v}\"",
    "${v}\n${v}",
    " ${v}",
    "[${v}]",
    "{k: ${v}}",
    "${v}\n",
    "a\n\n${v}\n\n",
    " ${v}\nx",
    "\n${v}",
    "x\n  ${v:-a\nb}",
    "${v}\tx",
    "😀${v}",
];

fn oracle(cases: &[(Json, Vec<(String, String)>)]) -> Vec<Result<Json, String>> {
    let mut child = Command::new(lockstep_tests::peer("flux-envsubst"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flux-envsubst (run `cargo xtask setup`)");
    let mut input = String::new();
    for (object, vars) in cases {
        let vars: serde_json::Map<String, Json> = vars
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect();
        input.push_str(&json!({ "object": object, "vars": vars, "strict": true }).to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let r: Json = serde_json::from_str(l).unwrap();
            match r.get("error") {
                Some(e) => Err(e.as_str().unwrap().to_owned()),
                None => Ok(r["object"].clone()),
            }
        })
        .collect()
}

fn ours(object: &Json, vars: &[(String, String)]) -> Result<Json, String> {
    let mut v = Variables::default();
    for (k, val) in vars {
        v.insert(k, val.as_bytes(), false);
    }
    let mut o = object.clone();
    postbuild::substitute(
        &mut o,
        &v,
        Options {
            strict: true,
            always: false,
        },
    )
    .map(|_| o)
    .map_err(|e| e.to_string())
}

/// Go reads a value of a single-quoted string back unquoted when it closes the quotes: the one
/// divergence the module documents.
fn breaks_quotes(expr: &str, value: &str) -> bool {
    let plain = expr.replace("${v}", "x");
    let quoted = plain.starts_with(['\'', '"', ' ', '-', '[', '{'])
        || plain.contains(": ")
        || plain.contains(" #")
        || plain.chars().any(|c| c == '\t' || c > '\u{ffff}');
    quoted && (value.contains('\'') || value.contains('"'))
}

#[test]
fn substitution_matches_flux() {
    let mut cases = Vec::new();
    for expr in EXPRESSIONS {
        for value in VALUES {
            if breaks_quotes(expr, value) {
                continue;
            }
            let object = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "c", "labels": { "app": "a" } },
                "data": { "field": expr, "other": "plain" },
                "list": [expr, 1, true],
            });
            cases.push((object, vec![("v".to_owned(), value.replace('\n', ""))]));
        }
    }
    // Keys holding a variable, and an object whose only `$` is escaped.
    cases.push((
        json!({ "metadata": { "name": "k" }, "data": { "${v}-key": "x" } }),
        vec![("v".into(), "web".into())],
    ));
    cases.push((
        json!({ "metadata": { "name": "k" }, "data": { "x": "$${v}" } }),
        vec![("v".into(), "1".into())],
    ));
    let want = oracle(&cases);
    assert_eq!(want.len(), cases.len());
    let mut failures = Vec::new();
    for ((object, vars), want) in cases.iter().zip(&want) {
        let got = ours(object, vars);
        let agree = match (&got, want) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !agree {
            failures.push(format!(
                "{} with v={:?}:\n  lockstep: {got:?}\n  flux:     {want:?}",
                object["data"]["field"], vars[0].1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
