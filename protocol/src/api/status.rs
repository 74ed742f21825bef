//! Status: one screen about the broker, for `sluice status`.
//!
//! ```text
//! request:  (empty)
//! response: version string | uptime_ms u64 | data_dir string | fsync string | topics u32
//!           | partitions u32 | total_bytes u64 | connections u32
//!           | groups [group string | members u32 | lag u64]
//!           | failed_topics [topic string | error string] | default_partitions u32
//! ```
//! `failed_topics` (topics on disk the broker could not load and does not
//! serve) came later: a response that ends before it has none.
//! `default_partitions` (what a topic created without a count gets) came
//! after it: a response that ends before it has 0, "not said".

use super::{ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// Asks for the broker's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusRequest;

/// One group's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// Group name.
    pub group: String,
    /// Active members.
    pub members: u32,
    /// Total lag over its partitions.
    pub lag: u64,
}

/// A topic on disk that the broker could not load (it serves the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTopic {
    /// The topic's (directory) name.
    pub topic: String,
    /// Why it was not loaded.
    pub error: String,
}

/// The broker's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusResponse {
    /// Broker version.
    pub version: String,
    /// Time since start.
    pub uptime_ms: u64,
    /// Data directory.
    pub data_dir: String,
    /// Default fsync mode of new topics.
    pub fsync: String,
    /// Topics.
    pub topics: u32,
    /// Partitions over all topics.
    pub partitions: u32,
    /// Bytes on disk over all partitions.
    pub total_bytes: u64,
    /// Open client connections.
    pub connections: u32,
    /// Consumer groups.
    pub groups: Vec<GroupStatus>,
    /// Topics not loaded.
    pub failed_topics: Vec<FailedTopic>,
    /// Partitions of a topic created without a count (0: not said).
    pub default_partitions: u32,
}

impl Message for StatusRequest {
    const NAME: &'static str = "Status request";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}

impl Request for StatusRequest {
    const API_KEY: ApiKey = ApiKey::Status;
    type Response = StatusResponse;
}

impl Message for StatusResponse {
    const NAME: &'static str = "Status response";
    fn encode(&self, w: &mut Writer) {
        w.string(&self.version);
        w.u64(self.uptime_ms);
        w.string(&self.data_dir);
        w.string(&self.fsync);
        w.u32(self.topics);
        w.u32(self.partitions);
        w.u64(self.total_bytes);
        w.u32(self.connections);
        w.vec(&self.groups, |w, g| {
            w.string(&g.group);
            w.u32(g.members);
            w.u64(g.lag);
        });
        w.vec(&self.failed_topics, |w, f| {
            w.string(&f.topic);
            w.string(&f.error);
        });
        w.u32(self.default_partitions);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self {
            version: r.string()?,
            uptime_ms: r.u64()?,
            data_dir: r.string()?,
            fsync: r.string()?,
            topics: r.u32()?,
            partitions: r.u32()?,
            total_bytes: r.u64()?,
            connections: r.u32()?,
            groups: r.vec("groups", 14, |r| {
                Ok(GroupStatus { group: r.string()?, members: r.u32()?, lag: r.u64()? })
            })?,
            failed_topics: if r.remaining() == 0 {
                Vec::new()
            } else {
                r.vec("failed_topics", 4, |r| Ok(FailedTopic { topic: r.string()?, error: r.string()? }))?
            },
            default_partitions: if r.remaining() == 0 { 0 } else { r.u32()? },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response from a broker that predates `default_partitions` (or
    /// `failed_topics`) still decodes, with 0 (or none).
    #[test]
    fn older_responses_decode() {
        let full = StatusResponse { version: "v".into(), default_partitions: 3, ..Default::default() };
        let bytes = full.to_bytes();
        let without_default = StatusResponse::decode_all(bytes.slice(..bytes.len() - 4)).unwrap();
        assert_eq!(without_default, StatusResponse { default_partitions: 0, ..full.clone() });
        let without_failed = StatusResponse::decode_all(bytes.slice(..bytes.len() - 8)).unwrap();
        assert_eq!(without_failed, StatusResponse { default_partitions: 0, ..full });
    }
}
