//! Heartbeat (v0-v4) and LeaveGroup (v0-v5; v3+ leaves a batch of
//! members, each with its own result) of the classic protocol.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse, LeaveGroupRequest, LeaveGroupResponse};

use super::codec::{text, At};
use super::{KafkaGroups, MalformedRequest};

/// Members one LeaveGroup may name.
const MAX_LEAVERS: usize = 1000;

/// Answers Heartbeat.
pub(super) fn heartbeat(groups: &KafkaGroups, at: At, body: Bytes) -> Result<BytesMut, MalformedRequest> {
    let req: HeartbeatRequest = at.decode(body)?;
    if let Some(code) = groups.not_coordinator() {
        return at.encode(&HeartbeatResponse::default().with_error_code(code));
    }
    let instance = req.group_instance_id.as_ref().map(|s| s.as_str());
    let beat = groups.classic.heartbeat(&req.group_id, &req.member_id, instance, req.generation_id);
    let code = beat.err().map_or(0, |e| e.code());
    at.encode(&HeartbeatResponse::default().with_error_code(code))
}

/// Answers LeaveGroup.
pub(super) fn leave(groups: &KafkaGroups, at: At, body: Bytes) -> Result<BytesMut, MalformedRequest> {
    let req: LeaveGroupRequest = at.decode(body)?;
    if let Some(code) = groups.not_coordinator() {
        return at.encode(&LeaveGroupResponse::default().with_error_code(code));
    }
    if at.version < 3 {
        let left = groups.classic.leave(&req.group_id, &req.member_id, None);
        return at.encode(&LeaveGroupResponse::default().with_error_code(left.err().map_or(0, |e| e.code())));
    }
    if req.members.len() > MAX_LEAVERS {
        return Err(at.malformed(format!("{} members (at most {MAX_LEAVERS})", req.members.len())));
    }
    let members = req
        .members
        .iter()
        .map(|m| {
            let instance = m.group_instance_id.as_ref().map(|s| s.as_str());
            let left = groups.classic.leave(&req.group_id, &m.member_id, instance);
            MemberResponse::default()
                .with_member_id(text(left.as_ref().map_or_else(|_| m.member_id.to_string(), Clone::clone)))
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(left.err().map_or(0, |e| e.code()))
        })
        .collect();
    at.encode(&LeaveGroupResponse::default().with_members(members))
}
