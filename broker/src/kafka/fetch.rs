//! Fetch: whole batches from each requested partition from its fetch
//! offset, long-polling until `min_bytes` are there or `max_wait_ms`
//! (clamped to `max_fetch_wait_ms`) passes, woken by the partitions'
//! high-watermark watches and by shutdown, never by a polling loop. Each
//! partition gets at most its `partition_max_bytes` and the response at
//! most `max_bytes`, except that the first batch found is served whole
//! (Kafka's rule, so a consumer always progresses). The batches are served
//! zero-copy ([`super::fetch_encode`]). No fetch sessions (session id 0:
//! clients send full requests), no transactions (last stable offset =
//! high watermark, no aborted transactions).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use uuid::Uuid;

use super::fetch_encode::{encode, PartitionData, TopicData};
use super::state::Kafka;
use super::wire::{decode, Chunks, Header};
use super::{error, KafkaError};
use crate::broker::Broker;
use crate::partition::Partition;
use crate::storage::StorageError;
use crate::topics::Topic;

/// One partition asked for.
struct Want {
    /// Position of its topic in the response.
    topic: usize,
    index: i32,
    offset: i64,
    max_bytes: usize,
    /// The partition, or the error code that answers it.
    partition: Result<Arc<Partition>, i16>,
}

/// Answers a Fetch request.
///
/// # Errors
/// `Malformed`; per-partition failures are answered.
pub async fn handle(
    kafka: Arc<Kafka>,
    header: Header,
    mut body: Bytes,
) -> Result<Option<Chunks>, KafkaError> {
    let req: FetchRequest = decode(&header, &mut body)?;
    let broker = &kafka.broker;
    let (topics, wants) = resolve(broker, &header, &req);
    let mut watches: Vec<watch::Receiver<u64>> =
        wants.iter().filter_map(|w| w.partition.as_ref().ok()).map(|p| p.watch_high_watermark()).collect();
    let max_wait =
        u64::try_from(req.max_wait_ms).unwrap_or(0).min(u64::from(broker.config.max_fetch_wait_ms));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait);
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(0);
    loop {
        for w in &mut watches {
            w.borrow_and_update();
        }
        let (served, total, any_error) = read_once(broker, &wants, max_bytes);
        if total >= min_bytes
            || any_error
            || watches.is_empty()
            || tokio::time::Instant::now() >= deadline
            || broker.shutdown.is_cancelled()
        {
            let mut topics = topics;
            for (want, data) in wants.iter().zip(served) {
                topics[want.topic].partitions.push(data);
            }
            return Ok(Some(encode(&header, topics)));
        }
        let changed = select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = broker.shutdown.cancelled() => {}
        }
    }
}

/// The response's topics (without partitions yet) and every partition
/// asked for, found by topic name (v4-12) or id (v13+). No auto-creation.
fn resolve(broker: &Broker, header: &Header, req: &FetchRequest) -> (Vec<TopicData>, Vec<Want>) {
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut wants = Vec::new();
    // By id (v13+): one pass over the topics for the whole request.
    let by_id: HashMap<Uuid, Arc<Topic>> = if header.version >= 13 {
        broker.topics.list().into_iter().map(|t| (t.id(), t)).collect()
    } else {
        HashMap::new()
    };
    for t in &req.topics {
        let found = if header.version >= 13 {
            by_id.get(&t.topic_id).cloned()
        } else {
            broker.topics.get(t.topic.as_str())
        };
        let elsewhere = found.is_none() && header.version < 13 && held_elsewhere(broker, t.topic.as_str());
        let missing = if elsewhere {
            // The cluster has it, another broker leads it: refresh metadata.
            ResponseError::NotLeaderOrFollower.code()
        } else if header.version >= 13 {
            ResponseError::UnknownTopicId.code()
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        };
        for p in &t.partitions {
            let partition = found
                .as_ref()
                .and_then(|f| usize::try_from(p.partition).ok().and_then(|i| f.partitions.get(i)).cloned())
                .ok_or(missing)
                .and_then(|part| match part.check_readable() {
                    Ok(()) => Ok(part),
                    Err(e) => Err(super::error::code(&e)),
                });
            wants.push(Want {
                topic: topics.len(),
                index: p.partition,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                partition,
            });
        }
        topics.push(TopicData { name: t.topic.to_string(), id: t.topic_id, partitions: Vec::new() });
    }
    (topics, wants)
}

/// Whether the controller of a clustered broker has `topic` (this broker
/// holding no replica of it).
fn held_elsewhere(broker: &Broker, topic: &str) -> bool {
    broker.cluster().is_some_and(|c| c.state().topics.contains_key(topic))
}

/// Reads every partition once within the byte budgets; returns their
/// answers, the bytes served and whether any partition failed.
fn read_once(broker: &Broker, wants: &[Want], max_bytes: usize) -> (Vec<PartitionData>, usize, bool) {
    let mut total = 0usize;
    let mut any_error = false;
    let served = wants
        .iter()
        .map(|want| {
            let mut out = PartitionData {
                index: want.index,
                error_code: 0,
                high_watermark: -1,
                log_start_offset: -1,
                records: Bytes::new(),
            };
            let part = match &want.partition {
                Ok(p) => p,
                Err(code) => {
                    out.error_code = *code;
                    any_error = true;
                    return out;
                }
            };
            let log = part.log();
            out.high_watermark = part.high_watermark().max(log.high_watermark()) as i64;
            out.log_start_offset = log.log_start_offset() as i64;
            let limit = want.max_bytes.min(max_bytes.saturating_sub(total));
            if limit == 0 && total > 0 {
                return out;
            }
            let read = match u64::try_from(want.offset) {
                Ok(offset) => log.read(offset, limit.max(1)),
                Err(_) => Err(StorageError::OffsetOutOfRange {
                    offset: 0,
                    log_start_offset: log.log_start_offset(),
                    log_end_offset: log.high_watermark(),
                }),
            };
            match read {
                Ok(records) => {
                    total += records.len();
                    part.counters.bytes_out.inc_by(records.len() as u64);
                    out.records = records;
                }
                Err(e) => {
                    out.error_code = error::code(&broker.storage_error(&part.topic, e));
                    any_error = true;
                }
            }
            out
        })
        .collect();
    (served, total, any_error)
}
