//! Fetch: whole batches from each requested partition, long-polling until
//! `min_bytes` are there or `max_wait_ms` passes. Woken by high-watermark
//! changes (no polling loop) and by shutdown. The batches are `Bytes` views
//! of the segment maps, written to the socket without an intermediate copy.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use sluice_protocol::api::{FetchPartitionResponse, FetchRequest, FetchResponse};
use sluice_protocol::batch::split_batches;
use sluice_protocol::ErrorCode;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::errors::BrokerError;
use crate::partition::Partition;
use crate::storage::StorageError;

/// Reads every partition once, within the request's byte budget.
fn read_once(
    broker: &Broker,
    req: &FetchRequest,
    parts: &[Result<Arc<Partition>, BrokerError>],
) -> (FetchResponse, usize, bool) {
    let mut budget = req.max_bytes as usize;
    let mut total = 0;
    let mut any_error = false;
    let partitions = req
        .partitions
        .iter()
        .zip(parts)
        .map(|(want, part)| {
            let mut out = FetchPartitionResponse {
                topic: want.topic.clone(),
                partition: want.partition,
                error_code: ErrorCode::None,
                high_watermark: 0,
                log_start_offset: 0,
                records: Bytes::new(),
            };
            let part = match part {
                Ok(p) => p,
                Err(e) => {
                    out.error_code = e.code();
                    any_error = true;
                    return out;
                }
            };
            let log = part.log();
            out.high_watermark = part.high_watermark().max(log.high_watermark());
            out.log_start_offset = log.log_start_offset();
            let limit = (want.max_bytes as usize).min(budget);
            if limit == 0 && total > 0 {
                return out;
            }
            match log.read(want.offset, limit.max(1)) {
                Ok(records) => {
                    budget = budget.saturating_sub(records.len());
                    total += records.len();
                    let served: u64 = split_batches(records.clone())
                        .filter_map(Result::ok)
                        .map(|b| u64::from(b.header().record_count))
                        .sum();
                    part.counters.messages_out.inc_by(served);
                    part.counters.bytes_out.inc_by(records.len() as u64);
                    out.records = records;
                }
                Err(e) => {
                    if let StorageError::CorruptBatch { segment, position, source } = &e {
                        tracing::error!(topic = %want.topic, partition = want.partition, offset = want.offset, segment, position, error = %source, "corrupt batch not served");
                    }
                    let e = broker.storage_error(&want.topic, e);
                    out.error_code = e.code();
                    any_error = true;
                }
            }
            out
        })
        .collect();
    (FetchResponse { partitions }, total, any_error)
}

/// The partition, if this broker serves consumers from it (it leads it).
fn readable(broker: &Broker, topic: &str, index: u32) -> Result<Arc<Partition>, BrokerError> {
    let p = super::partition(broker, topic, index)?;
    p.check_readable()?;
    Ok(p)
}

/// Handles a fetch request.
///
/// # Errors
/// None: failures are answered per partition.
pub async fn handle(broker: Arc<Broker>, req: FetchRequest) -> Result<FetchResponse, BrokerError> {
    let parts: Vec<_> = req.partitions.iter().map(|p| readable(&broker, &p.topic, p.partition)).collect();
    let mut watches: Vec<watch::Receiver<u64>> =
        parts.iter().flatten().map(|p| p.watch_high_watermark()).collect();
    let wait = Duration::from_millis(u64::from(req.max_wait_ms.min(broker.config.max_fetch_wait_ms)));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        for w in &mut watches {
            w.borrow_and_update();
        }
        let (response, total, any_error) = read_once(&broker, &req, &parts);
        let enough = total >= req.min_bytes as usize || any_error;
        if enough
            || tokio::time::Instant::now() >= deadline
            || watches.is_empty()
            || broker.shutdown.is_cancelled()
        {
            return Ok(response);
        }
        let changed = select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = broker.shutdown.cancelled() => {}
        }
    }
}
