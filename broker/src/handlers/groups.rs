//! Consumer-group handlers that touch the disk (commits, resets, deletes)
//! run on blocking threads; the rest of the coordinator's work is in-memory
//! and answered inline by `dispatch`.

use std::sync::Arc;

use sluice_protocol::api::{
    DeleteGroupRequest, DeleteGroupResponse, OffsetCommitRequest, OffsetCommitResponse, ResetOffsetsRequest,
    ResetOffsetsResponse,
};

use super::blocking;
use crate::broker::Broker;
use crate::errors::BrokerError;

/// Commits offsets; answered once they are on stable storage.
pub async fn commit(
    broker: Arc<Broker>,
    req: OffsetCommitRequest,
) -> Result<OffsetCommitResponse, BrokerError> {
    blocking(move || broker.groups.commit(&broker.topics, req)).await
}

/// Moves a memberless group's offsets.
pub async fn reset_offsets(
    broker: Arc<Broker>,
    req: ResetOffsetsRequest,
) -> Result<ResetOffsetsResponse, BrokerError> {
    blocking(move || Ok(ResetOffsetsResponse { offsets: broker.groups.reset_offsets(&broker.topics, &req)? }))
        .await
}

/// Deletes a memberless group.
pub async fn delete(
    broker: Arc<Broker>,
    req: DeleteGroupRequest,
) -> Result<DeleteGroupResponse, BrokerError> {
    blocking(move || {
        broker.groups.delete(&req.group)?;
        tracing::info!(group = %req.group, "group deleted");
        Ok(DeleteGroupResponse)
    })
    .await
}
