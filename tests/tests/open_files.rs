//! Many partitions against the open-files limit (issue #13 item 10): the
//! real `sluice` process runs under `ulimit -n`, a topic too big for the
//! limit fails cleanly (nothing left on disk, the name usable), the broker
//! always restarts, and a topic that no longer fits at start is skipped,
//! reported in `/ready` and `sluice status`, and can be deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sluice_tests::{http_get, ProcessBroker};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

/// A script that runs `sluice` under `ulimit <flag> <files>` (`-n`: soft
/// and hard; `-Sn`: soft only).
fn limited(dir: &Path, flag: &str, files: u32) -> PathBuf {
    let path = dir.join(format!("sluice-ulimit{flag}-{files}"));
    std::fs::write(&path, format!("#!/bin/sh\nulimit {flag} {files} || exit 97\nexec '{SLUICE}' \"$@\"\n"))
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn sluice(broker: &ProcessBroker, args: &[&str]) -> Output {
    Command::new(SLUICE).args(["--broker", &broker.addr.to_string()]).args(args).output().unwrap()
}

fn ok(broker: &ProcessBroker, args: &[&str]) -> String {
    let out = sluice(broker, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sluice {args:?} failed: {text}\nbroker log:\n{}", broker.log_text());
    text
}

fn topic_dirs(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("topics"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// `topic create big --partitions 10000` fails cleanly, leaves nothing,
/// and the broker restarts with the name free.
fn big_fails_cleanly(script: &Path, data: &Path) {
    let mut broker = ProcessBroker::spawn(script.to_str().unwrap(), data, &[]);
    let out = sluice(&broker, &["topic", "create", "big", "--partitions", "10000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("open files"), "{stderr}");
    assert_eq!(topic_dirs(data), ["small"], "a failed create left files");
    ok(&broker, &["topic", "describe", "small"]);
    assert!(broker.terminate(), "{}", broker.log_text());
    let mut broker = ProcessBroker::spawn(script.to_str().unwrap(), data, &[]);
    ok(&broker, &["topic", "create", "big", "--partitions", "4"]);
    ok(&broker, &["topic", "delete", "big"]);
    assert!(broker.terminate(), "{}", broker.log_text());
}

#[test]
fn topics_beyond_the_open_files_limit_fail_cleanly_and_never_stop_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let low = limited(dir.path(), "-n", 1024);
    let mut broker = ProcessBroker::spawn(low.to_str().unwrap(), &data, &[]);
    ok(&broker, &["topic", "create", "small", "--partitions", "3"]);
    assert!(broker.terminate());
    big_fails_cleanly(&low, &data);
    // 10,000 partitions need 30,000 descriptors: more than 20,000 too.
    big_fails_cleanly(&limited(dir.path(), "-n", 20_000), &data);

    // A soft limit of 256 is raised to the hard one at start, so 300
    // partitions (900 files) fit.
    let soft = limited(dir.path(), "-Sn", 256);
    let mut broker = ProcessBroker::spawn(soft.to_str().unwrap(), &data, &[]);
    assert!(broker.log_text().contains("soft_before=Some(256)"), "{}", broker.log_text());
    ok(&broker, &["topic", "create", "wide", "--partitions", "300"]);
    assert!(broker.terminate());

    // Under a hard limit of 512 `wide` no longer fits: the broker starts,
    // serves `small`, and reports `wide`.
    let tight = limited(dir.path(), "-n", 512);
    let mut broker = ProcessBroker::spawn(tight.to_str().unwrap(), &data, &[]);
    let (code, body) = http_get(broker.admin.unwrap(), "/ready");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("failed topic wide"), "{body}");
    let status = ok(&broker, &["status"]);
    assert!(status.contains("wide") && status.contains("open files"), "{status}");
    ok(&broker, &["topic", "describe", "small"]);
    let out = sluice(&broker, &["topic", "create", "wide", "--partitions", "1"]);
    assert!(!out.status.success(), "created over a topic that failed to load");
    ok(&broker, &["topic", "delete", "wide"]);
    assert_eq!(topic_dirs(&data), ["small"]);
    ok(&broker, &["topic", "create", "wide", "--partitions", "2"]);
    assert!(broker.terminate());
    let mut broker = ProcessBroker::spawn(tight.to_str().unwrap(), &data, &[]);
    let (_, body) = http_get(broker.admin.unwrap(), "/ready");
    assert_eq!(body, "ready\n");
    ok(&broker, &["topic", "describe", "wide"]);
    assert!(broker.terminate());
}
