//! JoinGroup (v0-v9) and SyncGroup (v0-v5) of the classic protocol: decode,
//! run on [`ClassicGroups`](super::classic::ClassicGroups) (waiting for
//! the rebalance), encode.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, SyncGroupRequest, SyncGroupResponse};

use super::classic::{ClassicError, JoinRequest, SyncRequest};
use super::codec::{text, At};
use super::{KafkaGroups, MalformedRequest};

/// Protocols one member may list.
const MAX_PROTOCOLS: usize = 64;

fn join_request(at: At, req: &JoinGroupRequest) -> JoinRequest {
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout: the session timeout serves.
    let rebalance = match req.rebalance_timeout_ms {
        ms if ms > 0 => Duration::from_millis(ms as u64),
        _ => session,
    };
    JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: String::new(),
        client_host: String::new(),
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        session_timeout: session,
        rebalance_timeout: rebalance,
        require_known_id: at.version >= 4,
    }
}

/// A refused join: the error, and the member id (MEMBER_ID_REQUIRED's).
fn refused(at: At, e: &ClassicError, member_id: &str) -> JoinGroupResponse {
    let member_id = match e {
        ClassicError::MemberIdRequired { member_id } => member_id.clone(),
        _ => member_id.to_owned(),
    };
    JoinGroupResponse::default()
        .with_error_code(e.code())
        .with_generation_id(-1)
        .with_protocol_type(if at.version >= 7 { None } else { Some(text("")) })
        .with_protocol_name(if at.version >= 7 { None } else { Some(text("")) })
        .with_member_id(text(member_id))
}

/// Answers JoinGroup, once the rebalance completed.
pub(super) async fn join(groups: &KafkaGroups, at: At, body: Bytes) -> Result<BytesMut, MalformedRequest> {
    let req: JoinGroupRequest = at.decode(body)?;
    if req.protocols.len() > MAX_PROTOCOLS {
        return Err(at.malformed(format!("{} protocols (at most {MAX_PROTOCOLS})", req.protocols.len())));
    }
    let group = req.group_id.to_string();
    if crate::groups::validate_group(&group).is_err() {
        let response = refused(at, &ClassicError::InconsistentProtocol, &req.member_id)
            .with_error_code(kafka_protocol::ResponseError::InvalidGroupId.code());
        return at.encode(&response);
    }
    if groups.not_coordinator().is_some() {
        return at.encode(&refused(at, &ClassicError::NotCoordinator, &req.member_id));
    }
    let response = match groups.classic.join(&group, join_request(at, &req)).await {
        Ok(joined) => {
            let members = joined
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(text(m.member_id))
                        .with_group_instance_id(if at.version >= 5 { m.instance_id.map(text) } else { None })
                        .with_metadata(m.metadata)
                })
                .collect();
            JoinGroupResponse::default()
                .with_generation_id(joined.generation)
                .with_protocol_type(Some(text(joined.protocol_type)))
                .with_protocol_name(Some(text(joined.protocol)))
                .with_leader(text(joined.leader))
                .with_member_id(text(joined.member_id))
                .with_members(members)
        }
        Err(e) => refused(at, &e, &req.member_id),
    };
    at.encode(&response)
}

/// Answers SyncGroup: the leader's call hands out the assignments; a
/// follower's waits for them.
pub(super) async fn sync(groups: &KafkaGroups, at: At, body: Bytes) -> Result<BytesMut, MalformedRequest> {
    let req: SyncGroupRequest = at.decode(body)?;
    let group = req.group_id.to_string();
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: req.generation_id,
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    if let Some(code) = groups.not_coordinator() {
        return at.encode(&SyncGroupResponse::default().with_error_code(code));
    }
    let protocol_type = groups.classic.describe(&group).map(|v| (v.protocol_type, v.protocol));
    let response = match groups.classic.sync(&group, sync).await {
        Ok(assignment) => {
            let mut r = SyncGroupResponse::default().with_assignment(assignment);
            if at.version >= 5 {
                let (t, p) = protocol_type.unwrap_or_default();
                r = r.with_protocol_type(Some(text(t))).with_protocol_name(Some(text(p)));
            }
            r
        }
        Err(e) => SyncGroupResponse::default().with_error_code(e.code()),
    };
    at.encode(&response)
}
