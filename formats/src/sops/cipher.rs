//! The SOPS value cipher: `ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<t>]`.
//!
//! AES-256-GCM under the file's data key with a 32-byte random IV (GHASH-derived J0), the key
//! path as additional data, and the value's type name in clear.

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::{U12, U16, U32};
use aes_gcm::aead::generic_array::{ArrayLength, GenericArray};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::secret::DataKey;

/// The type tag of an encrypted value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// A string (or raw bytes from the binary store).
    Str,
    /// A decimal integer.
    Int,
    /// A float in Go's shortest `'f'` form.
    Float,
    /// `True` / `False`.
    Bool,
    /// RFC 3339 timestamp.
    Time,
    /// Legacy raw bytes (decrypt only).
    Bytes,
    /// A comment's text.
    Comment,
}

impl ValueType {
    /// The name written after `type:`.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Str => "str",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Bool => "bool",
            ValueType::Time => "time",
            ValueType::Bytes => "bytes",
            ValueType::Comment => "comment",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "str" => ValueType::Str,
            "int" => ValueType::Int,
            "float" => ValueType::Float,
            "bool" => ValueType::Bool,
            "time" => ValueType::Time,
            "bytes" => ValueType::Bytes,
            "comment" => ValueType::Comment,
            _ => return None,
        })
    }
}

/// Why an `ENC[...]` envelope could not be opened. Never carries the value.
#[derive(Debug, PartialEq, Eq)]
pub enum CipherError {
    /// The text is not an `ENC[AES256_GCM,...]` envelope.
    NotEncrypted,
    /// A field is not valid base64 or has the wrong length.
    Malformed(&'static str),
    /// The `type:` is unknown (the name, truncated).
    UnknownType(String),
    /// Authentication failed.
    Auth,
}

/// The fields of an envelope. Equivalent to sops' greedy, start-anchored
/// `^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]`: each greedy group ends at the
/// last separator that still lets the rest match, so the separators are searched from the
/// right. (A hand-written split: the regex backtracker was an eighth of decryption time.)
struct Envelope<'a> {
    data: &'a str,
    iv: &'a str,
    tag: &'a str,
    ty: &'a str,
}

fn envelope(s: &str) -> Option<Envelope<'_>> {
    let body = s.strip_prefix("ENC[AES256_GCM,data:")?;
    let body = &body[..body.rfind(']')?];
    let (rest, ty) = body.rsplit_once(",type:")?;
    let (rest, tag) = rest.rsplit_once(",tag:")?;
    let (data, iv) = rest.rsplit_once(",iv:")?;
    [data, iv, tag, ty]
        .iter()
        .all(|f| !f.is_empty())
        .then_some(Envelope { data, iv, tag, ty })
}

/// Whether `s` looks like an encrypted SOPS value.
pub fn is_encrypted(s: &str) -> bool {
    s.starts_with("ENC[AES256_GCM,")
}

/// Opens an envelope: the plaintext bytes and their declared type.
pub fn decrypt(s: &str, key: &DataKey, aad: &[u8]) -> Result<(Zeroizing<Vec<u8>>, ValueType), CipherError> {
    let env = envelope(s).ok_or(if is_encrypted(s) {
        CipherError::Malformed("expected data, iv, tag and type fields")
    } else {
        CipherError::NotEncrypted
    })?;
    let ty_name = env.ty;
    let ty = ValueType::parse(ty_name)
        .ok_or_else(|| CipherError::UnknownType(ty_name.chars().take(24).collect()))?;
    let mut data = Zeroizing::new(
        B64.decode(env.data)
            .map_err(|_| CipherError::Malformed("data is not base64"))?,
    );
    let iv = B64
        .decode(env.iv)
        .map_err(|_| CipherError::Malformed("iv is not base64"))?;
    let tag = B64
        .decode(env.tag)
        .map_err(|_| CipherError::Malformed("tag is not base64"))?;
    if tag.len() != 16 {
        return Err(CipherError::Malformed("tag is not 16 bytes"));
    }
    match iv.len() {
        32 => open::<U32>(key, &iv, aad, &mut data, &tag)?,
        12 => open::<U12>(key, &iv, aad, &mut data, &tag)?,
        16 => open::<U16>(key, &iv, aad, &mut data, &tag)?,
        _ => return Err(CipherError::Malformed("iv has an unsupported length")),
    }
    Ok((data, ty))
}

fn open<N: ArrayLength<u8>>(
    key: &DataKey,
    iv: &[u8],
    aad: &[u8],
    data: &mut [u8],
    tag: &[u8],
) -> Result<(), CipherError> {
    let cipher = AesGcm::<Aes256, N>::new(GenericArray::from_slice(key.expose()));
    cipher
        .decrypt_in_place_detached(
            GenericArray::from_slice(iv),
            aad,
            data,
            GenericArray::from_slice(tag),
        )
        .map_err(|_| CipherError::Auth)
}

/// A fresh random 32-byte IV.
pub fn random_iv() -> [u8; 32] {
    let mut iv = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    iv
}

/// Seals `plaintext` into an envelope with the given IV.
pub fn encrypt(
    plaintext: &[u8],
    ty: ValueType,
    key: &DataKey,
    aad: &[u8],
    iv: &[u8; 32],
) -> Result<String, CipherError> {
    let cipher = AesGcm::<Aes256, U32>::new(GenericArray::from_slice(key.expose()));
    let mut buf = Zeroizing::new(plaintext.to_vec());
    let tag = cipher
        .encrypt_in_place_detached(GenericArray::from_slice(iv), aad, &mut buf)
        .map_err(|_| CipherError::Malformed("value too large to encrypt"))?;
    Ok(format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]",
        B64.encode(&*buf),
        B64.encode(iv),
        B64.encode(tag),
        ty.name()
    ))
}

/// Reads the IV out of an envelope (used to keep ciphertexts stable across edits).
pub fn iv_of(s: &str) -> Option<[u8; 32]> {
    B64.decode(envelope(s)?.iv).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sops_known_answer_vector() {
        // sops aes/cipher_test.go: key = 32 x 'f', AAD "bar:".
        let key = DataKey::from_bytes([b'f'; 32]);
        let enc = "ENC[AES256_GCM,data:oYyi,iv:MyIDYbT718JRr11QtBkcj3Dwm4k1aCGZBVeZf0EyV8o=,tag:t5z2Z023Up0kxwCgw1gNxg==,type:str]";
        let (pt, ty) = decrypt(enc, &key, b"bar:").unwrap();
        assert_eq!((&pt[..], ty), (&b"foo"[..], ValueType::Str));
        assert_eq!(decrypt(enc, &key, b"baz:"), Err(CipherError::Auth));
    }

    #[test]
    fn round_trip_and_malformed() {
        let key = DataKey::generate();
        let iv = random_iv();
        let e = encrypt(b"hello", ValueType::Int, &key, b"a:", &iv).unwrap();
        assert_eq!(iv_of(&e), Some(iv));
        let (pt, ty) = decrypt(&e, &key, b"a:").unwrap();
        assert_eq!((&pt[..], ty), (&b"hello"[..], ValueType::Int));
        assert!(matches!(
            decrypt("ENC[AES256_GCM,data:abc", &key, b""),
            Err(CipherError::Malformed(_))
        ));
        assert_eq!(decrypt("plain", &key, b""), Err(CipherError::NotEncrypted));
        let bad = e.replace("type:int", "type:blob");
        assert!(matches!(
            decrypt(&bad, &key, b"a:"),
            Err(CipherError::UnknownType(_))
        ));
    }
}
