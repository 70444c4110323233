//! Clients that push continuously to whichever nodes a test says are up, and
//! remember the last push of each that was acknowledged, so that a test can
//! check afterwards that no acknowledged push was lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A push that got an answer other than 200.
#[derive(Debug)]
pub struct Refusal {
    pub sent: Instant,
    pub status: u16,
    pub body: String,
}

/// What the pushers saw, once stopped.
pub struct Pushed {
    /// Per pusher, the value of its last acknowledged push.
    pub acked: BTreeMap<usize, u64>,
    /// Every answer other than 200 (connection errors are not counted: they
    /// come from a node being stopped, and are never acknowledged).
    pub refusals: Vec<Refusal>,
}

/// `n` threads; pusher `p` PUTs `<gauge> <v>` to `/metrics/job/<job>/p/<p>`
/// with v = 1, 2, 3, ... on the nodes in its live list, round-robin.
pub struct Pushers {
    live: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<usize, u64>>>,
    refusals: Arc<Mutex<Vec<Refusal>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pushers {
    /// Starts `n` pushers of group `job`, metric `gauge`, on the nodes at `urls`.
    pub fn start(n: usize, job: &str, gauge: &str, urls: Vec<String>) -> Pushers {
        let mut pushers = Pushers {
            live: Arc::new(Mutex::new(urls)),
            stop: Arc::new(AtomicBool::new(false)),
            acked: Arc::default(),
            refusals: Arc::default(),
            threads: Vec::new(),
        };
        for p in 0..n {
            let (live, stop, acked, refusals) = (
                pushers.live.clone(),
                pushers.stop.clone(),
                pushers.acked.clone(),
                pushers.refusals.clone(),
            );
            let (job, gauge) = (job.to_string(), gauge.to_string());
            pushers.threads.push(std::thread::spawn(move || {
                let c = super::client();
                let mut v = 0u64;
                let mut turn = p;
                while !stop.load(Ordering::Relaxed) {
                    v += 1;
                    let base = {
                        let l = live.lock().unwrap();
                        turn += 1;
                        l[turn % l.len()].clone()
                    };
                    let sent = Instant::now();
                    let r = c
                        .put(format!("{base}/metrics/job/{job}/p/{p}"))
                        .body(format!("# TYPE {gauge} gauge\n{gauge} {v}\n"))
                        .timeout(Duration::from_secs(15))
                        .send();
                    match r {
                        Ok(r) if r.status() == 200 => {
                            acked.lock().unwrap().insert(p, v);
                        }
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body = r.text().unwrap_or_default();
                            eprintln!("push {p}/{v} to {base}: {status} {body}");
                            refusals.lock().unwrap().push(Refusal { sent, status, body });
                        }
                        Err(_) => {}
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }));
        }
        pushers
    }

    /// From now on, push only to the other nodes (`url` is about to stop).
    pub fn avoid(&self, url: &str) {
        self.live.lock().unwrap().retain(|u| u != url);
    }

    /// From now on, push to `url` too.
    pub fn include(&self, url: &str) {
        let mut live = self.live.lock().unwrap();
        if !live.iter().any(|u| u == url) {
            live.push(url.to_string());
        }
    }

    pub fn stop(self) -> Pushed {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let refusals = std::mem::take(&mut *self.refusals.lock().unwrap());
        Pushed { acked, refusals }
    }
}

impl Pushed {
    /// Asserts that `groups` (a node's `/api/v1/metrics` data) holds, for
    /// every pusher, its last acknowledged push or a later one.
    pub fn assert_stored(&self, groups: &serde_json::Value, gauge: &str) {
        for (p, v) in &self.acked {
            let g = groups
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["labels"]["p"].as_str() == Some(p.to_string().as_str()))
                .unwrap_or_else(|| panic!("no group for pusher {p}, whose push {v} was acknowledged"));
            let stored: u64 = g[gauge]["metrics"][0]["value"].as_str().unwrap().parse().unwrap();
            assert!(stored >= *v, "pusher {p}: acknowledged {v}, stored {stored}");
        }
    }
}

/// Sends pushes `0..count` to the node at `url` from `threads` threads
/// (thread t sends t, t + threads, ...; each waits for its answer before
/// the next), and asserts that every one is acknowledged. `push(k)` gives
/// push k's path and body.
pub fn push_all(
    url: &str,
    threads: usize,
    count: usize,
    push: impl Fn(usize) -> (String, String) + Send + Sync + 'static,
) {
    let push = Arc::new(push);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (url, push) = (url.to_string(), push.clone());
            std::thread::spawn(move || {
                let c = super::client();
                for k in (t..count).step_by(threads) {
                    let (path, body) = push(k);
                    let r = c.put(format!("{url}{path}")).body(body).send().unwrap();
                    assert_eq!(r.status(), 200, "push {k} to {path}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
