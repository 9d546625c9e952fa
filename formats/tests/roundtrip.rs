//! Property tests: encrypt→decrypt round-trips arbitrary YAML trees, and no input makes the
//! parsers panic.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use lockstep_formats::sops::{self, DecryptOptions, EncryptOptions, Format, Identities, Rule};
use lockstep_formats::tree::{MapItem, Value};
use lockstep_formats::yaml;
use proptest::prelude::*;

fn identity() -> &'static (Identities, String) {
    static ID: OnceLock<(Identities, String)> = OnceLock::new();
    ID.get_or_init(|| {
        let (secret, public) = sops::keys::generate_identity();
        let mut ids = Identities::new();
        ids.add_text("test", &secret).unwrap();
        (ids, public)
    })
}

fn scalar() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        any::<String>().prop_map(Value::Str),
        "[ -~]{0,12}".prop_map(Value::Str),
        prop_oneof![
            Just("yes"),
            Just("0x1F"),
            Just("017"),
            Just("1_000"),
            Just("2024-01-01"),
            Just("~"),
            Just("")
        ]
        .prop_map(|s| Value::Str(s.to_string())),
        any::<i64>().prop_map(Value::Int),
        // Whole floats are written like Go writes them (`1`) and read back as ints, as with sops.
        any::<f64>()
            .prop_filter("finite, fractional", |f| f.is_finite() && f.fract() != 0.0)
            .prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_]{1,8}", any::<String>(), "[ -~]{0,6}"]
}

fn comment() -> impl Strategy<Value = String> {
    "\\PC{0,16}".prop_map(|s| format!(" {s}"))
}

fn tree() -> impl Strategy<Value = Value> + Clone {
    scalar().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(
                prop_oneof![inner.clone(), comment().prop_map(Value::Comment)],
                0..5
            )
            .prop_map(|items| {
                // A list of comments alone has no YAML form (it loads as an empty list).
                if items.iter().all(|i| matches!(i, Value::Comment(_))) {
                    Value::Seq(Vec::new())
                } else {
                    Value::Seq(items)
                }
            }),
            map_of(inner),
        ]
    })
}

fn map_of(inner: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Value> + Clone {
    prop::collection::vec(
        prop_oneof![
            (key(), inner).prop_map(|(k, v)| MapItem::Entry(k, v)),
            comment().prop_map(MapItem::Comment),
        ],
        0..5,
    )
    .prop_map(|items| {
        let mut seen = std::collections::HashSet::new();
        Value::Map(
            items
                .into_iter()
                .filter(|i| match i {
                    MapItem::Entry(k, _) => k != "sops" && seen.insert(k.clone()),
                    MapItem::Comment(_) => true,
                })
                .collect(),
        )
    })
}

fn document() -> impl Strategy<Value = Value> {
    map_of(tree())
}

/// Nested mappings of comments alone are empty mappings, as a YAML reader sees them.
fn no_comment_only_maps(v: Value, top: bool) -> Value {
    match v {
        Value::Map(items) if !top && items.iter().all(|i| matches!(i, MapItem::Comment(_))) => {
            Value::Map(Vec::new())
        }
        Value::Map(items) => Value::Map(
            items
                .into_iter()
                .map(|i| match i {
                    MapItem::Entry(k, v) => MapItem::Entry(k, no_comment_only_maps(v, false)),
                    c => c,
                })
                .collect(),
        ),
        Value::Seq(items) => Value::Seq(
            items
                .into_iter()
                .map(|v| no_comment_only_maps(v, false))
                .collect(),
        ),
        other => other,
    }
}

fn rule() -> impl Strategy<Value = Option<Rule>> {
    prop_oneof![
        Just(None),
        Just(Some(Rule::from_field("encrypted_regex", "^[a-m]").unwrap())),
        Just(Some(Rule::from_field("unencrypted_suffix", "_").unwrap())),
        // Comments here start with a space; an encrypted one starts with `ENC[` and never matches.
        Just(Some(
            Rule::from_field("unencrypted_comment_regex", "^ [p-z]").unwrap()
        )),
        Just(Some(
            Rule::from_field("encrypted_comment_regex", "[aeiou]").unwrap()
        )),
    ]
}

proptest! {
    // 256 cases by default; PROPTEST_CASES raises it for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn encrypt_then_decrypt_gives_back_the_tree(doc in document(), rule in rule(), mac_only in any::<bool>()) {
        let doc = no_comment_only_maps(doc, true);
        let (ids, recipient) = identity();
        let plain = yaml::emit_documents(std::slice::from_ref(&doc)).unwrap();
        let expected = yaml::load_documents(&plain).unwrap();
        let opts = EncryptOptions {
            key_groups: vec![vec![recipient.clone()]],
            rule,
            mac_only_encrypted: mac_only,
            ..EncryptOptions::default()
        };
        let enc = sops::encrypt("prop.yaml", plain.as_bytes(), Format::Yaml, &opts).unwrap();
        let dec = sops::decrypt("prop.yaml", enc.as_bytes(), Format::Yaml, ids, DecryptOptions::default())
            .map_err(|e| TestCaseError::fail(format!("{e}\nplain:\n{plain}\nencrypted:\n{enc}")))?;
        let out = dec.to_bytes(None).unwrap();
        let got = yaml::load_documents(out.expose_str().unwrap()).unwrap();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn emitted_yaml_reloads_to_the_same_strings(doc in document()) {
        let doc = no_comment_only_maps(doc, true);
        // Emit → load → emit is a fixed point (floats and ints may change type once, like sops).
        let once = yaml::emit_documents(std::slice::from_ref(&doc)).unwrap();
        let loaded = yaml::load_documents(&once).unwrap();
        let twice = yaml::emit_documents(&loaded).unwrap();
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (ids, _) = identity();
        for f in [Format::Yaml, Format::Json, Format::Dotenv, Format::Binary] {
            let _ = sops::decrypt("fuzz", &bytes, f, ids, DecryptOptions::default());
        }
    }

    #[test]
    fn mutated_sops_files_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        static FILE: OnceLock<String> = OnceLock::new();
        let (ids, recipient) = identity();
        let file = FILE.get_or_init(|| {
            let opts = EncryptOptions { key_groups: vec![vec![recipient.clone()]], ..EncryptOptions::default() };
            sops::encrypt("m.yaml", b"a: 1\nb: [x, {c: true}]\n# note\nd: 2024-01-01\n", Format::Yaml, &opts).unwrap()
        });
        let mut bytes = file.as_bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let _ = sops::decrypt("m.yaml", &bytes, Format::Yaml, ids, DecryptOptions::default());
    }
}
