//! A real Prometheus (the Debian `prometheus` binary) scraping every replica
//! of a three-node cluster with the configuration the README gives
//! (`honor_labels: true`, a `replica` label per target): every replica shows
//! Prometheus the pushed value with the pushed job label, the two survivors
//! of a leader crash show a push made after it and never fail a scrape, and
//! the crashed node shows it once restarted. Prometheus must be installed
//! (`scripts/test.sh` installs it as root); `PUSHGATE_PROMETHEUS_BIN` names
//! another binary.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::{client, free_port, temp_dir};

/// Seconds between Prometheus's scrapes, and each scrape's timeout.
const SCRAPE_INTERVAL: u64 = 4;
/// The nodes' `--read.timeout`: a consistent read waiting for the next
/// leader answers before Prometheus gives up on the scrape. The failover
/// takes about 1.4 s here; the margin is for a slow CI machine.
const READ_TIMEOUT: &str = "--read.timeout=3500ms";

/// A Prometheus server, stopped by PID when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// One series of an instant query: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// An active alert, as Prometheus's API lists it.
#[derive(Debug)]
struct Alert {
    /// `pending` (its condition holds, for less than the rule's `for`) or
    /// `firing`.
    state: String,
    labels: BTreeMap<String, String>,
    /// The rendered `summary` annotation.
    summary: String,
}

impl Alert {
    fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every `interval` seconds, each
    /// scrape allowed the whole interval (Prometheus's default timeout is
    /// 10 s; a scrape during a failover waits for the next leader), and
    /// evaluating the rules of `rule_file`, if any, every second.
    fn start(targets: &[String], interval: u64, rule_file: Option<&Path>) -> Prometheus {
        let bin = std::env::var("PUSHGATE_PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let dir = temp_dir("prometheus");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rule_files = match rule_file {
            Some(f) => format!("rule_files: ['{}']\n", f.display()),
            None => String::new(),
        };
        let config = format!(
            "global:\n  scrape_interval: {interval}s\n  scrape_timeout: {interval}s\n  evaluation_interval: 1s\n\
             {rule_files}\
             scrape_configs:\n  - job_name: pushgate\n    honor_labels: true\n\
             \x20   static_configs:\n      - targets: [{}]\n\
             \x20   relabel_configs:\n      - source_labels: [__address__]\n        target_label: replica\n",
            targets.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Prometheus {bin:?} ({e}); install it with `apt-get install -y prometheus` \
                     (scripts/test.sh does as root) or set PUSHGATE_PROMETHEUS_BIN"
                )
            });
        let p = Prometheus { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client().get(p.url("/-/ready")).send() {
                if r.status() == 200 {
                    return p;
                }
            }
            assert!(Instant::now() < deadline, "Prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The series of an instant query.
    fn query(&self, query: &str) -> Vec<Sample> {
        let query = percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC);
        let r = client()
            .get(self.url(&format!("/api/v1/query?query={query}")))
            .send()
            .expect("query Prometheus");
        let text = r.text().expect("an answer");
        let body: serde_json::Value = serde_json::from_str(&text).expect("a JSON answer");
        assert_eq!(body["status"], "success", "{body}");
        body["data"]["result"]
            .as_array()
            .expect("a vector")
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = s["value"][1].as_str().and_then(|v| v.parse().ok()).expect("a value");
                (labels, value)
            })
            .collect()
    }

    /// The `data` of a successful answer of Prometheus's HTTP API at `path`.
    fn api(&self, path: &str) -> serde_json::Value {
        let text = client()
            .get(self.url(path))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("GET {path} from Prometheus: {e}"));
        let mut body: serde_json::Value = serde_json::from_str(&text).expect("a JSON answer");
        assert_eq!(body["status"], "success", "{body}");
        body["data"].take()
    }

    /// The active alerts (pending or firing).
    fn alerts(&self) -> Vec<Alert> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .expect("a list of alerts")
            .iter()
            .map(|a| {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                let labels: BTreeMap<String, String> = a["labels"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect();
                Alert {
                    state: text(&a["state"]),
                    summary: text(&a["annotations"]["summary"]),
                    labels,
                }
            })
            .collect()
    }

    /// Waits until the alerts named `names` are active (pending or firing)
    /// and no others, each where `holds` says it should be; returns them.
    fn wait_for_alerts(&self, names: &[&str], holds: impl Fn(&Alert) -> bool) -> Vec<Alert> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let alerts = self.alerts();
            let mut active: Vec<&str> = alerts.iter().map(Alert::name).collect();
            active.sort();
            active.dedup();
            let mut want = names.to_vec();
            want.sort();
            if active == want && alerts.iter().all(&holds) {
                return alerts;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not have exactly the alerts {want:?} active within 60 s; it has {alerts:#?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `query` gives `value` for exactly the replicas `replicas`
    /// (by their `replica` label); returns those series.
    fn wait_for(&self, query: &str, value: f64, replicas: &[String]) -> Vec<Sample> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let samples = self.query(query);
            let mut seen: Vec<String> = samples
                .iter()
                .filter(|(_, v)| *v == value)
                .filter_map(|(l, _)| l.get("replica").cloned())
                .collect();
            seen.sort();
            let mut want = replicas.to_vec();
            want.sort();
            if want.iter().all(|r| seen.contains(r)) {
                return samples.into_iter().filter(|(_, v)| *v == value).collect();
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not see {query} = {value} from {want:?} within 60 s; it has {samples:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each node's HTTP address, the target Prometheus scrapes it at.
fn scrape_targets(cluster: &TestCluster) -> BTreeMap<u64, String> {
    cluster
        .nodes
        .iter()
        .map(|(id, n)| (*id, format!("{}:{}", n.server.host, n.server.port)))
        .collect()
}

const METRIC: &str = "nightly_last_success_seconds";

/// PUT `value` to the `nightly` group through `node`, retrying while the
/// cluster elects a leader (a replacing PUT may be sent again).
fn push(cluster: &TestCluster, node: u64, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = cluster
            .node(node)
            .put("/metrics/job/nightly", &format!("{METRIC} {value}\n"));
        if r.status() == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "push through node {node}: {} {}",
            r.status(),
            r.text().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn prometheus_scrapes_every_replica_and_keeps_scraping_through_a_leader_crash() {
    let mut cluster = TestCluster::start("prometheus", 3, &[READ_TIMEOUT]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let entry = *cluster.nodes.keys().find(|id| **id != leader).expect("a follower");
    let addresses = scrape_targets(&cluster);
    let all: Vec<String> = addresses.values().cloned().collect();
    let prometheus = Prometheus::start(&all, SCRAPE_INTERVAL, None);

    // Pushed through a follower, seen by Prometheus on every replica with
    // the pushed job label and no instance label (honor_labels).
    push(&cluster, entry, 111);
    for (labels, _) in prometheus.wait_for(METRIC, 111.0, &all) {
        assert_eq!(labels.get("job").map(String::as_str), Some("nightly"), "{labels:?}");
        assert!(!labels.contains_key("instance"), "{labels:?}");
    }
    let pushed_at = prometheus.query("push_time_seconds{job=\"nightly\"}");
    assert_eq!(pushed_at.len(), 3, "{pushed_at:?}");
    assert!(
        pushed_at.iter().all(|(_, v)| *v == pushed_at[0].1 && *v > 0.0),
        "every replica shows the same push time: {pushed_at:?}"
    );

    // The leader crashes: a push through a survivor reaches Prometheus
    // through both survivors.
    cluster.node_mut(leader).kill9();
    let killed = Instant::now();
    push(&cluster, entry, 222);
    let survivors: Vec<String> = addresses
        .iter()
        .filter(|(id, _)| **id != leader)
        .map(|(_, a)| a.clone())
        .collect();
    prometheus.wait_for(METRIC, 222.0, &survivors);
    // No scrape of a survivor failed since the crash: each waited for the
    // next leader instead (`up` is 0 for a failed scrape, as the crashed
    // node's scrapes show). Two scrape intervals after the crash, every
    // target was scraped since.
    let settled = killed + Duration::from_secs(2 * SCRAPE_INTERVAL + 1);
    std::thread::sleep(settled.saturating_duration_since(Instant::now()));
    let window = killed.elapsed().as_secs() + 1;
    let lowest = prometheus.query(&format!("min_over_time(up{{job=\"pushgate\"}}[{window}s])"));
    let crashed = &addresses[&leader];
    assert!(
        lowest
            .iter()
            .any(|(l, v)| l.get("replica") == Some(crashed) && *v == 0.0),
        "Prometheus shows no failed scrape of the crashed node {crashed}: {lowest:?}"
    );
    for replica in &survivors {
        let up = lowest.iter().find(|(l, _)| l.get("replica") == Some(replica));
        assert_eq!(
            up.map(|(_, v)| *v),
            Some(1.0),
            "a scrape of survivor {replica} failed in the {window} s since the leader crashed: {lowest:?}"
        );
    }

    // Restarted, the old leader catches up and shows it too; every target is up.
    cluster.node_mut(leader).spawn();
    prometheus.wait_for(METRIC, 222.0, &all);
    prometheus.wait_for("up{job=\"pushgate\"}", 1.0, &all);

    // Prometheus took every sample it scraped (no duplicate series, no
    // out-of-order samples).
    let own = client()
        .get(prometheus.url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("Prometheus's own metrics");
    for counter in [
        "prometheus_target_scrapes_sample_duplicate_timestamp_total",
        "prometheus_target_scrapes_sample_out_of_order_total",
        "prometheus_target_scrapes_sample_out_of_bounds_total",
    ] {
        let line = own
            .lines()
            .find(|l| l.starts_with(counter))
            .unwrap_or_else(|| panic!("{counter} missing from Prometheus's metrics"));
        assert!(line.ends_with(" 0"), "{line}");
    }
}

/// The alerting rules shipped for operators.
fn alerting_rules() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml")
}

/// `promtool` accepts the shipped rules and passes their unit tests
/// (`deploy/prometheus/alerts.test.yml`: what each rule fires on, and what
/// it leaves alone).
#[test]
fn the_alerting_rules_pass_their_promtool_tests() {
    let bin = std::env::var("PUSHGATE_PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into());
    let tests = alerting_rules().with_file_name("alerts.test.yml");
    for args in [
        vec!["check", "rules", alerting_rules().to_str().expect("a UTF-8 path")],
        vec!["test", "rules", tests.to_str().expect("a UTF-8 path")],
    ] {
        let out = Command::new(&bin).args(&args).output().unwrap_or_else(|e| {
            panic!(
                "cannot run {bin:?} ({e}); it comes with `apt-get install -y prometheus` (scripts/test.sh \
                 installs it as root), or set PUSHGATE_PROMTOOL_BIN"
            )
        });
        assert!(
            out.status.success(),
            "promtool {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The shipped rules in a real Prometheus scraping a real cluster: every
/// metric they name is one the nodes export, every rule evaluates, none is
/// active while the cluster is healthy; a replica cut off from the others
/// (it answers scrapes with 503) raises `PushgateReplicaDown` for it alone,
/// a second one `PushgateQuorumLost`, and healing the network clears both.
#[test]
fn the_alerting_rules_fire_on_a_real_cluster_only_when_replicas_are_lost() {
    const INTERVAL: u64 = 2;
    let mut cluster = TestCluster::start("alerts", 3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    let followers: Vec<u64> = cluster.nodes.keys().copied().filter(|id| *id != leader).collect();
    let addresses = scrape_targets(&cluster);
    let all: Vec<String> = addresses.values().cloned().collect();

    // Every pushgate metric a rule names is one the nodes export (after a
    // push, which the request counter needs), so no rule is silently empty.
    push(&cluster, followers[0], 1);
    let exported = client()
        .get(cluster.node(followers[0]).url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("a node's metrics");
    let rules = std::fs::read_to_string(alerting_rules()).expect("read the alerting rules");
    let named: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("pushgate_"))
        .collect();
    assert!(named.len() >= 4, "the rules name {named:?}");
    for name in &named {
        // A histogram's series are named after its family.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| exported.contains(&format!("\n# TYPE {base} histogram\n")))
            .unwrap_or(name);
        assert!(
            exported.contains(&format!("\n# TYPE {family} ")),
            "the alerting rules use {name}, which a node does not export"
        );
    }

    let prometheus = Prometheus::start(&all, INTERVAL, Some(&alerting_rules()));
    prometheus.wait_for("up{job=\"pushgate\"}", 1.0, &all);
    // The label values the push rule selects exist as the rule spells them.
    assert!(
        !prometheus
            .query("pushgate_http_requests_total{job=\"pushgate\",handler=\"push\",code=\"200\"}")
            .is_empty(),
        "no push counted under handler=\"push\", code=\"200\""
    );
    // Every rule evaluated without error, and a few rounds later none is active.
    let shipped = rules.matches("- alert: ").count();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let groups = prometheus.api("/api/v1/rules");
        let rules: Vec<&serde_json::Value> = groups["groups"]
            .as_array()
            .expect("rule groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules").iter())
            .collect();
        assert_eq!(rules.len(), shipped, "{groups}");
        if rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(
            rules.iter().all(|r| r["health"] != "err"),
            "a rule failed to evaluate: {groups:#}"
        );
        assert!(
            Instant::now() < deadline,
            "the rules were not evaluated within 30 s: {groups:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(3 * INTERVAL));
    let alerts = prometheus.alerts();
    assert!(alerts.is_empty(), "alerts on a healthy cluster: {alerts:#?}");

    // A follower cut off from the others answers its scrapes with 503.
    let cut = followers[0];
    cluster.isolate(cut, true);
    let alerts = prometheus.wait_for_alerts(&["PushgateReplicaDown"], |a| {
        a.labels.get("instance") == Some(&addresses[&cut])
    });
    assert_eq!(
        alerts[0].summary,
        format!("pushgate replica {} does not answer scrapes", addresses[&cut]),
        "{alerts:#?}"
    );
    assert_eq!(
        alerts[0].state, "pending",
        "the rule waits 2 minutes before firing: {alerts:#?}"
    );

    // A second one cut off: no majority, and every replica fails its scrapes.
    cluster.isolate(followers[1], true);
    prometheus.wait_for_alerts(&["PushgateReplicaDown", "PushgateQuorumLost"], |_| true);
    prometheus.wait_for("up{job=\"pushgate\"}", 0.0, &all);

    // The network back: the cluster serves again and the alerts clear.
    cluster.isolate(cut, false);
    cluster.isolate(followers[1], false);
    prometheus.wait_for("up{job=\"pushgate\"}", 1.0, &all);
    prometheus.wait_for_alerts(&[], |_| true);
}
