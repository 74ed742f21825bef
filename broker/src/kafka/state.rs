//! What every Kafka connection and api module shares: the listener's
//! state ([`Kafka`]), what a request's handling returns ([`Reply`]), this
//! broker's identity in Kafka's metadata, and partition lookup.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::groups::KafkaGroups;
use super::producer_ids::ProducerIds;
use super::wire::Chunks;
use super::KafkaError;
use crate::broker::Broker;
use crate::errors::BrokerError;
use crate::partition::{blocking_in_place, Partition};

/// The cluster id Metadata and DescribeCluster report.
pub const CLUSTER_ID: &str = "sluice";

/// This broker's node id in Kafka's metadata.
pub const NODE_ID: i32 = 0;

/// State shared by every Kafka connection.
#[derive(Debug)]
pub struct Kafka {
    /// The broker.
    pub broker: Arc<Broker>,
    /// The group apis.
    pub groups: KafkaGroups,
    /// Allocates idempotent producers' ids.
    pub producer_ids: ProducerIds,
}

/// A response body still being worked on (`None`: no response).
pub type Pending = Pin<Box<dyn Future<Output = Result<Option<Chunks>, KafkaError>> + Send>>;

/// What the connection does with a request.
#[allow(missing_debug_implementations)]
pub enum Reply {
    /// Send this now (`None`: nothing, for `acks=0`).
    Now(Option<Chunks>),
    /// Send what the future yields, in request order.
    Later(Pending),
}

/// The partition `index` of `topic`, looked up at once when the topic
/// exists; auto-creating it (when the broker does) runs in place with the
/// worker's other tasks handed off, so requests stay in order.
///
/// # Errors
/// `UnknownTopic`, `UnknownPartition` (a negative index too), or what
/// creating the topic refuses.
pub fn partition(broker: &Broker, topic: &str, index: i32) -> Result<Arc<Partition>, BrokerError> {
    let unknown = || BrokerError::UnknownPartition { topic: topic.to_owned(), partition: 0, count: 0 };
    let index = u32::try_from(index).map_err(|_| unknown())?;
    let found = broker.topics.get(topic).and_then(|t| t.partitions.get(index as usize).cloned());
    match found {
        Some(p) => Ok(p),
        None => blocking_in_place(|| broker.partition(topic, index)),
    }
}
