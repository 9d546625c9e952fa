//! Which values a SOPS file encrypts (`Tree.shouldBeEncrypted`).

use regex::Regex;

use crate::error::{Error, Result};

/// The suffix sops assumes when a file names no rule.
pub const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// The metadata names of the six exclusive rules, in the order sops documents them.
pub const RULE_FIELDS: [&str; 6] = [
    "unencrypted_suffix",
    "encrypted_suffix",
    "unencrypted_regex",
    "encrypted_regex",
    "unencrypted_comment_regex",
    "encrypted_comment_regex",
];

/// The one encryption rule in force for a file.
#[derive(Clone, Debug)]
pub enum Rule {
    /// Values under a key ending with this suffix stay plaintext.
    UnencryptedSuffix(String),
    /// Only values under a key ending with this suffix are encrypted.
    EncryptedSuffix(String),
    /// Values under a key matching this stay plaintext.
    UnencryptedRegex(Regex),
    /// Only values under a key matching this are encrypted.
    EncryptedRegex(Regex),
    /// Values under a comment matching this stay plaintext.
    UnencryptedCommentRegex(Regex),
    /// Only values under a comment matching this are encrypted.
    EncryptedCommentRegex(Regex),
}

impl Default for Rule {
    fn default() -> Self {
        Rule::UnencryptedSuffix(DEFAULT_UNENCRYPTED_SUFFIX.into())
    }
}

impl Rule {
    /// Builds a rule from its metadata field name and value.
    pub fn from_field(field: &str, value: &str) -> Result<Self> {
        let re = || {
            Regex::new(value).map_err(|e| Error::Regex {
                field: field.into(),
                message: e.to_string(),
            })
        };
        Ok(match field {
            "unencrypted_suffix" => Rule::UnencryptedSuffix(value.into()),
            "encrypted_suffix" => Rule::EncryptedSuffix(value.into()),
            "unencrypted_regex" => Rule::UnencryptedRegex(re()?),
            "encrypted_regex" => Rule::EncryptedRegex(re()?),
            "unencrypted_comment_regex" => Rule::UnencryptedCommentRegex(re()?),
            "encrypted_comment_regex" => Rule::EncryptedCommentRegex(re()?),
            _ => {
                return Err(Error::Metadata {
                    field: field.into(),
                    message: "not an encryption rule".into(),
                });
            }
        })
    }

    /// Picks the one rule among `(field, value)` pairs; more than one is an error.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Option<Self>> {
        let mut found = None;
        for (f, v) in fields {
            if v.is_empty() {
                continue;
            }
            if found.is_some() {
                return Err(Error::MultipleRules(
                    "unencrypted_suffix, encrypted_suffix, unencrypted_regex, encrypted_regex, \
                     unencrypted_comment_regex and encrypted_comment_regex",
                ));
            }
            found = Some(Rule::from_field(f, v)?);
        }
        Ok(found)
    }

    /// The metadata field name and value.
    pub fn field(&self) -> (&'static str, &str) {
        match self {
            Rule::UnencryptedSuffix(s) => (RULE_FIELDS[0], s),
            Rule::EncryptedSuffix(s) => (RULE_FIELDS[1], s),
            Rule::UnencryptedRegex(r) => (RULE_FIELDS[2], r.as_str()),
            Rule::EncryptedRegex(r) => (RULE_FIELDS[3], r.as_str()),
            Rule::UnencryptedCommentRegex(r) => (RULE_FIELDS[4], r.as_str()),
            Rule::EncryptedCommentRegex(r) => (RULE_FIELDS[5], r.as_str()),
        }
    }

    /// Whether the leaf at `path` (mapping keys only) under the active `comments` (one list per
    /// nesting level) is encrypted. `is_comment` marks the leaf as a comment itself, whose own
    /// line is the last entry of the innermost level.
    pub fn should_encrypt(&self, path: &[String], comments: &[Vec<String>], is_comment: bool) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
            Rule::UnencryptedCommentRegex(r) => !comments.iter().flatten().any(|c| r.is_match(c)),
            Rule::EncryptedCommentRegex(r) => {
                let last_level = comments.len().saturating_sub(1);
                comments.iter().enumerate().any(|(i, level)| {
                    level.iter().enumerate().any(|(j, c)| {
                        // The matching comment line itself is not encrypted.
                        let own_line = is_comment && i == last_level && j + 1 == level.len();
                        !own_line && r.is_match(c)
                    })
                })
            }
        }
    }

    /// Whether the rule looks at comments (and so needs a comment-preserving format).
    pub fn uses_comments(&self) -> bool {
        matches!(
            self,
            Rule::UnencryptedCommentRegex(_) | Rule::EncryptedCommentRegex(_)
        )
    }
}
