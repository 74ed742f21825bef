//! Produce: each partition's record batches are checked and appended by
//! the partition (Kafka's RecordBatch v2 bytes, stored as they are), inline
//! on the connection's task so a connection's batches are appended in
//! request order; idempotent retries are answered with their original
//! offset by the partition's producer state. The answer follows `acks`:
//! `0` sends nothing, `1` answers after the append, `-1` (all) after the
//! flush that covers the batches when the topic's `fsync` awaits one (see
//! [`Appended::awaits_flush`]), waiting at most the request's `timeout_ms`
//! clamped to `max_request_timeout_ms`. Transactional produce is refused.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::ResponseError;

use super::state::{partition, Kafka, Reply};
use super::wire::{decode, encode, Header};
use super::{error, KafkaError};
use crate::broker::{now_ms, Broker};
use crate::errors::BrokerError;
use crate::partition::{Appended, Partition};
use sluice_protocol::batch::BatchError;

/// A durable acknowledgement still to wait for: where its answer goes.
struct Awaited {
    /// Topic and partition positions in the response.
    at: (usize, usize),
    /// The partition.
    partition: Arc<Partition>,
    /// The last batch appended to it.
    appended: Appended,
}

/// Appends a Produce request's batches and answers per `acks`.
///
/// # Errors
/// `Malformed` or `Encode`; per-partition failures are answered.
pub fn handle(kafka: &Arc<Kafka>, header: &Header, mut body: Bytes) -> Result<Reply, KafkaError> {
    let req: ProduceRequest = decode(header, &mut body)?;
    let broker = &kafka.broker;
    let refuse = match (req.transactional_id.is_some(), req.acks) {
        (true, _) => Some(ResponseError::TransactionalIdAuthorizationFailed.code()),
        (false, -1..=1) => None,
        (false, _) => Some(ResponseError::InvalidRequiredAcks.code()),
    };
    let mut awaited = Vec::new();
    let mut response = ProduceResponse::default();
    for (t, topic) in req.topic_data.into_iter().enumerate() {
        let mut out = TopicProduceResponse::default();
        out.name = topic.name.clone();
        out.topic_id = topic.topic_id;
        for (p, data) in topic.partition_data.into_iter().enumerate() {
            let mut part = PartitionProduceResponse::default();
            part.index = data.index;
            part.base_offset = -1;
            part.log_append_time_ms = -1;
            part.log_start_offset = -1;
            if let Some(code) = refuse {
                part.error_code = code;
            } else {
                let records = data.records.unwrap_or_default();
                match append(broker, &topic.name, data.index, records, req.acks == -1) {
                    Ok((partition, first, last)) => {
                        part.base_offset = first.info.base_offset as i64;
                        part.log_append_time_ms = first.info.log_append_time.unwrap_or(-1);
                        part.log_start_offset = last.log_start_offset as i64;
                        if req.acks == -1 && last.awaits_flush() {
                            awaited.push(Awaited { at: (t, p), partition, appended: last });
                        }
                    }
                    Err(e) => part.error_code = error::code(&e),
                }
            }
            out.partition_responses.push(part);
        }
        response.responses.push(out);
    }
    if req.acks == 0 {
        return Ok(Reply::Now(None));
    }
    if awaited.is_empty() {
        return Ok(Reply::Now(Some(encode(header, &response)?)));
    }
    let timeout = Duration::from_millis(
        u64::try_from(req.timeout_ms).unwrap_or(0).clamp(1, u64::from(broker.config.max_request_timeout_ms)),
    );
    let (broker, header) = (Arc::clone(broker), header.clone());
    Ok(Reply::Later(Box::pin(async move {
        for a in awaited {
            if let Err(e) = a.partition.wait_durable(&a.appended, timeout).await {
                let e = storage_error(&broker, &a.partition.topic, e);
                response.responses[a.at.0].partition_responses[a.at.1].error_code = error::code(&e);
            }
        }
        encode(&header, &response).map(Some)
    })))
}

/// A storage error of `topic` as the broker answers it (a log closed by a
/// deleted topic is an unknown topic).
fn storage_error(broker: &Broker, topic: &str, e: BrokerError) -> BrokerError {
    match e {
        BrokerError::Storage(e) => broker.storage_error(topic, e),
        other => other,
    }
}

/// Appends every batch of `records` to the partition; returns it with the
/// first and last appends.
fn append(
    broker: &Broker,
    topic: &str,
    index: i32,
    records: Bytes,
    durable: bool,
) -> Result<(Arc<Partition>, Appended, Appended), BrokerError> {
    if broker.cluster().is_some() {
        crate::groups::offsets_topic::refuse_client_change(topic)?;
    }
    let partition = partition(broker, topic, index)?;
    partition.check_writable(durable)?;
    let mut first = None;
    let mut last = None;
    for batch in split(records)? {
        let appended = partition
            .append(batch, broker.config.max_frame_bytes, now_ms())
            .map_err(|e| storage_error(broker, topic, e))?;
        first.get_or_insert(appended);
        last = Some(appended);
    }
    match (first, last) {
        (Some(first), Some(last)) => Ok((partition, first, last)),
        _ => Err(BrokerError::CorruptBatch(BatchError::Empty)),
    }
}

/// Bytes before a batch's `batchLength` counts: `baseOffset` and itself.
const LOG_OVERHEAD: usize = 12;

/// Splits a partition's records into batches by their `batchLength`
/// fields (a client may send several), without copying.
fn split(mut records: Bytes) -> Result<Vec<Bytes>, BrokerError> {
    let mut batches = Vec::new();
    while !records.is_empty() {
        let length = records
            .get(8..LOG_OVERHEAD)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .and_then(|l| usize::try_from(l).ok())
            .map(|l| l + LOG_OVERHEAD)
            .filter(|&l| l <= records.len())
            .ok_or_else(|| {
                let declared =
                    records.get(8..LOG_OVERHEAD).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                BrokerError::CorruptBatch(BatchError::LengthMismatch { declared, actual: records.len() })
            })?;
        batches.push(records.split_to(length));
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_batch_lengths_and_refuses_lies() {
        let mut two = vec![0u8; 8];
        two.extend_from_slice(&2i32.to_be_bytes());
        two.extend_from_slice(&[1, 2]);
        let one = two.clone();
        two.extend_from_slice(&one);
        let batches = split(Bytes::from(two)).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].len(), 14);
        assert!(split(Bytes::new()).unwrap().is_empty());
        let mut lying = one.clone();
        lying[11] = 3;
        assert!(split(Bytes::from(lying)).is_err());
        let mut negative = one;
        negative[8] = 0x80;
        assert!(split(Bytes::from(negative)).is_err());
        assert!(split(Bytes::from_static(&[0; 5])).is_err());
    }
}
