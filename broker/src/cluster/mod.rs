//! The cluster controller (DESIGN.md §10, docs/cluster.md): an openraft
//! node per broker replicating the cluster's metadata.
//!
//! - [`state`]: the controller state machine, pure and deterministic; no
//!   openraft in it.
//! - [`types`]: the openraft type configuration.
//! - [`log_store`], [`sm_store`]: the durable Raft log and the state
//!   machine storage under `<data_dir>/controller/`.
//! - [`peer_wire`], [`peer_server`], [`network`]: the `--peer-listen`
//!   protocol (framing, handshake), its server, and openraft's network
//!   over it.
//! - [`node`]: a controller node, the one entry point for a broker.
//! - [`liveness`]: a broker's register/heartbeat loop and the leader's
//!   lease expiry.
//!
//! Not wired into `sluice serve` yet: single-node brokers never start it.

pub mod liveness;
pub mod log_store;
pub mod network;
pub mod node;
pub mod peer_server;
pub mod peer_wire;
pub mod sm_store;
pub mod state;
pub mod types;

#[cfg(test)]
mod cluster_tests;
