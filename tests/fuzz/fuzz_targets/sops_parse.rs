//! Arbitrary bytes through every SOPS store, the metadata parser, key unwrapping and the tree
//! walk: errors are fine, panics are not.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lockstep_formats::sops::{self, DecryptOptions, Format, Identities};

fn identities() -> &'static Identities {
    static IDS: OnceLock<Identities> = OnceLock::new();
    IDS.get_or_init(|| {
        let (secret, _) = sops::keys::generate_identity();
        let mut ids = Identities::new();
        let _ = ids.add_text("fuzz", &secret);
        ids
    })
}

fuzz_target!(|data: &[u8]| {
    for format in [Format::Yaml, Format::Json, Format::Dotenv, Format::Binary] {
        let _ = sops::decrypt("fuzz", data, format, identities(), DecryptOptions::default());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let mut ids = Identities::new();
        let _ = ids.add_text("fuzz", text);
    }
});
