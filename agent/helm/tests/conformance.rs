//! Conformance with `helm template`: for each case, the object set the helper renders equals
//! what the real `helm` CLI v4.3.2 (built from the same module version) prints with the same
//! values, object by object as JSON, keyed by kind/namespace/name. The chart under
//! `tests/charts/web` has a subchart behind a condition, a library chart, `tpl`/`include`,
//! `Capabilities` (kube version and API versions), CRDs in `crds/`, Helm hooks, a test hook,
//! `NOTES.txt`, a template that renders nothing and a `.helmignore`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lockstep_helm::{Chart, Helper, Rendered, Request, Values, template};
use serde_json::Value as Json;
use zeroize::Zeroizing;

fn charts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts")
}

fn helper() -> Helper {
    Helper::new(lockstep_tests::peer("lockstep-helm"))
}

/// The chart at `dir` of the test repository, rendered.
fn render(
    files: &BTreeMap<String, Vec<u8>>,
    dir: &str,
    req: &Request,
) -> lockstep_helm::Result<Vec<Rendered>> {
    template(&helper(), Chart::Directory { files, dir }, req)
}

/// A request for release `name` in `default`, nothing else set.
fn release(name: &str) -> Request {
    Request {
        release_name: name.into(),
        namespace: "default".into(),
        ..Request::default()
    }
}

/// The files under `dir`, keyed by their path relative to `root`.
fn read(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            read(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

fn repository() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    read(&charts(), &charts(), &mut files);
    files
}

type Objects = BTreeMap<(String, String, String), Json>;

fn key(o: &Json) -> (String, String, String) {
    let s = |p: &str| o.pointer(p).and_then(Json::as_str).unwrap_or_default().to_owned();
    (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
}

fn cli(args: &[&str]) -> Objects {
    let out = Command::new(lockstep_tests::peer("helm"))
        .arg("template")
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("lockstep-helm-test-cache"),
        )
        .output()
        .unwrap();
    let text = String::from_utf8(lockstep_tests::ok(out, "helm template")).unwrap();
    let mut objects = Objects::new();
    for doc in lockstep_formats::yaml::load_documents(&text).unwrap() {
        if matches!(doc, lockstep_formats::tree::Value::Null) {
            continue;
        }
        let o = lockstep_formats::sops::stores::to_json(&doc).unwrap();
        assert!(objects.insert(key(&o), o).is_none());
    }
    objects
}

fn ours(chart: Chart<'_>, req: &Request) -> Objects {
    let mut objects = Objects::new();
    for r in template(&helper(), chart, req).unwrap() {
        assert!(r.source.starts_with("web/"), "{}", r.source);
        let o: Json = (*r.object).clone();
        assert!(objects.insert(key(&o), o).is_none());
    }
    objects
}

fn doc(name: &str, text: &str) -> Values {
    Values::Document {
        name: name.into(),
        bytes: Zeroizing::new(text.as_bytes().to_vec()),
        target_path: None,
    }
}

fn assert_same(ours: &Objects, theirs: &Objects) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    for (k, o) in ours {
        assert_eq!(o, &theirs[k], "{k:?}");
    }
}

#[test]
fn the_defaults_render_as_helm_template_renders_them() {
    let files = repository();
    let chart = Chart::Directory {
        files: &files,
        dir: "web",
    };
    let req = release("web");
    let web = charts().join("web");
    let theirs = cli(&["web", web.to_str().unwrap(), "--namespace", "default"]);
    let ours = ours(chart, &req);
    assert_same(&ours, &theirs);
    // Hooks and the test hook are in the output, NOTES.txt and the empty template are not, the
    // subchart rendered, the CRDs left out.
    let kinds: Vec<&str> = ours.keys().map(|k| k.0.as_str()).collect();
    assert!(kinds.contains(&"Job") && kinds.contains(&"Pod") && kinds.contains(&"StatefulSet"));
    assert!(!kinds.contains(&"CustomResourceDefinition"));
}

#[test]
fn values_files_set_expressions_and_capabilities_render_as_helm_template_renders_them() {
    let files = repository();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    let a_text = "replicaCount: 3\nconfig:\n  extra:\n    A: one\n    B: two\ncache:\n  enabled: false\n";
    let b_text = "config:\n  extra:\n    B: overridden\nimage:\n  tag: 1.0.0\n";
    std::fs::write(&a, a_text).unwrap();
    std::fs::write(&b, b_text).unwrap();
    let req = Request {
        release_name: "shop".into(),
        namespace: "apps".into(),
        kube_version: Some("1.29.4".into()),
        api_versions: vec!["monitoring.coreos.com/v1".into()],
        include_crds: true,
        skip_tests: true,
        is_upgrade: true,
        values: vec![
            doc("a.yaml", a_text),
            doc("b.yaml", b_text),
            Values::Set("podAnnotations.team=web,service.port=8080".into()),
            Values::SetString("secret.password=12345".into()),
            Values::SetJson(r#"config.extra={"C":"json"}"#.into()),
            Values::SetLiteral("ingress.host=a,b.example.com".into()),
        ],
        ..Request::default()
    };
    let web = charts().join("web");
    let theirs = cli(&[
        "shop",
        web.to_str().unwrap(),
        "--namespace",
        "apps",
        "--kube-version",
        "1.29.4",
        "--api-versions",
        "monitoring.coreos.com/v1",
        "--include-crds",
        "--skip-tests",
        "--is-upgrade",
        "-f",
        a.to_str().unwrap(),
        "-f",
        b.to_str().unwrap(),
        "--set",
        "podAnnotations.team=web,service.port=8080",
        "--set-string",
        "secret.password=12345",
        "--set-json",
        r#"config.extra={"C":"json"}"#,
        "--set-literal",
        "ingress.host=a,b.example.com",
    ]);
    let ours = ours(
        Chart::Directory {
            files: &files,
            dir: "web",
        },
        &req,
    );
    assert_same(&ours, &theirs);
    let kinds: Vec<&str> = ours.keys().map(|k| k.0.as_str()).collect();
    assert!(kinds.contains(&"CustomResourceDefinition") && kinds.contains(&"ServiceMonitor"));
    assert!(!kinds.contains(&"Pod"), "skipTests leaves the test hook out");
    assert!(!kinds.contains(&"StatefulSet"), "the subchart's condition");
}

#[test]
fn a_file_dependency_of_the_repository_renders_as_after_helm_dependency_build() {
    let files = repository();
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &str| {
        let out = Command::new("cp")
            .args(["-r", charts().join(from).to_str().unwrap()])
            .arg(dir.path().join(from))
            .output()
            .unwrap();
        lockstep_tests::ok(out, "cp");
    };
    std::fs::create_dir_all(dir.path().join("libs")).unwrap();
    copy("shop");
    copy("libs/labels");
    let shop = dir.path().join("shop");
    let out = Command::new(lockstep_tests::peer("helm"))
        .args(["dependency", "build", shop.to_str().unwrap()])
        .env("HELM_CACHE_HOME", dir.path().join("cache"))
        .env("HELM_CONFIG_HOME", dir.path().join("config"))
        .output()
        .unwrap();
    lockstep_tests::ok(out, "helm dependency build");
    let theirs = cli(&["x", shop.to_str().unwrap()]);
    let req = release("x");
    let mut ours = Objects::new();
    for r in render(&files, "shop", &req).unwrap() {
        let o: Json = (*r.object).clone();
        ours.insert(key(&o), o);
    }
    assert_same(&ours, &theirs);
    assert_eq!(ours.len(), 2, "the chart's and its dependency's");
}

#[test]
fn a_packaged_chart_renders_as_its_directory() {
    let files = repository();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(lockstep_tests::peer("helm"))
        .args(["package", charts().join("web").to_str().unwrap(), "-d"])
        .arg(dir.path())
        .output()
        .unwrap();
    lockstep_tests::ok(out, "helm package");
    let tgz = std::fs::read(dir.path().join("web-1.2.3.tgz")).unwrap();
    let req = release("web");
    assert_same(
        &ours(
            Chart::Archive {
                name: "web 1.2.3",
                bytes: &tgz,
            },
            &req,
        ),
        &ours(
            Chart::Directory {
                files: &files,
                dir: "web",
            },
            &req,
        ),
    );
}

#[test]
fn a_template_error_names_the_chart_template_and_line_in_helms_words() {
    let files = repository();
    let req = release("x");
    let e = render(&files, "failing", &req).unwrap_err().to_string();
    assert!(
        e.starts_with("chart failing: helm: failing/templates/cm.yaml:6:17"),
        "{e}"
    );
    assert!(e.contains("nil pointer evaluating interface {}.key"), "{e}");
    let bad = render(
        &files,
        "web",
        &Request {
            values: vec![doc("values/prod.yaml", "replicaCount: [unclosed\n")],
            ..req
        },
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        bad,
        "chart web: helm: values/prod.yaml: error converting YAML to JSON: yaml: line 1: did not find expected ',' or ']'"
    );
}

#[test]
fn a_secret_value_a_chart_prints_in_its_error_is_redacted() {
    const CANARY: &str = "CANARY-helm-password-5d1e";
    let files = repository();
    let values = format!("password: {CANARY}\nmissing: {{key: present}}\n");
    let secret: Json = serde_json::json!({ "password": CANARY });
    let req = Request {
        values: vec![doc("secrets.yaml", &values)],
        redact: lockstep_helm::secret_strings(&secret),
        ..release("x")
    };
    let e = render(&files, "failing", &req).unwrap_err().to_string();
    assert!(!e.contains(CANARY), "{e}");
    assert!(e.contains("the password <redacted> is too weak"), "{e}");
}

#[test]
fn a_kustomize_post_renderer_patches_every_object_hooks_included() {
    let files = repository();
    let req = Request {
        post_renderers: vec![serde_json::json!({
            "images": [{ "name": "ghcr.io/example/web", "newTag": "patched" }],
            "patches": [{
                "target": { "kind": "Job" },
                "patch": "- op: add\n  path: /metadata/labels\n  value: {post-rendered: \"yes\"}\n"
            }]
        })],
        ..release("web")
    };
    let rendered = render(&files, "web", &req).unwrap();
    let find = |kind: &str, name: &str| {
        rendered
            .iter()
            .find(|r| r.object["kind"] == kind && r.object["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
    };
    let deploy = find("Deployment", "web");
    assert_eq!(
        deploy.object["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/example/web:patched"
    );
    assert_eq!(deploy.source, "web/templates/deployment.yaml");
    let migrate = find("Job", "web-migrate");
    assert_eq!(migrate.object["metadata"]["labels"]["post-rendered"], "yes");
    assert_eq!(
        migrate.object["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/example/web:patched"
    );
}
