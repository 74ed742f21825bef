//! The Sluice broker: the storage engine (memory-mapped segment logs per
//! partition, [`storage`]), the TCP server ([`server`], [`connection`],
//! [`handlers`]) and the `sluice` command line ([`cli`]).

mod accept;
pub mod admin;
pub mod broker;
pub mod cli;
mod cli_consume;
mod cli_group;
mod cli_produce;
pub mod config;
pub mod connection;
pub mod errors;
pub mod fds;
pub mod groups;
pub mod handlers;
pub mod metrics;
pub mod partition;
pub mod server;
pub mod storage;
pub mod topics;
