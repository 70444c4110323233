//! HTTPS on the HTTP listeners: `tls_server_config` of `--web.config.file`,
//! as the reference Pushgateway (exporter-toolkit) reads it.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # relative paths: from the web config's folder
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12           # TLS12 (default) or TLS13
//! ```
//!
//! As in exporter-toolkit, the web configuration and the certificate files
//! are looked at again for every new connection, so a renewed certificate
//! (cert-manager, certbot) is served without a restart; unlike it, they are
//! only read again when a file's modification time or size changed. Whether
//! a listener speaks TLS at all is decided at start.
//!
//! rustls serves TLS 1.2 and 1.3 with AEAD cipher suites only: `min_version`
//! TLS10/TLS11 means TLS 1.2 here, and a configuration that asks for nothing
//! rustls can offer (a `max_version` below TLS12, only CBC cipher suites) is
//! refused with a message that says so.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, NamedGroup, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

use crate::transport::{Connection, Listener};

/// How long a client may take to send its first bytes and finish the
/// handshake before its connection is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections that finished their handshake and wait for the HTTP server.
const HANDSHAKEN_BACKLOG: usize = 128;

/// `client_auth_type`, as Go's `tls.ClientAuthType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    /// Asks for a certificate, accepts none, does not verify one.
    RequestClientCert,
    /// Requires a certificate, does not verify it.
    RequireAnyClientCert,
    /// Accepts none; verifies one that is sent.
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

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

/// `tls_server_config`, checked: every name is known and every combination
/// can be served. No file is read here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    cert: Pem,
    key: Pem,
    client_auth: ClientAuth,
    client_ca_file: Option<PathBuf>,
    /// Offer TLS 1.2 and TLS 1.3.
    tls12: bool,
    tls13: bool,
    /// TLS 1.2 cipher suites to offer (empty: rustls's); TLS 1.3 suites are
    /// not configurable, as in Go.
    cipher_suites: Vec<rustls::CipherSuite>,
    /// Key exchange groups in order of preference (empty: rustls's).
    curves: Vec<NamedGroup>,
    /// Choose the cipher suite by the server's order (default true).
    prefer_server_order: bool,
    /// Offer HTTP/2 by ALPN (`http_server_config.http2`, default true).
    http2: bool,
}

/// The fields of `tls_server_config`, as read from YAML.
#[derive(Debug, Default)]
pub struct TlsSection<'a> {
    pub cert_file: &'a str,
    pub key_file: &'a str,
    pub cert: &'a str,
    pub key: &'a str,
    pub client_auth_type: &'a str,
    pub client_ca_file: &'a str,
    pub client_allowed_sans: &'a [String],
    pub min_version: &'a str,
    pub max_version: &'a str,
    pub cipher_suites: &'a [String],
    pub curve_preferences: &'a [String],
    pub prefer_server_cipher_suites: Option<bool>,
}

/// Go's TLS versions, ordered.
fn tls_version(name: &str) -> Result<u8, String> {
    match name {
        "TLS10" => Ok(0),
        "TLS11" => Ok(1),
        "TLS12" => Ok(2),
        "TLS13" => Ok(3),
        other => Err(format!("unknown TLS version: {other}")),
    }
}

/// Go's secure cipher suite names (`tls.CipherSuites()`), with the rustls
/// suite for the ones rustls offers.
const CIPHER_SUITES: [(&str, Option<rustls::CipherSuite>); 19] = {
    use rustls::CipherSuite::*;
    [
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            Some(TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            Some(TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            Some(TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            Some(TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            Some(TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            Some(TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            Some(TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            Some(TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
        // TLS 1.3 suites: accepted, and as in Go they change nothing.
        ("TLS_AES_128_GCM_SHA256", None),
        ("TLS_AES_256_GCM_SHA384", None),
        ("TLS_CHACHA20_POLY1305_SHA256", None),
        // Known to Go, not offered by rustls (no RSA key exchange, no CBC).
        ("TLS_RSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_RSA_WITH_AES_256_CBC_SHA", None),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256", None),
        ("TLS_RSA_WITH_AES_256_GCM_SHA384", None),
        ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", None),
        ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", None),
        ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", None),
    ]
};

/// Joins a relative path with the web configuration's folder, as
/// exporter-toolkit's `SetDirectory` does.
fn join_dir(dir: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

impl TlsSettings {
    /// Checks the section of a web configuration in folder `dir`. `None`:
    /// the section asks for no TLS (plain HTTP).
    pub fn from_section(section: &TlsSection<'_>, dir: &Path, http2: bool) -> Result<Option<TlsSettings>, String> {
        let s = section;
        if s.cert_file.is_empty()
            && s.key_file.is_empty()
            && s.cert.is_empty()
            && s.key.is_empty()
            && s.client_auth_type.is_empty()
            && s.client_ca_file.is_empty()
        {
            return Ok(None);
        }
        let pem = |file: &str, inline: &str, what: &str| match (file.is_empty(), inline.is_empty()) {
            (false, true) => Ok(Pem::File(join_dir(dir, file))),
            (true, false) => Ok(Pem::Inline(inline.to_string())),
            (true, true) => Err(format!("tls_server_config: missing {what}_file")),
            (false, false) => Err(format!("tls_server_config: set {what} or {what}_file, not both")),
        };
        let cert = pem(s.cert_file, s.cert, "cert")?;
        let key = pem(s.key_file, s.key, "key")?;
        let client_auth = match s.client_auth_type {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            other => return Err(format!("tls_server_config: Invalid ClientAuth: {other}")),
        };
        let client_ca_file = (!s.client_ca_file.is_empty()).then(|| join_dir(dir, s.client_ca_file));
        if client_ca_file.is_some() && client_auth == ClientAuth::NoClientCert {
            return Err("tls_server_config: Client CA's have been configured without a Client Auth Policy".into());
        }
        if client_ca_file.is_none()
            && matches!(
                client_auth,
                ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
            )
        {
            return Err(format!(
                "tls_server_config: client_auth_type {} needs client_ca_file (the CA that signs client certificates)",
                s.client_auth_type
            ));
        }
        if !s.client_allowed_sans.is_empty() {
            return Err("tls_server_config: client_allowed_sans is not supported yet".into());
        }
        let min = if s.min_version.is_empty() {
            2
        } else {
            tls_version(s.min_version)?
        };
        let max = if s.max_version.is_empty() {
            3
        } else {
            tls_version(s.max_version)?
        };
        if max < 2 {
            return Err(format!(
                "tls_server_config: max_version {} is below TLS12; pushgate serves TLS 1.2 and 1.3 only",
                s.max_version
            ));
        }
        if min > max {
            return Err("tls_server_config: no supported versions satisfy min_version and max_version".into());
        }
        let mut cipher_suites = Vec::new();
        let mut tls12_named = false;
        for name in s.cipher_suites {
            match CIPHER_SUITES.iter().find(|(n, _)| n == name) {
                Some((_, Some(suite))) if !cipher_suites.contains(suite) => cipher_suites.push(*suite),
                Some(_) => {}
                None => return Err(format!("tls_server_config: unknown cipher: {name}")),
            }
            tls12_named |= !(name.starts_with("TLS_AES") || name.starts_with("TLS_CHACHA20"));
        }
        if tls12_named && cipher_suites.is_empty() && min <= 2 {
            return Err(format!(
                "tls_server_config: none of cipher_suites {:?} is offered by pushgate (TLS 1.2 with ECDHE and \
                 AES-GCM or ChaCha20-Poly1305 only); list one of those, or drop cipher_suites",
                s.cipher_suites
            ));
        }
        let mut curves = Vec::new();
        for name in s.curve_preferences {
            let group = match name.as_str() {
                "X25519" => Some(NamedGroup::X25519),
                "CurveP256" => Some(NamedGroup::secp256r1),
                "CurveP384" => Some(NamedGroup::secp384r1),
                "CurveP521" => None,
                other => return Err(format!("tls_server_config: unknown curve: {other}")),
            };
            if let Some(g) = group.filter(|g| !curves.contains(g)) {
                curves.push(g);
            }
        }
        if !s.curve_preferences.is_empty() && curves.is_empty() {
            return Err(
                "tls_server_config: curve_preferences lists only CurveP521, which pushgate does not offer".into(),
            );
        }
        Ok(Some(TlsSettings {
            cert,
            key,
            client_auth,
            client_ca_file,
            tls12: min <= 2,
            tls13: max >= 3,
            cipher_suites,
            curves,
            prefer_server_order: s.prefer_server_cipher_suites.unwrap_or(true),
            http2,
        }))
    }

    /// The files this configuration reads.
    fn files(&self) -> Vec<&Path> {
        let mut files = Vec::new();
        for pem in [&self.cert, &self.key] {
            if let Pem::File(p) = pem {
                files.push(p.as_path());
            }
        }
        if let Some(ca) = &self.client_ca_file {
            files.push(ca.as_path());
        }
        files
    }

    /// Reads the certificate, key and client CA files and builds the rustls
    /// configuration.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let provider = self.provider();
        let certs = read_certs(&self.cert).map_err(|e| format!("failed to load X509KeyPair: {e}"))?;
        let key = read_key(&self.key).map_err(|e| format!("failed to load X509KeyPair: {e}"))?;
        let mut versions = Vec::new();
        if self.tls13 {
            versions.push(&rustls::version::TLS13);
        }
        if self.tls12 {
            versions.push(&rustls::version::TLS12);
        }
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("tls_server_config: {e}"))?;
        let verifier: Option<Arc<dyn ClientCertVerifier>> = match self.client_auth {
            ClientAuth::NoClientCert => None,
            ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => Some(Arc::new(AnyClientCert {
                mandatory: self.client_auth == ClientAuth::RequireAnyClientCert,
                provider: provider.clone(),
            })),
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
                let ca = self.client_ca_file.as_ref().ok_or("client_ca_file is required")?;
                let ca_error = |e: &dyn std::fmt::Display| format!("client_ca_file {}: {e}", ca.display());
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).map_err(|e| ca_error(&e))? {
                    roots.add(cert.map_err(|e| ca_error(&e))?).map_err(|e| ca_error(&e))?;
                }
                let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let builder = if self.client_auth == ClientAuth::VerifyClientCertIfGiven {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                Some(builder.build().map_err(|e| ca_error(&e))?)
            }
        };
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("failed to load X509KeyPair: {e}"))?;
        config.ignore_client_order = self.prefer_server_order;
        config.alpn_protocols = if self.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(config)
    }

    /// ring's algorithms, narrowed to the configured suites and groups.
    /// (ring builds with a C compiler alone; it has no post-quantum key
    /// exchange, which the reference's Go 1.19 has not either.)
    #[allow(deprecated)]
    fn provider(&self) -> Arc<CryptoProvider> {
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            provider
                .cipher_suites
                .retain(|s| s.version() == &rustls::version::TLS13 || self.cipher_suites.contains(&s.suite()));
        }
        if !self.curves.is_empty() {
            let all = std::mem::take(&mut provider.kx_groups);
            provider.kx_groups = self
                .curves
                .iter()
                .filter_map(|want| all.iter().find(|g| g.name() == *want).copied())
                .collect();
        }
        Arc::new(provider)
    }
}

fn read_certs(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
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

fn read_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, String> {
    match pem {
        Pem::File(path) => PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display())),
        Pem::Inline(text) => PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| e.to_string()),
    }
}

/// `RequestClientCert` and `RequireAnyClientCert`: a client certificate is
/// asked for (and, for the second, required) but its chain is not verified;
/// the client still proves it holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Modification time and size of a file, to see whether it changed.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The rustls configuration for the settings in force, built again only
/// when the settings or one of their files changed.
#[derive(Default)]
pub struct ServerConfigCache {
    current: parking_lot::Mutex<Option<Built>>,
}

struct Built {
    settings: TlsSettings,
    stamps: Vec<Stamp>,
    config: Result<Arc<rustls::ServerConfig>, String>,
}

impl ServerConfigCache {
    pub fn get(&self, settings: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, String> {
        let stamps: Vec<Stamp> = settings.files().into_iter().map(stamp).collect();
        let mut current = self.current.lock();
        if let Some(built) = current.as_ref() {
            if built.settings == *settings && built.stamps == stamps {
                return built.config.clone();
            }
        }
        let reloaded = current.is_some();
        let config = settings.server_config().map(Arc::new);
        match &config {
            Ok(_) if reloaded => tracing::info!("TLS certificate and settings read again"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "TLS handshakes fail until the TLS settings or files are fixed"),
        }
        *current = Some(Built {
            settings: settings.clone(),
            stamps,
            config: config.clone(),
        });
        config
    }
}

/// Where a TLS listener gets the configuration for a new connection.
pub trait TlsConfigSource: Send + Sync + 'static {
    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String>;
}

/// A listener whose connections have finished a TLS handshake.
///
/// Handshakes run in their own tasks, so a client that connects and sends
/// nothing holds up no one (and is dropped after [`HANDSHAKE_TIMEOUT`]).
pub struct TlsListener {
    handshaken: mpsc::Receiver<Connection>,
    local_addr: io::Result<std::net::SocketAddr>,
}

impl TlsListener {
    pub fn new(mut listener: Box<dyn Listener>, source: Arc<dyn TlsConfigSource>) -> TlsListener {
        let local_addr = listener.local_addr();
        let (tx, handshaken) = mpsc::channel(HANDSHAKEN_BACKLOG);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    // The HTTP server stopped: stop listening.
                    _ = tx.closed() => return,
                };
                match accepted {
                    Ok(conn) => {
                        let (tx, source) = (tx.clone(), source.clone());
                        tokio::spawn(async move {
                            let remote = conn.remote();
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(conn, &*source)).await {
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
                        tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        TlsListener { handshaken, local_addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Connection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Connection, std::net::SocketAddr) {
        match self.handshaken.recv().await {
            Some(conn) => {
                let remote = conn.remote();
                (conn, remote)
            }
            // The accepting task holds a sender as long as this listener
            // lives, so this is not reached.
            None => std::future::pending().await,
        }
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

/// Runs the server side of a handshake. `None`: a plain HTTP request was
/// answered with a 400 and the connection closed.
async fn handshake(mut conn: Connection, source: &dyn TlsConfigSource) -> io::Result<Option<Connection>> {
    let remote = conn.remote();
    let mut first = [0u8; 5];
    conn.read_exact(&mut first).await?;
    if looks_like_http(&first) {
        conn.write_all(PLAIN_HTTP_ANSWER).await?;
        let _ = conn.shutdown().await;
        return Ok(None);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn section<'a>(cert_file: &'a str, key_file: &'a str) -> TlsSection<'a> {
        TlsSection {
            cert_file,
            key_file,
            ..TlsSection::default()
        }
    }

    fn check(s: &TlsSection<'_>) -> Result<Option<TlsSettings>, String> {
        TlsSettings::from_section(s, Path::new("/etc/pushgate"), true)
    }

    #[test]
    fn an_empty_section_is_plain_http_and_relative_paths_start_at_the_config_folder() {
        assert_eq!(check(&TlsSection::default()), Ok(None));
        let s = check(&section("tls/a.crt", "/abs/a.key")).unwrap().unwrap();
        assert_eq!(s.cert, Pem::File("/etc/pushgate/tls/a.crt".into()));
        assert_eq!(s.key, Pem::File("/abs/a.key".into()));
        assert!(s.tls12 && s.tls13);
    }

    #[test]
    fn sections_exporter_toolkit_or_rustls_cannot_serve_are_refused_with_the_reason() {
        let suites = ["TLS_RSA_WITH_AES_128_CBC_SHA".to_string()];
        let unknown = ["TLS_MADE_UP".to_string()];
        let p521 = ["CurveP521".to_string()];
        for (s, says) in [
            (section("a.crt", ""), "missing key_file"),
            (section("", "a.key"), "missing cert_file"),
            (
                TlsSection {
                    client_auth_type: "RequireAndVerifyClientCert",
                    ..section("a.crt", "a.key")
                },
                "needs client_ca_file",
            ),
            (
                TlsSection {
                    client_ca_file: "ca.crt",
                    ..section("a.crt", "a.key")
                },
                "without a Client Auth Policy",
            ),
            (
                TlsSection {
                    client_auth_type: "Sometimes",
                    ..section("a.crt", "a.key")
                },
                "Invalid ClientAuth",
            ),
            (
                TlsSection {
                    max_version: "TLS11",
                    ..section("a.crt", "a.key")
                },
                "below TLS12",
            ),
            (
                TlsSection {
                    min_version: "TLS13",
                    max_version: "TLS12",
                    ..section("a.crt", "a.key")
                },
                "no supported versions",
            ),
            (
                TlsSection {
                    min_version: "SSL3",
                    ..section("a.crt", "a.key")
                },
                "unknown TLS version",
            ),
            (
                TlsSection {
                    cipher_suites: &suites,
                    ..section("a.crt", "a.key")
                },
                "none of cipher_suites",
            ),
            (
                TlsSection {
                    cipher_suites: &unknown,
                    ..section("a.crt", "a.key")
                },
                "unknown cipher",
            ),
            (
                TlsSection {
                    curve_preferences: &p521,
                    ..section("a.crt", "a.key")
                },
                "CurveP521",
            ),
        ] {
            let e = check(&s).unwrap_err();
            assert!(e.contains(says), "{s:?}: {e}");
        }
    }

    #[test]
    fn cipher_suites_and_curves_narrow_what_is_offered() {
        let suites = [
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".to_string(),
            "TLS_RSA_WITH_AES_128_CBC_SHA".to_string(),
            "TLS_AES_128_GCM_SHA256".to_string(),
        ];
        let curves = ["CurveP521".to_string(), "CurveP384".to_string()];
        let s = check(&TlsSection {
            cipher_suites: &suites,
            curve_preferences: &curves,
            min_version: "TLS10",
            ..section("a.crt", "a.key")
        })
        .unwrap()
        .unwrap();
        assert!(s.tls12 && s.tls13);
        let provider = s.provider();
        let tls12: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|c| c.version() == &rustls::version::TLS12)
            .map(|c| c.suite())
            .collect();
        assert_eq!(tls12, [rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]);
        assert_eq!(provider.cipher_suites.len(), 1 + 3, "TLS 1.3 suites are kept");
        let groups: Vec<_> = provider.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, [NamedGroup::secp384r1]);
    }

    #[test]
    fn inline_pem_is_served_and_never_shown() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert, key) = (cert.pem(), key.serialize_pem());
        let s = check(&TlsSection {
            cert: &cert,
            key: &key,
            ..TlsSection::default()
        })
        .unwrap()
        .unwrap();
        let config = s.server_config().unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(!format!("{s:?}").contains("PRIVATE KEY"));
        let both = check(&TlsSection {
            cert: &cert,
            ..section("a.crt", "a.key")
        });
        assert!(both.unwrap_err().contains("not both"));
    }

    #[test]
    fn only_plain_http_request_lines_are_answered_in_plain_http() {
        assert!(looks_like_http(b"GET /"));
        assert!(looks_like_http(b"OPTIO"));
        assert!(!looks_like_http(&[0x16, 0x03, 0x01, 0x02, 0x00]));
    }
}
