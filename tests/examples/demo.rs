//! `cargo xtask demo`: the main job on the embedded default. Starts a real local control plane
//! (etcd + kube-apiserver on loopback), reads the bundled example repository, decrypts its SOPS
//! files in memory with the throwaway key in `keys-example/` (MAC verified), and applies every
//! object with server-side apply, namespaces first, then secrets, then workloads. Secret
//! *values* are never printed: only key names.
//!
//! This is a stand-in for the agent's reconcile loop (pulling from Git, pruning, healing drift
//! and the other secret sources are the agent's job and not built yet).

use std::path::{Path, PathBuf};
use std::time::Instant;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use lockstep_formats::sops::{self, DecryptOptions, Format, Identities};
use lockstep_formats::tree::{Branch, MapItem, Value, get};
use lockstep_formats::yaml;
use lockstep_tests::controlplane::{ControlPlane, Options};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    let repo = root.join("tests/example-repo");
    let mut ids = Identities::new();
    ids.add_file(&root.join("keys-example/age.agekey"))?;

    eprintln!("[1/4] starting a local control plane (etcd + kube-apiserver) ...");
    let cp = tokio::task::spawn_blocking(|| ControlPlane::start(&Options::default())).await??;
    eprintln!("      up in {:.1} s at {}", cp.start_seconds, cp.server());

    eprintln!("[2/4] reading {} ...", repo.display());
    let mut files = Vec::new();
    collect(&repo, &mut files)?;
    files.sort();
    let mut objects = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&repo)?.display().to_string();
        let text = std::fs::read_to_string(f)?;
        let docs = yaml::load_mappings(&text)?;
        if docs.iter().any(sops::is_encrypted_document) {
            eprintln!("[3/4] decrypting {rel} in memory (MAC verified) ...");
            let d = sops::decrypt(
                &rel,
                text.as_bytes(),
                Format::Yaml,
                &ids,
                DecryptOptions::default(),
            )?;
            for doc in d.documents() {
                objects.push(Obj::new(&rel, doc, "SOPS, decrypted in memory")?);
            }
        } else {
            for doc in &docs {
                objects.push(Obj::new(&rel, doc, "plain")?);
            }
        }
    }
    // Secrets before the workloads that mount them.
    objects.sort_by_key(|o| (stage(&o.kind), o.file.clone()));

    eprintln!("[4/4] applying with server-side apply (field manager `lockstep`) ...");
    let client = cp.client().await?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let pp = PatchParams::apply("lockstep").force();
    println!();
    println!(
        "| {:<4} | {:<26} | {:<10} | {:<12} | {:<26} | {:<19} | {:<13} |",
        "step", "file", "kind", "name", "source", "keys (never values)", "result"
    );
    println!(
        "|{:-<6}|{:-<28}|{:-<12}|{:-<14}|{:-<28}|{:-<21}|{:-<15}|",
        "", "", "", "", "", "", ""
    );
    for (i, o) in objects.iter().enumerate() {
        let t = Instant::now();
        let (ar, caps) = discovery
            .resolve_gvk(&o.gvk)
            .ok_or_else(|| format!("{}: the cluster does not serve {:?}", o.file, o.gvk))?;
        let api: Api<DynamicObject> = match (caps.scope, &o.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
            (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &ar),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
        };
        api.patch(&o.name, &pp, &Patch::Apply(&o.json)).await?;
        let result = format!("applied {} ms", t.elapsed().as_millis());
        println!(
            "| {:<4} | {:<26} | {:<10} | {:<12} | {:<26} | {:<19} | {:<13} |",
            i + 1,
            o.file,
            o.kind,
            o.name,
            o.source,
            o.keys,
            result
        );
    }
    println!();
    println!(
        "All {} objects applied to a real API server; the control plane stops now.",
        objects.len()
    );
    Ok(())
}

struct Obj {
    file: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    gvk: kube::api::GroupVersionKind,
    json: serde_json::Value,
    source: &'static str,
    keys: String,
}

impl Obj {
    fn new(file: &str, doc: &Branch, source: &'static str) -> Result<Self, Box<dyn std::error::Error>> {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let meta = get(doc, "metadata");
        let api_version = s(get(doc, "apiVersion")).ok_or_else(|| format!("{file}: no apiVersion"))?;
        let kind = s(get(doc, "kind")).ok_or_else(|| format!("{file}: no kind"))?;
        let name = s(meta.and_then(|m| m.get("name"))).ok_or_else(|| format!("{file}: no metadata.name"))?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let keys = ["data", "stringData"]
            .iter()
            .filter_map(|k| match get(doc, k) {
                Some(Value::Map(items)) => Some(items.iter().filter_map(|i| match i {
                    MapItem::Entry(k, _) => Some(k.clone()),
                    MapItem::Comment(_) => None,
                })),
                _ => None,
            })
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        // The apiserver wants JSON; the plaintext goes straight from the tree into the request.
        let json = sops::stores::to_json(&Value::Map(doc.clone()))?;
        Ok(Self {
            file: file.to_owned(),
            gvk: kube::api::GroupVersionKind::gvk(group, version, &kind),
            kind,
            name,
            namespace: s(meta.and_then(|m| m.get("namespace"))),
            json,
            source,
            keys,
        })
    }
}

fn stage(kind: &str) -> u8 {
    match kind {
        "CustomResourceDefinition" | "Namespace" => 0,
        "Secret" | "SealedSecret" | "ExternalSecret" => 1,
        _ => 2,
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml")
            && p.file_name().is_none_or(|n| n != ".sops.yaml")
        {
            out.push(p);
        }
    }
    Ok(())
}
