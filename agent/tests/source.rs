//! Source: shallow fetches of a real Git repository over file://, updates, bad refs and paths.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lockstep_agent::source::GitCache;
use lockstep_tests::git;

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
    assert_eq!(rev.files.keys().collect::<Vec<_>>(), ["apps/cm.yaml", "ns.yaml"]);
    assert_eq!(rev.files["ns.yaml"], b"kind: Namespace\n");

    // A new commit is picked up by the next fetch.
    std::fs::remove_file(r.join("clusters/prod/apps/cm.yaml")).unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "two"]);
    let second = git(r, &["rev-parse", "HEAD"]);
    let rev = src.fetch(&url, "main", "clusters/prod").unwrap();
    assert_eq!(rev.commit, second);
    assert_eq!(rev.files.keys().collect::<Vec<_>>(), ["ns.yaml"]);

    // Bad branch and path are named.
    let e = src.fetch(&url, "nope", "").unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    let e = src
        .fetch(&url, "main", "clusters/staging")
        .unwrap_err()
        .to_string();
    assert!(e.contains("clusters/staging"), "{e}");
}

#[test]
fn fetches_over_smart_http_from_git_http_backend() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git(w, &["init", "-q"]);
    std::fs::write(w.join("a.yaml"), "kind: ConfigMap\n").unwrap();
    git(w, &["add", "."]);
    git(w, &["commit", "-qm", "one"]);
    let head = git(w, &["rev-parse", "HEAD"]);
    let bare = root.path().join("repo.git");
    git(w, &["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);
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
    use lockstep_agent::source::{Credentials, Reference};
    use zeroize::Zeroizing;
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

    let server = lockstep_tests::services::git_ssh().unwrap();
    let url = format!("{}{}", server.url, bare.display());
    let cache = tempfile::tempdir().unwrap();
    let src = GitCache::new(cache.path());
    let ssh = |identity: &str, passphrase: Option<&str>, known_hosts: &str| Credentials::Ssh {
        identity: Zeroizing::new(identity.as_bytes().to_vec()),
        passphrase: passphrase.map(|p| Zeroizing::new(p.to_owned())),
        known_hosts: known_hosts.to_owned(),
    };
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
