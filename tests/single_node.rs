//! Black-box tests of one durable node: the real binary, real sockets, a real disk.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{cli, client, free_port, refused_start_with_web_config, temp_dir, Server, PROTOBUF};

#[test]
fn push_scrape_and_delete_round_trip() {
    let tmp = temp_dir("roundtrip");
    let s = Server::start_in(&tmp.path().join("data"), &[]);
    let body = "# TYPE some_metric counter\nsome_metric{label=\"val1\"} 42\n# TYPE another_metric gauge\n# HELP another_metric Just an example.\nanother_metric 2398.283\n";
    let r = s.put("/metrics/job/some_job/instance/some_instance", body);
    assert_eq!(r.status(), 200);
    let index: u64 = r.headers()["x-pushgate-log-index"].to_str().unwrap().parse().unwrap();
    assert!(index > 0);
    let text = s.pushed_exposition();
    assert!(
        text.contains("some_metric{instance=\"some_instance\",job=\"some_job\",label=\"val1\"} 42\n"),
        "{text}"
    );
    assert!(text.contains("# HELP another_metric Just an example.\n# TYPE another_metric gauge\n"));
    assert_eq!(s.delete("/metrics/job/some_job/instance/some_instance").status(), 202);
    assert_eq!(s.pushed_exposition(), "");
}

#[test]
fn state_survives_a_graceful_restart_byte_for_byte() {
    let tmp = temp_dir("restart");
    let mut s = Server::start_in(&tmp.path().join("data"), &[]);
    s.put(
        "/metrics/job/a/instance/1",
        "# TYPE c counter\nc{x=\"1\"} 1\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n",
    );
    s.post("/metrics/job/b", "# HELP g help\n# TYPE g gauge\ng 1\n");
    s.put("/metrics/job/failed", "x 1 1\n");
    let before = s.pushed_exposition();
    let api_before = s.api_metrics();
    assert_eq!(s.terminate(), Some(0), "clean exit on SIGTERM");
    s.spawn();
    assert_eq!(s.pushed_exposition(), before);
    assert_eq!(s.api_metrics(), api_before);
}

#[test]
fn malformed_pushes_get_4xx_and_change_nothing() {
    let tmp = temp_dir("malformed");
    let s = Server::start_in(
        &tmp.path().join("data"),
        &["--push.max-body-bytes=4096", "--push.max-series=10"],
    );
    assert_eq!(
        s.put("/metrics/job/keep/instance/i", "# TYPE kept gauge\nkept 1\n")
            .status(),
        200
    );
    let before = s.pushed_exposition();
    let api_before = s.api_metrics();
    let c = client();
    let url = |p: &str| s.url(p);
    let text_bodies: &[&str] = &[
        "blablabla\n",
        "no_newline 1",
        "crlf 1\r\n",
        "bad-name 1\n",
        "m{__name__=\"x\"} 1\n",
        "# TYPE m gauge\n# TYPE m counter\nm 1\n",
        "m abc\n",
        "m{a=\"1\",a=\"2\"} 1\n",
        "m{a=\"\\t\"} 1\n",
        "m 1 2 3\n",
        "m{a=\"\u{0}\n",
        "m 1e400\n",
    ];
    for body in text_bodies {
        for path in ["/metrics/job/keep/instance/i", "/metrics/job/new_group"] {
            let r = c.put(url(path)).body(body.to_string()).send().unwrap();
            assert_eq!(r.status(), 400, "{body:?}");
            assert!(
                r.text().unwrap().starts_with("text format parsing error in line"),
                "{body:?}"
            );
        }
    }
    let invalid_utf8 = c
        .put(url("/metrics/job/keep"))
        .body(vec![b'm', b'{', b'a', b'=', b'"', 0xff, b'"', b'}', b' ', b'1', b'\n'])
        .send()
        .unwrap();
    assert_eq!(invalid_utf8.status(), 400);
    let garbage_pb = c
        .put(url("/metrics/job/keep"))
        .header("content-type", PROTOBUF)
        .body("garbage-not-protobuf")
        .send()
        .unwrap();
    assert_eq!(garbage_pb.status(), 400);
    let bad_gzip = c
        .put(url("/metrics/job/keep"))
        .header("content-encoding", "gzip")
        .body("x 1\n")
        .send()
        .unwrap();
    assert_eq!(bad_gzip.status(), 400);
    let bad_snappy = c
        .put(url("/metrics/job/keep"))
        .header("content-encoding", "snappy")
        .body("x 1\n")
        .send()
        .unwrap();
    assert_eq!(bad_snappy.status(), 400);
    let too_big = c
        .put(url("/metrics/job/keep"))
        .body("m 1\n".repeat(2000))
        .send()
        .unwrap();
    assert_eq!(too_big.status(), 413);
    assert!(too_big.text().unwrap().contains("4096"));
    let too_many: String = (0..11).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
    let r = c.put(url("/metrics/job/keep")).body(too_many).send().unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().unwrap().contains("--push.max-series"));
    for path in [
        "/metrics/job/j/instance",
        "/metrics/job/j/a-b/c",
        "/metrics/job/j/__x/c",
        "/metrics/job@base64/foo.bar",
        "/metrics/job@base64/=",
        "/metrics/job/j/lbl@base64/foo.bar",
        "/metrics/job/j/a/%FF",
    ] {
        let r = c.put(url(path)).body("m 1\n").send().unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let r = c.delete(url(path)).send().unwrap();
        assert_eq!(r.status(), 400, "{path}");
    }
    assert_eq!(s.pushed_exposition(), before);
    assert_eq!(s.api_metrics(), api_before);
    // The node still works.
    assert_eq!(s.put("/metrics/job/keep/instance/i", "kept 2\n").status(), 200);
}

#[test]
fn a_trailing_slash_on_the_scrape_path_redirects_like_the_reference() {
    let tmp = temp_dir("redirect");
    let s = Server::start_in(&tmp.path().join("data"), &[]);
    let r = s.get("/metrics/");
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/metrics");
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.text().unwrap(), "<a href=\"/metrics\">Moved Permanently</a>.\n\n");
    // Only a method that has the route is redirected (the reference's router).
    let put = client().put(s.url("/metrics/")).body("x 1\n").send().unwrap();
    assert_eq!(put.status(), 404);
    let put = client().put(s.url("/metrics/job/")).body("x 1\n").send().unwrap();
    assert_eq!(put.status(), 307);
    assert_eq!(put.headers()["location"], "/metrics/job");
    assert_eq!(put.text().unwrap(), "", "no body for other methods, as in Go");
}

#[test]
fn invalid_base64_job_does_not_wedge_the_route() {
    let tmp = temp_dir("wedge");
    let s = Server::start_in(&tmp.path().join("data"), &[]);
    assert_eq!(s.delete("/metrics/job@base64/!!!").status(), 400);
    assert_eq!(s.delete("/metrics/job@base64/YWJj").status(), 202);
    assert_eq!(s.put("/metrics/job@base64/foo.bar", "").status(), 400);
    assert_eq!(s.put("/metrics/job@base64/Zm9v", "m 1\n").status(), 200);
}

#[test]
fn concurrent_pushes_share_log_entries_and_fsyncs() {
    let tmp = temp_dir("batching");
    let s = Arc::new(Server::start_in(&tmp.path().join("data"), &[]));
    let entries_before = s.self_metric("pushgate_log_entries_appended_total");
    let fsyncs_before = s.self_metric("pushgate_log_fsyncs_total");
    let pushes = 32 * 20;
    let mut threads = Vec::new();
    for t in 0..32 {
        let s = s.clone();
        threads.push(std::thread::spawn(move || {
            let c = client();
            for i in 0..20 {
                let r = c
                    .put(s.url(&format!("/metrics/job/batch/t/{t}")))
                    .body(format!("v{{i=\"x\"}} {i}\n"))
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let entries = s.self_metric("pushgate_log_entries_appended_total") - entries_before;
    let fsyncs = s.self_metric("pushgate_log_fsyncs_total") - fsyncs_before;
    let applied = s.self_metric("pushgate_mutations_applied_total");
    assert!(applied >= pushes as f64, "applied {applied}");
    assert!(
        entries < pushes as f64,
        "{entries} entries for {pushes} pushes: no batching"
    );
    assert!(fsyncs < pushes as f64, "{fsyncs} fsyncs for {pushes} pushes");
    assert_eq!(s.api_metrics().as_array().unwrap().len(), 32);
}

#[test]
fn entries_are_applied_from_memory_not_read_back_from_disk() {
    let tmp = temp_dir("log-reads");
    let s = Server::start_in(&tmp.path().join("data"), &[]);
    for i in 0..50 {
        assert_eq!(s.put("/metrics/job/reads", &format!("v {i}\n")).status(), 200);
    }
    let read = |from: &str| s.self_metric(&format!("pushgate_log_entries_read_total{{from=\"{from}\"}}"));
    let appended = s.self_metric("pushgate_log_entries_appended_total");
    assert!(
        read("memory") >= 50.0,
        "{} entries applied from memory after 50 pushes",
        read("memory")
    );
    assert!(
        read("disk") < appended,
        "{} of {appended} entries read back from disk",
        read("disk")
    );
}

#[test]
fn a_full_queue_answers_503_and_loses_nothing_acknowledged() {
    let tmp = temp_dir("backpressure");
    // A queue budget of 1 KiB: one pending mutation at a time.
    let s = Arc::new(Server::start_in(&tmp.path().join("data"), &["--push.queue-bytes=1"]));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for t in 0..16 {
        let (s, refused) = (s.clone(), refused.clone());
        threads.push(std::thread::spawn(move || {
            let c = client();
            let mut last_ok = None;
            for i in 0..30 {
                let r = c
                    .put(s.url(&format!("/metrics/job/bp/t/{t}")))
                    .body(format!("v {i}\n"))
                    .send()
                    .unwrap();
                match r.status().as_u16() {
                    200 => last_ok = Some(i),
                    503 => {
                        assert!(r.text().unwrap().contains("queue"));
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            (t, last_ok)
        }));
    }
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(refused.load(Ordering::Relaxed) > 0, "no push was refused");
    assert!(s.self_metric("pushgate_mutation_queue_rejected_total") > 0.0);
    let groups = s.api_metrics();
    for (t, last_ok) in results {
        let Some(v) = last_ok else { continue };
        let (t, v) = (t.to_string(), v.to_string());
        let g = groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["labels"]["t"].as_str() == Some(t.as_str()))
            .expect("group");
        assert_eq!(g["v"]["metrics"][0]["value"].as_str(), Some(v.as_str()));
    }
}

#[test]
fn snapshots_purge_the_log_and_restore_on_restart() {
    let tmp = temp_dir("snapshots");
    let mut s = Server::start_in(&tmp.path().join("data"), &["--storage.snapshot-every=20"]);
    for i in 0..150 {
        assert_eq!(
            s.put(&format!("/metrics/job/snap/i/{}", i % 7), &format!("v {i}\n"))
                .status(),
            200
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.self_metric("pushgate_snapshots_built_total") < 1.0 {
        assert!(std::time::Instant::now() < deadline, "no snapshot was built");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = s.pushed_exposition();
    s.kill9();
    s.spawn();
    assert_eq!(s.pushed_exposition(), before);
}

/// A log that outgrows the state is snapshotted even when the entry count
/// (`--storage.snapshot-every`) is far away: memory and replay stay bounded.
#[test]
fn a_log_larger_than_the_state_triggers_a_snapshot() {
    let tmp = temp_dir("snapshot-bytes");
    let s = Server::start_in(&tmp.path().join("data"), &["--storage.snapshot-every=1000000"]);
    // One group rewritten over and over: the state stays ~20 kB, the log grows.
    let body: String = (0..400).map(|k| format!("big{{k=\"{k}\"}} 1\n")).collect();
    for _ in 0..300 {
        s.put_ok("/metrics/job/bytes", &body);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.self_metric("pushgate_snapshots_built_total") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the log outgrew the state and no snapshot was built"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn persistence_file_is_refused_and_points_to_storage_path() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["--persistence.file=/tmp/x.data", "--web.listen-address=127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--storage.path"));
}

#[test]
fn help_documents_every_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--web.listen-address",
        "--web.telemetry-path",
        "--web.external-url",
        "--web.route-prefix",
        "--web.enable-lifecycle",
        "--web.enable-admin-api",
        "--push.disable-consistency-check",
        "--storage.path",
        "--log.level",
        "--log.format",
        "--cluster.node-id",
        "--cluster.peers",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn a_data_directory_keeps_its_node_identity() {
    let tmp = temp_dir("identity");
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &[]);
    s.terminate();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .arg(format!("--storage.path={}", dir.display()))
        .args([
            "--cluster.node-id=2",
            "--web.listen-address=127.0.0.1:0",
            "--cluster.listen-address=127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("belongs to node 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lifecycle_quit_exits_cleanly() {
    let tmp = temp_dir("quit");
    let mut s = Server::start_in(&tmp.path().join("data"), &["--web.enable-lifecycle"]);
    let r = s.put("/-/quit", "");
    assert_eq!(r.status(), 200);
    let mut child = s.child.take().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn self_metrics_match_the_reserved_table() {
    let tmp = temp_dir("selfmetrics");
    let s = Server::start_in(&tmp.path().join("data"), &[]);
    s.put("/metrics/job/x", "a 1\n");
    let text = s.get("/metrics").text().unwrap();
    let exported: std::collections::BTreeSet<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(n, _)| n.starts_with("process_") || n.starts_with("pushgate"))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    // A single node has no followers: no series of replication lag.
    let table: std::collections::BTreeSet<(String, String)> = pushgate::model::reserved::SELF_FAMILIES
        .iter()
        .chain(pushgate::model::reserved::SOFT_SELF_FAMILIES)
        .filter(|(n, _)| *n != "pushgate_raft_replication_lag_entries")
        .map(|(n, t)| (n.to_string(), pushgate::model::render::type_word(*t).to_string()))
        .collect();
    assert_eq!(exported, table);
}

/// An own family added after the consistency check's rules were fixed
/// (`SOFT_SELF_FAMILIES`) never refuses a push: a pushed family of that name
/// is stored and scraped instead of the own one, in the text and the
/// protobuf formats alike, and the own one is back once the group is deleted.
#[test]
fn a_pushed_family_named_like_a_newer_own_family_replaces_it_in_the_scrape() {
    const NAME: &str = "pushgate_raft_leader_changes_seen_total";
    const PROTOBUF_TEXT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text";
    let tmp = temp_dir("soft-family");
    let s = Server::start_in(&tmp.path().join("data"), &[]);
    let type_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("# TYPE {NAME} ")))
            .map(str::to_string)
            .collect()
    };
    let protobuf_text = || {
        client()
            .get(s.url("/metrics"))
            .header("Accept", PROTOBUF_TEXT)
            .send()
            .and_then(|r| r.text())
            .expect("protobuf text scrape")
    };
    let families_named = |text: &str| text.matches(&format!("name: \"{NAME}\"")).count();
    // The lines of the family `NAME`, up to the next family.
    let family_block = |text: &str| -> String {
        let after = text.split(&format!("name: \"{NAME}\"")).nth(1).unwrap_or_default();
        after.split("\nname: ").next().unwrap_or_default().to_string()
    };

    assert_eq!(
        type_lines(&s.get("/metrics").text().unwrap()),
        [format!("# TYPE {NAME} counter")]
    );
    assert!(s.self_metric(NAME) >= 1.0, "a single node sees itself become leader");

    s.put_ok("/metrics/job/x", &format!("# TYPE {NAME} gauge\n{NAME} 7\n"));
    let text = s.get("/metrics").text().unwrap();
    assert_eq!(type_lines(&text), [format!("# TYPE {NAME} gauge")], "{text}");
    let samples: Vec<&str> = text.lines().filter(|l| l.starts_with(NAME)).collect();
    assert_eq!(samples, [format!("{NAME}{{instance=\"\",job=\"x\"}} 7")]);
    let proto = protobuf_text();
    assert_eq!(families_named(&proto), 1, "{proto}");
    let block = family_block(&proto);
    assert!(block.contains("type: GAUGE") && block.contains("value: 7"), "{block}");

    assert_eq!(s.delete("/metrics/job/x").status(), 202);
    let text = s.get("/metrics").text().unwrap();
    assert_eq!(type_lines(&text), [format!("# TYPE {NAME} counter")], "{text}");
    assert_eq!(families_named(&protobuf_text()), 1);
}

/// A web configuration file with one user: `admin`, password `secret`.
fn web_config_with_admin(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("web.yml");
    let hash = bcrypt::hash("secret", 4).expect("bcrypt");
    std::fs::write(
        &path,
        format!("basic_auth_users:\n  admin: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"),
    )
    .expect("write web.yml");
    path
}

/// `--web.config.file`: a push without the credentials stores nothing, the
/// configured headers are on every answer, a user added to the file while
/// the gateway runs can push at once, a file broken by an edit refuses
/// everything with 500 (never lets a request through) until it is fixed, and
/// the admin client sends the credentials of its URL.
#[test]
fn web_config_file_guards_every_route_and_is_read_again_when_edited() {
    let tmp = temp_dir("web-config");
    let config = web_config_with_admin(tmp.path());
    let flag = format!("--web.config.file={}", config.display());
    let cluster_port = format!("--cluster.listen-address=127.0.0.1:{}", free_port());
    let mut s = Server::unstarted(
        "127.0.0.1",
        free_port(),
        &tmp.path().join("data"),
        &[&flag, &cluster_port],
    );
    s.credentials = Some(("admin".into(), "secret".into()));
    s.spawn();

    let anonymous = client()
        .put(s.url("/metrics/job/guarded"))
        .body("guarded 1\n")
        .send()
        .expect("PUT");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Basic");
    assert_eq!(anonymous.headers()["x-frame-options"], "deny");
    assert_eq!(anonymous.text().unwrap(), "Unauthorized\n");
    s.put_ok("/metrics/job/guarded", "guarded 2\n");
    let scrape = s.get("/metrics");
    assert_eq!(scrape.headers()["x-frame-options"], "deny");
    assert!(scrape
        .text()
        .unwrap()
        .contains("guarded{instance=\"\",job=\"guarded\"} 2\n"));

    // The admin client with credentials in its URL.
    let status = cli(
        &format!("http://admin:secret@127.0.0.1:{}", s.port),
        &["cluster", "status", "--output=json"],
    );
    assert!(status.contains("\"cluster_id\""), "{status}");

    // A user added while it runs.
    let hash = bcrypt::hash("other", 4).expect("bcrypt");
    let text = std::fs::read_to_string(&config).expect("read web.yml");
    std::fs::write(
        &config,
        text.replace(
            "basic_auth_users:\n",
            &format!("basic_auth_users:\n  operator: {hash}\n"),
        ),
    )
    .expect("edit web.yml");
    let r = client()
        .put(s.url("/metrics/job/guarded"))
        .basic_auth("operator", Some("other"))
        .body("guarded 3\n")
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());

    // Broken by an edit: 500 for everyone, nothing changes.
    std::fs::write(&config, "basic_auth_users: [admin]\n").expect("break web.yml");
    for r in [
        s.put("/metrics/job/guarded", "guarded 4\n"),
        client().get(s.url("/-/healthy")).send().expect("GET"),
    ] {
        assert_eq!(r.status(), 500);
    }
    std::fs::write(&config, text).expect("fix web.yml");
    assert!(s
        .get("/metrics")
        .text()
        .unwrap()
        .contains("guarded{instance=\"\",job=\"guarded\"} 3\n"));
}

/// A web configuration pushgate cannot honour stops the start with a message
/// that says why (the reference logs it and exits 0).
#[test]
fn an_unusable_web_config_file_stops_the_start() {
    let tmp = temp_dir("web-config-bad");
    for (text, says) in [
        ("basic_auth_users:\n  admin: secret\n", "not a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n",
            "failed to load X509KeyPair",
        ),
        ("basic_auth_user:\n  admin: x\n", "unknown field"),
    ] {
        let stderr = refused_start_with_web_config(tmp.path(), text);
        assert!(stderr.contains(says), "{text:?}: {stderr}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .arg("--web.config.file=/nonexistent/web.yml")
        .arg("--web.listen-address=127.0.0.1:0")
        .output()
        .expect("run pushgate");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read --web.config.file"));
}

/// A node whose stderr (its log) is a pipe nobody reads any more keeps
/// working and still stops on SIGTERM: a log line that cannot be written is
/// dropped, not a panic of the task that logged it (here the signal handler).
#[test]
fn a_closed_log_pipe_neither_breaks_the_node_nor_its_shutdown() {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let tmp = temp_dir("closed-log");
    let cluster = format!("--cluster.listen-address=127.0.0.1:{}", free_port());
    let mut s = Server::unstarted("127.0.0.1", free_port(), &tmp.path().join("data"), &[&cluster]);
    // As `Server::spawn_unready`, with stderr a pipe whose reader is gone.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .arg(format!("--web.listen-address={}:{}", s.host, s.port))
        .arg(format!("--storage.path={}", s.dir.display()))
        .args(&s.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pushgate");
    drop(child.stderr.take());
    s.child = Some(child);
    s.wait_ready(Duration::from_secs(30));
    s.put_ok("/metrics/job/closed_log", "m 1\n");
    assert_eq!(
        s.terminate(),
        Some(0),
        "pushgate stops on SIGTERM with its log pipe closed"
    );
}
