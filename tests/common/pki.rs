//! Certificates for TLS tests, made on the fly (rcgen): a certificate
//! authority, server certificates for `localhost` and 127.0.0.1, client
//! certificates, replicas' certificates, and clients that trust exactly one
//! authority.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{free_port, Server};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// A certificate authority.
pub struct Authority {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `<name>.crt` and `<name>.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) {
        std::fs::write(dir.join(format!("{name}.crt")), &self.cert_pem).expect("write certificate");
        std::fs::write(dir.join(format!("{name}.key")), &self.key_pem).expect("write key");
    }
}

impl Authority {
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, names: &[&str], usages: &[ExtendedKeyUsagePurpose]) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("client"));
        params.extended_key_usages = usages.to_vec();
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Issued {
        self.issue(&["localhost", "127.0.0.1"], &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(&[name], &[ExtendedKeyUsagePurpose::ClientAuth])
    }

    /// A replica's certificate for the address `host`: it serves the cluster
    /// port and dials peers with it (`--cluster.tls.cert-file`).
    pub fn replica(&self, host: &str) -> Issued {
        self.replica_also_named(host, &[])
    }

    /// A replica's certificate for `host` that carries `names` as well
    /// (`--cluster.tls.client-allowed-sans`).
    pub fn replica_also_named(&self, host: &str, names: &[&str]) -> Issued {
        let all: Vec<&str> = std::iter::once(host).chain(names.iter().copied()).collect();
        self.issue(
            &all,
            &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        )
    }
}

/// An HTTPS client that trusts only `root` (PEM) and presents `identity`.
pub fn https_client(root: &str, identity: Option<&Issued>) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).expect("root certificate"))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("client identity"));
    }
    builder.build().expect("https client")
}

/// A web configuration serving `server.crt` and `server.key` (in its folder).
pub const SERVER_TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

/// Starts pushgate with `web_yml` (written into `dir`) and waits until
/// `/-/ready` answers 200 over HTTPS to `client`.
pub fn start_https(dir: &Path, web_yml: &str, client: &reqwest::blocking::Client) -> Server {
    let config = dir.join("web.yml");
    std::fs::write(&config, web_yml).expect("write web.yml");
    let flag = format!("--web.config.file={}", config.display());
    let cluster = format!("--cluster.listen-address=127.0.0.1:{}", free_port());
    let mut s = Server::unstarted("127.0.0.1", free_port(), &dir.join("data"), &[&flag, &cluster]);
    s.spawn_unready();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(s.is_running(), "pushgate exited:\n{}", s.log_text());
        if let Ok(r) = client.get(https(&s, "/-/ready")).send() {
            if r.status() == 200 {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "not ready over HTTPS:\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn https(s: &Server, path: &str) -> String {
    format!("https://localhost:{}{path}", s.port)
}
