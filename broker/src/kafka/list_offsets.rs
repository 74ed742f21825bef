//! ListOffsets: the earliest offset (`-2`: the log start), the latest (`-1`:
//! the high watermark), or the first record at or after a timestamp (by the
//! time index; the high watermark when every record is older).

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use super::state::partition;
use super::wire::{decode, encode, Chunks, Header};
use super::{error, KafkaError};
use crate::broker::Broker;
use crate::errors::BrokerError;

/// `timestamp` asking for the latest offset.
const LATEST: i64 = -1;
/// `timestamp` asking for the earliest offset.
const EARLIEST: i64 = -2;

/// Answers a ListOffsets request.
///
/// # Errors
/// `Malformed` or `Encode`; per-partition failures are answered.
pub fn handle(broker: &Broker, header: &Header, mut body: Bytes) -> Result<Chunks, KafkaError> {
    let req: ListOffsetsRequest = decode(header, &mut body)?;
    let mut response = ListOffsetsResponse::default();
    for t in req.topics {
        let mut topic = ListOffsetsTopicResponse::default();
        for p in t.partitions {
            let mut out = ListOffsetsPartitionResponse::default();
            out.partition_index = p.partition_index;
            out.timestamp = -1;
            out.offset = -1;
            match lookup(broker, &t.name, p.partition_index, p.timestamp) {
                Ok((offset, timestamp)) => {
                    out.offset = offset;
                    out.timestamp = timestamp;
                    if header.version >= 4 {
                        out.leader_epoch = 0; // v4+ only: the encoder refuses it before
                    }
                }
                Err(e) => out.error_code = error::code(&e),
            }
            topic.partitions.push(out);
        }
        topic.name = t.name;
        response.topics.push(topic);
    }
    encode(header, &response)
}

/// `(offset, timestamp)` for one partition.
fn lookup(broker: &Broker, topic: &str, index: i32, timestamp: i64) -> Result<(i64, i64), BrokerError> {
    let found = broker.topics.get(topic).is_some();
    if !found {
        return Err(BrokerError::UnknownTopic(topic.to_owned()));
    }
    let part = partition(broker, topic, index)?;
    part.check_readable()?;
    let log = part.log();
    Ok(match timestamp {
        LATEST => (log.high_watermark() as i64, -1),
        EARLIEST => (log.log_start_offset() as i64, -1),
        ts if ts >= 0 => match log.offset_for_timestamp(ts).map_err(|e| broker.storage_error(topic, e))? {
            Some((offset, at)) => (offset as i64, at),
            None => (log.high_watermark() as i64, -1),
        },
        _ => {
            return Err(BrokerError::InvalidConfig(format!("unsupported ListOffsets timestamp {timestamp}")))
        }
    })
}
