//! Consumer-group handlers that touch the disk (commits, resets, deletes)
//! or may compute an assignment (heartbeats) run on blocking threads; the
//! rest of the coordinator's work is brief and in-memory and answered by
//! `dispatch` on the async workers. A heartbeat first waits for its group's
//! turn asynchronously, so a storm of heartbeats on one group holds no
//! thread while it waits and never delays another group's.
//!
//! On a clustered broker only the group coordinator (the leader of the
//! internal offsets partition) answers group requests; every handler
//! first checks that this broker is it (`NotCoordinator` otherwise).

use std::sync::Arc;

use sluice_protocol::api::{
    DeleteGroupRequest, DeleteGroupResponse, DescribeGroupRequest, DescribeGroupResponse,
    GroupHeartbeatRequest, GroupHeartbeatResponse, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, ResetOffsetsRequest, ResetOffsetsResponse,
    LEAVE_EPOCH,
};

use super::blocking;
use crate::broker::Broker;
use crate::errors::BrokerError;

/// Joins, heartbeats or leaves: in the group's turn, on a blocking thread.
///
/// # Errors
/// What [`Coordinator::heartbeat`](crate::groups::Coordinator::heartbeat)
/// refuses, and a bad group name or too many groups.
pub async fn heartbeat(
    broker: Arc<Broker>,
    client_id: String,
    req: GroupHeartbeatRequest,
) -> Result<GroupHeartbeatResponse, BrokerError> {
    crate::groups::validate_group(&req.group)?;
    broker.groups.check_coordinator()?;
    let slot = match req.member_epoch {
        LEAVE_EPOCH => match broker.groups.slot(&req.group) {
            Some(slot) => slot,
            None => {
                return Ok(GroupHeartbeatResponse {
                    member_id: req.member_id,
                    member_epoch: LEAVE_EPOCH,
                    ..Default::default()
                })
            }
        },
        _ => broker.groups.slot_or_create(&req.group, broker.config.max_groups)?,
    };
    let _turn = slot.turn().await;
    blocking(move || broker.groups.heartbeat(&slot, &broker.topics, &client_id, req, None)).await
}

/// Commits offsets; answered once they are on stable storage.
///
/// # Errors
/// What [`Coordinator::commit`](crate::groups::Coordinator::commit) refuses.
pub async fn commit(
    broker: Arc<Broker>,
    req: OffsetCommitRequest,
) -> Result<OffsetCommitResponse, BrokerError> {
    blocking(move || broker.groups.commit(&broker.topics, req, broker.config.max_groups)).await
}

/// Reads committed offsets (in memory: answered on the async worker).
///
/// # Errors
/// `NotCoordinator` only: a group or partition without an offset reads
/// `NO_OFFSET`.
pub async fn fetch_offsets(
    broker: Arc<Broker>,
    req: OffsetFetchRequest,
) -> Result<OffsetFetchResponse, BrokerError> {
    broker.groups.fetch_offsets(&req)
}

/// Lists the groups with members or offsets (in memory).
///
/// # Errors
/// `NotCoordinator`.
pub async fn list(broker: Arc<Broker>) -> Result<ListGroupsResponse, BrokerError> {
    broker.groups.check_coordinator()?;
    Ok(ListGroupsResponse { groups: broker.groups.list() })
}

/// Describes a group: members, committed offsets and lag (in memory).
///
/// # Errors
/// `Group` (`UnknownGroup`) for a group without members or offsets.
pub async fn describe(
    broker: Arc<Broker>,
    req: DescribeGroupRequest,
) -> Result<DescribeGroupResponse, BrokerError> {
    broker.groups.check_coordinator()?;
    broker.groups.describe(&broker.topics, &req.group)
}

/// Moves a memberless group's offsets.
///
/// # Errors
/// What [`Coordinator::reset_offsets`](crate::groups::Coordinator::reset_offsets) refuses.
pub async fn reset_offsets(
    broker: Arc<Broker>,
    req: ResetOffsetsRequest,
) -> Result<ResetOffsetsResponse, BrokerError> {
    broker.groups.check_coordinator()?;
    blocking(move || {
        Ok(ResetOffsetsResponse {
            offsets: broker.groups.reset_offsets(&broker.topics, &req, broker.config.max_groups)?,
        })
    })
    .await
}

/// Deletes a memberless group.
///
/// # Errors
/// `Group` when the group is unknown or has members; `Storage` when the
/// offsets log fails.
pub async fn delete(
    broker: Arc<Broker>,
    req: DeleteGroupRequest,
) -> Result<DeleteGroupResponse, BrokerError> {
    broker.groups.check_coordinator()?;
    blocking(move || {
        broker.groups.delete(&req.group)?;
        tracing::info!(group = %req.group, "group deleted");
        Ok(DeleteGroupResponse)
    })
    .await
}
