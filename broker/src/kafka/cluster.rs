//! DescribeCluster: this broker, alone, as the controller; on a clustered
//! broker every live broker with a Kafka listener and the controller
//! leader.

use std::net::SocketAddr;

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use kafka_protocol::messages::describe_cluster_response::{DescribeClusterBroker, DescribeClusterResponse};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;

use super::clustered;
use super::state::{CLUSTER_ID, NODE_ID};
use super::wire::{decode, encode, Chunks, Header};
use super::KafkaError;
use crate::broker::Broker;

/// Answers DescribeCluster; `local` is the address the client reached.
///
/// # Errors
/// `Malformed` or `Encode`.
pub fn describe(
    broker: &Broker,
    header: &Header,
    mut body: Bytes,
    local: Option<SocketAddr>,
) -> Result<Chunks, KafkaError> {
    let req: DescribeClusterRequest = decode(header, &mut body)?;
    if let Some(c) = broker.cluster() {
        let state = c.state();
        let mut response = DescribeClusterResponse::default();
        response.endpoint_type = req.endpoint_type;
        response.cluster_id = StrBytes::from_string(c.settings.cluster_id.clone());
        response.controller_id = clustered::controller_id(c);
        response.brokers = state
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter_map(|b| {
                let (host, port) = clustered::kafka_endpoint(b)?;
                let mut node = DescribeClusterBroker::default();
                node.broker_id = clustered::kafka_id(b.id);
                node.host = StrBytes::from_string(host);
                node.port = port;
                Some(node)
            })
            .collect();
        return encode(header, &response);
    }
    let mut node = DescribeClusterBroker::default();
    node.broker_id = BrokerId(NODE_ID);
    let addr = local.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
    node.host = StrBytes::from_string(addr.ip().to_string());
    node.port = i32::from(addr.port());
    let mut response = DescribeClusterResponse::default();
    response.endpoint_type = req.endpoint_type;
    response.cluster_id = StrBytes::from_static_str(CLUSTER_ID);
    response.controller_id = BrokerId(NODE_ID);
    response.brokers = vec![node];
    encode(header, &response)
}
