//! TLS over any [`Transport`]: the accepting side every TLS listener shares
//! (HTTPS on the HTTP ports, the cluster port), and mutual TLS between
//! replicas ([`MutualTls`], [`TlsTransport`]).
//!
//! Certificates and keys are files that are looked at again (a `stat`) for
//! every new connection and read again only when one changed, so a renewed
//! certificate (cert-manager, certbot, a rotated Kubernetes Secret) is used
//! without a restart. A renewal that cannot be used fails new handshakes,
//! with an error in the log, and never falls back to plain text; connections
//! already made keep their session.
//!
//! Handshakes run in their own tasks, so a client that connects and sends
//! nothing holds up no one.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use http::Uri;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

use super::{BoxFuture, Connection, Io, Listener, Transport};

/// How long a client may take to send its first bytes and finish the
/// handshake before its connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections that finished their handshake and wait for their server.
const HANDSHAKEN_BACKLOG: usize = 128;

/// Where a PEM text comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

/// Inline PEM may be a private key: never shown.
impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
            Pem::Inline(_) => f.write_str("Inline(<hidden>)"),
        }
    }
}

/// The certificates of a PEM text (a chain, or a bundle of authorities).
pub fn read_certs(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = match pem {
        Pem::File(path) => CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .collect(),
        Pem::Inline(text) => CertificateDer::pem_slice_iter(text.as_bytes()).collect(),
    };
    let certs = certs.map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("tls: failed to find any PEM data in certificate input".into());
    }
    Ok(certs)
}

/// The private key of a PEM text.
pub fn read_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, String> {
    match pem {
        Pem::File(path) => PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display())),
        Pem::Inline(text) => PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| e.to_string()),
    }
}

/// The authorities of a CA file, as a root store.
pub fn read_roots(ca_file: &Path) -> Result<rustls::RootCertStore, String> {
    let ca_error = |e: &dyn std::fmt::Display| format!("{}: {e}", ca_file.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| ca_error(&e))? {
        roots.add(cert.map_err(|e| ca_error(&e))?).map_err(|e| ca_error(&e))?;
    }
    if roots.is_empty() {
        return Err(ca_error(&"no certificate in the file"));
    }
    Ok(roots)
}

/// Modification time and size of a file, to see whether it changed.
pub type Stamp = Option<(SystemTime, u64)>;

/// The [`Stamp`] of the file at `path` now (`None`: it cannot be read).
pub fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What was built from settings of kind `K` and their files, built again
/// only when the settings or one of the files changed.
pub struct Reloading<K, V> {
    current: parking_lot::Mutex<Option<Built<K, V>>>,
}

struct Built<K, V> {
    settings: K,
    stamps: Vec<Stamp>,
    value: Result<V, String>,
}

impl<K, V> Default for Reloading<K, V> {
    fn default() -> Self {
        Reloading {
            current: parking_lot::Mutex::new(None),
        }
    }
}

impl<K: PartialEq + Clone, V: Clone> Reloading<K, V> {
    /// The value for `settings`, whose files are `files`, built by `build`
    /// if they are new or changed. A failure is logged once per change.
    pub fn get(&self, settings: &K, files: &[&Path], build: impl FnOnce(&K) -> Result<V, String>) -> Result<V, String> {
        let stamps: Vec<Stamp> = files.iter().map(|f| stamp(f)).collect();
        let mut current = self.current.lock();
        if let Some(built) = current.as_ref() {
            if built.settings == *settings && built.stamps == stamps {
                return built.value.clone();
            }
        }
        let reloaded = current.is_some();
        let value = build(settings);
        match &value {
            Ok(_) if reloaded => tracing::info!("TLS certificate and settings read again"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "TLS handshakes fail until the TLS settings or files are fixed"),
        }
        *current = Some(Built {
            settings: settings.clone(),
            stamps,
            value: value.clone(),
        });
        value
    }
}

/// Where a TLS listener gets the configuration for a new connection.
pub trait TlsConfigSource: Send + Sync + 'static {
    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String>;
}

/// A listener whose connections have finished a TLS handshake.
pub struct TlsListener {
    handshaken: mpsc::Receiver<Connection>,
    local_addr: io::Result<std::net::SocketAddr>,
}

impl TlsListener {
    /// Accepts on `listener` and hands over connections once their
    /// handshake with the configuration of `source` is done. Failures are
    /// logged with the client's address. With `accepts_plaintext`, a
    /// connection that does not start with a TLS record is handed over as it
    /// is (switching a cluster to TLS one replica at a time).
    pub fn new(
        mut listener: Box<dyn Listener>,
        source: Arc<dyn TlsConfigSource>,
        accepts_plaintext: bool,
    ) -> TlsListener {
        let local_addr = listener.local_addr();
        let (tx, handshaken) = mpsc::channel(HANDSHAKEN_BACKLOG);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    // The server stopped: stop listening.
                    _ = tx.closed() => return,
                };
                match accepted {
                    Ok(conn) => {
                        let (tx, source) = (tx.clone(), source.clone());
                        tokio::spawn(async move {
                            let remote = conn.remote();
                            let handshake = handshake(conn, &*source, accepts_plaintext);
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                                Ok(Ok(Some(tls))) => {
                                    let _ = tx.send(tls).await;
                                }
                                Ok(Ok(None)) => {}
                                Ok(Err(e)) => tracing::info!(client = %remote, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::info!(client = %remote, "TLS handshake timed out"),
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a TLS connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        TlsListener { handshaken, local_addr }
    }
}

impl Listener for TlsListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            match self.handshaken.recv().await {
                Some(conn) => Ok(conn),
                // The accepting task holds a sender as long as this listener
                // lives, so this is not reached.
                None => std::future::pending().await,
            }
        })
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.local_addr {
            Ok(a) => Ok(*a),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// Go's answer to plain HTTP on a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Whether the first five bytes of a connection are a plain HTTP request
/// (Go's `tlsRecordHeaderLooksLikeHTTP`).
fn looks_like_http(first: &[u8; 5]) -> bool {
    matches!(first, b"GET /" | b"HEAD " | b"POST " | b"PUT /" | b"OPTIO")
}

/// Whether the first five bytes are HTTP/2's preface sent in plain text: a
/// replica without `--cluster.tls.*` calling one with it.
fn looks_like_plain_http2(first: &[u8; 5]) -> bool {
    first == b"PRI *"
}

/// The first byte of a TLS handshake record (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Runs the server side of a handshake. `None`: a plain HTTP request was
/// answered with a 400 and the connection closed.
async fn handshake(
    mut conn: Connection,
    source: &dyn TlsConfigSource,
    accepts_plaintext: bool,
) -> io::Result<Option<Connection>> {
    let remote = conn.remote();
    let mut first = [0u8; 5];
    conn.read_exact(&mut first).await?;
    if accepts_plaintext && first[0] != TLS_HANDSHAKE_RECORD {
        let plain = Rewound {
            first,
            sent: 0,
            inner: conn,
        };
        return Ok(Some(Connection::new(plain, remote)));
    }
    if looks_like_http(&first) {
        conn.write_all(PLAIN_HTTP_ANSWER).await?;
        let _ = conn.shutdown().await;
        return Ok(None);
    }
    if looks_like_plain_http2(&first) {
        return Err(io::Error::other(
            "the client speaks plain-text HTTP/2 (gRPC without TLS) to a TLS port: \
             is --cluster.tls.* set on every replica?",
        ));
    }
    let config = source.server_config().map_err(io::Error::other)?;
    let rewound = Rewound {
        first,
        sent: 0,
        inner: conn,
    };
    let tls = tokio_rustls::TlsAcceptor::from(config).accept(rewound).await?;
    Ok(Some(Connection::new(tls, remote)))
}

/// A connection whose first five bytes were read and are read again.
struct Rewound {
    first: [u8; 5],
    sent: usize,
    inner: Connection,
}

impl AsyncRead for Rewound {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.sent < self.first.len() {
            let n = (self.first.len() - self.sent).min(buf.remaining());
            let start = self.sent;
            buf.put_slice(&self.first[start..start + n]);
            self.sent += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `client_allowed_sans` of `--web.config.file` and
/// `--cluster.tls.client-allowed-sans`: after `inner` accepted the client
/// certificate, it must carry one of the allowed subject alternative names,
/// compared as exporter-toolkit does: exactly, with DNS names, e-mail
/// addresses, IP addresses (Go's form: `10.0.0.1`, `2001:db8::1`) and URIs.
/// A client without a certificate is refused, as there (Go calls the check
/// with no certificate and it fails).
#[derive(Debug)]
pub struct AllowedSans {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub allowed: Vec<String>,
    /// The setting that lists them, for the refusal's message.
    pub setting: &'static str,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let names = subject_alt_names(end_entity)
            .map_err(|e| rustls::Error::General(format!("cannot read the client certificate's names: {e}")))?;
        if names.iter().any(|n| self.allowed.contains(n)) {
            Ok(verified)
        } else {
            Err(rustls::Error::General(format!(
                "the client certificate names {names:?}, none of {} {:?}",
                self.setting, self.allowed
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The subject alternative names of a certificate as Go prints them: DNS
/// names, e-mail addresses, IP addresses and URIs (other kinds left out).
fn subject_alt_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| e.to_string())?;
    let Some(san) = cert.subject_alternative_name().map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(n) | GeneralName::RFC822Name(n) | GeneralName::URI(n) => names.push(n.to_string()),
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).map_err(|e| e.to_string())?),
                    16 => {
                        let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).map_err(|e| e.to_string())?);
                        // Go prints an IPv4-mapped address as the IPv4 one.
                        v6.to_ipv4_mapped()
                            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
                    }
                    _ => continue,
                };
                names.push(ip.to_string());
            }
            _ => {}
        }
    }
    Ok(names)
}

/// Mutual TLS between replicas (`--cluster.tls.*`): every replica presents
/// its certificate on both ends of a connection and accepts only peers whose
/// certificate the cluster's CA signed. A client also checks that the
/// server's certificate names the address it dialled (or
/// `--cluster.tls.server-name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutualTlsSettings {
    /// This node's certificate (chain) in PEM, used as server and as client.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The authorities that sign the replicas' certificates.
    pub ca_file: PathBuf,
    /// The name every peer's certificate must carry, instead of the host of
    /// the peer's address.
    pub server_name: Option<String>,
    /// When not empty, a peer that connects must present a certificate
    /// with one of these subject alternative names (for a CA that also
    /// signs certificates of other services).
    pub client_allowed_sans: Vec<String>,
    /// What this replica does about plain text.
    pub plaintext: Plaintext,
}

/// What a replica with mutual TLS does about plain-text connections
/// (`--cluster.tls.plaintext`): the steps of switching a running cluster to
/// TLS, or back, one replica at a time, with no moment in which two
/// replicas cannot talk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Plaintext {
    /// TLS only, both ways (the default).
    #[default]
    Refuse,
    /// Takes plain-text connections as well as TLS ones; dials peers in TLS.
    Accept,
    /// Takes both; dials peers in plain text.
    AcceptAndDial,
}

impl Plaintext {
    /// The flag's values, in the order of a switch to TLS read backwards.
    pub const NAMES: [&'static str; 3] = ["refuse", "accept", "accept-and-dial"];

    pub fn parse(name: &str) -> Option<Plaintext> {
        match name {
            "refuse" => Some(Plaintext::Refuse),
            "accept" => Some(Plaintext::Accept),
            "accept-and-dial" => Some(Plaintext::AcceptAndDial),
            _ => None,
        }
    }
}

/// Both ends' rustls configurations of [`MutualTlsSettings`].
#[derive(Clone)]
struct MutualConfigs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl MutualTlsSettings {
    #[allow(deprecated)] // ring, as everywhere in pushgate (no CMake or NASM to build it)
    fn build(&self) -> Result<MutualConfigs, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert_error = |e: String| format!("--cluster.tls.cert-file: {e}");
        let chain = read_certs(&Pem::File(self.cert_file.clone())).map_err(cert_error)?;
        let key = read_key(&Pem::File(self.key_file.clone())).map_err(|e| format!("--cluster.tls.key-file: {e}"))?;
        let roots = Arc::new(read_roots(&self.ca_file).map_err(|e| format!("--cluster.tls.ca-file: {e}"))?);
        let mut verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("--cluster.tls.ca-file: {e}"))?;
        if !self.client_allowed_sans.is_empty() {
            verifier = Arc::new(AllowedSans {
                inner: verifier,
                allowed: self.client_allowed_sans.clone(),
                setting: "--cluster.tls.client-allowed-sans",
            });
        }
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| cert_error(format!("does not go with --cluster.tls.key-file: {e}")))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| cert_error(format!("does not go with --cluster.tls.key-file: {e}")))?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(MutualConfigs {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// [`MutualTlsSettings`] in force, read again when a file changes.
pub struct MutualTls {
    settings: MutualTlsSettings,
    built: Reloading<MutualTlsSettings, MutualConfigs>,
}

impl MutualTls {
    /// Reads the files once: settings that cannot be used stop the start.
    pub fn open(settings: MutualTlsSettings) -> Result<MutualTls, String> {
        let tls = MutualTls {
            settings,
            built: Reloading::default(),
        };
        tls.configs()?;
        Ok(tls)
    }

    fn configs(&self) -> Result<MutualConfigs, String> {
        let f = &self.settings;
        self.built
            .get(f, &[&f.cert_file, &f.key_file, &f.ca_file], MutualTlsSettings::build)
    }
}

impl TlsConfigSource for MutualTls {
    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        Ok(self.configs()?.server)
    }
}

/// A transport whose listeners and connections speak mutual TLS over those
/// of `inner`.
pub struct TlsTransport {
    inner: Arc<dyn Transport>,
    tls: Arc<MutualTls>,
}

impl TlsTransport {
    pub fn new(inner: Arc<dyn Transport>, tls: Arc<MutualTls>) -> Self {
        TlsTransport { inner, tls }
    }
}

impl Transport for TlsTransport {
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = self.inner.bind(addr).await?;
            let accepts_plaintext = self.tls.settings.plaintext != Plaintext::Refuse;
            let listener = TlsListener::new(listener, self.tls.clone(), accepts_plaintext);
            Ok(Box::new(listener) as Box<dyn Listener>)
        })
    }

    fn connect(&self, uri: Uri) -> BoxFuture<'static, io::Result<Box<dyn Io>>> {
        if self.tls.settings.plaintext == Plaintext::AcceptAndDial {
            return self.inner.connect(uri);
        }
        let name = match &self.tls.settings.server_name {
            Some(name) => name.clone(),
            None => uri.host().unwrap_or_default().trim_matches(['[', ']']).to_string(),
        };
        let configs = self.tls.configs();
        let connecting = self.inner.connect(uri);
        Box::pin(async move {
            let configs = configs.map_err(io::Error::other)?;
            let name = ServerName::try_from(name.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?}: {e}")))?;
            let stream = connecting.await?;
            let tls = tokio_rustls::TlsConnector::from(configs.client)
                .connect(name, stream)
                .await?;
            Ok(Box::new(tls) as Box<dyn Io>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_alt_names_read_as_go_prints_them() {
        let mut params = rcgen::CertificateParams::new(vec!["job.example.com".to_string()]).unwrap();
        params.subject_alt_names.extend([
            rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap()),
            rcgen::SanType::IpAddress("2001:db8::1".parse().unwrap()),
            rcgen::SanType::IpAddress("::ffff:192.0.2.7".parse().unwrap()),
            rcgen::SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://example.com/job".try_into().unwrap()),
        ]);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_alt_names(cert.der()).unwrap(),
            [
                "job.example.com",
                "10.0.0.1",
                "2001:db8::1",
                "192.0.2.7",
                "ops@example.com",
                "spiffe://example.com/job"
            ]
        );
        assert!(subject_alt_names(&CertificateDer::from(vec![1, 2, 3])).is_err());
    }

    /// A CA and a replica certificate for `names` (server and client use),
    /// written as `ca.crt`, `node.crt` and `node.key` into `dir`.
    fn write_pki(dir: &Path, names: &[&str]) -> MutualTlsSettings {
        use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        std::fs::write(dir.join("ca.crt"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut node = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        node.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        std::fs::write(dir.join("node.crt"), node.signed_by(&key, &issuer).unwrap().pem()).unwrap();
        std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
        MutualTlsSettings {
            cert_file: dir.join("node.crt"),
            key_file: dir.join("node.key"),
            ca_file: dir.join("ca.crt"),
            server_name: None,
            plaintext: Plaintext::Refuse,
            client_allowed_sans: Vec::new(),
        }
    }

    /// Both ends of one handshake with `files`, the client expecting `name`.
    async fn handshake_as(files: MutualTlsSettings, name: &str) -> io::Result<()> {
        let configs = MutualTls::open(files)
            .map_err(io::Error::other)?
            .configs()
            .map_err(io::Error::other)?;
        let (client_io, server_io) = tokio::io::duplex(64 << 10);
        let server = tokio_rustls::TlsAcceptor::from(configs.server).accept(server_io);
        let name = ServerName::try_from(name.to_string()).map_err(io::Error::other)?;
        let client = tokio_rustls::TlsConnector::from(configs.client).connect(name, client_io);
        let (server, client) = tokio::join!(server, client);
        client?;
        server.map(|_| ())
    }

    /// A Kubernetes StatefulSet's replicas can share one certificate that
    /// names every pod, or, with fully qualified peer names, a wildcard of
    /// the headless service (README, manifest). webpki takes no wildcard
    /// directly above a one-label name, so `*.pushgate-peers` covers nothing.
    #[tokio::test]
    async fn one_certificate_can_cover_every_pod_of_a_statefulset() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pki(dir.path(), &["pushgate-0.pushgate-peers", "pushgate-1.pushgate-peers"]);
        handshake_as(files.clone(), "pushgate-0.pushgate-peers").await.unwrap();
        handshake_as(files.clone(), "pushgate-1.pushgate-peers").await.unwrap();
        let e = handshake_as(files, "pushgate-2.pushgate-peers").await.unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");

        let fqdn = "pushgate-peers.monitoring.svc.cluster.local";
        let files = write_pki(dir.path(), &[&format!("*.{fqdn}")]);
        handshake_as(files.clone(), &format!("pushgate-4.{fqdn}"))
            .await
            .unwrap();

        let files = write_pki(dir.path(), &["*.pushgate-peers"]);
        let e = handshake_as(files, "pushgate-0.pushgate-peers").await.unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");
    }

    /// With `--cluster.tls.client-allowed-sans`, a certificate of the
    /// cluster's CA is not enough: it must also carry an allowed name.
    #[tokio::test]
    async fn a_peer_needs_an_allowed_name_when_names_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = vec!["pushgate-peer".to_string(), "other".to_string()];
        let files = MutualTlsSettings {
            client_allowed_sans: allowed.clone(),
            ..write_pki(dir.path(), &["node-a", "pushgate-peer"])
        };
        handshake_as(files, "node-a").await.unwrap();
        let files = MutualTlsSettings {
            client_allowed_sans: allowed,
            ..write_pki(dir.path(), &["node-a"])
        };
        let e = handshake_as(files, "node-a").await.unwrap_err();
        assert!(
            e.to_string().contains(
                r#"the client certificate names ["node-a"], none of --cluster.tls.client-allowed-sans ["pushgate-peer", "other"]"#
            ),
            "{e}"
        );
    }

    #[test]
    fn only_plain_http_request_lines_are_answered_in_plain_http() {
        assert!(looks_like_http(b"GET /"));
        assert!(looks_like_http(b"OPTIO"));
        assert!(!looks_like_http(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!looks_like_http(b"PRI *"));
        assert!(looks_like_plain_http2(b"PRI *"));
    }
}
