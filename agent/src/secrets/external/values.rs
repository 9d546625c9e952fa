//! Pure value handling, as ESO does it: a `property` picked out of a JSON value (gjson paths),
//! decoding strategies, `dataFrom` key conversion and validation, the data hash ESO writes on
//! its Secrets, and the resource version that tells a changed ExternalSecret.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value as Json;
use sha3::Digest;
use zeroize::Zeroizing;

/// Secret bytes.
pub type Bytes = Zeroizing<Vec<u8>>;

/// `property` of a value: an exact top-level key wins (Vault's rule; also how AWS treats a key
/// with dots), else a gjson path. Strings come out unquoted; anything else as JSON text.
pub fn property(value: &[u8], property: &str, key: &str) -> Result<Bytes, String> {
    let text = std::str::from_utf8(value)
        .map_err(|_| format!("secret {key} is not UTF-8 text, so property {property} cannot be read"))?;
    let parsed: Json = serde_json::from_str(text)
        .map_err(|_| format!("secret {key} is not JSON, so property {property} cannot be read"))?;
    if let Some(v) = parsed.get(property) {
        return Ok(Zeroizing::new(json_text(v).into_bytes()));
    }
    let found = gjson::get(text, property);
    if !found.exists() {
        return Err(format!("key {property} does not exist in secret {key}"));
    }
    Ok(Zeroizing::new(found.str().to_owned().into_bytes()))
}

/// A JSON value as ESO puts it in a Secret: strings raw, the rest as JSON text.
pub fn json_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// A JSON object's entries (for `dataFrom.extract`).
pub fn object_entries(value: &[u8], key: &str) -> Result<Vec<(String, Bytes)>, String> {
    let parsed: Json = serde_json::from_slice(value)
        .map_err(|_| format!("secret {key} is not a JSON object, so it cannot be extracted"))?;
    let Json::Object(map) = parsed else {
        return Err(format!(
            "secret {key} is not a JSON object, so it cannot be extracted"
        ));
    };
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, Zeroizing::new(json_text(&v).into_bytes())))
        .collect())
}

/// Applies `decodingStrategy` (`None`, `Base64`, `Base64URL`, `Auto`).
pub fn decode(strategy: Option<&str>, value: Bytes, what: &str) -> Result<Bytes, String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    match strategy.unwrap_or("None") {
        "None" => Ok(value),
        "Base64" => STANDARD
            .decode(&*value)
            .map(Zeroizing::new)
            .map_err(|_| format!("{what}: decodingStrategy Base64, but the value is not base64")),
        "Base64URL" => URL_SAFE
            .decode(&*value)
            .map(Zeroizing::new)
            .map_err(|_| format!("{what}: decodingStrategy Base64URL, but the value is not base64url")),
        "Auto" => Ok(STANDARD
            .decode(&*value)
            .or_else(|_| URL_SAFE.decode(&*value))
            .map(Zeroizing::new)
            .unwrap_or(value)),
        other => Err(format!("{what}: unknown decodingStrategy {other:?}")),
    }
}

/// `conversionStrategy` of a `dataFrom` key: `Default` replaces what a Secret key may not hold
/// with `_`; `Unicode` with `_U<hex>_`.
pub fn convert_key(strategy: Option<&str>, key: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    match strategy.unwrap_or("Default") {
        "Default" => Ok(key.chars().map(|c| if ok(c) { c } else { '_' }).collect()),
        "Unicode" => Ok(key
            .chars()
            .map(|c| {
                if ok(c) {
                    c.to_string()
                } else {
                    format!("_U{:04x}_", u32::from(c))
                }
            })
            .collect()),
        other => Err(format!("unknown conversionStrategy {other:?}")),
    }
}

/// Whether a Secret key is valid (1–253 of `[-._a-zA-Z0-9]`).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// ESO's `reconcile.external-secrets.io/data-hash`: SHA3-224 of Go's `%+v` of the Secret's
/// `map[string][]byte` (`map[k:[1 2 3] ...]`, keys sorted), so an ESO taking over later sees no
/// change.
pub fn data_hash(data: &BTreeMap<String, Bytes>) -> String {
    let mut s = Zeroizing::new(String::from("map["));
    for (i, (k, v)) in data.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(k);
        s.push_str(":[");
        for (j, b) in v.iter().enumerate() {
            if j > 0 {
                s.push(' ');
            }
            s.push_str(&b.to_string());
        }
        s.push(']');
    }
    s.push(']');
    hex::encode(sha3::Sha3_224::digest(s.as_bytes()))
}

/// ESO's `syncedResourceVersion`: `<generation>-<hash of labels and annotations>`.
pub fn resource_version(
    generation: i64,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> String {
    let m = |x: &BTreeMap<String, String>| {
        let inner: Vec<String> = x.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("map[{}]", inner.join(" "))
    };
    let text = format!("{{annotations:{} labels:{}}}", m(annotations), m(labels));
    format!(
        "{generation}-{}",
        hex::encode(sha3::Sha3_224::digest(text.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn properties_as_eso_reads_them() {
        let v =
            br#"{"user":"admin","port":5432,"nested":{"a":{"b":"deep"}},"list":["x","y"],"dotted.key":"d"}"#;
        let p = |prop: &str| String::from_utf8(property(v, prop, "db").unwrap().to_vec()).unwrap();
        assert_eq!(p("user"), "admin");
        assert_eq!(p("port"), "5432");
        assert_eq!(p("nested.a.b"), "deep");
        assert_eq!(p("nested.a"), r#"{"b":"deep"}"#);
        assert_eq!(p("list.1"), "y");
        assert_eq!(p("dotted.key"), "d");
        let e = property(v, "nope", "db").unwrap_err();
        assert_eq!(e, "key nope does not exist in secret db");
        let e = property(b"plain-text-secret", "user", "db").unwrap_err();
        assert!(e.contains("not JSON") && !e.contains("plain-text"), "{e}");
    }

    #[test]
    fn decoding_and_keys() {
        let d = |s: &str, v: &str| decode(Some(s), Zeroizing::new(v.as_bytes().to_vec()), "x");
        assert_eq!(&*d("Base64", "aGk=").unwrap(), b"hi");
        assert_eq!(&*d("Auto", "aGk=").unwrap(), b"hi");
        assert_eq!(&*d("Auto", "not base64!").unwrap(), b"not base64!");
        assert!(d("Base64", "***").is_err());
        assert_eq!(convert_key(None, "team/db password").unwrap(), "team_db_password");
        assert_eq!(convert_key(Some("Unicode"), "a/b").unwrap(), "a_U002f_b");
        assert!(valid_key("a.b-c_1") && !valid_key("") && !valid_key("a/b"));
    }

    #[test]
    fn the_data_hash_is_esos() {
        // Go: fmt.Sprintf("%+v", map[string][]byte{"a": []byte("hi"), "b": {}}) == "map[a:[104 105] b:[]]"
        let data: BTreeMap<String, Bytes> = [
            ("b".to_owned(), Zeroizing::new(Vec::new())),
            ("a".to_owned(), Zeroizing::new(b"hi".to_vec())),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            data_hash(&data),
            hex::encode(sha3::Sha3_224::digest(b"map[a:[104 105] b:[]]"))
        );
    }
}
