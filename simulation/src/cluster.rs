//! One simulated run: three real pushgate nodes on turmoil hosts, clients that
//! push and scrape through random nodes, and the scenario's faults.

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;
use pushgate::cluster::Environment;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::net::{self, Answer, Simulated};
use crate::scenario::{Fault, Scenario, FAULTS_END};

pub const NODES: [&str; 3] = ["n1", "n2", "n3"];
const CLIENTS: usize = 3;
const HTTP_PORT: u16 = 9091;
const RAFT_PORT: u16 = 9092;
/// Once faults have healed, a push must succeed within this (liveness).
pub const LIVENESS_BOUND: Duration = Duration::from_secs(15);

/// What a client asked.
#[derive(Clone, Debug)]
pub enum Request {
    /// PUT of `sim_value{client=..} value` to the client's own group.
    Put { group: usize, value: u64 },
    /// GET /metrics.
    Scrape,
    /// GET /metrics on every node once faults have healed.
    FinalScrape,
}

/// One operation of the client history, in simulated time.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub node: &'static str,
    pub request: Request,
    pub start: Duration,
    pub end: Duration,
    /// The answer, or why there was none (the outcome is then unknown).
    pub answer: Result<Answer, String>,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.answer {
            Ok(a) => format!("{} index={:?}", a.status, a.log_index),
            Err(e) => format!("no answer ({e})"),
        };
        write!(
            f,
            "[{:>8.3}s..{:>8.3}s] c{} -> {} {:?}: {outcome}",
            self.start.as_secs_f64(),
            self.end.as_secs_f64(),
            self.client,
            self.node,
            self.request
        )
    }
}

/// A node that said it was the leader of a term (from its cluster status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderClaim {
    pub term: u64,
    pub node_id: u64,
}

/// Everything a run produced, for the checker.
pub struct Report {
    pub faults: u64,
    pub history: Vec<Op>,
    /// Every leadership claim the observer saw, in order.
    pub leaders: Vec<LeaderClaim>,
    /// Whether the liveness push after the faults succeeded in time.
    pub live: bool,
}

type History = Rc<RefCell<Vec<Op>>>;

fn now() -> Duration {
    turmoil::elapsed()
}

fn node_flags(id: usize, dir: &std::path::Path) -> Result<pushgate::config::ServerFlags, String> {
    let peers: Vec<String> = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}={n}:{RAFT_PORT}", i + 1))
        .collect();
    let args = [
        "pushgate".to_string(),
        format!("--web.listen-address=0.0.0.0:{HTTP_PORT}"),
        format!("--storage.path={}", dir.display()),
        format!("--cluster.node-id={}", id + 1),
        format!("--cluster.listen-address=0.0.0.0:{RAFT_PORT}"),
        format!("--cluster.advertise-address={}:{RAFT_PORT}", NODES[id]),
        format!("--cluster.peers={}", peers.join(",")),
        "--web.enable-admin-api".to_string(),
    ];
    pushgate::config::Cli::try_parse_from(args)
        .map(|c| c.server)
        .map_err(|e| e.to_string())
}

/// The simulated wall clock, for the leader's push timestamps.
fn sim_clock() -> pushgate::cluster::Clock {
    Arc::new(|| turmoil::since_epoch().map_or(0, |d| d.as_nanos() as i64))
}

fn body(client: usize, value: u64) -> String {
    format!("# TYPE sim_value gauge\nsim_value{{client=\"{client}\"}} {value}\n")
}

async fn record(
    history: &History,
    client: usize,
    node: &'static str,
    request: Request,
    method: &str,
    path: &str,
    body: &str,
) -> Result<Answer, String> {
    let start = now();
    let answer = net::request(node, HTTP_PORT, method, path, body)
        .await
        .map_err(|e| e.to_string());
    history.borrow_mut().push(Op {
        client,
        node,
        request,
        start,
        end: now(),
        answer: answer.clone(),
    });
    answer
}

/// Asks every node for its cluster status; records every node that says it
/// leads, and returns the leader of the highest term reported.
async fn observe_leaders(claims: &RefCell<Vec<LeaderClaim>>) -> Option<&'static str> {
    let mut best: Option<(u64, u64)> = None;
    for node in NODES {
        let Ok(a) = net::request(node, HTTP_PORT, "GET", "/api/v1/cluster/status", "").await else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&a.body) else {
            continue;
        };
        let status = &v["data"];
        let (Some(term), Some(node_id)) = (status["term"].as_u64(), status["node_id"].as_u64()) else {
            continue;
        };
        if status["state"].as_str() == Some("Leader") {
            claims.borrow_mut().push(LeaderClaim { term, node_id });
        }
        if let Some(leader) = status["leader_id"].as_u64() {
            if best.is_none_or(|(t, _)| term > t) {
                best = Some((term, leader));
            }
        }
    }
    best.and_then(|(_, id)| NODES.get(id.checked_sub(1)? as usize).copied())
}

/// Runs `scenario` with `seed` and returns the history.
pub fn run(scenario: Scenario, seed: u64) -> Report {
    // Every host runs on this thread: blocking work inline, Raft's randomness
    // (election timeouts, cluster id) from the seed.
    pushgate::blocking::run_inline_on_this_thread();
    pushgate::cluster::runtime::reseed(seed);
    let data = tempfile::tempdir().expect("a temporary directory for the nodes' data");
    let dirs: Vec<PathBuf> = NODES.iter().map(|n| data.path().join(n)).collect();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .simulation_duration(Duration::from_secs(120))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .tcp_capacity(65536)
        .build();

    for (i, name) in NODES.iter().enumerate() {
        let dir = dirs[i].clone();
        sim.host(*name, move || {
            let dir = dir.clone();
            async move {
                let flags = node_flags(i, &dir)?;
                let env = Environment {
                    clock: sim_clock(),
                    transport: Arc::new(Simulated),
                };
                pushgate::server::serve(flags, env, std::future::pending()).await?;
                Ok(())
            }
        });
    }

    let history: History = Rc::new(RefCell::new(Vec::new()));
    let leader: Rc<RefCell<Option<&'static str>>> = Rc::new(RefCell::new(None));
    let claims: Rc<RefCell<Vec<LeaderClaim>>> = Rc::new(RefCell::new(Vec::new()));
    let live = Rc::new(RefCell::new(false));

    // Observer: keeps track of the leader (for leader-directed faults) and of
    // every leadership claim (for the election-safety check).
    {
        let leader = leader.clone();
        let claims = claims.clone();
        sim.client("observer", async move {
            while now() < FAULTS_END + LIVENESS_BOUND {
                if let Some(l) = observe_leaders(&claims).await {
                    *leader.borrow_mut() = Some(l);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(())
        });
    }

    for client in 0..CLIENTS {
        let history = history.clone();
        let live = live.clone();
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(client as u64));
        sim.client(format!("c{client}"), async move {
            // Let the cluster elect its first leader.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut value = 0u64;
            while now() < FAULTS_END {
                let node = NODES[rng.gen_range(0..NODES.len())];
                if rng.gen_bool(0.6) {
                    value += 1;
                    let path = format!("/metrics/job/sim/client/{client}");
                    let request = Request::Put { group: client, value };
                    let _ = record(&history, client, node, request, "PUT", &path, &body(client, value)).await;
                } else {
                    let _ = record(&history, client, node, Request::Scrape, "GET", "/metrics", "").await;
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(10..200))).await;
            }
            // Liveness: once faults stop, a push succeeds within the bound.
            let deadline = now() + LIVENESS_BOUND;
            while now() < deadline {
                value += 1;
                let node = NODES[rng.gen_range(0..NODES.len())];
                let path = format!("/metrics/job/sim/client/{client}");
                let request = Request::Put { group: client, value };
                if let Ok(a) = record(&history, client, node, request, "PUT", &path, &body(client, value)).await {
                    if a.status == 200 {
                        *live.borrow_mut() = true;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(())
        });
    }

    // The final scrapes, after every client is done: one per node.
    {
        let history = history.clone();
        sim.client("final", async move {
            tokio::time::sleep(FAULTS_END + LIVENESS_BOUND + Duration::from_secs(2)).await;
            for node in NODES {
                let _ = record(&history, CLIENTS, node, Request::FinalScrape, "GET", "/metrics", "").await;
            }
            Ok(())
        });
    }

    let mut schedule = scenario.schedule().into_iter().peekable();
    let mut crashed: Option<&'static str> = None;
    // The node cut off, and whether only its outgoing direction is.
    let mut isolated: Option<(&'static str, bool)> = None;
    let mut fault_rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut faults = 0;
    loop {
        while let Some((at, _)) = schedule.peek() {
            if sim.elapsed() < *at {
                break;
            }
            let Some((_, fault)) = schedule.next() else { break };
            faults += 1;
            let current = *leader.borrow();
            match fault {
                Fault::CrashLeader => {
                    let victim = current.unwrap_or(NODES[0]);
                    sim.crash(victim);
                    crashed = Some(victim);
                }
                Fault::RestartCrashed => {
                    if let Some(victim) = crashed.take() {
                        sim.bounce(victim);
                    }
                }
                Fault::IsolateLeader | Fault::IsolateFollower | Fault::MuteLeader => {
                    let one_way = matches!(fault, Fault::MuteLeader);
                    let victim = match fault {
                        Fault::IsolateLeader | Fault::MuteLeader => current.unwrap_or(NODES[0]),
                        _ => {
                            let followers: Vec<_> = NODES.iter().copied().filter(|n| Some(*n) != current).collect();
                            followers[fault_rng.gen_range(0..followers.len())]
                        }
                    };
                    for other in NODES.iter().filter(|n| **n != victim) {
                        if one_way {
                            sim.partition_oneway(victim, *other);
                        } else {
                            sim.partition(victim, *other);
                        }
                    }
                    isolated = Some((victim, one_way));
                }
                Fault::Heal => {
                    if let Some((victim, one_way)) = isolated.take() {
                        for other in NODES.iter().filter(|n| **n != victim) {
                            if one_way {
                                sim.repair_oneway(victim, *other);
                            } else {
                                sim.repair(victim, *other);
                            }
                        }
                    }
                }
                Fault::SlowNetwork => sim.set_max_message_latency(Duration::from_millis(800)),
                Fault::LoseMessages => sim.set_fail_rate(0.02),
                Fault::NormalNetwork => {
                    sim.set_max_message_latency(Duration::from_millis(10));
                    sim.set_fail_rate(0.0);
                }
            }
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                history.borrow_mut().push(Op {
                    client: usize::MAX,
                    node: "sim",
                    request: Request::Scrape,
                    start: sim.elapsed(),
                    end: sim.elapsed(),
                    answer: Err(format!("simulation error: {e}")),
                });
                break;
            }
        }
    }
    drop(sim);
    let history = history.borrow().clone();
    let live = *live.borrow();
    let leaders = claims.borrow().clone();
    Report {
        faults,
        history,
        leaders,
        live,
    }
}
