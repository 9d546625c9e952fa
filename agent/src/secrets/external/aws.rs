//! AWS Secrets Manager: reads batched with `BatchGetSecretValue` (20 ids a call) for the current
//! version, `GetSecretValue` for a stage or `uuid/<VersionId>`; `find` by name pattern and tags.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use zeroize::Zeroizing;

use super::values::Bytes;
use super::{Calls, Fetched};

/// A Secrets Manager client for one store.
#[derive(Clone, Debug)]
pub struct Aws {
    client: Client,
    prefix: String,
}

/// Static keys (from the store's `auth.secretRef`).
pub struct StaticKeys {
    /// Access key id.
    pub access_key_id: Zeroizing<String>,
    /// Secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// Session token.
    pub session_token: Option<Zeroizing<String>>,
}

impl Aws {
    /// A client for `region`, with static keys or the default chain (environment, IRSA / web
    /// identity, ECS, IMDS), and an optional endpoint (moto, LocalStack, a VPC endpoint).
    pub async fn new(
        region: &str,
        prefix: Option<&str>,
        keys: Option<StaticKeys>,
        endpoint: Option<&str>,
    ) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()));
        if let Some(k) = keys {
            loader = loader.credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                k.access_key_id.as_str(),
                k.secret_access_key.as_str(),
                k.session_token.as_ref().map(|t| t.to_string()),
                None,
                "lockstep-secret-ref",
            ));
        }
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        let config = loader.load().await;
        Self {
            client: Client::new(&config),
            prefix: prefix.unwrap_or_default().to_owned(),
        }
    }

    /// Reads `(key, version)` pairs; one result per pair, in order.
    pub async fn read_many(&self, reads: &[(String, Option<String>)], calls: &Calls) -> Vec<Fetched> {
        let mut out: Vec<Option<Fetched>> = (0..reads.len()).map(|_| None).collect();
        let current: Vec<usize> = (0..reads.len())
            .filter(|&i| matches!(reads[i].1.as_deref(), None | Some("AWSCURRENT")))
            .collect();
        for chunk in current.chunks(20) {
            let ids: Vec<String> = chunk
                .iter()
                .map(|&i| format!("{}{}", self.prefix, reads[i].0))
                .collect();
            calls.count("aws", "BatchGetSecretValue");
            match self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(ids.clone()))
                .send()
                .await
            {
                Ok(resp) => {
                    for (&i, id) in chunk.iter().zip(&ids) {
                        let value = resp
                            .secret_values()
                            .iter()
                            .find(|v| v.name() == Some(id.as_str()) || v.arn() == Some(id.as_str()));
                        let error = resp.errors().iter().find(|e| e.secret_id() == Some(id.as_str()));
                        out[i] = Some(match (value, error) {
                            (Some(v), _) => {
                                payload(v.secret_string(), v.secret_binary().map(|b| b.as_ref()), id)
                            }
                            (None, Some(e)) if e.error_code() == Some("ResourceNotFoundException") => {
                                Fetched::NotFound
                            }
                            (None, Some(e)) => Fetched::Failed(format!(
                                "reading {id}: {}: {}",
                                e.error_code().unwrap_or("error"),
                                e.message().unwrap_or_default()
                            )),
                            (None, None) => Fetched::NotFound,
                        });
                    }
                }
                Err(e) => {
                    let m = sdk_message(&e);
                    for &i in chunk {
                        out[i] = Some(Fetched::Failed(format!("BatchGetSecretValue: {m}")));
                    }
                }
            }
        }
        for (i, (key, version)) in reads.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let id = format!("{}{key}", self.prefix);
            let mut req = self.client.get_secret_value().secret_id(&id);
            req = match version.as_deref() {
                Some(v) if v.starts_with("uuid/") => req.version_id(&v[5..]),
                Some(v) => req.version_stage(v),
                None => req,
            };
            calls.count("aws", "GetSecretValue");
            out[i] = Some(match req.send().await {
                Ok(v) => payload(v.secret_string(), v.secret_binary().map(|b| b.as_ref()), &id),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    Fetched::NotFound
                }
                Err(e) => Fetched::Failed(format!("GetSecretValue {id}: {}", sdk_message(&e))),
            });
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Fetched::Failed("not read".into())))
            .collect()
    }

    /// Every secret whose name starts with `path`, matches `name` and carries `tags`: name → value.
    pub async fn find(
        &self,
        path: Option<&str>,
        name: Option<&regex::Regex>,
        tags: &std::collections::BTreeMap<String, String>,
        calls: &Calls,
    ) -> Result<Vec<(String, Bytes)>, String> {
        let mut filters = Vec::new();
        if let Some(p) = path {
            filters.push(filter(
                FilterNameStringType::Name,
                &format!("{}{p}", self.prefix),
            )?);
        }
        for (k, v) in tags {
            filters.push(filter(FilterNameStringType::TagKey, k)?);
            filters.push(filter(FilterNameStringType::TagValue, v)?);
        }
        let mut out = Vec::new();
        if filters.is_empty() {
            // A name pattern alone: list the names, then read the matches in batches.
            let mut names = Vec::new();
            let mut token = None;
            loop {
                calls.count("aws", "ListSecrets");
                let resp = self
                    .client
                    .list_secrets()
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| format!("ListSecrets: {}", sdk_message(&e)))?;
                names.extend(
                    resp.secret_list()
                        .iter()
                        .filter_map(|s| s.name().map(str::to_owned))
                        .filter(|n| n.starts_with(&self.prefix))
                        .filter(|n| name.is_none_or(|r| r.is_match(n))),
                );
                token = resp.next_token().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
            let reads: Vec<(String, Option<String>)> = names
                .iter()
                .map(|n| (n[self.prefix.len()..].to_owned(), None))
                .collect();
            for (n, f) in names.into_iter().zip(self.read_many(&reads, calls).await) {
                match f {
                    Fetched::Value(v) => out.push((n, v)),
                    Fetched::NotFound => {}
                    Fetched::Failed(m) => return Err(m),
                }
            }
            return Ok(out);
        }
        let mut token = None;
        loop {
            calls.count("aws", "BatchGetSecretValue");
            let resp = self
                .client
                .batch_get_secret_value()
                .set_filters(Some(filters.clone()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| format!("BatchGetSecretValue: {}", sdk_message(&e)))?;
            for v in resp.secret_values() {
                let Some(n) = v.name() else { continue };
                if name.is_some_and(|r| !r.is_match(n)) {
                    continue;
                }
                if let Fetched::Value(b) =
                    payload(v.secret_string(), v.secret_binary().map(|b| b.as_ref()), n)
                {
                    out.push((n.to_owned(), b));
                }
            }
            token = resp.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

fn filter(key: FilterNameStringType, value: &str) -> Result<Filter, String> {
    Ok(Filter::builder().key(key).values(value).build())
}

fn payload(string: Option<&str>, binary: Option<&[u8]>, id: &str) -> Fetched {
    match (string, binary) {
        (Some(s), _) => Fetched::Value(Zeroizing::new(s.as_bytes().to_vec())),
        (None, Some(b)) => Fetched::Value(Zeroizing::new(b.to_vec())),
        (None, None) => Fetched::Failed(format!("{id} has neither SecretString nor SecretBinary")),
    }
}

/// The SDK's error with its service code and message (never a secret value: the service does
/// not echo them).
fn sdk_message<E, R>(e: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> String
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or_default()
        ),
        None => crate::errors::chain(e),
    }
}
