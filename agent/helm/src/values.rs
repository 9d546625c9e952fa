//! Values files as Helm is given them: plain YAML as it is; a SOPS-encrypted one (helm-secrets'
//! `secrets.yaml`, `*.sops.yaml`, or any file with SOPS metadata) decrypted in memory with its
//! MAC verified, its values then to be redacted from whatever Helm says.

use lockstep_formats::secret::SecretJson;
use lockstep_formats::sops::{DecryptOptions, Format, Identities, stores};
use zeroize::Zeroizing;

use crate::{Error, Result, Values, secret_strings};

/// Whether `bytes` (a values file) carry SOPS metadata.
pub fn is_sops(file: &str, bytes: &[u8]) -> Result<bool> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::ValuesFile {
        file: file.to_owned(),
        message: "a values file that is not UTF-8 text".into(),
    })?;
    let docs = lockstep_formats::yaml::load_documents(text).map_err(|e| Error::Sops(e.in_file(file)))?;
    Ok(docs.iter().any(|d| match d {
        lockstep_formats::tree::Value::Map(items) => lockstep_formats::sops::is_encrypted_document(items),
        _ => false,
    }))
}

/// The values file `file` for Helm: decrypted with `ids` when it is a SOPS file (its strings
/// added to `redact`); `ids` `None` and a SOPS file is an error saying what to configure
/// (`needs_keys`).
pub fn file(
    file: &str,
    bytes: &[u8],
    ids: Option<&Identities>,
    needs_keys: &str,
    redact: &mut Vec<Zeroizing<String>>,
) -> Result<Values> {
    if !is_sops(file, bytes)? {
        return Ok(Values::Document {
            name: file.to_owned(),
            bytes: Zeroizing::new(bytes.to_vec()),
            target_path: None,
        });
    }
    let ids = ids.ok_or_else(|| Error::ValuesFile {
        file: file.to_owned(),
        message: format!("a SOPS-encrypted values file, but {needs_keys}"),
    })?;
    let format = if file.ends_with(".json") {
        Format::Json
    } else {
        Format::Yaml
    };
    let decrypted = lockstep_formats::sops::decrypt(file, bytes, format, ids, DecryptOptions::default())
        .map_err(Error::Sops)?;
    for doc in decrypted.documents() {
        let json = SecretJson::new(stores::branch_to_json(doc).map_err(|e| Error::Sops(e.in_file(file)))?);
        redact.extend(secret_strings(&json));
    }
    let plain = decrypted
        .to_bytes(Some(Format::Yaml))
        .map_err(|e| Error::Sops(e.in_file(file)))?;
    Ok(Values::Document {
        name: file.to_owned(),
        bytes: Zeroizing::new(plain.expose().to_vec()),
        target_path: None,
    })
}

/// Adds a values document's strings to `redact`: the whole text when it is set at a target
/// path, else every leaf of its YAML (a `valuesFrom` Secret).
pub fn redact_document(bytes: &[u8], whole: bool, redact: &mut Vec<Zeroizing<String>>) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if whole {
        redact.push(Zeroizing::new(text.to_owned()));
        return;
    }
    if let Ok(docs) = lockstep_formats::yaml::load_documents(text) {
        for d in &docs {
            if let Ok(json) = stores::to_json(d) {
                redact.extend(secret_strings(&SecretJson::new(json)));
            }
        }
    }
}

/// Whether any string of `o` contains one of `secrets`.
pub fn holds_any(o: &serde_json::Value, secrets: &[Zeroizing<String>]) -> bool {
    use serde_json::Value as Json;
    if secrets.is_empty() {
        return false;
    }
    let mut stack = vec![o];
    while let Some(v) = stack.pop() {
        match v {
            Json::String(s) if secrets.iter().any(|x| !x.is_empty() && s.contains(x.as_str())) => {
                return true;
            }
            Json::Array(a) => stack.extend(a),
            Json::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_object_holding_a_secret_value_is_found() {
        let o = serde_json::json!({"spec": {"env": [{"value": "x-CANARY-y"}]}});
        assert!(holds_any(&o, &[Zeroizing::new("CANARY".into())]));
        assert!(!holds_any(&o, &[Zeroizing::new("other".into())]));
        assert!(!holds_any(&o, &[]));
    }

    #[test]
    fn a_plain_values_file_is_passed_as_it_is_and_a_sops_one_needs_keys() {
        let mut redact = Vec::new();
        let v = file("v.yaml", b"a: 1\n", None, "no keys", &mut redact).unwrap();
        assert!(matches!(v, Values::Document { .. }));
        let sops = b"a: ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]\nsops:\n  mac: ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]\n  version: 3.9.0\n";
        let e = file(
            "secrets.yaml",
            sops,
            None,
            "set spec.decryption.sops",
            &mut redact,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "secrets.yaml: a SOPS-encrypted values file, but set spec.decryption.sops"
        );
    }
}
