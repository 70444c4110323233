//! The one seam between a node and its sockets.
//!
//! A node listens for HTTP and for cluster (gRPC) traffic and dials its peers
//! only through a [`Transport`]: [`Os`] is the operating system's TCP, and the
//! deterministic simulation (`simulation/`) plugs in turmoil's simulated
//! network instead. Everything above this module, the HTTP routes, Raft, the
//! log store, is the same code in both. [`tls`] wraps any transport in TLS:
//! HTTPS on the HTTP listeners, mutual TLS between replicas.

pub mod tls;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint};
use tower::Service;

/// A boxed future, as the object-safe [`Transport`] methods return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream of any transport.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An accepted connection.
pub struct Connection {
    io: Box<dyn Io>,
    remote: SocketAddr,
}

impl Connection {
    pub fn new(io: impl Io, remote: SocketAddr) -> Self {
        Connection {
            io: Box::new(io),
            remote,
        }
    }

    /// The peer's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = SocketAddr;

    fn connect_info(&self) -> SocketAddr {
        self.remote
    }
}

/// A bound listening socket.
pub trait Listener: Send + 'static {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// How a node opens sockets.
pub trait Transport: Send + Sync + 'static {
    /// Listens on `addr` (HOST:PORT).
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>>;

    /// Opens a byte stream to the host and port of `uri`, resolving a name
    /// again on every call. The connect timeout is the caller's.
    fn connect(&self, uri: Uri) -> BoxFuture<'static, io::Result<Box<dyn Io>>>;
}

/// A lazily connecting gRPC channel through `transport` to `endpoint`, which
/// carries the address and every other timeout and keepalive setting.
///
/// A connection (and its TLS handshake) not made within `connect_timeout`
/// fails like a refused one: tonic wraps every failure of the connector in
/// `tonic::ConnectError`, which says that nothing was sent. (The endpoint's
/// own `connect_timeout` would fire outside that wrapper.)
pub fn channel(transport: Arc<dyn Transport>, endpoint: Endpoint, connect_timeout: Duration) -> Channel {
    endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
        let connecting = transport.connect(uri);
        async move {
            match tokio::time::timeout(connect_timeout, connecting).await {
                Ok(connected) => connected.map(TokioIo::new),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {connect_timeout:?}"),
                )),
            }
        }
    }))
}

/// The operating system's TCP.
#[derive(Clone, Debug)]
pub struct Os {
    /// hyper's connector, as tonic's own channels use it (every address a
    /// name resolves to is tried, IPv6 and IPv4 raced).
    connector: HttpConnector,
}

impl Os {
    /// Outgoing connections from `source_ip` (one loopback address per node
    /// in a local cluster, so that every connection's source names its node).
    pub fn new(source_ip: Option<IpAddr>) -> Self {
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        // Small RPCs must not wait for Nagle.
        connector.set_nodelay(true);
        connector.set_local_address(source_ip);
        Os { connector }
    }
}

impl Default for Os {
    fn default() -> Self {
        Os::new(None)
    }
}

struct OsListener(tokio::net::TcpListener);

impl Listener for OsListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let (stream, remote) = self.0.accept().await?;
            // Small RPCs and HTTP answers must not wait for Nagle.
            let _ = stream.set_nodelay(true);
            Ok(Connection::new(stream, remote))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Transport for Os {
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            Ok(Box::new(OsListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, uri: Uri) -> BoxFuture<'static, io::Result<Box<dyn Io>>> {
        let mut connector = self.connector.clone();
        Box::pin(async move {
            let stream = connector.call(uri).await.map_err(io::Error::other)?;
            Ok(Box::new(stream.into_inner()) as Box<dyn Io>)
        })
    }
}

/// A listener as a stream of connections, for tonic's `serve_with_incoming`.
pub fn incoming(listener: Box<dyn Listener>) -> impl futures::Stream<Item = io::Result<Connection>> + Send {
    futures::stream::unfold(listener, |mut listener| async move {
        let next = listener.accept().await;
        Some((next, listener))
    })
}

/// A listener for `axum::serve`, which wants accept errors handled inside:
/// they are logged and retried after a pause, as axum does for TCP.
pub struct HttpListener(pub Box<dyn Listener>);

impl axum::serve::Listener for HttpListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok(conn) => {
                    let remote = conn.remote;
                    return (conn, remote);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
