//! Sealing certificates (public) and unsealing keys (private), in the formats sealed-secrets
//! uses: PEM certificates, PKCS#1 or PKCS#8 RSA keys, `kubernetes.io/tls` Secrets and the
//! `v1.List` that `kubectl get secret -l sealedsecrets.bitnami.com/sealed-secrets-key -o yaml`
//! writes as a backup.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePublicKey, EncodePrivateKey};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A sealing certificate: the controller's public key.
#[derive(Clone)]
pub struct SealingCert {
    key: rsa::RsaPublicKey,
    pem: String,
    not_before: i64,
    not_after: i64,
    fingerprint: String,
}

impl fmt::Debug for SealingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingCert")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl SealingCert {
    /// Parses the first certificate of a PEM bundle; its key must be RSA.
    pub fn from_pem(source: &str, pem: &[u8]) -> Result<Self> {
        let bad = |m: &str| Error::Sealed(format!("{source}: {m}"));
        let (_, p) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| bad("not a PEM certificate"))?;
        if p.label != "CERTIFICATE" {
            return Err(bad(&format!("expected a CERTIFICATE, found {}", p.label)));
        }
        let cert = p.parse_x509().map_err(|_| bad("not a valid X.509 certificate"))?;
        let key = rsa::RsaPublicKey::from_public_key_der(cert.public_key().raw)
            .map_err(|_| bad("the certificate does not hold an RSA public key"))?;
        let not_after = cert.validity().not_after.timestamp();
        let not_before = cert.validity().not_before.timestamp();
        let text = String::from_utf8_lossy(pem);
        let begin = text.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
        let end = text
            .find("-----END CERTIFICATE-----")
            .map_or(text.len(), |e| e + "-----END CERTIFICATE-----".len());
        Ok(Self {
            fingerprint: fingerprint(&key),
            key,
            pem: format!("{}\n", &text[begin..end]),
            not_before,
            not_after,
        })
    }

    /// `SHA256:<base64>`: the SSH fingerprint sealed-secrets uses to name keys.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The certificate PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Start of validity (seconds since the epoch): sealed-secrets orders keys by it.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// Whether the certificate has expired at `now` (seconds since the epoch); kubeseal refuses
    /// to seal with an expired certificate.
    pub fn expired_at(&self, now: i64) -> bool {
        now > self.not_after
    }

    pub(crate) fn encrypt_session_key(&self, session: &[u8], label: &[u8]) -> Result<Vec<u8>> {
        let label = std::str::from_utf8(label)
            .map_err(|_| Error::Sealed("scope label is not UTF-8".into()))?
            .to_owned();
        let padding = if label.is_empty() {
            rsa::Oaep::new::<Sha256>()
        } else {
            rsa::Oaep::new_with_label::<Sha256, _>(label)
        };
        self.key
            .encrypt(&mut rand::rngs::OsRng, padding, session)
            .map_err(|e| Error::Sealed(format!("RSA-OAEP encryption failed: {e}")))
    }
}

/// A private unsealing key, held by aws-lc-rs (constant-time RSA).
pub struct UnsealingKey {
    key: OaepPrivateDecryptingKey,
    fingerprint: String,
    source: String,
}

impl fmt::Debug for UnsealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealingKey")
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .finish()
    }
}

impl UnsealingKey {
    /// Parses an RSA private key PEM (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
    pub fn from_pem(source: &str, pem: &str) -> Result<Self> {
        let bad = |m: &str| Error::Sealed(format!("{source}: {m}"));
        let pkcs8: Zeroizing<Vec<u8>> = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            let k =
                rsa::RsaPrivateKey::from_pkcs1_pem(pem).map_err(|_| bad("invalid PKCS#1 RSA private key"))?;
            Zeroizing::new(
                k.to_pkcs8_der()
                    .map_err(|_| bad("cannot convert the key to PKCS#8"))?
                    .as_bytes()
                    .to_vec(),
            )
        } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
            let (_, doc) = rsa::pkcs8::SecretDocument::from_pem(pem.trim())
                .map_err(|_| bad("invalid PKCS#8 private key"))?;
            Zeroizing::new(doc.as_bytes().to_vec())
        } else {
            return Err(bad("no RSA private key PEM block"));
        };
        let key = PrivateDecryptingKey::from_pkcs8(&pkcs8)
            .map_err(|_| bad("not an RSA key of 2048 to 8192 bits"))?;
        let spki = key
            .public_key()
            .as_der()
            .map_err(|_| bad("cannot read the public half"))?;
        let public = rsa::RsaPublicKey::from_public_key_der(spki.as_ref())
            .map_err(|_| bad("cannot read the public half"))?;
        let key = OaepPrivateDecryptingKey::new(key).map_err(|_| bad("key unusable for RSA-OAEP"))?;
        Ok(Self {
            key,
            fingerprint: fingerprint(&public),
            source: source.to_owned(),
        })
    }

    /// `SHA256:<base64>` of the public half.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Where the key came from (a file, a Secret), for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn decrypt_session_key(&self, ct: &[u8], label: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let label = if label.is_empty() { None } else { Some(label) };
        let n = self
            .key
            .decrypt(&OAEP_SHA256_MGF1SHA256, ct, &mut out, label)
            .ok()?
            .len();
        out.truncate(n);
        Some(out)
    }
}

/// Every key that may open a value; all are tried, as sealed-secrets does (there is no key id).
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<UnsealingKey>,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key.
    pub fn push(&mut self, key: UnsealingKey) {
        self.keys.push(key);
    }

    /// The keys.
    pub fn keys(&self) -> &[UnsealingKey] {
        &self.keys
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds every key in a file the way `kubeseal --recovery-private-key` reads it: a PEM key, a
    /// Secret (YAML or JSON) with `tls.key`, or a `v1.List` of such Secrets. Returns the count.
    pub fn add_file_contents(&mut self, source: &str, text: &str) -> Result<usize> {
        if text.contains("-----BEGIN") && text.contains("PRIVATE KEY-----") && !text.contains("tls.key") {
            self.push(UnsealingKey::from_pem(source, text)?);
            return Ok(1);
        }
        let docs = crate::yaml::load_documents(text).map_err(|e| Error::Sealed(format!("{source}: {e}")))?;
        let mut n = 0;
        for doc in docs {
            let v = crate::sops::stores::to_json(&doc)?;
            let items: Vec<&serde_json::Value> = match v.get("kind").and_then(|k| k.as_str()) {
                Some("List") => v
                    .get("items")
                    .and_then(|i| i.as_array())
                    .map(|a| a.iter().collect())
                    .unwrap_or_default(),
                _ => vec![&v],
            };
            for (i, item) in items.into_iter().enumerate() {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("?");
                let b64 = item
                    .pointer("/data/tls.key")
                    .and_then(|k| k.as_str())
                    .ok_or_else(|| {
                        Error::Sealed(format!("{source}: item {i} ({name}) has no data.\"tls.key\""))
                    })?;
                let pem = super::decode_base64(b64)
                    .and_then(|b| String::from_utf8(b).ok())
                    .map(Zeroizing::new)
                    .ok_or_else(|| Error::Sealed(format!("{source}: {name}: tls.key is not base64 PEM")))?;
                self.push(UnsealingKey::from_pem(&format!("{source} ({name})"), &pem)?);
                n += 1;
            }
        }
        if n == 0 {
            return Err(Error::Sealed(format!("{source}: no private key found")));
        }
        Ok(n)
    }
}

/// SSH `FingerprintSHA256` of an RSA public key: SHA-256 over `string "ssh-rsa" ‖ mpint e ‖ mpint n`.
pub fn fingerprint(key: &rsa::RsaPublicKey) -> String {
    fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
        buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        buf.extend_from_slice(bytes);
    }
    fn mpint(v: &rsa::BigUint) -> Vec<u8> {
        let mut b = v.to_bytes_be();
        if b.first().is_some_and(|x| x & 0x80 != 0) {
            b.insert(0, 0);
        }
        b
    }
    let mut wire = Vec::new();
    put(&mut wire, b"ssh-rsa");
    put(&mut wire, &mpint(key.e()));
    put(&mut wire, &mpint(key.n()));
    use base64::Engine;
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&wire))
    )
}

/// A new sealing key pair as sealed-secrets makes it: RSA-`bits`, a self-signed certificate
/// (CN `cn`, valid `ttl_days`). Returns (PKCS#1 private key PEM, certificate PEM).
pub fn generate_key_pair(bits: usize, cn: &str, ttl_days: i64) -> Result<(Zeroizing<String>, String)> {
    use aws_lc_rs::rsa::KeySize;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        _ => return Err(Error::Sealed("key size must be 2048, 3072 or 4096".into())),
    };
    let key = PrivateDecryptingKey::generate(size)
        .map_err(|_| Error::Sealed("RSA key generation failed".into()))?;
    let pkcs8 = Zeroizing::new(
        AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key)
            .map_err(|_| Error::Sealed("cannot encode the key".into()))?
            .as_ref()
            .to_vec(),
    );
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.to_vec());
    let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| Error::Sealed(format!("certificate key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| Error::Sealed(format!("certificate: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::EncipherOnly];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(ttl_days);
    let cert = params
        .self_signed(&signer)
        .map_err(|e| Error::Sealed(format!("certificate: {e}")))?;
    let private = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8)
        .map_err(|_| Error::Sealed("cannot re-read the key".into()))?;
    let pem = private
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .map_err(|_| Error::Sealed("cannot encode PKCS#1".into()))?;
    Ok((Zeroizing::new(pem.to_string()), cert.pem()))
}

use rsa::pkcs8::DecodePrivateKey;

/// The label that marks sealing-key Secrets (sealed-secrets' own).
pub const KEY_LABEL: &str = "sealedsecrets.bitnami.com/sealed-secrets-key";
/// Its value on a usable key.
pub const ACTIVE: &str = "active";
/// Name prefix of key Secrets (sealed-secrets' `--key-prefix`).
pub const KEY_PREFIX: &str = "sealed-secrets-key";

/// A sealing key as the `kubernetes.io/tls` Secret sealed-secrets stores (`generateName`
/// [`KEY_PREFIX`], label [`KEY_LABEL`]=[`ACTIVE`]), ready to create in the agent's namespace.
/// The value holds the private key: send it and drop it.
pub fn key_secret(key_pem: &str, cert_pem: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "generateName": KEY_PREFIX, "labels": { KEY_LABEL: ACTIVE } },
        "type": "kubernetes.io/tls",
        "data": {
            "tls.key": super::encode_base64(key_pem.as_bytes()),
            "tls.crt": super::encode_base64(cert_pem.as_bytes()),
        },
    })
}
