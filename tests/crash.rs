//! kill -9 at random moments while clients push: no acknowledged push may be
//! lost, and an unacknowledged one is either wholly there or absent.
//!
//! Rounds default to 10; set PUSHGATE_CRASH_ROUNDS for a longer run.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::crash_pushers::{assert_no_acknowledged_push_lost, CrashPushers, Progress};
use common::{temp_dir, Server};
use rand::Rng;

const PUSHERS: usize = 8;

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
        let pushers = CrashPushers::start("crash", &[server.url("")], &next_value, progress.clone(), None);
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..700)));
        server.kill9();
        for (p, (last, acked)) in pushers.stop().into_iter().enumerate() {
            next_value[p] = last;
            total_acked += acked;
        }
        server.spawn();
        assert_no_acknowledged_push_lost(
            round,
            "after kill -9",
            "crash",
            &progress.lock().unwrap(),
            &server.api_metrics(),
        );
    }
    eprintln!("{rounds} kill -9 rounds, {total_acked} acknowledged pushes, 0 lost");
    assert!(total_acked > 0);
}
