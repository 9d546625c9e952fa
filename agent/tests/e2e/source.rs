//! Source: shallow fetches of real Git repositories (file://, smart HTTP from `git
//! http-backend`, SSH from the real sshd), tags, semver ranges and commits, and what a bad
//! reference, path or credential says.

use lockstep_agent::source::GitCache;

use super::fixtures::git;

#[test]
fn fetches_the_branch_head_and_reads_the_path_without_a_worktree() {
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q"]);
    std::fs::create_dir_all(r.join("clusters/prod/apps")).unwrap();
    std::fs::write(r.join("clusters/prod/ns.yaml"), "kind: Namespace\n").unwrap();
    std::fs::write(r.join("clusters/prod/apps/cm.yaml"), "kind: ConfigMap\n").unwrap();
    std::fs::write(r.join("README.md"), "outside the path\n").unwrap();
    git(r, &["add", "."]);
    git(r, &["commit", "-qm", "one"]);
    let first = git(r, &["rev-parse", "HEAD"]);

    let cache = tempfile::tempdir().unwrap();
    let src = GitCache::new(cache.path());
    let url = format!("file://{}", r.display());
    let rev = src.fetch(&url, "main", "clusters/prod").unwrap();
    assert_eq!(rev.commit, first);
    // The whole repository (a kustomization under the path may reach anywhere in it), and the
    // path.
    assert_eq!(rev.path, "clusters/prod");
    assert_eq!(
        rev.files.keys().collect::<Vec<_>>(),
        ["README.md", "clusters/prod/apps/cm.yaml", "clusters/prod/ns.yaml"]
    );
    assert_eq!(rev.files["clusters/prod/ns.yaml"], b"kind: Namespace\n");

    // A new commit is picked up by the next fetch.
    std::fs::remove_file(r.join("clusters/prod/apps/cm.yaml")).unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "two"]);
    let second = git(r, &["rev-parse", "HEAD"]);
    let rev = src.fetch(&url, "main", "clusters/prod").unwrap();
    assert_eq!(rev.commit, second);
    assert_eq!(
        rev.files.keys().collect::<Vec<_>>(),
        ["README.md", "clusters/prod/ns.yaml"]
    );

    // Bad branch and path are named.
    let e = src.fetch(&url, "nope", "").unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    let e = src
        .fetch(&url, "main", "clusters/staging")
        .unwrap_err()
        .to_string();
    assert!(e.contains("clusters/staging"), "{e}");
}

/// A repository with one commit (`a.yaml`) and its bare clone `repo.git`: (work, root of
/// the bare clone, the commit).
fn one_commit_bare() -> (tempfile::TempDir, tempfile::TempDir, String) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git(w, &["init", "-q"]);
    std::fs::write(w.join("a.yaml"), "kind: ConfigMap\n").unwrap();
    git(w, &["add", "."]);
    git(w, &["commit", "-qm", "one"]);
    let head = git(w, &["rev-parse", "HEAD"]);
    let root = tempfile::tempdir().unwrap();
    let bare = root.path().join("repo.git");
    git(w, &["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);
    (work, root, head)
}

/// SSH credentials from a key, its passphrase and the host keys to trust.
fn ssh(identity: &str, passphrase: Option<&str>, known_hosts: &str) -> lockstep_agent::source::Credentials {
    use zeroize::Zeroizing;
    lockstep_agent::source::Credentials::Ssh {
        identity: Zeroizing::new(identity.as_bytes().to_vec()),
        passphrase: passphrase.map(|p| Zeroizing::new(p.to_owned())),
        known_hosts: known_hosts.to_owned(),
    }
}

#[test]
fn fetches_over_smart_http_from_git_http_backend() {
    let (_work, root, head) = one_commit_bare();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let server = lockstep_tests::services::git_http(root.path()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let rev = GitCache::new(cache.path())
        .fetch(&format!("{}/repo.git", server.url), "main", "")
        .unwrap();
    assert_eq!(rev.commit, head);
    assert_eq!(rev.files.keys().collect::<Vec<_>>(), ["a.yaml"]);
}

#[test]
fn tags_semver_ranges_and_commits() {
    use lockstep_agent::source::Reference;
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path();
    git(r, &["init", "-q"]);
    let mut ids = Vec::new();
    for (i, tag) in ["v1.0.0", "v1.2.0", "v2.0.0"].iter().enumerate() {
        std::fs::write(r.join("f.yaml"), format!("n: {i}\n")).unwrap();
        git(r, &["add", "."]);
        git(r, &["commit", "-qm", tag]);
        git(r, &["tag", "-a", "-m", tag, tag]);
        ids.push(git(r, &["rev-parse", "HEAD"]));
    }
    let cache = tempfile::tempdir().unwrap();
    let src = GitCache::new(cache.path());
    let url = format!("file://{}", r.display());
    let rev = src.fetch_ref(&url, &Reference::Tag("v1.0.0".into()), "").unwrap();
    assert_eq!(
        (rev.commit.as_str(), rev.files["f.yaml"].as_slice()),
        (ids[0].as_str(), &b"n: 0\n"[..])
    );
    let rev = src
        .fetch_ref(&url, &Reference::Semver(">=1.0.0, <2.0.0".into()), "")
        .unwrap();
    assert_eq!(
        (rev.commit.as_str(), rev.reference.as_str()),
        (ids[1].as_str(), "v1.2.0")
    );
    let rev = src
        .fetch_ref(&url, &Reference::Commit(ids[0].clone()), "")
        .unwrap();
    assert_eq!(rev.files["f.yaml"], b"n: 0\n");
    let e = src
        .fetch_ref(&url, &Reference::Semver(">=3".into()), "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no tag matches semver range `>=3`"), "{e}");
    let e = src
        .fetch_ref(&url, &Reference::Commit("0123".into()), "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a full commit id"), "{e}");
}

#[test]
fn fetches_over_ssh_from_real_sshd_with_the_key_kept_in_memory() {
    use lockstep_agent::source::Reference;
    let (_work, root, head) = one_commit_bare();
    let bare = root.path().join("repo.git");

    let server = lockstep_tests::services::git_ssh().unwrap();
    let url = format!("{}{}", server.url, bare.display());
    let cache = tempfile::tempdir().unwrap();
    let src = GitCache::new(cache.path());
    let main = Reference::Branch("main".into());

    let rev = src
        .fetch_with(
            &url,
            &main,
            "",
            &ssh(&server.identity, None, &server.known_hosts),
            None,
        )
        .unwrap();
    assert_eq!(rev.commit, head);
    assert_eq!(rev.files.keys().collect::<Vec<_>>(), ["a.yaml"]);

    // A passphrase-protected key, decrypted in memory.
    let rev = src
        .fetch_with(
            &url,
            &main,
            "",
            &ssh(
                &server.protected_identity,
                Some(&server.passphrase),
                &server.known_hosts,
            ),
            None,
        )
        .unwrap();
    assert_eq!(rev.commit, head);

    // The key never reached the disk: nothing is left under the cache but the bare repo.
    let leftovers: Vec<_> = std::fs::read_dir(cache.path().join("ssh")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_ssh_credentials_are_named_and_never_shown() {
    use lockstep_agent::source::Reference;
    let (_work, root, _) = one_commit_bare();
    let bare = root.path().join("repo.git");
    let server = lockstep_tests::services::git_ssh().unwrap();
    let url = format!("{}{}", server.url, bare.display());
    let cache = tempfile::tempdir().unwrap();
    let src = GitCache::new(cache.path());
    let main = Reference::Branch("main".into());
    // Wrong passphrase, missing passphrase, unknown host key, unauthorised key: clear errors.
    let other_host =
        "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n";
    let stranger = lockstep_tests::services::git_ssh().unwrap();
    let (kh, pi) = (server.known_hosts.as_str(), server.protected_identity.as_str());
    for (creds, expected) in [
        (ssh(pi, Some("wrong"), kh), "password does not decrypt"),
        (ssh(pi, None, kh), "passphrase-protected"),
        (
            ssh(&server.identity, None, other_host),
            "Host key verification failed",
        ),
        (ssh(&stranger.identity, None, kh), "Permission denied"),
    ] {
        let e = src
            .fetch_with(&url, &main, "", &creds, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "{e}");
        for secret in [&server.identity, &server.protected_identity, &server.passphrase] {
            let body = secret.lines().nth(1).unwrap_or(secret);
            assert!(!e.contains(body));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn syncs_pull_over_ssh_with_a_passphrase_protected_key_from_a_secret() {
    use super::fixtures::{Controller, Repo, create, ready, secret, setup, sync, wait_ready};
    use serde_json::json;
    let (client, ns) = setup("ssh").await;
    let repo = Repo::new();
    repo.write(
        "child/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: over-ssh\n",
    );
    repo.commit("one");
    let sshd = lockstep_tests::services::git_ssh().unwrap();
    secret(
        &client,
        &ns,
        "git-ssh",
        json!({ "identity": sshd.protected_identity, "password": sshd.passphrase, "known_hosts": sshd.known_hosts }),
    )
    .await;
    secret(
        &client,
        &ns,
        "git-ssh-no-hosts",
        json!({ "identity": sshd.identity }),
    )
    .await;
    let _ctl = Controller::start(&client, &ns).await;
    for (name, s) in [("over-ssh", "git-ssh"), ("no-hosts", "git-ssh-no-hosts")] {
        let url = format!("{}{}", sshd.url, repo.path().display());
        create(
            &client,
            &ns,
            &sync(
                name,
                &url,
                json!({ "source": { "path": "child", "interval": "1s", "secretRef": { "name": s } }, "targetNamespace": ns }),
            ),
        )
        .await;
    }
    let s = wait_ready(&client, &ns, "over-ssh", "True", 60).await;
    assert_eq!(s.status.unwrap().inventory.len(), 1);
    // An identity without known_hosts is refused, naming the Secret: host keys are always checked.
    let s = wait_ready(&client, &ns, "no-hosts", "False", 60).await;
    let (_, reason, message) = ready(&s).unwrap();
    assert_eq!(reason, "Unsupported", "{message}");
    assert!(
        message.contains("known_hosts") && message.contains("git-ssh-no-hosts"),
        "{message}"
    );
    let logs = super::fixtures::logs().text();
    for s in [sshd.passphrase.as_str()]
        .into_iter()
        .chain(sshd.identity.lines().skip(1).take(2))
        .chain(sshd.protected_identity.lines().skip(1).take(2))
    {
        assert!(!logs.contains(s), "a secret reached the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bootstrap_sync_pulls_over_https_with_a_password_and_a_private_ca() {
    use super::fixtures::{Agent, cp, metric, ready, secret, setup, wait_for, wait_ready};
    use serde_json::json;
    const PASSWORD: &str = "CANARY-git-password";
    let (client, ns) = setup("bootstrap").await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git(w, &["init", "-q"]);
    std::fs::create_dir_all(w.join("app")).unwrap();
    std::fs::write(
        w.join("app/cm.yaml"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pulled\n  namespace: {ns}\ndata:\n  from: git\n"),
    )
    .unwrap();
    git(w, &["add", "."]);
    git(w, &["commit", "-qm", "one"]);
    let root = tempfile::tempdir().unwrap();
    git(
        w,
        &[
            "clone",
            "-q",
            "--bare",
            ".",
            root.path().join("repo.git").to_str().unwrap(),
        ],
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let basic = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("deploy:{PASSWORD}"))
        )
    };
    let (server, ca) = lockstep_tests::services::git_https_with_auth(root.path(), Some(&basic)).unwrap();
    for (name, pw) in [("git-auth", PASSWORD), ("git-wrong", "not-the-password")] {
        secret(
            &client,
            &ns,
            name,
            json!({ "username": "deploy", "password": pw, "ca.crt": ca }),
        )
        .await;
    }
    let url = format!("{}/repo.git", server.url);
    let home = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        cp().kubeconfig(),
        &ns,
        "agent",
        home.path(),
        &[
            "--bootstrap-url",
            &url,
            "--bootstrap-path",
            "app",
            "--bootstrap-name",
            "boot",
            "--bootstrap-secret",
            "git-auth",
            "--bootstrap-interval",
            "1s",
        ],
    )
    .await;
    wait_ready(&client, &ns, "boot", "True", 60).await;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client.clone(), &ns);
    assert!(cms.get_opt("pulled").await.unwrap().is_some());
    // A wrong password fails, and the condition shows neither password.
    super::fixtures::create(
        &client,
        &ns,
        &super::fixtures::sync(
            "wrong",
            &url,
            json!({ "source": { "path": "app", "secretRef": { "name": "git-wrong" } } }),
        ),
    )
    .await;
    let s = wait_for(&client, &ns, "wrong", 60, |s| {
        ready(s).is_some_and(|r| r.0 == "False")
    })
    .await;
    let message = ready(&s).unwrap().2;
    assert!(message.contains("repo.git"), "{message}");
    assert!(
        !message.contains(PASSWORD) && !message.contains("not-the-password"),
        "{message}"
    );
    // Metrics: the bootstrap Sync's results, bounded labels, the provider-call family.
    let m = agent.metrics();
    let l = [format!("namespace=\"{ns}\""), "name=\"boot\"".to_owned()];
    let l: Vec<&str> = l.iter().map(String::as_str).collect();
    assert!(
        metric(&m, "lockstep_sync_total", &[l[0], l[1], "result=\"succeeded\""]).unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "lockstep_sync_ready", &l), Some(1.0), "{m}");
    assert!(
        m.contains("# TYPE lockstep_externalsecret_provider_api_calls counter"),
        "{m}"
    );
    assert!(m.contains("lockstep_sync_duration_seconds_bucket"), "{m}");
    // The bootstrap Sync polls every second: an unchanged commit skips render and apply.
    super::fixtures::eventually("a skipped poll in the log", 20, async || {
        agent.log_text().contains(r#""skipped":true"#).then_some(())
    })
    .await;
    let log = agent.log_text();
    for needle in [PASSWORD, "not-the-password"] {
        assert!(!log.contains(needle), "{needle} in the agent's log");
    }
    drop(server);
}
