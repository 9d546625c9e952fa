//! Arbitrary SealedSecrets (any JSON/YAML, any ciphertext bytes) through the unsealer: errors
//! are fine, panics are not.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lockstep_formats::sealed::{self, KeyRing, UnsealingKey};

fn ring() -> &'static (KeyRing, String) {
    static R: OnceLock<(KeyRing, String)> = OnceLock::new();
    R.get_or_init(|| {
        let (key, _) = sealed::generate_key_pair(2048, "fuzz", 1).expect("keygen");
        let mut ring = KeyRing::new();
        ring.push(UnsealingKey::from_pem("fuzz", &key).expect("key"));
        (ring, key.to_string())
    })
}

fuzz_target!(|data: &[u8]| {
    let (ring, _) = ring();
    let _ = sealed::hybrid_decrypt(&ring.keys()[0], data, b"ns/name");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(docs) = lockstep_formats::yaml::load_documents(text) {
            for d in docs {
                if let Ok(v) = lockstep_formats::sops::stores::to_json(&d) {
                    let _ = sealed::unseal(&v, ring);
                    let _ = sealed::object::opening_key(&v, ring);
                }
            }
        }
        let mut r = KeyRing::new();
        let _ = r.add_file_contents("fuzz", text);
    }
});
