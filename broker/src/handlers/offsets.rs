//! ListOffsets: earliest, latest (the high watermark), or by timestamp.

use sluice_protocol::api::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetSpec,
};
use sluice_protocol::ErrorCode;

use crate::broker::Broker;
use crate::errors::BrokerError;

/// Looks up offsets; failures are per partition.
///
/// # Errors
/// None: failures are answered per partition.
pub fn list_offsets(broker: &Broker, req: ListOffsetsRequest) -> Result<ListOffsetsResponse, BrokerError> {
    let partitions = req
        .partitions
        .into_iter()
        .map(|p| {
            let found = super::partition(broker, &p.topic, p.partition).and_then(|part| {
                part.check_readable()?;
                let log = part.log();
                Ok(match p.spec {
                    OffsetSpec::Earliest => (log.log_start_offset(), -1),
                    OffsetSpec::Latest => (log.high_watermark(), -1),
                    OffsetSpec::Timestamp(ts) => {
                        log.offset_for_timestamp(ts)?.unwrap_or((log.high_watermark(), -1))
                    }
                })
            });
            let (error_code, (offset, timestamp)) = match found {
                Ok(found) => (ErrorCode::None, found),
                Err(e) => (e.code(), (0, -1)),
            };
            ListOffsetsPartitionResponse {
                topic: p.topic,
                partition: p.partition,
                error_code,
                offset,
                timestamp,
            }
        })
        .collect();
    Ok(ListOffsetsResponse { partitions })
}
