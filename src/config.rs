//! Command-line flags. Names follow the reference Pushgateway wherever they
//! mean the same thing, so existing deployments keep their flags.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::transport::tls::{MutualTlsSettings, Plaintext};

/// Boolean flags also take the reference's (kingpin's) `--no-<flag>` form; the
/// last of the two on the command line wins.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "pushgate",
    version = crate::build_info::BUILD_VERSION,
    about = "A highly available, Prometheus Pushgateway-compatible push gateway.",
    long_about = "pushgate accepts pushes like the Prometheus Pushgateway and keeps them in a Raft-replicated, \
durable store. With no flags it runs one durable node with its data in ./data; with --cluster.peers it runs \
as one replica of a cluster in which any node accepts pushes and every node serves consistent scrapes."
)]
pub struct Cli {
    #[command(flatten)]
    pub server: ServerFlags,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Inspect and change cluster membership through a node's admin API;
    /// recover a stopped survivor after losing a majority (`recover`).
    Cluster(ClusterCommand),
}

#[derive(Args, Debug, Clone)]
pub struct ClusterCommand {
    #[command(subcommand)]
    pub action: ClusterAction,
}

/// Which node a remote `pushgate cluster` action talks to, and how. Flags of
/// each remote action rather than of `cluster`, so that `recover`, which
/// works on a data directory, neither offers nor accepts them.
#[derive(Args, Debug, Clone)]
pub struct NodeFlags {
    /// HTTP address of any node; http://user:password@host:port sends basic-auth credentials,
    /// https:// speaks TLS (a node with tls_server_config).
    #[arg(long = "url", default_value = "http://127.0.0.1:9091")]
    pub url: String,
    /// With https://: PEM file of the authorities to trust (default: the system's bundle,
    /// /etc/ssl/certs/ca-certificates.crt).
    #[arg(long = "tls.ca-file")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// With https://: client certificate (PEM) to present, for a node that requires one.
    #[arg(long = "tls.cert-file", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// With https://: the private key (PEM) of --tls.cert-file.
    #[arg(long = "tls.key-file", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ClusterAction {
    /// Members, leader, term, commit and applied index per node, and each
    /// follower's lag: the node at --url asks every member.
    Status {
        #[command(flatten)]
        node: NodeFlags,
        /// `table` for people, `json` for scripts (the API's answer as is).
        #[arg(long = "output", value_enum, default_value = "table")]
        output: StatusOutput,
    },
    /// Add a node: it joins as a learner, catches up, then becomes a voter
    /// (progress on stderr every 2 s while it catches up; gives up after 100 s,
    /// leaving it a learner). Without --node-id and --address: the node at
    /// --url itself (a node waiting to be added, e.g. a new StatefulSet pod).
    Add {
        #[command(flatten)]
        node: NodeFlags,
        /// Id of the new node (the id of a node that lost its disk only once that id was removed).
        #[arg(long = "node-id", requires = "address")]
        node_id: Option<u64>,
        /// Cluster (gRPC) address of the new node, HOST:PORT.
        #[arg(long = "address", requires = "node_id")]
        address: Option<String>,
    },
    /// Remove a node from the voters and the cluster.
    Remove {
        #[command(flatten)]
        node: NodeFlags,
        #[arg(long = "node-id")]
        node_id: u64,
    },
    /// After losing a majority for good: make a stopped survivor the only
    /// voter of a new cluster, keeping every push in its log. Works on the
    /// data directory, not through --url. Without --force it only says what
    /// it would do.
    Recover {
        /// The survivor's data directory (its --storage.path).
        #[arg(long = "storage.path", default_value = "./data")]
        storage_path: std::path::PathBuf,
        /// The survivor's cluster address (HOST:PORT) in the new cluster;
        /// default: the one recorded in its membership.
        #[arg(long = "cluster.advertise-address")]
        advertise_address: Option<String>,
        /// Carry it out (without it nothing is changed).
        #[arg(long = "force")]
        force: bool,
    },
}

/// How `pushgate cluster status` prints.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutput {
    Table,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ServerFlags {
    /// Address to listen on for the web interface, API and telemetry. Repeatable.
    #[arg(long = "web.listen-address", default_value = ":9091", action = clap::ArgAction::Append)]
    pub listen_addresses: Vec<String>,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    pub telemetry_path: String,

    /// The URL under which pushgate is externally reachable (its path is the default route prefix).
    #[arg(long = "web.external-url", default_value = "")]
    pub external_url: String,

    /// Prefix for the internal routes of web endpoints. Defaults to the path of --web.external-url.
    #[arg(long = "web.route-prefix", default_value = "")]
    pub route_prefix: String,

    /// Enable shutdown via HTTP request (PUT or POST /-/quit).
    #[arg(long = "web.enable-lifecycle", overrides_with = "no_enable_lifecycle")]
    pub enable_lifecycle: bool,
    #[arg(long = "no-web.enable-lifecycle", hide = true, overrides_with = "enable_lifecycle")]
    no_enable_lifecycle: bool,

    /// Enable the admin API (PUT /api/v1/admin/wipe).
    #[arg(long = "web.enable-admin-api", overrides_with = "no_enable_admin_api")]
    pub enable_admin_api: bool,
    #[arg(long = "no-web.enable-admin-api", hide = true, overrides_with = "enable_admin_api")]
    no_enable_admin_api: bool,

    /// Path to a Prometheus web configuration file (exporter-toolkit format): basic_auth_users (bcrypt
    /// hashes) guard every route; http_server_config.headers are added to every answer; tls_server_config
    /// serves HTTPS. Read again, with its certificate files, when they change.
    #[arg(long = "web.config.file", default_value = "")]
    pub web_config_file: String,

    /// Not supported by pushgate.
    #[arg(long = "web.systemd-socket", overrides_with = "no_systemd_socket")]
    pub systemd_socket: bool,
    #[arg(long = "no-web.systemd-socket", hide = true, overrides_with = "systemd_socket")]
    no_systemd_socket: bool,

    /// Refused: pushgate keeps every push durable in --storage.path instead.
    #[arg(long = "persistence.file")]
    pub persistence_file: Option<String>,

    /// Accepted for compatibility and ignored: every push is durable before it is acknowledged.
    #[arg(long = "persistence.interval", default_value = "5m", value_parser = parse_duration)]
    pub persistence_interval: Duration,

    /// Do not check pushes for consistency with the stored metrics. DANGEROUS: inconsistent pushes
    /// are stored and answered 202.
    #[arg(
        long = "push.disable-consistency-check",
        overrides_with = "no_disable_consistency_check"
    )]
    pub disable_consistency_check: bool,
    #[arg(
        long = "no-push.disable-consistency-check",
        hide = true,
        overrides_with = "disable_consistency_check"
    )]
    no_disable_consistency_check: bool,

    /// Largest push body accepted, in bytes after decompression (larger: 413).
    #[arg(long = "push.max-body-bytes", default_value_t = 32 << 20)]
    pub max_body_bytes: usize,

    /// Most series (metrics) accepted in one push (more: 413).
    #[arg(long = "push.max-series", default_value_t = 100_000)]
    pub max_series: usize,

    /// Mutations that may wait to be committed; beyond that pushes get 503.
    #[arg(long = "push.queue-size", default_value_t = 4096)]
    pub queue_size: usize,

    /// Bytes of mutations that may wait to be committed; beyond that pushes get 503.
    #[arg(long = "push.queue-bytes", default_value_t = 256 << 20)]
    pub queue_bytes: usize,

    /// How long a push waits for a leader to be elected before 503 (the change is then not made;
    /// after a forward to the leader whose answer was lost, it waits this long again and is sent again).
    #[arg(long = "push.leader-wait", default_value = "3s", value_parser = parse_duration)]
    pub leader_wait: Duration,

    /// How long a push waits for its commit before 503 (outcome unknown).
    #[arg(long = "push.commit-timeout", default_value = "10s", value_parser = parse_duration)]
    pub commit_timeout: Duration,

    /// Default consistency of scrapes and API reads: linearizable or stale.
    /// A request can ask for stale reads with ?consistency=stale.
    #[arg(long = "read.consistency", default_value = "linearizable", value_parser = ["linearizable", "stale"])]
    pub read_consistency: String,

    /// How long a consistent read waits for the read index before 503.
    #[arg(long = "read.timeout", default_value = "2s", value_parser = parse_duration)]
    pub read_timeout: Duration,

    /// Directory of this node's Raft log, snapshots and identity.
    #[arg(long = "storage.path", default_value = "./data")]
    pub storage_path: PathBuf,

    /// Build a snapshot and purge the log after this many log entries. A
    /// snapshot is also taken once the log since the last one outweighs it.
    #[arg(long = "storage.snapshot-every", default_value_t = 1000)]
    pub snapshot_every: u64,

    /// Page cache of the log store, in bytes.
    #[arg(long = "storage.cache-bytes", default_value_t = 64 << 20)]
    pub cache_bytes: u64,

    /// A write, sync, truncation or purge of the Raft log that has not
    /// finished after this long means the disk or the storage engine is
    /// stuck: the node logs an error and exits (status 1) so that its
    /// supervisor restarts it. A cluster leader hands leadership over after
    /// a tenth of it (at least 1 s). 0 turns both off.
    #[arg(long = "storage.stall-timeout", default_value = "30s", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// This node's id in the cluster (1 for a single node).
    #[arg(long = "cluster.node-id", default_value_t = 1)]
    pub node_id: u64,

    /// Address for Raft and forwarding traffic (gRPC) between replicas.
    #[arg(long = "cluster.listen-address", default_value = ":9092")]
    pub cluster_listen_address: String,

    /// Address other replicas reach this node's cluster port at (default: this node's entry in
    /// --cluster.peers; needed for a node the list does not name).
    #[arg(long = "cluster.advertise-address", default_value = "")]
    pub cluster_advertise_address: String,

    /// All voters including this node: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT. Empty: a single node.
    /// A node it does not name waits to be added to the cluster of the nodes it names.
    #[arg(long = "cluster.peers", default_value = "")]
    pub cluster_peers: String,

    /// Mutual TLS between replicas: this node's certificate (PEM, with its
    /// chain), presented to peers as server and as client. With
    /// --cluster.tls.key-file and --cluster.tls.ca-file; set on every replica.
    #[arg(long = "cluster.tls.cert-file", default_value = "")]
    pub cluster_tls_cert_file: String,

    /// Private key (PEM) of --cluster.tls.cert-file.
    #[arg(long = "cluster.tls.key-file", default_value = "")]
    pub cluster_tls_key_file: String,

    /// Authorities (PEM) that sign the replicas' certificates: a peer whose
    /// certificate they did not sign is refused, on both ends of a connection.
    #[arg(long = "cluster.tls.ca-file", default_value = "")]
    pub cluster_tls_ca_file: String,

    /// Name every peer's certificate must carry (default: the host of the
    /// peer's address, as in --cluster.peers).
    #[arg(long = "cluster.tls.server-name", default_value = "")]
    pub cluster_tls_server_name: String,

    /// Plain text between replicas while a running cluster switches to TLS
    /// (or back) one replica at a time: refuse (TLS only), accept (take
    /// both, dial TLS), accept-and-dial (take both, dial plain text).
    #[arg(long = "cluster.tls.plaintext", default_value = "refuse", value_parser = Plaintext::NAMES)]
    pub cluster_tls_plaintext: String,

    /// Comma-separated subject alternative names: a peer that connects to
    /// this node must present a certificate carrying one of them (compared
    /// exactly). For a CA that also signs other services' certificates.
    #[arg(long = "cluster.tls.client-allowed-sans", default_value = "")]
    pub cluster_tls_client_allowed_sans: String,

    /// Only log messages with the given severity or above: debug, info, warn, error.
    #[arg(long = "log.level", default_value = "info", value_parser = ["debug", "info", "warn", "error"])]
    pub log_level: String,

    /// Output format of log messages: logfmt or json.
    #[arg(long = "log.format", default_value = "logfmt", value_parser = ["logfmt", "json"])]
    pub log_format: String,
}

/// Go's duration syntax: `1h2m3s`, `500ms`, `5m0s`, `1.5s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        if num_end == 0 {
            return Err(invalid());
        }
        let value: f64 = rest[..num_end].parse().map_err(|_| invalid())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// Go's `Duration.String()` for whole-millisecond values (`5m0s`, `10s`, `1.5s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let h = ms / 3_600_000;
    let m = (ms / 60_000) % 60;
    let s = (ms % 60_000) as f64 / 1000.0;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

/// The effective route prefix: --web.route-prefix, else the path of
/// --web.external-url; normalised to "" or "/a/b".
pub fn route_prefix(flags: &ServerFlags) -> String {
    let raw = if !flags.route_prefix.is_empty() {
        flags.route_prefix.clone()
    } else {
        external_url_path(&flags.external_url)
    };
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

fn external_url_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    match after_scheme.find('/') {
        Some(i) => after_scheme[i..].split(['?', '#']).next().unwrap_or("").to_string(),
        None => String::new(),
    }
}

/// `--cluster.peers` as id -> address.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("--cluster.peers entry {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("--cluster.peers entry {part:?}: {id:?} is not a node id"))?;
        if id == 0 {
            return Err("--cluster.peers: node ids start at 1".into());
        }
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("--cluster.peers entry {part:?}: {addr:?} is not HOST:PORT"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("--cluster.peers names node {id} twice"));
        }
    }
    Ok(peers)
}

impl ServerFlags {
    /// Refuses flags whose reference meaning pushgate does not provide.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(file) = &self.persistence_file {
            return Err(format!(
                "--persistence.file={file:?} is not supported: pushgate stores every push durably in --storage.path \
                 (default ./data) before acknowledging it. Remove --persistence.file and set --storage.path instead."
            ));
        }
        if self.systemd_socket {
            return Err("--web.systemd-socket is not supported; use --web.listen-address".into());
        }
        if !self.telemetry_path.starts_with('/') {
            return Err(format!(
                "--web.telemetry-path {:?} must start with /",
                self.telemetry_path
            ));
        }
        if self.queue_size == 0 || self.max_series == 0 || self.max_body_bytes == 0 {
            return Err("--push.queue-size, --push.max-series and --push.max-body-bytes must be positive".into());
        }
        if self.snapshot_every == 0 {
            return Err("--storage.snapshot-every must be positive".into());
        }
        if self.node_id == 0 {
            return Err("--cluster.node-id must be at least 1".into());
        }
        let peers = parse_peers(&self.cluster_peers)?;
        // A node its peer list does not name joins a cluster that exists
        // (a StatefulSet scaled up keeps the pods' peer list): it never
        // bootstraps and waits for `pushgate cluster add`, so the others
        // must learn its address from it.
        if !peers.is_empty() && !peers.contains_key(&self.node_id) && self.cluster_advertise_address.is_empty() {
            return Err(format!(
                "--cluster.peers does not list this node (--cluster.node-id={}): list every voter including this \
                 one, or, to start a node that waits to be added to a running cluster (`pushgate cluster add`), \
                 give the address the others reach it at with --cluster.advertise-address",
                self.node_id
            ));
        }
        let tls = [
            &self.cluster_tls_cert_file,
            &self.cluster_tls_key_file,
            &self.cluster_tls_ca_file,
        ];
        let given = tls.iter().filter(|f| !f.is_empty()).count();
        if given != 0 && given != tls.len() {
            return Err(
                "mutual TLS between replicas needs all of --cluster.tls.cert-file, --cluster.tls.key-file and \
                 --cluster.tls.ca-file"
                    .into(),
            );
        }
        if given == 0
            && (!self.cluster_tls_server_name.is_empty()
                || self.cluster_tls_plaintext != "refuse"
                || !self.cluster_tls_client_allowed_sans.is_empty())
        {
            return Err(
                "--cluster.tls.server-name, --cluster.tls.plaintext and --cluster.tls.client-allowed-sans need \
                 --cluster.tls.cert-file, --cluster.tls.key-file and --cluster.tls.ca-file"
                    .into(),
            );
        }
        if given != 0 && peers.is_empty() {
            return Err("--cluster.tls.* needs --cluster.peers: a single node has no cluster port".into());
        }
        Ok(())
    }

    /// The settings of mutual TLS between replicas, if it is on.
    pub fn cluster_tls(&self) -> Option<MutualTlsSettings> {
        if self.cluster_tls_cert_file.is_empty() {
            return None;
        }
        Some(MutualTlsSettings {
            cert_file: self.cluster_tls_cert_file.clone().into(),
            key_file: self.cluster_tls_key_file.clone().into(),
            ca_file: self.cluster_tls_ca_file.clone().into(),
            server_name: Some(self.cluster_tls_server_name.clone()).filter(|n| !n.is_empty()),
            plaintext: Plaintext::parse(&self.cluster_tls_plaintext).unwrap_or_default(),
            client_allowed_sans: self
                .cluster_tls_client_allowed_sans
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// Every flag as the string the status API shows.
    pub fn flag_map(&self) -> BTreeMap<String, String> {
        let b = |v: bool| v.to_string();
        let mut m = BTreeMap::new();
        m.insert("web.listen-address".into(), self.listen_addresses.join(","));
        m.insert("web.telemetry-path".into(), self.telemetry_path.clone());
        m.insert("web.external-url".into(), self.external_url.clone());
        m.insert("web.route-prefix".into(), self.route_prefix.clone());
        m.insert("web.enable-lifecycle".into(), b(self.enable_lifecycle));
        m.insert("web.enable-admin-api".into(), b(self.enable_admin_api));
        m.insert("web.config.file".into(), self.web_config_file.clone());
        m.insert("web.systemd-socket".into(), b(self.systemd_socket));
        m.insert("persistence.file".into(), String::new());
        m.insert(
            "persistence.interval".into(),
            format_duration(self.persistence_interval),
        );
        m.insert(
            "push.disable-consistency-check".into(),
            b(self.disable_consistency_check),
        );
        m.insert("push.max-body-bytes".into(), self.max_body_bytes.to_string());
        m.insert("push.max-series".into(), self.max_series.to_string());
        m.insert("push.queue-size".into(), self.queue_size.to_string());
        m.insert("push.queue-bytes".into(), self.queue_bytes.to_string());
        m.insert("push.commit-timeout".into(), format_duration(self.commit_timeout));
        m.insert("push.leader-wait".into(), format_duration(self.leader_wait));
        m.insert("read.consistency".into(), self.read_consistency.clone());
        m.insert("read.timeout".into(), format_duration(self.read_timeout));
        m.insert("storage.path".into(), self.storage_path.display().to_string());
        m.insert("storage.snapshot-every".into(), self.snapshot_every.to_string());
        m.insert("storage.cache-bytes".into(), self.cache_bytes.to_string());
        m.insert("storage.stall-timeout".into(), format_duration(self.stall_timeout));
        m.insert("cluster.node-id".into(), self.node_id.to_string());
        m.insert("cluster.listen-address".into(), self.cluster_listen_address.clone());
        m.insert(
            "cluster.advertise-address".into(),
            self.cluster_advertise_address.clone(),
        );
        m.insert("cluster.peers".into(), self.cluster_peers.clone());
        m.insert("cluster.tls.cert-file".into(), self.cluster_tls_cert_file.clone());
        m.insert("cluster.tls.key-file".into(), self.cluster_tls_key_file.clone());
        m.insert("cluster.tls.ca-file".into(), self.cluster_tls_ca_file.clone());
        m.insert("cluster.tls.server-name".into(), self.cluster_tls_server_name.clone());
        m.insert("cluster.tls.plaintext".into(), self.cluster_tls_plaintext.clone());
        m.insert(
            "cluster.tls.client-allowed-sans".into(),
            self.cluster_tls_client_allowed_sans.clone(),
        );
        m.insert("log.level".into(), self.log_level.clone());
        m.insert("log.format".into(), self.log_format.clone());
        m
    }
}

/// `:9091` -> all interfaces; `host:port` as given.
pub fn listen_address(addr: &str) -> String {
    if let Some(port) = addr.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        addr.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h2m3s").unwrap(), Duration::from_secs(3723));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("abc").unwrap_err(), "time: invalid duration \"abc\"");
        assert!(parse_duration("10").is_err());
        assert_eq!(format_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn boolean_flags_take_the_no_form_and_the_last_one_wins() {
        let f = |args: &[&str]| Cli::parse_from(std::iter::once("pushgate").chain(args.iter().copied())).server;
        assert!(f(&["--web.enable-lifecycle"]).enable_lifecycle);
        assert!(!f(&["--web.enable-lifecycle", "--no-web.enable-lifecycle"]).enable_lifecycle);
        assert!(f(&["--no-web.enable-lifecycle", "--web.enable-lifecycle"]).enable_lifecycle);
        assert!(!f(&["--no-web.enable-admin-api"]).enable_admin_api);
        assert!(
            !f(&[
                "--push.disable-consistency-check",
                "--no-push.disable-consistency-check"
            ])
            .disable_consistency_check
        );
        assert!(!f(&["--no-web.systemd-socket"]).systemd_socket);
    }

    #[test]
    fn prefixes() {
        let mut f = Cli::parse_from(["pushgate"]).server;
        assert_eq!(route_prefix(&f), "");
        f.external_url = "http://example.com/foo/".into();
        assert_eq!(route_prefix(&f), "/foo");
        f.route_prefix = "/pg/".into();
        assert_eq!(route_prefix(&f), "/pg");
        f.route_prefix = "/".into();
        f.external_url = String::new();
        assert_eq!(route_prefix(&f), "");
    }

    #[test]
    fn peers() {
        let p = parse_peers("1=a:9092, 2=b:9092,3=c.svc:1").unwrap();
        assert_eq!(p.len(), 3);
        assert!(parse_peers("1=a").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("1=a:1,1=b:1").is_err());
        assert!(parse_peers("").unwrap().is_empty());
    }

    #[test]
    fn a_node_the_peer_list_does_not_name_needs_its_advertise_address() {
        let f = |args: &[&str]| Cli::parse_from(std::iter::once("pushgate").chain(args.iter().copied())).server;
        let peers = "--cluster.peers=1=a:9092,2=b:9092,3=c:9092";
        assert!(f(&["--cluster.node-id=2", peers]).validate().is_ok());
        let refused = f(&["--cluster.node-id=4", peers]).validate().unwrap_err();
        assert!(
            refused.contains("--cluster.advertise-address") && refused.contains("pushgate cluster add"),
            "{refused}"
        );
        let joining = f(&["--cluster.node-id=4", peers, "--cluster.advertise-address=d:9092"]);
        assert!(joining.validate().is_ok());
    }

    #[test]
    fn persistence_file_is_refused_with_a_pointer() {
        let f = Cli::parse_from(["pushgate", "--persistence.file=/tmp/x"]).server;
        assert!(f.validate().unwrap_err().contains("--storage.path"));
        assert!(Cli::parse_from(["pushgate"]).server.validate().is_ok());
    }

    #[test]
    fn cluster_add_takes_both_the_node_id_and_the_address_or_neither() {
        use clap::Parser;
        let add = |args: &[&str]| {
            Cli::try_parse_from(["pushgate", "cluster", "add"].into_iter().chain(args.iter().copied())).map(|c| match c
                .command
            {
                Some(Command::Cluster(ClusterCommand {
                    action: ClusterAction::Add { node_id, address, .. },
                })) => (node_id, address),
                other => panic!("not an add: {other:?}"),
            })
        };
        assert_eq!(add(&[]).unwrap(), (None, None), "the node at --url");
        assert_eq!(
            add(&["--node-id=4", "--address=h4:9092"]).unwrap(),
            (Some(4), Some("h4:9092".to_string()))
        );
        assert!(add(&["--node-id=4"]).is_err(), "an id without an address");
        assert!(add(&["--address=h4:9092"]).is_err(), "an address without an id");
    }

    /// `recover` works on a data directory: it refuses the flags that say
    /// which node to talk to, which the remote actions take.
    #[test]
    fn only_the_remote_cluster_actions_take_a_node_url() {
        use clap::Parser;
        let parse =
            |args: &[&str]| Cli::try_parse_from(["pushgate", "cluster"].into_iter().chain(args.iter().copied()));
        for remote in ["status", "add", "remove --node-id=2"] {
            let args: Vec<&str> = remote
                .split(' ')
                .chain(["--url=https://h:9091", "--tls.ca-file=ca.pem"])
                .collect();
            assert!(parse(&args).is_ok(), "{remote}");
        }
        let refused = parse(&["recover", "--url=http://h:9091"]).unwrap_err().to_string();
        assert!(refused.contains("unexpected argument '--url'"), "{refused}");
        assert!(parse(&["recover", "--tls.ca-file=ca.pem"]).is_err());
    }
}
