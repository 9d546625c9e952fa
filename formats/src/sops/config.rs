//! `.sops.yaml`: creation rules that choose recipients and the encryption rule for a file.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::rules::{RULE_FIELDS, Rule};
use crate::error::{Error, Result};
use crate::tree::{Value, get};

/// How far up from the working directory sops looks for `.sops.yaml`.
const MAX_DEPTH: usize = 100;

/// A parsed `.sops.yaml`.
#[derive(Debug)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// `creation_rules`, in order; the first match wins.
    pub creation_rules: Vec<CreationRule>,
}

/// One entry of `creation_rules`.
#[derive(Debug, Clone)]
pub struct CreationRule {
    /// `path_regex` (unanchored); `None` matches every file.
    pub path_regex: Option<Regex>,
    /// Recipients per key group (one group for the flat `age:` field).
    pub key_groups: Vec<Vec<String>>,
    /// `shamir_threshold`.
    pub shamir_threshold: Option<usize>,
    /// The encryption rule, if the creation rule sets one.
    pub rule: Option<Rule>,
    /// `mac_only_encrypted`.
    pub mac_only_encrypted: bool,
}

impl Config {
    /// Finds `.sops.yaml` in `start` or its parents, as sops does from the working directory.
    pub fn find(start: &Path) -> Result<Option<Self>> {
        let mut dir = Some(start);
        for _ in 0..MAX_DEPTH {
            let Some(d) = dir else { break };
            let candidate = d.join(".sops.yaml");
            if candidate.is_file() {
                return Self::load(&candidate).map(Some);
            }
            dir = d.parent();
        }
        Ok(None)
    }

    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` is used for messages and to relativise file paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let file = path.display().to_string();
        let err = |message: String| Error::Config {
            file: file.clone(),
            message,
        };
        let docs = crate::yaml::load_mappings(text).map_err(|e| err(e.to_string()))?;
        let Some(doc) = docs.first() else {
            return Ok(Self {
                path: path.into(),
                creation_rules: Vec::new(),
            });
        };
        let rules = match get(doc, "creation_rules") {
            Some(Value::Seq(items)) => items.as_slice(),
            Some(Value::Null) | None => &[],
            Some(_) => return Err(err("`creation_rules` must be a list".into())),
        };
        let creation_rules = rules
            .iter()
            .filter(|r| !matches!(r, Value::Comment(_)))
            .enumerate()
            .map(|(i, r)| parse_rule(r).map_err(|m| err(format!("creation_rules[{i}]: {m}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            path: path.into(),
            creation_rules,
        })
    }

    /// The first rule whose `path_regex` matches `file` (made absolute, then relative to the
    /// config's directory when inside it).
    pub fn rule_for(&self, file: &Path) -> Option<&CreationRule> {
        let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let dir = self
            .path
            .parent()
            .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf()));
        let rel = match &dir {
            Some(d) => abs.strip_prefix(d).map(Path::to_path_buf).unwrap_or(abs.clone()),
            None => abs.clone(),
        };
        let rel = rel.to_string_lossy();
        self.creation_rules
            .iter()
            .find(|r| r.path_regex.as_ref().is_none_or(|re| re.is_match(&rel)))
    }
}

fn parse_rule(v: &Value) -> std::result::Result<CreationRule, String> {
    let Value::Map(items) = v else {
        return Err("must be a mapping".into());
    };
    let text = |name: &str| -> std::result::Result<Option<String>, String> {
        match get(items, name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.clone())),
            Some(Value::Int(i)) => Ok(Some(i.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(format!("`{name}` must be a string")),
        }
    };
    let path_regex = text("path_regex")?
        .map(|p| Regex::new(&p).map_err(|e| format!("`path_regex`: {e}")))
        .transpose()?;
    let rule_values: Vec<(&str, String)> = RULE_FIELDS
        .iter()
        .map(|f| Ok((*f, text(f)?.unwrap_or_default())))
        .collect::<Result<_, String>>()?;
    let rule =
        Rule::from_fields(rule_values.iter().map(|(f, v)| (*f, v.as_str()))).map_err(|e| e.to_string())?;
    let key_groups = match get(items, "key_groups") {
        Some(Value::Seq(groups)) if !groups.is_empty() => groups
            .iter()
            .filter(|g| !matches!(g, Value::Comment(_)))
            .enumerate()
            .map(|(i, g)| {
                let Value::Map(gi) = g else {
                    return Err(format!("key_groups[{i}] must be a mapping"));
                };
                let age = recipients(get(gi, "age")).map_err(|m| format!("key_groups[{i}].age {m}"))?;
                if age.is_empty() {
                    return Err(format!(
                        "key_groups[{i}] has no age recipients (only age keys are supported by lockstep)"
                    ));
                }
                Ok(age)
            })
            .collect::<std::result::Result<Vec<_>, String>>()?,
        _ => {
            let age = recipients(get(items, "age")).map_err(|m| format!("age {m}"))?;
            if age.is_empty() { Vec::new() } else { vec![age] }
        }
    };
    let shamir_threshold = match text("shamir_threshold")? {
        Some(t) => Some(
            t.parse()
                .map_err(|_| "`shamir_threshold` must be an integer".to_string())?,
        ),
        None => None,
    };
    let mac_only_encrypted = matches!(text("mac_only_encrypted")?.as_deref(), Some("true" | "True"));
    Ok(CreationRule {
        path_regex,
        key_groups,
        shamir_threshold,
        rule,
        mac_only_encrypted,
    })
}

/// `age:` as a comma-separated string or a list.
fn recipients(v: Option<&Value>) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Str(s)) => out.extend(
            s.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(String::from),
        ),
        Some(Value::Seq(items)) => {
            for i in items {
                match i {
                    Value::Str(s) => out.extend(
                        s.split(',')
                            .map(str::trim)
                            .filter(|r| !r.is_empty())
                            .map(String::from),
                    ),
                    Value::Comment(_) => {}
                    _ => return Err("must list recipient strings".into()),
                }
            }
        }
        Some(_) => return Err("must be a string or a list".into()),
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|r| seen.insert(r.clone()));
    Ok(out)
}
