//! YAML loading and re-emitting: no panic, and what is emitted loads again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_formats::yaml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(docs) = yaml::load_documents(text) else { return };
    if let Ok(out) = yaml::emit_documents(&docs) {
        assert!(yaml::load_documents(&out).is_ok(), "emitted YAML must load again");
    }
});
