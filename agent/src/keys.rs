//! Decryption keys the agent holds: age identities from Kubernetes Secrets.

use lockstep_formats::sops::Identities;

/// Loads age identities from a decryption Secret's data: every `*.agekey` entry, parsed line by
/// line (an unsupported key type is noted, not fatal).
pub fn identities_from_secret<'a>(
    secret_name: &str,
    data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> lockstep_formats::Result<Identities> {
    let mut ids = Identities::new();
    ids.add_agekey_entries(secret_name, data)?;
    Ok(ids)
}
