//! `--web.config.file`: the Prometheus exporter-toolkit web configuration
//! the reference Pushgateway reads, for HTTP basic authentication and extra
//! response headers.
//!
//! ```yaml
//! basic_auth_users:
//!   admin: $2y$10$...          # bcrypt hash of the password
//! http_server_config:
//!   headers:
//!     X-Frame-Options: deny
//! ```
//!
//! As in the reference, authentication covers every route (pushes, scrapes,
//! the API, health and readiness) and answers `401 Unauthorized` with
//! `WWW-Authenticate: Basic`; an unknown user costs the same bcrypt check as
//! a wrong password (no user enumeration by timing); checks are cached, so a
//! scraper that sends the same credentials every time pays for bcrypt once.
//! The file is read again when it changes (users can be added or removed
//! without a restart); a file that no longer parses makes every request
//! `500` until it is fixed, so a broken edit never opens the gateway.
//!
//! `tls_server_config` makes every HTTP listener serve HTTPS instead
//! (`super::tls`): whether it does is decided at start; the certificate
//! and settings are read again when they change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use serde::Deserialize;

use super::tls::{ServerConfigCache, TlsSection, TlsSettings};
use crate::transport::tls::{stamp, Stamp, TlsConfigSource};

/// Why a web configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read --web.config.file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--web.config.file {path} is not a valid web configuration: {message}")]
    Invalid { path: String, message: String },
}

/// The file's contents, as exporter-toolkit defines them (unknown keys are
/// errors there too).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    http_server_config: Option<HttpServerConfig>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

/// The TLS section, as exporter-toolkit names its keys (checked in
/// `super::tls`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
    #[serde(default)]
    cert: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    client_auth_type: String,
    #[serde(default)]
    client_ca_file: String,
    #[serde(default)]
    client_allowed_sans: Vec<String>,
    #[serde(default)]
    min_version: String,
    #[serde(default)]
    max_version: String,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    curve_preferences: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    /// Offer HTTP/2 to TLS clients by ALPN (default true). Cleartext
    /// HTTP/2 (prior knowledge) is served either way.
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The response headers exporter-toolkit lets a web configuration set.
const SETTABLE_HEADERS: [&str; 5] = [
    "Content-Security-Policy",
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
];

/// A web configuration, checked.
#[derive(Debug, Default)]
pub struct WebConfig {
    /// User name → bcrypt hash; empty: no authentication.
    users: BTreeMap<String, String>,
    /// Added to every response.
    headers: HeaderMap,
    /// `tls_server_config`, if it asks for TLS.
    tls: Option<TlsSettings>,
}

impl WebConfig {
    /// Parses and checks `text`, the contents of `path`.
    pub fn parse(path: &str, text: &str) -> Result<WebConfig, WebConfigError> {
        let invalid = |message: String| WebConfigError::Invalid {
            path: path.to_string(),
            message,
        };
        // An empty file is an empty configuration, as in the reference.
        let file: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?
        };
        let http2 = file.http_server_config.as_ref().and_then(|h| h.http2).unwrap_or(true);
        let tls = match &file.tls_server_config {
            Some(t) => {
                let section = TlsSection {
                    cert_file: &t.cert_file,
                    key_file: &t.key_file,
                    cert: &t.cert,
                    key: &t.key,
                    client_auth_type: &t.client_auth_type,
                    client_ca_file: &t.client_ca_file,
                    client_allowed_sans: &t.client_allowed_sans,
                    min_version: &t.min_version,
                    max_version: &t.max_version,
                    cipher_suites: &t.cipher_suites,
                    curve_preferences: &t.curve_preferences,
                    prefer_server_cipher_suites: t.prefer_server_cipher_suites,
                };
                let dir = Path::new(path).parent().unwrap_or(Path::new("."));
                TlsSettings::from_section(&section, dir, http2).map_err(invalid)?
            }
            None => None,
        };
        let mut users = BTreeMap::new();
        for (user, hash) in file.basic_auth_users.unwrap_or_default() {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(invalid(format!(
                    "basic_auth_users: the password of user {user:?} is not a bcrypt hash \
                     (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                )));
            }
            users.insert(user, hash);
        }
        let mut headers = HeaderMap::new();
        for (name, value) in file.http_server_config.map(|h| h.headers).unwrap_or_default() {
            let Some(allowed) = SETTABLE_HEADERS.iter().find(|h| h.eq_ignore_ascii_case(&name)) else {
                return Err(invalid(format!(
                    "http_server_config.headers: {name:?} cannot be set (only {})",
                    SETTABLE_HEADERS.join(", ")
                )));
            };
            let value = HeaderValue::from_str(&value)
                .map_err(|_| invalid(format!("http_server_config.headers: the value of {name} is not valid")))?;
            headers.insert(HeaderName::from_static(static_lower(allowed)), value);
        }
        Ok(WebConfig { users, headers, tls })
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        WebConfig::parse(&shown, &text)
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Headers to add to every response.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The TLS settings, if the listeners serve HTTPS.
    pub fn tls(&self) -> Option<&TlsSettings> {
        self.tls.as_ref()
    }
}

/// The lower-case form of one of [`SETTABLE_HEADERS`], as a static string.
fn static_lower(name: &str) -> &'static str {
    match name {
        "Content-Security-Policy" => "content-security-policy",
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        _ => "x-xss-protection",
    }
}

/// A fixed bcrypt hash checked for unknown users, so that a wrong user name
/// takes as long as a wrong password (the hash exporter-toolkit uses).
const UNKNOWN_USER_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Cached results of bcrypt checks; the cache starts over when full.
const MAX_CACHED_CHECKS: usize = 1024;

/// What a request may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allowed,
    /// `401`: no credentials, or wrong ones.
    Unauthorized,
    /// `500`: the configuration file cannot be read or is invalid now.
    Broken,
}

/// A user, the hash they had then, and a password tried for them.
type CheckedCredentials = (String, String, Vec<u8>);

/// The web configuration of a running server: re-read when the file
/// changes, and checks basic-auth credentials against it.
pub struct WebAuth {
    path: PathBuf,
    current: parking_lot::Mutex<Loaded>,
    /// Whether a password matched a user's hash, by (user, hash, password).
    checked: parking_lot::Mutex<HashMap<CheckedCredentials, bool>>,
    /// One bcrypt check at a time, as in exporter-toolkit: a flood of wrong
    /// passwords takes one CPU, not all of them.
    bcrypt: Arc<tokio::sync::Mutex<()>>,
    /// The TLS configuration built from the settings in force.
    tls: ServerConfigCache,
}

struct Loaded {
    /// The file's modification time and length when it was read.
    stamp: Stamp,
    config: Result<Arc<WebConfig>, String>,
}

impl WebAuth {
    /// Reads the file (and the TLS files it names) once; an invalid file
    /// stops the server from starting.
    pub fn open(path: &Path) -> Result<WebAuth, WebConfigError> {
        let stamp = stamp(path);
        let config = WebConfig::load(path)?;
        let tls = ServerConfigCache::default();
        if let Some(settings) = config.tls() {
            settings
                .cached_server_config(&tls)
                .map_err(|message| WebConfigError::Invalid {
                    path: path.display().to_string(),
                    message,
                })?;
        }
        Ok(WebAuth {
            path: path.to_path_buf(),
            current: parking_lot::Mutex::new(Loaded {
                stamp,
                config: Ok(Arc::new(config)),
            }),
            checked: parking_lot::Mutex::new(HashMap::new()),
            bcrypt: Arc::new(tokio::sync::Mutex::new(())),
            tls,
        })
    }

    /// Whether the listeners serve HTTPS (decided at start, as in the
    /// reference).
    pub fn serves_tls(&self) -> bool {
        matches!(self.config(), Ok(c) if c.tls().is_some())
    }

    /// The configuration in force: the file as it is now, read again if it
    /// changed since it was last read.
    pub fn config(&self) -> Result<Arc<WebConfig>, String> {
        let now = stamp(&self.path);
        let mut current = self.current.lock();
        // A missing file is read (and logged) once, not on every request.
        if now != current.stamp || (now.is_none() && current.config.is_ok()) {
            current.stamp = now;
            current.config = match WebConfig::load(&self.path) {
                Ok(c) => {
                    tracing::info!(file = %self.path.display(), "web configuration read again");
                    Ok(Arc::new(c))
                }
                Err(e) => {
                    tracing::error!(error = %e, "every request answers 500 until the web configuration is fixed");
                    Err(e.to_string())
                }
            };
        }
        current.config.clone()
    }

    /// Whether a request with these headers may be served.
    pub async fn check(&self, headers: &HeaderMap) -> (Verdict, HeaderMap) {
        let config = match self.config() {
            Ok(c) => c,
            Err(_) => return (Verdict::Broken, HeaderMap::new()),
        };
        let extra = config.headers().clone();
        if !config.requires_auth() {
            return (Verdict::Allowed, extra);
        }
        let Some((user, password)) = basic_credentials(headers) else {
            return (Verdict::Unauthorized, extra);
        };
        let (known, hash) = match config.users.get(&user) {
            Some(h) => (true, h.clone()),
            None => (false, UNKNOWN_USER_HASH.to_string()),
        };
        let key = (user, hash, password);
        let cached = self.checked.lock().get(&key).copied();
        let matches = match cached {
            Some(m) => m,
            None => {
                let _one_at_a_time = self.bcrypt.lock().await;
                let (hash, password) = (key.1.clone(), key.2.clone());
                let m = crate::blocking::run(move || bcrypt::verify(password, &hash).unwrap_or(false))
                    .await
                    .unwrap_or(false);
                let mut checked = self.checked.lock();
                if checked.len() >= MAX_CACHED_CHECKS {
                    checked.clear();
                }
                checked.insert(key, m);
                m
            }
        };
        if known && matches {
            (Verdict::Allowed, extra)
        } else {
            (Verdict::Unauthorized, extra)
        }
    }
}

impl TlsConfigSource for WebAuth {
    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let config = self.config()?;
        let settings = config
            .tls()
            .ok_or("the web configuration has no tls_server_config any more; restart pushgate to serve plain HTTP")?;
        settings.cached_server_config(&self.tls)
    }
}

/// The user and password of an `Authorization: Basic` header, as Go's
/// `Request.BasicAuth` reads them: `Basic` in any case and one space, then
/// standard base64 with its padding (stray bits in the last symbol ignored,
/// as Go's `StdEncoding` ignores them), split at the first `:`. The password
/// is bytes, as in Go: a bcrypt hash may be of any bytes. A user name that
/// is not UTF-8 cannot be one of the file's, so it is no user.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    const GO_STD_ENCODING: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    let value = headers.get(axum::http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, encoded) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = GO_STD_ENCODING.decode(encoded).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_string();
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bcrypt of "secret", cost 4 (fast for tests).
    fn hash() -> String {
        bcrypt::hash("secret", 4).unwrap()
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
        );
        h
    }

    fn auth_with(text: &str) -> (tempfile::TempDir, WebAuth) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, text).unwrap();
        let auth = WebAuth::open(&path).unwrap();
        (dir, auth)
    }

    #[tokio::test]
    async fn the_right_password_passes_and_anything_else_is_unauthorized() {
        let (_dir, auth) = auth_with(&format!("basic_auth_users:\n  admin: {}\n", hash()));
        assert_eq!(auth.check(&basic("admin", "secret")).await.0, Verdict::Allowed);
        // Cached: the same answer again.
        assert_eq!(auth.check(&basic("admin", "secret")).await.0, Verdict::Allowed);
        assert_eq!(auth.check(&basic("admin", "wrong")).await.0, Verdict::Unauthorized);
        assert_eq!(auth.check(&basic("nobody", "secret")).await.0, Verdict::Unauthorized);
        assert_eq!(auth.check(&HeaderMap::new()).await.0, Verdict::Unauthorized);
    }

    #[tokio::test]
    async fn without_users_every_request_passes_with_the_configured_headers() {
        let (_dir, auth) = auth_with("http_server_config:\n  headers:\n    X-Frame-Options: deny\n");
        let (verdict, headers) = auth.check(&HeaderMap::new()).await;
        assert_eq!(verdict, Verdict::Allowed);
        assert_eq!(headers.get("x-frame-options").unwrap(), "deny");
    }

    #[tokio::test]
    async fn an_edited_file_is_read_again_and_a_broken_one_refuses_everything() {
        let (dir, auth) = auth_with(&format!("basic_auth_users:\n  admin: {}\n", hash()));
        let path = dir.path().join("web.yml");
        std::fs::write(&path, format!("basic_auth_users:\n  operator: {}\n", hash())).unwrap();
        assert_eq!(auth.check(&basic("admin", "secret")).await.0, Verdict::Unauthorized);
        assert_eq!(auth.check(&basic("operator", "secret")).await.0, Verdict::Allowed);
        std::fs::write(&path, "basic_auth_users: [not, a, map]\n").unwrap();
        assert_eq!(auth.check(&basic("operator", "secret")).await.0, Verdict::Broken);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(auth.check(&basic("operator", "secret")).await.0, Verdict::Broken);
    }

    #[test]
    fn files_the_reference_would_refuse_or_pushgate_cannot_serve_are_refused() {
        for (text, says) in [
            ("basic_auth_users:\n  admin: plain\n", "not a bcrypt hash"),
            ("unknown_key: 1\n", "unknown field"),
            ("tls_server_config:\n  cert_file: a.crt\n", "missing key_file"),
            ("http_server_config:\n  headers:\n    Server: x\n", "cannot be set"),
        ] {
            let e = WebConfig::parse("web.yml", text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        assert!(!WebConfig::parse("web.yml", "").unwrap().requires_auth());
    }

    #[test]
    fn basic_credentials_are_read_like_go_does() {
        assert_eq!(
            basic_credentials(&basic("a", "b:c")),
            Some(("a".to_string(), b"b:c".to_vec()))
        );
        let header = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(axum::http::header::AUTHORIZATION, HeaderValue::from_static(value));
            basic_credentials(&h)
        };
        let pad_abcd = Some(("pad".to_string(), b"abcd".to_vec()));
        // Each answered so by the reference 1.5.1 (200 or 401).
        assert_eq!(header("bAsIc cGFkOmFiY2Q="), pad_abcd);
        assert_eq!(header("Basic cGFkOmFiY2R="), pad_abcd, "stray trailing bits");
        assert_eq!(header("Basic cGFkOmFiY2Q"), None, "padding left out");
        assert_eq!(header("Basic cGFkOmFiY2Q=="), None);
        assert_eq!(header("Basic  cGFkOmFiY2Q="), None);
        assert_eq!(header("Basic\tcGFkOmFiY2Q="), None);
        assert_eq!(header("Basic"), None);
        assert_eq!(header("Bearer x"), None);
        assert_eq!(
            header("Basic YmluOnNl/2NyZXQ="),
            Some(("bin".to_string(), b"se\xffcret".to_vec())),
            "a password that is not UTF-8"
        );
    }
}
