//! The Kafka listener's accept loop: one task per connection, bounded by
//! the permits it shares with the native listener (`max_connections` counts
//! both), stopped by the broker's shutdown token, which then waits for its
//! connections to finish their requests.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::connection;
use super::groups::{Endpoint, KafkaGroups};
use super::producer_ids::ProducerIds;
use super::state::{Kafka, NODE_ID};
use crate::accept::accept_connections;
use crate::broker::Broker;
use crate::errors::BrokerError;

/// Binds `broker.config.kafka_listen` and starts accepting; returns the
/// bound address and the loop's task, which ends once shutdown drained
/// every Kafka connection.
///
/// # Errors
/// `Listen` when the address cannot be bound; `Storage` when the producer
/// id block cannot be reserved.
pub async fn start(
    broker: Arc<Broker>,
    permits: Arc<Semaphore>,
) -> Result<(SocketAddr, JoinHandle<()>), BrokerError> {
    let listen = broker.config.kafka_listen.clone();
    let listen_error = |source| BrokerError::Listen { addr: listen.clone(), source };
    let listener = TcpListener::bind(&listen).await.map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let endpoint = Endpoint { node_id: NODE_ID, host, port: i32::from(addr.port()) };
    let producer_ids = ProducerIds::open(&broker.config.data_dir)?;
    let kafka =
        Arc::new(Kafka { groups: KafkaGroups::new(Arc::clone(&broker), endpoint), broker, producer_ids });
    Ok((addr, tokio::spawn(accept_loop(kafka, listener, permits))))
}

async fn accept_loop(kafka: Arc<Kafka>, listener: TcpListener, permits: Arc<Semaphore>) {
    let broker = Arc::clone(&kafka.broker);
    let connections = TaskTracker::new();
    accept_connections(&broker, listener, permits, &connections, "kafka", |socket, peer, permit| {
        connection::serve(socket, peer, Arc::clone(&kafka), permit)
    })
    .await;
    connections.close();
    connections.wait().await;
}
