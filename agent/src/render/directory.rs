//! Plain directories: every `.yaml`, `.yml` and `.json` file under the Sync's path (dotfiles
//! such as `.sops.yaml` aside), several documents per file.

use std::collections::BTreeMap;

use lockstep_formats::sops::{self, Format, stores::to_json};
use lockstep_formats::tree::{MapItem, Value};
use lockstep_formats::yaml;

use super::{Document, Error, Manifest, Renderer, check_object, origin};

/// Plain YAML/JSON directories.
#[derive(Clone, Copy, Debug, Default)]
pub struct Directory;

impl Renderer for Directory {
    fn render(&self, files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<Document>, Error> {
        let mut out = Vec::new();
        for (file, bytes) in files {
            let base = file.rsplit('/').next().unwrap_or(file);
            let format = match base.rsplit_once('.').map(|(_, e)| e) {
                Some("yaml" | "yml") => Format::Yaml,
                Some("json") => Format::Json,
                _ => continue,
            };
            // Dotfiles (`.sops.yaml`, CI configuration) are not manifests.
            if base.starts_with('.') {
                continue;
            }
            let text = std::str::from_utf8(bytes).map_err(|_| Error::Object {
                origin: file.clone(),
                message: "not UTF-8 text".into(),
            })?;
            let docs = yaml::load_documents(text).map_err(|e| e.in_file(file.clone()))?;
            if docs
                .iter()
                .any(|d| matches!(d, Value::Map(items) if sops::is_encrypted_document(items)))
            {
                out.push(Document::Sops {
                    file: file.clone(),
                    format,
                });
                continue;
            }
            for (i, doc) in docs.iter().enumerate() {
                let origin = origin(file, i, docs.len());
                match doc {
                    Value::Map(items) if items.iter().any(|i| matches!(i, MapItem::Entry(..))) => {
                        let object = to_json(doc)?;
                        check_object(&origin, &object)?;
                        out.push(Document::Object(Manifest::plain(origin, object)));
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
        }
        Ok(out)
    }
}
