//! Pulumi ESC: one `open` of an environment per refresh batch (ESO opens, and so re-evaluates,
//! the environment once per key), then one read of the whole environment; every key is a
//! Pulumi property path (`a.b`, `a["b.c"]`, `list[0]`) resolved locally. The `Value` wrapper
//! (`{"value": ..., "secret": ..., "trace": ...}`) is unwrapped recursively and `trace` ignored.

use serde_json::Value as Json;
use zeroize::Zeroizing;

use super::values::json_text;
use super::{Calls, Fetched};

/// The default API base.
pub const DEFAULT_API: &str = "https://api.pulumi.com/api/esc";

/// An ESC environment.
#[derive(Clone)]
pub struct Esc {
    http: reqwest::Client,
    base: String,
    env_path: String,
    token: Zeroizing<String>,
}

impl std::fmt::Debug for Esc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Esc")
            .field("env", &self.env_path)
            .finish_non_exhaustive()
    }
}

impl Esc {
    /// The environment `org/project/env` at `base`.
    pub fn new(
        http: reqwest::Client,
        base: Option<&str>,
        org: &str,
        project: &str,
        env: &str,
        token: Zeroizing<String>,
    ) -> Self {
        Self {
            http,
            base: base.unwrap_or(DEFAULT_API).trim_end_matches('/').to_owned(),
            env_path: format!("{org}/{project}/{env}"),
            token,
        }
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Json, String> {
        let resp = req
            .header("Authorization", format!("token {}", self.token.as_str()))
            .header("Accept", "application/json")
            .header("User-Agent", "lockstep")
            .send()
            .await
            .map_err(|e| format!("{what} {}: {e}", self.env_path))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("{what} {}: {e}", self.env_path))?;
        if !status.is_success() {
            // Error bodies carry a message and diagnostics, never the environment's values.
            let msg = serde_json::from_slice::<Json>(&body)
                .ok()
                .and_then(|j| j.get("message").and_then(Json::as_str).map(str::to_owned))
                .unwrap_or_default();
            return Err(format!(
                "{what} {}: HTTP {} {msg}",
                self.env_path,
                status.as_u16()
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|_| format!("{what} {}: the response is not JSON", self.env_path))
    }

    /// Opens the environment once and resolves every key (a property path) in it.
    pub async fn read_many(&self, reads: &[(String, Option<String>)], calls: &Calls) -> Vec<Fetched> {
        let env = match self.open(calls).await {
            Ok(e) => e,
            Err(m) => return reads.iter().map(|_| Fetched::Failed(m.clone())).collect(),
        };
        reads
            .iter()
            .map(|(key, _)| match path(key) {
                Err(m) => Fetched::Failed(m),
                Ok(p) => match lookup(&env, &p) {
                    None => Fetched::NotFound,
                    Some(v) => Fetched::Value(Zeroizing::new(json_text(v).into_bytes())),
                },
            })
            .collect()
    }

    /// `POST .../open` then `GET .../open/{id}`: the environment's properties, unwrapped.
    async fn open(&self, calls: &Calls) -> Result<Json, String> {
        let url = format!("{}/environments/{}/open", self.base, self.env_path);
        calls.count("pulumi", "OpenEnvironment");
        let opened = self.call(self.http.post(&url), "opening").await?;
        let id = opened
            .get("id")
            .and_then(Json::as_str)
            .ok_or_else(|| format!("opening {}: no session id in the response", self.env_path))?;
        calls.count("pulumi", "ReadOpenEnvironment");
        let env = self.call(self.http.get(format!("{url}/{id}")), "reading").await?;
        let props = env
            .get("properties")
            .cloned()
            .unwrap_or(Json::Object(Default::default()));
        Ok(Json::Object(
            props
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), unwrap(v))).collect())
                .unwrap_or_default(),
        ))
    }
}

/// Unwraps ESC's `Value` recursively: `{"value": x, ...}` → x; `trace`, `secret`, `unknown`
/// ignored; anything not wrapped is taken as it is.
pub fn unwrap(v: &Json) -> Json {
    let inner = match v {
        Json::Object(m) if m.contains_key("value") => &m["value"],
        other => other,
    };
    match inner {
        Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), unwrap(v))).collect()),
        Json::Array(a) => Json::Array(a.iter().map(unwrap).collect()),
        other => other.clone(),
    }
}

/// One step of a property path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A key.
    Key(String),
    /// An index.
    Index(usize),
}

/// Parses a Pulumi property path: `a.b`, `a["b.c"]`, `list[0]`, `["root key"].x`.
pub fn path(p: &str) -> Result<Vec<Step>, String> {
    let bad = || format!("{p:?} is not a property path (a.b, a[\"b.c\"], list[0])");
    let cs: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        match cs[i] {
            '.' if i > 0 => i += 1,
            '[' => {
                if cs.get(i + 1) == Some(&'"') {
                    let end = cs[i + 2..].iter().position(|&c| c == '"').ok_or_else(bad)? + i + 2;
                    if cs.get(end + 1) != Some(&']') {
                        return Err(bad());
                    }
                    out.push(Step::Key(cs[i + 2..end].iter().collect()));
                    i = end + 2;
                } else {
                    let end = cs[i..].iter().position(|&c| c == ']').ok_or_else(bad)? + i;
                    let n: String = cs[i + 1..end].iter().collect();
                    out.push(Step::Index(n.parse().map_err(|_| bad())?));
                    i = end + 1;
                }
            }
            _ => {
                let st = i;
                while i < cs.len() && cs[i] != '.' && cs[i] != '[' {
                    i += 1;
                }
                if st == i {
                    return Err(bad());
                }
                out.push(Step::Key(cs[st..i].iter().collect()));
            }
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

fn lookup<'a>(v: &'a Json, p: &[Step]) -> Option<&'a Json> {
    p.iter().try_fold(v, |v, s| match s {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(*i),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_and_tolerant_unwrapping() {
        assert_eq!(
            path(r#"db["host.name"].ports[1]"#).unwrap(),
            vec![
                Step::Key("db".into()),
                Step::Key("host.name".into()),
                Step::Key("ports".into()),
                Step::Index(1)
            ]
        );
        assert!(path("a[x]").is_err());
        let wrapped = serde_json::json!({
            "value": {
                "db": { "value": { "password": { "value": "pw", "secret": true,
                    "trace": { "def": { "begin": { "line": 1 } } } } },
                    "trace": {} },
                "list": { "value": [ { "value": 1 }, { "value": "two" } ] },
                "plain": "x"
            }
        });
        let env = unwrap(&wrapped);
        assert_eq!(lookup(&env, &path("db.password").unwrap()).unwrap(), "pw");
        assert_eq!(lookup(&env, &path("list[1]").unwrap()).unwrap(), "two");
        assert_eq!(lookup(&env, &path("plain").unwrap()).unwrap(), "x");
        assert!(lookup(&env, &path("db.nope").unwrap()).is_none());
    }
}
