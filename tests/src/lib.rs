//! Harness for Sluice's end-to-end tests: brokers started in-process or as
//! subprocesses on `127.0.0.1:0` over temporary data directories, and small
//! client helpers. Everything talks to loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod checker;
pub mod cluster;
pub mod cluster_workload;
pub mod faults;
pub mod ports;
pub mod powerfs;
pub mod produce_stream;
pub mod proxy;
pub mod wait;
pub mod workload;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_broker::config::BrokerConfig;
use sluice_broker::server::Server;
use sluice_protocol::api::{
    Acks, CreateTopicRequest, FetchPartition, FetchRequest, ProduceRequest, ProduceResponse,
};
use sluice_protocol::batch::{split_batches, BatchBuilder, RecordBatch};
use sluice_protocol::client::{ClientError, Connection};

/// A broker running inside the test process.
#[derive(Debug)]
pub struct TestBroker {
    /// The server, until stopped.
    server: Option<Server>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where Kafka clients connect, when the Kafka listener is on.
    pub kafka: Option<SocketAddr>,
    /// Its configuration (data dir included).
    pub config: BrokerConfig,
    /// Keeps the data directory alive.
    _dir: Option<tempfile::TempDir>,
}

/// A broker configuration on a fresh temporary directory, port 0.
pub fn test_config() -> (BrokerConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        kafka_listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..BrokerConfig::default()
    };
    (config, dir)
}

impl TestBroker {
    /// Starts a broker with defaults adjusted by `adjust`.
    pub async fn start(adjust: impl FnOnce(&mut BrokerConfig)) -> Self {
        let (mut config, dir) = test_config();
        adjust(&mut config);
        Self::start_with(config, Some(dir)).await
    }

    /// Starts a broker on `config` as it is.
    pub async fn start_with(config: BrokerConfig, dir: Option<tempfile::TempDir>) -> Self {
        let (server, _) = Server::start(config.clone()).await.unwrap();
        let (addr, kafka) = (server.local_addr(), server.kafka_addr());
        Self { server: Some(server), addr, kafka, config, _dir: dir }
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// Stops it gracefully (flush, clean-shutdown markers).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
            server.wait().await.unwrap();
        }
    }

    /// Stops it and starts it again on the same data and port-0 address.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        let dir = self._dir.take();
        Self::start_with(self.config.clone(), dir).await
    }

    /// A new client connection.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.addr.to_string(), "test").await.unwrap()
    }
}

/// A `sluice serve` subprocess.
#[derive(Debug)]
pub struct ProcessBroker {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its admin HTTP address, once known.
    pub admin: Option<SocketAddr>,
    /// Its Kafka listener's address, once known (`--kafka-listen
    /// 127.0.0.1:0` unless the flags say otherwise).
    pub kafka: Option<SocketAddr>,
    /// Everything it logged (for failure messages).
    pub log: Arc<Mutex<Vec<String>>>,
    /// Listening events from its log.
    events: mpsc::Receiver<Listening>,
}

/// What a starting broker announced.
#[derive(Debug, Clone, Copy)]
enum Listening {
    Admin(SocketAddr),
    Kafka(SocketAddr),
    Clients(SocketAddr),
}

/// `GET path` over HTTP/1.1; returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

impl ProcessBroker {
    /// Starts `bin serve` (the `sluice` program: integration tests pass
    /// `env!("CARGO_BIN_EXE_sluice-e2e")`) on `data_dir` with extra flags,
    /// waiting until it accepts clients.
    pub fn spawn(bin: &str, data_dir: &Path, extra: &[&str]) -> Self {
        Self::start(bin, data_dir, extra, true)
    }

    /// As [`spawn`](Self::spawn), but returns as soon as the admin listener
    /// is up (before recovery); [`wait_listening`](Self::wait_listening) waits for the rest.
    pub fn spawn_admin_first(bin: &str, data_dir: &Path, extra: &[&str]) -> Self {
        Self::start(bin, data_dir, extra, false)
    }

    fn start(bin: &str, data_dir: &Path, extra: &[&str], wait_for_clients: bool) -> Self {
        let mut broker = Self::launch(bin, data_dir, extra);
        let waited = if wait_for_clients {
            broker.try_wait_listening()
        } else {
            broker.wait_for(|e| matches!(e, Listening::Admin(_)))
        };
        waited.unwrap_or_else(|e| panic!("{e}"));
        broker
    }

    /// Starts `bin serve` as [`spawn`](Self::spawn) does but returns at once,
    /// before anything is listening: [`try_wait_listening`](Self::try_wait_listening)
    /// waits (so several brokers that need each other can start together).
    pub fn launch(bin: &str, data_dir: &Path, extra: &[&str]) -> Self {
        Self::launch_with_log(bin, data_dir, extra, "info")
    }

    /// [`launch`](Self::launch) with `RUST_LOG` set to `filter`.
    pub fn launch_with_log(bin: &str, data_dir: &Path, extra: &[&str], filter: &str) -> Self {
        let mut command = Command::new(bin);
        command.arg("serve");
        if !extra.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--admin-listen") {
            command.args(["--admin-listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--kafka-listen") {
            command.args(["--kafka-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let addr = |l: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                };
                let event = if line.contains("admin listening") {
                    addr(&line).map(Listening::Admin)
                } else if line.contains("kafka listening") {
                    addr(&line).map(Listening::Kafka)
                } else if line.contains("sluice listening") {
                    addr(&line).map(Listening::Clients)
                } else {
                    None
                };
                // Log first: whoever learns the address can read the line.
                sink.lock().unwrap().push(line);
                if let Some(e) = event {
                    let _ = tx.send(e);
                }
            }
        });
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: None,
            kafka: None,
            data_dir: data_dir.to_owned(),
            log,
            events: rx,
        }
    }

    /// Waits (at most 60 s) for an event matching `want`, recording
    /// addresses; on failure kills the broker and returns its log.
    fn wait_for(&mut self, want: impl Fn(&Listening) -> bool) -> Result<(), String> {
        loop {
            let Ok(event) = self.events.recv_timeout(Duration::from_secs(60)) else {
                let _ = self.child.kill();
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(format!("broker did not start ({status}):\n{}", self.log_text()));
            };
            match event {
                Listening::Admin(a) => self.admin = Some(a),
                Listening::Kafka(a) => self.kafka = Some(a),
                Listening::Clients(a) => self.addr = a,
            }
            if want(&event) {
                return Ok(());
            }
        }
    }

    /// Waits until the broker accepts clients (after recovery).
    pub fn wait_listening(&mut self) {
        self.try_wait_listening().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits (at most 60 s) until the broker accepts clients; when it exits
    /// or stays silent instead, kills it and returns its log.
    ///
    /// # Errors
    /// The broker's exit status and log.
    pub fn try_wait_listening(&mut self) -> Result<(), String> {
        self.wait_for(|e| matches!(e, Listening::Clients(_)))
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, from /proc (Linux), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kb * 1024)
    }

    /// Sends a signal (`STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits; returns whether it exited with status 0.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(std::time::Instant::now() < deadline, "broker did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log lines so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A new client connection.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.addr.to_string(), "test").await.unwrap()
    }
}

impl Drop for ProcessBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A batch of `records` records with `value_len`-byte values derived from `tag`.
pub fn batch(records: usize, value_len: usize, tag: u64) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..records {
        let value: Vec<u8> = (0..value_len).map(|j| (tag as usize + i * 7 + j) as u8).collect();
        b.append(1_700_000_000_000 + i as i64, Some(&tag.to_be_bytes()), Some(&value), &[]);
    }
    b.build()
}

/// Creates a topic.
pub async fn create_topic(
    conn: &Connection,
    name: &str,
    partitions: u32,
    configs: &[(&str, &str)],
) -> Result<(), ClientError> {
    let configs = configs.iter().map(|(k, v)| sluice_protocol::api::ConfigEntry::new(*k, *v)).collect();
    conn.call(&CreateTopicRequest { name: name.into(), partitions, configs }).await.map(drop)
}

/// Produces one batch.
pub async fn produce(
    conn: &Connection,
    topic: &str,
    partition: u32,
    acks: Acks,
    batch: Bytes,
) -> Result<ProduceResponse, ClientError> {
    conn.call(&ProduceRequest { acks, timeout_ms: 30_000, topic: topic.into(), partition, batch }).await
}

/// One fetch of one partition (no long poll).
pub async fn fetch_once(
    conn: &Connection,
    topic: &str,
    partition: u32,
    offset: u64,
    max_wait_ms: u32,
) -> Result<sluice_protocol::api::FetchPartitionResponse, ClientError> {
    let req = FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 1 << 20,
        partitions: vec![FetchPartition { topic: topic.into(), partition, offset, max_bytes: 1 << 20 }],
    };
    let mut resp = conn.call(&req).await?;
    Ok(resp.partitions.remove(0))
}

/// Every batch of a partition from `offset` to its high watermark, CRC checked.
pub async fn read_partition(
    conn: &Connection,
    topic: &str,
    partition: u32,
    mut offset: u64,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    loop {
        let p = fetch_once(conn, topic, partition, offset, 0).await.unwrap();
        assert!(p.error_code.is_ok(), "fetch failed: {:?}", p.error_code);
        for b in split_batches(p.records) {
            let b = b.unwrap();
            b.verify_crc().unwrap();
            if b.header().last_offset() >= offset {
                offset = b.header().next_offset();
                out.push(b);
            }
        }
        if offset >= p.high_watermark {
            return out;
        }
    }
}

/// Bytes of disk used under `dir` (allocated blocks, as `du` counts).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// Longest a `sluice` command run by [`run_cli`] may take.
pub const CLI_DEADLINE: Duration = Duration::from_secs(60);

/// Starts the `sluice` program `bin` as `bin --broker ADDR args...`, with
/// piped stdin, stdout and stderr.
pub fn start_cli(bin: &str, addr: &str, args: &[&str]) -> Child {
    Command::new(bin)
        .args(["--broker", addr])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `bin --broker ADDR args...` with `stdin` (written on a thread, so
/// a command that does not read it still ends) to the end; kills it and
/// panics if it runs past [`CLI_DEADLINE`]. The one way the CLI tests run
/// the binary.
pub fn run_cli(bin: &str, addr: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::{Read, Write};
    let mut child = start_cli(bin, addr, args);
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin); // a command may exit without reading it
    });
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            pipe.read_to_end(&mut buf).unwrap();
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + CLI_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("sluice {args:?} still running after {CLI_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().unwrap();
    std::process::Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}
