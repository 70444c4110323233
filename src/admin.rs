//! `pushgate cluster ...`: a small client for a node's cluster admin API.

use std::sync::Arc;

use crate::config::{ClusterAction, ClusterCommand, NodeFlags, StatusOutput};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Recover(#[from] crate::cluster::recover::RecoverError),
}

/// The node the client talks to: its URL and, for `https://`, the TLS
/// settings to connect with.
struct Node {
    url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Node {
    fn new(cmd: &NodeFlags) -> Result<Node, AdminError> {
        let target = Target::parse(&cmd.url)?;
        let tls = if target.https {
            Some(Arc::new(client_tls(cmd)?))
        } else {
            if cmd.tls_ca_file.is_some() || cmd.tls_cert_file.is_some() {
                return Err(AdminError::Request("--tls.* flags need an https:// --url".to_string()));
            }
            None
        };
        Ok(Node {
            url: cmd.url.clone(),
            tls,
        })
    }

    /// One HTTP/1.1 request on a new connection. Credentials in the URL
    /// (`http://user:password@host:port`) are sent as basic authentication,
    /// for a node with `--web.config.file`.
    async fn request(&self, method: &str, path: &str, body: &str) -> Result<(u16, String), AdminError> {
        use base64::Engine;
        let Target {
            userinfo, host, base, ..
        } = Target::parse(&self.url)?;
        let authorization = match userinfo {
            Some(userinfo) => {
                let userinfo = percent_encoding::percent_decode_str(userinfo).decode_utf8_lossy();
                let token = base64::engine::general_purpose::STANDARD.encode(userinfo.as_bytes());
                format!("Authorization: Basic {token}\r\n")
            }
            None => String::new(),
        };
        let req = format!(
            "{method} {base}{path} HTTP/1.1\r\nHost: {host}\r\n{authorization}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // No HTTP/1.1 answer at all: say what --url should be.
        let unreachable = |what: String| AdminError::Request(format!("{what}{NOT_A_NODE_HINT}"));
        let stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| unreachable(format!("cannot connect to {host}: {e}")))?;
        let raw = match &self.tls {
            None => exchange(stream, &req).await,
            Some(config) => {
                let name = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
                let name = rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| AdminError::Request(format!("--url host {name:?}: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| unreachable(format!("TLS with {host} failed: {e}")))?;
                exchange(tls, &req).await
            }
        }
        .map_err(|e| unreachable(format!("no answer from {host}: {e}")))?;
        if !raw.starts_with(b"HTTP/1.") {
            return Err(unreachable(format!("{host} did not answer in HTTP/1.1")));
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    }
}

/// Said with a failure to reach `--url` at all: the usual cause is an
/// address that is not a node's HTTP API (its cluster address, say, which
/// speaks gRPC only).
const NOT_A_NODE_HINT: &str = " (is --url the HTTP address of a running pushgate node, its --web.listen-address \
     (port 9091 by default), with https:// only if it serves HTTPS? The cluster address, port 9092, speaks gRPC only)";

/// Sends `req` and reads the answer until the node closes the connection.
async fn exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    req: &str,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify; what was read is the answer.
    if let Err(e) = stream.read_to_end(&mut raw).await {
        if raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(e);
        }
    }
    Ok(raw)
}

/// Where the system keeps its trusted authorities (Debian, Ubuntu, Alpine).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS client settings of `--tls.*`.
#[allow(deprecated)] // ring, as the server side (src/http/tls.rs)
fn client_tls(cmd: &NodeFlags) -> Result<rustls::ClientConfig, AdminError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fail =
        |what: &std::path::Path, e: &dyn std::fmt::Display| AdminError::Request(format!("{}: {e}", what.display()));
    let ca_file = cmd
        .tls_ca_file
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(SYSTEM_CA_BUNDLE));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&ca_file).map_err(|e| {
        AdminError::Request(format!(
            "cannot read the authorities to trust from {} ({e}); give them with --tls.ca-file",
            ca_file.display()
        ))
    })?;
    for cert in certs {
        let cert = cert.map_err(|e| fail(&ca_file, &e))?;
        roots.add(cert).map_err(|e| fail(&ca_file, &e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| AdminError::Request(e.to_string()))?
        .with_root_certificates(roots);
    match (&cmd.tls_cert_file, &cmd.tls_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .map_err(|e| fail(cert_file, &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(cert_file, &e))?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| fail(key_file, &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| fail(cert_file, &e))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The parts of an `http[s]://[user:password@]host:port[/base]` URL.
struct Target<'a> {
    https: bool,
    userinfo: Option<&'a str>,
    host: &'a str,
    /// The path prefix, without a trailing slash.
    base: &'a str,
}

impl<'a> Target<'a> {
    fn parse(url: &'a str) -> Result<Target<'a>, AdminError> {
        let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => {
                return Err(AdminError::Request(format!(
                    "--url {url:?} must start with http:// or https://"
                )))
            }
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        Ok(Target {
            https,
            userinfo,
            host,
            base,
        })
    }
}

/// `url` with the password of its credentials, if any, replaced by `***`
/// (for messages).
fn without_password(url: &str) -> String {
    match Target::parse(url) {
        Ok(Target {
            https,
            userinfo: Some(userinfo),
            host,
            base,
        }) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let scheme = if https { "https" } else { "http" };
            format!("{scheme}://{user}:***@{host}{base}")
        }
        _ => url.to_string(),
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

pub async fn run(cmd: ClusterCommand) -> Result<(), AdminError> {
    let flags = match &cmd.action {
        ClusterAction::Recover {
            storage_path,
            advertise_address,
            force,
        } => {
            let recovery = crate::cluster::recover::recover(storage_path, advertise_address.as_deref(), *force).await?;
            println!("{recovery}");
            return Ok(());
        }
        ClusterAction::Status { node, .. } | ClusterAction::Add { node, .. } | ClusterAction::Remove { node, .. } => {
            node
        }
    };
    let node = Node::new(flags)?;
    let adding = match &cmd.action {
        ClusterAction::Add {
            node_id: Some(id),
            address: Some(address),
            ..
        } => Some((*id, address.clone())),
        ClusterAction::Add { .. } => {
            let (id, address) = node_at_url(&node).await?;
            eprintln!(
                "adding the node at {}: node {id}, cluster address {address}",
                without_password(&flags.url)
            );
            Some((id, address))
        }
        _ => None,
    };
    let (method, path, body) = match (&cmd.action, &adding) {
        (_, Some((node_id, address))) => (
            "POST",
            "/api/v1/cluster/members".to_string(),
            serde_json::json!({"node_id": node_id, "address": address}).to_string(),
        ),
        (ClusterAction::Remove { node_id, .. }, _) => {
            ("DELETE", format!("/api/v1/cluster/members/{node_id}"), String::new())
        }
        _ => ("GET", "/api/v1/cluster/status?members=true".to_string(), String::new()),
    };
    let (status, text) = match &adding {
        Some((node_id, _)) => with_progress(&node, *node_id, node.request(method, &path, &body)).await?,
        None => node.request(method, &path, &body).await?,
    };
    let json = serde_json::from_str::<serde_json::Value>(&text).ok();
    let hint = missing_route_hint(&cmd.action, status, json.is_some());
    let table = match (&cmd.action, &json) {
        (
            ClusterAction::Status {
                output: StatusOutput::Table,
                ..
            },
            Some(v),
        ) => status_table(v),
        _ => None,
    };
    let pretty = json.and_then(|v| serde_json::to_string_pretty(&v).ok()).unwrap_or(text);
    if (200..300).contains(&status) {
        println!("{}", table.unwrap_or(pretty));
        Ok(())
    } else {
        Err(AdminError::Request(format!(
            "{} answered {status}: {}{}",
            without_password(&flags.url),
            pretty.trim(),
            hint.unwrap_or_default()
        )))
    }
}

/// The id and cluster address of the node at `--url`, from its status.
async fn node_at_url(node: &Node) -> Result<(u64, String), AdminError> {
    let (status, text) = node.request("GET", "/api/v1/cluster/status", "").await?;
    let url = without_password(&node.url);
    if status != 200 {
        return Err(AdminError::Request(format!(
            "{url} answered {status} when asked for its own id and address: {}{}",
            text.trim(),
            if status == 404 {
                " (is --url the node's address and route prefix?)"
            } else {
                ""
            }
        )));
    }
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    this_node(&answer).ok_or_else(|| {
        AdminError::Request(format!(
            "{url} does not report its node id and cluster address (a release before they were reported?): \
             give --node-id and --address"
        ))
    })
}

/// The node id and advertised cluster address in a status answer.
fn this_node(answer: &serde_json::Value) -> Option<(u64, String)> {
    let data = answer.get("data")?;
    let id = data.get("node_id")?.as_u64()?;
    let address = data.get("advertise_address")?.as_str()?;
    (!address.is_empty()).then(|| (id, address.to_string()))
}

/// What to do when the node has no such route at all (a plain-text 404, not
/// the API's JSON answer "not a member"): the membership routes exist only
/// with `--web.enable-admin-api`, and every route under the node's prefix.
fn missing_route_hint(action: &ClusterAction, status: u16, json: bool) -> Option<&'static str> {
    if status != 404 || json {
        return None;
    }
    Some(match action {
        ClusterAction::Recover { .. } => return None,
        ClusterAction::Status { .. } => {
            " (is --url a pushgate node, with its --web.route-prefix or --web.external-url path?)"
        }
        ClusterAction::Add { .. } | ClusterAction::Remove { .. } => {
            " (membership changes need --web.enable-admin-api on the node at --url: restart it with the flag, \
             or send the change to a node that has it)"
        }
    })
}

/// How often `cluster add` reports how far the new node has caught up.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `add` (the request that adds `node_id`, which returns once the node
/// has caught up and become a voter: with a large store, a snapshot stream
/// of a while) and meanwhile says on stderr, every `PROGRESS_EVERY`, where
/// the new node stands.
async fn with_progress<T>(node: &Node, node_id: u64, add: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(add);
    let mut last = None;
    loop {
        tokio::select! {
            done = &mut add => return done,
            _ = tokio::time::sleep(PROGRESS_EVERY) => {
                let answer = node.request("GET", "/api/v1/cluster/status?members=true", "").await;
                let line = match answer {
                    Ok((200, text)) => serde_json::from_str(&text).ok().and_then(|v| add_progress(&v, node_id)),
                    _ => None,
                };
                let line = line.unwrap_or_else(|| format!("adding node {node_id}: waiting for the leader"));
                if last.as_ref() != Some(&line) {
                    eprintln!("{line}");
                    last = Some(line);
                }
            }
        }
    }
}

/// Where the node being added stands, from a `?members=true` status answer.
fn add_progress(answer: &serde_json::Value, node_id: u64) -> Option<String> {
    let node = answer.get("data")?.get("nodes")?.get(node_id.to_string());
    let Some(node) = node else {
        return Some(format!("adding node {node_id}: not a member yet"));
    };
    let role = node.get("role").and_then(|r| r.as_str()).unwrap_or("member");
    Some(match node.get("lag").and_then(|l| l.as_u64()) {
        Some(lag) => format!("adding node {node_id}: {role}, {lag} log entries behind the leader"),
        None => format!("adding node {node_id}: {role}, catching up"),
    })
}

/// The cluster status as a table, one row per member, or `None` when the
/// answer has no per-member part (a node of an older release): the caller
/// then prints the JSON.
fn status_table(answer: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let data = answer.get("data")?;
    let nodes = data.get("nodes")?.as_object()?;
    let text = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let mut rows = vec![[
        "NODE",
        "ADDRESS",
        "ROLE",
        "STATE",
        "TERM",
        "LEADER",
        "LAST LOG",
        "COMMITTED",
        "APPLIED",
        "LAG",
        "VERSION",
        "NOTE",
    ]
    .map(String::from)
    .to_vec()];
    for (id, n) in nodes {
        let mut notes = Vec::new();
        for key in ["error", "failure", "removed", "cut_off"] {
            if let Some(Value::String(s)) = n.get(key) {
                notes.push(s.clone());
            }
        }
        if let Some(stuck) = n.get("oldest_storage_call_seconds").and_then(Value::as_f64) {
            if stuck >= 1.0 {
                notes.push(format!("a write or sync of its Raft log has run for {stuck:.1} s"));
            }
        }
        let me = data.get("node_id").and_then(Value::as_u64).map(|m| m.to_string()) == Some(id.clone());
        rows.push(vec![
            if me { format!("{id}*") } else { id.clone() },
            text(n.get("address")),
            text(n.get("role")),
            text(n.get("state")),
            text(n.get("term")),
            text(n.get("leader_id")),
            text(n.get("last_log_index")),
            text(n.get("committed_index")),
            text(n.get("applied_index")),
            text(n.get("lag")),
            text(n.get("version")),
            notes.join("; "),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "cluster {}, as seen from node {} (*); LAG: entries behind the leader\n",
        text(data.get("cluster_id")),
        text(data.get("node_id"))
    );
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    // Fine while a rolling upgrade goes on, not as a lasting state.
    let releases: std::collections::BTreeSet<&str> =
        nodes.values().filter_map(|n| n.get("version")?.as_str()).collect();
    if releases.len() > 1 {
        let list: Vec<&str> = releases.into_iter().collect();
        out.push_str(&format!(
            "the members run different releases ({}): finish the upgrade (README, Upgrading a cluster)\n",
            list.join(", ")
        ));
    }
    Some(out.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_has_a_row_per_member_and_says_why_one_did_not_answer() {
        let answer = serde_json::json!({"status": "success", "data": {
        "node_id": 2, "cluster_id": "c1", "state": "Follower",
        "nodes": {
            "1": {"address": "h1:9092", "role": "voter", "lag": null, "version": "0.1.0", "state": "Leader",
                  "term": 3, "leader_id": 1, "last_log_index": 12, "committed_index": 12, "applied_index": 12,
                  "failure": null, "removed": null, "oldest_storage_call_seconds": 0.0, "error": null},
            "2": {"address": "h2:9092", "role": "voter", "lag": 0, "version": "0.1.0", "state": "Follower",
                  "term": 3, "leader_id": 1, "last_log_index": 12, "committed_index": 12, "applied_index": 11,
                  "failure": null, "removed": null, "oldest_storage_call_seconds": 2.5, "error": null},
            "3": {"address": "h3:9092", "role": "voter", "lag": 7, "error": "unreachable at h3:9092: timeout"}
        }}});
        let table = status_table(&answer).expect("a table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(
            lines[0].contains("cluster c1") && lines[0].contains("node 2"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("NODE") && lines[1].contains("COMMITTED"),
            "{table}"
        );
        let cells = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[2])[..10],
            ["1", "h1:9092", "voter", "Leader", "3", "1", "12", "12", "12", "-"]
        );
        assert_eq!(cells(lines[3])[0], "2*");
        assert!(lines[3].contains("has run for 2.5 s"), "{table}");
        assert!(
            lines[4].contains("unreachable at h3:9092: timeout") && cells(lines[4])[9] == "7",
            "{table}"
        );
    }

    #[test]
    fn the_status_table_says_when_members_run_different_releases() {
        let answer = |second: &str| {
            serde_json::json!({"status": "success", "data": {"node_id": 1, "cluster_id": "c1", "nodes": {
                "1": {"address": "h1:9092", "role": "voter", "version": "0.1.0", "state": "Leader"},
                "2": {"address": "h2:9092", "role": "voter", "version": second, "state": "Follower"},
                "3": {"address": "h3:9092", "role": "voter", "error": "unreachable at h3:9092: timeout"}
            }}})
        };
        let mixed = status_table(&answer("0.2.0")).expect("a table");
        assert!(
            mixed
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("the members run different releases (0.1.0, 0.2.0)")),
            "{mixed}"
        );
        let same = status_table(&answer("0.1.0")).expect("a table");
        assert!(!same.contains("different releases"), "{same}");
    }

    #[test]
    fn adding_the_node_at_the_url_takes_its_id_and_address_from_its_status() {
        let answer = serde_json::json!({"status": "success", "data": {"node_id": 4, "advertise_address": "pushgate-3.pushgate-peers:9092"}});
        assert_eq!(
            this_node(&answer),
            Some((4, "pushgate-3.pushgate-peers:9092".to_string()))
        );
        let older = serde_json::json!({"status": "success", "data": {"node_id": 4}});
        assert_eq!(this_node(&older), None, "a release that does not report its address");
    }

    #[test]
    fn a_missing_membership_route_points_to_the_admin_api_flag() {
        let node = || NodeFlags {
            url: "http://127.0.0.1:9091".into(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        };
        let add = ClusterAction::Add {
            node: node(),
            node_id: Some(4),
            address: Some("h:9092".into()),
        };
        let remove = ClusterAction::Remove {
            node: node(),
            node_id: 4,
        };
        for action in [&add, &remove] {
            let hint = missing_route_hint(action, 404, false).unwrap();
            assert!(hint.contains("--web.enable-admin-api"), "{hint}");
        }
        assert_eq!(
            missing_route_hint(&remove, 404, true),
            None,
            "the API's own 404 (not a member) says why itself"
        );
        assert_eq!(missing_route_hint(&add, 503, false), None);
        let status = ClusterAction::Status {
            node: node(),
            output: StatusOutput::Table,
        };
        assert!(missing_route_hint(&status, 404, false)
            .unwrap()
            .contains("--web.route-prefix"));
    }

    /// The error of asking `http://127.0.0.1:{port}` for its status, which
    /// must fail.
    async fn status_error(port: u16) -> String {
        Node::new(&NodeFlags {
            url: format!("http://127.0.0.1:{port}"),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        })
        .expect("an http:// URL")
        .request("GET", "/api/v1/cluster/status", "")
        .await
        .expect_err("no node answers there")
        .to_string()
    }

    #[tokio::test]
    async fn an_address_where_no_node_listens_is_refused_with_what_url_should_be() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let text = status_error(port).await;
        assert!(
            text.starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
            "{text}"
        );
        assert!(text.contains("--web.listen-address"), "{text}");
    }

    /// A node's cluster address speaks HTTP/2 (gRPC) only: the HTTP/1.1
    /// request gets a binary frame back, which must not pass for an answer.
    #[tokio::test]
    async fn an_answer_that_is_not_http_1_is_refused_with_what_url_should_be() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            // Read the whole request (data left unread would make close a reset).
            let mut request = Vec::new();
            let mut buf = [0u8; 256];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            // An HTTP/2 SETTINGS frame, then GOAWAY, as an h2-only server sends.
            let _ = conn
                .write_all(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x08\x07\x00\x00\x00\x00\x00")
                .await;
        });
        let text = status_error(port).await;
        assert!(
            text.starts_with(&format!("127.0.0.1:{port} did not answer in HTTP/1.1 ")),
            "{text}"
        );
        assert!(text.contains("port 9092, speaks gRPC only"), "{text}");
        server.await.unwrap();
    }

    #[test]
    fn messages_do_not_show_the_password_of_the_url() {
        assert_eq!(
            without_password("http://admin:s3cret@127.0.0.1:9091/pg"),
            "http://admin:***@127.0.0.1:9091/pg"
        );
        assert_eq!(without_password("http://127.0.0.1:9091"), "http://127.0.0.1:9091");
    }

    #[test]
    fn an_answer_without_members_is_printed_as_json() {
        let answer = serde_json::json!({"status": "success", "data": {"node_id": 1}});
        assert_eq!(status_table(&answer), None);
    }

    #[test]
    fn add_progress_says_where_the_new_node_stands() {
        let answer = |nodes: serde_json::Value| serde_json::json!({"status": "success", "data": {"nodes": nodes}});
        assert_eq!(
            add_progress(&answer(serde_json::json!({"1": {"role": "voter", "lag": 0}})), 4).as_deref(),
            Some("adding node 4: not a member yet")
        );
        assert_eq!(
            add_progress(&answer(serde_json::json!({"4": {"role": "learner", "lag": 5120}})), 4).as_deref(),
            Some("adding node 4: learner, 5120 log entries behind the leader")
        );
        assert_eq!(
            add_progress(&answer(serde_json::json!({"4": {"role": "learner", "lag": null}})), 4).as_deref(),
            Some("adding node 4: learner, catching up")
        );
        assert_eq!(add_progress(&serde_json::json!({"status": "error"}), 4), None);
    }
}
