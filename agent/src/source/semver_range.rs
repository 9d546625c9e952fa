//! Version ranges as Flux and Helm read them (Masterminds/semver v3, pure): `||` between
//! alternatives; within one, constraints separated by commas or spaces (`>= 1.2, < 3`, `>=1.2
//! <3`); hyphen ranges (`1.2 - 1.4.5`); wildcards (`1.2.x`, `1.2.*`, `*`); `~`, `^`, `!=`,
//! `=<` and `=>`; a `v` prefix; a bare version is that version exactly (where Cargo would read
//! a caret). Pre-releases match only a constraint that names one. Built on the `semver` crate:
//! this translates the syntax, the crate compares.

use semver::{Version, VersionReq};

/// A parsed range.
#[derive(Clone, Debug)]
pub struct Range {
    alternatives: Vec<Alternative>,
}

#[derive(Clone, Debug)]
struct Alternative {
    req: VersionReq,
    excluded: Vec<VersionReq>,
}

impl Range {
    /// Parses `text`; the error says what does not parse.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut alternatives = Vec::new();
        for alt in text.split("||") {
            alternatives.push(alternative(alt)?);
        }
        Ok(Self { alternatives })
    }

    /// Whether `v` is within the range.
    pub fn matches(&self, v: &Version) -> bool {
        self.alternatives
            .iter()
            .any(|a| a.req.matches(v) && !a.excluded.iter().any(|x| x.matches(v)))
    }
}

/// A version as written in a tag or a chart index (`v` prefix allowed).
pub fn version(text: &str) -> Option<Version> {
    let t = text.trim();
    Version::parse(t.strip_prefix('v').unwrap_or(t)).ok()
}

/// Every operator, two-character ones first (the order [`split_operator`] tries them in).
const OPERATORS: [&str; 11] = ["!=", ">=", "<=", "=<", "=>", "~>", ">", "<", "=", "~", "^"];

fn alternative(text: &str) -> Result<Alternative, String> {
    let words: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return Err("an empty constraint".into());
    }
    // Join an operator written apart from its version (`>= 1.2`), and hyphen ranges.
    let mut constraints: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if i + 2 < words.len() && words[i + 1] == "-" {
            constraints.push(format!(">={w}"));
            constraints.push(format!("<={}", words[i + 2]));
            i += 3;
            continue;
        }
        if OPERATORS.contains(&w) && i + 1 < words.len() {
            constraints.push(format!("{w}{}", words[i + 1]));
            i += 2;
            continue;
        }
        constraints.push(w.to_owned());
        i += 1;
    }
    let mut parts = Vec::new();
    let mut excluded = Vec::new();
    for c in constraints {
        let (op, rest) = split_operator(&c);
        let rest = rest.strip_prefix('v').unwrap_or(rest);
        if rest.is_empty() {
            return Err(format!("`{c}` has no version"));
        }
        let op = match op {
            "=<" => "<=",
            "=>" => ">=",
            "~>" => "~",
            // A bare version is exact; a bare wildcard is any version.
            "" if matches!(rest, "*" | "x" | "X") => "",
            "" => "=",
            other => other,
        };
        if op == "!=" {
            excluded.push(VersionReq::parse(&format!("={rest}")).map_err(|e| format!("`{c}`: {e}"))?);
        } else {
            parts.push(format!("{op}{rest}"));
        }
    }
    let req = if parts.is_empty() {
        VersionReq::STAR
    } else {
        VersionReq::parse(&parts.join(", ")).map_err(|e| format!("`{}`: {e}", text.trim()))?
    };
    Ok(Alternative { req, excluded })
}

fn split_operator(c: &str) -> (&str, &str) {
    for op in OPERATORS {
        if let Some(rest) = c.strip_prefix(op) {
            return (op, rest);
        }
    }
    ("", c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn m(range: &str, v: &str) -> bool {
        Range::parse(range).unwrap().matches(&version(v).unwrap())
    }

    #[test]
    fn masterminds_ranges() {
        let cases: &[(&str, &str, bool)] = &[
            ("1.2.3", "1.2.3", true),
            ("1.2.3", "1.2.4", false),
            ("v1.2.3", "1.2.3", true),
            ("=1.2", "1.2.9", true),
            (">= 1.2, < 3.0.0", "2.9.9", true),
            (">=1.2 <3", "3.0.0", false),
            (">= 1.2, < 3.0.0 || >= 4.2.3", "4.5.0", true),
            (">= 1.2, < 3.0.0 || >= 4.2.3", "3.5.0", false),
            ("1.2 - 1.4.5", "1.4.5", true),
            ("1.2 - 1.4.5", "1.4.6", false),
            ("1.2 - 1.4.5", "1.1.9", false),
            ("1.2.x", "1.2.7", true),
            ("1.2.*", "1.3.0", false),
            ("*", "9.9.9", true),
            ("x", "0.1.0", true),
            ("~1.2.3", "1.2.9", true),
            ("~1.2.3", "1.3.0", false),
            ("^1.2.3", "1.9.0", true),
            ("^1.2.3", "2.0.0", false),
            ("^0.2.3", "0.3.0", false),
            (">=1.0.0, !=1.4.0", "1.4.0", false),
            (">=1.0.0, !=1.4.0", "1.4.1", true),
            ("=<1.5", "1.5.3", true),
            ("=> 2", "2.0.0", true),
            (">=1.0.0", "1.5.0-rc.1", false),
            (">=1.5.0-rc.0", "1.5.0-rc.1", true),
        ];
        for &(range, v, want) in cases {
            assert_eq!(m(range, v), want, "{range} against {v}");
        }
    }

    #[test]
    fn bad_ranges_say_what_does_not_parse() {
        assert!(Range::parse("not a range").is_err());
        assert!(Range::parse(">=").is_err());
        assert!(Range::parse("1.2 ||").is_err());
    }
}
