//! The tree walk shared by encryption and decryption (`walkBranch`/`walkSlice` in sops), with
//! the MAC computed in the same pass.

use std::collections::HashMap;

use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use super::cipher::{self, CipherError, ValueType};
use super::rules::Rule;
use crate::error::{Error, Result};
use crate::secret::DataKey;
use crate::tree::{KeyPath, MapItem, Value};
use crate::yaml::{format_float_f, parse_timestamp};

/// IVs of the values as they were, keyed by a digest of (path, type, plaintext), so that
/// re-encrypting an unchanged value keeps its ciphertext byte-identical (small Git diffs).
#[derive(Default)]
pub struct IvStash(HashMap<[u8; 32], [u8; 32]>);

impl IvStash {
    fn slot(aad: &[u8], ty: ValueType, plaintext: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update((aad.len() as u64).to_be_bytes());
        h.update(aad);
        h.update(ty.name());
        h.update([0]);
        h.update(plaintext);
        h.finalize().into()
    }
}

struct Leaf<'a> {
    value: &'a mut Value,
    path: &'a [String],
    at: &'a KeyPath,
    comments: &'a [Vec<String>],
    is_comment: bool,
}

struct Walker<'f, F> {
    path: Vec<String>,
    at: KeyPath,
    comments: Vec<Vec<String>>,
    on_leaf: &'f mut F,
}

impl<F: FnMut(Leaf<'_>) -> Result<()>> Walker<'_, F> {
    fn leaf(&mut self, value: &mut Value, is_comment: bool) -> Result<()> {
        (self.on_leaf)(Leaf {
            value,
            path: &self.path,
            at: &self.at,
            comments: &self.comments,
            is_comment,
        })
    }

    fn branch(&mut self, items: &mut [MapItem]) -> Result<()> {
        self.comments.push(Vec::new());
        for item in items.iter_mut() {
            match item {
                MapItem::Comment(text) => {
                    if let Some(level) = self.comments.last_mut() {
                        level.push(text.clone());
                    }
                    let mut v = Value::Comment(std::mem::take(text));
                    self.leaf(&mut v, true)?;
                    *text = match v {
                        Value::Comment(t) | Value::Str(t) => t,
                        _ => String::new(),
                    };
                }
                MapItem::Entry(k, v) => {
                    self.path.push(k.clone());
                    self.at.push_key(k);
                    self.value(v)?;
                    self.at.pop();
                    self.path.pop();
                    if let Some(level) = self.comments.last_mut() {
                        level.clear();
                    }
                }
            }
        }
        self.comments.pop();
        Ok(())
    }

    fn seq(&mut self, items: &mut [Value]) -> Result<()> {
        self.comments.push(Vec::new());
        for (i, v) in items.iter_mut().enumerate() {
            let is_comment = if let Value::Comment(text) = v {
                if let Some(level) = self.comments.last_mut() {
                    level.push(text.clone());
                }
                true
            } else {
                false
            };
            self.at.push_index(i);
            self.value(v)?;
            self.at.pop();
            match v {
                // sops writes an encrypted comment in a list as a string item, and when reading
                // it back forgets that it was a comment, so the values after it are judged
                // against a different comment stack than at encryption (real sops then reports
                // a MAC mismatch on its own file). Restore the stack encryption saw.
                Value::Comment(text) if !is_comment => {
                    if let Some(level) = self.comments.last_mut() {
                        level.push(text.clone());
                    }
                }
                _ if !is_comment => {
                    if let Some(level) = self.comments.last_mut() {
                        level.clear();
                    }
                }
                _ => {}
            }
        }
        self.comments.pop();
        Ok(())
    }

    fn value(&mut self, v: &mut Value) -> Result<()> {
        match v {
            Value::Map(items) => self.branch(items),
            Value::Seq(items) => self.seq(items),
            Value::Null => Ok(()),
            Value::Comment(_) => self.leaf(v, true),
            _ => self.leaf(v, false),
        }
    }
}

fn walk_all<F: FnMut(Leaf<'_>) -> Result<()>>(branches: &mut [Vec<MapItem>], mut f: F) -> Result<()> {
    for b in branches {
        let mut w = Walker {
            path: Vec::new(),
            at: KeyPath::root(),
            comments: Vec::new(),
            on_leaf: &mut f,
        };
        w.branch(b)?;
    }
    Ok(())
}

fn aad(path: &[String]) -> String {
    let mut s = path.join(":");
    s.push(':');
    s
}

fn new_mac(mac_only_encrypted: bool) -> Sha512 {
    let mut h = Sha512::new();
    if mac_only_encrypted {
        // So that a MAC with this setting never equals one without it.
        h.update(Sha256::digest(b"sops"));
    }
    h
}

/// The bytes of a plaintext leaf as sops encrypts and hashes them (`ToBytes`), with its type.
fn plain_bytes(v: &Value) -> Option<(Zeroizing<Vec<u8>>, ValueType)> {
    let (bytes, ty) = match v {
        Value::Str(s) => (s.as_bytes().to_vec(), ValueType::Str),
        Value::Bytes(b) => (b.clone(), ValueType::Str),
        Value::Int(i) => (i.to_string().into_bytes(), ValueType::Int),
        Value::Float(f) => (format_float_f(*f).into_bytes(), ValueType::Float),
        Value::Bool(b) => (
            (if *b { "True" } else { "False" }).as_bytes().to_vec(),
            ValueType::Bool,
        ),
        Value::Time(t) => (t.as_bytes().to_vec(), ValueType::Time),
        Value::Comment(c) => (c.as_bytes().to_vec(), ValueType::Comment),
        Value::Null | Value::Map(_) | Value::Seq(_) => return None,
    };
    Some((Zeroizing::new(bytes), ty))
}

/// Turns decrypted bytes back into a typed value.
fn typed(pt: &[u8], ty: ValueType, at: &KeyPath) -> Result<Value> {
    let bad = || Error::ValueType {
        path: at.to_string(),
        ty: ty.name(),
    };
    let text = || std::str::from_utf8(pt).map_err(|_| bad());
    Ok(match ty {
        ValueType::Str | ValueType::Bytes => match std::str::from_utf8(pt) {
            Ok(s) => Value::Str(s.to_owned()),
            Err(_) => Value::Bytes(pt.to_vec()),
        },
        ValueType::Int => Value::Int(text()?.parse().map_err(|_| bad())?),
        ValueType::Float => Value::Float(text()?.parse().map_err(|_| bad())?),
        ValueType::Bool => Value::Bool(match text()? {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => return Err(bad()),
        }),
        ValueType::Time => Value::Time(parse_timestamp(text()?).ok_or_else(bad)?),
        ValueType::Comment => Value::Comment(text()?.to_owned()),
    })
}

fn cipher_error(e: CipherError, at: &KeyPath) -> Error {
    match e {
        CipherError::NotEncrypted => Error::BadCiphertext {
            path: at.to_string(),
            reason: "expected an encrypted value, found plaintext (edited after encryption?)",
        },
        CipherError::Malformed(reason) => Error::BadCiphertext {
            path: at.to_string(),
            reason,
        },
        CipherError::UnknownType(ty) => Error::UnknownType {
            path: at.to_string(),
            ty,
        },
        CipherError::Auth => Error::ValueDecrypt { path: at.to_string() },
    }
}

/// Decrypts every encrypted leaf in place and returns the MAC (uppercase hex) over the result.
pub fn decrypt_tree(
    branches: &mut [Vec<MapItem>],
    key: &DataKey,
    rule: &Rule,
    mac_only_encrypted: bool,
    mut stash: Option<&mut IvStash>,
) -> Result<String> {
    let mut mac = new_mac(mac_only_encrypted);
    walk_all(branches, |leaf| {
        let encrypted = rule.should_encrypt(leaf.path, leaf.comments, leaf.is_comment);
        if encrypted {
            let aad = aad(leaf.path);
            match &*leaf.value {
                Value::Comment(text) => {
                    // Comments that do not open were probably never encrypted (older sops).
                    if let Ok((pt, ty)) = cipher::decrypt(text, key, aad.as_bytes()) {
                        *leaf.value = typed(&pt, ty, leaf.at)?;
                    }
                }
                Value::Str(s) if s.is_empty() => {}
                Value::Str(s) => {
                    let (pt, ty) =
                        cipher::decrypt(s, key, aad.as_bytes()).map_err(|e| cipher_error(e, leaf.at))?;
                    if let (Some(st), Some(iv)) = (stash.as_deref_mut(), cipher::iv_of(s)) {
                        st.0.insert(IvStash::slot(aad.as_bytes(), ty, &pt), iv);
                    }
                    *leaf.value = typed(&pt, ty, leaf.at)?;
                }
                other => {
                    return Err(Error::BadCiphertext {
                        path: leaf.at.to_string(),
                        reason: match other {
                            Value::Int(_) | Value::Float(_) => "expected an encrypted value, found a number",
                            Value::Bool(_) => "expected an encrypted value, found a boolean",
                            _ => "expected an encrypted value",
                        },
                    });
                }
            }
        }
        if (!mac_only_encrypted || encrypted)
            && !matches!(leaf.value, Value::Comment(_))
            && let Some((bytes, _)) = plain_bytes(leaf.value)
        {
            mac.update(&*bytes);
        }
        Ok(())
    })?;
    Ok(hex::encode_upper(mac.finalize()))
}

/// Encrypts every leaf the rule selects in place and returns the MAC (uppercase hex) over the
/// plaintext. Comments in mappings stay comments (`#ENC[...]`); comments in sequences become
/// string items, exactly as sops writes them.
pub fn encrypt_tree(
    branches: &mut [Vec<MapItem>],
    key: &DataKey,
    rule: &Rule,
    mac_only_encrypted: bool,
    stash: Option<&IvStash>,
) -> Result<String> {
    let mut mac = new_mac(mac_only_encrypted);
    walk_all(branches, |leaf| {
        let encrypted = rule.should_encrypt(leaf.path, leaf.comments, leaf.is_comment);
        let Some((bytes, ty)) = plain_bytes(leaf.value) else {
            return Ok(());
        };
        if (!mac_only_encrypted || encrypted) && !leaf.is_comment {
            mac.update(&*bytes);
        }
        if !encrypted || bytes.is_empty() {
            return Ok(());
        }
        if let Value::Str(s) = &*leaf.value
            && cipher::is_encrypted(s)
        {
            return Err(Error::Structure {
                path: leaf.at.to_string(),
                message: "value is already encrypted (ENC[...]); decrypt the file first".into(),
            });
        }
        let aad = aad(leaf.path);
        let iv = stash
            .and_then(|s| s.0.get(&IvStash::slot(aad.as_bytes(), ty, &bytes)).copied())
            .unwrap_or_else(cipher::random_iv);
        let enc =
            cipher::encrypt(&bytes, ty, key, aad.as_bytes(), &iv).map_err(|e| cipher_error(e, leaf.at))?;
        if let (Rule::UnencryptedCommentRegex(re), true) = (rule, leaf.is_comment)
            && re.is_match(&enc)
        {
            return Err(Error::Structure {
                path: leaf.at.to_string(),
                message: "an encrypted comment matches unencrypted_comment_regex; choose a stricter regex"
                    .into(),
            });
        }
        *leaf.value = Value::Str(enc);
        Ok(())
    })?;
    Ok(hex::encode_upper(mac.finalize()))
}
