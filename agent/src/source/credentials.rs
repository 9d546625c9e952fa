//! Repository credentials, from a Secret's entries as Flux takes them (pure).

use std::collections::BTreeMap;

use zeroize::{Zeroize, Zeroizing};

/// Credentials for a repository, from the Sync's `spec.source.secretRef` (Flux's keys:
/// `username` + `password`, or `bearerToken`). Values are wiped on drop and never printed.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Anonymous.
    #[default]
    None,
    /// HTTP basic authentication (also a token as the password, as GitHub and GitLab take it).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: Zeroizing<String>,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Zeroizing<String>),
    /// An SSH private key (`identity`, optionally protected by `password`) and the host keys
    /// to trust (`known_hosts`), as Flux takes them.
    Ssh {
        /// The private key, OpenSSH or PEM.
        identity: Zeroizing<Vec<u8>>,
        /// The key's passphrase, if it has one.
        passphrase: Option<Zeroizing<String>>,
        /// `known_hosts` lines; host keys are always checked.
        known_hosts: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Basic { .. } => "Basic(<redacted>)",
            Credentials::Bearer(_) => "Bearer(<redacted>)",
            Credentials::Ssh { .. } => "Ssh(<redacted>)",
        })
    }
}

/// A credentials Secret that cannot be used; names the Secret and entry, never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An entry that must be text is not UTF-8.
    #[error("spec.source.secretRef: secret {secret}: entry {entry} is not UTF-8 text")]
    NotText {
        /// `namespace/name`.
        secret: String,
        /// The entry.
        entry: &'static str,
    },
    /// An SSH identity without the host keys to check.
    #[error(
        "spec.source.secretRef: secret {secret}: an ssh identity needs a known_hosts entry (host keys are always verified)"
    )]
    NoKnownHosts {
        /// `namespace/name`.
        secret: String,
    },
    /// No recognised combination of entries.
    #[error(
        "spec.source.secretRef: secret {secret}: expected username and password, or bearerToken (and optionally ca.crt), or identity and known_hosts (and optionally password)"
    )]
    Unrecognised {
        /// `namespace/name`.
        secret: String,
    },
}

/// Repository credentials from a Secret's entries (Flux's keys): `username` + `password`, or
/// `bearerToken`; or `identity` + `known_hosts` (+ `password`, the key's passphrase); and
/// `ca.crt`, a private CA. Every entry is wiped once read.
pub fn credentials_from(
    secret: &str,
    mut data: BTreeMap<String, k8s_openapi::ByteString>,
) -> Result<(Credentials, Option<Vec<u8>>), Error> {
    let ca = data.remove("ca.crt").map(|b| b.0);
    let mut take = |k: &'static str| -> Result<Option<Zeroizing<String>>, Error> {
        match data.remove(k) {
            None => Ok(None),
            Some(mut b) => {
                let s = String::from_utf8(std::mem::take(&mut b.0)).map_err(|e| {
                    e.into_bytes().zeroize();
                    Error::NotText {
                        secret: secret.to_owned(),
                        entry: k,
                    }
                })?;
                Ok(Some(Zeroizing::new(s)))
            }
        }
    };
    let username = take("username")?;
    let password = take("password")?;
    let bearer = take("bearerToken")?;
    // `sshPrivateKey`: Argo CD's repository Secrets.
    let identity = data
        .remove("identity")
        .or_else(|| data.remove("sshPrivateKey"))
        .map(|mut b| Zeroizing::new(std::mem::take(&mut b.0)));
    let known_hosts = data
        .remove("known_hosts")
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    data.values_mut().for_each(|v| v.0.zeroize());
    let creds = match (username, password, bearer, identity) {
        (None, password, None, Some(identity)) => match known_hosts {
            Some(known_hosts) => Credentials::Ssh {
                identity,
                passphrase: password,
                known_hosts,
            },
            None => {
                return Err(Error::NoKnownHosts {
                    secret: secret.to_owned(),
                });
            }
        },
        (Some(u), Some(p), None, None) => Credentials::Basic {
            username: u.to_string(),
            password: p,
        },
        (None, None, Some(t), None) => Credentials::Bearer(t),
        (None, None, None, None) if ca.is_some() => Credentials::None,
        _ => {
            return Err(Error::Unrecognised {
                secret: secret.to_owned(),
            });
        }
    };
    Ok((creds, ca))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entries(pairs: &[(&str, &[u8])]) -> BTreeMap<String, k8s_openapi::ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.to_vec())))
            .collect()
    }

    #[test]
    fn flux_keys_make_credentials_and_bad_ones_are_named_without_values() {
        let (c, ca) = credentials_from(
            "ns/git",
            entries(&[("username", b"u"), ("password", b"CANARY-pw")]),
        )
        .unwrap();
        assert!(matches!(c, Credentials::Basic { .. }) && ca.is_none());
        assert_eq!(format!("{c:?}"), "Basic(<redacted>)");
        let (c, _) = credentials_from("ns/git", entries(&[("bearerToken", b"t")])).unwrap();
        assert!(matches!(c, Credentials::Bearer(_)));
        let (c, ca) = credentials_from("ns/git", entries(&[("ca.crt", b"PEM")])).unwrap();
        assert!(matches!(c, Credentials::None) && ca.as_deref() == Some(&b"PEM"[..]));
        let (c, _) = credentials_from(
            "ns/git",
            entries(&[("identity", b"KEY"), ("known_hosts", b"h k"), ("password", b"p")]),
        )
        .unwrap();
        assert!(matches!(
            c,
            Credentials::Ssh {
                passphrase: Some(_),
                ..
            }
        ));
        let e = credentials_from("ns/git", entries(&[("identity", b"KEY")])).unwrap_err();
        assert_eq!(
            e,
            Error::NoKnownHosts {
                secret: "ns/git".into()
            }
        );
        assert!(e.to_string().contains("known_hosts") && e.to_string().contains("ns/git"));
        let e = credentials_from("ns/git", entries(&[("password", b"\xff")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.source.secretRef: secret ns/git: entry password is not UTF-8 text"
        );
        let e = credentials_from("ns/git", entries(&[("username", b"CANARY-only")])).unwrap_err();
        assert!(!e.to_string().contains("CANARY"), "{e}");
    }
}
