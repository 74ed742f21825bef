//! `sluice produce --acks durable --print-offsets` as a long-running
//! stream, for the acceptance scenario of issue #18: the test feeds lines
//! while it injects faults, then closes stdin and pairs each input line
//! with the `partition offset` (or `error ...`) line the CLI printed for it
//! (the CLI prints one per record, in input order).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::checker::Ack;
use crate::start_cli;

/// A running `sluice produce`.
#[derive(Debug)]
pub struct ProduceStream {
    child: Child,
    stdin: Option<ChildStdin>,
    sent: Vec<Bytes>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// Where a line was acknowledged (`(partition, offset)`), or the CLI's
/// line instead.
pub type Delivered = Result<(u32, u64), String>;

/// How a stream ended.
#[derive(Debug)]
pub struct StreamOutcome {
    /// Exit status (`None`: killed after the deadline).
    pub status: Option<ExitStatus>,
    /// Each value sent, with where it was acknowledged (`Err`: the line
    /// the CLI printed instead, or "no line" when it printed none).
    pub results: Vec<(Bytes, Delivered)>,
    /// Its stderr.
    pub stderr: String,
}

impl StreamOutcome {
    /// The acknowledged records, stamped `at` (the CLI reports only at the end).
    pub fn acks(&self, at: Instant) -> Vec<Ack> {
        self.results
            .iter()
            .filter_map(|(value, r)| {
                r.as_ref().ok().map(|(partition, offset)| Ack {
                    partition: *partition,
                    offset: *offset,
                    value: value.clone(),
                    at,
                })
            })
            .collect()
    }

    /// Values that were not acknowledged, with the CLI's line for each.
    pub fn failures(&self) -> Vec<String> {
        self.results.iter().filter_map(|(v, r)| r.as_ref().err().map(|e| format!("{v:?}: {e}"))).collect()
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

impl ProduceStream {
    /// Starts `bin --broker BOOTSTRAP produce TOPIC --acks durable
    /// --print-offsets` plus `extra`.
    pub fn start(bin: &str, bootstrap: &str, topic: &str, extra: &[&str]) -> Self {
        let mut args = vec!["produce", topic, "--acks", "durable", "--print-offsets"];
        args.extend_from_slice(extra);
        let mut child = start_cli(bin, bootstrap, &args);
        let stdin = child.stdin.take();
        let stdout = Some(drain(child.stdout.take().unwrap()));
        let stderr = Some(drain(child.stderr.take().unwrap()));
        Self { child, stdin, sent: Vec::new(), stdout, stderr }
    }

    /// Writes `n` more lines (`{prefix}-{i}`, unique per stream); returns
    /// false when the CLI no longer reads its input.
    pub fn send(&mut self, prefix: &str, n: usize) -> bool {
        let Some(stdin) = self.stdin.as_mut() else { return false };
        let mut text = String::new();
        let mut values = Vec::new();
        for _ in 0..n {
            let value = format!("{prefix}-{}", self.sent.len() + values.len());
            text.push_str(&value);
            text.push('\n');
            values.push(Bytes::from(value));
        }
        if stdin.write_all(text.as_bytes()).and_then(|()| stdin.flush()).is_err() {
            return false;
        }
        self.sent.extend(values);
        true
    }

    /// Lines written so far.
    pub fn sent(&self) -> usize {
        self.sent.len()
    }

    /// Closes stdin and waits (at most `timeout`, then kills it) for the
    /// CLI to settle every record and exit.
    pub fn finish(mut self, timeout: Duration) -> StreamOutcome {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let stderr = String::from_utf8_lossy(&self.stderr.take().unwrap().join().unwrap()).into_owned();
        let mut lines = std::str::from_utf8(&stdout).unwrap_or_default().lines();
        let results = std::mem::take(&mut self.sent)
            .into_iter()
            .map(|value| {
                let line = lines.next().unwrap_or("no line");
                (value, parse_line(line))
            })
            .collect();
        StreamOutcome { status, results, stderr }
    }
}

/// `partition offset`, or the line itself as the error.
fn parse_line(line: &str) -> Delivered {
    let mut words = line.split_whitespace();
    match (words.next().map(str::parse), words.next().map(str::parse), words.next()) {
        (Some(Ok(p)), Some(Ok(o)), None) => Ok((p, o)),
        _ => Err(line.to_owned()),
    }
}

impl Drop for ProduceStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn lines_parse_as_positions_or_errors() {
        assert_eq!(parse_line("2 17"), Ok((2, 17)));
        assert_eq!(parse_line("error delivery timed out"), Err("error delivery timed out".into()));
        assert_eq!(parse_line("no line"), Err("no line".into()));
        assert_eq!(parse_line("1 2 3"), Err("1 2 3".into()));
    }
}
