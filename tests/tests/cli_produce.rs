//! `sluice produce` end to end: any bytes in (a byte-string delimiter,
//! one record per file, JSON lines), headers, key delimiter and
//! timestamps, read back byte for byte with `consume --json`, and
//! `consume --json | produce --json` copying a topic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli_support;

use cli_support::{json_records, ok, shell, sluice, text};
use rand::{Rng, SeedableRng};
use sluice_tests::ProcessBroker;

/// Random records of 0..200 bytes that do not contain `delimiter`.
fn random_records(seed: u64, n: usize, delimiter: &[u8]) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    while out.len() < n {
        let len = rng.gen_range(0..200);
        let r: Vec<u8> = (0..len).map(|_| rng.gen::<u8>()).collect();
        if !r.windows(delimiter.len()).any(|w| w == delimiter) && !r.ends_with(&delimiter[..1]) {
            out.push(r);
        }
    }
    out
}

fn read_all(broker: &ProcessBroker, topic: &str) -> Vec<cli_support::Json> {
    let out = sluice(broker, &["consume", topic, "--json", "--offset", "beginning", "--exit-at-end"], b"");
    ok(&out);
    let mut records = json_records(&out.stdout);
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_records_round_trip_through_delimiter_files_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(cli_support::SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "bin", "--partitions", "1"], b""));

    // A byte-string delimiter, with escapes.
    let delimiter = b"\x00\xff\x1e";
    let records = random_records(7, 300, delimiter);
    let input: Vec<u8> = records.iter().flat_map(|r| r.iter().chain(delimiter)).copied().collect();
    let out = sluice(&broker, &["produce", "bin", "--delimiter", r"\0\xff\x1e", "--print-offsets"], &input);
    ok(&out);
    assert_eq!(text(&out.stdout).lines().count(), 300, "one offset per record");

    // One record per file.
    let files: Vec<std::path::PathBuf> = random_records(8, 3, b"\x00\xff\x1e")
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let path = dir.path().join(format!("f{i}.bin"));
            std::fs::write(&path, r).unwrap();
            path
        })
        .collect();
    let mut args = vec!["produce", "bin", "--file"];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));
    ok(&sluice(&broker, &args, b""));

    let got = read_all(&broker, "bin");
    let values: Vec<Vec<u8>> = got.iter().map(|r| r.value.clone().unwrap()).collect();
    let mut want = records.clone();
    want.extend(files.iter().map(|p| std::fs::read(p).unwrap()));
    assert_eq!(values, want, "every byte back, in order");
    assert!(got.iter().all(|r| r.key.is_none()));

    // consume --json | produce --json copies the topic byte for byte.
    ok(&sluice(&broker, &["topic", "create", "copy", "--partitions", "1"], b""));
    let out = shell(
        &broker,
        r#""$SLUICE" consume bin --json --offset beginning --exit-at-end | "$SLUICE" produce copy --json"#,
    );
    ok(&out);
    let copy = read_all(&broker, "copy");
    let strip = |v: &[cli_support::Json]| -> Vec<_> {
        v.iter().map(|r| (r.timestamp, r.key.clone(), r.value.clone(), r.headers.clone())).collect()
    };
    assert_eq!(strip(&copy), strip(&got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_headers_timestamps_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ProcessBroker::spawn(cli_support::SLUICE, dir.path(), &[]);
    ok(&sluice(&broker, &["topic", "create", "t", "--partitions", "2"], b""));

    let out = sluice(
        &broker,
        &[
            "produce",
            "t",
            "--key-delimiter",
            r"\t",
            "-H",
            "a=1",
            "-H",
            "b=x y",
            "--timestamp",
            "1700000000000",
            "--partition",
            "1",
        ],
        b"k1\tv1\nnull\tv2\nv3\n",
    );
    ok(&out);
    let out = sluice(
        &broker,
        &[
            "consume",
            "t",
            "--partition",
            "1",
            "-e",
            "--offset",
            "beginning",
            "--format",
            r"%p:%o %k|%K %s %h %T\n",
        ],
        b"",
    );
    ok(&out);
    assert_eq!(
        text(&out.stdout),
        "1:0 k1|2 v1 a=1,b=x y 1700000000000\n1:1 null|4 v2 a=1,b=x y 1700000000000\n\
         1:2 |-1 v3 a=1,b=x y 1700000000000\n"
    );
    // A null key and the key "null" differ in JSON.
    let out =
        sluice(&broker, &["consume", "t", "--partition", "1", "-e", "--offset", "beginning", "--json"], b"");
    let lines = text(&out.stdout);
    assert!(lines.contains(r#""key":"null""#) && lines.contains(r#""key":null"#), "{lines}");

    // The alias still works.
    ok(&sluice(&broker, &["produce", "t", "--key-separator", ":", "--partition", "0"], b"a:b\n"));

    // Bad JSON on line 2: the record before it is still sent and its offset printed.
    let out = sluice(
        &broker,
        &["produce", "t", "--json", "--print-offsets"],
        b"{\"value\":\"ok\",\"partition\":0}\nnot json\n{\"value\":\"never\"}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "0 1\n", "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("input line 2"), "{}", text(&out.stderr));
}
