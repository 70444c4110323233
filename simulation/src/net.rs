//! turmoil's simulated network behind pushgate's [`Transport`] seam, and a
//! minimal HTTP/1.1 client for the simulated clients.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use pushgate::transport::{BoxFuture, Connection, Io, Listener, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sockets of a simulated host.
pub struct Simulated;

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let (stream, remote) = self.0.accept().await?;
            Ok(Connection::new(stream, remote))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Transport for Simulated {
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
            let listener = turmoil::net::TcpListener::bind(addr).await?;
            Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, uri: Uri) -> BoxFuture<'static, io::Result<Box<dyn Io>>> {
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}

/// An HTTP answer as the checker needs it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `X-Pushgate-Log-Index`: the log index the answer reflects.
    pub log_index: Option<u64>,
    pub body: String,
}

/// How long a client waits for an answer, as a real client's timeout would.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), given up
/// after [`REQUEST_TIMEOUT`] (its outcome is then unknown).
pub async fn request(host: &str, port: u16, method: &str, path: &str, body: &str) -> io::Result<Answer> {
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(host, port, method, path, body))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer within the client timeout"))?
}

async fn exchange(host: &str, port: u16, method: &str, path: &str, body: &str) -> io::Result<Answer> {
    let mut stream = turmoil::net::TcpStream::connect((host, port)).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_answer(&raw)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn parse_answer(raw: &[u8]) -> io::Result<Answer> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut log_index = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "x-pushgate-log-index" => log_index = value.parse().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Answer {
        status,
        log_index,
        body: String::from_utf8(body).map_err(|_| bad("body is not UTF-8"))?,
    })
}

fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunk"))?;
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .ok_or_else(|| bad("bad chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
