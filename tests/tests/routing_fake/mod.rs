//! A fake cluster for client routing tests: fake native brokers ("nodes")
//! in front of ONE real in-process broker, so every node shares the same
//! storage and producer state (as replicas that replicated everything
//! would). Each node answers Metadata itself (every node listed, every
//! partition led by the current leader at the current epoch), forwards
//! what it may serve to the real broker, and answers produce, fetch and
//! ListOffsets with `NOT_LEADER_OR_FOLLOWER` when it is not the leader.
//!
//! `lose_acks(n)`: the next `n` produce requests a non-leader gets are
//! written through to the real broker and then answered
//! `NOT_LEADER_OR_FOLLOWER` (a write whose acknowledgement was lost): a
//! client that retries them without idempotence would duplicate them.
//!
//! Everything listens on 127.0.0.1; the tasks end with the test's runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use sluice_protocol::api::{
    encode_error, encode_response, ApiKey, BrokerMetadata, FetchPartitionResponse, FetchRequest,
    FetchResponse, Message, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
};
use sluice_protocol::client::Connection;
use sluice_protocol::io::write_frame;
use sluice_protocol::{ErrorCode, FrameCodec, Reader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

/// What happened at a node, per api: served (forwarded or answered) or
/// refused as not the leader.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub served: u64,
    pub refused: u64,
}

#[derive(Debug)]
struct Shared {
    backend: SocketAddr,
    meta: Connection,
    leader: AtomicU64,
    epoch: AtomicU32,
    nodes: Vec<(u64, String)>,
    counts: Mutex<HashMap<(u64, ApiKey), Counts>>,
    lose_acks: AtomicU32,
    lost: AtomicU32,
}

/// The fake cluster.
#[derive(Debug)]
pub struct FakeCluster {
    shared: Arc<Shared>,
}

impl FakeCluster {
    /// Nodes `ids` in front of the broker at `backend`; `leader` leads
    /// every partition at epoch 0.
    pub async fn start(backend: SocketAddr, ids: &[u64], leader: u64) -> Self {
        let mut listeners = Vec::new();
        let mut nodes = Vec::new();
        for id in ids {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            nodes.push((*id, l.local_addr().unwrap().to_string()));
            listeners.push((*id, l));
        }
        let shared = Arc::new(Shared {
            backend,
            meta: Connection::connect(&backend.to_string(), "fake").await.unwrap(),
            leader: AtomicU64::new(leader),
            epoch: AtomicU32::new(0),
            nodes,
            counts: Mutex::new(HashMap::new()),
            lose_acks: AtomicU32::new(0),
            lost: AtomicU32::new(0),
        });
        for (id, l) in listeners {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                while let Ok((sock, _)) = l.accept().await {
                    tokio::spawn(serve(sock, id, Arc::clone(&shared)));
                }
            });
        }
        Self { shared }
    }

    /// A node's address.
    pub fn addr(&self, id: u64) -> String {
        self.shared.nodes.iter().find(|(n, _)| *n == id).unwrap().1.clone()
    }

    /// Moves every partition's leadership to `id` (a new epoch).
    pub fn set_leader(&self, id: u64) {
        self.shared.leader.store(id, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Every partition offline (no leader) at a new epoch: metadata says
    /// leader -1 and every node refuses.
    pub fn set_offline(&self) {
        self.set_leader(OFFLINE);
    }

    /// See the module doc.
    pub fn lose_acks(&self, n: u32) {
        self.shared.lose_acks.store(n, Ordering::SeqCst);
    }

    /// Produce requests written but answered as refused so far.
    pub fn lost_acks(&self) -> u32 {
        self.shared.lost.load(Ordering::SeqCst)
    }

    /// What node `id` did with requests of `api`.
    pub fn counts(&self, id: u64, api: ApiKey) -> Counts {
        self.shared.counts.lock().unwrap().get(&(id, api)).copied().unwrap_or_default()
    }
}

impl Shared {
    fn count(&self, id: u64, api: ApiKey, refused: bool) {
        let mut counts = self.counts.lock().unwrap();
        let c = counts.entry((id, api)).or_default();
        if refused {
            c.refused += 1;
        } else {
            c.served += 1;
        }
    }

    async fn metadata(&self, id: u64, req: MetadataRequest) -> MetadataResponse {
        let mut resp = self.meta.call(&req).await.unwrap();
        resp.node_id = id;
        resp.brokers =
            self.nodes.iter().map(|(id, addr)| BrokerMetadata { id: *id, addr: addr.clone() }).collect();
        let (leader, epoch) = (self.leader.load(Ordering::SeqCst), self.epoch.load(Ordering::SeqCst));
        for p in resp.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            p.leader = if leader == OFFLINE { -1 } else { leader as i64 };
            p.leader_epoch = epoch;
            p.replicas = self.nodes.iter().map(|(id, _)| *id).collect();
            p.isr = p.replicas.clone();
        }
        resp
    }
}

/// The `leader` of an offline partition.
const OFFLINE: u64 = u64::MAX;

type Waiters = Arc<Mutex<HashMap<u32, oneshot::Sender<()>>>>;

/// One client connection to node `id`, with its own connection to the
/// real broker.
async fn serve(sock: TcpStream, id: u64, shared: Arc<Shared>) {
    let Ok(backend) = TcpStream::connect(shared.backend).await else { return };
    let (backend_read, mut backend_write) = backend.into_split();
    let (client_read, mut client_write) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Bytes>>();
    tokio::spawn(async move {
        while let Some(chunks) = rx.recv().await {
            if write_frame(&mut client_write, &chunks).await.is_err() {
                return;
            }
        }
    });
    // Responses of the real broker go back to the client, except those of
    // writes whose acknowledgement is to be lost (their waiter hears).
    let swallowed: Waiters = Arc::default();
    let waiters = Arc::clone(&swallowed);
    let to_client = tx.clone();
    tokio::spawn(async move {
        let mut frames = FramedRead::new(backend_read, FrameCodec::new(64 << 20));
        while let Some(Ok(frame)) = frames.next().await {
            let header = ResponseHeader::decode(&mut Reader::new(frame.clone())).unwrap();
            match waiters.lock().unwrap().remove(&header.correlation_id) {
                Some(waiter) => drop(waiter.send(())),
                None => drop(to_client.send(vec![frame])),
            }
        }
    });
    let mut frames = FramedRead::new(client_read, FrameCodec::new(64 << 20));
    while let Some(Ok(frame)) = frames.next().await {
        let mut r = Reader::new(frame.clone());
        let header = RequestHeader::decode(&mut r).unwrap();
        let body = r.bytes(r.remaining()).unwrap();
        let Some(api) = ApiKey::from_u16(header.api_key) else { return };
        let id_ = header.correlation_id;
        let leads = shared.leader.load(Ordering::SeqCst) == id;
        let routed = matches!(api, ApiKey::Produce | ApiKey::Fetch | ApiKey::ListOffsets);
        shared.count(id, api, routed && !leads);
        let reply = match api {
            ApiKey::Metadata => {
                let req = MetadataRequest::decode_all(body).unwrap();
                Some(encode_response(id_, &shared.metadata(id, req).await).into_chunks())
            }
            ApiKey::Fetch if !leads => Some(refused_fetch(id_, body)),
            ApiKey::Produce if !leads && take(&shared.lose_acks) => {
                let (written, wait) = oneshot::channel();
                swallowed.lock().unwrap().insert(id_, written);
                if write_frame(&mut backend_write, &[frame]).await.is_err() || wait.await.is_err() {
                    return;
                }
                shared.lost.fetch_add(1, Ordering::SeqCst);
                Some(not_leader(id_))
            }
            ApiKey::Produce | ApiKey::ListOffsets if !leads => Some(not_leader(id_)),
            _ => {
                if write_frame(&mut backend_write, &[frame]).await.is_err() {
                    return;
                }
                None
            }
        };
        if let Some(chunks) = reply {
            if tx.send(chunks).is_err() {
                return;
            }
        }
    }
}

/// Takes one from a counter that is above zero.
fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
}

fn not_leader(correlation_id: u32) -> Vec<Bytes> {
    encode_error(correlation_id, ErrorCode::NotLeaderOrFollower, "not the leader (fake)").into_chunks()
}

/// A fetch answered with `NOT_LEADER_OR_FOLLOWER` for every partition.
fn refused_fetch(correlation_id: u32, body: Bytes) -> Vec<Bytes> {
    let req = FetchRequest::decode_all(body).unwrap();
    let partitions = req
        .partitions
        .into_iter()
        .map(|p| FetchPartitionResponse {
            topic: p.topic,
            partition: p.partition,
            error_code: ErrorCode::NotLeaderOrFollower,
            high_watermark: 0,
            log_start_offset: 0,
            records: Bytes::new(),
        })
        .collect();
    encode_response(correlation_id, &FetchResponse { partitions }).into_chunks()
}

/// An address nothing listens on (bound, then closed).
pub async fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}
