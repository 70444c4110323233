//! Upgrades and roll-backs between real releases: a cluster started with an
//! older pushgate binary is upgraded node by node to this build while
//! clients push, as README "Upgrading a cluster" says, and a node rolled back
//! after the log moved to the newer entry format stops instead of diverging.
//!
//! The older releases are the last one that wrote only log entry format 1
//! (before forwarded pushes carried request ids), in `PUSHGATE_OLD_RELEASE`,
//! and the last one before entry format 3 (before an empty protobuf HELP was
//! kept), in `PUSHGATE_FORMAT_2_RELEASE`. `scripts/test.sh` builds both
//! from the project's history (`scripts/old-release.sh`). Without them
//! these tests skip with a line, unless `PUSHGATE_TEST_UPGRADE=required`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::pushers::{Pushed, Pushers};
use common::{build_version, client, temp_dir, this_release, Server, PROTOBUF};
use prost::Message;
use pushgate::pb::io::prometheus::client as pm;

/// The format-1 release's binary (the older release the roll-back tests
/// use), or `None` (and a line saying so) when the test must skip.
fn old_release() -> Option<PathBuf> {
    release_from("PUSHGATE_OLD_RELEASE")
}

/// The binary named by the environment variable `var`, or `None` (and a
/// line saying so) when the test must skip.
fn release_from(var: &str) -> Option<PathBuf> {
    let required = std::env::var("PUSHGATE_TEST_UPGRADE").is_ok_and(|v| v == "required");
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        other => {
            assert!(
                !required,
                "PUSHGATE_TEST_UPGRADE=required but {var} is {other:?} (build it with scripts/old-release.sh)"
            );
            eprintln!("SKIP: no older release to upgrade from ({var}; scripts/old-release.sh builds it)");
            None
        }
    }
}

/// The last release before entry format 3, or `None` (and a line saying
/// so) when the test must skip.
fn format_2_release() -> Option<PathBuf> {
    release_from("PUSHGATE_FORMAT_2_RELEASE")
}

/// Every node's `log_entry_format` (the format of the newest entry it
/// applied), in node order; `None` for a node that does not answer. The
/// older release does not report it: it applies format 1 only.
fn log_formats(cluster: &TestCluster) -> Vec<Option<u64>> {
    cluster
        .nodes
        .keys()
        .map(|id| {
            let status = cluster.status(*id)?;
            Some(status["log_entry_format"].as_u64().unwrap_or(1))
        })
        .collect()
}

/// The entry format node `id` says it applies, as the leader's members
/// status reports it (the `entry_format` of its row).
fn entry_format_of(cluster: &mut TestCluster, id: u64) -> Option<u64> {
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let text = common::client()
        .get(cluster.node(leader).url("/api/v1/cluster/status?members=true"))
        .send()
        .ok()?
        .text()
        .ok()?;
    let status: serde_json::Value = serde_json::from_str(&text).ok()?;
    status["data"]["nodes"][id.to_string()]["entry_format"].as_u64()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No push refused, every pusher acknowledged, and every node holds every
/// acknowledged push and the leader's exact exposition.
fn assert_nothing_refused_or_lost(cluster: &mut TestCluster, pushed: &Pushed, gauge: &str, what: &str) {
    assert!(
        pushed.refusals.is_empty(),
        "{what}: {} pushes refused, the first: {:?}",
        pushed.refusals.len(),
        pushed.refusals.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        !pushed.acked.is_empty(),
        "{what}: no push was acknowledged: nothing was tested"
    );
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let want = cluster.node(leader).pushed_exposition();
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in ids {
        pushed.assert_stored(&cluster.node(id).api_metrics(), gauge);
        cluster.wait_converged(id, &want, Duration::from_secs(10));
    }
}

/// The README's upgrade procedure from the format-1 release to this one.
#[test]
fn a_rolling_upgrade_from_the_format_1_release_refuses_no_push_and_loses_none() {
    let Some(old) = old_release() else { return };
    rolling_upgrade(old, 1, "upgrade-from-1");
}

/// The same from the format-2 release: a leader of this release keeps
/// writing format 2, the format the log has reached, while a member runs
/// that release, though it could write format 3.
#[test]
fn a_rolling_upgrade_from_the_format_2_release_refuses_no_push_and_loses_none() {
    let Some(old) = format_2_release() else { return };
    rolling_upgrade(old, 2, "upgrade-from-2");
}

/// The README's upgrade procedure from the release `old`, whose newest entry
/// format is `old_format`, to this one, under pushes through every node that
/// is up: the followers first, then a stretch where a new-release leader
/// leads an old-release follower, then the last node. While any member runs
/// the old release the log stays on `old_format`, which it applies, even for
/// a push that format 3 would store differently (an empty protobuf HELP);
/// once all run this one, it moves to format 3. No push is refused at any
/// point and every node ends with every acknowledged push.
fn rolling_upgrade(old: PathBuf, old_format: u64, name: &str) {
    let mut cluster = TestCluster::start_release(temp_dir(name), 3, &[], Vec::new(), old.clone());
    let first_leader = cluster.wait_leader(Duration::from_secs(10));
    for id in 1..=3 {
        assert_eq!(
            entry_format_of(&mut cluster, id),
            Some(old_format),
            "node {id} runs the older release (it applies entry formats up to {old_format})"
        );
    }
    let urls = |c: &TestCluster| c.nodes.values().map(|n| n.server.url("")).collect::<Vec<_>>();

    // 1. The followers, one at a time, while clients push through all nodes.
    let pushers = Pushers::start(6, "upgrade", "uv", urls(&cluster));
    wait_for(
        &format!("the older release's log reaches format {old_format}"),
        Duration::from_secs(20),
        || log_formats(&cluster) == vec![Some(old_format); 3],
    );
    let followers: Vec<u64> = (1..=3).filter(|id| *id != first_leader).collect();
    for id in &followers {
        cluster.restart_node(&pushers, *id, |_, server| server.program = this_release());
        assert_eq!(
            entry_format_of(&mut cluster, *id),
            Some(3),
            "node {id} runs this release"
        );
    }
    let pushed = pushers.stop();
    assert_nothing_refused_or_lost(&mut cluster, &pushed, "uv", "upgrading the followers");
    assert_eq!(
        log_formats(&cluster),
        vec![Some(old_format); 3],
        "the old-release leader wrote format {old_format} only"
    );

    // 2. A new-release leader with an old-release follower: cut the old
    // leader off until one of the upgraded nodes is elected, then let it back.
    cluster.isolate(first_leader, true);
    wait_for("a leader among the upgraded nodes", Duration::from_secs(10), || {
        cluster.other_leader(first_leader).is_some()
    });
    cluster.isolate(first_leader, false);
    wait_for("the old leader steps down", Duration::from_secs(10), || {
        cluster.status(first_leader).is_some_and(|s| s["state"] == "Follower")
    });
    cluster.wait_caught_up(first_leader, Duration::from_secs(20));
    let pushers = Pushers::start(6, "upgrade", "uv", urls(&cluster));
    // A push that format 3 would store with its empty HELP, through the
    // old-release node (forwarded to the new leader).
    put_protobuf(
        cluster.node(first_leader),
        "/metrics/job/empty_help",
        protobuf_push("pb_empty_help", Some("")),
    );
    // The leader asks every member every 2 s which format it applies: give
    // it several rounds to (wrongly) move on.
    std::thread::sleep(Duration::from_secs(6));
    let pushed = pushers.stop();
    assert_nothing_refused_or_lost(&mut cluster, &pushed, "uv", "a new leader over an old follower");
    assert_eq!(
        log_formats(&cluster),
        vec![Some(old_format); 3],
        "while node {first_leader} runs the older release the new leader writes format {old_format}, which it applies"
    );
    // `cluster status` tells the operator the upgrade is not finished:
    // this build reports its commit (`0.1.0+<commit>`), the older one its own.
    let table = common::cli(&cluster.node(first_leader).url(""), &["cluster", "status"]);
    let warning = table
        .lines()
        .find(|l| l.starts_with("the members run different releases"))
        .unwrap_or_else(|| panic!("the status table says the upgrade is not finished:\n{table}"));
    for release in [build_version(&old), build_version(&this_release())] {
        assert!(warning.contains(&release), "{warning} names {release}");
    }
    let old_node = cluster.status(first_leader).expect("the old-release node answers");
    assert_eq!(old_node["error"], serde_json::Value::Null, "{old_node:#}");
    assert!(cluster.node(first_leader).get("/-/ready").status().is_success());

    // 3. The last node; then the log moves to format 3 on every node.
    let pushers = Pushers::start(6, "upgrade", "uv", urls(&cluster));
    cluster.restart_node(&pushers, first_leader, |_, server| server.program = this_release());
    wait_for("entry format 3 on every node", Duration::from_secs(20), || {
        log_formats(&cluster) == vec![Some(3); 3]
    });
    std::thread::sleep(Duration::from_secs(1));
    let pushed = pushers.stop();
    assert_nothing_refused_or_lost(&mut cluster, &pushed, "uv", "upgrading the last node");
    let table = common::cli(&cluster.node(first_leader).url(""), &["cluster", "status"]);
    assert!(
        !table.contains("different releases"),
        "the upgrade is finished:\n{table}"
    );
    // The empty HELP, pushed again, is now kept on every node.
    put_protobuf(
        cluster.node(first_leader),
        "/metrics/job/empty_help",
        protobuf_push("pb_empty_help", Some("")),
    );
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let want = cluster.node(leader).pushed_exposition();
    assert!(want.contains("# HELP pb_empty_help \n"), "{want}");
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in ids {
        cluster.wait_converged(id, &want, Duration::from_secs(10));
    }
}

/// Rolling a node back to the older release once the log holds format-3
/// entries: the node stops before applying what it cannot (it never serves
/// or acknowledges anything from a diverged state), the others go on, and
/// started again on this release it catches up with nothing lost.
#[test]
fn a_node_rolled_back_after_the_format_changed_stops_and_catches_up_when_upgraded_again() {
    let Some(old) = old_release() else { return };
    let mut cluster = TestCluster::start("rollback", 3, &[]);
    let urls: Vec<String> = cluster.nodes.values().map(|n| n.server.url("")).collect();
    let pushers = Pushers::start(6, "rollback", "rb", urls);
    wait_for("entry format 3 on every node", Duration::from_secs(20), || {
        log_formats(&cluster) == vec![Some(3); 3]
    });
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let back = (1..=3).find(|id| *id != leader).expect("a follower");

    // Roll node `back` back to the older release.
    let url = cluster.node(back).url("");
    pushers.avoid(&url);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        cluster.node_mut(back).terminate(),
        Some(0),
        "node {back} exits cleanly on SIGTERM"
    );
    cluster.node_mut(back).program = old;
    cluster.node_mut(back).spawn_unready();
    // It meets a format-3 entry or snapshot, either while replaying its own
    // log (it exits) or from the leader (it keeps running, unhealthy). It
    // is never ready, and it says what to do.
    let deadline = Instant::now() + Duration::from_secs(10);
    let said = loop {
        let server = cluster.node_mut(back);
        let ready = common::client()
            .get(server.url("/-/ready"))
            .timeout(Duration::from_secs(2))
            .send()
            .map(|r| r.status().as_u16());
        assert_ne!(ready.ok(), Some(200), "the rolled-back node {back} must not be ready");
        if let Some(status) = server.exit_status() {
            assert!(!status.success(), "it exits with a failure: {status:?}");
            break server.log_text();
        }
        let health = common::client()
            .get(server.url("/-/healthy"))
            .timeout(Duration::from_secs(2))
            .send()
            .and_then(|r| Ok((r.status().as_u16(), r.text()?)));
        if let Ok((503, body)) = health {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the rolled-back node {back} neither stopped nor failed /-/healthy:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        said.contains("was written by a newer pushgate") && said.contains("run the leader's release on it"),
        "the rolled-back node says why it stopped and what to do:\n{said}"
    );
    // The other two go on meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    let pushed = pushers.stop();
    assert!(
        pushed.refusals.is_empty(),
        "{} pushes refused by the others while node {back} was rolled back, the first: {:?}",
        pushed.refusals.len(),
        pushed.refusals.iter().take(3).collect::<Vec<_>>()
    );

    // Upgraded again, it catches up and holds every acknowledged push.
    let server = cluster.node_mut(back);
    if server.is_running() {
        assert_eq!(server.terminate(), Some(0), "node {back} exits cleanly on SIGTERM");
    }
    server.program = this_release();
    server.spawn();
    cluster.wait_caught_up(back, Duration::from_secs(20));
    assert_nothing_refused_or_lost(&mut cluster, &pushed, "rb", "after the roll-back");
}

/// A protobuf push of one untyped sample named `name` whose HELP is `help`.
fn protobuf_push(name: &str, help: Option<&str>) -> Vec<u8> {
    pm::MetricFamily {
        name: Some(name.into()),
        help: help.map(str::to_string),
        r#type: Some(pm::MetricType::Untyped as i32),
        metric: vec![pm::Metric {
            untyped: Some(pm::Untyped { value: Some(1.0) }),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_length_delimited_to_vec()
}

/// The `log_entry_format` a single node reports: the newest format it applied.
fn log_entry_format(node: &Server) -> u64 {
    let text = node.get("/api/v1/cluster/status").text().expect("status");
    let status: serde_json::Value = serde_json::from_str(&text).expect("json");
    status["data"]["log_entry_format"].as_u64().expect("log_entry_format")
}

fn put_protobuf(node: &Server, path: &str, body: Vec<u8>) {
    let r = client()
        .put(node.url(path))
        .header("content-type", PROTOBUF)
        .body(body)
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 200, "PUT {path}: {}", r.text().unwrap_or_default());
}

/// A single node writes the oldest entry format that means what a push
/// says: a roll-back to the older release keeps working until a push needs
/// the newest format (an empty protobuf HELP, which format 3 keeps as
/// `# HELP name `). From then on the older release refuses the data
/// directory and says why, and this release serves everything.
#[test]
fn a_single_node_stays_readable_by_the_older_release_until_a_push_needs_the_newest_format() {
    let Some(old) = old_release() else { return };
    let dir = temp_dir("single-rollback");
    let data = dir.path().join("data");
    let mut node = Server::start_in(&data, &[]);
    node.put_ok("/metrics/job/text", "text_pushed 1\n");
    put_protobuf(
        &node,
        "/metrics/job/pb",
        protobuf_push("pb_with_help", Some("some help")),
    );
    put_protobuf(&node, "/metrics/job/pb_no_help", protobuf_push("pb_without_help", None));
    assert_eq!(log_entry_format(&node), 1, "nothing needed more than the base format");
    assert_eq!(node.terminate(), Some(0));

    // Rolled back: the older release opens it and serves every push.
    node.program = old.clone();
    node.spawn();
    let exposition = node.pushed_exposition();
    for line in [
        "text_pushed{instance=\"\",job=\"text\"} 1",
        "# HELP pb_with_help some help",
        "pb_with_help{instance=\"\",job=\"pb\"} 1",
        "pb_without_help{instance=\"\",job=\"pb_no_help\"} 1",
    ] {
        assert!(
            exposition.lines().any(|l| l == line),
            "the older release serves {line:?}:\n{exposition}"
        );
    }
    assert_eq!(node.terminate(), Some(0));

    // Upgraded again, a push with an empty HELP moves the log to format 3.
    node.program = this_release();
    node.spawn();
    put_protobuf(&node, "/metrics/job/empty", protobuf_push("pb_empty_help", Some("")));
    assert_eq!(log_entry_format(&node), 3);
    let want = node.pushed_exposition();
    assert!(want.contains("# HELP pb_empty_help \n"), "{want}");
    assert_eq!(node.terminate(), Some(0));

    // The older release cannot mean what that entry says: it stops. When
    // its Raft core meets the entry before start-up is over it exits; when
    // after, it keeps running stopped, as after a failed disk (`/-/healthy`
    // answers 503 with the reason). Which one comes first is a race in that
    // release; either way it applies nothing and says why.
    node.program = old;
    node.spawn_unready();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = node.exit_status() {
            assert!(!status.success(), "it exits with a failure: {status:?}");
            break;
        }
        let healthy = client().get(node.url("/-/healthy")).send();
        if let Ok(r) = healthy {
            if r.status() == 503 && r.text().unwrap_or_default().contains("was written by a newer pushgate") {
                assert_eq!(node.terminate(), Some(0), "the stopped older release exits on SIGTERM");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the older release neither stopped nor failed /-/healthy on a format-3 data directory:\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let said = node.log_text();
    assert!(
        said.contains("was written by a newer pushgate"),
        "the older release says why it stopped:\n{said}"
    );

    // This release serves everything, the empty HELP included.
    node.program = this_release();
    node.spawn();
    assert_eq!(node.pushed_exposition(), want);
}
