//! The harness fails fast and says what to do: missing binaries, a crashing etcd, a process
//! that never becomes ready. No wait is unbounded.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use lockstep_tests::controlplane::{ControlPlane, HarnessError, Options};

fn fake_assets(etcd_script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, script) in [("etcd", etcd_script), ("kube-apiserver", "#!/bin/sh\nexit 1\n")] {
        let p = dir.path().join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

#[test]
fn missing_binaries_name_the_fix() {
    let empty = tempfile::tempdir().unwrap();
    let err = ControlPlane::start(&Options {
        assets: Some(empty.path().into()),
        ..Options::default()
    })
    .unwrap_err();
    assert!(matches!(err, HarnessError::MissingBinary { name: "etcd", .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("cargo xtask setup") && msg.contains("KUBEBUILDER_ASSETS"),
        "{msg}"
    );
}

#[test]
fn a_crashed_etcd_is_reported_with_its_log() {
    let assets =
        fake_assets("#!/bin/sh\necho 'etcdmain: listen tcp: bind: disk full (simulated)' >&2\nexit 3\n");
    let err = ControlPlane::start(&Options {
        assets: Some(assets.path().into()),
        ..Options::default()
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HarnessError::Crashed { name: "etcd", .. }), "{msg}");
    assert!(
        msg.contains("exit status: 3") && msg.contains("disk full (simulated)"),
        "{msg}"
    );
}

#[test]
fn a_hung_process_times_out_within_its_bound() {
    let assets = fake_assets("#!/bin/sh\nexec sleep 600\n");
    let t = Instant::now();
    let err = ControlPlane::start(&Options {
        assets: Some(assets.path().into()),
        ready_timeout: Some(Duration::from_secs(2)),
        ..Options::default()
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            HarnessError::Timeout {
                name: "etcd",
                seconds: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}
