//! A fake of Pulumi ESC's REST API, the one stand-in among the peers: Pulumi publishes no
//! emulator. It answers what ESO and Lockstep call, as the service does (per `pulumi/esc-sdk`'s
//! swagger and the esc CLI): `POST {base}/environments/{org}/{project}/{env}/open` → `{"id"}`,
//! `GET …/open/{id}` → the environment (`properties`, every value wrapped in ESC's `Value` with
//! `trace`), `GET …/open/{id}?property=path` → one `Value`; `Authorization: token <t>` checked
//! (401 otherwise), unknown environments 404. It counts opens, and can be stopped and changed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value as Json, json};

#[derive(Default)]
struct Inner {
    envs: BTreeMap<String, Json>,
    sessions: BTreeMap<String, String>,
    opens: u64,
    reads: u64,
}

/// A running fake; stops when dropped.
pub struct EscFake {
    /// Base URL, as a store's `apiUrl` (`http://127.0.0.1:<port>/api/esc`).
    pub url: String,
    /// The access token it accepts.
    pub token: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EscFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Wraps plain JSON in ESC's `Value` (recursively, with a `trace` as the service writes it).
pub fn wrap(v: &Json, env: &str) -> Json {
    let inner = match v {
        Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), wrap(v, env))).collect()),
        Json::Array(a) => Json::Array(a.iter().map(|v| wrap(v, env)).collect()),
        other => other.clone(),
    };
    json!({ "value": inner, "secret": v.is_string(), "trace": { "def": { "environment": env,
        "begin": { "line": 1, "column": 1, "byte": 0 }, "end": { "line": 1, "column": 9, "byte": 8 } } } })
}

type Shared = (Arc<Mutex<Inner>>, String);

fn authorised(h: &HeaderMap, token: &str) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("token {token}"))
}

async fn open(
    State((s, token)): State<Shared>,
    h: HeaderMap,
    Path((org, project, env)): Path<(String, String, String)>,
) -> Response {
    if !authorised(&h, &token) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({ "code": 401, "message": "Unauthorized: No credentials provided or are invalid." }),
            ),
        )
            .into_response();
    }
    let key = format!("{org}/{project}/{env}");
    let mut g = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !g.envs.contains_key(&key) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "code": 404, "message": format!("Environment '{key}' not found") })),
        )
            .into_response();
    }
    g.opens += 1;
    let id = format!("session-{}", g.opens);
    g.sessions.insert(id.clone(), key);
    axum::Json(json!({ "id": id, "diagnostics": [] })).into_response()
}

async fn read(
    State((s, token)): State<Shared>,
    h: HeaderMap,
    Path((_org, _project, _env, id)): Path<(String, String, String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !authorised(&h, &token) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut g = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    g.reads += 1;
    let Some(key) = g.sessions.get(&id).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let env = g.envs.get(&key).cloned().unwrap_or(Json::Null);
    match q.get("property") {
        Some(p) => match p.split('.').try_fold(&env, |v, k| v.get(k)) {
            Some(v) => axum::Json(wrap(v, &key)).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        None => {
            let props: serde_json::Map<String, Json> = env
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), wrap(v, &key))).collect())
                .unwrap_or_default();
            axum::Json(json!({ "exprs": {}, "properties": props, "schema": {} })).into_response()
        }
    }
}

impl EscFake {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let token = format!("pul-{:016x}", rand::random::<u64>());
        let app = axum::Router::new()
            .route("/api/esc/environments/{org}/{project}/{env}/open", post(open))
            .route("/api/esc/environments/{org}/{project}/{env}/open/{id}", get(read))
            .with_state((inner.clone(), token.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://127.0.0.1:{port}/api/esc"),
            token,
            inner,
            task,
        })
    }

    /// Sets an environment's values (plain JSON; served wrapped).
    pub fn set(&self, path: &str, values: Json) {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .envs
            .insert(path.to_owned(), values);
    }

    /// `(opens, reads)` so far.
    pub fn calls(&self) -> (u64, u64) {
        let g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (g.opens, g.reads)
    }
}
