//! The `sops` metadata block: parsed from and written to the document tree.

use crate::error::{Error, Result};
use crate::tree::{MapItem, Value, get};

use super::rules::{DEFAULT_UNENCRYPTED_SUFFIX, RULE_FIELDS, Rule};

/// The sops version we write. It must be full semver: the real sops refuses files whose
/// `version` does not parse. Our output follows the 3.11 layout.
pub const FORMAT_VERSION: &str = "3.11.0";

/// Master-key list names other than `age`, kept verbatim so that re-writing a file does not
/// drop them.
const OTHER_KEY_TYPES: [&str; 6] = ["kms", "gcp_kms", "hckms", "azure_kv", "hc_vault", "pgp"];

/// One age recipient entry: the recipient and the armoured age file holding the data key
/// (or this group's Shamir share).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeEntry {
    /// `age1...` recipient.
    pub recipient: String,
    /// Armoured age ciphertext.
    pub enc: String,
}

/// A key group: every key in it wraps the same secret (data key or share).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyGroup {
    /// age entries.
    pub age: Vec<AgeEntry>,
    /// Other master keys (`kms`, `pgp`, ...), kept as they were.
    pub other: Vec<(String, Value)>,
}

impl KeyGroup {
    /// The non-age master keys, each by its type's name and its public identifier:
    /// `PGP key FBC7B9E2…`, `AWS KMS key arn:aws:kms:…`, `Vault transit key https://…/keys/k`.
    pub fn describe_others(&self) -> Vec<String> {
        let field = |v: &Value, name: &str| match v.get(name) {
            Some(Value::Str(s)) => s.trim().to_owned(),
            _ => String::new(),
        };
        let mut out = Vec::new();
        for (kind, v) in &self.other {
            let entries: Vec<&Value> = match v {
                Value::Seq(s) => s.iter().filter(|e| !matches!(e, Value::Comment(_))).collect(),
                other => vec![other],
            };
            for e in entries {
                out.push(match kind.as_str() {
                    "pgp" => format!("PGP key {}", field(e, "fp")),
                    "kms" => format!("AWS KMS key {}", field(e, "arn")),
                    "gcp_kms" => format!("GCP KMS key {}", field(e, "resource_id")),
                    "azure_kv" => format!(
                        "Azure Key Vault key {}/keys/{}",
                        field(e, "vault_url").trim_end_matches('/'),
                        field(e, "name")
                    ),
                    "hc_vault" => format!(
                        "Vault transit key {}/v1/{}/keys/{}",
                        field(e, "vault_address").trim_end_matches('/'),
                        field(e, "engine_path"),
                        field(e, "key_name")
                    ),
                    "hckms" => format!("Huawei Cloud KMS key {}", field(e, "key_id")),
                    other => format!("{other} key"),
                });
            }
        }
        out
    }

    /// Number of non-age master keys.
    pub fn other_count(&self) -> usize {
        self.other
            .iter()
            .map(|(_, v)| if let Value::Seq(s) = v { s.len() } else { 1 })
            .sum()
    }
}

/// Parsed metadata of a SOPS file.
#[derive(Clone, Debug)]
pub struct Metadata {
    /// Key groups (one when the file has no `key_groups`).
    pub key_groups: Vec<KeyGroup>,
    /// `shamir_threshold`, when there are several groups.
    pub shamir_threshold: Option<usize>,
    /// The encryption rule as stored (`None`: the default suffix rule).
    pub rule: Option<Rule>,
    /// `mac_only_encrypted`.
    pub mac_only_encrypted: bool,
    /// `lastmodified` normalised to RFC 3339 as sops re-formats it for the MAC's AAD.
    pub lastmodified: String,
    /// The encrypted MAC.
    pub mac: String,
    /// The sops version that wrote the file.
    pub version: String,
}

impl Metadata {
    /// The rule in force (the stored one, or the default `_unencrypted` suffix).
    pub fn effective_rule(&self) -> Rule {
        self.rule.clone().unwrap_or_default()
    }

    /// Reads metadata from the `sops` mapping.
    pub fn from_value(v: &Value) -> Result<Self> {
        let Value::Map(items) = v else {
            return Err(meta_err("sops", "must be a mapping"));
        };
        let str_field = |name: &str| -> Result<Option<String>> {
            match get(items, name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Str(s)) | Some(Value::Time(s)) => Ok(Some(s.clone())),
                Some(Value::Int(i)) => Ok(Some(i.to_string())),
                Some(Value::Float(f)) => Ok(Some(crate::yaml::format_float_g(*f))),
                Some(Value::Bool(b)) => Ok(Some(b.to_string())),
                Some(_) => Err(meta_err(name, "must be a string")),
            }
        };
        let rule_values: Vec<(&str, String)> = RULE_FIELDS
            .iter()
            .map(|f| Ok((*f, str_field(f)?.unwrap_or_default())))
            .collect::<Result<_>>()?;
        let rule = Rule::from_fields(rule_values.iter().map(|(f, v)| (*f, v.as_str())))?;

        let key_groups = match get(items, "key_groups") {
            Some(Value::Seq(groups)) if !groups.is_empty() => groups
                .iter()
                .filter(|g| !matches!(g, Value::Comment(_)))
                .enumerate()
                .map(|(i, g)| match g {
                    Value::Map(gi) => parse_group(gi, &format!("key_groups[{i}].")),
                    _ => Err(meta_err(&format!("key_groups[{i}]"), "must be a mapping")),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => vec![parse_group(items, "")?],
        };
        if key_groups
            .iter()
            .all(|g| g.age.is_empty() && g.other_count() == 0)
        {
            return Err(meta_err(
                "age",
                "no master keys found in the file (expected age recipients)",
            ));
        }
        let shamir_threshold = match str_field("shamir_threshold")? {
            None => None,
            Some(s) => Some(
                s.parse::<usize>()
                    .map_err(|_| meta_err("shamir_threshold", "must be an integer"))?,
            ),
        };
        let mac_only_encrypted = match str_field("mac_only_encrypted")?.as_deref() {
            None | Some("false") | Some("False") => false,
            Some("true") | Some("True") => true,
            Some(_) => return Err(meta_err("mac_only_encrypted", "must be true or false")),
        };
        let raw_lm = str_field("lastmodified")?.ok_or_else(|| meta_err("lastmodified", "is missing"))?;
        let lastmodified = normalize_rfc3339(&raw_lm)
            .ok_or_else(|| meta_err("lastmodified", "is not an RFC 3339 timestamp"))?;
        let mac = str_field("mac")?.unwrap_or_default();
        let version = str_field("version")?.unwrap_or_default();
        Ok(Metadata {
            key_groups,
            shamir_threshold,
            rule,
            mac_only_encrypted,
            lastmodified,
            mac,
            version,
        })
    }

    /// Writes metadata as a mapping, in the field order of sops 3.11.
    pub fn to_value(&self) -> Value {
        let mut items = Vec::new();
        let mut put = |k: &str, v: Value| items.push(MapItem::Entry(k.to_owned(), v));
        if self.key_groups.len() > 1 {
            put("shamir_threshold", Value::Int(self.threshold() as i64));
            put(
                "key_groups",
                Value::Seq(
                    self.key_groups
                        .iter()
                        .map(|g| Value::Map(group_items(g)))
                        .collect(),
                ),
            );
        } else if let Some(g) = self.key_groups.first() {
            for item in group_items(g) {
                if let MapItem::Entry(k, v) = item {
                    put(&k, v);
                }
            }
        }
        put("lastmodified", Value::Str(self.lastmodified.clone()));
        put("mac", Value::Str(self.mac.clone()));
        let (field, value) = match &self.rule {
            Some(r) => r.field(),
            None => ("unencrypted_suffix", DEFAULT_UNENCRYPTED_SUFFIX),
        };
        put(field, Value::Str(value.to_owned()));
        if self.mac_only_encrypted {
            put("mac_only_encrypted", Value::Bool(true));
        }
        put("version", Value::Str(self.version.clone()));
        // Keep `pgp` where sops puts it (after `mac`) by re-ordering once.
        if let Some(pos) = items
            .iter()
            .position(|i| matches!(i, MapItem::Entry(k, _) if k == "pgp"))
        {
            let pgp = items.remove(pos);
            let mac_pos = items
                .iter()
                .position(|i| matches!(i, MapItem::Entry(k, _) if k == "mac"))
                .map_or(items.len(), |p| p + 1);
            items.insert(mac_pos, pgp);
        }
        Value::Map(items)
    }

    /// The number of groups needed to rebuild the data key.
    pub fn threshold(&self) -> usize {
        match self.shamir_threshold {
            Some(t) if t > 0 => t.min(self.key_groups.len()),
            _ => self.key_groups.len(),
        }
    }

    /// Number of age entries across all groups.
    pub fn age_entry_count(&self) -> usize {
        self.key_groups.iter().map(|g| g.age.len()).sum()
    }
}

fn group_items(g: &KeyGroup) -> Vec<MapItem> {
    let mut items = Vec::new();
    let mut others = g.other.clone();
    for name in ["kms", "gcp_kms", "hckms", "azure_kv", "hc_vault"] {
        if let Some(pos) = others.iter().position(|(k, _)| k == name) {
            let (k, v) = others.remove(pos);
            items.push(MapItem::Entry(k, v));
        }
    }
    if !g.age.is_empty() {
        items.push(MapItem::Entry(
            "age".into(),
            Value::Seq(
                g.age
                    .iter()
                    .map(|a| {
                        Value::Map(vec![
                            MapItem::Entry("recipient".into(), Value::Str(a.recipient.clone())),
                            MapItem::Entry("enc".into(), Value::Str(a.enc.clone())),
                        ])
                    })
                    .collect(),
            ),
        ));
    }
    items.extend(others.into_iter().map(|(k, v)| MapItem::Entry(k, v)));
    items
}

fn parse_group(items: &[MapItem], prefix: &str) -> Result<KeyGroup> {
    let mut g = KeyGroup::default();
    if let Some(v) = get(items, "age") {
        let entries = match v {
            Value::Seq(s) => s.as_slice(),
            Value::Null => &[],
            _ => return Err(meta_err(&format!("{prefix}age"), "must be a list")),
        };
        for (i, e) in entries
            .iter()
            .filter(|e| !matches!(e, Value::Comment(_)))
            .enumerate()
        {
            let field = |name: &str| match e.get(name) {
                Some(Value::Str(s)) => Ok(s.clone()),
                _ => Err(meta_err(
                    &format!("{prefix}age[{i}].{name}"),
                    "is missing or not a string",
                )),
            };
            g.age.push(AgeEntry {
                recipient: field("recipient")?.trim().to_owned(),
                enc: field("enc")?,
            });
        }
    }
    for name in OTHER_KEY_TYPES {
        if let Some(v) = get(items, name)
            && !matches!(v, Value::Null)
            && !matches!(v, Value::Seq(s) if s.is_empty())
        {
            g.other.push((name.to_owned(), v.clone()));
        }
    }
    Ok(g)
}

fn meta_err(field: &str, message: &str) -> Error {
    Error::Metadata {
        field: field.into(),
        message: message.into(),
    }
}

/// Go's `time.Parse(time.RFC3339, s)` followed by `Format(time.RFC3339)`: fractional seconds
/// dropped, a zero offset written `Z`.
pub fn normalize_rfc3339(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let zone = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => "Z".to_string(),
        b'+' | b'-'
            if b.len() == i + 6 && digits(i + 1..i + 3) && b[i + 3] == b':' && digits(i + 4..i + 6) =>
        {
            let z = &s[i..];
            if &z[1..] == "00:00" {
                "Z".to_string()
            } else {
                z.to_string()
            }
        }
        _ => return None,
    };
    // Validate the calendar fields through the YAML timestamp parser.
    crate::yaml::parse_timestamp(&format!("{}Z", &s[..19]))?;
    Some(format!("{}T{}{}", &s[..10], &s[11..19], zone))
}
