//! kill -9 at random moments while clients push: no acknowledged push may be
//! lost, and an unacknowledged one is either wholly there or absent.
//!
//! Rounds default to 10; set PUSHGATE_CRASH_ROUNDS for a longer run.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, temp_dir, Server};
use rand::Rng;

const PUSHERS: usize = 8;

/// Per pusher: the last value acknowledged (200) and the value in flight.
#[derive(Default, Clone, Copy)]
struct Progress {
    acked: Option<u64>,
    in_flight: Option<u64>,
}

#[test]
fn kill9_loses_no_acknowledged_push() {
    let rounds: usize = std::env::var("PUSHGATE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let tmp = temp_dir("crash");
    let mut server = Server::start_in(&tmp.path().join("data"), &["--storage.snapshot-every=50"]);
    let progress = Arc::new(Mutex::new(vec![Progress::default(); PUSHERS]));
    let mut next_value = [0u64; PUSHERS];
    let mut rng = rand::thread_rng();
    let mut total_acked = 0u64;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for p in 0..PUSHERS {
            let (stop, progress, url) = (
                stop.clone(),
                progress.clone(),
                server.url(&format!("/metrics/job/crash/pusher/{p}")),
            );
            let start = next_value[p];
            threads.push(std::thread::spawn(move || {
                let c = client();
                let mut v = start;
                let mut acked = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    v += 1;
                    progress.lock().unwrap()[p].in_flight = Some(v);
                    // Two series with the same value: a push is atomic, so they must match.
                    let body = format!(
                        "# TYPE crash_value gauge\ncrash_value{{half=\"a\"}} {v}\ncrash_value{{half=\"b\"}} {v}\n"
                    );
                    match c.put(&url).body(body).timeout(Duration::from_secs(5)).send() {
                        Ok(r) if r.status() == 200 => {
                            let mut g = progress.lock().unwrap();
                            g[p].acked = Some(v);
                            acked += 1;
                        }
                        // The process died under us: the outcome is unknown.
                        _ => break,
                    }
                }
                (v, acked)
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..700)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for (p, t) in threads.into_iter().enumerate() {
            let (v, acked) = t.join().unwrap();
            next_value[p] = v;
            total_acked += acked;
        }
        server.spawn();
        let groups = server.api_metrics();
        let mut lost = 0;
        for (p, pr) in progress.lock().unwrap().iter().enumerate() {
            let Some(acked) = pr.acked else { continue };
            let pusher = p.to_string();
            let group = groups
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["labels"]["pusher"].as_str() == Some(pusher.as_str()))
                .unwrap_or_else(|| panic!("round {round}: group of pusher {p} lost"));
            let values: Vec<u64> = group["crash_value"]["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["value"].as_str().unwrap().parse().unwrap())
                .collect();
            assert_eq!(values.len(), 2, "round {round}: a push was half applied: {values:?}");
            assert_eq!(
                values[0], values[1],
                "round {round}: a push was half applied: {values:?}"
            );
            let stored = values[0];
            if stored < acked {
                lost += 1;
            }
            assert!(
                stored == acked || Some(stored) == pr.in_flight,
                "round {round}, pusher {p}: stored {stored}, acknowledged {acked}, in flight {:?}",
                pr.in_flight
            );
        }
        assert_eq!(lost, 0, "round {round}: acknowledged pushes lost");
    }
    eprintln!("{rounds} kill -9 rounds, {total_acked} acknowledged pushes, 0 lost");
    assert!(total_acked > 0);
}
