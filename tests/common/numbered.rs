//! Numbered pushes for fault tests: every series of a push carries its
//! number, so a scrape shows which push of each group a replica holds and a
//! test can check that every acknowledged push survived, and none went stale.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{client, Server};

/// A push of about 9 KiB; every series carries `value`, so a scrape shows
/// which push of a group it holds.
pub fn body(value: u64) -> String {
    let pad = "x".repeat(64);
    (0..100)
        .map(|i| format!("filler_{i}{{pad=\"{pad}\"}} {value}\n"))
        .collect()
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
