//! A local cluster of real pushgate processes, each on its own loopback
//! address, with a test-owned proxy in front of every node's cluster port.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::proxy::Proxy;
use super::pushers::Pushers;
use super::{free_port, temp_dir, Server};

pub struct Node {
    pub id: u64,
    pub ip: IpAddr,
    pub server: Server,
    pub proxy: Proxy,
}

pub struct TestCluster {
    pub nodes: BTreeMap<u64, Node>,
    pub dir: tempfile::TempDir,
    pub peers: String,
    /// Flags every node gets; `{id}` in one is replaced by the node's id.
    pub extra: Vec<String>,
    /// A command every node runs under (`nsenter ... --`), if any.
    pub wrap: Vec<String>,
    /// The pushgate binary nodes start with (this build's unless a test
    /// starts another release's).
    pub program: PathBuf,
}

pub fn node_ip(id: u64) -> IpAddr {
    IpAddr::from([127, 0, 0, 10 + id as u8])
}

impl TestCluster {
    /// Starts `n` nodes with ids 1..=n and waits until every one is ready.
    pub fn start(name: &str, n: u64, extra: &[&str]) -> TestCluster {
        Self::start_in(temp_dir(name), n, extra, Vec::new())
    }

    /// Like `start`, in `dir`, every node run under `wrap`.
    pub fn start_in(dir: tempfile::TempDir, n: u64, extra: &[&str], wrap: Vec<String>) -> TestCluster {
        Self::start_release(dir, n, extra, wrap, super::this_release())
    }

    /// Like `start_in`, every node running the pushgate binary `program`.
    pub fn start_release(
        dir: tempfile::TempDir,
        n: u64,
        extra: &[&str],
        wrap: Vec<String>,
        program: PathBuf,
    ) -> TestCluster {
        let specs: Vec<(u64, u16, u16)> = (1..=n).map(|id| (id, free_port(), free_port())).collect();
        let peers: Vec<String> = specs
            .iter()
            .map(|(id, _, proxy)| format!("{id}={}:{proxy}", node_ip(*id)))
            .collect();
        let peers = peers.join(",");
        let mut cluster = TestCluster {
            nodes: BTreeMap::new(),
            dir,
            peers,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            wrap,
            program,
        };
        for (id, grpc, proxy_port) in specs {
            let node = cluster.launch(id, grpc, proxy_port, &cluster.peers.clone());
            cluster.nodes.insert(id, node);
        }
        for node in cluster.nodes.values_mut() {
            node.server.wait_ready(Duration::from_secs(60));
        }
        cluster
    }

    /// Starts node `id` (not waiting for readiness) with its proxy.
    pub fn launch(&self, id: u64, grpc: u16, proxy_port: u16, peers: &str) -> Node {
        let ip = node_ip(id);
        let proxy = Proxy::start(SocketAddr::new(ip, proxy_port), SocketAddr::new(ip, grpc));
        let mut args = vec![
            format!("--cluster.node-id={id}"),
            format!("--cluster.peers={peers}"),
            format!("--cluster.listen-address={ip}:{grpc}"),
            format!("--cluster.advertise-address={ip}:{proxy_port}"),
        ];
        // `{id}` in an extra flag is this node's id (per-node files).
        args.extend(self.extra.iter().map(|a| a.replace("{id}", &id.to_string())));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let data = self.dir.path().join(format!("node{id}"));
        let mut server = Server {
            child: None,
            host: ip.to_string(),
            port: free_port(),
            dir: data.clone(),
            log: self.dir.path().join(format!("node{id}.log")),
            args: args.iter().map(|s| s.to_string()).collect(),
            wrap: self.wrap.clone(),
            credentials: None,
            program: self.program.clone(),
        };
        server.spawn_unready();
        Node { id, ip, server, proxy }
    }

    pub fn node(&self, id: u64) -> &Server {
        &self.nodes[&id].server
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Server {
        &mut self.nodes.get_mut(&id).expect("node").server
    }

    /// The node that reports itself leader (among running nodes), if any.
    pub fn leader(&mut self) -> Option<u64> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if !self.node_mut(id).is_running() {
                continue;
            }
            if let Some(status) = self.status(id) {
                if status["state"] == "Leader" {
                    return Some(id);
                }
            }
        }
        None
    }

    /// A node other than `old` that reports itself leader, if any.
    pub fn other_leader(&self, old: u64) -> Option<u64> {
        self.nodes
            .keys()
            .copied()
            .find(|id| *id != old && self.status(*id).is_some_and(|s| s["state"] == "Leader"))
    }

    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let r = super::client()
            .get(self.node(id).url("/api/v1/cluster/status"))
            .timeout(Duration::from_secs(2))
            .send()
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.text().ok()?).ok()?;
        Some(v["data"].clone())
    }

    pub fn wait_leader(&mut self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Cuts node `id` off from every other node, both ways.
    pub fn isolate(&self, id: u64, cut: bool) {
        let ip = node_ip(id);
        for node in self.nodes.values() {
            if node.id == id {
                node.proxy.set_down(cut);
            } else {
                node.proxy.set_blocked(ip, cut);
            }
        }
    }

    /// Waits until `id`'s pushed exposition equals `want`.
    pub fn wait_converged(&self, id: u64, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let r = super::client()
                .get(self.node(id).url("/metrics?consistency=stale"))
                .send();
            if let Ok(r) = r {
                if let Ok(text) = r.text() {
                    if super::own_lines_removed(&text) == want {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not converge within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Restarts every node in turn, the followers first and the leader last
    /// (it hands leadership over when it stops), with `change` applied to
    /// each node's process before it starts again (see `restart_node`).
    pub fn rolling_restart(&mut self, pushers: &Pushers, mut change: impl FnMut(u64, &mut Server)) {
        let first_leader = self.wait_leader(Duration::from_secs(10));
        let mut order: Vec<u64> = self.nodes.keys().copied().filter(|id| *id != first_leader).collect();
        order.push(first_leader);
        for id in order {
            self.restart_node(pushers, id, &mut change);
        }
    }

    /// Stops node `id` with SIGTERM, applies `change` to its process and
    /// starts it again. `pushers` stay off the node while it is down. The
    /// node must exit cleanly, be ready again and catch up (lag under 50
    /// entries) before this returns.
    pub fn restart_node(&mut self, pushers: &Pushers, id: u64, change: impl FnOnce(u64, &mut Server)) {
        let url = self.node(id).url("");
        pushers.avoid(&url);
        // Requests already sent to it get their answers before it stops.
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        assert_eq!(
            self.node_mut(id).terminate(),
            Some(0),
            "node {id} exits cleanly on SIGTERM"
        );
        change(id, self.node_mut(id));
        self.node_mut(id).spawn();
        eprintln!("node {id} restarted in {:?}", t0.elapsed());
        pushers.include(&url);
        self.wait_caught_up(id, Duration::from_secs(20));
        std::thread::sleep(Duration::from_secs(1));
    }

    /// Waits until the leader reports node `id` less than 50 entries behind.
    pub fn wait_caught_up(&mut self, id: u64, timeout: Duration) {
        let leader = self.wait_leader(Duration::from_secs(10));
        let deadline = Instant::now() + timeout;
        loop {
            let lag = self
                .status(leader)
                .and_then(|s| s["replication_lag"][id.to_string()].as_u64());
            if lag.is_some_and(|l| l < 50) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not catch up within {timeout:?}: lag {lag:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
