//! [`IsrChanger`] for the controller node, held weakly
//! ([`WeakController`]): an ISR change is a
//! `Command::AlterIsr` proposed through the controller quorum (forwarded
//! to its leader from any node); the state machine refuses it from a
//! broker that no longer leads at that epoch (`FencedLeader`).

use super::{BoxFuture, IsrChanger, IsrError, NodeId};
use crate::cluster::node::ControllerNode;
use crate::cluster::state::Command;

/// The controller as a broker's replica manager holds it: weakly, because
/// the controller node holds the manager (it serves the replication
/// channel) and must be the only owner of itself to shut down.
#[derive(Debug)]
pub struct WeakController(pub std::sync::Weak<ControllerNode>);

impl IsrChanger for WeakController {
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
            let Some(node) = self.0.upgrade() else {
                return Err(IsrError::Unavailable("the controller is stopping".into()));
            };
            propose(&node, cmd).await
        })
    }
}

/// Proposes an `AlterIsr` through `node`: `Ok` once committed.
async fn propose(node: &ControllerNode, cmd: Command) -> Result<(), IsrError> {
    match node.propose_anywhere(cmd).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(refused)) => Err(IsrError::Refused(refused.to_string())),
        Err(e) => Err(IsrError::Unavailable(e.to_string())),
    }
}
