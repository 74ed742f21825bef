//! The admin HTTP listener (default `127.0.0.1:9501`, `admin_listen = ""`
//! turns it off): `/metrics` (Prometheus text), `/health` (the process is
//! alive) and `/ready` (recovery finished, clients accepted: 503 before;
//! its body names the topics that failed to load, if any).
//! It is bound before the data directory is opened, so orchestration can
//! watch a long recovery.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use sluice_protocol::api::NO_OFFSET;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accept::AcceptBackoff;
use crate::broker::Broker;
use crate::metrics::{
    FollowerLabels, GroupOffsetSnapshot, GroupSnapshot, Metrics, PartitionSnapshot, Snapshot,
};

/// What the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// Set once recovery is done and clients are accepted.
    pub ready: AtomicBool,
    /// The broker, once open.
    pub broker: OnceLock<Arc<Broker>>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(state: &AdminState, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(state.broker.get().map(|b| snapshot(b)).as_ref()),
        ),
        "/health" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/ready" if state.ready.load(Ordering::Acquire) => {
            reply(StatusCode::OK, "text/plain", ready_text(state))
        }
        "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "recovering\n"),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /health or /ready\n"),
    }
}

/// What the state gauges show: every partition's offsets and sizes, every
/// group's members, committed offsets and lag, read now.
fn snapshot(broker: &Broker) -> Snapshot {
    let partitions = broker
        .topics
        .list()
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| PartitionSnapshot {
                topic: topic.name.to_string(),
                partition: p.index,
                stats: p.log().stats(),
            })
        })
        .collect();
    let groups = broker
        .groups
        .list()
        .into_iter()
        .map(|listing| {
            let described = broker.groups.describe(&broker.topics, &listing.group);
            let offsets = described.map(|d| d.offsets).unwrap_or_default();
            GroupSnapshot {
                offsets: offsets
                    .into_iter()
                    .map(|o| GroupOffsetSnapshot {
                        topic: o.topic,
                        partition: o.partition,
                        lag: o.lag,
                        committed: (o.committed != NO_OFFSET).then_some(o.committed),
                    })
                    .collect(),
                group: listing.group,
                members: listing.members,
            }
        })
        .collect();
    Snapshot { uptime: broker.started.elapsed(), partitions, groups, followers: followers(broker) }
}

/// The replication lag of every follower of a partition this broker leads.
fn followers(broker: &Broker) -> Vec<(FollowerLabels, u64)> {
    let Some(cluster) = broker.cluster() else { return Vec::new() };
    let mut out = Vec::new();
    for topic in broker.topics.list() {
        for p in &topic.partitions {
            for (follower, lag) in cluster.replicas.follower_lag(p) {
                let labels = FollowerLabels { topic: topic.name.to_string(), partition: p.index, follower };
                out.push((labels, lag));
            }
        }
    }
    out
}

/// `/ready`'s body once serving: `ready`, then each topic on disk that
/// failed to load (the broker serves the others, so it stays ready).
fn ready_text(state: &AdminState) -> String {
    let failed = state.broker.get().map(|b| b.topics.failed()).unwrap_or_default();
    let mut text = String::from("ready\n");
    if !failed.is_empty() {
        text.push_str(&format!("{} topic(s) failed to load and are not served:\n", failed.len()));
        for (topic, error) in failed {
            text.push_str(&format!("failed topic {topic}: {error}\n"));
        }
    }
    text
}

/// Binds the admin listener and serves it until `shutdown`.
pub async fn start(
    addr: &str,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    backoff.succeeded();
                    stream
                }
                Err(e) => {
                    // Out of file descriptors: pause instead of spinning.
                    let pause = backoff.failed();
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "admin accept failed; backing off");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let response = route(&state, req.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(local)
}
