//! Helpers for black-box tests: start the real `pushgate` binary on loopback
//! with its own data directory, talk to it over HTTP, stop it by PID.

#![allow(dead_code)]

pub mod cluster;
pub mod crash_pushers;
pub mod disk;
pub mod failing_syncs;
pub mod numbered;
pub mod pki;
pub mod power_loss;
pub mod proxy;
pub mod pushers;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// A port for a test server: free on 127.0.0.1 and on every node address of
/// `cluster::node_ip`, and below the kernel's ephemeral range.
///
/// Nodes dial their peers from their own loopback address, and a connection
/// they closed keeps its ephemeral port in TIME_WAIT for a minute; a
/// listener cannot bind that address and port meanwhile. A port picked from
/// the ephemeral range (port 0) could be one of those, or be taken by a new
/// outgoing connection before the node binds it: the node then fails with
/// "Address already in use". The kernel never gives an outgoing connection
/// a port below the range. Each port is handed out once per test process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::net::{IpAddr, SocketAddr};
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // The wildcard address too: it cannot be bound while any address holds
    // the port for listening.
    let addresses: Vec<IpAddr> = [IpAddr::from([0, 0, 0, 0]), IpAddr::from([127, 0, 0, 1])]
        .into_iter()
        .chain((1..=9).map(cluster::node_ip))
        .collect();
    let bindable = |port: u16| {
        addresses
            .iter()
            .all(|ip| TcpListener::bind(SocketAddr::new(*ip, port)).is_ok())
    };
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    if ephemeral_start > 11_000 {
        for _ in 0..10_000 {
            let port = rand::Rng::gen_range(&mut rand::thread_rng(), 10_000..ephemeral_start);
            if !given.contains(&port) && bindable(port) {
                given.insert(port);
                return port;
            }
        }
    }
    // No room below the ephemeral range: let the kernel pick.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running pushgate process, killed (by PID) when dropped.
pub struct Server {
    pub child: Option<Child>,
    /// The loopback address the node's HTTP (and cluster) ports listen on.
    pub host: String,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
    /// A command the process runs under (`nsenter ... --`), if any.
    pub wrap: Vec<String>,
    /// Basic-auth user and password the helpers send (`--web.config.file`).
    pub credentials: Option<(String, String)>,
    /// The pushgate binary `spawn` runs: this build's, or another
    /// release's (tests/upgrade.rs).
    pub program: PathBuf,
}

/// This build's pushgate binary.
pub fn this_release() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pushgate"))
}

/// What the pushgate binary `program` says it is (`--version`): the release
/// and, for a build from a git checkout, the commit (`0.1.0+6beeb0486a07`).
pub fn build_version(program: &Path) -> String {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .expect("pushgate --version");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("pushgate ")
        .to_string()
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

impl Server {
    /// Starts pushgate with a data directory `dir` and extra flags.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        let mut extra: Vec<&str> = extra.to_vec();
        let cluster = format!("--cluster.listen-address=127.0.0.1:{}", free_port());
        extra.push(&cluster);
        Self::start_at("127.0.0.1", free_port(), dir, &extra)
    }

    /// Starts pushgate with HTTP on `host:port` and its data in `dir`.
    pub fn start_at(host: &str, port: u16, dir: &Path, extra: &[&str]) -> Server {
        let mut s = Self::unstarted(host, port, dir, extra);
        s.spawn();
        s
    }

    /// A server that `spawn` starts: HTTP on `host:port`, data in `dir`.
    pub fn unstarted(host: &str, port: u16, dir: &Path, extra: &[&str]) -> Server {
        Server {
            child: None,
            host: host.to_string(),
            port,
            dir: dir.to_path_buf(),
            log: dir.with_extension(format!("{port}.log")),
            args: extra.iter().map(|s| s.to_string()).collect(),
            wrap: Vec::new(),
            credentials: None,
            program: this_release(),
        }
    }

    pub fn spawn(&mut self) {
        self.spawn_unready();
        self.wait_ready(Duration::from_secs(30));
    }

    /// Starts the process without waiting for it to be ready.
    pub fn spawn_unready(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let bin = self.program.display().to_string();
        let mut argv = self.wrap.iter().chain(std::iter::once(&bin));
        let program = argv.next().expect("a program");
        let child = Command::new(program)
            .args(argv)
            .arg(format!("--web.listen-address={}:{}", self.host, self.port))
            .arg(format!("--storage.path={}", self.dir.display()))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start pushgate");
        self.child = Some(child);
    }

    /// How the process ended, if it has (without stopping it).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{}", self.host, self.port, path)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let c = client();
        let prefix = self
            .args
            .iter()
            .find_map(|a| a.strip_prefix("--web.route-prefix="))
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("pushgate exited early ({status}):\n{}", self.log_text());
                }
            }
            if let Ok(r) = self
                .authorized(c.get(self.url(&format!("{prefix}/-/ready"))))
                .timeout(Duration::from_secs(2))
                .send()
            {
                if r.status() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pushgate not ready after {timeout:?}:\n{}", self.log_text());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: signalling a child we started, by its PID.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// `request` with this server's basic-auth credentials, if it has any.
    pub fn authorized(&self, request: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    pub fn put(&self, path: &str, body: &str) -> reqwest::blocking::Response {
        self.authorized(client().put(self.url(path)).body(body.to_string()))
            .send()
            .expect("PUT")
    }

    pub fn post(&self, path: &str, body: &str) -> reqwest::blocking::Response {
        self.authorized(client().post(self.url(path)).body(body.to_string()))
            .send()
            .expect("POST")
    }

    pub fn delete(&self, path: &str) -> reqwest::blocking::Response {
        self.authorized(client().delete(self.url(path))).send().expect("DELETE")
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.authorized(client().get(self.url(path))).send().expect("GET")
    }

    /// The scrape without the process's own families (lines of pushed families only).
    pub fn pushed_exposition(&self) -> String {
        let text = self.get("/metrics").text().expect("scrape body");
        own_lines_removed(&text)
    }

    pub fn api_metrics(&self) -> serde_json::Value {
        let r = self.get("/api/v1/metrics");
        assert_eq!(r.status(), 200);
        serde_json::from_str::<serde_json::Value>(&r.text().expect("body")).expect("json")["data"].clone()
    }

    /// Value of a self metric sample (first line starting with `name`).
    pub fn self_metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").text().expect("scrape body");
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name}"))
    }
}

pub fn own_lines_removed(text: &str) -> String {
    let own = |l: &str| {
        let name = l.trim_start_matches("# HELP ").trim_start_matches("# TYPE ");
        name.starts_with("process_") || name.starts_with("pushgate_") || name.starts_with("pushgateway_")
    };
    text.lines().filter(|l| !own(l)).map(|l| format!("{l}\n")).collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("pushgate-{name}-"))
        .tempdir()
        .expect("temp dir")
}

impl Server {
    /// PUT that must be acknowledged with 200.
    pub fn put_ok(&self, path: &str, body: &str) {
        let r = self.put(path, body);
        assert_eq!(r.status(), 200, "PUT {path}: {}", r.text().unwrap_or_default());
    }
}

/// Starts pushgate with `web_yml` as its `--web.config.file` (written into
/// `dir`), expects it to refuse to start, and returns what it said.
pub fn refused_start_with_web_config(dir: &Path, web_yml: &str) -> String {
    let path = dir.join("web.yml");
    std::fs::write(&path, web_yml).expect("write web.yml");
    refused_start(dir, &[format!("--web.config.file={}", path.display())])
}

/// Starts pushgate with `flags` (data in `dir`), expects it to refuse to
/// start, and returns what it said.
pub fn refused_start(dir: &Path, flags: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(flags)
        .arg("--web.listen-address=127.0.0.1:0")
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .output()
        .expect("run pushgate");
    assert!(!out.status.success(), "{flags:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `pushgate <args> --url=<url>` (the admin client) and returns its stdout.
pub fn cli(url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(args)
        .arg(format!("--url={url}"))
        .output()
        .expect("run pushgate");
    assert!(
        out.status.success(),
        "pushgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
