//! `cargo xtask demo`: reads the bundled example repository, decrypts its SOPS files in memory
//! with the throwaway key in `keys-example/` (MAC verified), and prints what an agent would
//! apply, secrets first. Secret *values* are never printed: only key names.
//!
//! Applying to a local control plane is the agent's job and is not built yet.

use std::path::{Path, PathBuf};

use lockstep_formats::sops::{self, DecryptOptions, Format, Identities};
use lockstep_formats::tree::{Branch, MapItem, Value, get};
use lockstep_formats::yaml;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = root.join("tests/example-repo");
    let mut ids = Identities::new();
    ids.add_file(&root.join("keys-example/age.agekey"))?;

    let mut files = Vec::new();
    collect(&repo, &mut files)?;
    files.sort();
    let mut rows = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&repo)?.display().to_string();
        let text = std::fs::read_to_string(f)?;
        for doc in yaml::load_mappings(&text)? {
            if sops::is_encrypted_document(&doc) {
                let d = sops::decrypt(
                    &rel,
                    text.as_bytes(),
                    Format::Yaml,
                    &ids,
                    DecryptOptions::default(),
                )?;
                for plain in d.documents() {
                    rows.push(row(&rel, plain, "decrypted in memory, MAC verified"));
                }
                break;
            }
            rows.push(row(&rel, &doc, "plain"));
        }
    }
    // Secrets first: the order the agent applies in.
    rows.sort_by_key(|r| (stage(&r.kind), r.file.clone()));
    println!("Example repository: {}", repo.display());
    println!(
        "| {:<4} | {:<28} | {:<10} | {:<14} | {:<34} | {:<24} |",
        "step", "file", "kind", "name", "how", "keys (values never shown)"
    );
    println!(
        "|{:-<6}|{:-<30}|{:-<12}|{:-<16}|{:-<36}|{:-<26}|",
        "", "", "", "", "", ""
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "| {:<4} | {:<28} | {:<10} | {:<14} | {:<34} | {:<24} |",
            i + 1,
            r.file,
            r.kind,
            r.name,
            r.how,
            r.keys
        );
    }
    println!();
    println!(
        "Not yet: applying these to a local control plane (the agent's reconcile loop is still to come)."
    );
    Ok(())
}

struct Row {
    file: String,
    kind: String,
    name: String,
    how: &'static str,
    keys: String,
}

fn row(file: &str, doc: &Branch, how: &'static str) -> Row {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("-").to_owned();
    let meta = get(doc, "metadata");
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
    Row {
        file: file.to_owned(),
        kind: s(get(doc, "kind")),
        name: s(meta.and_then(|m| m.get("name"))),
        how,
        keys,
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
