//! The part of ESO's template engine (Go `text/template` with Sprig) that users rely on most,
//! written by hand because no maintained Rust crate speaks Go templates: text with `{{ }}`
//! actions (and `{{-`/`-}}` trimming), each a pipeline of commands joined by `|`, whose
//! operands are fields (`.password`, `.`), string, number and boolean literals, parenthesised
//! pipelines and the functions in [`FUNCTIONS`]. A missing key is an error (ESO's
//! `missingkey=error`). Control structures (`if`, `range`, `with`, `define`, ...) and any other
//! function are refused with an error naming them; nothing is silently left out.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value as Json;

/// The functions supported, for messages and docs.
pub const FUNCTIONS: &[&str] = &[
    "b64enc", "b64dec", "fromJson", "toJson", "index", "default", "printf", "upper", "lower", "trim",
    "quote", "toString", "replace",
];

/// A template error: where (the action) and what, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template action {action}: {message}")]
pub struct TemplateError {
    /// The action's number (1-based) in the template.
    pub action: usize,
    /// What is wrong.
    pub message: String,
}

/// Renders `template` with `data` (the fetched values) as `.`.
pub fn render(template: &str, data: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let dot = Json::Object(
        data.iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    );
    let mut out = String::new();
    let mut rest = template;
    let mut n = 0;
    while let Some(start) = rest.find("{{") {
        n += 1;
        let err = |m: String| TemplateError {
            action: n,
            message: m,
        };
        let mut text = &rest[..start];
        let mut inner = &rest[start + 2..];
        if let Some(s) = inner
            .strip_prefix('-')
            .filter(|s| s.starts_with([' ', '\t', '\n', '\r']))
        {
            text = text.trim_end();
            inner = s;
        }
        out.push_str(text);
        let end = inner
            .find("}}")
            .ok_or_else(|| err("unclosed action (no `}}`)".into()))?;
        let mut body = &inner[..end];
        rest = &inner[end + 2..];
        if let Some(b) = body
            .strip_suffix('-')
            .filter(|b| b.ends_with([' ', '\t', '\n', '\r']))
        {
            body = b;
            rest = rest.trim_start();
        }
        let body = body.trim();
        if body.starts_with("/*") {
            continue; // a comment
        }
        let tokens = lex(body).map_err(err)?;
        let mut p = Parser { tokens, pos: 0 };
        let value = p.pipeline(&dot).map_err(err)?;
        if p.pos != p.tokens.len() {
            return Err(err("unexpected text after the pipeline".into()));
        }
        out.push_str(&display(&value));
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Ident(String),
    Str(String),
    Num(f64),
    Pipe,
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            v.push(match cs.get(i) {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('r') => '\r',
                                Some(&o) => o,
                                None => return Err("unterminated string".into()),
                            });
                        }
                        Some(&o) => v.push(o),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Str(v));
            }
            '`' => {
                let end = cs[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or("unterminated raw string")?;
                out.push(Tok::Str(cs[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            '.' => {
                let mut path = Vec::new();
                while cs.get(i) == Some(&'.') {
                    i += 1;
                    let st = i;
                    while cs.get(i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                        i += 1;
                    }
                    if i > st {
                        path.push(cs[st..i].iter().collect());
                    }
                }
                out.push(Tok::Field(path));
            }
            '$' => return Err("variables (`$`) are not supported".into()),
            c if c.is_ascii_digit() || c == '-' => {
                let st = i;
                i += 1;
                while cs.get(i).is_some_and(|c| c.is_ascii_digit() || *c == '.') {
                    i += 1;
                }
                let t: String = cs[st..i].iter().collect();
                out.push(Tok::Num(t.parse().map_err(|_| format!("bad number `{t}`"))?));
            }
            c if c.is_alphabetic() || c == '_' => {
                let st = i;
                while cs.get(i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(cs[st..i].iter().collect()));
            }
            other => return Err(format!("unexpected character `{other}`")),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn pipeline(&mut self, dot: &Json) -> Result<Json, String> {
        let mut value = self.command(dot, None)?;
        while self.tokens.get(self.pos) == Some(&Tok::Pipe) {
            self.pos += 1;
            value = self.command(dot, Some(value))?;
        }
        Ok(value)
    }

    /// One command; `piped` is the previous command's result, passed as the last argument.
    fn command(&mut self, dot: &Json, piped: Option<Json>) -> Result<Json, String> {
        match self.tokens.get(self.pos).cloned() {
            Some(Tok::Ident(name)) if !matches!(name.as_str(), "true" | "false" | "nil") => {
                self.pos += 1;
                let mut args = Vec::new();
                while let Some(t) = self.tokens.get(self.pos) {
                    if matches!(t, Tok::Pipe | Tok::Close) {
                        break;
                    }
                    args.push(self.operand(dot)?);
                }
                args.extend(piped);
                call(&name, args)
            }
            Some(_) => {
                let v = self.operand(dot)?;
                match piped {
                    None => Ok(v),
                    Some(_) => Err("only a function can follow `|`".into()),
                }
            }
            None => Err("empty command".into()),
        }
    }

    fn operand(&mut self, dot: &Json) -> Result<Json, String> {
        let t = self.tokens.get(self.pos).cloned().ok_or("missing operand")?;
        self.pos += 1;
        match t {
            Tok::Field(path) => {
                let mut v = dot;
                for p in &path {
                    v = v
                        .get(p)
                        .ok_or_else(|| format!("map has no entry for key \"{p}\""))?;
                }
                Ok(v.clone())
            }
            Tok::Str(s) => Ok(Json::String(s)),
            Tok::Num(n) => Ok(serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)),
            Tok::Ident(i) if i == "true" => Ok(Json::Bool(true)),
            Tok::Ident(i) if i == "false" => Ok(Json::Bool(false)),
            Tok::Ident(i) if i == "nil" => Ok(Json::Null),
            Tok::Ident(name) => call(&name, Vec::new()),
            Tok::Open => {
                let mut v = self.pipeline(dot)?;
                if self.tokens.get(self.pos) != Some(&Tok::Close) {
                    return Err("missing `)`".into());
                }
                self.pos += 1;
                // A chain: `(pipeline).field.path`.
                if let Some(Tok::Field(path)) = self.tokens.get(self.pos).cloned() {
                    self.pos += 1;
                    for p in &path {
                        v = v
                            .get(p)
                            .cloned()
                            .ok_or_else(|| format!("map has no entry for key \"{p}\""))?;
                    }
                }
                Ok(v)
            }
            Tok::Pipe | Tok::Close => Err("unexpected `|` or `)`".into()),
        }
    }
}

/// How Go prints a value into the output.
fn display(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

fn arity(name: &str, args: &[Json], n: usize) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!("{name} takes {n} argument(s), got {}", args.len()))
    }
}

fn call(name: &str, args: Vec<Json>) -> Result<Json, String> {
    let s = |v: &Json| display(v);
    match name {
        "b64enc" => {
            arity(name, &args, 1)?;
            Ok(Json::String(
                base64::engine::general_purpose::STANDARD.encode(s(&args[0])),
            ))
        }
        "b64dec" => {
            arity(name, &args, 1)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s(&args[0]).trim())
                .map_err(|_| "b64dec: the value is not base64".to_owned())?;
            String::from_utf8(bytes)
                .map(Json::String)
                .map_err(|_| "b64dec: the decoded value is not UTF-8".into())
        }
        "fromJson" => {
            arity(name, &args, 1)?;
            serde_json::from_str(&s(&args[0]))
                .map_err(|e| format!("fromJson: not JSON (line {}, column {})", e.line(), e.column()))
        }
        "toJson" => {
            arity(name, &args, 1)?;
            Ok(Json::String(args[0].to_string()))
        }
        "index" => {
            let (first, keys) = args.split_first().ok_or("index needs a collection")?;
            let mut v = first.clone();
            for k in keys {
                v = match (&v, k) {
                    (Json::Object(m), k) => m.get(&s(k)).cloned().unwrap_or(Json::Null),
                    (Json::Array(a), Json::Number(n)) => n
                        .as_u64()
                        .and_then(|i| a.get(usize::try_from(i).ok()?))
                        .cloned()
                        .ok_or("index out of range")?,
                    _ => return Err("index: cannot index this value".into()),
                };
            }
            Ok(v)
        }
        "default" => {
            arity(name, &args, 2)?;
            let empty = match &args[1] {
                Json::Null => true,
                Json::String(x) => x.is_empty(),
                Json::Bool(b) => !b,
                Json::Number(n) => n.as_f64() == Some(0.0),
                Json::Array(a) => a.is_empty(),
                Json::Object(o) => o.is_empty(),
            };
            Ok(if empty { args[0].clone() } else { args[1].clone() })
        }
        "printf" => {
            let (fmt, rest) = args.split_first().ok_or("printf needs a format")?;
            printf(&s(fmt), rest).map(Json::String)
        }
        "upper" => one(name, &args, |x| x.to_uppercase()),
        "lower" => one(name, &args, |x| x.to_lowercase()),
        "trim" => one(name, &args, |x| x.trim().to_owned()),
        "quote" => one(name, &args, |x| format!("{x:?}")),
        "toString" => one(name, &args, |x| x.to_owned()),
        "replace" => {
            arity(name, &args, 3)?;
            Ok(Json::String(s(&args[2]).replace(&s(&args[0]), &s(&args[1]))))
        }
        "if" | "else" | "end" | "range" | "with" | "define" | "template" | "block" | "break" | "continue" => {
            Err(format!(
                "`{name}` is not supported; actions are pipelines of fields and the functions {}",
                FUNCTIONS.join(", ")
            ))
        }
        other => Err(format!(
            "function `{other}` is not supported (supported: {})",
            FUNCTIONS.join(", ")
        )),
    }
}

fn one(name: &str, args: &[Json], f: impl Fn(&str) -> String) -> Result<Json, String> {
    arity(name, args, 1)?;
    Ok(Json::String(f(&display(&args[0]))))
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %q %%`.
fn printf(fmt: &str, args: &[Json]) -> Result<String, String> {
    let mut out = String::new();
    let mut it = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(v @ ('s' | 'v' | 'd' | 'q')) => {
                let a = it.next().ok_or("printf: too few arguments")?;
                let text = display(a);
                if v == 'q' {
                    out.push_str(&format!("{text:?}"));
                } else {
                    out.push_str(&text);
                }
            }
            Some(v) => {
                return Err(format!(
                    "printf: verb `%{v}` is not supported (use %s, %v, %d, %q)"
                ));
            }
            None => return Err("printf: a lone `%` at the end".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn data() -> BTreeMap<String, String> {
        [
            ("user", "admin"),
            ("password", "s3cr3t"),
            ("my-key", "dashed"),
            ("config", r#"{"host":"db","port":5432,"tags":["a","b"]}"#),
            ("encoded", "aGVsbG8="),
            ("empty", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn renders_what_eso_users_write() {
        let d = data();
        let cases = [
            ("{{ .password }}", "s3cr3t"),
            ("{{ .user }}:{{ .password }}", "admin:s3cr3t"),
            (r#"{{ index . "my-key" }}"#, "dashed"),
            ("{{ .password | b64enc }}", "czNjcjN0"),
            ("{{ .encoded | b64dec }}", "hello"),
            (
                r#"{{ printf "%s:%s" .user .password | b64enc }}"#,
                "YWRtaW46czNjcjN0",
            ),
            ("{{ (.config | fromJson).host }}", "db"),
            (r#"{{ index (.config | fromJson) "port" }}"#, "5432"),
            (r#"{{ .empty | default "fallback" }}"#, "fallback"),
            (r#"{{ .user | default "fallback" }}"#, "admin"),
            (
                "{{ .config | fromJson | toJson }}",
                r#"{"host":"db","port":5432,"tags":["a","b"]}"#,
            ),
            ("{{ .user | upper }}", "ADMIN"),
            ("a {{- .user -}} b", "aadminb"),
            ("{{/* comment */}}x", "x"),
            (
                r#"{"auths":{"r.io":{"auth":"{{ printf "%s:%s" .user .password | b64enc }}"}}}"#,
                r#"{"auths":{"r.io":{"auth":"YWRtaW46czNjcjN0"}}}"#,
            ),
        ];
        for (t, want) in cases {
            assert_eq!(render(t, &d).unwrap(), want, "{t}");
        }
    }

    #[test]
    fn refuses_clearly_and_never_echoes_values() {
        let d = data();
        for (t, needle) in [
            ("{{ .missing }}", "no entry for key \"missing\""),
            ("{{ if .user }}x{{ end }}", "`if` is not supported"),
            ("{{ range . }}x{{ end }}", "`range` is not supported"),
            ("{{ .user | sha256sum }}", "function `sha256sum` is not supported"),
            ("{{ .user ", "unclosed action"),
            ("{{ .password | fromJson }}", "fromJson: not JSON"),
            ("{{ .password | b64dec }}", "not base64"),
        ] {
            let e = render(t, &d).unwrap_err().to_string();
            assert!(e.contains(needle), "{t}: {e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }
}
