//! Loopback ports for subprocess brokers: reserved below the ephemeral
//! range, and the three-node cluster flags built on them.

use std::net::TcpListener;

/// A port free on 127.0.0.1 now (held until the caller drops the listener).
/// Taken from 20000-31999, below Linux's ephemeral range (32768 up): the
/// node binds it only after the listener is dropped, and a port from the
/// ephemeral range could meanwhile go to another test's `127.0.0.1:0`
/// socket. Each process walks the range from its own random start.
pub fn reserve_port() -> TcpListener {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..SPAN {
        let port = LOW + NEXT.fetch_add(1, Ordering::AcqRel) % SPAN;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// Each of three nodes' cluster flags (`--node-id`, `--peer-listen`,
/// `--peers`) with peer ports that were free a moment ago (reserved
/// together with [`reserve_port`], then released), for tests that start
/// `ProcessBroker`s themselves.
pub fn three_node_flags() -> Vec<Vec<String>> {
    let held: Vec<TcpListener> = (0..3).map(|_| reserve_port()).collect();
    let ports: Vec<u16> = held.iter().map(|l| l.local_addr().expect("addr").port()).collect();
    drop(held);
    let peers: Vec<String> =
        ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect();
    let peers = peers.join(",");
    (1..=3)
        .map(|id: usize| {
            let listen = format!("127.0.0.1:{}", ports[id - 1]);
            ["--node-id", &id.to_string(), "--peer-listen", &listen, "--peers", &peers]
                .map(str::to_owned)
                .to_vec()
        })
        .collect()
}
