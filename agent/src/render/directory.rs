//! Plain files ([`lockstep_kustomize::plain`]): objects become manifests; a SOPS file is left
//! whole, in ciphertext, for the secrets step.

use lockstep_kustomize::plain::{Plain, plain};

use super::{Document, Error, Manifest};

/// The documents of one plain file (`file`: repository-relative), appended to `out`; files that
/// are not YAML or JSON manifests are skipped.
pub fn file(file: &str, bytes: &[u8], out: &mut Vec<Document>) -> Result<(), Error> {
    match plain(file, bytes)? {
        Plain::Skipped => {}
        Plain::Sops(format) => out.push(Document::Sops {
            file: file.to_owned(),
            format,
        }),
        Plain::Objects(objects) => out.extend(
            objects
                .into_iter()
                .map(|(origin, object)| Document::Object(Manifest::plain(origin, object))),
        ),
    }
    Ok(())
}
