//! Prometheus metrics (OpenMetrics text on `/metrics`), with bounded labels: a Sync's
//! `namespace`/`name` (as many as there are Syncs), a `result`, a `format`, an ExternalSecret
//! provider and call. No label ever carries an object's data.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::secrets::external::Calls;

/// Labels of one Sync.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// The Sync's namespace.
    pub namespace: String,
    /// The Sync's name.
    pub name: String,
}

/// Labels of one Sync's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The Sync's namespace.
    pub namespace: String,
    /// The Sync's name.
    pub name: String,
    /// `succeeded` or `failed`.
    pub result: &'static str,
}

/// Labels of a decryption failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabels {
    /// `sops` or `sealed`.
    pub format: &'static str,
}

/// Labels of a webhook request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `github`, `gitlab` or `generic`.
    pub provider: &'static str,
    /// `triggered`, `ignored`, `unauthorized`, `refused` or `failed`.
    pub result: &'static str,
}

/// The agent's metrics. Cheap to clone; every clone updates the same series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Syncs run, by Sync and result.
    pub syncs: Family<ResultLabels, Counter>,
    /// Duration of syncs, by Sync and result.
    pub sync_duration: Family<ResultLabels, Histogram>,
    /// Objects written by server-side apply.
    pub applied: Family<SyncLabels, Counter>,
    /// Objects pruned.
    pub pruned: Family<SyncLabels, Counter>,
    /// Drifted objects put back.
    pub drift_corrections: Family<SyncLabels, Counter>,
    /// Whether each Sync is ready (1) or not (0).
    pub ready: Family<SyncLabels, Gauge>,
    /// SOPS files or SealedSecrets that failed to decrypt.
    pub decryption_failures: Family<FormatLabels, Counter>,
    /// Objects watched for drift.
    pub watched: Gauge,
    /// Webhook requests, by provider and result.
    pub webhooks: Family<WebhookLabels, Counter>,
    /// 1 while this replica leads (runs the controllers), else 0.
    pub leader: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Exports [`Calls`] as `lockstep_externalsecret_provider_api_calls_total{provider,call}` (the
/// registry adds the prefix).
#[derive(Debug)]
struct CallsCollector(Calls);

impl Collector for CallsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.snapshot();
        let mut metric = encoder.encode_descriptor(
            "externalsecret_provider_api_calls",
            "Calls to ExternalSecret backends, by provider and call",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for ((provider, call), n) in snapshot {
            let labels = [("provider", provider), ("call", call)];
            ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Exports a renderer's count of kustomize builds as `lockstep_render_builds_total`.
#[derive(Debug)]
struct BuildsCollector(Arc<std::sync::atomic::AtomicU64>);

impl Collector for BuildsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric = encoder.encode_descriptor(
            "render_builds",
            "kustomize builds started (an unchanged commit, or drift healed on it, starts none)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        ConstCounter::new(self.0.load(std::sync::atomic::Ordering::Relaxed)).encode(metric)
    }
}

impl Metrics {
    /// The registry with every metric, `calls` and the renderer's `builds` included.
    pub fn new(calls: Calls, builds: Arc<std::sync::atomic::AtomicU64>) -> Self {
        let mut r = Registry::with_prefix("lockstep");
        let syncs = Family::<ResultLabels, Counter>::default();
        r.register("sync", "Syncs run, by Sync and result", syncs.clone());
        let sync_duration = Family::<ResultLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 12))
        });
        r.register_with_unit(
            "sync_duration",
            "Duration of a sync (fetch, render, decrypt, apply, prune)",
            prometheus_client::registry::Unit::Seconds,
            sync_duration.clone(),
        );
        let applied = Family::<SyncLabels, Counter>::default();
        r.register(
            "objects_applied",
            "Objects written by server-side apply",
            applied.clone(),
        );
        let pruned = Family::<SyncLabels, Counter>::default();
        r.register(
            "objects_pruned",
            "Objects deleted because they left Git",
            pruned.clone(),
        );
        let drift_corrections = Family::<SyncLabels, Counter>::default();
        r.register(
            "drift_corrections",
            "Objects changed or deleted in the cluster and put back",
            drift_corrections.clone(),
        );
        let ready = Family::<SyncLabels, Gauge>::default();
        r.register(
            "sync_ready",
            "1 when the Sync's last sync succeeded and it is healthy",
            ready.clone(),
        );
        let decryption_failures = Family::<FormatLabels, Counter>::default();
        r.register(
            "decryption_failures",
            "SOPS files and SealedSecrets that failed to decrypt",
            decryption_failures.clone(),
        );
        let watched = Gauge::default();
        r.register("watched_objects", "Objects watched for drift", watched.clone());
        let webhooks = Family::<WebhookLabels, Counter>::default();
        r.register(
            "webhook_requests",
            "Webhook requests, by provider and result",
            webhooks.clone(),
        );
        let leader = Gauge::default();
        r.register(
            "leader",
            "1 while this replica leads (runs the controllers)",
            leader.clone(),
        );
        r.register_collector(Box::new(CallsCollector(calls)));
        r.register_collector(Box::new(BuildsCollector(builds)));
        Self {
            registry: Arc::new(r),
            syncs,
            sync_duration,
            applied,
            pruned,
            drift_corrections,
            ready,
            decryption_failures,
            watched,
            webhooks,
            leader,
        }
    }

    /// Counts one webhook request.
    pub fn webhook(&self, provider: &'static str, result: &'static str) {
        self.webhooks
            .get_or_create(&WebhookLabels { provider, result })
            .inc();
    }

    /// Records one sync.
    pub fn sync_done(
        &self,
        namespace: &str,
        name: &str,
        ok: bool,
        took: Duration,
        applied: usize,
        pruned: usize,
    ) {
        let l = ResultLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            result: if ok { "succeeded" } else { "failed" },
        };
        self.syncs.get_or_create(&l).inc();
        self.sync_duration.get_or_create(&l).observe(took.as_secs_f64());
        let s = SyncLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.applied.get_or_create(&s).inc_by(applied as u64);
        self.pruned.get_or_create(&s).inc_by(pruned as u64);
    }

    /// Forgets a deleted Sync's series (so labels stay bounded by the Syncs that exist).
    pub fn forget(&self, namespace: &str, name: &str) {
        let s = SyncLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        for result in ["succeeded", "failed"] {
            let l = ResultLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                result,
            };
            self.syncs.remove(&l);
            self.sync_duration.remove(&l);
        }
        for f in [&self.applied, &self.pruned, &self.drift_corrections] {
            f.remove(&s);
        }
        self.ready.remove(&s);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
