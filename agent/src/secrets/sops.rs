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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_agekey_entries_are_read_and_unsupported_keys_are_named() {
        let (secret, public) = lockstep_formats::sops::keys::generate_identity();
        let pq = "AGE-SECRET-KEY-PQ-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQS";
        let both = format!("# comment\n{pq}\n{}\n", secret.as_str());
        let data: Vec<(&str, &[u8])> = vec![
            ("age.agekey", both.as_bytes()),
            ("keys.txt", b"not read: the name does not end in .agekey"),
            ("other.agekey", b""),
        ];
        let ids = identities_from_secret("flux-system/sops-age", data).unwrap();
        assert_eq!(ids.recipients(), vec![public]);
        assert_eq!(ids.skipped().len(), 1);
        assert!(
            ids.skipped()[0]
                .contains("secret flux-system/sops-age key age.agekey line 2: unsupported key type")
        );
        assert!(!ids.skipped()[0].contains(secret.as_str()));
    }

    #[test]
    fn a_broken_agekey_entry_names_the_secret_key_and_line() {
        let data: Vec<(&str, &[u8])> = vec![("team.agekey", b"\n\nAGE-SECRET-KEY-1NOTVALID\n")];
        let err = identities_from_secret("ns/keys", data).unwrap_err().to_string();
        assert_eq!(
            err,
            "secret ns/keys key team.agekey line 3: invalid AGE-SECRET-KEY-1 identity (bad checksum or length)"
        );
    }
}
