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

impl Prometheus {
    /// Starts Prometheus scraping `targets` every [`SCRAPE_INTERVAL`], each
    /// scrape allowed the whole interval (Prometheus's default timeout is
    /// 10 s; a scrape during a failover waits for the next leader).
    fn start(targets: &[String]) -> Prometheus {
        let bin = std::env::var("PUSHGATE_PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let dir = temp_dir("prometheus");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: {SCRAPE_INTERVAL}s\n  scrape_timeout: {SCRAPE_INTERVAL}s\n\
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
    let addresses: BTreeMap<u64, String> = cluster
        .nodes
        .iter()
        .map(|(id, n)| (*id, format!("{}:{}", n.server.host, n.server.port)))
        .collect();
    let all: Vec<String> = addresses.values().cloned().collect();
    let prometheus = Prometheus::start(&all);

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
