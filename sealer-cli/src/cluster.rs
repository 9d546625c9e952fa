//! Talking to the agent's sealed-secrets-compatible endpoints (`/v1/cert.pem`, `/v1/verify`,
//! `/v1/rotate`) through the API server's service proxy, exactly as kubeseal does: read the
//! Service, take its first port's name, and call
//! `/api/v1/namespaces/{ns}/services/http:{name}:{port}/proxy/v1/...`. Also fetches certificates
//! from `http(s)://` URLs. Built with the default `cluster` feature; without it the CLI is
//! offline-only and never links kube, tokio or an HTTP client.

use crate::{CliError, Result};

/// Where the agent is.
#[derive(Clone, Debug)]
pub struct Controller {
    /// The agent's namespace.
    pub namespace: String,
    /// The agent's Service.
    pub name: String,
    /// kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then in-cluster).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// kubeconfig context.
    pub context: Option<String>,
}

#[cfg(feature = "cluster")]
fn cluster_err(what: &str) -> impl FnOnce(String) -> CliError + '_ {
    move |m| CliError::Cluster(format!("{what}: {m}"))
}

#[cfg(feature = "cluster")]
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    // One rustls crypto provider everywhere: aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Cluster(format!("starting the runtime: {e}")))
}

#[cfg(feature = "cluster")]
async fn client(c: &Controller) -> Result<kube::Client> {
    client_for(c.kubeconfig.clone(), c.context.clone()).await
}

/// A client from a kubeconfig file and context (default: `KUBECONFIG`, `~/.kube/config`, or
/// the pod's ServiceAccount). A `KUBECONFIG` listing several files is left to kube to read.
#[cfg(feature = "cluster")]
pub(crate) async fn client_for(
    kubeconfig: Option<std::path::PathBuf>,
    context: Option<String>,
) -> Result<kube::Client> {
    let kubeconfig = kubeconfig.filter(|p| !p.as_os_str().to_string_lossy().contains(':'));
    let options = kube::config::KubeConfigOptions {
        context: context.clone(),
        ..Default::default()
    };
    let kerr = |e: kube::config::KubeconfigError| CliError::Cluster(format!("kubeconfig: {e}"));
    let config = match (&kubeconfig, &context) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| CliError::Cluster(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(kerr)?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options).await.map_err(kerr)?,
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| CliError::Cluster(format!("kubeconfig: {e}")))?,
    };
    kube::Client::try_from(config).map_err(|e| CliError::Cluster(format!("kube client: {e}")))
}

/// The proxy path prefix of the agent's Service (`.../proxy`).
#[cfg(feature = "cluster")]
async fn proxy_base(client: &kube::Client, c: &Controller) -> Result<String> {
    use k8s_openapi::api::core::v1::Service;
    let svc = kube::Api::<Service>::namespaced(client.clone(), &c.namespace)
        .get(&c.name)
        .await
        .map_err(|e| {
            CliError::Cluster(format!(
                "service {}/{}: {e} (set --controller-namespace/--controller-name)",
                c.namespace, c.name
            ))
        })?;
    let port = svc
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.into_iter().next())
        .and_then(|p| p.name)
        .unwrap_or_default();
    Ok(format!(
        "/api/v1/namespaces/{}/services/http:{}:{port}/proxy",
        c.namespace, c.name
    ))
}

/// `(status, body)` of one request through the proxy.
#[cfg(feature = "cluster")]
async fn call(
    client: &kube::Client,
    method: http::Method,
    uri: &str,
    body: Vec<u8>,
) -> Result<(u16, String)> {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::ACCEPT, "application/x-pem-file, */*")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    match client.request_text(req).await {
        Ok(text) => Ok((200, text)),
        Err(kube::Error::Api(s)) => Ok((s.code, s.message)),
        Err(e) => Err(CliError::Cluster(format!("{uri}: {e}"))),
    }
}

/// `(status, body)` of a POST to the agent's `endpoint` through the service proxy.
#[cfg(feature = "cluster")]
pub(crate) async fn post(
    client: &kube::Client,
    c: &Controller,
    endpoint: &str,
    body: Vec<u8>,
) -> Result<(u16, String)> {
    let base = proxy_base(client, c).await?;
    call(client, http::Method::POST, &format!("{base}{endpoint}"), body).await
}

/// The agent's newest sealing certificate (PEM).
#[cfg(feature = "cluster")]
pub fn fetch_cert(c: &Controller) -> Result<String> {
    runtime()?.block_on(async {
        let client = client(c).await?;
        let base = proxy_base(&client, c).await?;
        let (status, body) = call(
            &client,
            http::Method::GET,
            &format!("{base}/v1/cert.pem"),
            Vec::new(),
        )
        .await?;
        if status != 200 {
            return Err(cluster_err("fetching the certificate")(format!(
                "HTTP {status}: {}",
                body.trim()
            )));
        }
        Ok(body)
    })
}

/// What the agent said of each SealedSecret: `Ok(body)` on 200, `Err(message)` otherwise.
#[cfg(feature = "cluster")]
pub fn post_each(
    c: &Controller,
    endpoint: &str,
    objects: &[Vec<u8>],
) -> Result<Vec<std::result::Result<String, String>>> {
    runtime()?.block_on(async {
        let client = client(c).await?;
        let base = proxy_base(&client, c).await?;
        let mut out = Vec::new();
        for o in objects {
            let (status, body) = call(
                &client,
                http::Method::POST,
                &format!("{base}{endpoint}"),
                o.clone(),
            )
            .await?;
            out.push(if status == 200 {
                Ok(body)
            } else {
                Err(format!("HTTP {status}: {}", body.trim()))
            });
        }
        Ok(out)
    })
}

/// Creates a new active sealing-key Secret in `namespace`; returns its name.
#[cfg(feature = "cluster")]
pub fn store_sealing_key(
    namespace: &str,
    kubeconfig: Option<std::path::PathBuf>,
    key_pem: &str,
    cert_pem: &str,
) -> Result<String> {
    use k8s_openapi::api::core::v1::Secret;
    let mut json = lockstep_formats::sealed::key_secret(key_pem, cert_pem);
    let secret: std::result::Result<Secret, _> = serde_json::from_value(json.clone());
    if let Some(serde_json::Value::String(k)) = json.pointer_mut("/data/tls.key") {
        zeroize::Zeroize::zeroize(k);
    }
    let secret = Wiped(secret.map_err(|e| CliError::Cluster(format!("a key Secret: {e}")))?);
    runtime()?.block_on(async {
        let client = client_for(kubeconfig, None).await?;
        let created = kube::Api::<Secret>::namespaced(client, namespace)
            .create(&kube::api::PostParams::default(), &secret.0)
            .await
            .map(Wiped)
            .map_err(|e| {
                CliError::Cluster(format!("storing the sealing key in namespace {namespace}: {e}"))
            })?;
        Ok(created.0.metadata.name.clone().unwrap_or_default())
    })
}

/// A Secret whose values are wiped when it is dropped, whatever path the code takes: what is
/// sent to the API server, and what it answers.
#[cfg(feature = "cluster")]
struct Wiped(k8s_openapi::api::core::v1::Secret);

#[cfg(feature = "cluster")]
impl Drop for Wiped {
    fn drop(&mut self) {
        for v in self.0.data.iter_mut().flat_map(|d| d.values_mut()) {
            zeroize::Zeroize::zeroize(&mut v.0);
        }
    }
}

/// The annotation on a decryption Secret listing the recipients of its identities (public
/// keys, comma-separated, oldest first, the newest last), written by `lockstep keygen age
/// --in-cluster`.
pub const RECIPIENTS_ANNOTATION: &str = "lockstep.dev/age-recipients";

/// What `keygen age --in-cluster` did.
#[derive(Clone, Debug)]
pub struct AddedIdentity {
    /// The Secret's new entry.
    pub entry: String,
    /// The recipients of every identity the Secret holds now.
    pub recipients: Vec<String>,
}

/// The name of a new identity entry: `age-<UTC time>.agekey`, with a numeric suffix when a
/// rotation in the same second already took that name (pure).
pub fn age_entry_name<'a>(existing: impl IntoIterator<Item = &'a str>, now: time::OffsetDateTime) -> String {
    let taken: std::collections::BTreeSet<&str> = existing.into_iter().collect();
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let mut name = format!("age-{stamp}.agekey");
    let mut n = 2;
    while taken.contains(name.as_str()) {
        name = format!("age-{stamp}-{n}.agekey");
        n += 1;
    }
    name
}

/// The recipients to record: those of `previous` (the annotation as it was) still present, in
/// their order, then the other `present` ones, then `new` last (pure).
pub fn ordered_recipients(previous: Option<&str>, present: &[String], new: &str) -> Vec<String> {
    let mut out: Vec<String> = previous
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|r| *r != new && present.iter().any(|p| p == r))
        .map(str::to_owned)
        .collect();
    for r in present {
        if r != new && !out.contains(r) {
            out.push(r.clone());
        }
    }
    out.push(new.to_owned());
    out
}

/// Adds the age identity `text` (an identity file's content) to the decryption Secret
/// `namespace/name` as a new entry, keeping the others, and records every recipient in
/// [`RECIPIENTS_ANNOTATION`]; creates the Secret when it does not exist. Concurrent writers are
/// caught by the resourceVersion and retried. Key material is wiped from memory afterwards.
#[cfg(feature = "cluster")]
pub fn add_age_identity(
    namespace: &str,
    kubeconfig: Option<std::path::PathBuf>,
    name: &str,
    text: &str,
    recipient: &str,
) -> Result<AddedIdentity> {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    let what = format!("Secret {namespace}/{name}");
    runtime()?.block_on(async {
        let client = client_for(kubeconfig, None).await?;
        let api = kube::Api::<Secret>::namespaced(client, namespace);
        for _attempt in 0..5 {
            let current = api
                .get_opt(name)
                .await
                .map_err(|e| CliError::Cluster(format!("reading {what}: {e}")))?;
            let exists = current.is_some();
            let mut secret = Wiped(current.unwrap_or_else(|| Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                ..Default::default()
            }));
            let data = secret.0.data.get_or_insert_with(Default::default);
            let entry = age_entry_name(data.keys().map(String::as_str), time::OffsetDateTime::now_utc());
            data.insert(entry.clone(), ByteString(text.as_bytes().to_vec()));
            let mut ids = lockstep_formats::sops::Identities::new();
            ids.add_agekey_entries(
                &format!("{namespace}/{name}"),
                data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
            )?;
            let annotations = secret.0.metadata.annotations.get_or_insert_with(Default::default);
            let recipients = ordered_recipients(
                annotations.get(RECIPIENTS_ANNOTATION).map(String::as_str),
                &ids.recipients(),
                recipient,
            );
            drop(ids);
            annotations.insert(RECIPIENTS_ANNOTATION.into(), recipients.join(","));
            let written = if exists {
                api.replace(name, &kube::api::PostParams::default(), &secret.0)
                    .await
            } else {
                api.create(&kube::api::PostParams::default(), &secret.0).await
            };
            match written.map(Wiped) {
                Ok(_) => return Ok(AddedIdentity { entry, recipients }),
                // Someone else wrote the Secret since it was read: read it again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(CliError::Cluster(format!("writing {what}: {e}"))),
            }
        }
        Err(CliError::Cluster(format!(
            "writing {what}: changed by someone else five times in a row; try again"
        )))
    })
}

/// A certificate from an `http(s)://` URL.
#[cfg(feature = "cluster")]
pub fn fetch_url(url: &str) -> Result<Vec<u8>> {
    runtime()?.block_on(async {
        let err = cluster_err(url);
        let resp = reqwest::get(url)
            .await
            .map_err(|e| CliError::Cluster(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| CliError::Cluster(format!("{url}: {e}")))
    })
}

#[cfg(not(feature = "cluster"))]
fn offline() -> CliError {
    CliError::Usage(
        "this build of lockstep is offline-only (built without the `cluster` feature): pass --cert FILE"
            .into(),
    )
}

/// The agent's newest sealing certificate (offline build: unavailable).
#[cfg(not(feature = "cluster"))]
pub fn fetch_cert(_c: &Controller) -> Result<String> {
    Err(offline())
}

/// Posts to the agent (offline build: unavailable).
#[cfg(not(feature = "cluster"))]
pub fn post_each(
    _c: &Controller,
    _endpoint: &str,
    _objects: &[Vec<u8>],
) -> Result<Vec<std::result::Result<String, String>>> {
    Err(offline())
}

/// Stores a sealing key in the cluster (offline build: unavailable).
#[cfg(not(feature = "cluster"))]
pub fn store_sealing_key(
    _namespace: &str,
    _kubeconfig: Option<std::path::PathBuf>,
    _key_pem: &str,
    _cert_pem: &str,
) -> Result<String> {
    Err(offline())
}

/// Adds an age identity to a Secret (offline build: unavailable).
#[cfg(not(feature = "cluster"))]
pub fn add_age_identity(
    _namespace: &str,
    _kubeconfig: Option<std::path::PathBuf>,
    _name: &str,
    _text: &str,
    _recipient: &str,
) -> Result<AddedIdentity> {
    Err(offline())
}

/// A certificate from a URL (offline build: unavailable).
#[cfg(not(feature = "cluster"))]
pub fn fetch_url(_url: &str) -> Result<Vec<u8>> {
    Err(offline())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_recorded_oldest_first_and_the_new_one_last() {
        let present = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // A Secret made by hand: no annotation yet; entries in name order, the new one last.
        assert_eq!(
            ordered_recipients(None, &present(&["age1new", "age1old"]), "age1new"),
            ["age1old", "age1new"]
        );
        // The annotation's order is kept; a removed identity drops out; one added by hand joins.
        assert_eq!(
            ordered_recipients(
                Some("age1a,age1gone,age1b"),
                &present(&["age1b", "age1hand", "age1a", "age1new"]),
                "age1new"
            ),
            ["age1a", "age1b", "age1hand", "age1new"]
        );
    }

    #[test]
    fn age_entries_are_named_by_time_and_never_collide() {
        let now = time::macros::datetime!(2026-12-02 03:00:07 UTC);
        assert_eq!(age_entry_name([], now), "age-20261202T030007Z.agekey");
        assert_eq!(
            age_entry_name(["age.agekey", "age-20261202T030007Z.agekey"], now),
            "age-20261202T030007Z-2.agekey"
        );
        assert_eq!(
            age_entry_name(
                ["age-20261202T030007Z.agekey", "age-20261202T030007Z-2.agekey"],
                now
            ),
            "age-20261202T030007Z-3.agekey"
        );
    }
}
