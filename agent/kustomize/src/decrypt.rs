//! SOPS after the build. kustomize saw ciphertext only; here each object that came from a SOPS
//! file is matched with that file, the file is decrypted (its MAC verified), every `ENC[]` value
//! of the object is checked to stand in the object at the path it has in the file, and the
//! plaintext is put in its place. Namespace, labels and name prefix stay as kustomize made them.
//!
//! * A resource read from a SOPS file carries its `sops` block; its origin names the file.
//! * A Secret generated over SOPS files: a `files:` value is a whole SOPS file (matched by its
//!   bytes), an `envs:` source is matched by its `sops_mac`, key by key; the `sops_*` keys go.
//!   kustomize computed the name's hash suffix over the ciphertext, so no digest of plaintext
//!   reaches a name.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use lockstep_formats::secret::SecretJson;
use lockstep_formats::sops::{DecryptOptions, Format, Identities, stores};
use serde_json::Value as Json;
use zeroize::Zeroizing;

use crate::scan::Scan;
use crate::{Built, Error, Result};

/// Which SOPS files an object's values come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encrypted {
    /// A resource read from a SOPS file (repository-relative).
    Resource(String),
    /// A Secret generated over SOPS files.
    Generated {
        /// `data` key → the SOPS file it holds (`files:` sources).
        files: Vec<(String, String)>,
        /// The SOPS dotenv file its keys come from (`envs:`), if any.
        env: Option<String>,
    },
}

impl Encrypted {
    /// The SOPS files, for messages.
    pub fn files(&self) -> Vec<&str> {
        match self {
            Encrypted::Resource(f) => vec![f],
            Encrypted::Generated { files, env } => files
                .iter()
                .map(|(_, f)| f.as_str())
                .chain(env.as_deref())
                .collect(),
        }
    }
}

/// Whether `bytes` is a SOPS file, in the format its name implies.
pub fn is_sops_file(path: &str, bytes: &[u8]) -> bool {
    stores::load_encrypted(Format::from_path(std::path::Path::new(path)), bytes).is_ok()
}

/// The MAC of a SOPS file (its `sops.mac`, as written), if it is one.
pub fn sops_mac(path: &str, bytes: &[u8]) -> Option<String> {
    let (_, meta) = stores::load_encrypted(Format::from_path(std::path::Path::new(path)), bytes).ok()?;
    meta.get("mac")?.as_str().map(str::to_owned)
}

/// The SOPS sources of a built object, if it has any.
pub(crate) fn sources(
    files: &BTreeMap<String, Vec<u8>>,
    scan: &Scan,
    b: &Built,
) -> Result<Option<Encrypted>> {
    if let Some(sops) = b.object.get("sops").filter(|s| s.is_object()) {
        // The resource whose MAC the block carries; else the file kustomize names as its origin.
        let by_mac = sops
            .get("mac")
            .and_then(Json::as_str)
            .and_then(|m| scan.sops_resources.get(m))
            .cloned();
        let file = by_mac.or_else(|| b.origin.path.clone()).ok_or_else(|| Error::Object {
            origin: b.origin_label(),
            message: format!(
                "{} carries a `sops` block that is none of the build's SOPS resources (SOPS-encrypted patches are not supported: their values could not be verified)",
                b.describe()
            ),
        })?;
        return Ok(Some(Encrypted::Resource(file)));
    }
    if b.object.get("kind").and_then(Json::as_str) != Some("Secret") {
        return Ok(None);
    }
    let Some(data) = b.object.get("data").and_then(Json::as_object) else {
        return Ok(None);
    };
    let mut from_files = Vec::new();
    for (key, value) in data {
        let Some(bytes) = value.as_str().and_then(decode).map(Zeroizing::new) else {
            continue;
        };
        if let Some(f) = scan
            .file_sources
            .iter()
            .find(|f| files.get(*f).is_some_and(|b| *b == *bytes) && is_sops_file(f, &bytes))
        {
            from_files.push((key.clone(), f.clone()));
        }
    }
    let env = match data.get("sops_mac").and_then(Json::as_str).and_then(decode) {
        None => None,
        Some(mac) => Some(
            scan.env_sources
                .iter()
                .find(|f| {
                    files
                        .get(*f)
                        .is_some_and(|b| dotenv_value(b, "sops_mac") == Some(mac.as_slice()))
                })
                .cloned()
                .ok_or_else(|| Error::Tampered {
                    file: b.origin.describe(),
                    path: "data.sops_mac".into(),
                    object: b.describe(),
                    reason:
                        "holds the MAC of a SOPS dotenv file that is none of the generator's envs sources"
                            .into(),
                })?,
        ),
    };
    Ok(
        (!from_files.is_empty() || env.is_some()).then_some(Encrypted::Generated {
            files: from_files,
            env,
        }),
    )
}

/// A `data` value: base64, which kustomize wraps at 70 columns (Go's decoder, as the API
/// server's, skips the line breaks).
fn decode(v: &str) -> Option<Vec<u8>> {
    let compact: Zeroizing<Vec<u8>> =
        Zeroizing::new(v.bytes().filter(|b| !b.is_ascii_whitespace()).collect());
    B64.decode(compact.as_slice()).ok()
}

/// The value of `key` in a dotenv file, as written.
fn dotenv_value<'a>(bytes: &'a [u8], key: &str) -> Option<&'a [u8]> {
    bytes.split(|b| *b == b'\n').find_map(|line| {
        let rest = line.strip_prefix(key.as_bytes())?;
        rest.strip_prefix(b"=")
    })
}

/// The object of `built` with its SOPS values decrypted from `files` (MAC verified), the `sops`
/// block and the `sops_*` keys removed.
pub fn decrypt(
    files: &BTreeMap<String, Vec<u8>>,
    built: &Built,
    ids: Option<&Identities>,
) -> Result<SecretJson> {
    let Some(encrypted) = &built.encrypted else {
        return Ok(SecretJson::new(built.object.clone()));
    };
    let ids = match ids {
        Some(ids) => ids,
        None => {
            return Err(Error::NoDecryption {
                file: encrypted.files().first().copied().unwrap_or_default().to_owned(),
            });
        }
    };
    match encrypted {
        Encrypted::Resource(file) => resource(files, built, file, ids),
        Encrypted::Generated { files: sources, env } => generated(files, built, sources, env.as_deref(), ids),
    }
}

fn bytes_of<'a>(files: &'a BTreeMap<String, Vec<u8>>, file: &str) -> Result<&'a [u8]> {
    files.get(file).map(Vec::as_slice).ok_or_else(|| Error::Object {
        origin: file.to_owned(),
        message: "kustomize names this file as an origin, but the revision does not hold it".into(),
    })
}

/// A path in a JSON document.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn display(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn is_enc(s: &str) -> bool {
    s.starts_with("ENC[") && s.ends_with(']')
}

/// Every `ENC[]` string of a document, with its path (the `sops` block aside).
fn encrypted_values(doc: &Json) -> Vec<(Vec<Seg>, &str)> {
    fn walk<'a>(v: &'a Json, path: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, &'a str)>) {
        match v {
            Json::String(s) if is_enc(s) => out.push((path.clone(), s)),
            Json::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    walk(x, path, out);
                    path.pop();
                }
            }
            Json::Object(m) => {
                for (k, x) in m {
                    if path.is_empty() && k == "sops" {
                        continue;
                    }
                    path.push(Seg::Key(k.clone()));
                    walk(x, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut Vec::new(), &mut out);
    out
}

fn get<'a>(mut v: &'a Json, path: &[Seg]) -> Option<&'a Json> {
    for seg in path {
        v = match seg {
            Seg::Key(k) => v.get(k)?,
            Seg::Index(i) => v.get(*i)?,
        };
    }
    Some(v)
}

fn get_mut<'a>(mut v: &'a mut Json, path: &[Seg]) -> Option<&'a mut Json> {
    for seg in path {
        v = match seg {
            Seg::Key(k) => v.get_mut(k)?,
            Seg::Index(i) => v.get_mut(*i)?,
        };
    }
    Some(v)
}

/// A resource from a SOPS file.
fn resource(
    files: &BTreeMap<String, Vec<u8>>,
    built: &Built,
    file: &str,
    ids: &Identities,
) -> Result<SecretJson> {
    let bytes = bytes_of(files, file)?;
    let format = Format::from_path(std::path::Path::new(file));
    let tampered = |path: &[Seg], reason: &str| Error::Tampered {
        file: file.to_owned(),
        path: display(path),
        object: built.describe(),
        reason: reason.to_owned(),
    };
    let (originals, _) = match stores::load_encrypted(format, bytes) {
        Ok(x) => x,
        Err(_) => {
            return Err(tampered(
                &[Seg::Key("sops".into())],
                "the object carries a `sops` block, but its file is not SOPS-encrypted (SOPS-encrypted patches are not supported: their values could not be verified)",
            ));
        }
    };
    let originals: Vec<Json> = originals
        .iter()
        .map(|d| stores::branch_to_json(d))
        .collect::<lockstep_formats::Result<_>>()
        .map_err(|e| e.in_file(file))?;
    let built_values = encrypted_values(&built.object);
    // The document of the file the object is: the one holding its ciphertext (every ENC[]
    // value has its own IV, so no two documents share one).
    let index = if originals.len() == 1 {
        Some(0)
    } else {
        originals.iter().position(|o| {
            let values = encrypted_values(o);
            built_values
                .iter()
                .any(|(_, s)| values.iter().any(|(_, t)| t == s))
        })
    };
    let index = index.ok_or_else(|| {
        tampered(
            &[],
            "none of the file's encrypted values are in the object (removed or replaced by a patch)",
        )
    })?;
    let original = &originals[index];
    let original_values = encrypted_values(original);
    for (path, value) in &built_values {
        if get(original, path).and_then(Json::as_str) == Some(*value) {
            continue;
        }
        let reason = match original_values.iter().find(|(_, t)| t == value) {
            Some((from, _)) => format!("an encrypted value was moved here from `{}`", display(from)),
            None => {
                "an encrypted value that is not the file's (tampered, or copied from another file)".into()
            }
        };
        return Err(tampered(path, &reason));
    }
    for (path, value) in &original_values {
        if get(&built.object, path).and_then(Json::as_str) != Some(*value) {
            return Err(tampered(
                path,
                "an encrypted value was changed or removed by a patch",
            ));
        }
    }
    let decrypted = lockstep_formats::sops::decrypt(file, bytes, format, ids, DecryptOptions::default())?;
    let plain = SecretJson::new(
        decrypted
            .documents()
            .get(index)
            .map(|d| stores::branch_to_json(d))
            .transpose()
            .map_err(|e| e.in_file(file))?
            .unwrap_or_default(),
    );
    let mut out = SecretJson::new(built.object.clone());
    if let Some(m) = out.as_object_mut() {
        m.remove("sops");
    }
    for (path, _) in &built_values {
        let value = get(&plain, path)
            .cloned()
            .ok_or_else(|| tampered(path, "no plaintext at this path"))?;
        if let Some(slot) = get_mut(&mut out, path) {
            *slot = value;
        }
    }
    Ok(out)
}

/// A Secret generated over SOPS files.
fn generated(
    files: &BTreeMap<String, Vec<u8>>,
    built: &Built,
    sources: &[(String, String)],
    env: Option<&str>,
    ids: &Identities,
) -> Result<SecretJson> {
    let mut out = SecretJson::new(built.object.clone());
    let mut plain: Vec<(String, Zeroizing<Vec<u8>>)> = Vec::new();
    for (key, file) in sources {
        let bytes = bytes_of(files, file)?;
        let format = Format::from_path(std::path::Path::new(file));
        let d = lockstep_formats::sops::decrypt(file, bytes, format, ids, DecryptOptions::default())?;
        plain.push((key.clone(), Zeroizing::new(d.to_bytes(None)?.expose().to_vec())));
    }
    let mut drop_sops_keys = false;
    if let Some(file) = env {
        let bytes = bytes_of(files, file)?;
        let (enc, _) = stores::load_encrypted(Format::Dotenv, bytes).map_err(|e| e.in_file(file))?;
        let d = lockstep_formats::sops::decrypt(file, bytes, Format::Dotenv, ids, DecryptOptions::default())?;
        let (Some(enc), Some(dec)) = (enc.first(), d.documents().first()) else {
            return Ok(out);
        };
        let enc = stores::branch_to_json(enc).map_err(|e| e.in_file(file))?;
        let dec = SecretJson::new(stores::branch_to_json(dec).map_err(|e| e.in_file(file))?);
        let data = built.object.get("data");
        for (key, value) in enc.as_object().into_iter().flatten() {
            let expected = value.as_str().unwrap_or_default().as_bytes();
            let found = data
                .and_then(|d| d.get(key))
                .and_then(Json::as_str)
                .and_then(decode)
                .map(Zeroizing::new);
            if found.as_deref().map(Vec::as_slice) != Some(expected) {
                return Err(Error::Tampered {
                    file: file.to_owned(),
                    path: key.clone(),
                    object: built.describe(),
                    reason: format!(
                        "`data.{key}` is not the file's value (changed or removed by a patch or a merge)"
                    ),
                });
            }
            let text = dec.get(key).and_then(Json::as_str).unwrap_or_default();
            plain.push((key.clone(), Zeroizing::new(text.as_bytes().to_vec())));
        }
        drop_sops_keys = true;
    }
    if let Some(data) = out.get_mut("data").and_then(Json::as_object_mut) {
        if drop_sops_keys {
            data.retain(|k, v| {
                let keep = !k.starts_with("sops_");
                if !keep {
                    lockstep_formats::secret::wipe_json(v);
                }
                keep
            });
        }
        for (key, bytes) in &plain {
            if let Some(slot) = data.get_mut(key) {
                lockstep_formats::secret::wipe_json(slot);
                *slot = Json::String(B64.encode(bytes.as_slice()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_as_sops_shows_them() {
        let p = [
            Seg::Key("spec".into()),
            Seg::Key("list".into()),
            Seg::Index(0),
            Seg::Key("x".into()),
        ];
        assert_eq!(display(&p), "spec.list[0].x");
        let doc = serde_json::json!({ "a": ["ENC[x]", "plain"], "sops": { "mac": "ENC[m]" } });
        let values = encrypted_values(&doc);
        assert_eq!(values.len(), 1, "the sops block is not a value");
        assert_eq!(display(&values[0].0), "a[0]");
    }

    #[test]
    fn dotenv_values_are_read_as_written() {
        assert_eq!(
            dotenv_value(b"A=1\nsops_mac=ENC[x]\n", "sops_mac"),
            Some(&b"ENC[x]"[..])
        );
        assert_eq!(dotenv_value(b"sops_macx=1\n", "sops_mac"), None);
    }
}
