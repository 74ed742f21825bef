//! A fault-injecting TCP proxy for the cluster tests: listens on
//! `127.0.0.1:0` and forwards every accepted connection to one upstream
//! address, both directions, until told to misbehave:
//!
//! - [`Proxy::cut`]: every open connection is shut down and new ones are
//!   accepted and closed at once (a network partition between the pair);
//! - [`Proxy::drop_direction`]: bytes one way are read and discarded while
//!   the connection stays open (a one-way partition: the sender sees no
//!   error, the receiver sees silence);
//! - [`Proxy::delay`]: every chunk is delivered that long after it was read
//!   (latency, not a bandwidth limit: chunks stay in order);
//! - [`Proxy::heal`]: all of the above off (dropped bytes stay dropped).
//!
//! "a" is the side that connects to the proxy (the client, or the node that
//! dials its peer), "b" the upstream. Plain threads, no async runtime, so
//! sync and async tests can both hold one. Everything is shut down on drop.
//! Only loopback addresses are used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The current faults.
#[derive(Debug, Default, Clone, Copy)]
struct Faults {
    cut: bool,
    drop_a_to_b: bool,
    drop_b_to_a: bool,
    delay: Duration,
}

/// State shared by the accept loop, the pumps and the handle.
#[derive(Debug, Default)]
struct Shared {
    faults: Mutex<Faults>,
    /// Both sockets of every open connection (clones), to shut down on a cut.
    open: Mutex<Vec<(TcpStream, TcpStream)>>,
    stopped: AtomicBool,
    accepted: AtomicU64,
    dropped_bytes: AtomicU64,
}

impl Shared {
    fn faults(&self) -> Faults {
        *lock(&self.faults)
    }

    fn close_all(&self) {
        for (a, b) in lock(&self.open).drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running proxy to one upstream address.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream` (which need not
    /// be up yet: a connection that cannot reach it is closed).
    ///
    /// # Panics
    /// When the listener cannot be bound.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("proxy-{addr}"))
            .spawn(move || accept_loop(&listener, upstream, &s))
            .unwrap();
        Self { addr, upstream, shared }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Closes every open connection and refuses (accepts and closes) new
    /// ones until [`heal`](Self::heal).
    pub fn cut(&self) {
        lock(&self.shared.faults).cut = true;
        self.shared.close_all();
    }

    /// Silently discards bytes from a to b (`a_to_b`) or from b to a, while
    /// the connections stay open.
    pub fn drop_direction(&self, a_to_b: bool) {
        let mut f = lock(&self.shared.faults);
        if a_to_b {
            f.drop_a_to_b = true;
        } else {
            f.drop_b_to_a = true;
        }
    }

    /// Delivers every chunk read from now on `delay` late (both directions).
    pub fn delay(&self, delay: Duration) {
        lock(&self.shared.faults).delay = delay;
    }

    /// Turns every fault off.
    pub fn heal(&self) {
        *lock(&self.shared.faults) = Faults::default();
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Bytes discarded by [`drop_direction`](Self::drop_direction) so far.
    pub fn dropped_bytes(&self) -> u64 {
        self.shared.dropped_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }
}

/// Accepts until the proxy is dropped (polling a non-blocking listener, so
/// the drop is noticed within a few milliseconds).
fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((a, _)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                if shared.faults().cut {
                    let _ = a.shutdown(Shutdown::Both);
                    continue;
                }
                let s = Arc::clone(shared);
                thread::spawn(move || connect_pair(a, upstream, &s));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Dials upstream for the accepted socket `a` and starts both pumps.
fn connect_pair(a: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) {
    a.set_nonblocking(false).unwrap();
    let Ok(b) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        let _ = a.shutdown(Shutdown::Both);
        return;
    };
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    {
        let mut open = lock(&shared.open);
        // A cut (or the drop) that came while dialing wins.
        if shared.faults().cut || shared.stopped.load(Ordering::SeqCst) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
            return;
        }
        open.push((a.try_clone().unwrap(), b.try_clone().unwrap()));
    }
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let s = Arc::clone(shared);
    thread::spawn(move || pump(a, b, true, &s));
    let s = Arc::clone(shared);
    thread::spawn(move || pump(b2, a2, false, &s));
}

/// Copies `from` to `to` through a delivery thread that honours the delay;
/// on either side's end, shuts both down.
fn pump(mut from: TcpStream, to: TcpStream, a_to_b: bool, shared: &Arc<Shared>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = {
        let mut to = to.try_clone().unwrap();
        let from = from.try_clone().unwrap();
        thread::spawn(move || {
            for (due, chunk) in rx {
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let f = shared.faults();
        if f.cut || (a_to_b && f.drop_a_to_b) || (!a_to_b && f.drop_b_to_a) {
            shared.dropped_bytes.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        if tx.send((Instant::now() + f.delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address (threads end with the process).
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for s in listener.incoming().take(64) {
                let Ok(mut s) = s else { continue };
                thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut s, &mut w);
                });
            }
        });
        addr
    }

    fn connect(p: &Proxy) -> TcpStream {
        let s = TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Writes `msg` and reads back exactly its length.
    fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        got
    }

    /// Whether nothing arrives within `wait` (the absence of bytes can only
    /// be shown by waiting; kept short).
    fn silent_for(s: &mut TcpStream, wait: Duration) -> bool {
        s.set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 64];
        let silent = matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        silent
    }

    /// Whether the connection was closed (EOF or reset) within 5 s.
    fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
        false
    }

    #[test]
    fn forwards_both_ways() {
        let p = Proxy::start(echo_server());
        let mut s = connect(&p);
        assert_eq!(round_trip(&mut s, b"hello"), b"hello");
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        assert_eq!(round_trip(&mut s, &big), big);
        assert_eq!(p.accepted(), 1);
    }

    #[test]
    fn cut_closes_open_connections_and_refuses_new_ones_until_healed() {
        let p = Proxy::start(echo_server());
        let mut s = connect(&p);
        assert_eq!(round_trip(&mut s, b"before"), b"before");
        p.cut();
        assert!(closed(&mut s), "an open connection survived the cut");
        let mut refused = connect(&p);
        let _ = refused.write_all(b"x");
        assert!(closed(&mut refused), "a new connection got through the cut");
        p.heal();
        let mut again = connect(&p);
        assert_eq!(round_trip(&mut again, b"after"), b"after");
    }

    #[test]
    fn dropping_a_to_b_discards_requests_and_keeps_the_connection() {
        let p = Proxy::start(echo_server());
        let mut s = connect(&p);
        assert_eq!(round_trip(&mut s, b"one"), b"one");
        p.drop_direction(true);
        s.write_all(b"lost").unwrap();
        assert!(silent_for(&mut s, Duration::from_millis(300)), "dropped bytes reached the echo server");
        p.heal();
        // Same connection: the dropped bytes never arrive, new ones do.
        assert_eq!(round_trip(&mut s, b"two"), b"two");
        assert!(p.dropped_bytes() >= 4);
    }

    #[test]
    fn dropping_b_to_a_discards_replies_and_keeps_the_connection() {
        let p = Proxy::start(echo_server());
        let mut s = connect(&p);
        p.drop_direction(false);
        s.write_all(b"unanswered").unwrap();
        assert!(silent_for(&mut s, Duration::from_millis(300)), "a reply got through");
        // The echo did happen: its bytes were counted as dropped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.dropped_bytes() < 10 {
            assert!(Instant::now() < deadline, "the echo never came back to the proxy");
            thread::sleep(Duration::from_millis(5));
        }
        p.heal();
        assert_eq!(round_trip(&mut s, b"answered"), b"answered");
    }

    #[test]
    fn delay_holds_every_chunk_back() {
        let p = Proxy::start(echo_server());
        let mut s = connect(&p);
        assert_eq!(round_trip(&mut s, b"warm"), b"warm");
        p.delay(Duration::from_millis(150));
        let started = Instant::now();
        assert_eq!(round_trip(&mut s, b"slow"), b"slow");
        // Delayed on the way there and on the way back.
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
        p.heal();
        let started = Instant::now();
        assert_eq!(round_trip(&mut s, b"fast"), b"fast");
        assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
    }

    #[test]
    fn dropping_the_proxy_closes_its_connections() {
        let p = Proxy::start(echo_server());
        let mut s = connect(&p);
        assert_eq!(round_trip(&mut s, b"x"), b"x");
        drop(p);
        assert!(closed(&mut s));
    }
}
