//! The Sluice broker: the storage engine (memory-mapped segment logs per
//! partition) and, with the broker-server issue, the TCP server and the
//! `sluice` binary.

pub mod storage;
