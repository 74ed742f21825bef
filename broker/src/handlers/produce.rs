//! Produce: validate the batch (CRC, structure, size) before it touches the
//! log, append it inline so requests on a connection are appended in order,
//! then answer per `acks`: `none` sends nothing, `leader` answers after the
//! append, `durable` after the flush that covers the batch (`always` and
//! `interval` topics; a `never` topic answers after the append, its docs say
//! so). A durable produce waits at most its `timeout_ms`, clamped to the
//! broker's `max_request_timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::api::{Acks, ProduceRequest, ProduceResponse};
use sluice_protocol::batch::RecordBatch;

use super::{error, ok, respond, Dispatch};
use crate::broker::{now_ms, Broker};
use crate::errors::BrokerError;
use crate::partition::{Appended, Partition};
use crate::storage::{FsyncPolicy, StorageError};

fn append(broker: &Broker, req: ProduceRequest) -> Result<(Arc<Partition>, Appended), BrokerError> {
    let partition = broker.partition(&req.topic, req.partition)?;
    let config = partition.config();
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
    let appended = partition.append(&batch, now_ms()).map_err(|e| broker.storage_error(&req.topic, e))?;
    Ok((partition, appended))
}

/// How long a durable produce may wait: what the client asked, at most the
/// broker's limit, at least 1 ms.
fn timeout(broker: &Broker, timeout_ms: u32) -> Duration {
    Duration::from_millis(u64::from(timeout_ms.min(broker.config.max_request_timeout_ms).max(1)))
}

/// Handles a produce request.
pub fn handle(broker: &Arc<Broker>, correlation_id: u32, req: ProduceRequest) -> Dispatch {
    let acks = req.acks;
    let timeout = timeout(broker, req.timeout_ms);
    let topic = req.topic.clone();
    let (partition, appended) = match append(broker, req) {
        Ok(done) => done,
        Err(_) if acks == Acks::None => return Dispatch::Done(None),
        Err(e) => return Dispatch::Done(Some(error(correlation_id, e.code(), &e.to_string()))),
    };
    let response = ProduceResponse {
        base_offset: appended.info.base_offset,
        log_append_time: appended.info.log_append_time.unwrap_or(-1),
        log_start_offset: partition.log().log_start_offset(),
    };
    match acks {
        Acks::None => Dispatch::Done(None),
        Acks::Leader => Dispatch::Done(Some(ok(correlation_id, &response))),
        Acks::Durable if appended.fsync == FsyncPolicy::Never => {
            Dispatch::Done(Some(ok(correlation_id, &response)))
        }
        Acks::Durable => {
            let broker = Arc::clone(broker);
            Dispatch::Pending(Box::pin(async move {
                let durable = partition.wait_durable(&appended, timeout).await.map_err(|e| match e {
                    BrokerError::Storage(e) => broker.storage_error(&topic, e),
                    other => other,
                });
                Some(respond(correlation_id, durable.map(|()| response)))
            }))
        }
    }
}
