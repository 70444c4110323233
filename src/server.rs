//! Wires the layers together and runs a node until it is asked to stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::cluster::{ClusterNode, Environment, NodeConfig};
use crate::config::{listen_address, parse_peers, route_prefix, ServerFlags};
use crate::gateway::{Gateway, GatewayConfig, ReadConsistency};
use crate::http::self_metrics::SelfMetrics;
use crate::http::web_config::WebAuth;
use crate::http::{app, AppState, HttpConfig};
use crate::model::api_json::rfc3339_nanos;
use crate::transport::tls::{MutualTls, Plaintext, TlsConfigSource, TlsListener, TlsTransport};
use crate::transport::{HttpListener, Transport};

/// Why the server stopped with an error (the process exits non-zero).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid flags: {0}")]
    Flags(String),
    #[error("cannot start the node: {0}")]
    Start(#[from] crate::cluster::StartError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    WebConfig(#[from] crate::http::web_config::WebConfigError),
    #[error("cannot use mutual TLS between replicas: {0}")]
    ClusterTls(String),
}

/// The address other nodes reach this node's cluster port at.
fn advertise_address(flags: &ServerFlags, peers: &BTreeMap<u64, String>) -> String {
    if !flags.cluster_advertise_address.is_empty() {
        flags.cluster_advertise_address.clone()
    } else if let Some(addr) = peers.get(&flags.node_id) {
        addr.clone()
    } else {
        listen_address(&flags.cluster_listen_address)
    }
}

/// Runs a node with these flags on the OS's network until SIGINT, SIGTERM or
/// `/-/quit`.
pub async fn run(flags: ServerFlags) -> Result<(), ServerError> {
    flags.validate().map_err(ServerError::Flags)?;
    let peers = parse_peers(&flags.cluster_peers).map_err(ServerError::Flags)?;
    // With one loopback address per node (a local cluster), dial peers from
    // this node's own address so that every connection's source names its node.
    let source_ip = advertise_address(&flags, &peers)
        .rsplit_once(':')
        .and_then(|(host, _)| host.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .filter(|ip| ip.is_loopback() && *ip != IpAddr::from([127, 0, 0, 1]));
    serve(flags, Environment::os(source_ip), wait_for_signal()).await
}

/// Runs a node with these flags in `env` until `stop` completes or `/-/quit`.
/// The deterministic simulation runs nodes through here too.
pub async fn serve(
    flags: ServerFlags,
    env: Environment,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    flags.validate().map_err(ServerError::Flags)?;
    let peers = parse_peers(&flags.cluster_peers).map_err(ServerError::Flags)?;
    let advertise = advertise_address(&flags, &peers);
    let node_config = NodeConfig {
        node_id: flags.node_id,
        advertise_addr: advertise,
        listen_addr: listen_address(&flags.cluster_listen_address),
        leader_wait: flags.leader_wait,
        data_dir: flags.storage_path.clone(),
        peers,
        queue_capacity: flags.queue_size,
        queue_bytes: flags.queue_bytes,
        write_timeout: flags.commit_timeout,
        read_timeout: flags.read_timeout,
        snapshot_every: flags.snapshot_every,
        cache_bytes: flags.cache_bytes,
        stall_timeout: (!flags.stall_timeout.is_zero()).then_some(flags.stall_timeout),
    };

    // A web configuration that cannot be used stops the start (the
    // reference logs it and exits 0, which hides it from supervisors).
    let web_auth = match flags.web_config_file.as_str() {
        "" => None,
        path => Some(Arc::new(WebAuth::open(std::path::Path::new(path))?)),
    };

    // With tls_server_config every listener serves HTTPS only.
    let tls: Option<Arc<dyn TlsConfigSource>> = match &web_auth {
        Some(auth) if auth.serves_tls() => Some(auth.clone()),
        _ => None,
    };

    // Mutual TLS between replicas wraps the cluster port and every
    // connection to a peer; the HTTP listeners stay as the web config says.
    let cluster_transport: Arc<dyn Transport> = match flags.cluster_tls() {
        Some(files) => {
            let plaintext = files.plaintext;
            let tls = MutualTls::open(files).map_err(ServerError::ClusterTls)?;
            tracing::info!("replicas talk mutual TLS");
            if plaintext != Plaintext::Refuse {
                tracing::warn!(
                    "replicas may also talk plain text (--cluster.tls.plaintext): only while switching \
                     the cluster to or from TLS, one replica at a time"
                );
            }
            Arc::new(TlsTransport::new(env.transport.clone(), Arc::new(tls)))
        }
        None => env.transport.clone(),
    };

    // Bind first: a port in use should fail fast, before touching the data.
    let mut listeners = Vec::new();
    for addr in &flags.listen_addresses {
        let bind = listen_address(addr);
        let listener = env.transport.bind(&bind).await.map_err(|source| ServerError::Listen {
            addr: bind.clone(),
            source,
        })?;
        tracing::info!(address = %bind, tls = tls.is_some(), "listening for HTTP");
        listeners.push(listener);
    }

    tracing::info!(path = %flags.storage_path.display(), node_id = flags.node_id, "opening storage");
    let started_at = (env.clock)();
    let cluster_env = Environment {
        clock: env.clock.clone(),
        transport: cluster_transport,
    };
    let node = ClusterNode::start(node_config, cluster_env).await?;
    let gateway = Arc::new(Gateway::new(
        node.clone(),
        GatewayConfig {
            consistency_check: !flags.disable_consistency_check,
        },
    ));
    let (quit_tx, mut quit_rx) = watch::channel(false);
    let state = AppState {
        gateway: gateway.clone(),
        config: Arc::new(HttpConfig {
            route_prefix: route_prefix(&flags),
            telemetry_path: format!("/{}", flags.telemetry_path.trim_start_matches('/')),
            enable_admin_api: flags.enable_admin_api,
            enable_lifecycle: flags.enable_lifecycle,
            max_body_bytes: flags.max_body_bytes,
            max_series: flags.max_series,
            default_read: if flags.read_consistency == "stale" {
                ReadConsistency::Stale
            } else {
                ReadConsistency::Linearizable
            },
            flags: flags.flag_map(),
        }),
        metrics: Arc::new(SelfMetrics::new()),
        start_time: rfc3339_nanos(started_at).into(),
        quit: quit_tx.clone(),
        web_auth,
    };

    let signals = quit_tx.clone();
    tokio::spawn(async move {
        stop.await;
        let _ = signals.send(true);
    });

    let router = app(state);
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let router = router.clone();
        let mut stop = quit_tx.subscribe();
        let stopped = async move {
            let _ = stop.wait_for(|q| *q).await;
        };
        let listener = match &tls {
            Some(source) => HttpListener(Box::new(TlsListener::new(listener, source.clone(), false))),
            None => HttpListener(listener),
        };
        servers.spawn(async move { axum::serve(listener, router).with_graceful_shutdown(stopped).await });
    }
    tracing::info!(version = crate::build_info::BUILD_VERSION, "pushgate is running");
    let _ = quit_rx.wait_for(|q| *q).await;
    tracing::info!("shutting down: finishing in-flight requests");
    let mut result = Ok(());
    while let Some(joined) = servers.join_next().await {
        if let Ok(Err(e)) = joined {
            result = Err(ServerError::Serve(e));
        }
    }
    gateway.shutdown().await;
    tracing::info!("stopped");
    result
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("received SIGTERM"),
                _ = int.recv() => tracing::info!("received SIGINT"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
