//! Produce: validate the batch (CRC, structure, size) before it touches the
//! log, append it inline so requests on a connection are appended in order,
//! then answer per `acks`: `none` sends nothing, `leader` answers after the
//! append, `durable` after the flush that covers the batch (`always` and
//! `interval` topics; a `never` topic answers after the append, its docs say
//! so).

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::api::{Acks, ProduceRequest, ProduceResponse};
use sluice_protocol::batch::RecordBatch;

use super::{error, ok, respond, Dispatch};
use crate::broker::{now_ms, Broker};
use crate::errors::BrokerError;
use crate::partition::Partition;
use crate::storage::{AppendInfo, FsyncPolicy, StorageError};

fn append(broker: &Broker, req: ProduceRequest) -> Result<(Arc<Partition>, AppendInfo), BrokerError> {
    let partition = broker.partition(&req.topic, req.partition)?;
    let config = partition.log.config();
    if req.batch.len() > config.max_message_bytes as usize {
        return Err(StorageError::BatchTooLarge {
            size: req.batch.len(),
            max: config.max_message_bytes as usize,
        }
        .into());
    }
    let batch = RecordBatch::new(req.batch).map_err(BrokerError::CorruptBatch)?;
    batch
        .validate(broker.config.max_frame_bytes.max(config.max_message_bytes as usize) * 4)
        .map_err(BrokerError::CorruptBatch)?;
    config.check_timestamps(batch.header(), now_ms())?;
    let info =
        partition.log.append(batch.as_bytes(), now_ms()).map_err(|e| broker.storage_error(&req.topic, e))?;
    if !info.duplicate {
        partition.after_append(batch.header().record_count, batch.as_bytes().len());
    }
    Ok((partition, info))
}

/// Handles a produce request.
pub fn handle(broker: &Arc<Broker>, correlation_id: u32, req: ProduceRequest) -> Dispatch {
    let acks = req.acks;
    let timeout = Duration::from_millis(u64::from(req.timeout_ms.max(1)));
    let (partition, info) = match append(broker, req) {
        Ok(done) => done,
        Err(_) if acks == Acks::None => return Dispatch::Done(None),
        Err(e) => return Dispatch::Done(Some(error(correlation_id, e.code(), &e.to_string()))),
    };
    let response = ProduceResponse {
        base_offset: info.base_offset,
        log_append_time: info.log_append_time.unwrap_or(-1),
        log_start_offset: partition.log.log_start_offset(),
    };
    let waits_for_flush = !matches!(partition.log.config().fsync, FsyncPolicy::Never);
    match acks {
        Acks::None => Dispatch::Done(None),
        Acks::Leader => Dispatch::Done(Some(ok(correlation_id, &response))),
        Acks::Durable if !waits_for_flush => Dispatch::Done(Some(ok(correlation_id, &response))),
        Acks::Durable => Dispatch::Pending(Box::pin(async move {
            let durable = partition.wait_durable(info.last_offset, timeout).await;
            Some(respond(correlation_id, durable.map(|()| response)))
        })),
    }
}
