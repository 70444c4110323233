//! Pushers for crash tests (kill -9, power loss): each PUTs two series with
//! the same value to a group of its own, so that a push applied by halves
//! shows, and records the value in flight and the last one acknowledged. A
//! pusher stops at the first push not answered 200 (the node died under
//! it); the next round goes on from the value it reached.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Per pusher: the last value acknowledged (200) and the one in flight.
#[derive(Default, Clone, Copy, Debug)]
pub struct Progress {
    pub acked: Option<u64>,
    pub in_flight: Option<u64>,
}

/// Pusher `p` PUTs `<job>_value{half="a"|"b"} <v>` to
/// `/metrics/job/<job>/pusher/<p>` through `urls[p % urls.len()]`.
pub struct CrashPushers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(u64, u64)>>,
}

impl CrashPushers {
    /// One pusher per entry of `first_values`, starting after that value.
    /// With `new_group_every = Some(k)`, a pusher also creates a group of
    /// job `<job>-extra` after every k-th push, so that the store and its
    /// snapshots grow, not only the log.
    pub fn start(
        job: &str,
        urls: &[String],
        first_values: &[u64],
        progress: Arc<Mutex<Vec<Progress>>>,
        new_group_every: Option<u64>,
    ) -> CrashPushers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = first_values
            .iter()
            .enumerate()
            .map(|(p, &first)| {
                let (stop, progress, job) = (stop.clone(), progress.clone(), job.to_string());
                let base = urls[p % urls.len()].clone();
                std::thread::spawn(move || {
                    let c = super::client();
                    let put_ok = |url: String, body: String| {
                        matches!(c.put(url).body(body).timeout(Duration::from_secs(5)).send(), Ok(r) if r.status() == 200)
                    };
                    let (mut v, mut acked) = (first, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        v += 1;
                        progress.lock().unwrap()[p].in_flight = Some(v);
                        let body = format!(
                            "# TYPE {job}_value gauge\n{job}_value{{half=\"a\"}} {v}\n{job}_value{{half=\"b\"}} {v}\n"
                        );
                        if !put_ok(format!("{base}/metrics/job/{job}/pusher/{p}"), body) {
                            break;
                        }
                        progress.lock().unwrap()[p].acked = Some(v);
                        acked += 1;
                        if new_group_every.is_some_and(|k| v.is_multiple_of(k)) {
                            let url = format!("{base}/metrics/job/{job}-extra/pusher/{p}/n/{v}");
                            if !put_ok(url, format!("{job}_extra {v}\n")) {
                                break;
                            }
                        }
                    }
                    (v, acked)
                })
            })
            .collect();
        CrashPushers { stop, threads }
    }

    /// Stops the pushers; per pusher, the last value it used and how many
    /// of its pushes were acknowledged.
    pub fn stop(self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("pusher thread"))
            .collect()
    }
}

/// pusher -> the values of its two `<job>_value` series, from `/api/v1/metrics`.
fn stored(job: &str, groups: &serde_json::Value) -> BTreeMap<String, Vec<u64>> {
    groups
        .as_array()
        .expect("an array of groups")
        .iter()
        .filter(|g| g["labels"]["job"] == job)
        .map(|g| {
            let values = g[format!("{job}_value")]["metrics"]
                .as_array()
                .map(|ms| ms.iter().filter_map(|m| m["value"].as_str()?.parse().ok()).collect())
                .unwrap_or_default();
            (g["labels"]["pusher"].as_str().unwrap_or_default().to_string(), values)
        })
        .collect()
}

/// Every acknowledged push is stored whole: each pusher's group holds the
/// acknowledged value or the one that was in flight, in both series.
pub fn assert_no_acknowledged_push_lost(
    round: usize,
    what: &str,
    job: &str,
    progress: &[Progress],
    groups: &serde_json::Value,
) {
    let stored = stored(job, groups);
    for (p, pr) in progress.iter().enumerate() {
        let Some(acked) = pr.acked else { continue };
        let values = stored.get(&p.to_string()).unwrap_or_else(|| {
            panic!("round {round} ({what}): the group of pusher {p} was lost (acknowledged {acked})")
        });
        assert_eq!(
            values.len(),
            2,
            "round {round} ({what}): a push was half applied: {values:?}"
        );
        assert_eq!(
            values[0], values[1],
            "round {round} ({what}): a push was half applied: {values:?}"
        );
        assert!(
            values[0] == acked || Some(values[0]) == pr.in_flight,
            "round {round} ({what}), pusher {p}: stored {}, acknowledged {acked}, in flight {:?}: an acknowledged push was lost",
            values[0],
            pr.in_flight
        );
    }
}
