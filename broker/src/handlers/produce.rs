//! Produce: the partition checks the batch once (size, structure, CRC,
//! records, timestamps) and appends it, inline so requests on a connection
//! are appended in order; then the answer follows `acks`: `none` sends
//! nothing, `leader` answers after the append, `durable` after the flush
//! that covers the batch when the partition says one is awaited
//! ([`Appended::awaits_flush`]: `always` and `interval` topics; a `never`
//! topic answers after the append, its docs say so). A durable produce waits at most its `timeout_ms`, clamped to the
//! broker's `max_request_timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::api::{Acks, ProduceRequest, ProduceResponse};

use super::{error, ok, respond, Dispatch};
use crate::broker::{now_ms, Broker};
use crate::errors::BrokerError;
use crate::partition::{Appended, Partition};

/// A storage error of `topic`, as the broker answers it (a log closed by
/// a deleted topic is `UnknownTopic`).
fn storage_error(broker: &Broker, topic: &str, e: BrokerError) -> BrokerError {
    match e {
        BrokerError::Storage(e) => broker.storage_error(topic, e),
        other => other,
    }
}

fn append(broker: &Broker, req: ProduceRequest) -> Result<(Arc<Partition>, Appended), BrokerError> {
    if broker.cluster().is_some() {
        crate::groups::offsets_topic::refuse_client_change(&req.topic)?;
    }
    let partition = super::partition(broker, &req.topic, req.partition)?;
    partition.check_writable(req.acks == Acks::Durable)?;
    let appended = partition
        .append(req.batch, broker.config.max_frame_bytes, now_ms())
        .map_err(|e| storage_error(broker, &req.topic, e))?;
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
    let (partition, appended) = match append(broker, req) {
        Ok(done) => done,
        Err(_) if acks == Acks::None => return Dispatch::Done(None),
        Err(e) => return Dispatch::Done(Some(error(correlation_id, e.code(), &e.to_string()))),
    };
    let response = ProduceResponse {
        base_offset: appended.info.base_offset,
        log_append_time: appended.info.log_append_time.unwrap_or(-1),
        log_start_offset: appended.log_start_offset,
    };
    match acks {
        Acks::None => Dispatch::Done(None),
        Acks::Durable if appended.awaits_flush() => {
            let broker = Arc::clone(broker);
            Dispatch::Pending(Box::pin(async move {
                let durable = partition.wait_durable(&appended, timeout).await;
                let durable = durable.map_err(|e| storage_error(&broker, &partition.topic, e));
                Some(respond(correlation_id, durable.map(|()| response)))
            }))
        }
        Acks::Leader | Acks::Durable => Dispatch::Done(Some(ok(correlation_id, &response))),
    }
}
