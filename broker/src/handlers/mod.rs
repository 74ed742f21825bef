//! Request handlers, one module per api. [`dispatch`] decodes a frame and
//! routes it: work that must happen in request order (a produce's append)
//! runs inline, on the connection's task; anything that waits (durability,
//! long polls, file system work) becomes a future that the connection
//! spawns and runs concurrently. Blocking work never runs on an async
//! worker as is: in-order work (an auto-created topic, a segment roll) runs
//! in place with the worker's other tasks handed off
//! ([`blocking_in_place`]), the rest on a blocking thread.

mod admin;
mod cluster;
mod fetch;
mod groups;
mod offsets;
mod produce;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::api::{encode_error, encode_response, ApiKey, Message, RequestBody, RequestHeader};
use sluice_protocol::{ErrorCode, Reader};

use crate::broker::Broker;
use crate::errors::BrokerError;
use crate::partition::{blocking_in_place, Partition};

/// A response frame's payload as chunks (written with one `writev`).
pub type Chunks = Vec<Bytes>;

/// An encoded response and the error code it carries (for the metrics:
/// nothing parses the encoded bytes again).
#[derive(Debug)]
pub struct Response {
    /// The frame's payload.
    pub chunks: Chunks,
    /// The error code in its header.
    pub code: ErrorCode,
}

/// A response still being worked on.
pub type PendingResponse = Pin<Box<dyn Future<Output = Option<Response>> + Send>>;

/// What the connection does with a request. (Holds a future: no `Debug`.)
#[allow(missing_debug_implementations)]
pub enum Dispatch {
    /// Answer now (or send nothing, for `acks = none`).
    Done(Option<Response>),
    /// Answer when the future completes.
    Pending(PendingResponse),
    /// Send this error, then close the connection (the frame could not be
    /// attributed to a request).
    Close(Response),
}

fn ok<M: Message>(correlation_id: u32, body: &M) -> Response {
    Response { chunks: encode_response(correlation_id, body).into_chunks(), code: ErrorCode::None }
}

fn error(correlation_id: u32, code: ErrorCode, message: &str) -> Response {
    Response { chunks: encode_error(correlation_id, code, message).into_chunks(), code }
}

fn respond(correlation_id: u32, result: Result<impl Message, BrokerError>) -> Response {
    match result {
        Ok(body) => ok(correlation_id, &body),
        Err(e) => error(correlation_id, e.code(), &e.to_string()),
    }
}

fn pending<M: Message + 'static>(
    correlation_id: u32,
    fut: impl Future<Output = Result<M, BrokerError>> + Send + 'static,
) -> Dispatch {
    Dispatch::Pending(Box::pin(async move { Some(respond(correlation_id, fut.await)) }))
}

/// Runs blocking work (file system, fsync) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BrokerError> + Send + 'static,
) -> Result<T, BrokerError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| BrokerError::Internal(e.to_string()))?
}

/// The partition `index` of `topic`, looked up at once when the topic
/// exists; auto-creating it (directories, fsyncs) runs in place with the
/// worker's other tasks handed off, so requests stay in order.
fn partition(broker: &Broker, topic: &str, index: u32) -> Result<Arc<Partition>, BrokerError> {
    let found = broker.topics.get(topic).and_then(|t| t.partitions.get(index as usize).cloned());
    match found {
        Some(p) => Ok(p),
        None => blocking_in_place(|| broker.partition(topic, index)),
    }
}

/// Decodes one request frame and starts handling it; records the request's
/// count, latency and error code in the metrics when its response is ready.
pub fn dispatch(broker: &Arc<Broker>, frame: Bytes) -> Dispatch {
    let started = std::time::Instant::now();
    let api = frame
        .get(..2)
        .and_then(|k| ApiKey::from_u16(u16::from_be_bytes([k[0], k[1]])))
        .map_or("Unknown", ApiKey::name);
    if !broker.config.metrics {
        return route(broker, frame);
    }
    let metrics = Arc::clone(&broker.metrics);
    let record = move |response: Option<&Response>| {
        let code = response.map_or(ErrorCode::None, |r| r.code);
        metrics.request(api, started.elapsed(), (!code.is_ok()).then(|| code.name()));
    };
    match route(broker, frame) {
        Dispatch::Done(response) => {
            record(response.as_ref());
            Dispatch::Done(response)
        }
        Dispatch::Pending(future) => Dispatch::Pending(Box::pin(async move {
            let response = future.await;
            record(response.as_ref());
            response
        })),
        Dispatch::Close(response) => {
            record(Some(&response));
            Dispatch::Close(response)
        }
    }
}

fn route(broker: &Arc<Broker>, frame: Bytes) -> Dispatch {
    let mut r = Reader::new(frame);
    let header = match RequestHeader::decode(&mut r) {
        Ok(h) => h,
        Err(e) => {
            return Dispatch::Close(error(
                0,
                ErrorCode::InvalidRequest,
                &format!("malformed request header: {e}"),
            ))
        }
    };
    let id = header.correlation_id;
    let body = r.bytes(r.remaining()).unwrap_or_default();
    let request = match RequestBody::decode(&header, body) {
        Ok(request) => request,
        Err(e) => return Dispatch::Done(Some(error(id, e.code(), &e.to_string()))),
    };
    let b = Arc::clone(broker);
    // Every api has its line: a new one does not compile until it has a handler.
    match request {
        RequestBody::ApiVersions(_) => Dispatch::Done(Some(ok(id, &admin::api_versions()))),
        RequestBody::Metadata(req) => pending(id, async move { admin::metadata(&b, req) }),
        RequestBody::CreateTopic(req) => pending(id, admin::create_topic(b, req)),
        RequestBody::DeleteTopic(req) => pending(id, admin::delete_topic(b, req)),
        RequestBody::AlterTopic(req) => pending(id, admin::alter_topic(b, req)),
        RequestBody::AddPartitions(req) => pending(id, admin::add_partitions(b, req)),
        RequestBody::Produce(req) => produce::handle(&b, id, req),
        RequestBody::Fetch(req) => pending(id, fetch::handle(b, req)),
        RequestBody::ListOffsets(req) => pending(id, async move { offsets::list_offsets(&b, req) }),
        RequestBody::GroupHeartbeat(req) => pending(id, groups::heartbeat(b, header.client_id, req)),
        RequestBody::OffsetCommit(req) => pending(id, groups::commit(b, req)),
        RequestBody::OffsetFetch(req) => pending(id, groups::fetch_offsets(b, req)),
        RequestBody::ListGroups(_) => pending(id, groups::list(b)),
        RequestBody::DescribeGroup(req) => pending(id, groups::describe(b, req)),
        RequestBody::ResetOffsets(req) => pending(id, groups::reset_offsets(b, req)),
        RequestBody::DeleteGroup(req) => pending(id, groups::delete(b, req)),
        RequestBody::Status(_) => pending(id, async move { Ok(admin::status(&b)) }),
        RequestBody::ClusterStatus(_) => pending(id, async move { Ok(cluster::status(&b)) }),
        RequestBody::AddNode(req) => pending(id, cluster::add_node(b, req)),
    }
}
