//! One simulated run: three or five real pushgate nodes on turmoil hosts,
//! clients that push, delete, wipe and scrape through random nodes, an
//! operator that replaces a lost node, and the scenario's faults.

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;
use pushgate::cluster::Environment;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::Mutation;
use crate::net::{self, Answer, Simulated};
use crate::scenario::{Fault, Scenario, FAULTS_END};

/// Host names: node id `k` runs on `HOSTS[k - 1]`. The last ones are spares
/// for replacements.
pub const HOSTS: [&str; 6] = ["n1", "n2", "n3", "n4", "n5", "n6"];
/// Clients that push to their own and their neighbour's group and scrape.
const CLIENTS: usize = 3;
/// Of a client's mutations, the percentage that go to its neighbour's group.
const NEIGHBOUR_PERCENT: u32 = 30;
/// The client id of the final scrapes in the history.
const FINAL: usize = CLIENTS;
/// The client id of the wipes in the history.
const ADMIN: usize = CLIENTS + 1;
const HTTP_PORT: u16 = 9091;
const RAFT_PORT: u16 = 9092;
/// Once faults have healed, a push must succeed within this (liveness).
pub const LIVENESS_BOUND: Duration = Duration::from_secs(15);

/// What a client asked. Client `c` mutates group `c` (its own) and group
/// `c + 1` (its neighbour's, shared with that group's own client), so two
/// clients write every group: an acknowledged mutation applied twice would
/// then undo the other client's acknowledged mutation in between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// PUT of `sim_value` to a group (replaces the group).
    Put { group: usize, value: u64 },
    /// POST of `sim_post` to a group (replaces that family).
    Post { group: usize, value: u64 },
    /// DELETE of a group.
    Delete { group: usize },
    /// PUT of a sample with a timestamp to a group: apply rejects it (400)
    /// and records the group's failure time.
    Reject { group: usize },
    /// `PUT /api/v1/admin/wipe`.
    Wipe,
    /// GET /metrics.
    Scrape,
    /// GET /api/v1/metrics.
    ApiScrape,
    /// GET /metrics on every node once faults have healed.
    FinalScrape,
}

impl Request {
    /// The status of an answer that says the mutation was applied.
    pub fn applied_status(&self) -> Option<u16> {
        match self {
            Request::Put { .. } | Request::Post { .. } => Some(200),
            Request::Delete { .. } | Request::Wipe => Some(202),
            Request::Reject { .. } => Some(400),
            Request::Scrape | Request::ApiScrape | Request::FinalScrape => None,
        }
    }

    /// The change this request asks for, if it is a mutation.
    pub fn mutation(&self) -> Option<Mutation> {
        match *self {
            Request::Put { group, value } => Some(Mutation::Put { group, value }),
            Request::Post { group, value } => Some(Mutation::Post { group, value }),
            Request::Delete { group } => Some(Mutation::Delete { group }),
            Request::Reject { group } => Some(Mutation::Reject { group }),
            Request::Wipe => Some(Mutation::Wipe),
            Request::Scrape | Request::ApiScrape | Request::FinalScrape => None,
        }
    }

    pub fn is_read(&self) -> bool {
        self.mutation().is_none()
    }

    /// Method, path and body of the HTTP request.
    fn http(&self) -> (&'static str, String, String) {
        match *self {
            Request::Put { group, value } => (
                "PUT",
                format!("/metrics/job/sim/client/{group}"),
                format!("# TYPE sim_value gauge\nsim_value{{client=\"{group}\"}} {value}\n"),
            ),
            Request::Post { group, value } => (
                "POST",
                format!("/metrics/job/sim/client/{group}"),
                format!("# TYPE sim_post gauge\nsim_post {value}\n"),
            ),
            Request::Delete { group } => ("DELETE", format!("/metrics/job/sim/client/{group}"), String::new()),
            Request::Reject { group } => (
                "PUT",
                format!("/metrics/job/sim/client/{group}"),
                "sim_value 1 1700000000000\n".to_string(),
            ),
            Request::Wipe => ("PUT", "/api/v1/admin/wipe".into(), String::new()),
            Request::Scrape | Request::FinalScrape => ("GET", "/metrics".into(), String::new()),
            Request::ApiScrape => ("GET", "/api/v1/metrics".into(), String::new()),
        }
    }
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
            // A 5xx says why (which node it waited for, and how long).
            Ok(a) if a.status >= 500 => format!("{} index={:?} ({})", a.status, a.log_index, a.body.trim()),
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
    /// What the operator did (membership changes), with their answers.
    pub operations: Vec<String>,
    /// Each member at the end: `host applied=INDEX digest=HEX`, the digest
    /// covering every entry that node's process applied.
    pub applied: Vec<String>,
    /// Where every fault is a graceful stop and restart: each node's window
    /// (host, from its stop to two seconds after its restart). No other
    /// node may refuse anything meanwhile (a stopping leader hands over).
    pub graceful: Option<Vec<(&'static str, Duration, Duration)>>,
}

type History = Rc<RefCell<Vec<Op>>>;
/// The hosts of the cluster's current members (the operator and the final
/// scrapes use them; a node whose disk was lost leaves, its replacement
/// joins). Clients and the observer ask a list of the same type that also
/// keeps nodes removed while cut off: they still run and must not answer
/// as members.
type Members = Rc<RefCell<Vec<&'static str>>>;

fn now() -> Duration {
    turmoil::elapsed()
}

fn host_of(id: usize) -> &'static str {
    HOSTS[id - 1]
}

/// The index in `HOSTS` of `host`.
fn host_index(host: &str) -> usize {
    HOSTS.iter().position(|h| *h == host).unwrap_or(0)
}

fn node_flags(id: usize, peers: &[usize], dir: &std::path::Path) -> Result<pushgate::config::ServerFlags, String> {
    let peers: Vec<String> = peers
        .iter()
        .map(|p| format!("{p}={}:{RAFT_PORT}", host_of(*p)))
        .collect();
    let args = [
        "pushgate".to_string(),
        format!("--web.listen-address=0.0.0.0:{HTTP_PORT}"),
        format!("--storage.path={}", dir.display()),
        format!("--cluster.node-id={id}"),
        format!("--cluster.listen-address=0.0.0.0:{RAFT_PORT}"),
        format!("--cluster.advertise-address={}:{RAFT_PORT}", host_of(id)),
        format!("--cluster.peers={}", peers.join(",")),
        "--web.enable-admin-api".to_string(),
        // Every node of a run shares this process, and a real-time watchdog
        // that exits it has no place in simulated time.
        "--storage.stall-timeout=0".to_string(),
    ];
    pushgate::config::Cli::try_parse_from(args)
        .map(|c| c.server)
        .map_err(|e| e.to_string())
}

/// How far each host's wall clock is off the simulation's (ns), by host
/// index; faults move them. Kept across a host's restarts, like a machine's.
type ClockOffsets = Arc<[AtomicI64; HOSTS.len()]>;

/// Per host, whether its node was asked to stop gracefully (as by SIGTERM);
/// cleared before it is started again.
type StopRequests = Arc<[AtomicBool; HOSTS.len()]>;

/// The simulated wall clock of host `index`, for the leader's push timestamps.
fn sim_clock(offsets: ClockOffsets, index: usize) -> pushgate::cluster::Clock {
    Arc::new(move || turmoil::since_epoch().map_or(0, |d| d.as_nanos() as i64) + offsets[index].load(Ordering::Relaxed))
}

/// Starts node `id` (knowing `peers`) on its host, with its data in `dir`.
fn start_node(
    sim: &mut turmoil::Sim<'_>,
    id: usize,
    peers: Vec<usize>,
    dir: PathBuf,
    (clocks, stops): (&ClockOffsets, &StopRequests),
) {
    let (clocks, stops) = (clocks.clone(), stops.clone());
    sim.host(host_of(id), move || {
        let dir = dir.clone();
        let peers = peers.clone();
        let clock = sim_clock(clocks.clone(), id - 1);
        let stops = stops.clone();
        let stop = async move {
            while !stops[id - 1].load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        async move {
            let flags = node_flags(id, &peers, &dir)?;
            let env = Environment {
                clock,
                transport: Arc::new(Simulated),
            };
            pushgate::server::serve(flags, env, stop).await?;
            Ok(())
        }
    });
}

async fn record(history: &History, client: usize, node: &'static str, request: Request) -> Result<Answer, String> {
    let start = now();
    let (method, path, body) = request.http();
    let answer = net::request(node, HTTP_PORT, method, &path, &body)
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

fn pick(members: &Members, rng: &mut StdRng) -> &'static str {
    let members = members.borrow();
    members[rng.gen_range(0..members.len())]
}

/// Asks every member for its cluster status; records every node that says it
/// leads, and returns the leader of the highest term reported.
async fn observe_leaders(members: &Members, claims: &RefCell<Vec<LeaderClaim>>) -> Option<&'static str> {
    let mut best: Option<(u64, u64)> = None;
    let hosts = members.borrow().clone();
    for node in hosts {
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
    best.and_then(|(_, id)| HOSTS.get((id as usize).checked_sub(1)?).copied())
}

/// A membership change the operator carries out: remove a node's id (one
/// that was lost or cut off), then add nodes in turn, either or both.
#[derive(Clone)]
struct Replacement {
    lost: Option<usize>,
    new: Vec<usize>,
}

/// The operator: retries each step of a replacement until it succeeds, as
/// the README tells an operator to.
async fn operate(members: Members, task: Rc<RefCell<Option<Replacement>>>, log: Rc<RefCell<Vec<String>>>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x09e7);
    while now() < FAULTS_END + LIVENESS_BOUND {
        let Some(Replacement { lost, new }) = task.borrow().clone() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let remove = lost.map(|lost| ("DELETE", format!("/api/v1/cluster/members/{lost}"), String::new()));
        let add = new.iter().map(|new| {
            (
                "POST",
                "/api/v1/cluster/members".to_string(),
                format!("{{\"node_id\": {new}, \"address\": \"{}:{RAFT_PORT}\"}}", host_of(*new)),
            )
        });
        for (method, path, body) in remove.into_iter().chain(add) {
            loop {
                let node = pick(&members, &mut rng);
                let start = now();
                let answer = net::request(node, HTTP_PORT, method, &path, &body).await;
                let outcome = match &answer {
                    Ok(a) => format!("{} {}", a.status, a.body.trim()),
                    Err(e) => format!("no answer ({e})"),
                };
                log.borrow_mut().push(format!(
                    "[{:>8.3}s..{:>8.3}s] operator -> {node} {method} {path}: {outcome}",
                    start.as_secs_f64(),
                    now().as_secs_f64()
                ));
                // Done, or done already by an earlier attempt whose answer
                // was lost (a retried add finds the node a voter, a retried
                // remove finds it gone).
                let done = answer.is_ok_and(|a| {
                    a.status == 200
                        || (a.status == 409 && a.body.contains("already a voter"))
                        || (a.status == 404 && a.body.contains("is not a member"))
                });
                if done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        *task.borrow_mut() = None;
    }
}

/// `pushgate cluster recover --force` on the stopped node whose data is in
/// `dir`, as the operator runs it; returns what it printed, or why it failed.
fn recover_offline(dir: &std::path::Path) -> String {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return format!("no runtime: {e}"),
    };
    // The crashed node's log lets go of sled's file lock once its deferred
    // garbage has been collected (the node is stopped; this only waits for that).
    if !wait_for_sled_to_let_go(dir) {
        return "failed: the crashed node's log kept its file lock".into();
    }
    let outcome = match runtime.block_on(pushgate::cluster::recover::recover(dir, None, true)) {
        Ok(recovery) => {
            let text = recovery.to_string();
            text.lines()
                .find(|l| l.starts_with("recovered"))
                .unwrap_or(&text)
                .to_string()
        }
        Err(e) => return format!("failed: {e}"),
    };
    // The recovery's own log is garbage of the same kind: the node restarts
    // right after, as a real operator's would once the command exited.
    if !wait_for_sled_to_let_go(dir) {
        return format!("{outcome}; but the recovery's log kept its file lock");
    }
    outcome
}

/// Waits, a bounded time, until no dropped sled handle still holds the file
/// lock of `dir`'s Raft log. sled drops a database through crossbeam-epoch's
/// global collector, which every simulation running on another thread of
/// this process (`--jobs`) delays while it holds an epoch pinned.
fn wait_for_sled_to_let_go(dir: &std::path::Path) -> bool {
    let db = dir.join("raft-log").join("db");
    for _ in 0..500 {
        let free = match std::fs::File::open(&db) {
            // The lock sled takes on this file, through the same crate.
            Ok(file) => fs2::FileExt::try_lock_exclusive(&file).is_ok(),
            Err(_) => true,
        };
        if free {
            return true;
        }
        crossbeam_epoch::pin().flush();
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Runs `scenario` with `seed` and returns the history.
pub fn run(scenario: Scenario, seed: u64) -> Report {
    // Every host runs on this thread: blocking work inline, Raft's randomness
    // (election timeouts, cluster id) from the seed.
    pushgate::blocking::run_inline_on_this_thread();
    pushgate::cluster::runtime::reseed(seed);
    let data = tempfile::tempdir().expect("a temporary directory for the nodes' data");
    let dirs: Vec<PathBuf> = HOSTS.iter().map(|n| data.path().join(n)).collect();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .simulation_duration(Duration::from_secs(120))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .tcp_capacity(65536)
        .build();

    let voters: Vec<usize> = (1..=scenario.nodes()).collect();
    let clocks: ClockOffsets = Arc::new(std::array::from_fn(|_| AtomicI64::new(0)));
    let stops: StopRequests = Arc::new(std::array::from_fn(|_| AtomicBool::new(false)));
    for id in &voters {
        start_node(&mut sim, *id, voters.clone(), dirs[id - 1].clone(), (&clocks, &stops));
    }
    let members: Members = Rc::new(RefCell::new(voters.iter().map(|id| host_of(*id)).collect()));
    let askable: Members = Rc::new(RefCell::new(members.borrow().clone()));

    let history: History = Rc::new(RefCell::new(Vec::new()));
    let leader: Rc<RefCell<Option<&'static str>>> = Rc::new(RefCell::new(None));
    let claims: Rc<RefCell<Vec<LeaderClaim>>> = Rc::new(RefCell::new(Vec::new()));
    let live = Rc::new(RefCell::new(false));
    let replacement: Rc<RefCell<Option<Replacement>>> = Rc::new(RefCell::new(None));
    let operations: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));
    let applied: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));

    // Observer: keeps track of the leader (for leader-directed faults) and of
    // every leadership claim (for the election-safety check).
    {
        let (leader, claims, askable) = (leader.clone(), claims.clone(), askable.clone());
        sim.client("observer", async move {
            while now() < FAULTS_END + LIVENESS_BOUND {
                if let Some(l) = observe_leaders(&askable, &claims).await {
                    *leader.borrow_mut() = Some(l);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(())
        });
    }
    {
        let (members, replacement, operations) = (members.clone(), replacement.clone(), operations.clone());
        sim.client("operator", async move {
            operate(members, replacement, operations, seed).await;
            Ok(())
        });
    }

    for client in 0..CLIENTS {
        let (history, live, askable) = (history.clone(), live.clone(), askable.clone());
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(client as u64));
        sim.client(format!("c{client}"), async move {
            // Let the cluster elect its first leader.
            tokio::time::sleep(Duration::from_secs(2)).await;
            // Values are unique across clients (client `c` writes
            // `c`, `c + CLIENTS`, ...), so a value names the push that wrote it.
            let mut counter = 0u64;
            let mut next_value = move || {
                counter += 1;
                counter * CLIENTS as u64 + client as u64
            };
            while now() < FAULTS_END {
                let node = pick(&askable, &mut rng);
                let group = if rng.gen_range(0..100) < NEIGHBOUR_PERCENT {
                    (client + 1) % CLIENTS
                } else {
                    client
                };
                let request = match rng.gen_range(0..100) {
                    0..35 => Request::Put {
                        group,
                        value: next_value(),
                    },
                    35..50 => Request::Post {
                        group,
                        value: next_value(),
                    },
                    50..54 => Request::Delete { group },
                    54..57 => Request::Reject { group },
                    57..85 => Request::Scrape,
                    _ => Request::ApiScrape,
                };
                let _ = record(&history, client, node, request).await;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(10..200))).await;
            }
            // Liveness: once faults stop, a push succeeds within the bound.
            let deadline = now() + LIVENESS_BOUND;
            while now() < deadline {
                let node = pick(&askable, &mut rng);
                let request = Request::Put {
                    group: client,
                    value: next_value(),
                };
                if let Ok(a) = record(&history, client, node, request).await {
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

    // An administrator wipes the whole store now and then.
    {
        let (history, askable) = (history.clone(), askable.clone());
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(ADMIN as u64));
        sim.client("admin", async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            // The last wipe well before the liveness pushes, so the final
            // scrapes still show what was acknowledged last.
            loop {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1500..4000))).await;
                if now() + Duration::from_secs(2) >= FAULTS_END {
                    break;
                }
                let node = pick(&askable, &mut rng);
                let _ = record(&history, ADMIN, node, Request::Wipe).await;
            }
            Ok(())
        });
    }

    // The final scrapes, after every client is done: one per member.
    {
        let (history, members, applied) = (history.clone(), members.clone(), applied.clone());
        sim.client("final", async move {
            tokio::time::sleep(FAULTS_END + LIVENESS_BOUND + Duration::from_secs(2)).await;
            let hosts = members.borrow().clone();
            for node in &hosts {
                let _ = record(&history, FINAL, node, Request::FinalScrape).await;
            }
            for node in hosts {
                let line = match net::request(node, HTTP_PORT, "GET", "/api/v1/cluster/status", "").await {
                    Ok(a) => match serde_json::from_str::<serde_json::Value>(&a.body) {
                        Ok(v) => format!(
                            "{node} applied={} digest={}",
                            v["data"]["applied_index"],
                            v["data"]["applied_digest"].as_str().unwrap_or("?")
                        ),
                        Err(e) => format!("{node} status unreadable: {e}"),
                    },
                    Err(e) => format!("{node} status: no answer ({e})"),
                };
                applied.borrow_mut().push(line);
            }
            Ok(())
        });
    }

    let mut schedule = scenario.schedule(seed).into_iter().peekable();
    let mut crashed: Vec<&'static str> = Vec::new();
    // Nodes stopped gracefully and not started again yet; every node stopped
    // so far; and each stop's window (from the stop until two seconds after
    // the restart).
    let mut stopped: Vec<&'static str> = Vec::new();
    let mut rolled: Vec<&'static str> = Vec::new();
    let mut graceful: Vec<(&'static str, Duration, Duration)> = Vec::new();
    // Those of them whose process has exited; whether to start them again
    // once they have.
    let mut exited: Vec<&'static str> = Vec::new();
    let mut restart_stopped = false;
    // Partitioned host pairs, and whether only the first's messages to the
    // second are dropped.
    let mut cuts: Vec<(&'static str, &'static str, bool)> = Vec::new();
    // The id of the node whose disk was lost, or that was cut off, until it
    // is replaced.
    let mut lost: Option<usize> = None;
    let mut isolated: Option<&'static str> = None;
    // The hosts whose disks were lost with a majority, until they are added back.
    let mut lost_for_good: Vec<&'static str> = Vec::new();
    let mut fault_rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut faults = 0;
    loop {
        while let Some((at, _)) = schedule.peek() {
            if sim.elapsed() < *at {
                break;
            }
            let Some((_, fault)) = schedule.next() else { break };
            faults += 1;
            let hosts = members.borrow().clone();
            let current = leader.borrow().filter(|l| hosts.contains(l)).unwrap_or(hosts[0]);
            let followers: Vec<&'static str> = hosts
                .iter()
                .copied()
                .filter(|n| *n != current && !crashed.contains(n))
                .collect();
            let mut pick_follower = || followers[fault_rng.gen_range(0..followers.len())];
            match fault {
                Fault::CrashLeader => {
                    sim.crash(current);
                    crashed.push(current);
                }
                Fault::CrashFollower => {
                    let victim = pick_follower();
                    sim.crash(victim);
                    crashed.push(victim);
                }
                Fault::CrashAll => {
                    for victim in hosts
                        .iter()
                        .copied()
                        .filter(|h| !crashed.contains(h))
                        .collect::<Vec<_>>()
                    {
                        sim.crash(victim);
                        crashed.push(victim);
                    }
                }
                Fault::RestartCrashed => {
                    for victim in crashed.drain(..) {
                        sim.bounce(victim);
                    }
                }
                Fault::StopLeader | Fault::StopFollower => {
                    let victim = match fault {
                        Fault::StopLeader => current,
                        _ => match followers.iter().find(|f| !rolled.contains(f)) {
                            Some(f) => *f,
                            None => continue,
                        },
                    };
                    stops[host_index(victim)].store(true, Ordering::Relaxed);
                    stopped.push(victim);
                    rolled.push(victim);
                    graceful.push((victim, sim.elapsed(), Duration::MAX));
                }
                Fault::RestartStopped => restart_stopped = true,
                Fault::Split { with_leader } => {
                    if with_leader == 1 {
                        isolated = Some(current);
                    }
                    let mut side = vec![current];
                    let mut others = followers.clone();
                    while side.len() < with_leader && !others.is_empty() {
                        side.push(others.remove(fault_rng.gen_range(0..others.len())));
                    }
                    for a in &side {
                        for b in hosts.iter().filter(|h| !side.contains(h)) {
                            sim.partition(*a, *b);
                            cuts.push((a, b, false));
                        }
                    }
                }
                Fault::IsolateFollower => {
                    let victim = pick_follower();
                    isolated = Some(victim);
                    for other in hosts.iter().filter(|h| **h != victim) {
                        sim.partition(victim, *other);
                        cuts.push((victim, other, false));
                    }
                }
                Fault::IsolateAdded => {
                    let victim = host_of(voters.len() + 1);
                    for other in hosts.iter().filter(|h| **h != victim) {
                        sim.partition(victim, *other);
                        cuts.push((victim, other, false));
                    }
                }
                Fault::MuteLeader => {
                    for other in hosts.iter().filter(|h| **h != current) {
                        sim.partition_oneway(current, *other);
                        cuts.push((current, other, true));
                    }
                }
                Fault::Heal => {
                    for (a, b, one_way) in cuts.drain(..) {
                        if one_way {
                            sim.repair_oneway(a, b);
                        } else {
                            sim.repair(a, b);
                        }
                    }
                }
                Fault::SlowNetwork => sim.set_max_message_latency(Duration::from_millis(800)),
                Fault::LoseMessages => sim.set_fail_rate(0.02),
                Fault::NormalNetwork => {
                    sim.set_max_message_latency(Duration::from_millis(10));
                    sim.set_fail_rate(0.0);
                }
                Fault::LoseDisk => {
                    let victim = pick_follower();
                    sim.crash(victim);
                    let id = host_index(victim) + 1;
                    let _ = std::fs::remove_dir_all(&dirs[id - 1]);
                    members.borrow_mut().retain(|h| *h != victim);
                    askable.borrow_mut().retain(|h| *h != victim);
                    lost = Some(id);
                }
                Fault::LoseFollowerDisks => {
                    for victim in &followers {
                        sim.crash(*victim);
                        let _ = std::fs::remove_dir_all(&dirs[host_index(victim)]);
                        members.borrow_mut().retain(|h| h != victim);
                        askable.borrow_mut().retain(|h| h != victim);
                        lost_for_good.push(*victim);
                    }
                }
                Fault::RecoverLeader => {
                    sim.crash(current);
                    let outcome = recover_offline(&dirs[host_index(current)]);
                    operations.borrow_mut().push(format!(
                        "[{:>8.3}s] operator -> cluster recover --force on {current}: {outcome}",
                        sim.elapsed().as_secs_f64()
                    ));
                    sim.bounce(current);
                }
                Fault::AddBackLost => {
                    // The same ids on the same hosts, with empty directories:
                    // new to the recovered cluster.
                    for host in lost_for_good.iter().copied() {
                        sim.bounce(host);
                        members.borrow_mut().push(host);
                        askable.borrow_mut().push(host);
                    }
                    *replacement.borrow_mut() = Some(Replacement {
                        lost: None,
                        new: lost_for_good.drain(..).map(|h| host_index(h) + 1).collect(),
                    });
                }
                Fault::FollowerClocksBack(secs) => {
                    for follower in &followers {
                        clocks[host_index(follower)].fetch_sub(secs * 1_000_000_000, Ordering::Relaxed);
                    }
                }
                Fault::LeaderClockBack(secs) => {
                    clocks[host_index(current)].fetch_sub(secs * 1_000_000_000, Ordering::Relaxed);
                }
                Fault::ReplaceLost | Fault::ReplaceIsolated => {
                    let lost = match fault {
                        Fault::ReplaceLost => lost.take(),
                        _ => isolated.map(|host| host_index(host) + 1),
                    };
                    let Some(lost) = lost else { continue };
                    let new = voters.len() + 1;
                    let mut peers: Vec<usize> = voters.iter().copied().filter(|v| *v != lost).collect();
                    peers.push(new);
                    start_node(&mut sim, new, peers, dirs[new - 1].clone(), (&clocks, &stops));
                    // A node replaced while cut off keeps running: clients
                    // may still ask it, nothing else treats it as a member.
                    members.borrow_mut().retain(|h| *h != host_of(lost));
                    members.borrow_mut().push(host_of(new));
                    askable.borrow_mut().push(host_of(new));
                    *replacement.borrow_mut() = Some(Replacement {
                        lost: Some(lost),
                        new: vec![new],
                    });
                }
                Fault::RemoveIsolated => {
                    let Some(host) = isolated else { continue };
                    // It keeps running and clients may still ask it.
                    members.borrow_mut().retain(|h| *h != host);
                    *replacement.borrow_mut() = Some(Replacement {
                        lost: Some(host_index(host) + 1),
                        new: Vec::new(),
                    });
                }
                Fault::AddNode => {
                    let new = voters.len() + 1;
                    let mut peers = voters.clone();
                    peers.push(new);
                    start_node(&mut sim, new, peers, dirs[new - 1].clone(), (&clocks, &stops));
                    members.borrow_mut().push(host_of(new));
                    askable.borrow_mut().push(host_of(new));
                    *replacement.borrow_mut() = Some(Replacement {
                        lost: None,
                        new: vec![new],
                    });
                }
            }
        }
        // A node stopped gracefully whose software has finished: a real
        // process exits and the kernel closes its sockets, so peers see
        // resets at once. A turmoil host whose software returned keeps its
        // runtime, with the connection tasks frozen (peers would hang, as if
        // it were SIGSTOPped); restarting and crashing it drops them.
        for host in stopped.clone() {
            if !exited.contains(&host) && !sim.is_host_running(host) {
                sim.bounce(host);
                sim.crash(host);
                exited.push(host);
            }
            // Started again once it has exited, as an operator (or
            // Kubernetes) does.
            if restart_stopped && exited.contains(&host) {
                stops[host_index(host)].store(false, Ordering::Relaxed);
                sim.bounce(host);
                if let Some(w) = graceful.iter_mut().rev().find(|w| w.0 == host) {
                    w.2 = sim.elapsed() + Duration::from_secs(2);
                }
                stopped.retain(|h| *h != host);
                exited.retain(|h| *h != host);
            }
        }
        restart_stopped &= !stopped.is_empty();
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
    let operations = operations.borrow().clone();
    let applied = applied.borrow().clone();
    Report {
        faults,
        history,
        leaders,
        live,
        operations,
        applied,
        graceful: scenario.graceful_only().then_some(graceful),
    }
}
