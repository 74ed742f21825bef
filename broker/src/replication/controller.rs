//! [`IsrChanger`] for the controller node: an ISR change is a
//! `Command::AlterIsr` proposed through the controller quorum (forwarded
//! to its leader from any node); the state machine refuses it from a
//! broker that no longer leads at that epoch (`FencedLeader`).

use super::{BoxFuture, IsrChanger, IsrError, NodeId};
use crate::cluster::node::ControllerNode;
use crate::cluster::state::Command;

impl IsrChanger for ControllerNode {
    fn alter_isr(
        &self,
        topic: &str,
        partition: u32,
        leader: NodeId,
        leader_epoch: u32,
        isr: Vec<NodeId>,
    ) -> BoxFuture<'_, Result<(), IsrError>> {
        let cmd = Command::AlterIsr { topic: topic.to_owned(), partition, leader, leader_epoch, isr };
        Box::pin(async move {
            match self.propose_anywhere(cmd).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(refused)) => Err(IsrError::Refused(refused.to_string())),
                Err(e) => Err(IsrError::Unavailable(e.to_string())),
            }
        })
    }
}
