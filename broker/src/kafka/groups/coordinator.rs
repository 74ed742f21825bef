//! FindCoordinator (v0-v4): a single node coordinates every group; in a
//! cluster, the leader of the internal offsets partition
//! (`__sluice_offsets` partition 0) does, and COORDINATOR_NOT_AVAILABLE is
//! the answer while it has no leader or the leader is loading. v4 answers
//! a batch of keys. Transactions are not implemented, so a
//! transaction coordinator is never available.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;

use super::codec::{text, At};
use super::{KafkaGroups, MalformedRequest};

/// `key_type` of a group (the other, 1, is a transactional id).
const GROUP_KEY: i8 = 0;

/// The coordinator of one key: this broker, or an error.
fn coordinator(groups: &KafkaGroups, key: &str, key_type: i8) -> Coordinator {
    let e = &groups.endpoint;
    let found = Coordinator::default().with_key(text(key));
    if key_type != GROUP_KEY {
        let code = ResponseError::CoordinatorNotAvailable;
        return found
            .with_error_code(code.code())
            .with_error_message(Some(text("transactions are not supported")))
            .with_node_id((-1).into())
            .with_port(-1);
    }
    if crate::groups::validate_group(key).is_err() {
        return found
            .with_error_code(ResponseError::InvalidGroupId.code())
            .with_node_id((-1).into())
            .with_port(-1);
    }
    if groups.broker.cluster().is_some() {
        return match clustered_coordinator(groups) {
            Some((id, host, port)) => {
                found.with_node_id(id).with_host(text(host)).with_port(port).with_error_message(None)
            }
            None => found
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                .with_error_message(Some(text("the group coordinator is not available yet: retry")))
                .with_node_id((-1).into())
                .with_port(-1),
        };
    }
    found
        .with_node_id(e.node_id.into())
        .with_host(text(e.host.clone()))
        .with_port(e.port)
        .with_error_message(None)
}

/// On a clustered broker: the leader of the offsets partition, when it
/// runs a Kafka listener and (when it is this broker) has loaded the
/// committed offsets. `None` while there is no such broker yet.
fn clustered_coordinator(groups: &KafkaGroups) -> Option<(BrokerId, String, i32)> {
    let c = groups.broker.cluster()?;
    let id = c.coordinator()?;
    if id == c.node_id() {
        if !groups.broker.groups.is_coordinator() {
            return None;
        }
        let e = &groups.endpoint;
        return Some((crate::kafka::clustered::kafka_id(id), e.host.clone(), e.port));
    }
    let state = c.state();
    let (host, port) = crate::kafka::clustered::kafka_endpoint(state.brokers.get(&id)?)?;
    Some((crate::kafka::clustered::kafka_id(id), host, port))
}

/// Answers FindCoordinator.
pub(super) fn find(groups: &KafkaGroups, at: At, body: Bytes) -> Result<BytesMut, MalformedRequest> {
    let req: FindCoordinatorRequest = at.decode(body)?;
    let response = if at.version >= 4 {
        let coordinators =
            req.coordinator_keys.iter().map(|k| coordinator(groups, k.as_str(), req.key_type)).collect();
        FindCoordinatorResponse::default().with_error_message(None).with_coordinators(coordinators)
    } else {
        let c = coordinator(groups, req.key.as_str(), req.key_type);
        let message = if at.version >= 1 { c.error_message } else { None };
        FindCoordinatorResponse::default()
            .with_error_code(c.error_code)
            .with_error_message(message)
            .with_node_id(c.node_id)
            .with_host(c.host)
            .with_port(c.port)
    };
    at.encode(&response)
}
