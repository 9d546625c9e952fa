//! The four file layouts sops reads and writes: YAML, JSON, dotenv and binary.

use std::path::Path;

use crate::error::{Error, Result};
use crate::tree::{Branch, MapItem, Value, remove};
use crate::yaml;

/// A file layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML, one or more documents.
    Yaml,
    /// JSON, one top-level object.
    Json,
    /// `KEY=value` lines.
    Dotenv,
    /// Any bytes, stored as `{"data": ..., "sops": ...}` JSON.
    Binary,
}

impl Format {
    /// The format sops infers from a file name: `.yaml`/`.yml`, `.json`, `.env`, else binary.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Format::Yaml,
            Some("json") => Format::Json,
            Some("env") => Format::Dotenv,
            _ => Format::Binary,
        }
    }

    /// Parses a `--input-type`/`--output-type` name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "yaml" | "yml" => Format::Yaml,
            "json" => Format::Json,
            "dotenv" | "env" => Format::Dotenv,
            "binary" => Format::Binary,
            _ => return None,
        })
    }

    /// Human name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
            Format::Dotenv => "dotenv",
            Format::Binary => "binary",
        }
    }
}

/// Loads a plaintext file into documents.
pub fn load_plain(format: Format, bytes: &[u8]) -> Result<Vec<Branch>> {
    match format {
        Format::Yaml => yaml::load_mappings(utf8(bytes)?),
        Format::Json => Ok(vec![load_json_object(utf8(bytes)?)?]),
        Format::Dotenv => Ok(vec![load_dotenv(utf8(bytes)?)?]),
        Format::Binary => Ok(vec![vec![MapItem::Entry(
            "data".into(),
            match std::str::from_utf8(bytes) {
                Ok(s) => Value::Str(s.to_owned()),
                Err(_) => Value::Bytes(bytes.to_vec()),
            },
        )]]),
    }
}

/// Loads an encrypted file: its documents with the `sops` key removed, and the metadata
/// mapping of the first document.
pub fn load_encrypted(format: Format, bytes: &[u8]) -> Result<(Vec<Branch>, Value)> {
    let mut docs = match format {
        Format::Yaml => yaml::load_mappings(utf8(bytes)?)?,
        Format::Json | Format::Binary => vec![load_json_object(utf8(bytes)?)?],
        Format::Dotenv => {
            let mut items = load_dotenv(utf8(bytes)?)?;
            let mut flat = Vec::new();
            items.retain(|i| match i {
                MapItem::Entry(k, v) if k.starts_with("sops_") => {
                    flat.push((k["sops_".len()..].to_owned(), v.clone()));
                    false
                }
                _ => true,
            });
            if flat.is_empty() {
                return Err(Error::NotSops);
            }
            let meta = unflatten(flat)?;
            return Ok((vec![items], meta));
        }
    };
    let mut meta = None;
    for d in &mut docs {
        let m = remove(d, "sops");
        if meta.is_none() {
            meta = m;
        }
    }
    let meta = meta.ok_or(Error::NotSops)?;
    if format == Format::Binary && docs.first().and_then(|d| crate::tree::get(d, "data")).is_none() {
        return Err(Error::Structure {
            path: "data".into(),
            message: "binary SOPS file has no `data` key".into(),
        });
    }
    Ok((docs, meta))
}

/// Writes decrypted documents.
pub fn emit_plain(format: Format, docs: &[Branch]) -> Result<Vec<u8>> {
    match format {
        Format::Yaml => Ok(yaml::emit_documents(&to_docs(docs)).map(String::into_bytes)?),
        Format::Json => emit_json(single(docs, format)?).map(String::into_bytes),
        Format::Dotenv => emit_dotenv(single(docs, format)?).map(String::into_bytes),
        Format::Binary => match crate::tree::get(single(docs, format)?, "data") {
            Some(Value::Str(s)) => Ok(s.clone().into_bytes()),
            Some(Value::Bytes(b)) => Ok(b.clone()),
            _ => Err(Error::Emit {
                format: "binary",
                message: "the document has no string `data` key".into(),
            }),
        },
    }
}

/// Writes encrypted documents with their metadata.
pub fn emit_encrypted(format: Format, docs: &[Branch], meta: &Value) -> Result<String> {
    match format {
        Format::Yaml => {
            let with_meta: Vec<Value> = docs
                .iter()
                .map(|d| {
                    let mut d = d.clone();
                    d.push(MapItem::Entry("sops".into(), meta.clone()));
                    Value::Map(d)
                })
                .collect();
            yaml::emit_documents(&with_meta)
        }
        Format::Json | Format::Binary => {
            let mut d = single(docs, format)?.clone();
            d.push(MapItem::Entry("sops".into(), meta.clone()));
            emit_json(&d)
        }
        Format::Dotenv => {
            let mut d = single(docs, format)?.clone();
            let mut flat = Vec::new();
            flatten("", meta, &mut flat);
            flat.sort_by(|a, b| a.0.cmp(&b.0));
            d.extend(
                flat.into_iter()
                    .map(|(k, v)| MapItem::Entry(format!("sops_{k}"), Value::Str(v))),
            );
            emit_dotenv(&d)
        }
    }
}

fn single(docs: &[Branch], format: Format) -> Result<&Branch> {
    match docs {
        [d] => Ok(d),
        _ => Err(Error::Emit {
            format: format.name(),
            message: format!("{} documents; exactly one is needed", docs.len()),
        }),
    }
}

fn to_docs(docs: &[Branch]) -> Vec<Value> {
    docs.iter().map(|d| Value::Map(d.clone())).collect()
}

fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| Error::Structure {
        path: "<file>".into(),
        message: format!("not UTF-8 text (invalid byte at offset {})", e.valid_up_to()),
    })
}

// ==== JSON ====

fn load_json_object(text: &str) -> Result<Branch> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Json {
        line: e.line(),
        col: e.column(),
        message: match e.classify() {
            serde_json::error::Category::Eof => "unexpected end of input".into(),
            _ => "syntax error".into(),
        },
    })?;
    match from_json(v) {
        Value::Map(items) => Ok(items),
        other => Err(Error::Structure {
            path: "<document root>".into(),
            message: format!("top level must be an object, found a {}", other.kind()),
        }),
    }
}

/// Converts JSON to a tree (integers within 64 bits stay integers).
pub fn from_json(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        // Integers within int64 stay integers (sops >= 3.13.2); the rest are floats.
        J::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        J::String(s) => Value::Str(s),
        J::Array(a) => Value::Seq(a.into_iter().map(from_json).collect()),
        J::Object(o) => Value::Map(
            o.into_iter()
                .map(|(k, v)| MapItem::Entry(k, from_json(v)))
                .collect(),
        ),
    }
}

/// Converts a mapping's items to a JSON object (comments dropped): a decrypted document
/// ([`crate::sops::Decrypted::documents`]) without copying it into a tree first.
pub fn branch_to_json(items: &[MapItem]) -> Result<serde_json::Value> {
    Ok(serde_json::Value::Object(
        items
            .iter()
            .filter_map(|i| match i {
                MapItem::Entry(k, v) => Some(to_json(v).map(|v| (k.clone(), v))),
                MapItem::Comment(_) => None,
            })
            .collect::<Result<_>>()?,
    ))
}

/// Converts a tree to JSON (comments dropped), e.g. to send a decrypted object to the API server.
pub fn to_json(v: &Value) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    Ok(match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        // Go's encoding/json writes whole floats without a fraction (`1`, not `1.0`).
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => J::from(*f as i64),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or(Error::Emit {
                format: "JSON",
                message: "NaN and infinity cannot be written as JSON".into(),
            })?,
        Value::Str(s) | Value::Time(s) => J::String(s.clone()),
        Value::Bytes(_) => {
            return Err(Error::Emit {
                format: "JSON",
                message: "value is not valid UTF-8".into(),
            });
        }
        Value::Seq(items) => J::Array(
            items
                .iter()
                .filter(|i| !matches!(i, Value::Comment(_)))
                .map(to_json)
                .collect::<Result<_>>()?,
        ),
        Value::Map(items) => branch_to_json(items)?,
        Value::Comment(_) => J::Null,
    })
}

fn emit_json(items: &Branch) -> Result<String> {
    use serde::Serialize;
    let v = to_json(&Value::Map(items.clone()))?;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser).map_err(|e| Error::Emit {
        format: "JSON",
        message: e.to_string(),
    })?;
    out.push(b'\n');
    String::from_utf8(out).map_err(|_| Error::Emit {
        format: "JSON",
        message: "not UTF-8".into(),
    })
}

// ==== dotenv ====

fn load_dotenv(text: &str) -> Result<Branch> {
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            items.push(MapItem::Comment(c.to_owned()));
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(Error::Dotenv {
                line: n + 1,
                message: "expected KEY=value",
            });
        };
        if k.is_empty() {
            return Err(Error::Dotenv {
                line: n + 1,
                message: "empty key",
            });
        }
        if items.iter().any(|i| matches!(i, MapItem::Entry(e, _) if e == k)) {
            return Err(Error::Dotenv {
                line: n + 1,
                message: "duplicate key",
            });
        }
        items.push(MapItem::Entry(k.to_owned(), Value::Str(v.replace("\\n", "\n"))));
    }
    Ok(items)
}

fn emit_dotenv(items: &Branch) -> Result<String> {
    let mut out = String::new();
    for item in items {
        match item {
            MapItem::Comment(c) => {
                out.push('#');
                out.push_str(c);
            }
            MapItem::Entry(k, v) => {
                let s = match v {
                    Value::Str(s) | Value::Time(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    Value::Float(f) => yaml::format_float_g(*f),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    _ => {
                        return Err(Error::Emit {
                            format: "dotenv",
                            message: format!("`{k}` is a {}; dotenv values must be scalars", v.kind()),
                        });
                    }
                };
                out.push_str(k);
                out.push('=');
                out.push_str(&s.replace('\n', "\\n"));
            }
        }
        out.push('\n');
    }
    Ok(out)
}

// ==== metadata flattening (dotenv) ====

const MAP_SEP: &str = "__map_";
const LIST_SEP: &str = "__list_";

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Map(items) => {
            for item in items {
                if let MapItem::Entry(k, v) = item {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}{MAP_SEP}{k}")
                    };
                    flatten(&key, v, out);
                }
            }
        }
        Value::Seq(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}{LIST_SEP}{i}"), v, out);
            }
        }
        Value::Str(s) | Value::Time(s) => out.push((prefix.to_owned(), s.clone())),
        Value::Int(i) => out.push((prefix.to_owned(), i.to_string())),
        Value::Bool(b) => out.push((prefix.to_owned(), b.to_string())),
        Value::Float(f) => out.push((prefix.to_owned(), yaml::format_float_g(*f))),
        _ => {}
    }
}

/// Rebuilds the metadata mapping from `age__list_0__map_enc`-style keys.
fn unflatten(flat: Vec<(String, Value)>) -> Result<Value> {
    let mut root = Value::Map(Vec::new());
    for (key, value) in flat {
        let segs = split_flat_key(&key)?;
        insert_path(&mut root, &segs, value, &key)?;
    }
    Ok(root)
}

enum Seg {
    Key(String),
    Index(usize),
}

/// sops' `tokenize`: the key is cut at every `__map_` and `__list_` separator.
fn split_flat_key(key: &str) -> Result<Vec<Seg>> {
    let bad = || Error::Metadata {
        field: format!("sops_{key}"),
        message: "malformed flattened key".into(),
    };
    let mut segs = Vec::new();
    let mut state_list = false;
    let mut start = 0;
    let mut i = 0;
    let finish = |segs: &mut Vec<Seg>, text: &str, list: bool| -> Result<()> {
        segs.push(if list {
            Seg::Index(text.parse().map_err(|_| bad())?)
        } else {
            Seg::Key(text.to_owned())
        });
        Ok(())
    };
    while i < key.len() {
        let rest = &key[i..];
        let sep = if rest.starts_with(MAP_SEP) {
            Some((false, MAP_SEP.len()))
        } else if rest.starts_with(LIST_SEP) {
            Some((true, LIST_SEP.len()))
        } else {
            None
        };
        match sep {
            Some((list, len)) => {
                finish(&mut segs, &key[start..i], state_list)?;
                state_list = list;
                i += len;
                start = i;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    finish(&mut segs, &key[start..], state_list)?;
    Ok(segs)
}

fn insert_path(node: &mut Value, segs: &[Seg], value: Value, key: &str) -> Result<()> {
    let bad = || Error::Metadata {
        field: format!("sops_{key}"),
        message: "conflicting flattened keys".into(),
    };
    let Some((head, tail)) = segs.split_first() else {
        *node = value;
        return Ok(());
    };
    match head {
        Seg::Key(k) => {
            if matches!(node, Value::Null) {
                *node = Value::Map(Vec::new());
            }
            let Value::Map(items) = node else {
                return Err(bad());
            };
            let pos = match items
                .iter()
                .position(|i| matches!(i, MapItem::Entry(e, _) if e == k))
            {
                Some(p) => p,
                None => {
                    items.push(MapItem::Entry(k.clone(), Value::Null));
                    items.len() - 1
                }
            };
            match &mut items[pos] {
                MapItem::Entry(_, child) => insert_path(child, tail, value, key),
                MapItem::Comment(_) => Err(bad()),
            }
        }
        Seg::Index(i) => {
            if matches!(node, Value::Null) {
                *node = Value::Seq(Vec::new());
            }
            let Value::Seq(items) = node else {
                return Err(bad());
            };
            if *i > 4096 {
                return Err(bad());
            }
            while items.len() <= *i {
                items.push(Value::Null);
            }
            insert_path(&mut items[*i], tail, value, key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_metadata_flattening_round_trips() {
        let meta = Value::Map(vec![
            MapItem::Entry(
                "key_groups".into(),
                Value::Seq(vec![Value::Map(vec![MapItem::Entry(
                    "age".into(),
                    Value::Seq(vec![Value::Map(vec![
                        MapItem::Entry("recipient".into(), Value::Str("age1x".into())),
                        MapItem::Entry("enc".into(), Value::Str("a\nb\n".into())),
                    ])]),
                )])]),
            ),
            MapItem::Entry("lastmodified".into(), Value::Str("2024-01-01T00:00:00Z".into())),
        ]);
        let mut flat = Vec::new();
        flatten("", &meta, &mut flat);
        assert!(
            flat.iter()
                .any(|(k, _)| k == "key_groups__list_0__map_age__list_0__map_enc")
        );
        let back = unflatten(flat.into_iter().map(|(k, v)| (k, Value::Str(v))).collect()).unwrap();
        assert_eq!(back.get("lastmodified"), meta.get("lastmodified"));
        assert_eq!(back.get("key_groups"), meta.get("key_groups"));
    }
}
