//! InitProducerId for idempotent (not transactional) producers: a new id
//! from [`ProducerIds`](super::producer_ids::ProducerIds) at epoch 0, or,
//! for a producer that asks again with its id and epoch (KIP-360, after a
//! sequence error), the same id at the next epoch. Transactional ids are
//! refused (transactions are not served).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::ProducerId;
use kafka_protocol::ResponseError;

use super::state::Kafka;
use super::wire::{decode, encode, Chunks, Header};
use super::{error, KafkaError};
use crate::errors::BrokerError;

/// Answers InitProducerId. Transactional ids are refused (transactions are
/// not served).
///
/// # Errors
/// `Malformed` or `Encode`.
pub async fn init(kafka: Arc<Kafka>, header: Header, mut body: Bytes) -> Result<Option<Chunks>, KafkaError> {
    let req: InitProducerIdRequest = decode(&header, &mut body)?;
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if req.transactional_id.is_some() {
        response.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return encode(&header, &response).map(Some);
    }
    let (id, epoch) = (req.producer_id.0, req.producer_epoch);
    if id >= 0 && (0..i16::MAX - 1).contains(&epoch) {
        response.producer_id = ProducerId(id);
        response.producer_epoch = epoch + 1;
        return encode(&header, &response).map(Some);
    }
    let kafka2 = Arc::clone(&kafka);
    let allocated = tokio::task::spawn_blocking(move || kafka2.producer_ids.allocate())
        .await
        .unwrap_or_else(|e| Err(BrokerError::Internal(e.to_string())));
    match allocated {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot reserve kafka producer ids");
            response.error_code = error::code(&e);
        }
    }
    encode(&header, &response).map(Some)
}
