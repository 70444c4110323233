//! HTTPS on the HTTP listeners: `tls_server_config` of `--web.config.file`,
//! as the reference Pushgateway (exporter-toolkit) reads it.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # relative paths: from the web config's folder
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: clients-ca.crt
//!   client_allowed_sans: [backup-job.example.com]  # optional: the client
//!                                # certificate must name one of these
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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, NamedGroup, SignatureScheme};

pub use crate::transport::tls::Pem;
use crate::transport::tls::{read_certs, read_key, read_roots, AllowedSans, Reloading};

/// The rustls configuration of the `tls_server_config` in force.
pub type ServerConfigCache = Reloading<TlsSettings, Arc<rustls::ServerConfig>>;

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

/// `tls_server_config`, checked: every name is known and every combination
/// can be served. No file is read here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    cert: Pem,
    key: Pem,
    client_auth: ClientAuth,
    /// `client_allowed_sans`: a client certificate must carry one of these
    /// subject alternative names (empty: no such check).
    client_allowed_sans: Vec<String>,
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
        // exporter-toolkit checks the names in Go's VerifyPeerCertificate,
        // which a server that asks for no certificate never calls: the list
        // would silently allow everyone, so it is refused here.
        if !s.client_allowed_sans.is_empty() && client_auth == ClientAuth::NoClientCert {
            return Err(
                "tls_server_config: client_allowed_sans needs a client_auth_type that asks for client certificates \
                 (RequireAndVerifyClientCert, with client_ca_file)"
                    .into(),
            );
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
            client_allowed_sans: s.client_allowed_sans.to_vec(),
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
    /// The rustls configuration from `cache`, built again when these
    /// settings or one of their files changed.
    pub fn cached_server_config(&self, cache: &ServerConfigCache) -> Result<Arc<rustls::ServerConfig>, String> {
        cache.get(self, &self.files(), |s| s.server_config().map(Arc::new))
    }

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
                let roots = read_roots(ca).map_err(|e| format!("client_ca_file {e}"))?;
                let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let builder = if self.client_auth == ClientAuth::VerifyClientCertIfGiven {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                Some(
                    builder
                        .build()
                        .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?,
                )
            }
        };
        let verifier = match verifier {
            Some(inner) if !self.client_allowed_sans.is_empty() => Some(Arc::new(AllowedSans {
                inner,
                allowed: self.client_allowed_sans.clone(),
                setting: "client_allowed_sans",
            }) as Arc<dyn ClientCertVerifier>),
            other => other,
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
        let sans = ["job.example.com".to_string()];
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
            (
                TlsSection {
                    client_allowed_sans: &sans,
                    ..section("a.crt", "a.key")
                },
                "client_allowed_sans needs a client_auth_type",
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
}
