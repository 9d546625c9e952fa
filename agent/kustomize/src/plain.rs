//! Plain manifest files: every `.yaml`, `.yml` and `.json` file (dotfiles such as `.sops.yaml`
//! aside), several documents per file, each a Kubernetes object; a file any of whose documents
//! carries SOPS metadata is a SOPS file, decrypted whole.

use lockstep_formats::sops::{self, Format, stores::to_json};
use lockstep_formats::tree::{MapItem, Value};
use serde_json::Value as Json;

use crate::{Error, Result};

/// What a plain file holds.
#[derive(Debug)]
pub enum Plain {
    /// Not a manifest file (its extension, or a dotfile).
    Skipped,
    /// A SOPS-encrypted file, in this format.
    Sops(Format),
    /// Objects, each with its origin (`file`, or `file (document N)`).
    Objects(Vec<(String, Json)>),
}

/// Reads the plain file `file` (repository-relative).
pub fn plain(file: &str, bytes: &[u8]) -> Result<Plain> {
    let base = file.rsplit('/').next().unwrap_or(file);
    let format = match base.rsplit_once('.').map(|(_, e)| e) {
        Some("yaml" | "yml") => Format::Yaml,
        Some("json") => Format::Json,
        _ => return Ok(Plain::Skipped),
    };
    if base.starts_with('.') {
        return Ok(Plain::Skipped);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Error::Object {
        origin: file.to_owned(),
        message: "not UTF-8 text".into(),
    })?;
    let docs = lockstep_formats::yaml::load_documents(text).map_err(|e| e.in_file(file))?;
    if docs
        .iter()
        .any(|d| matches!(d, Value::Map(items) if sops::is_encrypted_document(items)))
    {
        return Ok(Plain::Sops(format));
    }
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let origin = origin(file, i, docs.len());
        match doc {
            Value::Map(items) if items.iter().any(|i| matches!(i, MapItem::Entry(..))) => {
                let object = to_json(doc)?;
                check_object(&origin, &object)?;
                out.push((origin, object));
            }
            Value::Map(_) | Value::Null => {}
            _ => {
                return Err(Error::Object {
                    origin,
                    message: "not a mapping".into(),
                });
            }
        }
    }
    Ok(Plain::Objects(out))
}

/// Checks that a document is a Kubernetes object: `apiVersion`, `kind` and `metadata.name`.
pub fn check_object(origin: &str, o: &Json) -> Result<()> {
    let present = |ptr: &str| {
        o.pointer(ptr)
            .and_then(Json::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    for (field, ptr) in [
        ("apiVersion", "/apiVersion"),
        ("kind", "/kind"),
        ("metadata.name", "/metadata/name"),
    ] {
        // `generateName` stands in for a name (a hook, created rather than applied; the plan
        // refuses it on any other object).
        if ptr == "/metadata/name" && present("/metadata/generateName") {
            continue;
        }
        if !present(ptr) {
            return Err(Error::Object {
                origin: origin.into(),
                message: format!("{field} is missing"),
            });
        }
    }
    Ok(())
}

/// The origin of document `index` (0-based) of a file with `count` documents.
pub fn origin(file: &str, index: usize, count: usize) -> String {
    if count > 1 {
        format!("{file} (document {})", index + 1)
    } else {
        file.to_owned()
    }
}
