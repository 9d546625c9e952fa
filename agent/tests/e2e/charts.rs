//! Charts from a Helm repository: a real `helm package` archive and `helm repo index` index
//! served over HTTPS with basic auth and a private CA on loopback; the version a range picks,
//! the archive checked against the index's digest, kept by version and digest, rendered by
//! Helm's engine; a wrong password, a missing version and a tampered archive each named, the
//! password in no message.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lockstep_agent::source::charts::{Auth, ChartCache, ChartError, Repository};
use zeroize::Zeroizing;

const PASSWORD: &str = "CANARY-chart-repo-password-77c1";

fn helm(args: &[&str]) {
    let out = Command::new(lockstep_tests::peer("helm"))
        .args(args)
        .output()
        .unwrap();
    lockstep_tests::ok(out, "helm");
}

#[tokio::test]
async fn a_chart_from_an_https_repository_with_basic_auth_is_fetched_checked_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let charts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/tests/charts/web");
    helm(&["package", charts.to_str().unwrap(), "-d", root.to_str().unwrap()]);
    // Relative archive URLs, as `helm repo index` writes them without --url.
    helm(&["repo", "index", root.to_str().unwrap()]);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("ci:{PASSWORD}")
        )
    );
    let (server, ca) = lockstep_tests::services::static_https_with_auth(&root, Some(&basic)).unwrap();
    let repo = |password: &str| Repository {
        url: format!("{}/", server.url),
        auth: Some(Auth::Basic {
            username: "ci".into(),
            password: Zeroizing::new(password.to_owned()),
        }),
        ca_pem: Some(ca.clone().into_bytes()),
        timeout: Duration::from_secs(10),
    };
    let cache = ChartCache::default();
    let fetched = cache
        .fetch(&repo(PASSWORD), "web", Some(">=1.0 <2"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(fetched.version, "1.2.3");
    let file = std::fs::read(root.join("web-1.2.3.tgz")).unwrap();
    assert_eq!(*fetched.archive, file);
    // The same version again: the index is read, the archive is not downloaded.
    let again = cache
        .fetch(&repo(PASSWORD), "web", None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(again.digest, fetched.digest);
    assert_eq!(cache.index_reads.load(Ordering::Relaxed), 2);
    assert_eq!(cache.archive_downloads.load(Ordering::Relaxed), 1);

    // Rendered by Helm's engine, as `helm template` renders the archive.
    let rendered = lockstep_helm::template(
        &lockstep_helm::Helper::new(lockstep_tests::peer("lockstep-helm")),
        lockstep_helm::Chart::Archive {
            name: "web 1.2.3",
            bytes: &fetched.archive,
        },
        &lockstep_helm::Request {
            release_name: "web".into(),
            namespace: "default".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(rendered.iter().any(|r| r.object["kind"] == "Deployment"));

    let mut messages = Vec::new();
    let e = ChartCache::default()
        .fetch(&repo("wrong"), "web", None, Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("/index.yaml: HTTP 401 Unauthorized"), "{e}");
    messages.push(e);
    let e = cache
        .fetch(&repo(PASSWORD), "web", Some("^2"), Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no version of chart `web` matches `^2` (the newest: 1.2.3)"),
        "{e}"
    );
    messages.push(e);
    // The archive replaced behind the index: refused against the index's digest.
    std::fs::write(root.join("web-1.2.3.tgz"), b"not the chart").unwrap();
    let e = ChartCache::default()
        .fetch(&repo(PASSWORD), "web", None, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(e, ChartError::Digest { .. }), "{e}");
    messages.push(e.to_string());
    for m in &messages {
        assert!(!m.contains(PASSWORD) && !m.contains(&basic), "{m}");
    }
}
