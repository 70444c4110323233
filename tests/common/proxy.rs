//! A test-owned TCP proxy in front of one node's cluster port, used to cut
//! nodes off from each other on loopback (a stopped process would answer
//! nothing, which is not what a partitioned replica does).
//!
//! Each node listens on its own loopback address (127.0.0.1x) and makes its
//! outgoing cluster connections from it, so the proxy of node B can drop
//! exactly the connections coming from node A.
//!
//! When its node is not running (killed, stopped, not started yet), the
//! proxy stops listening, so connections to it are refused as they are to
//! a crashed host's port, until the node listens again.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    /// Drop everything (the node behind this proxy is cut off).
    down: bool,
    /// Sources whose connections are dropped.
    blocked: HashSet<IpAddr>,
    /// Open connections: (source, client side, upstream side).
    open: Vec<(IpAddr, TcpStream, TcpStream)>,
}

pub struct Proxy {
    pub listen: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Binds `listen`. `free_port` checked the port a moment ago; a socket that
/// held it only briefly since (seen once in CI, cause not found) gets up to a
/// second to let go before the test fails naming the address.
fn bind(listen: SocketAddr) -> TcpListener {
    let mut attempts = 0;
    let listener = loop {
        match TcpListener::bind(listen) {
            Ok(l) => break l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("proxy cannot listen on {listen}: {e}"),
        }
    };
    if attempts > 0 {
        eprintln!("proxy: {listen} was in use; bound after {attempts} retries");
    }
    listener.set_nonblocking(true).expect("nonblocking");
    listener
}

impl Proxy {
    /// Listens on `listen` and forwards to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> Proxy {
        let mut listener = Some(bind(listen));
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                let Some(l) = &listener else {
                    // The node is not listening: neither does the proxy,
                    // until the node does again (each port is handed out
                    // once per test process, so no other test takes it).
                    if TcpStream::connect_timeout(&upstream, Duration::from_millis(200)).is_ok() {
                        listener = Some(bind(listen));
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    continue;
                };
                match l.accept() {
                    Ok((client, src)) => {
                        let _ = client.set_nonblocking(false);
                        let refused = {
                            let s = st.lock().unwrap();
                            s.down || s.blocked.contains(&src.ip())
                        };
                        if refused {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let server = match TcpStream::connect_timeout(&upstream, Duration::from_secs(1)) {
                            Ok(server) => server,
                            Err(e) => {
                                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                                    listener = None;
                                }
                                continue;
                            }
                        };
                        let _ = server.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        if let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
                            client.try_clone(),
                            server.try_clone(),
                            client.try_clone(),
                            server.try_clone(),
                        ) {
                            st.lock().unwrap().open.push((src.ip(), c3, s3));
                            std::thread::spawn(move || pump(client, server));
                            std::thread::spawn(move || pump(s2, c2));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Proxy { listen, state, stop }
    }

    /// Drops every connection through this proxy and refuses new ones.
    pub fn set_down(&self, down: bool) {
        let mut s = self.state.lock().unwrap();
        s.down = down;
        if down {
            for (_, a, b) in s.open.drain(..) {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
        }
    }

    /// Drops (or allows again) connections from `source`.
    pub fn set_blocked(&self, source: IpAddr, blocked: bool) {
        let mut s = self.state.lock().unwrap();
        if blocked {
            s.blocked.insert(source);
            s.open.retain(|(ip, a, b)| {
                if *ip == source {
                    let _ = a.shutdown(Shutdown::Both);
                    let _ = b.shutdown(Shutdown::Both);
                    false
                } else {
                    true
                }
            });
        } else {
            s.blocked.remove(&source);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.set_down(true);
    }
}
