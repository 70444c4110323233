//! A disk that fills up, with real processes on a real (tmpfs) disk of a few
//! MiB in a mount namespace the test made: the node stops taking pushes with
//! a `503` that names the cause, refuses the ones after it at once ("the
//! change was not made"), fails its health checks so a supervisor restarts it,
//! loses nothing it acknowledged, and starts again once there is room. In a
//! cluster the other replicas elect a new leader and go on; a follower whose
//! disk fills stops alone while the other two go on, and catches up once it
//! restarts with room.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::disk::namespace_or_skip;
use common::numbered::{
    assert_holds, assert_serves, body, push_numbered, push_through_leader_failure, scrape, wait_for_status,
};
use common::{free_port, temp_dir, Server};

const MIB: u64 = 1 << 20;

#[test]
fn a_full_disk_refuses_pushes_keeps_what_was_acknowledged_and_the_node_restarts_once_there_is_room() {
    let Some(ns) = namespace_or_skip("disk_full single node") else {
        return;
    };
    let dir = temp_dir("disk-full");
    let disk = ns.mount_disk(&dir.path().join("disk"), 4 * MIB);
    let cluster_port = format!("--cluster.listen-address=127.0.0.1:{}", free_port());
    let mut server = Server::unstarted("127.0.0.1", free_port(), &disk.join("data"), &[&cluster_port]);
    server.wrap = ns.wrap();
    server.spawn();

    // Push new groups until the disk is full (4 MiB holds a few hundred).
    let mut acked = BTreeMap::new();
    let mut refusal = None;
    for n in 0..2_000u64 {
        let r = server.put(&format!("/metrics/job/g{n}"), &body(n));
        match r.status().as_u16() {
            200 => {
                acked.insert(format!("g{n}"), n);
            }
            503 => {
                refusal = Some(r.text().unwrap_or_default());
                break;
            }
            other => panic!("push {n}: {other} {}", r.text().unwrap_or_default()),
        }
    }
    let refusal = refusal.expect("a 4 MiB disk never filled");
    assert!(acked.len() >= 10, "only {} pushes fit", acked.len());
    assert!(
        refusal.contains("No space left on device"),
        "the 503 names the cause: {refusal}"
    );

    // The node has stopped for good: its health check says so, so that a
    // supervisor restarts it, and it refuses every push at once.
    let unhealthy = wait_for_status(&server, "/-/healthy", 503, Duration::from_secs(5));
    assert!(
        unhealthy.contains("No space left on device") && unhealthy.contains("restarted"),
        "{unhealthy}"
    );
    assert!(server.is_running(), "the process stays up");
    let ready = server.get("/-/ready");
    assert_eq!(ready.status(), 503);
    for _ in 0..3 {
        let r = server.put("/metrics/job/after", &body(1));
        assert_eq!(r.status(), 503);
        let text = r.text().unwrap_or_default();
        assert!(
            text.contains("the change was not made") && text.contains("No space left on device"),
            "{text}"
        );
    }
    let (status, _) = scrape(&server, "");
    assert_eq!(status, 503, "a consistent read needs the stopped core");
    let (status, stale) = scrape(&server, "?consistency=stale");
    assert_eq!(status, 200, "stale reads are still served");
    assert_holds(&acked, &stale, "stale read after the failure");
    assert_eq!(
        server.log_text().matches("this node stopped working").count(),
        1,
        "the failure is logged once, with what to do"
    );

    // Restarted on the full disk, it refuses to start and says why.
    server.terminate();
    server.spawn_unready();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(child) = server.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
        }
        assert!(Instant::now() < deadline, "started on a full disk");
        std::thread::sleep(Duration::from_millis(50));
    };
    server.child = None;
    assert!(!exit.success());
    let log = server.log_text();
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.contains("No space left on device")),
        "the start error names the cause:\n{log}"
    );

    // With room again it starts, with every acknowledged push.
    ns.resize_disk(&disk, 64 * MIB);
    server.spawn();
    assert_serves(&server, &acked, "after the restart");
    server.put_ok("/metrics/job/after", &body(7));
}

#[test]
fn a_leader_whose_disk_fills_is_replaced_and_nothing_acknowledged_is_lost() {
    let Some(ns) = namespace_or_skip("disk_full leader") else {
        return;
    };
    let dir = temp_dir("disk-full-cluster");
    let disks: BTreeMap<u64, _> = (1..=3)
        .map(|id| (id, ns.mount_disk(&dir.path().join(format!("node{id}")), 64 * MIB)))
        .collect();
    let mut cluster = TestCluster::start_in(dir, 3, &[], ns.wrap());
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let entry = *cluster.nodes.keys().find(|id| **id != leader).expect("a follower");

    // Pushes go through a follower; the leader's disk gets room for about
    // 1 MiB more, far less than the pushes below need.
    let mut acked = BTreeMap::new();
    push_numbered(cluster.node(entry), 0..20, &mut acked);
    ns.leave_free(&disks[&leader], MIB);
    push_through_leader_failure(&cluster, entry, leader, 20, "No space left on device", &mut acked);

    // The old leader, restarted with room, catches up.
    cluster.node_mut(leader).terminate();
    ns.resize_disk(&disks[&leader], 64 * MIB);
    cluster.node_mut(leader).spawn();
    assert_serves(cluster.node(leader), &acked, "the restarted node");
}

#[test]
fn a_follower_whose_disk_fills_stops_alone_and_catches_up_after_a_restart() {
    let Some(ns) = namespace_or_skip("disk_full follower") else {
        return;
    };
    let dir = temp_dir("disk-full-follower");
    let disks: BTreeMap<u64, _> = (1..=3)
        .map(|id| (id, ns.mount_disk(&dir.path().join(format!("node{id}")), 64 * MIB)))
        .collect();
    let mut cluster = TestCluster::start_in(dir, 3, &[], ns.wrap());
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let mut followers = cluster.nodes.keys().copied().filter(|id| *id != leader);
    let (full, healthy) = (
        followers.next().expect("a follower"),
        followers.next().expect("two followers"),
    );

    // One follower's disk gets room for about 1 MiB more; pushes through the
    // leader and the other follower go on, every one of them acknowledged.
    let mut acked = BTreeMap::new();
    ns.leave_free(&disks[&full], MIB);
    let started = Instant::now();
    let mut n = 0u64;
    while cluster.status(full).is_none_or(|s| s["failure"].is_null()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the follower's disk did not fill within 60 s ({n} pushes)"
        );
        let entry = if n.is_multiple_of(2) { leader } else { healthy };
        cluster.node(entry).put_ok(&format!("/metrics/job/g{n}"), &body(n));
        acked.insert(format!("g{n}"), n);
        n += 1;
    }
    // And after it stopped, as many again.
    for n in n..2 * n {
        let entry = if n.is_multiple_of(2) { leader } else { healthy };
        cluster.node(entry).put_ok(&format!("/metrics/job/g{n}"), &body(n));
        acked.insert(format!("g{n}"), n);
    }
    eprintln!("{} pushes acknowledged, none refused", acked.len());
    assert_eq!(
        cluster.status(leader).map(|s| s["state"].clone()),
        Some("Leader".into()),
        "the leader kept its place"
    );

    // The full follower says why it stopped, fails its health checks and
    // refuses pushes at once rather than forwarding them.
    let status = cluster.status(full).expect("the full follower still answers");
    assert!(
        status["failure"]
            .as_str()
            .is_some_and(|f| f.contains("No space left on device")),
        "{status}"
    );
    wait_for_status(cluster.node(full), "/-/healthy", 503, Duration::from_secs(5));
    let r = cluster.node(full).put("/metrics/job/refused", &body(1));
    assert_eq!(r.status(), 503);
    let text = r.text().unwrap_or_default();
    assert!(text.contains("the change was not made"), "{text}");
    let (status, _) = scrape(cluster.node(full), "");
    assert_eq!(status, 503, "no consistent read from a stopped node");

    for id in [leader, healthy] {
        let text = assert_serves(cluster.node(id), &acked, &format!("node {id}"));
        assert!(!text.contains("job=\"refused\""), "node {id} holds the refused push");
    }

    // Restarted with room, it catches up with everything it missed.
    cluster.node_mut(full).terminate();
    ns.resize_disk(&disks[&full], 64 * MIB);
    cluster.node_mut(full).spawn();
    assert_serves(cluster.node(full), &acked, "the restarted follower");
}
