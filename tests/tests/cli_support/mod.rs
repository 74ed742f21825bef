//! What the `cli_consume` and `cli_produce` tests share: running the
//! `sluice` binary (directly or in a shell pipeline) against a broker
//! process, and reading `consume --json` output back as bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::process::{Child, Command, Output};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sluice_tests::{run_cli, start_cli, ProcessBroker};

/// The `sluice` program.
pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice-e2e");

/// Starts `sluice --broker ADDR args...` with piped stdio.
pub fn start(broker: &ProcessBroker, args: &[&str]) -> Child {
    start_cli(SLUICE, &broker.addr.to_string(), args)
}

/// Runs `sluice args...` with `stdin`, to the end.
pub fn sluice(broker: &ProcessBroker, args: &[&str], stdin: &[u8]) -> Output {
    run_cli(SLUICE, &broker.addr.to_string(), args, stdin)
}

/// Runs `script` under `sh -c`, with `$SLUICE` the program and
/// `SLUICE_BROKER` pointing at `broker`.
pub fn shell(broker: &ProcessBroker, script: &str) -> Output {
    Command::new("sh")
        .args(["-c", script])
        .env("SLUICE", SLUICE)
        .env("SLUICE_BROKER", broker.addr.to_string())
        .output()
        .unwrap()
}

/// Lossy text, for messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts `out` succeeded, showing its stderr otherwise.
pub fn ok(out: &Output) {
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), text(&out.stderr));
}

/// One record of `consume --json` output, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json {
    pub partition: u64,
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Decodes `consume --json` output (base64 where the object says so).
pub fn json_records(stdout: &[u8]) -> Vec<Json> {
    text(stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let b64 = v.get("encoding").and_then(|e| e.as_str()) == Some("base64");
            let bytes = |f: &serde_json::Value| -> Option<Vec<u8>> {
                let s = f.as_str()?;
                Some(if b64 { STANDARD.decode(s).unwrap() } else { s.as_bytes().to_vec() })
            };
            Json {
                partition: v["partition"].as_u64().unwrap(),
                offset: v["offset"].as_u64().unwrap(),
                timestamp: v["timestamp"].as_i64().unwrap(),
                key: bytes(&v["key"]),
                value: bytes(&v["value"]),
                headers: v["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| (bytes(&h["key"]).unwrap(), bytes(&h["value"])))
                    .collect(),
            }
        })
        .collect()
}
