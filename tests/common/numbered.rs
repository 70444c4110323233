//! Numbered pushes for fault tests: every series of a push carries its
//! number, so a scrape shows which push of each group a replica holds and a
//! test can check that every acknowledged push survived, and none went stale.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::cluster::TestCluster;
use super::{client, Server};

/// A push of about 9 KiB; every series carries `value`, so a scrape shows
/// which push of a group it holds.
pub fn body(value: u64) -> String {
    let pad = "x".repeat(64);
    (0..100)
        .map(|i| format!("filler_{i}{{pad=\"{pad}\"}} {value}\n"))
        .collect()
}

/// Pushes `body(n)` to the group `g{n}` through `server` for every `n` in
/// `numbers`, each acknowledged with 200, and records them in `acked`.
pub fn push_numbered(server: &Server, numbers: std::ops::Range<u64>, acked: &mut BTreeMap<String, u64>) {
    for n in numbers {
        server.put_ok(&format!("/metrics/job/g{n}"), &body(n));
        acked.insert(format!("g{n}"), n);
    }
}

/// `job` -> value of `filler_0` in a scrape.
pub fn values(exposition: &str) -> BTreeMap<String, u64> {
    exposition
        .lines()
        .filter(|l| l.starts_with("filler_0{"))
        .filter_map(|l| {
            let job = l.split("job=\"").nth(1)?.split('"').next()?;
            let value = l.rsplit(' ').next()?.parse().ok()?;
            Some((job.to_string(), value))
        })
        .collect()
}

/// `GET /metrics{query}` as (status, body); status 0 when it got no answer.
pub fn scrape(server: &Server, query: &str) -> (u16, String) {
    match client().get(server.url(&format!("/metrics{query}"))).send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Every acknowledged push is in the scrape with the value it pushed.
pub fn assert_holds(acked: &BTreeMap<String, u64>, exposition: &str, what: &str) {
    let seen = values(exposition);
    for (job, value) in acked {
        assert_eq!(
            seen.get(job),
            Some(value),
            "{what}: acknowledged push of {job} lost or stale"
        );
    }
}

/// A consistent scrape of `server` answers 200 and holds every acknowledged
/// push; returns the exposition.
pub fn assert_serves(server: &Server, acked: &BTreeMap<String, u64>, what: &str) -> String {
    let (status, text) = scrape(server, "");
    assert_eq!(status, 200, "{what}: {text}");
    assert_holds(acked, &text, what);
    text
}

/// Waits (bounded) until `path` on `server` answers `status`; returns the body.
pub fn wait_for_status(server: &Server, path: &str, status: u16, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let r = client().get(server.url(path)).timeout(Duration::from_secs(2)).send();
        if let Ok(r) = r {
            if r.status().as_u16() == status {
                return r.text().unwrap_or_default();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not answer {status} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pushes numbered groups from `first` on through node `entry` while node
/// `leader`'s storage fails, until `leader` reports its failure and 50 pushes
/// in a row were acknowledged (at most 60 s), adding each acknowledged push to
/// `acked`. Then checks the failover: no push failed more than 5 s after the
/// first failure, the old leader names `cause` and fails its health check,
/// another node leads, and both healthy replicas hold every acknowledged push.
pub fn push_through_leader_failure(
    cluster: &TestCluster,
    entry: u64,
    leader: u64,
    first: u64,
    cause: &str,
    acked: &mut BTreeMap<String, u64>,
) {
    let started = Instant::now();
    let mut first_failure: Option<Instant> = None;
    let mut late_failures = Vec::new();
    let mut ok_in_a_row = 0;
    for n in first..first + 5_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "pushes did not recover within 60 s"
        );
        let r = cluster.node(entry).put(&format!("/metrics/job/g{n}"), &body(n));
        match r.status().as_u16() {
            200 => {
                acked.insert(format!("g{n}"), n);
                ok_in_a_row += 1;
            }
            503 => {
                ok_in_a_row = 0;
                let since = *first_failure.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(5) {
                    late_failures.push(r.text().unwrap_or_default());
                }
            }
            other => panic!("push {n}: {other} {}", r.text().unwrap_or_default()),
        }
        if ok_in_a_row >= 50 && cluster.status(leader).is_some_and(|s| !s["failure"].is_null()) {
            break;
        }
    }
    eprintln!(
        "{} pushes acknowledged; first failure {:?} after the leader's storage began to fail",
        acked.len(),
        first_failure.map(|t| t - started)
    );
    assert!(
        late_failures.is_empty(),
        "pushes failed more than 5 s after the first failure: {late_failures:?}"
    );
    let status = cluster.status(leader).expect("the old leader still answers");
    assert!(
        status["failure"].as_str().is_some_and(|f| f.contains(cause)),
        "the old leader reports why it stopped: {status}"
    );
    wait_for_status(cluster.node(leader), "/-/healthy", 503, Duration::from_secs(5));
    let new_leader = cluster.other_leader(leader).expect("another node leads");
    // Consistent reads on both healthy replicas.
    for id in [entry, new_leader] {
        assert_serves(cluster.node(id), acked, &format!("node {id}"));
    }
}
