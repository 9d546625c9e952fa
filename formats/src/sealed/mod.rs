//! Bitnami Sealed Secrets, byte-compatible with `bitnami-labs/sealed-secrets`.
//!
//! One encrypted value is `u16be(len(k)) ‖ k ‖ AES-256-GCM(session key, zero nonce, no AAD)`,
//! where `k` is the 32-byte session key under RSA-OAEP (SHA-256, MGF1-SHA-256) with the scope's
//! label as the OAEP label: `namespace/name` (strict), `namespace` (namespace-wide) or empty
//! (cluster-wide).
//!
//! * Sealing needs only a certificate and uses the pure-Rust `rsa` crate (public-key work: no
//!   secret is involved, so no timing side channel).
//! * Unsealing uses **aws-lc-rs**, whose RSA decryption is constant time; the `rsa` crate is
//!   still flagged for the Marvin attack (RUSTSEC-2023-0071) and never touches a private key
//!   here except to convert a PKCS#1 file to PKCS#8.

pub mod keys;
pub mod object;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use zeroize::Zeroizing;

pub use keys::{KeyRing, SealingCert, UnsealingKey, generate_key_pair, key_secret};
pub use object::{SealOptions, SealedSecret, reseal, seal_secret, unseal, verify};

use crate::error::{Error, Result};
use crate::secret::SecretBytes;

/// Annotation that makes a SealedSecret namespace-wide.
pub const NAMESPACE_WIDE: &str = "sealedsecrets.bitnami.com/namespace-wide";
/// Annotation that makes a SealedSecret cluster-wide.
pub const CLUSTER_WIDE: &str = "sealedsecrets.bitnami.com/cluster-wide";

/// How far a sealed value may travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scope {
    /// Bound to namespace and name.
    #[default]
    Strict,
    /// Bound to the namespace; the name may change.
    NamespaceWide,
    /// Unbound.
    ClusterWide,
}

impl Scope {
    /// kubeseal's `--scope` names.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "strict" => Scope::Strict,
            "namespace-wide" => Scope::NamespaceWide,
            "cluster-wide" => Scope::ClusterWide,
            _ => return None,
        })
    }

    /// The `--scope` name.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Strict => "strict",
            Scope::NamespaceWide => "namespace-wide",
            Scope::ClusterWide => "cluster-wide",
        }
    }

    /// The scope that annotations select (cluster-wide wins when both are set; values must be
    /// exactly `"true"`).
    pub fn from_annotations(ann: Option<&serde_json::Map<String, serde_json::Value>>) -> Self {
        let on = |k: &str| ann.and_then(|a| a.get(k)).and_then(|v| v.as_str()) == Some("true");
        if on(CLUSTER_WIDE) {
            Scope::ClusterWide
        } else if on(NAMESPACE_WIDE) {
            Scope::NamespaceWide
        } else {
            Scope::Strict
        }
    }

    /// The OAEP label for an object in this scope.
    pub fn label(self, namespace: &str, name: &str) -> Vec<u8> {
        match self {
            Scope::Strict => format!("{namespace}/{name}").into_bytes(),
            Scope::NamespaceWide => namespace.as_bytes().to_vec(),
            Scope::ClusterWide => Vec::new(),
        }
    }
}

/// Seals one value for `cert` under `label` (sealed-secrets' `HybridEncrypt`).
pub fn hybrid_encrypt(cert: &SealingCert, plaintext: &[u8], label: &[u8]) -> Result<Vec<u8>> {
    let mut session = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(session.as_mut());
    let rsa_ct = cert.encrypt_session_key(session.as_ref(), label)?;
    let len = u16::try_from(rsa_ct.len())
        .map_err(|_| Error::Sealed("RSA ciphertext longer than 65535 bytes".into()))?;
    let mut out = Vec::with_capacity(2 + rsa_ct.len() + plaintext.len() + 16);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&rsa_ct);
    let mut body = plaintext.to_vec();
    let aead =
        Aes256Gcm::new_from_slice(session.as_ref()).map_err(|_| Error::Sealed("bad session key".into()))?;
    let tag = aead
        .encrypt_in_place_detached(&Nonce::default(), &[], &mut body)
        .map_err(|_| Error::Sealed("AES-GCM encryption failed".into()))?;
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Why one value did not open with one key.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Shorter than its length prefix says.
    TooShort,
    /// RSA-OAEP or AES-GCM refused it (wrong key or label, or tampered).
    Refused,
}

/// Opens one value with one key (sealed-secrets' `singleDecrypt`).
pub fn hybrid_decrypt(key: &UnsealingKey, ct: &[u8], label: &[u8]) -> Result<SecretBytes, OpenError> {
    if ct.len() < 2 {
        return Err(OpenError::TooShort);
    }
    let rsa_len = usize::from(u16::from_be_bytes([ct[0], ct[1]]));
    if ct.len() < 2 + rsa_len {
        return Err(OpenError::TooShort);
    }
    let session = key
        .decrypt_session_key(&ct[2..2 + rsa_len], label)
        .ok_or(OpenError::Refused)?;
    let body = &ct[2 + rsa_len..];
    if body.len() < 16 {
        return Err(OpenError::TooShort);
    }
    let (data, tag) = body.split_at(body.len() - 16);
    let mut out = Zeroizing::new(data.to_vec());
    let nonce = Nonce::default();
    let tag = aes_gcm::Tag::from_slice(tag);
    // Go's aes.NewCipher takes 16-, 24- or 32-byte keys; kubeseal always writes 32.
    let ok = match session.len() {
        32 => Aes256Gcm::new_from_slice(&session)
            .map(|a| a.decrypt_in_place_detached(&nonce, &[], &mut out, tag)),
        16 => aes_gcm::Aes128Gcm::new_from_slice(&session)
            .map(|a| a.decrypt_in_place_detached(&nonce, &[], &mut out, tag)),
        _ => return Err(OpenError::Refused),
    };
    match ok {
        Ok(Ok(())) => Ok(SecretBytes::new(std::mem::take(&mut *out))),
        _ => Err(OpenError::Refused),
    }
}

/// Decodes a value as Go's `base64.StdEncoding.DecodeString` does: CR and LF ignored, padding
/// required, non-zero trailing bits tolerated.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
    );
    engine.decode(clean).ok()
}

/// Standard base64 with padding, as kubeseal writes it.
pub fn encode_base64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_per_scope() {
        assert_eq!(Scope::Strict.label("myns", "myname"), b"myns/myname");
        assert_eq!(Scope::NamespaceWide.label("myns", "myname"), b"myns");
        assert_eq!(Scope::ClusterWide.label("myns", "myname"), b"");
        let mut a = serde_json::Map::new();
        a.insert(NAMESPACE_WIDE.into(), "true".into());
        a.insert(CLUSTER_WIDE.into(), "true".into());
        assert_eq!(Scope::from_annotations(Some(&a)), Scope::ClusterWide);
        a.insert(CLUSTER_WIDE.into(), "yes".into());
        assert_eq!(Scope::from_annotations(Some(&a)), Scope::NamespaceWide);
    }

    #[test]
    fn base64_like_go() {
        assert_eq!(decode_base64("YWJj\r\nZA==").unwrap(), b"abcd");
        assert!(decode_base64("YWJjZA").is_none(), "padding is required");
    }
}
