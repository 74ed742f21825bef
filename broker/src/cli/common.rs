//! What every `sluice` command shares, and the only module the commands
//! import from this tree: the error type a command fails with, the
//! connection to the broker, the tokio runtime, and output (JSON views,
//! human tables).
//!
//! JSON output is a `#[derive(Serialize)]` view struct per command, printed
//! by [`print_json`]. The views list their fields in alphabetical order:
//! that is the key order the CLI has always printed.
//!
//! All printing on stdout goes through [`say_line`] (the `say!` macro): a
//! closed stdout (`sluice topic list | head -1`) ends the process quietly
//! with status 0, as other Unix tools do, instead of panicking.
//!
//! `--broker` names one address or several separated by commas
//! (`a:9500,b:9500`): [`connect`] uses the first one that accepts a
//! connection, in order; the producer and consumer take the whole list
//! as their bootstrap list.
//!
//! [`connect`] checks that the peer speaks Sluice (an ApiVersions call)
//! and, when it does not, says what it looks like ([`CliError::NotABroker`]).

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use sluice_protocol::api::{encode_request, ApiVersionsRequest, NO_OFFSET};
use sluice_protocol::client::{ClientError, Connection};
use sluice_protocol::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::ConfigError;
use crate::errors::BrokerError;

/// A failed command: printed as one `error: ...` line, exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker failed to start or stop.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A request to the broker failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// Producing failed.
    #[error("{0}")]
    Producer(#[from] sluice_producer::ProducerError),
    /// Consuming failed.
    #[error("{0}")]
    Consumer(#[from] sluice_consumer::ConsumerError),
    /// Output could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The topic does not exist (and the broker did not create it).
    #[error(
        "topic \"{0}\" does not exist (unknown topic); create it with \"sluice topic create {0}\" \
         or start the broker with --auto-create-topics true"
    )]
    UnknownTopic(String),
    /// The topic has no such partition.
    #[error("topic \"{topic}\" has no partition {partition} (it has {count}: 0 to {last})", last = count.saturating_sub(1))]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// Partitions the topic has.
        count: u32,
    },
    /// The peer answered, but not in Sluice's protocol.
    #[error("{addr} is not a Sluice broker ({how})")]
    NotABroker {
        /// The address given with `--broker`.
        addr: String,
        /// What its answer looked like.
        how: String,
    },
}

impl CliError {
    /// The same error, said the way a person acts on it: an unknown topic
    /// from any layer becomes [`CliError::UnknownTopic`], a connection
    /// refused gets a hint about `sluice serve`.
    pub fn explained(self) -> Self {
        let unknown = |message: &str| {
            let name = message.split('`').nth(1).unwrap_or(message);
            Self::UnknownTopic(name.to_owned())
        };
        match self {
            Self::Producer(sluice_producer::ProducerError::UnknownTopic(t)) => Self::UnknownTopic(t),
            Self::Producer(sluice_producer::ProducerError::UnknownPartition { topic, partition, count }) => {
                Self::UnknownPartition { topic, partition, count }
            }
            Self::Client(ClientError::Server { code: ErrorCode::UnknownTopic, message }) => unknown(&message),
            Self::Client(ClientError::Connect { addr, message }) => Self::Usage(format!(
                "cannot connect to {addr}: {message} (is `sluice serve` running there? see --broker)"
            )),
            other => other,
        }
    }

    /// Whether this is stdout closed by its reader: a clean end, not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Writes one line on stdout; a closed stdout ends the process with status
/// 0 (its reader has all it wanted), any other write error with status 1.
pub fn say_line(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(format_args!("{line}\n")).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` for the CLI: see [`say_line`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::common::say_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// The client id the CLI's connections, producer and consumer use.
pub const CLIENT_ID: &str = "sluice-cli";

/// The runtime a command runs on.
///
/// # Errors
/// [`CliError::Io`] when tokio cannot start its threads.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Connects for admin requests to the first broker of `brokers` (one
/// address, or several separated by commas) that can be reached.
///
/// # Errors
/// [`CliError::Client`] when no broker can be reached.
pub async fn connect(brokers: &str) -> Result<Connection, CliError> {
    let (conn, addr) = connect_waiting(brokers).await.map_err(|e| CliError::from(e).explained())?;
    let addr = addr.as_str();
    let handshake = conn.with_timeout(HANDSHAKE_TIMEOUT);
    match handshake.call(&ApiVersionsRequest).await {
        Ok(_) => Ok(handshake.with_timeout(Duration::from_secs(30))),
        Err(ClientError::Server { .. }) => Ok(handshake.with_timeout(Duration::from_secs(30))),
        Err(e) => Err(identify(addr).await.unwrap_or_else(|| e.into())),
    }
}

/// How long [`connect`] keeps retrying a broker that refuses connections
/// (`--wait-ms`; none by default: a missing broker fails at once).
static CONNECT_WAIT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Sets how long [`connect`] retries a broker that is down (once, at start).
pub fn set_connect_wait(wait: Duration) {
    let _ = CONNECT_WAIT.set(wait);
}

/// Connects to the first of `brokers` that can be reached (see
/// [`connect`]), retrying while none can and the wait set by
/// [`set_connect_wait`] lasts; says on stderr what it is waiting for.
/// Returns the connection and the address it reached.
async fn connect_waiting(brokers: &str) -> Result<(Connection, String), ClientError> {
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT.get().copied().unwrap_or_default();
    let addrs: Vec<&str> = brokers.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    let addrs = if addrs.is_empty() { vec![brokers] } else { addrs };
    let mut failures: u64 = 0;
    loop {
        let mut refused = String::new();
        for addr in &addrs {
            match Connection::connect(addr, CLIENT_ID).await {
                Ok(conn) => return Ok((conn, (*addr).to_owned())),
                Err(ClientError::Connect { message, .. }) if tokio::time::Instant::now() < deadline => {
                    refused = message;
                }
                Err(e @ ClientError::Connect { .. }) if addr != addrs.last().unwrap_or(addr) => {
                    tracing::debug!(error = %e, "broker unreachable; trying the next");
                }
                Err(e) => return Err(e),
            }
        }
        failures += 1;
        let pause = Duration::from_millis(100 * failures.min(10));
        eprintln!("waiting for the broker at {brokers} ({refused}); retrying in {pause:?}");
        tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
    }
}

/// How long the handshake waits for a Sluice broker's answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks that `addr` is a Sluice broker: for commands whose clients
/// connect on their own (`produce`, `consume`).
///
/// # Errors
/// [`CliError::NotABroker`], or the connection failing.
pub async fn handshake(addr: &str) -> Result<(), CliError> {
    connect(addr).await.map(drop)
}

/// What the peer at `addr` is when it failed the handshake: sends it an
/// ApiVersions frame on a fresh connection and looks at the first bytes
/// of its answer. `None` when it cannot tell (then the original error
/// stands).
async fn identify(addr: &str) -> Option<CliError> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        for chunk in encode_request(1, CLIENT_ID, &ApiVersionsRequest).into_chunks() {
            stream.write_all(&chunk).await.ok()?;
        }
        let mut head = [0u8; 16];
        let n = stream.read(&mut head).await.unwrap_or(0);
        Some(head[..n].to_vec())
    };
    let how = match tokio::time::timeout(HANDSHAKE_TIMEOUT, probe).await {
        Ok(None) => return None,
        Ok(Some(head)) if head.starts_with(b"HTTP/") => "it answered like an HTTP server; the admin port?",
        Ok(Some(head)) if head.is_empty() => "it closed the connection without answering",
        Ok(Some(_)) => "it answered with bytes that are not Sluice's protocol",
        Err(_) => "it did not answer Sluice's handshake",
    };
    Some(CliError::NotABroker { addr: addr.to_owned(), how: how.to_owned() })
}

/// Client commands show the client crates' retries and warnings on
/// stderr, so a broker that is down or restarting shows up as `retrying`
/// lines instead of silence (those crates log retries at debug level);
/// `RUST_LOG` overrides the filter.
pub fn init_client_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,sluice_producer=debug,sluice_consumer=debug")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Prints `value` as pretty JSON on stdout.
///
/// # Errors
/// [`CliError::Usage`] when it does not serialize.
pub fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    say!("{}", serde_json::to_string_pretty(value).map_err(|e| CliError::Usage(e.to_string()))?);
    Ok(())
}

/// Prints rows as left-aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        say!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// An offset from the wire, `None` for [`NO_OFFSET`] (JSON `null`).
pub fn known_offset(o: u64) -> Option<u64> {
    (o != NO_OFFSET).then_some(o)
}

/// An offset for a table: `-` for [`NO_OFFSET`].
pub fn offset_text(o: u64) -> String {
    known_offset(o).map_or_else(|| "-".into(), |o| o.to_string())
}
