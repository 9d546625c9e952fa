//! The agent's HTTP endpoints, compatible with the sealed-secrets controller's so that
//! `kubeseal --fetch-cert|--validate|--re-encrypt` work against Lockstep unchanged:
//!
//! | path | what |
//! |---|---|
//! | `GET /healthz` | `ok` while the process runs |
//! | `GET /readyz` | 200 once every watch has listed ([`Readiness`]); 503 naming those that have not, and while shutting down |
//! | `GET /metrics` | Prometheus metrics (OpenMetrics text), see [`crate::metrics`] |
//! | `GET /v1/cert.pem` | the newest sealing certificate (`application/x-pem-file`) |
//! | `POST /v1/verify` | a SealedSecret (JSON or YAML): 200 if every value opens, 409 if not |
//! | `POST /v1/rotate` | a SealedSecret: the same object re-encrypted with the newest key |
//! | `POST /v1/diff` | `{"namespace", "name"}` of a Sync: what a sync would change ([`crate::diff::Report`], secret values redacted) |
//! | `POST /hook/{github,gitlab,generic}` | a signed push: the Syncs of that repository sync now ([`crate::webhook`]) |
//!
//! There is no authentication here, as in sealed-secrets: access goes through the API server's
//! service proxy and RBAC (`services/proxy`). `verify` and `rotate` cost RSA private operations,
//! so they are rate-limited, and neither executes templates (no decryption oracle through a
//! crafted `template.data`; `rotate` keeps the scope the object's own annotations claim).
//! Responses never contain a secret value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lockstep_formats::sealed;

use crate::sealing::Live;

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or serving failed.
    #[error("HTTP server on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What `/readyz` waits for: named gates, each opened once (a watch's first list, the keys
/// loaded). Cheap to clone; every clone sees the same gates.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    gates: Arc<Mutex<BTreeMap<String, bool>>>,
    stopping: Arc<AtomicBool>,
}

/// A closed gate of [`Readiness`]; [`Gate::open`] opens it.
#[derive(Debug)]
pub struct Gate {
    name: String,
    of: Readiness,
}

impl Readiness {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.gates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a closed gate named `name` (`/readyz` says what it waits for by name).
    pub fn gate(&self, name: impl Into<String>) -> Gate {
        let name = name.into();
        self.lock().insert(name.clone(), false);
        Gate {
            name,
            of: self.clone(),
        }
    }

    /// The gates not yet open.
    pub fn pending(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, open)| !**open)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Marks the process as shutting down: not ready from now on.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether every gate is open and the process is not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.stopping.load(Ordering::Relaxed) && self.pending().is_empty()
    }
}

impl Gate {
    /// Opens the gate.
    pub fn open(self) {
        tracing::debug!(gate = %self.name, "ready");
        self.of.lock().insert(self.name, true);
    }
}

/// Shared state of the endpoints.
#[derive(Clone)]
pub struct Admin {
    keys: Live,
    ready: Readiness,
    limiter: Arc<DefaultDirectRateLimiter>,
    metrics: Option<crate::metrics::Metrics>,
    webhook: Option<crate::webhook::Receiver>,
    differ: Option<crate::controller::Differ>,
}

/// The largest webhook body accepted (GitHub caps payloads at 25 MB; pushes are far smaller).
const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

impl Admin {
    /// Endpoints serving `keys`, allowing `per_second` verify/rotate requests (burst twice that).
    pub fn new(keys: Live, per_second: u32) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        Self {
            keys,
            ready: Readiness::default(),
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))),
            metrics: None,
            webhook: None,
            differ: None,
        }
    }

    /// Also answers `/v1/diff`.
    #[must_use]
    pub fn with_differ(mut self, differ: crate::controller::Differ) -> Self {
        self.differ = Some(differ);
        self
    }

    /// Also receives webhooks on `/hook/{provider}`.
    #[must_use]
    pub fn with_webhook(mut self, receiver: crate::webhook::Receiver) -> Self {
        self.webhook = Some(receiver);
        self
    }

    /// The readiness gates `/readyz` reports.
    pub fn readiness(&self) -> &Readiness {
        &self.ready
    }

    /// Also serves `metrics` on `/metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/v1/cert.pem", get(cert))
            .route("/v1/verify", post(verify))
            .route("/v1/rotate", post(rotate))
            .route("/v1/diff", post(diff))
            .route(
                "/hook/{provider}",
                post(hook).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
            )
            .with_state(self.clone())
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Serve { addr, source })?;
        tracing::info!(%addr, "serving /healthz, /readyz, /metrics, /v1/cert.pem, /v1/verify, /v1/rotate, /hook/*");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Serve { addr, source })
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    match &a.metrics {
        Some(m) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            m.encode(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn readyz(State(a): State<Admin>) -> Response {
    if a.ready.is_ready() {
        return (StatusCode::OK, "ok\n").into_response();
    }
    let pending = a.ready.pending();
    let why = if a.ready.stopping.load(Ordering::Relaxed) {
        "shutting down\n".to_owned()
    } else {
        format!("waiting for: {}\n", pending.join(", "))
    };
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

async fn diff(State(a): State<Admin>, body: Bytes) -> Response {
    use crate::controller::Error;
    #[derive(serde::Deserialize)]
    struct Which {
        namespace: String,
        name: String,
    }
    let Some(differ) = &a.differ else {
        return (StatusCode::NOT_FOUND, "diffs are not served here\n").into_response();
    };
    let which: Which = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"namespace\": …, \"name\": …}}: {e}\n"),
            )
                .into_response();
        }
    };
    // A diff fetches, decrypts and dry-runs a whole revision.
    if a.limiter.check().is_err() {
        return (StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded\n").into_response();
    }
    match differ.diff(&which.namespace, &which.name).await {
        Ok(report) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&report).unwrap_or_default() + "\n",
        )
            .into_response(),
        Err(e @ Error::NotFound(_)) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}

async fn hook(
    State(a): State<Admin>,
    Path(provider): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    use crate::webhook::{Error, Handled, Provider, Refused};
    let Some(p) = Provider::from_path(&provider) else {
        return (
            StatusCode::NOT_FOUND,
            "unknown webhook provider (github, gitlab, generic)\n",
        )
            .into_response();
    };
    let Some(receiver) = &a.webhook else {
        return (
            StatusCode::NOT_FOUND,
            "webhooks are not configured (--webhook-secret)\n",
        )
            .into_response();
    };
    let out = receiver.handle(p, &headers, &body).await;
    let result = match &out {
        Ok(Handled::Triggered(_)) => "triggered",
        Ok(Handled::Ignored(_)) => "ignored",
        Err(Error::Refused(Refused::Unauthorized(_))) => "unauthorized",
        Err(Error::Refused(_)) => "refused",
        Err(_) => "failed",
    };
    if let Some(m) = &a.metrics {
        m.webhook(p.as_str(), result);
    }
    match out {
        Ok(Handled::Triggered(syncs)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "triggered": syncs }).to_string() + "\n",
        )
            .into_response(),
        Ok(Handled::Ignored(why)) => (StatusCode::OK, format!("{why}\n")).into_response(),
        Err(Error::Refused(r)) => {
            let code = match r {
                Refused::NotConfigured(_) => StatusCode::NOT_FOUND,
                Refused::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            (code, format!("{r}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn cert(State(a): State<Admin>) -> Response {
    let keys = a.keys.borrow().clone();
    match &keys.newest {
        Some((_, c)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            c.pem().to_owned(),
        )
            .into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no sealing key\n").into_response(),
    }
}

/// A refusal: status and a one-line reason.
type Refusal = (StatusCode, String);

/// Parses a request body (one SealedSecret, JSON or YAML).
fn parse(body: &[u8]) -> Result<serde_json::Value, Refusal> {
    let bad = |m: String| Err((StatusCode::BAD_REQUEST, m));
    let Ok(text) = std::str::from_utf8(body) else {
        return bad("the body is not UTF-8\n".into());
    };
    let docs = match lockstep_formats::yaml::load_documents(text) {
        Ok(d) => d,
        Err(e) => return bad(format!("{e}\n")),
    };
    let [doc] = docs.as_slice() else {
        return bad(format!(
            "expected one SealedSecret, found {} documents\n",
            docs.len()
        ));
    };
    match lockstep_formats::sops::stores::to_json(doc) {
        Ok(v) if v.get("kind").and_then(|k| k.as_str()) == Some("SealedSecret") => Ok(v),
        Ok(_) => bad("the body is not a SealedSecret\n".into()),
        Err(e) => bad(format!("{e}\n")),
    }
}

/// Runs `f` on a blocking thread when the rate limit allows (RSA private operations).
async fn limited<T: Send + 'static>(
    a: &Admin,
    f: impl FnOnce(&crate::sealing::Keys) -> T + Send + 'static,
) -> Result<T, Refusal> {
    if a.limiter.check().is_err() {
        return Err((StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded\n".into()));
    }
    let keys = a.keys.borrow().clone();
    tokio::task::spawn_blocking(move || f(&keys))
        .await
        .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "task failed\n".into()))
}

async fn verify(State(a): State<Admin>, body: Bytes) -> Response {
    let ss = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match limited(&a, move |k| sealed::object::verify(&ss, &k.ring)).await {
        Err(r) => r.into_response(),
        Ok(Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(e)) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}

async fn rotate(State(a): State<Admin>, body: Bytes) -> Response {
    let ss = match parse(&body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let out = limited(&a, move |k| match &k.newest {
        None => Err("no sealing key".to_owned()),
        Some((_, cert)) => sealed::object::reseal(&ss, &k.ring, cert).map_err(|e| e.to_string()),
    })
    .await;
    match out {
        Err(r) => r.into_response(),
        Ok(Ok(v)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_gate_opens_and_unready_when_stopping() {
        let r = Readiness::default();
        assert!(r.is_ready(), "no gates: nothing to wait for");
        let keys = r.gate("a sealing key");
        let syncs = r.gate("watch Syncs");
        assert_eq!(r.pending(), ["a sealing key", "watch Syncs"]);
        assert!(!r.is_ready());
        syncs.open();
        assert_eq!(r.pending(), ["a sealing key"]);
        keys.open();
        assert!(r.is_ready());
        r.stop();
        assert!(!r.is_ready(), "shutting down");
        assert!(r.pending().is_empty());
    }
}
