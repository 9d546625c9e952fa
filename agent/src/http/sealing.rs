//! kubeseal's endpoints: the newest sealing certificate, and `--validate` and `--re-encrypt`
//! of a SealedSecret (RSA private operations: rate-limited, on a blocking thread).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lockstep_formats::sealed;

use super::Admin;
use crate::secrets::sealing::SealingKeys;

pub(super) async fn cert(State(a): State<Admin>) -> Response {
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
    f: impl FnOnce(&SealingKeys) -> T + Send + 'static,
) -> Result<T, Refusal> {
    if a.limiter.check().is_err() {
        return Err((StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded\n".into()));
    }
    let keys = a.keys.borrow().clone();
    tokio::task::spawn_blocking(move || f(&keys))
        .await
        .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "task failed\n".into()))
}

pub(super) async fn verify(State(a): State<Admin>, body: Bytes) -> Response {
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

pub(super) async fn rotate(State(a): State<Admin>, body: Bytes) -> Response {
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
