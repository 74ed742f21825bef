//! ISR shrink and expansion through the (fake) controller, and hostile
//! bytes on the replication channel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::test_support::*;
use crate::cluster::peer_wire::{self, Channel, Hello, PEER_MAGIC, PEER_VERSION};
use crate::storage::FsyncPolicy;

const MAX_FRAME: usize = 1 << 20;

/// A follower that stops fetching leaves the ISR after the lag time (a
/// shrink proposed to the controller, applied once accepted); once it
/// fetches again and its durable offset reaches the HW it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isr_shrinks_after_the_lag_time_and_expands_after_catching_up() {
    let dir = tempfile::tempdir().unwrap();
    let lag = super::ReplicationConfig { replica_lag_time_max: Duration::from_millis(300), ..config(1) };
    let l = node_with(dir.path(), lag, FsyncPolicy::Always).await;
    let f = node(dir.path(), 2, FsyncPolicy::Always).await;
    l.mgr.set_role(&l.p, leader(1, &[1, 2], &[1, 2], 1));
    f.mgr.set_role(&f.p, follower(1, &l));
    let a = l.p.append(records(2), MAX_FRAME, now_ms()).unwrap();
    l.p.wait_durable(&a, WAIT).await.unwrap();

    // A refused shrink does not take effect.
    l.isr.refuse.store(true, Ordering::SeqCst);
    f.mgr.set_role(&f.p, super::Role::Offline { epoch: 1 });
    eventually("a shrink is proposed", || !l.isr.proposals.lock().unwrap().is_empty()).await;
    assert_eq!(isr_of(&l.p), vec![1, 2], "refused: the ISR stays");
    l.isr.refuse.store(false, Ordering::SeqCst);
    eventually("the ISR shrinks", || isr_of(&l.p) == vec![1]).await;
    assert_eq!(l.mgr.isr_shrinks(), 1);
    assert!(l.isr.proposals.lock().unwrap().iter().all(|(leader, epoch, isr)| (
        *leader,
        *epoch,
        isr.clone()
    ) == (1, 1, vec![1])));

    // Alone in the ISR, the leader acknowledges by itself.
    let b = l.p.append(records(3), MAX_FRAME, now_ms()).unwrap();
    l.p.wait_durable(&b, WAIT).await.unwrap();
    assert_eq!(l.p.high_watermark(), 5);

    f.mgr.set_role(&f.p, follower(1, &l));
    eventually("the ISR expands", || isr_of(&l.p) == vec![1, 2]).await;
    assert_eq!(l.mgr.isr_expands(), 1);
    assert!(f.p.log().durable_offset() >= 5);
    assert_eq!(l.mgr.follower_lag(&l.p), vec![(2, 0)]);
}

/// A durable produce pending when the ISR shrinks below
/// `min_insync_replicas` fails (NOT_ENOUGH_REPLICAS_AFTER_APPEND) instead
/// of being acknowledged by fewer copies than promised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_below_min_insync_fails_the_pending_ack() {
    let dir = tempfile::tempdir().unwrap();
    let lag = super::ReplicationConfig { replica_lag_time_max: Duration::from_millis(200), ..config(1) };
    let l = node_with(dir.path(), lag, FsyncPolicy::Always).await;
    l.mgr.set_role(&l.p, leader(1, &[1, 2], &[1, 2], 2));
    l.p.check_writable(true).unwrap();
    let a = l.p.append(records(1), MAX_FRAME, now_ms()).unwrap();
    let err = l.p.wait_durable(&a, WAIT).await.unwrap_err();
    assert!(matches!(err, crate::errors::BrokerError::NotEnoughReplicas { isr: 1, min: 2, .. }), "{err:?}");
    assert_eq!(isr_of(&l.p), vec![1]);
    assert!(l.p.check_writable(true).is_err());
    l.p.check_writable(false).unwrap();
    assert_eq!(l.p.high_watermark(), 1, "alone in the ISR, its own flush is the HW");
}

fn hello(from: u64, to: u64) -> Hello {
    Hello {
        magic: PEER_MAGIC.into(),
        version: PEER_VERSION,
        cluster_id: CLUSTER.into(),
        from,
        to,
        channel: Channel::Replication,
    }
}

/// Whether the server closed `stream` (reads EOF or an error within 5 s).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Garbage before and after the handshake, a lying frame length, an
/// unknown kind, a fetch in another node's name: each closes its own
/// connection, and replication carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_on_the_replication_channel_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let l = node(dir.path(), 1, FsyncPolicy::Always).await;
    let f = node(dir.path(), 2, FsyncPolicy::Always).await;
    l.mgr.set_role(&l.p, leader(1, &[1, 2], &[1, 2], 2));

    let mut raw = TcpStream::connect(&l.addr).await.unwrap();
    raw.write_all(b"\x00\x00\x00\x05hello").await.unwrap();
    assert!(closed(&mut raw).await, "garbage handshake");

    let frames: [&[u8]; 4] = [
        b"\xff\xff\xff\xf0",              // a lying length, over the maximum
        b"\x00\x00\x00\x03\x09\x00\x00",  // an unknown kind
        b"\x00\x00\x00\x04\x01\x00\x05t", // a truncated fetch
        b"\x00\x00\x00\x02\x02\xff",      // a truncated epoch request
    ];
    for frame in frames {
        let mut conn = peer_wire::dial(&l.addr, &hello(2, 1), WAIT).await.unwrap();
        conn.get_mut().write_all(frame).await.unwrap();
        assert!(closed(conn.get_mut()).await, "frame {frame:?}");
    }
    // A fetch in another replica's name closes the connection.
    let mut conn = peer_wire::dial(&l.addr, &hello(3, 1), WAIT).await.unwrap();
    let req = super::wire::ReplicaRequest::Fetch(super::wire::ReplicaFetch {
        topic: TOPIC.into(),
        partition: 0,
        replica_id: 2,
        leader_epoch: 1,
        fetch_offset: 0,
        durable_offset: 1_000,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
    });
    futures_util::SinkExt::send(&mut conn, req.encode()).await.unwrap();
    assert!(closed(conn.get_mut()).await, "impersonation");
    // The wrong cluster is refused at the handshake.
    let foreign = Hello { cluster_id: "other".into(), ..hello(2, 1) };
    assert!(peer_wire::dial(&l.addr, &foreign, WAIT).await.is_err());

    // Replication still works, and nothing above moved the HW.
    assert_eq!(l.p.high_watermark(), 0);
    f.mgr.set_role(&f.p, follower(1, &l));
    let a = l.p.append(records(2), MAX_FRAME, now_ms()).unwrap();
    l.p.wait_durable(&a, WAIT).await.unwrap();
    assert_eq!(all_bytes(&l.p), all_bytes(&f.p));
}
