//! The Sluice broker: the storage engine (memory-mapped segment logs per
//! partition, [`storage`]), the TCP server ([`server`], [`connection`],
//! [`handlers`]) and, with the `cli` feature (on by default), the `sluice`
//! command line (`cli`). Without that feature the library needs neither
//! the client crates nor clap nor a log subscriber.

mod accept;
pub mod admin;
pub mod broker;
#[cfg(feature = "cli")]
pub mod cli;
pub mod cluster;
pub mod clustering;
pub mod config;
pub mod connection;
pub mod errors;
pub mod fds;
pub mod groups;
pub mod handlers;
pub mod kafka;
pub mod metrics;
pub mod partition;
pub mod reconcile;
pub mod replication;
pub mod server;
pub mod storage;
pub mod topics;
