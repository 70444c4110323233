//! Mutual TLS between replicas (`--cluster.tls.*`): real processes on
//! loopback, certificates made by the test (rcgen), the cluster port probed
//! with the same gRPC client the replicas use.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{node_ip, TestCluster};
use common::pki::{Authority, Issued};
use common::pushers::Pushers;
use common::{refused_start, temp_dir};
use pushgate::pb::pushgate::v1 as pb;
use pushgate::transport::tls::{MutualTls, MutualTlsSettings, Plaintext, TlsTransport};
use pushgate::transport::{Os, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Flags giving node `{id}` the files `node{id}.crt`, `node{id}.key` and
/// `ca.crt` of `dir`.
fn tls_flags(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        format!("--cluster.tls.cert-file={d}/node{{id}}.crt"),
        format!("--cluster.tls.key-file={d}/node{{id}}.key"),
        format!("--cluster.tls.ca-file={d}/ca.crt"),
    ]
}

/// Writes `ca.crt` and a certificate from `ca` for each of nodes `1..=n`.
fn write_cluster_pki(dir: &Path, ca: &Authority, n: u64) {
    std::fs::write(dir.join("ca.crt"), &ca.cert_pem).expect("write CA");
    for id in 1..=n {
        ca.replica(&node_ip(id).to_string()).write(dir, &format!("node{id}"));
    }
}

/// Three replicas talking mutual TLS with certificates from one CA.
fn start_tls_cluster(name: &str) -> (TestCluster, Authority) {
    let dir = temp_dir(name);
    let ca = Authority::new("pushgate replicas");
    write_cluster_pki(dir.path(), &ca, 3);
    let flags = tls_flags(dir.path());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    (TestCluster::start_in(dir, 3, &flags, Vec::new()), ca)
}

/// The cluster address node `id` advertises (its proxy).
fn cluster_address(cluster: &TestCluster, id: u64) -> String {
    let status = cluster.status(id).expect("status");
    status["members"][id.to_string()]
        .as_str()
        .expect("member address")
        .to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A `status` call to the cluster port at `address`, in plain text or with
/// the files of `tls`.
fn status_call(address: &str, tls: Option<MutualTlsSettings>) -> Result<pb::StatusResponse, String> {
    let transport: Arc<dyn Transport> = match tls {
        Some(files) => Arc::new(TlsTransport::new(
            Arc::new(Os::default()),
            Arc::new(MutualTls::open(files)?),
        )),
        None => Arc::new(Os::default()),
    };
    runtime().block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| e.to_string())?
            .timeout(Duration::from_secs(5));
        let channel = pushgate::transport::channel(transport, endpoint, Duration::from_secs(5));
        let mut client = pb::replica_client::ReplicaClient::new(channel);
        client
            .status(pb::StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| pushgate::cluster::network::describe_status(&s))
    })
}

/// Client files: `who` (written into `dir` as `<name>.crt/.key`), trusting `ca_file`.
fn client_files(dir: &Path, name: &str, who: &Issued, ca_file: &Path) -> MutualTlsSettings {
    who.write(dir, name);
    MutualTlsSettings {
        cert_file: dir.join(format!("{name}.crt")),
        key_file: dir.join(format!("{name}.key")),
        ca_file: ca_file.to_path_buf(),
        server_name: None,
        plaintext: Plaintext::Refuse,
        client_allowed_sans: Vec::new(),
    }
}

/// Waits until node `id`'s log contains `text`.
fn wait_for_log(cluster: &TestCluster, id: u64, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster.node(id).log_text().contains(text) {
        assert!(
            Instant::now() < deadline,
            "node {id} never logged {text:?}:\n{}",
            cluster.node(id).log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn replicas_with_certificates_of_the_cluster_ca_replicate_every_push() {
    let (mut cluster, _ca) = start_tls_cluster("tls-replicate");
    let leader = cluster.wait_leader(Duration::from_secs(30));
    for id in 1..=3u64 {
        cluster
            .node(id)
            .put_ok(&format!("/metrics/job/tls/via/{id}"), "# TYPE m gauge\nm 1\n");
    }
    for id in 1..=3u64 {
        let text = cluster.node(id).pushed_exposition();
        for via in 1..=3 {
            assert!(text.contains(&format!("via=\"{via}\"")), "node {id}:\n{text}");
        }
    }
    let log = cluster.node(leader).log_text();
    assert!(log.contains("replicas talk mutual TLS"), "{log}");
}

#[test]
fn the_cluster_port_refuses_plain_text_and_certificates_of_another_ca() {
    let (mut cluster, ca) = start_tls_cluster("tls-refuse");
    cluster.wait_leader(Duration::from_secs(30));
    let address = cluster_address(&cluster, 1);
    let dir = temp_dir("tls-refuse-clients");
    let ca_file = cluster.dir.path().join("ca.crt");

    let plain = status_call(&address, None).expect_err("plain text must be refused");
    wait_for_log(&cluster, 1, "plain-text HTTP/2");

    let stranger = Authority::new("someone else");
    let foreign = client_files(dir.path(), "foreign", &stranger.replica("127.0.0.1"), &ca_file);
    let refused = status_call(&address, Some(foreign)).expect_err("a certificate of another CA must be refused");

    let member = client_files(dir.path(), "member", &ca.replica("127.0.0.1"), &ca_file);
    let status =
        status_call(&address, Some(member)).unwrap_or_else(|e| panic!("{e}\nplain: {plain}\nforeign: {refused}"));
    assert_eq!(status.node_id, 1);

    // A client that does not trust the cluster's CA does not talk to it either.
    let stranger_ca = dir.path().join("stranger-ca.crt");
    std::fs::write(&stranger_ca, &stranger.cert_pem).unwrap();
    let doubting = client_files(dir.path(), "doubting", &stranger.replica("127.0.0.1"), &stranger_ca);
    let e = status_call(&address, Some(doubting)).expect_err("an unknown server certificate must be refused");
    assert!(e.contains("UnknownIssuer") || e.contains("unknown issuer"), "{e}");
}

#[test]
fn a_replica_with_a_certificate_of_another_ca_is_kept_out_until_it_has_a_good_one() {
    let (mut cluster, _ca) = start_tls_cluster("tls-keep-out");
    cluster.wait_leader(Duration::from_secs(30));
    let dir = cluster.dir.path().to_path_buf();

    // Node 3 restarts with a certificate the others do not trust.
    assert_eq!(cluster.node_mut(3).terminate(), Some(0));
    let stranger = Authority::new("someone else");
    let good = std::fs::read_to_string(dir.join("node3.crt")).unwrap();
    let good_key = std::fs::read_to_string(dir.join("node3.key")).unwrap();
    stranger.replica(&node_ip(3).to_string()).write(&dir, "node3");
    cluster.node_mut(3).spawn_unready();

    cluster.node(1).put_ok("/metrics/job/while_out", "m 1\n");
    wait_for_log(&cluster, 1, "TLS handshake failed");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let r = cluster.node(3).get("/-/ready");
        assert_eq!(r.status(), 503, "node 3 must not be ready");
        let stale = cluster.node(3).get("/metrics?consistency=stale").text().unwrap();
        assert!(!stale.contains("while_out"), "node 3 received entries:\n{stale}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Its certificate is renewed in place: no restart, it catches up.
    std::fs::write(dir.join("node3.key"), good_key).unwrap();
    std::fs::write(dir.join("node3.crt"), good).unwrap();
    cluster.node_mut(3).wait_ready(Duration::from_secs(30));
    let text = cluster.node(3).pushed_exposition();
    assert!(text.contains("while_out"), "{text}");
}

/// The certificate the cluster port at `address` presents to a new connection.
fn presented_certificate(address: &str, ca: &Authority) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let me = ca.replica("127.0.0.1");
    let chain = vec![CertificateDer::from_pem_slice(me.cert_pem.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(me.key_pem.as_bytes()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let (host, _) = address.rsplit_once(':').unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("handshake");
        tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
    })
}

#[test]
fn a_renewed_certificate_is_used_for_new_connections_without_a_restart() {
    let (mut cluster, ca) = start_tls_cluster("tls-renew");
    cluster.wait_leader(Duration::from_secs(30));
    let dir = cluster.dir.path().to_path_buf();
    let address = cluster_address(&cluster, 1);
    let pid = cluster.node(1).pid();

    let renewed = ca.replica(&node_ip(1).to_string());
    renewed.write(&dir, "node1");
    let presented = presented_certificate(&address, &ca);
    assert_eq!(
        presented,
        CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap(),
        "node 1 still presents its old certificate"
    );
    wait_for_log(&cluster, 1, "TLS certificate and settings read again");

    // Every connection to and from node 1 is made again, with the renewed
    // certificate on both ends: it takes pushes and sees the others' again.
    cluster.isolate(1, true);
    std::thread::sleep(Duration::from_millis(500));
    cluster.isolate(1, false);
    cluster.node(2).put_ok("/metrics/job/after_renewal", "m 1\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = cluster.node(1).get("/metrics");
        if r.status() == 200 && r.text().unwrap().contains("after_renewal") {
            break;
        }
        assert!(Instant::now() < deadline, "node 1 never read the push after renewal");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.node(1).put_ok("/metrics/job/from_renewed", "m 1\n");
    assert_eq!(cluster.node(1).pid(), pid, "node 1 restarted");
}

#[test]
fn unusable_cluster_tls_settings_stop_the_start() {
    let tmp = temp_dir("tls-refused-start");
    let dir = tmp.path();
    let ca = Authority::new("pushgate replicas");
    write_cluster_pki(dir, &ca, 1);
    std::fs::write(dir.join("garbage.crt"), "not a certificate\n").unwrap();
    ca.replica("127.0.0.1").write(dir, "other");
    let peers = "--cluster.peers=1=127.0.0.1:1".to_string();
    let cert = |f: &str| format!("--cluster.tls.cert-file={}", dir.join(f).display());
    let key = |f: &str| format!("--cluster.tls.key-file={}", dir.join(f).display());
    let ca_file = |f: &str| format!("--cluster.tls.ca-file={}", dir.join(f).display());
    for (flags, says) in [
        (vec![peers.clone(), cert("node1.crt")], "needs all of"),
        (
            vec![peers.clone(), "--cluster.tls.plaintext=accept".to_string()],
            "--cluster.tls.plaintext and --cluster.tls.client-allowed-sans need",
        ),
        (
            vec![
                peers.clone(),
                "--cluster.tls.client-allowed-sans=pushgate-peer".to_string(),
            ],
            "--cluster.tls.client-allowed-sans need",
        ),
        (
            vec![cert("node1.crt"), key("node1.key"), ca_file("ca.crt")],
            "needs --cluster.peers",
        ),
        (
            vec![peers.clone(), cert("garbage.crt"), key("node1.key"), ca_file("ca.crt")],
            "--cluster.tls.cert-file",
        ),
        (
            vec![peers.clone(), cert("node1.crt"), key("other.key"), ca_file("ca.crt")],
            "does not go with --cluster.tls.key-file",
        ),
        (
            vec![
                peers.clone(),
                cert("node1.crt"),
                key("node1.key"),
                ca_file("missing.crt"),
            ],
            "--cluster.tls.ca-file",
        ),
    ] {
        let stderr = refused_start(dir, &flags);
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}

#[test]
fn one_certificate_shared_by_every_replica_works_with_a_server_name() {
    let dir = temp_dir("tls-shared");
    let ca = Authority::new("pushgate replicas");
    std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem).unwrap();
    // Names no peer address: only --cluster.tls.server-name makes it valid.
    ca.replica("pushgate-cluster").write(dir.path(), "shared");
    let d = dir.path().display().to_string();
    let flags = [
        format!("--cluster.tls.cert-file={d}/shared.crt"),
        format!("--cluster.tls.key-file={d}/shared.key"),
        format!("--cluster.tls.ca-file={d}/ca.crt"),
        "--cluster.tls.server-name=pushgate-cluster".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = TestCluster::start_in(dir, 3, &flags, Vec::new());
    cluster.wait_leader(Duration::from_secs(30));
    cluster.node(2).put_ok("/metrics/job/shared", "m 1\n");
    let text = cluster.node(3).pushed_exposition();
    assert!(text.contains("job=\"shared\""), "{text}");
}

/// With `--cluster.tls.client-allowed-sans`, the cluster's CA may sign
/// certificates of other services: the replicas (whose certificates carry
/// the allowed name) replicate, and a certificate of the same CA without
/// that name is refused by the cluster port.
#[test]
fn only_certificates_with_an_allowed_name_reach_the_cluster_port() {
    let dir = temp_dir("tls-allowed-sans");
    let ca = Authority::new("company-wide CA");
    std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem).unwrap();
    for id in 1..=3 {
        ca.replica_also_named(&node_ip(id).to_string(), &["pushgate-peer"])
            .write(dir.path(), &format!("node{id}"));
    }
    let mut flags = tls_flags(dir.path());
    flags.push("--cluster.tls.client-allowed-sans=pushgate-peer".to_string());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = TestCluster::start_in(dir, 3, &flags, Vec::new());
    cluster.wait_leader(Duration::from_secs(30));
    cluster.node(2).put_ok(
        "/metrics/job/allowed",
        "m 1
",
    );
    for id in 1..=3 {
        let text = cluster.node(id).pushed_exposition();
        assert!(text.contains("job=\"allowed\""), "node {id}:\n{text}");
    }

    let address = cluster_address(&cluster, 1);
    let clients = temp_dir("tls-allowed-sans-clients");
    let ca_file = cluster.dir.path().join("ca.crt");
    let other_service = client_files(clients.path(), "other", &ca.replica("127.0.0.1"), &ca_file);
    status_call(&address, Some(other_service)).expect_err("a certificate without an allowed name must be refused");
    wait_for_log(&cluster, 1, "none of --cluster.tls.client-allowed-sans");
    let peer = client_files(
        clients.path(),
        "peer",
        &ca.replica_also_named("127.0.0.1", &["pushgate-peer"]),
        &ca_file,
    );
    assert_eq!(status_call(&address, Some(peer)).expect("an allowed name").node_id, 1);
}

/// A running plain-text cluster switches to mutual TLS in three rolling
/// restarts (`--cluster.tls.plaintext` accept-and-dial, accept, then the
/// default refuse) while clients push through every node: no push is
/// refused or lost, and at the end the cluster port refuses plain text.
#[test]
fn a_running_cluster_switches_to_tls_one_replica_at_a_time_without_refusing_a_push() {
    let dir = temp_dir("tls-switch");
    let ca = Authority::new("pushgate replicas");
    write_cluster_pki(dir.path(), &ca, 3);
    let tls = tls_flags(dir.path());
    let mut cluster = TestCluster::start_in(dir, 3, &[], Vec::new());
    cluster.wait_leader(Duration::from_secs(30));
    let address = cluster_address(&cluster, 1);
    status_call(&address, None).expect("plain text before the switch");
    let urls = cluster.nodes.values().map(|n| n.server.url("")).collect();
    let pushers = Pushers::start(6, "switch", "sw", urls);
    std::thread::sleep(Duration::from_secs(1));
    for step in ["accept-and-dial", "accept", "refuse"] {
        cluster.rolling_restart(&pushers, |id, server| {
            server.args.retain(|a| !a.starts_with("--cluster.tls."));
            server
                .args
                .extend(tls.iter().map(|f| f.replace("{id}", &id.to_string())));
            server.args.push(format!("--cluster.tls.plaintext={step}"));
        });
        eprintln!("every replica runs --cluster.tls.plaintext={step}");
    }
    let pushed = pushers.stop();
    assert!(
        pushed.refusals.is_empty(),
        "pushes refused during the switch: {:?}",
        pushed.refusals
    );
    assert_eq!(
        pushed.acked.len(),
        6,
        "every pusher got pushes acknowledged: {:?}",
        pushed.acked
    );
    for id in 1..=3u64 {
        pushed.assert_stored(&cluster.node(id).api_metrics(), "sw");
    }
    let e = status_call(&address, None).expect_err("plain text after the switch");
    wait_for_log(&cluster, 1, "plain-text HTTP/2");
    let member = client_files(
        cluster.dir.path(),
        "member",
        &ca.replica("127.0.0.1"),
        &cluster.dir.path().join("ca.crt"),
    );
    status_call(&address, Some(member)).unwrap_or_else(|m| panic!("{m} (plain: {e})"));
}
