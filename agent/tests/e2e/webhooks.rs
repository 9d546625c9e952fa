//! Webhooks against two replicas of the agent binary: a signed GitHub push sent to the
//! follower is applied by the leader within a second (measured); a bad signature is refused
//! (401) and another branch is ignored, triggering nothing; GitLab's token and a generic signed
//! body trigger the same Sync; each is counted in `/metrics`.

use std::time::{Duration, Instant};

use hmac::Mac;
use lockstep_tests::services::http;
use serde_json::json;

use super::fixtures::metric;
use super::operations::{Fleet, HOOK_SECRET};

/// A GitHub `push` event for `reference` of `url`, signed with `secret`: `(status, body)`.
pub fn github_push(port: u16, url: &str, reference: &str, secret: &str) -> (u16, String) {
    lockstep_tests::services::github_push(port, url, reference, secret).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_push_to_the_follower_is_applied_by_the_leader_within_a_second() {
    let f = Fleet::start("hook-github", 2).await;
    let follower = &f.replicas[f.follower().await];
    let two = f.push("two");
    let t = Instant::now();
    let (status, body) = github_push(follower.port, &f.url, "refs/heads/main", HOOK_SECRET);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("{}/app", f.ns)), "{body}");
    f.wait("the pushed commit applied", 10, async || {
        (f.mode().await.as_deref() == Some("two")).then_some(())
    })
    .await;
    let took = t.elapsed();
    eprintln!(
        "webhook to applied: {:.3} s (commit {})",
        took.as_secs_f64(),
        &two[..12]
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    f.assert_nothing_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_signature_or_another_branch_triggers_nothing() {
    let f = Fleet::start("hook-refused", 2).await;
    let follower = &f.replicas[f.follower().await];
    let before = f.syncs().get("app").await.unwrap().metadata.annotations;
    let (status, body) = github_push(follower.port, &f.url, "refs/heads/main", "not-the-secret");
    assert_eq!(status, 401, "{body}");
    let (status, body) = github_push(follower.port, &f.url, "refs/heads/feature", HOOK_SECRET);
    assert_eq!((status, body.trim()), (200, r#"{"triggered":[]}"#));
    assert_eq!(f.syncs().get("app").await.unwrap().metadata.annotations, before);
    let m = follower.metrics();
    assert_eq!(
        metric(
            &m,
            "lockstep_webhook_requests_total",
            &[r#"provider="github""#, r#"result="unauthorized""#]
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_and_generic_senders_trigger_the_sync() {
    let f = Fleet::start("hook-others", 2).await;
    let follower = &f.replicas[f.follower().await];
    let gitlab = json!({ "ref": "refs/heads/main", "project": { "git_http_url": f.url } }).to_string();
    let (status, body) = http(
        follower.port,
        "POST",
        "/hook/gitlab",
        &[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", &format!("{HOOK_SECRET}-gitlab")),
        ],
        gitlab.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("{}/app", f.ns)), "{body}");
    let generic = json!({ "repository": f.url }).to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(format!("{HOOK_SECRET}-ci").as_bytes()).unwrap();
    mac.update(generic.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let (status, body) = http(
        follower.port,
        "POST",
        "/hook/generic",
        &[("X-Signature", &sig)],
        generic.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("{}/app", f.ns)), "{body}");
    let m = follower.metrics();
    for provider in ["gitlab", "generic"] {
        assert_eq!(
            metric(
                &m,
                "lockstep_webhook_requests_total",
                &[&format!("provider=\"{provider}\""), r#"result="triggered""#]
            ),
            Some(1.0),
            "{m}"
        );
    }
    f.requests_handled().await;
}
