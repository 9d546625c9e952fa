//! The image's root filesystem, as `deploy/Dockerfile` assembles it with
//! `deploy/image/rootfs.sh`, built here from this build's binaries: the agent, the CLI, the
//! kustomize helper (found beside them) and OpenSSH's client (for `ssh://` sources) run in it,
//! chrooted, as the image's user 65532, with no shell and nothing else there. (The Dockerfile's build stage is Alpine, where the two
//! binaries come out static and only `ssh` brings libraries; here the script copies whatever
//! `ldd` lists for each, the same way.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lockstep_tests::ok;

/// `chroot`, found on this machine's PATH (the commands run with an empty environment).
fn chroot() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("chroot"))
        .find(|p| p.is_file())
        .expect("chroot (coreutils) not found")
}

fn in_root(root: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(chroot())
        .arg("--userspec=65532:65532")
        .arg(root)
        .arg(program)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .env("HOME", "/tmp")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_image_root_runs_the_agent_the_cli_and_ssh_as_nonroot() {
    assert!(
        running_as_root(),
        "this test builds a root filesystem and chroots into it: it needs root"
    );
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_lockstep-agent"));
    let cli = super::fixtures::lockstep_bin();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("rootfs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/image/rootfs.sh");
    ok(
        Command::new("sh")
            .arg(&script)
            .arg(&root)
            .arg(&agent)
            .arg(&cli)
            .arg(super::fixtures::kustomize_helper())
            .arg(lockstep_tests::peer("lockstep-helm"))
            .output()
            .unwrap(),
        "rootfs.sh",
    );
    assert!(!root.join("bin/sh").exists(), "no shell in the image");
    // What a container runtime provides in every container, not the image: /dev/null.
    std::fs::create_dir_all(root.join("dev")).unwrap();
    let mknod = Command::new("mknod")
        .arg("-m")
        .arg("666")
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(mknod.success());

    let version = ok(
        in_root(&root, "/usr/local/bin/lockstep-agent", &["--version"], &[]),
        "lockstep-agent --version",
    );
    assert!(String::from_utf8_lossy(&version).starts_with("lockstep-agent "));
    let keygen = ok(
        in_root(&root, "/usr/local/bin/lockstep", &["keygen", "age"], &[]),
        "lockstep keygen age",
    );
    assert!(String::from_utf8_lossy(&keygen).contains("AGE-SECRET-KEY-1"));
    // The CLI finds the kustomize helper beside itself and builds an overlay with it.
    for (file, text) in [
        ("tmp/repo/base/kustomization.yaml", "resources: [cm.yaml]\n"),
        (
            "tmp/repo/base/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n",
        ),
        (
            "tmp/repo/prod/kustomization.yaml",
            "resources: [../base]\nnamePrefix: prod-\n",
        ),
    ] {
        std::fs::create_dir_all(root.join(file).parent().unwrap()).unwrap();
        std::fs::write(root.join(file), text).unwrap();
    }
    let built = ok(
        in_root(
            &root,
            "/usr/local/bin/lockstep",
            &["build", "/tmp/repo/prod", "--root", "/tmp/repo"],
            &[],
        ),
        "lockstep build",
    );
    let built = String::from_utf8_lossy(&built);
    assert!(
        built.contains("# Source: base/cm.yaml (kustomize build prod)")
            && built.contains("name: prod-settings"),
        "{built}"
    );

    // And the Helm helper: a chart directory rendered.
    for (file, text) in [
        (
            "tmp/repo/chart/Chart.yaml",
            "apiVersion: v2\nname: chart\nversion: 0.1.0\n",
        ),
        (
            "tmp/repo/chart/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\n",
        ),
    ] {
        std::fs::create_dir_all(root.join(file).parent().unwrap()).unwrap();
        std::fs::write(root.join(file), text).unwrap();
    }
    let built = ok(
        in_root(
            &root,
            "/usr/local/bin/lockstep",
            &[
                "build",
                "/tmp/repo/chart",
                "--root",
                "/tmp/repo",
                "--release-name",
                "web",
            ],
            &[],
        ),
        "lockstep build (a chart)",
    );
    let built = String::from_utf8_lossy(&built);
    assert!(built.contains("name: web-settings"), "{built}");

    // ssh resolves the user (it refuses to run for one it cannot look up) and reads no config.
    let config = ok(
        in_root(
            &root,
            "/usr/bin/ssh",
            &["-F", "/dev/null", "-G", "git.example.com"],
            &[],
        ),
        "ssh -G",
    );
    assert!(String::from_utf8_lossy(&config).contains("user nonroot"));
    // ssh-agent on a socket in /tmp, and ssh-add talking to it: what each ssh:// fetch does.
    let mut ssh_agent = Command::new(chroot())
        .arg("--userspec=65532:65532")
        .arg(&root)
        .args(["/usr/bin/ssh-agent", "-D", "-a", "/tmp/agent.sock"])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !root.join("tmp/agent.sock").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ssh-agent made no socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = in_root(
        &root,
        "/usr/bin/ssh-add",
        &["-l"],
        &[("SSH_AUTH_SOCK", "/tmp/agent.sock")],
    );
    let _ = ssh_agent.kill();
    let _ = ssh_agent.wait();
    // Exit 1 with this message: the agent answered, and holds no key.
    assert_eq!(
        list.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(String::from_utf8_lossy(&list.stdout).contains("no identities"));
}

/// Whether this process runs as root (from /proc, without unsafe code).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}
