//! Scheduling (pure; `now` in seconds since the epoch): when a Sync is due, and how long a
//! failed one backs off.

use std::time::Duration;

use kube::ResourceExt;

use crate::api::conditions::READY;
use crate::api::{RECONCILE_ANNOTATION, Reason, Sync};

/// The poll interval when `spec.source.interval` is not set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// How long a Sync waiting for dependencies waits before looking again (a change to a
/// dependency triggers it sooner).
pub const DEPENDENCY_RETRY: Duration = Duration::from_secs(30);
/// How often the `Healthy` condition is refreshed between syncs while objects roll out.
pub const HEALTH_RECHECK: Duration = Duration::from_secs(5);

/// Retry defaults: the first delay, the factor, the longest delay.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_FACTOR: u32 = 2;
const RETRY_MAX: Duration = Duration::from_secs(300);

// Go-style durations: `30s`, `5m`, `1h`, `1h30m`.
use lockstep_formats::duration::parse as parse_duration;

/// The Sync's poll interval: `spec.source.interval`, [`DEFAULT_INTERVAL`] when unset or invalid.
pub fn interval(s: &Sync) -> Duration {
    s.spec
        .source
        .interval
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_INTERVAL)
}

/// The bound on one sync of `s` (and on each of its health waits): `spec.timeout`, 5 minutes
/// by default.
pub fn timeout(s: &Sync) -> Duration {
    s.spec
        .timeout
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(300))
}

/// The delay before retrying after `failures` failed syncs in a row: the Sync's `spec.retry`
/// (`duration × factor^(failures − 1)`, at most `maxDuration`), with a jitter of ±10 % that is
/// stable for one Sync and failure count (so repeated `due` checks agree), so that Syncs failing
/// together do not retry together.
pub fn retry_delay(s: &Sync, failures: u32) -> Duration {
    let r = s.spec.retry.clone().unwrap_or_default();
    let first = r
        .duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(RETRY_FIRST);
    let max = r
        .max_duration
        .as_deref()
        .and_then(parse_duration)
        .unwrap_or(RETRY_MAX);
    let factor = r.factor.unwrap_or(RETRY_FACTOR).max(1);
    let exp = failures.saturating_sub(1).min(32);
    let base = first
        .checked_mul(factor.saturating_pow(exp))
        .unwrap_or(max)
        .min(max);
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(s.metadata.uid.as_deref(), s.name_any(), failures), &mut h);
    let spread = std::hash::Hasher::finish(&h) % 201; // 0..=200 → −10 % … +10 %
    base.mul_f64(0.9 + spread as f64 / 1000.0)
}

/// Whether a sync is due now (`None`), or after how long. A sync is due when the spec changed
/// (generation), a reconcile was requested (annotation), the last attempt waited for something
/// else ([`Reason::waited`]), or the interval (after success) or the retry delay (after
/// failure) has passed since the last attempt. Every other event, such as our own status
/// writes, finds nothing due, so status writes do not loop.
pub fn due(s: &Sync, now: i64, interval: Duration) -> Option<Duration> {
    let st = s.status.as_ref()?;
    if st.observed_generation != s.metadata.generation {
        return None;
    }
    if s.annotations().get(RECONCILE_ANNOTATION) != st.last_handled_reconcile_at.as_ref() {
        return None;
    }
    if st
        .conditions
        .iter()
        .any(|c| c.type_ == READY && Reason::parse(&c.reason).is_some_and(Reason::waited))
    {
        return None;
    }
    let last = st.history.first()?;
    let at = time::OffsetDateTime::parse(&last.time, &time::format_description::well_known::Rfc3339)
        .ok()?
        .unix_timestamp();
    let wait = if last.result == Reason::Succeeded.as_str() {
        interval
    } else {
        retry_delay(s, st.failures.max(1))
    };
    let next = at.saturating_add(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX));
    (next > now).then(|| Duration::from_secs(u64::try_from(next - now).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::{Condition, HistoryEntry, SyncStatus};

    #[test]
    fn a_sync_is_due_on_spec_change_request_interval_or_retry() {
        let at = |t: &str, result: &str| HistoryEntry {
            revision: String::new(),
            time: t.into(),
            result: result.into(),
            applied: 0,
            pruned: 0,
        };
        let t0 = time::macros::datetime!(2026-01-01 00:00:00 UTC).unix_timestamp();
        let mut s = Sync::new("x", crate::api::SyncSpec::default());
        s.metadata.generation = Some(2);
        assert_eq!(due(&s, t0, Duration::from_secs(60)), None, "never synced");
        s.status = Some(SyncStatus {
            observed_generation: Some(2),
            history: vec![at("2026-01-01T00:00:00Z", "Succeeded")],
            ..SyncStatus::default()
        });
        assert_eq!(
            due(&s, t0 + 10, Duration::from_secs(60)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(due(&s, t0 + 60, Duration::from_secs(60)), None, "interval passed");
        s.metadata.generation = Some(3);
        assert_eq!(due(&s, t0 + 10, Duration::from_secs(60)), None, "spec changed");
        s.metadata.generation = Some(2);
        s.metadata.annotations = Some([(RECONCILE_ANNOTATION.to_owned(), "now".to_owned())].into());
        assert_eq!(
            due(&s, t0 + 10, Duration::from_secs(60)),
            None,
            "reconcile requested"
        );
        if let Some(st) = s.status.as_mut() {
            st.last_handled_reconcile_at = Some("now".into());
            st.history = vec![at("2026-01-01T00:00:00Z", "SourceFailed")];
        }
        s.spec.retry = Some(crate::api::Retry {
            duration: Some("10s".into()),
            factor: Some(2),
            max_duration: Some("1m".into()),
        });
        if let Some(st) = s.status.as_mut() {
            st.failures = 3;
        }
        // The third failure in a row: 10 s × 2² = 40 s ± 10 %, 10 s of it gone.
        let wait = due(&s, t0 + 10, Duration::from_secs(600)).unwrap();
        assert!((26..=34).contains(&wait.as_secs()), "retry after {wait:?}");
        // A timed-out sync backs off like any failure.
        if let Some(st) = s.status.as_mut() {
            st.history = vec![at("2026-01-01T00:00:00Z", "TimedOut")];
        }
        let wait = due(&s, t0 + 10, Duration::from_secs(600)).unwrap();
        assert!((26..=34).contains(&wait.as_secs()), "retry after {wait:?}");
    }

    #[test]
    fn retries_back_off_with_a_cap_and_a_stable_jitter() {
        let mut s = Sync::new("x", crate::api::SyncSpec::default());
        let secs = |s: &Sync, n| retry_delay(s, n).as_secs_f64();
        for (n, base) in [(1, 5.0), (2, 10.0), (3, 20.0), (7, 300.0), (40, 300.0)] {
            let d = secs(&s, n);
            assert!((base * 0.9..=base * 1.1).contains(&d), "{n}: {d}");
            assert!((d - secs(&s, n)).abs() < f64::EPSILON, "stable");
        }
        s.spec.retry = Some(crate::api::Retry {
            duration: Some("1s".into()),
            factor: Some(3),
            max_duration: Some("10s".into()),
        });
        assert!((2.7..=3.3).contains(&secs(&s, 2)));
        assert!((9.0..=11.0).contains(&secs(&s, 5)));
        let other = Sync::new("y", crate::api::SyncSpec::default());
        let spread: std::collections::BTreeSet<u128> = (1..=5)
            .map(|n| {
                retry_delay(&other, n).as_millis() * 1000
                    / retry_delay(&Sync::new("x", Default::default()), n).as_millis()
            })
            .collect();
        assert!(spread.len() > 1, "different Syncs do not retry in step");
    }

    #[test]
    fn a_canceled_wait_or_a_dependency_wait_is_due_at_once() {
        let t0 = time::macros::datetime!(2026-01-01 00:00:00 UTC).unix_timestamp();
        let mut s = Sync::new("x", crate::api::SyncSpec::default());
        s.metadata.generation = Some(1);
        for reason in [
            Reason::HealthCheckCanceled,
            Reason::DependencyNotReady,
            Reason::DependencyCycle,
        ] {
            s.status = Some(SyncStatus {
                observed_generation: Some(1),
                history: vec![HistoryEntry {
                    time: "2026-01-01T00:00:00Z".into(),
                    result: reason.as_str().into(),
                    ..HistoryEntry::default()
                }],
                conditions: vec![Condition {
                    type_: READY.into(),
                    status: "False".into(),
                    reason: reason.as_str().into(),
                    ..Condition::default()
                }],
                ..SyncStatus::default()
            });
            assert_eq!(due(&s, t0 + 1, Duration::from_secs(600)), None, "{reason}");
        }
    }

    #[test]
    fn intervals_and_timeouts_default_when_unset_or_invalid() {
        let mut s = Sync::new("x", crate::api::SyncSpec::default());
        assert_eq!(
            (interval(&s), timeout(&s)),
            (DEFAULT_INTERVAL, Duration::from_secs(300))
        );
        s.spec.source.interval = Some("90s".into());
        s.spec.timeout = Some("1m".into());
        assert_eq!(
            (interval(&s), timeout(&s)),
            (Duration::from_secs(90), Duration::from_secs(60))
        );
        s.spec.source.interval = Some("soon".into());
        assert_eq!(interval(&s), DEFAULT_INTERVAL);
    }
}
