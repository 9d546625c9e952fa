//! Flux's `postBuild` variable substitution over one rendered object, as kustomize-controller
//! v1.9.6 does it (`fluxcd/pkg/kustomize` v1.35.7 `SubstituteVariables`): variables from
//! `substituteFrom` in order, then `substitute` over them, newlines stripped from values, names
//! checked against `^[_[:alpha:]][_[:alpha:][:digit:]]*$`, [`crate::envsubst`] in strict mode,
//! skipped for an object labelled or annotated `kustomize.toolkit.fluxcd.io/substitute:
//! disabled`, and nothing done when there are no variables (unless `Always`).
//!
//! Flux substitutes the object's YAML text (as `go.yaml.in/yaml/v2` writes it) and reads the
//! result back, so `replicas: ${n}` becomes a number. Here each string holding a `$` is
//! substituted on its own: a string yaml.v2 writes unquoted is read back as YAML would read it
//! there (`3` a number, `true`/`on` a boolean, `{a: 1}` a mapping, yaml.v2's YAML 1.1 rules);
//! a string it quotes, or writes as a block, stays a string. The result is the same as Flux's
//! but where a value would break out of the quotes Flux's text had (a `'` in a value put into
//! a single-quoted string). The error names the field, never a value.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::envsubst::{self, SubstError};
use crate::error::{Error, Result};

/// The label or annotation that opts an object out (value `disabled`).
pub const DISABLE_KEY: &str = "kustomize.toolkit.fluxcd.io/substitute";

/// The variables of one Sync, each with whether it came from a Secret.
#[derive(Default)]
pub struct Variables {
    vars: BTreeMap<String, (Zeroizing<Vec<u8>>, bool)>,
}

impl std::fmt::Debug for Variables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.vars.keys()).finish()
    }
}

impl Variables {
    /// Sets `name` (a later source overrides an earlier one), newlines removed as Flux does.
    pub fn insert(&mut self, name: &str, value: &[u8], from_secret: bool) {
        let v: Vec<u8> = value.iter().copied().filter(|&b| b != b'\n').collect();
        self.vars
            .insert(name.to_owned(), (Zeroizing::new(v), from_secret));
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Whether a variable came from a Secret.
    pub fn any_secret(&self) -> bool {
        self.vars.values().any(|(_, secret)| *secret)
    }

    /// The names set.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }
}

/// How to substitute.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// A variable used without a default must be set (Flux's default since v1.9.0).
    pub strict: bool,
    /// Substitute even with no variables (`substituteStrategy: Always`).
    pub always: bool,
}

/// What [`substitute`] did to an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// A field changed.
    pub changed: bool,
    /// A variable from a Secret was read: the object now holds secret material.
    pub used_secret: bool,
}

/// Whether `object` opts out (label or annotation [`DISABLE_KEY`]` = disabled`).
pub fn disabled(object: &serde_json::Value) -> bool {
    ["labels", "annotations"].iter().any(|m| {
        object
            .get("metadata")
            .and_then(|md| md.get(m))
            .and_then(|l| l.get(DISABLE_KEY))
            .and_then(|v| v.as_str())
            == Some("disabled")
    })
}

/// Substitutes `vars` into `object` in place (unless it opts out or there is nothing to do).
pub fn substitute(object: &mut serde_json::Value, vars: &Variables, opts: Options) -> Result<Outcome> {
    if disabled(object) || (vars.is_empty() && !opts.always) {
        return Ok(Outcome::default());
    }
    if let Some(bad) = vars.names().find(|n| !valid_name(n)) {
        return Err(Error::VariableName { name: bad.to_owned() });
    }
    let used_secret = std::cell::Cell::new(false);
    let lookup = |name: &str| {
        vars.vars.get(name).map(|(v, secret)| {
            if *secret {
                used_secret.set(true);
            }
            v.clone()
        })
    };
    let mut path = String::new();
    let changed = walk(object, &mut path, &lookup, opts.strict)?;
    Ok(Outcome {
        changed,
        used_secret: used_secret.get(),
    })
}

/// `^[_[:alpha:]][_[:alpha:][:digit:]]*$` (ASCII classes, as in Go's RE2).
fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}

type Lookup<'a> = dyn Fn(&str) -> Option<Zeroizing<Vec<u8>>> + 'a;

fn walk(v: &mut serde_json::Value, path: &mut String, lookup: &Lookup<'_>, strict: bool) -> Result<bool> {
    use serde_json::Value as J;
    let mut changed = false;
    match v {
        J::String(s) if s.contains('$') => {
            let new = substitute_scalar(s, path, lookup, strict)?;
            if new != J::String(s.clone()) {
                *v = new;
                changed = true;
            }
        }
        J::Array(items) => {
            let len = path.len();
            for (i, item) in items.iter_mut().enumerate() {
                path.push_str(&format!("[{i}]"));
                changed |= walk(item, path, lookup, strict)?;
                path.truncate(len);
            }
        }
        J::Object(map) => {
            let len = path.len();
            let keyed: Vec<String> = map.keys().filter(|k| k.contains('$')).cloned().collect();
            for key in keyed {
                push_key(path, &key);
                let new = substitute_text(key.as_bytes(), path, lookup, strict)?;
                path.truncate(len);
                if new != key
                    && let Some(value) = map.remove(&key)
                {
                    map.insert(new, value);
                    changed = true;
                }
            }
            for (key, item) in map.iter_mut() {
                push_key(path, key);
                changed |= walk(item, path, lookup, strict)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(changed)
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn substitute_text(text: &[u8], path: &str, lookup: &Lookup<'_>, strict: bool) -> Result<String> {
    let out = envsubst::eval(text, strict, lookup).map_err(|reason| substitution(path, reason))?;
    String::from_utf8(out.to_vec()).map_err(|_| Error::Substituted {
        path: path.to_owned(),
        message: "the result is not valid UTF-8".into(),
    })
}

fn substitution(path: &str, reason: SubstError) -> Error {
    Error::Substitution {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// One string, substituted and read back as yaml.v2 would read it where it wrote it.
fn substitute_scalar(s: &str, path: &str, lookup: &Lookup<'_>, strict: bool) -> Result<serde_json::Value> {
    if s.contains('\n')
        && let Some(block) = literal_block(s)
    {
        let text = Zeroizing::new(substitute_text(block.as_bytes(), path, lookup, strict)?);
        if !s.starts_with([' ', '\n']) && tab_before_indentation(&text) {
            return Err(Error::Substituted {
                path: path.to_owned(),
                message: "the result does not read as YAML: a tab where an indentation space is expected"
                    .into(),
            });
        }
        return read_yaml(&text, path);
    }
    let text = Zeroizing::new(substitute_text(s.as_bytes(), path, lookup, strict)?);
    if s.contains('\n') || !plain_allowed(s) {
        return Ok(serde_json::Value::String(text.to_string()));
    }
    read_plain(&text, path)
}

/// libyaml detecting a block's indentation: a tab before the first line's text is an error.
fn tab_before_indentation(block: &str) -> bool {
    for line in block.lines().skip(1) {
        let rest = line.trim_start_matches(' ');
        if rest.starts_with('\t') {
            return true;
        }
        if !rest.is_empty() {
            return false;
        }
    }
    false
}

/// `k: |…` as libyaml writes a multi-line string (`yaml_emitter_write_block_scalar_hints`: an
/// indentation indicator when it starts with a space or a break, `-`/`+` chomping), or `None`
/// when libyaml would quote it instead (a space before a break or at the end, a character it
/// does not print).
fn literal_block(s: &str) -> Option<Zeroizing<String>> {
    if s.ends_with(' ') || s.contains(" \n") || s.chars().any(|c| c != '\n' && !printable(c)) {
        return None;
    }
    let mut out = Zeroizing::new(String::with_capacity(s.len() + 16));
    out.push_str("k: |");
    if s.starts_with([' ', '\n']) {
        out.push('2');
    }
    let b = s.as_bytes();
    if !s.ends_with('\n') {
        out.push('-');
    } else if b.len() == 1 || b[b.len() - 2] == b'\n' {
        out.push('+');
    }
    out.push('\n');
    for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
        if !line.is_empty() {
            out.push_str("  ");
            out.push_str(line);
        }
        out.push('\n');
    }
    Some(out)
}

/// A value written unquoted in a block mapping, read back.
fn read_plain(text: &str, path: &str) -> Result<serde_json::Value> {
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    if text.starts_with('\t') {
        // libyaml: a tab cannot start a token.
        return Err(Error::Substituted {
            path: path.to_owned(),
            message: "the result does not read as YAML: it starts with a tab".into(),
        });
    }
    if plain_allowed(text) && !text.contains('\n') {
        return resolve_v2(text).ok_or_else(|| Error::Substituted {
            path: path.to_owned(),
            message: "the result is a NaN or infinite float, which JSON cannot hold".into(),
        });
    }
    read_yaml(&Zeroizing::new(format!("k: {text}\n")), path)
}

/// The value of `k` in the one-entry document `doc`.
fn read_yaml(doc: &str, path: &str) -> Result<serde_json::Value> {
    let parsed = crate::yaml::load_documents(doc).map_err(|e| Error::Substituted {
        path: path.to_owned(),
        message: format!("the result does not read as YAML: {e}"),
    })?;
    let value = parsed
        .first()
        .and_then(|d| d.get("k"))
        .cloned()
        .unwrap_or(crate::tree::Value::Null);
    crate::sops::stores::to_json(&value).map_err(|e| Error::Substituted {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// yaml.v2 `resolve("", s)` of a plain scalar, as JSON (sigs.k8s.io/yaml's `YAMLToJSON`);
/// `None` for NaN and infinities, which JSON cannot hold.
fn resolve_v2(s: &str) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Some(J::Bool(true));
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Some(J::Bool(false));
        }
        "~" | "null" | "Null" | "NULL" => return Some(J::Null),
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf"
        | "-.Inf" | "-.INF" => return None,
        _ => {}
    }
    let first = s.as_bytes()[0];
    // Go's `ParseFloat` fails on what overflows to infinity (the scalar stays a string), and Go's
    // JSON writes a whole float below 1e21 without an exponent, which then reads back as an
    // integer.
    let float = |f: f64| -> J {
        if !f.is_finite() {
            J::String(s.to_owned())
        } else if f.fract() == 0.0 && f.abs() < 1e21 {
            // Go's shortest digits, padded with zeros: 9223372036854775808 is written
            // 9223372036854776000.
            let sci = format!("{f:e}");
            let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
            let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
            let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
            let zeros = exp.parse::<usize>().unwrap_or(0).saturating_sub(digits.len() - 1);
            serde_json::from_str(&format!("{sign}{digits}{}", "0".repeat(zeros))).unwrap_or(J::Null)
        } else {
            serde_json::Number::from_f64(f).map_or(J::Null, J::Number)
        }
    };
    // Go's `ParseFloat` and Rust's agree on these decimal forms (a `.`-first scalar, or one the
    // float pattern matched).
    if first == b'.' {
        return Some(match s.parse::<f64>() {
            Ok(f) => float(f),
            Err(_) => J::String(s.to_owned()),
        });
    }
    if !(first.is_ascii_digit() || first == b'-' || first == b'+') {
        return Some(J::String(s.to_owned()));
    }
    if crate::yaml::parse_timestamp(s).is_some() {
        return Some(J::String(s.to_owned()));
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    match crate::yaml::go_parse_int(&plain) {
        crate::yaml::IntParse::Int(i) => return Some(J::from(i)),
        // `ParseUint` takes no sign.
        crate::yaml::IntParse::Overflow(u) if !plain.starts_with('+') => return Some(J::from(u)),
        crate::yaml::IntParse::Overflow(_) => {}
        crate::yaml::IntParse::Invalid => {}
    }
    if crate::yaml::is_yaml_style_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
    {
        return Some(float(f));
    }
    // Binary (`0b…`, `-0b…`) is Go's base-0 `ParseInt` above: yaml.v2's own retry of it finds
    // nothing more.
    Some(J::String(s.to_owned()))
}

/// Whether libyaml (as yaml.v2 drives it) writes a one-line string unquoted in block context
/// (`yaml_emitter_analyze_scalar`, `block_plain_allowed`).
pub(crate) fn plain_allowed(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || s.contains('\n') {
        return false;
    }
    if b.starts_with(b"---") || b.starts_with(b"...") {
        return false;
    }
    if b[0] == b' ' || b[b.len() - 1] == b' ' {
        return false;
    }
    let blank_at = |i: usize| i >= b.len() || b[i] == b' ' || b[i] == b'\t';
    let mut preceded_by_blank = true;
    let mut i = 0;
    for c in s.chars() {
        let w = c.len_utf8();
        let followed_by_blank = blank_at(i + w);
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%' | '@'
                | '`' => return false,
                '?' | ':' | '-' if followed_by_blank => return false,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_blank => return false,
                '#' if preceded_by_blank => return false,
                _ => {}
            }
        }
        if !printable(c) {
            return false;
        }
        preceded_by_blank = c == ' ' || c == '\t';
        i += w;
    }
    true
}

/// libyaml's `is_printable` (a four-byte UTF-8 rune is not).
fn printable(c: char) -> bool {
    matches!(c, '\n' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        && c != '\u{feff}'
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        let mut v = Variables::default();
        for (k, val) in pairs {
            v.insert(k, val.as_bytes(), false);
        }
        v
    }

    const STRICT: Options = Options {
        strict: true,
        always: false,
    };

    #[test]
    fn types_follow_yaml_v2() {
        let v = vars(&[
            ("n", "3"),
            ("b", "on"),
            ("s", "web"),
            ("f", "1.5"),
            ("m", "{a: 1}"),
            ("e", ""),
        ]);
        let mut o = json!({
            "spec": { "replicas": "${n}", "enabled": "${b}", "name": "${s}-x", "ratio": "${f}",
                      "map": "${m}", "empty": "${e}", "quoted": "${n}: x", "multi": "a\n${n}" },
            "metadata": { "name": "app-${s}" }
        });
        let out = substitute(&mut o, &v, STRICT).unwrap();
        assert!(out.changed && !out.used_secret);
        assert_eq!(
            o,
            json!({
                "spec": { "replicas": 3, "enabled": true, "name": "web-x", "ratio": 1.5,
                          "map": { "a": 1 }, "empty": null, "quoted": "3: x", "multi": "a\n3" },
                "metadata": { "name": "app-web" }
            })
        );
    }

    #[test]
    fn opt_out_names_strict_and_secrets() {
        let v = vars(&[("a", "1")]);
        let mut off = json!({ "metadata": { "labels": { DISABLE_KEY: "disabled" } }, "x": "${nope}" });
        assert_eq!(substitute(&mut off, &v, STRICT).unwrap(), Outcome::default());

        let mut o = json!({ "metadata": { "name": "x" }, "spec": { "list": ["${missing}"] } });
        let e = substitute(&mut o, &v, STRICT).unwrap_err().to_string();
        assert!(e.contains("spec.list[0]") && e.contains("\"missing\""), "{e}");

        let mut bad = Variables::default();
        bad.insert("1x", b"v", false);
        let e = substitute(&mut json!({}), &bad, STRICT).unwrap_err().to_string();
        assert!(e.contains("'1x' var name is invalid"), "{e}");

        // No variables: nothing is done, unless Always.
        let mut o = json!({ "x": "${y:=d}" });
        substitute(&mut o, &Variables::default(), STRICT).unwrap();
        assert_eq!(o, json!({ "x": "${y:=d}" }));
        substitute(
            &mut o,
            &Variables::default(),
            Options {
                strict: true,
                always: true,
            },
        )
        .unwrap();
        assert_eq!(o, json!({ "x": "d" }));

        let mut s = Variables::default();
        s.insert("pw", b"hunter2\n", true);
        let mut o = json!({ "stringData": { "pw": "${pw}" } });
        let out = substitute(&mut o, &s, STRICT).unwrap();
        assert!(out.used_secret);
        assert_eq!(o, json!({ "stringData": { "pw": "hunter2" } }));
    }

    #[test]
    fn plain_analysis_matches_libyaml() {
        for s in ["${a}", "a-${b}", "x:y", "a #b", "-x", "${a}:"] {
            let want = !matches!(s, "a #b" | "${a}:");
            assert_eq!(plain_allowed(s), want, "{s}");
        }
        for s in ["#x", "- x", ": x", "'x", " x", "x ", "---x", "a: b", "a\tb", "😀"] {
            assert!(!plain_allowed(s), "{s}");
        }
    }
}
