//! What every `sluice` command shares, and the only module the commands
//! import from this tree: the error type a command fails with, the
//! connection to the broker, the tokio runtime, and output (JSON views,
//! human tables).
//!
//! JSON output is a `#[derive(Serialize)]` view struct per command, printed
//! by [`print_json`]. The views list their fields in alphabetical order:
//! that is the key order the CLI has always printed.

use std::time::Duration;

use serde::Serialize;
use sluice_protocol::api::NO_OFFSET;
use sluice_protocol::client::{ClientError, Connection};

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
}

/// The client id the CLI's connections, producer and consumer use.
pub const CLIENT_ID: &str = "sluice-cli";

/// The runtime a command runs on.
///
/// # Errors
/// [`CliError::Io`] when tokio cannot start its threads.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Connects to the broker at `addr` for admin requests.
///
/// # Errors
/// [`CliError::Client`] when the broker cannot be reached.
pub async fn connect(addr: &str) -> Result<Connection, CliError> {
    Ok(Connection::connect(addr, CLIENT_ID).await?.with_timeout(Duration::from_secs(30)))
}

/// Prints `value` as pretty JSON on stdout.
///
/// # Errors
/// [`CliError::Usage`] when it does not serialize.
pub fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(value).map_err(|e| CliError::Usage(e.to_string()))?);
    Ok(())
}

/// Prints rows as left-aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
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
