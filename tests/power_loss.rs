//! Power loss at random moments while clients push: the data directory is on
//! a disk that forgets everything not synced (tests/common/power_loss.rs),
//! the process is killed with SIGKILL and the disk loses power before the
//! node starts again. No acknowledged push may be lost, and an
//! unacknowledged one is either wholly there or absent. In a cluster, every
//! replica loses power at once (a whole rack, or a zone).
//!
//! Needs root and /dev/fuse (skipped otherwise, unless
//! `PUSHGATE_TEST_FUSE=required`). Rounds default to 6; set
//! PUSHGATE_POWER_LOSS_ROUNDS for a longer run.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::TestCluster;
use common::crash_pushers::{assert_no_acknowledged_push_lost, CrashPushers, Progress};
use common::power_loss::{power_loss_disk_or_skip, Lost, PowerLossDisk};
use common::{free_port, temp_dir, Server};
use rand::Rng;

const PUSHERS: usize = 6;

fn rounds() -> usize {
    std::env::var("PUSHGATE_POWER_LOSS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// Of the writes after each file's last sync, the share a power cut lets
/// through in round `round`: none in even rounds, about half (some torn) in
/// odd ones.
fn keep_of(round: usize) -> f64 {
    if round.is_multiple_of(2) {
        0.0
    } else {
        0.5
    }
}

#[test]
fn a_power_cut_loses_no_acknowledged_push() {
    let tmp = temp_dir("power-loss");
    let mountpoint = tmp.path().join("disk");
    std::fs::create_dir_all(&mountpoint).unwrap();
    let Some(mut disk) = power_loss_disk_or_skip("power_loss single node", &mountpoint) else {
        return;
    };
    let cluster_flag = format!("--cluster.listen-address=127.0.0.1:{}", free_port());
    // Snapshots every 50 entries: power cuts land while snapshots are written
    // and the log is purged behind them, not only while entries are appended.
    let mut server = Server::unstarted(
        "127.0.0.1",
        free_port(),
        &disk.path().join("data"),
        &[&cluster_flag, "--storage.snapshot-every=50"],
    );
    // The log stays off the disk that loses power.
    server.log = tmp.path().join("node.log");
    server.spawn();
    let progress = Arc::new(Mutex::new(vec![Progress::default(); PUSHERS]));
    let mut values = vec![0u64; PUSHERS];
    let mut rng = rand::thread_rng();
    let mut lost = Lost::default();
    for round in 0..rounds() {
        let pushers = CrashPushers::start("power", &[server.url("")], &values, progress.clone(), Some(8));
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1_500)));
        server.kill9();
        values = pushers.stop().into_iter().map(|(last, _)| last).collect();
        lost += disk.cut_power(keep_of(round));
        server.spawn();
        assert_no_acknowledged_push_lost(
            round,
            "after the power cut",
            "power",
            &progress.lock().unwrap(),
            &server.api_metrics(),
        );
    }
    let acked = progress.lock().unwrap().iter().filter(|p| p.acked.is_some()).count();
    eprintln!(
        "{} power cuts, {acked} pushers with acknowledged pushes, none lost; {} file syncs; the disk: {lost:?}",
        rounds(),
        disk.file_syncs()
    );
    assert!(acked > 0, "no push was acknowledged");
    // The node's data went through the disk that forgets (that it forgets is
    // `the_disk_keeps_only_what_was_synced`). Whether a cut finds unsynced
    // writes is chance: the node syncs right after each batch.
    assert!(
        disk.file_syncs() > 0,
        "the node never synced a file on the power-loss disk"
    );
    server.terminate();
}

#[test]
fn a_power_cut_of_every_replica_at_once_loses_no_acknowledged_push() {
    // Dropped last: the disks are unmounted before their mount points go.
    let disk_root = temp_dir("power-loss-disks");
    let cluster_dir = temp_dir("power-loss-cluster");
    let mut disks: Vec<PowerLossDisk> = Vec::new();
    for id in 1..=3 {
        let mountpoint = disk_root.path().join(format!("disk-{id}"));
        std::fs::create_dir_all(&mountpoint).unwrap();
        let Some(disk) = power_loss_disk_or_skip("power_loss cluster", &mountpoint) else {
            return;
        };
        // Node `id` keeps its data in `node{id}` of the cluster's directory
        // (its log beside it, off the disk).
        std::os::unix::fs::symlink(&mountpoint, cluster_dir.path().join(format!("node{id}"))).unwrap();
        disks.push(disk);
    }
    let mut cluster = TestCluster::start_in(cluster_dir, 3, &["--storage.snapshot-every=50"], Vec::new());
    let progress = Arc::new(Mutex::new(vec![Progress::default(); PUSHERS]));
    let mut values = vec![0u64; PUSHERS];
    let mut rng = rand::thread_rng();
    let mut lost = Lost::default();
    for round in 0..rounds() {
        cluster.wait_leader(Duration::from_secs(15));
        let urls: Vec<String> = cluster.nodes.values().map(|n| n.server.url("")).collect();
        let pushers = CrashPushers::start("power", &urls, &values, progress.clone(), Some(8));
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1_500)));
        for node in cluster.nodes.values_mut() {
            node.server.kill9();
        }
        values = pushers.stop().into_iter().map(|(last, _)| last).collect();
        for disk in disks.iter_mut() {
            lost += disk.cut_power(keep_of(round));
        }
        for node in cluster.nodes.values_mut() {
            node.server.spawn_unready();
        }
        for node in cluster.nodes.values_mut() {
            node.server.wait_ready(Duration::from_secs(30));
        }
        let progress = progress.lock().unwrap();
        for (id, node) in &cluster.nodes {
            assert_no_acknowledged_push_lost(
                round,
                &format!("node {id}"),
                "power",
                &progress,
                &node.server.api_metrics(),
            );
        }
    }
    let acked = progress.lock().unwrap().iter().filter(|p| p.acked.is_some()).count();
    eprintln!(
        "{} power cuts of all three replicas, {acked} pushers with acknowledged pushes, none lost; the disks: {lost:?}",
        rounds()
    );
    assert!(acked > 0, "no push was acknowledged");
    assert!(
        disks.iter().all(|d| d.file_syncs() > 0),
        "a node never synced a file on its power-loss disk"
    );
    drop(cluster);
    drop(disks);
}

/// The disk itself: after a power cut it holds exactly what was synced.
#[test]
fn the_disk_keeps_only_what_was_synced() {
    use std::fs::{self, File};
    use std::io::Write;
    let tmp = temp_dir("power-loss-disk");
    let mountpoint = tmp.path().join("disk");
    fs::create_dir_all(&mountpoint).unwrap();
    let Some(mut disk) = power_loss_disk_or_skip("power_loss disk", &mountpoint) else {
        return;
    };
    let at = |name: &str| mountpoint.join(name);
    let sync_dir = |path: &std::path::Path| File::open(path).unwrap().sync_all().unwrap();
    // Written and synced, their directory entries synced too: kept.
    for (name, contents) in [("kept", &b"synced"[..]), ("old", &b"old"[..])] {
        fs::write(at(name), contents).unwrap();
        File::open(at(name)).unwrap().sync_all().unwrap();
    }
    sync_dir(&mountpoint);
    // From here on the mount point's directory is not synced again.
    // Synced, then appended to without a sync: the append is lost.
    let mut f = fs::OpenOptions::new().append(true).open(at("kept")).unwrap();
    f.write_all(b" and not synced").unwrap();
    drop(f);
    // A new directory and a file in it, both synced, but the directory's
    // entry in its parent never was: all gone.
    fs::create_dir(at("dir")).unwrap();
    fs::write(at("dir/inner"), b"x").unwrap();
    File::open(at("dir/inner")).unwrap().sync_all().unwrap();
    sync_dir(&at("dir"));
    // A synced file renamed over another without a directory sync: the
    // rename is undone.
    fs::write(at("new.tmp"), b"new").unwrap();
    File::open(at("new.tmp")).unwrap().sync_all().unwrap();
    fs::rename(at("new.tmp"), at("old")).unwrap();
    assert_eq!(fs::read(at("old")).unwrap(), b"new");

    let lost = disk.cut_power(0.0);

    assert_eq!(fs::read(at("kept")).unwrap(), b"synced");
    assert!(!at("dir").exists(), "a directory whose entry was never synced survived");
    assert_eq!(fs::read(at("old")).unwrap(), b"old", "an unsynced rename survived");
    assert!(!at("new.tmp").exists(), "an entry never synced survived");
    assert_eq!(lost.files_rolled_back, 1, "{lost:?}");
    assert!(lost.directories_rolled_back >= 1, "{lost:?}");
    // And a synced rename is kept.
    fs::rename(at("old"), at("renamed")).unwrap();
    sync_dir(&mountpoint);
    disk.cut_power(0.0);
    assert_eq!(fs::read(at("renamed")).unwrap(), b"old");
    assert!(!at("old").exists());
    // A disk that wrote all of its queue keeps unsynced writes too.
    fs::write(at("renamed"), b"all of it").unwrap();
    let lost = disk.cut_power(1.0);
    assert_eq!(fs::read(at("renamed")).unwrap(), b"all of it", "{lost:?}");
    assert_eq!(lost.changes_dropped, 0, "{lost:?}");
}
