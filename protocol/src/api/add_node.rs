//! AddNode: admits a new broker to a cluster, for `sluice cluster
//! add-node`. The controller leader adds it as a non-voting member (a Raft
//! learner): it receives the controller's log, registers as a broker, and
//! takes replicas of topics created or grown from then on. The voters stay
//! those listed in every node's `--peers`.
//!
//! ```text
//! request:  node_id u64 | peer_addr string
//! response: (empty)
//! ```
//! Refused with `InvalidRequest` on a single-node broker, for a node id
//! that is a voter, or for an empty address; `ControllerNotAvailable`
//! while the controller has no leader.

use super::{ApiKey, Message, Request};
use crate::{Reader, WireError, Writer};

/// Adds a node to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddNodeRequest {
    /// The new node's id (its `--node-id`).
    pub node_id: u64,
    /// Its peer address (its `--peer-listen`, as the others reach it).
    pub peer_addr: String,
}

/// The node was added.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddNodeResponse;

impl Message for AddNodeRequest {
    const NAME: &'static str = "AddNode request";
    fn encode(&self, w: &mut Writer) {
        w.u64(self.node_id);
        w.string(&self.peer_addr);
    }
    fn decode(r: &mut Reader) -> Result<Self, WireError> {
        Ok(Self { node_id: r.u64()?, peer_addr: r.string()? })
    }
}

impl Request for AddNodeRequest {
    const API_KEY: ApiKey = ApiKey::AddNode;
    type Response = AddNodeResponse;
}

impl Message for AddNodeResponse {
    const NAME: &'static str = "AddNode response";
    fn encode(&self, _: &mut Writer) {}
    fn decode(_: &mut Reader) -> Result<Self, WireError> {
        Ok(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let req = AddNodeRequest { node_id: 4, peer_addr: "127.0.0.1:9204".into() };
        assert_eq!(AddNodeRequest::decode_all(req.to_bytes()).unwrap(), req);
        assert!(AddNodeRequest::decode_all(req.to_bytes().slice(..5)).is_err());
    }
}
