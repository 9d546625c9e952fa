//! The agent's HTTP endpoints, compatible with the sealed-secrets controller's so that
//! `kubeseal --fetch-cert|--validate|--re-encrypt` work against Lockstep unchanged:
//!
//! | path | what |
//! |---|---|
//! | `GET /healthz` | `ok` while the process runs |
//! | `GET /readyz` | 200 once every watch has listed ([`Readiness`]); 503 naming those that have not, and while shutting down |
//! | `GET /metrics` | Prometheus metrics (OpenMetrics text), see [`crate::reconciler::metrics`] |
//! | `GET /v1/cert.pem` | the newest sealing certificate (`application/x-pem-file`) |
//! | `POST /v1/verify` | a SealedSecret (JSON or YAML): 200 if every value opens, 409 if not |
//! | `POST /v1/rotate` | a SealedSecret: the same object re-encrypted with the newest key |
//! | `POST /v1/diff` | `{"namespace", "name"}` of a Sync: what a sync would change ([`crate::sync::diff::Report`], secret values redacted) |
//! | `POST /hook/{github,gitlab,generic}` | a signed push: the Syncs of that repository sync now ([`webhook`]) |
//!
//! There is no authentication here, as in sealed-secrets: access goes through the API server's
//! service proxy and RBAC (`services/proxy`). `verify` and `rotate` cost RSA private operations,
//! so they are rate-limited, and neither executes templates (no decryption oracle through a
//! crafted `template.data`; `rotate` keeps the scope the object's own annotations claim).
//! Responses never contain a secret value.

mod sealing;
pub mod webhook;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::reconciler::metrics::Metrics;
use crate::reconciler::{Differ, Readiness};
use crate::secrets::sealing::LiveKeys;

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

/// Shared state of the endpoints.
#[derive(Clone)]
pub struct Admin {
    keys: LiveKeys,
    ready: Readiness,
    limiter: Arc<DefaultDirectRateLimiter>,
    metrics: Option<Metrics>,
    webhook: Option<webhook::Receiver>,
    differ: Option<Differ>,
}

/// The largest webhook body accepted (GitHub caps payloads at 25 MB; pushes are far smaller).
const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

impl Admin {
    /// Endpoints serving `keys`, allowing `per_second` verify/rotate requests (burst twice that).
    pub fn new(keys: LiveKeys, per_second: u32) -> Self {
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
    pub fn with_differ(mut self, differ: Differ) -> Self {
        self.differ = Some(differ);
        self
    }

    /// Also receives webhooks on `/hook/{provider}`.
    #[must_use]
    pub fn with_webhook(mut self, receiver: webhook::Receiver) -> Self {
        self.webhook = Some(receiver);
        self
    }

    /// The readiness gates `/readyz` reports.
    pub fn readiness(&self) -> &Readiness {
        &self.ready
    }

    /// Also serves `metrics` on `/metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/v1/cert.pem", get(sealing::cert))
            .route("/v1/verify", post(sealing::verify))
            .route("/v1/rotate", post(sealing::rotate))
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
    let why = if a.ready.is_stopping() {
        "shutting down\n".to_owned()
    } else {
        format!("waiting for: {}\n", pending.join(", "))
    };
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

async fn diff(State(a): State<Admin>, body: Bytes) -> Response {
    use crate::reconciler::Error;
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
        Err(e @ Error::NotFound { .. }) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}

async fn hook(
    State(a): State<Admin>,
    Path(provider): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    use webhook::{Error, Handled, Provider, Refused};
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
