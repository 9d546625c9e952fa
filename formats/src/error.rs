//! The one error type of this crate.
//!
//! Messages name *where* (file, line, key path, metadata field) and never *what*: no variant
//! carries a plaintext value, a ciphertext, or key material.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, decrypting, encrypting or writing a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Context: the error happened while processing `file`.
    #[error("{file}: {source}")]
    InFile {
        /// The file (or stream label such as `<stdin>`).
        file: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// The YAML text is not well-formed.
    #[error("invalid YAML at line {line}, column {col}: {message}")]
    Yaml {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// Parser message (syntax only, never content).
        message: String,
    },
    /// The JSON text is not well-formed.
    #[error("invalid JSON at line {line}, column {col}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// Parser category.
        message: String,
    },
    /// A dotenv line is malformed.
    #[error("invalid dotenv at line {line}: {message}")]
    Dotenv {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: &'static str,
    },
    /// The document has a shape SOPS cannot handle (duplicate key, non-string key, ...).
    #[error("at {path}: {message}")]
    Structure {
        /// Key path, e.g. `stringData.password` or `items[2].name`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The file has no top-level `sops` metadata.
    #[error("not a SOPS file: no top-level `sops` metadata (was it encrypted with sops?)")]
    NotSops,
    /// The file already carries SOPS metadata and cannot be encrypted again.
    #[error("already encrypted: the document has a top-level `sops` key")]
    AlreadyEncrypted,
    /// A metadata field is missing or invalid.
    #[error("invalid sops metadata field `{field}`: {message}")]
    Metadata {
        /// Field path inside `sops`, e.g. `lastmodified` or `age[0].enc`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A value does not have the `ENC[AES256_GCM,data:..,iv:..,tag:..,type:..]` form.
    #[error("at {path}: malformed encrypted value: {reason}")]
    BadCiphertext {
        /// Key path of the value.
        path: String,
        /// What is wrong with its envelope.
        reason: &'static str,
    },
    /// The `type:` of an encrypted value is not one SOPS writes.
    #[error("at {path}: unknown value type `{ty}` (expected str, int, float, bool, time, bytes or comment)")]
    UnknownType {
        /// Key path of the value.
        path: String,
        /// The type name found (truncated).
        ty: String,
    },
    /// A value failed authentication: wrong data key, or it was edited or moved.
    #[error("at {path}: could not decrypt value (tampered, moved to another key, or wrong data key)")]
    ValueDecrypt {
        /// Key path of the value.
        path: String,
    },
    /// The decrypted value is not valid for its declared type.
    #[error("at {path}: decrypted value is not a valid `{ty}`")]
    ValueType {
        /// Key path of the value.
        path: String,
        /// The declared type.
        ty: &'static str,
    },
    /// None of the available identities unwraps the data key.
    #[error(
        "no identity could decrypt the data key: tried {tried} age identit{plural} against {stanzas} \
         recipient entr{stanza_plural}{skipped}",
        plural = if *tried == 1 { "y" } else { "ies" },
        stanza_plural = if *stanzas == 1 { "y" } else { "ies" },
        skipped = skipped_note(skipped)
    )]
    NoIdentityMatched {
        /// Identities tried.
        tried: usize,
        /// age entries in the file.
        stanzas: usize,
        /// Keys that were present but could not be used, described without key material.
        skipped: Vec<String>,
    },
    /// Key groups were found but fewer than `shamir_threshold` could be opened.
    #[error("only {got} of the required {need} key groups could be decrypted")]
    NotEnoughShares {
        /// Groups opened.
        got: usize,
        /// `shamir_threshold`.
        need: usize,
    },
    /// The stored MAC could not be decrypted (edited `mac` or `lastmodified`).
    #[error("cannot decrypt MAC: `mac` or `lastmodified` was edited")]
    MacUndecryptable,
    /// The MAC computed over the values differs from the stored one.
    #[error(
        "MAC mismatch: the file was modified after encryption (a value edited, reordered, added or \
         removed); use --ignore-mac only to recover data"
    )]
    MacMismatch,
    /// An age recipient string is invalid.
    #[error("invalid age recipient `{recipient}`: {reason}")]
    Recipient {
        /// The recipient (public, safe to print).
        recipient: String,
        /// Why.
        reason: String,
    },
    /// An identity line could not be parsed.
    #[error("{source_name} line {line}: {reason}")]
    Identity {
        /// Where the identity came from (file, env var, Secret key).
        source_name: String,
        /// 1-based line.
        line: usize,
        /// Why (never the line's content).
        reason: String,
    },
    /// No usable identity was found anywhere.
    #[error("no age identity available: set SOPS_AGE_KEY_FILE or SOPS_AGE_KEY, or pass --identity{skipped}",
        skipped = skipped_note(skipped))]
    NoIdentities {
        /// Keys that were present but unusable.
        skipped: Vec<String>,
    },
    /// The file has no age key: it is encrypted only for master keys of other types.
    #[error("encrypted for {} only; Lockstep decrypts age keys", .keys.join(" and "))]
    NotForAge {
        /// The master keys it has, each with its public name (`PGP key 35C1A64C…`).
        keys: Vec<String>,
    },
    /// A `postBuild` variable name Flux would refuse.
    #[error("'{name}' var name is invalid, must match '^[_[:alpha:]][_[:alpha:][:digit:]]*$'")]
    VariableName {
        /// The name.
        name: String,
    },
    /// `postBuild` substitution failed in a field (Flux's reason: a variable not set, a
    /// malformed `${…}`).
    #[error("at {path}: variable substitution failed: {reason}")]
    Substitution {
        /// The field, e.g. `spec.replicas`.
        path: String,
        /// Why (names a variable, never a value).
        reason: String,
    },
    /// A substituted field does not read back as a value.
    #[error("at {path}: after substitution, {message}")]
    Substituted {
        /// The field.
        path: String,
        /// Why (syntax only).
        message: String,
    },
    /// A YAML document is larger than the loader accepts.
    #[error("the document is {bytes} bytes; at most {limit} are read")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The bound.
        limit: usize,
    },
    /// A YAML document goes beyond a bound of the loader (nesting depth, alias expansion).
    #[error("at {path}: {message}")]
    Limit {
        /// Where.
        path: String,
        /// Which bound, and by how much.
        message: String,
    },
    /// age refused to encrypt or decrypt a stanza.
    #[error("age: {0}")]
    Age(String),
    /// No recipients were given for encryption.
    #[error(
        "no recipients: pass --age, set SOPS_AGE_RECIPIENTS, or add a matching creation rule to .sops.yaml"
    )]
    NoRecipients,
    /// More than one encryption rule was set.
    #[error("only one of {0} may be set")]
    MultipleRules(&'static str),
    /// A rule regex does not compile.
    #[error("invalid regular expression in `{field}`: {message}")]
    Regex {
        /// The rule name.
        field: String,
        /// Regex engine message.
        message: String,
    },
    /// `.sops.yaml` is invalid.
    #[error("config {file}: {message}")]
    Config {
        /// Path of the config file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The document cannot be written in the requested format.
    #[error("cannot write as {format}: {message}")]
    Emit {
        /// The output format.
        format: &'static str,
        /// Why.
        message: String,
    },
    /// A SealedSecret or a sealing key is unusable.
    #[error("sealed secret: {0}")]
    Sealed(String),
    /// No key could open some items of a SealedSecret.
    #[error(
        "no key could decrypt SealedSecret {object} (scope {scope}; {tried} key{plural} tried); affected items: {}; \
         was it sealed for another name, namespace, scope or cluster?",
        items.join(", "),
        plural = if *tried == 1 { "" } else { "s" }
    )]
    NoSealingKey {
        /// `namespace/name` of the SealedSecret.
        object: String,
        /// The scope its annotations claim.
        scope: &'static str,
        /// Keys tried.
        tried: usize,
        /// Items that did not open.
        items: Vec<String>,
    },
    /// I/O on a named path failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// `Some("sops")` or `Some("sealed")` when this is a failure to decrypt (wrong or missing
    /// key, tampering), as opposed to a malformed file: what a decryption-failure metric counts.
    pub fn decryption_failure(&self) -> Option<&'static str> {
        match self {
            Error::InFile { source, .. } => source.decryption_failure(),
            Error::ValueDecrypt { .. }
            | Error::NoIdentityMatched { .. }
            | Error::NotEnoughShares { .. }
            | Error::MacUndecryptable
            | Error::MacMismatch
            | Error::NotForAge { .. }
            | Error::Age(_) => Some("sops"),
            Error::NoSealingKey { .. } | Error::Sealed(_) => Some("sealed"),
            _ => None,
        }
    }
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!("; unusable keys skipped: {}", skipped.join("; "))
    }
}

impl Error {
    /// Adds the file name to an error, unless it already has one.
    pub fn in_file(self, file: impl Into<String>) -> Self {
        match self {
            e @ Error::InFile { .. } => e,
            e => Error::InFile {
                file: file.into(),
                source: Box::new(e),
            },
        }
    }

    /// The innermost error, past any [`Error::InFile`] wrappers.
    pub fn root(&self) -> &Error {
        match self {
            Error::InFile { source, .. } => source.root(),
            e => e,
        }
    }
}
