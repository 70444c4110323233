//! `pushgate cluster ...`: a small client for a node's cluster admin API.

use crate::config::{ClusterAction, ClusterCommand};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Request(String),
}

/// One HTTP/1.1 request over a plain TCP connection (no TLS; admin traffic is local).
async fn request(url: &str, method: &str, path: &str, body: &str) -> Result<(u16, String), AdminError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| AdminError::Request(format!("--url {url:?} must start with http://")))?;
    let (host, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| AdminError::Request(format!("cannot connect to {host}: {e}")))?;
    let req = format!(
        "{method} {base}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| AdminError::Request(e.to_string()))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| AdminError::Request(e.to_string()))?;
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
    let (method, path, body) = match &cmd.action {
        ClusterAction::Status => ("GET", "/api/v1/cluster/status".to_string(), String::new()),
        ClusterAction::Add { node_id, address } => (
            "POST",
            "/api/v1/cluster/members".to_string(),
            serde_json::json!({"node_id": node_id, "address": address}).to_string(),
        ),
        ClusterAction::Remove { node_id } => ("DELETE", format!("/api/v1/cluster/members/{node_id}"), String::new()),
    };
    let (status, text) = request(&cmd.url, method, &path, &body).await?;
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if (200..300).contains(&status) {
        println!("{pretty}");
        Ok(())
    } else {
        Err(AdminError::Request(format!(
            "{} answered {status}: {}",
            cmd.url,
            pretty.trim()
        )))
    }
}
