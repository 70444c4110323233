//! A disk whose syncs fail (`EIO` from `fsync`/`fdatasync`, injected into the
//! real process by a preloaded library): the node stops for good at the first
//! failed sync and never tries again, even when the disk would answer again,
//! because Linux may drop the writes it could not sync and report success
//! next time. Nothing it acknowledged is lost, a write whose sync failed is
//! never shown, and in a cluster the other replicas elect a new leader and go
//! on. A full disk, where the write itself fails, is `tests/disk_full.rs`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::TestCluster;
use common::failing_syncs::FailingSyncs;
use common::numbered::{
    assert_holds, assert_serves, body, push_numbered, push_through_leader_failure, scrape, wait_for_status,
};
use common::{free_port, temp_dir, Server};

const EIO: &str = "Input/output error";

#[test]
fn a_failed_sync_stops_the_node_for_good_and_nothing_acknowledged_is_lost() {
    let syncs = FailingSyncs::new();
    let dir = temp_dir("failing-disk");
    let cluster_port = format!("--cluster.listen-address=127.0.0.1:{}", free_port());
    let mut server = Server::unstarted("127.0.0.1", free_port(), &dir.path().join("data"), &[&cluster_port]);
    server.wrap = syncs.wrap();
    server.spawn();

    let mut acked = BTreeMap::new();
    push_numbered(&server, 0..20, &mut acked);

    // The disk stops syncing: the push being written is not acknowledged.
    syncs.fail(server.pid());
    let r = server.put("/metrics/job/unsynced", &body(1));
    assert_eq!(r.status(), 503);
    let text = r.text().unwrap_or_default();
    assert!(text.contains(EIO), "the 503 names the cause: {text}");

    // The disk answers again, but the node stays stopped: it refuses pushes
    // at once, fails its health checks and shows nothing it could not sync.
    syncs.heal(server.pid());
    let unhealthy = wait_for_status(&server, "/-/healthy", 503, Duration::from_secs(5));
    assert!(
        unhealthy.contains(EIO) && unhealthy.contains("restarted"),
        "{unhealthy}"
    );
    for _ in 0..3 {
        let r = server.put("/metrics/job/after", &body(1));
        assert_eq!(r.status(), 503);
        let text = r.text().unwrap_or_default();
        assert!(text.contains("the change was not made") && text.contains(EIO), "{text}");
    }
    let (status, stale) = scrape(&server, "?consistency=stale");
    assert_eq!(status, 200, "stale reads are still served");
    assert_holds(&acked, &stale, "stale read after the failure");
    assert!(!stale.contains("job=\"unsynced\""), "a push whose sync failed is shown");
    assert!(server.is_running(), "the process stays up until it is restarted");

    // Restarted, it has every acknowledged push and takes new ones.
    server.terminate();
    server.spawn();
    assert_serves(&server, &acked, "after the restart");
    server.put_ok("/metrics/job/after", &body(7));
}

/// A snapshot whose sync fails stops the node like a failed log sync. The
/// file it was writing never replaces the last good snapshot and the log
/// behind that snapshot is kept, so a restart has every acknowledged push.
#[test]
fn a_failed_snapshot_sync_stops_the_node_and_a_restart_has_every_acknowledged_push() {
    let syncs = FailingSyncs::new();
    let dir = temp_dir("failing-snapshot");
    let cluster_port = format!("--cluster.listen-address=127.0.0.1:{}", free_port());
    let mut server = Server::unstarted(
        "127.0.0.1",
        free_port(),
        &dir.path().join("data"),
        &[&cluster_port, "--storage.snapshot-every=5"],
    );
    server.wrap = syncs.wrap();
    server.spawn();

    // A first snapshot is written while the disk works.
    let mut acked = BTreeMap::new();
    let mut n = 0u64;
    while server.self_metric("pushgate_snapshots_built_total") < 1.0 {
        assert!(n < 50, "no snapshot after {n} pushes with --storage.snapshot-every=5");
        push_numbered(&server, n..n + 1, &mut acked);
        n += 1;
    }

    // Then syncs of the snapshot being written fail (the log still syncs):
    // pushes are acknowledged until the next snapshot fails, then refused.
    syncs.fail_paths_containing(server.pid(), "current.snapshot.tmp");
    let refused = loop {
        assert!(
            n < 100,
            "the node still takes pushes after {n} with failing snapshot syncs"
        );
        let r = server.put(&format!("/metrics/job/g{n}"), &body(n));
        match r.status().as_u16() {
            200 => {
                acked.insert(format!("g{n}"), n);
            }
            503 => break r.text().unwrap_or_default(),
            other => panic!("push answered {other}: {}", r.text().unwrap_or_default()),
        }
        n += 1;
    };
    assert!(refused.contains(EIO), "the 503 names the cause: {refused}");
    let unhealthy = wait_for_status(&server, "/-/healthy", 503, Duration::from_secs(5));
    assert!(
        unhealthy.contains(EIO) && unhealthy.contains("current.snapshot.tmp"),
        "the failure names the snapshot file: {unhealthy}"
    );

    // Restarted on a disk that syncs again: the last good snapshot and the
    // log after it hold every acknowledged push.
    syncs.heal(server.pid());
    server.terminate();
    server.spawn();
    assert_serves(&server, &acked, "after the restart");
    server.put_ok("/metrics/job/after", &body(7));
}

#[test]
fn a_leader_whose_syncs_fail_is_replaced_and_nothing_acknowledged_is_lost() {
    let syncs = FailingSyncs::new();
    let mut cluster = TestCluster::start_in(temp_dir("failing-disk-cluster"), 3, &[], syncs.wrap());
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let entry = *cluster.nodes.keys().find(|id| **id != leader).expect("a follower");

    let mut acked = BTreeMap::new();
    push_numbered(cluster.node(entry), 0..20, &mut acked);

    // The leader's disk stops syncing; pushes through a follower wait for
    // the election and go on.
    syncs.fail(cluster.node(leader).pid());
    push_through_leader_failure(&cluster, entry, leader, 20, EIO, &mut acked);

    // Restarted on a disk that syncs again, the old leader catches up.
    syncs.heal(cluster.node(leader).pid());
    cluster.node_mut(leader).terminate();
    cluster.node_mut(leader).spawn();
    assert_serves(cluster.node(leader), &acked, "the restarted node");
}
