//! The one seam between a node and its sockets.
//!
//! A node listens for HTTP and for cluster (gRPC) traffic and dials its peers
//! only through a [`Transport`]: [`Os`] is the operating system's TCP, and the
//! deterministic simulation (`simulation/`) plugs in turmoil's simulated
//! network instead. Everything above this module, the HTTP routes, Raft, the
//! log store, is the same code in both.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint};

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

    /// A lazily connecting gRPC channel to `endpoint`, which carries the
    /// address and every timeout and keepalive setting.
    fn channel(&self, endpoint: Endpoint) -> Channel;
}

/// The operating system's TCP.
#[derive(Clone, Debug, Default)]
pub struct Os {
    /// Source address of outgoing connections (one loopback address per node
    /// in a local cluster, so that every connection's source names its node).
    pub source_ip: Option<IpAddr>,
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

    fn channel(&self, endpoint: Endpoint) -> Channel {
        endpoint.tcp_nodelay(true).local_address(self.source_ip).connect_lazy()
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
