//! HTTPS (`tls_server_config` in `--web.config.file`) against the real
//! binary: every route over TLS, plain HTTP on the TLS port, certificate
//! renewal without a restart, client certificates, and settings that stop
//! the start.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::pki::{https, https_client, start_https, Authority, Issued, SERVER_TLS};
use common::{cli, refused_start_with_web_config, temp_dir};

#[test]
fn every_route_is_served_over_https_and_plain_http_gets_the_go_answer() {
    let tmp = temp_dir("https-routes");
    let ca = Authority::new("test CA");
    ca.server().write(tmp.path(), "server");
    let c = https_client(&ca.cert_pem, None);
    let s = start_https(tmp.path(), SERVER_TLS, &c);

    let r = c
        .put(https(&s, "/metrics/job/tls"))
        .body("tls_metric 7\n")
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-pushgate-log-index"));
    let scrape = c.get(https(&s, "/metrics")).send().expect("GET").text().expect("body");
    assert!(scrape.contains("tls_metric{instance=\"\",job=\"tls\"} 7\n"), "{scrape}");
    let api = c.get(https(&s, "/api/v1/metrics")).send().expect("GET");
    assert_eq!(api.status(), 200);
    assert_eq!(c.get(https(&s, "/-/healthy")).send().expect("GET").status(), 200);

    // Plain HTTP on the TLS port: Go's exact answer, then the connection closes.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("read");
    assert_eq!(
        answer,
        "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    );

    // A client that does not trust the server's authority gets no answer.
    let stranger = https_client(&Authority::new("other CA").cert_pem, None);
    assert!(stranger.get(https(&s, "/metrics")).send().is_err());
}

#[test]
fn a_renewed_certificate_is_served_to_new_connections_without_a_restart() {
    let tmp = temp_dir("https-renew");
    let (old_ca, new_ca) = (Authority::new("old CA"), Authority::new("new CA"));
    old_ca.server().write(tmp.path(), "server");
    let trusts_old = https_client(&old_ca.cert_pem, None);
    let s = start_https(tmp.path(), SERVER_TLS, &trusts_old);
    let pid = s.pid();

    new_ca.server().write(tmp.path(), "server");
    // Fresh clients: fresh connections, so a fresh handshake each.
    let trusts_new = https_client(&new_ca.cert_pem, None);
    let r = trusts_new
        .put(https(&s, "/metrics/job/renewed"))
        .body("renewed 1\n")
        .send()
        .expect("PUT with the renewed certificate");
    assert_eq!(r.status(), 200);
    assert!(https_client(&old_ca.cert_pem, None)
        .get(https(&s, "/metrics"))
        .send()
        .is_err());
    assert_eq!(s.pid(), pid);
    assert!(s.log_text().contains("TLS certificate and settings read again"));
}

#[test]
fn client_certificates_are_required_and_verified_when_configured() {
    let tmp = temp_dir("https-mtls");
    let ca = Authority::new("test CA");
    ca.server().write(tmp.path(), "server");
    let clients = Authority::new("clients CA");
    std::fs::write(tmp.path().join("clients.crt"), &clients.cert_pem).expect("write clients CA");
    let web_yml =
        format!("{SERVER_TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n");
    let known = clients.client("batch-job");
    let with_cert = https_client(&ca.cert_pem, Some(&known));
    let s = start_https(tmp.path(), &web_yml, &with_cert);

    let r = with_cert
        .put(https(&s, "/metrics/job/mtls"))
        .body("mtls 1\n")
        .send()
        .expect("PUT with a client certificate");
    assert_eq!(r.status(), 200);
    let without = https_client(&ca.cert_pem, None);
    assert!(without
        .put(https(&s, "/metrics/job/mtls"))
        .body("mtls 2\n")
        .send()
        .is_err());
    let foreign = Authority::new("foreign CA").client("intruder");
    let with_foreign = https_client(&ca.cert_pem, Some(&foreign));
    assert!(with_foreign
        .put(https(&s, "/metrics/job/mtls"))
        .body("mtls 3\n")
        .send()
        .is_err());
    let scrape = with_cert
        .get(https(&s, "/metrics"))
        .send()
        .expect("GET")
        .text()
        .expect("body");
    assert!(scrape.contains("mtls{instance=\"\",job=\"mtls\"} 1\n"), "{scrape}");

    // The admin client, with and without its certificate.
    std::fs::write(tmp.path().join("ca.crt"), &ca.cert_pem).expect("write CA");
    known.write(tmp.path(), "admin");
    let flag = |name: &str, file: &str| format!("--tls.{name}={}", tmp.path().join(file).display());
    let url = format!("https://localhost:{}", s.port);
    let status = cli(
        &url,
        &[
            "cluster",
            "status",
            "--output=json",
            &flag("ca-file", "ca.crt"),
            &flag("cert-file", "admin.crt"),
            &flag("key-file", "admin.key"),
        ],
    );
    assert!(status.contains("\"cluster_id\""), "{status}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["cluster", "status", &flag("ca-file", "ca.crt"), &format!("--url={url}")])
        .output()
        .expect("run pushgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no answer from localhost") && stderr.contains("CertificateRequired"),
        "{stderr}"
    );
}

/// `client_allowed_sans` (newer exporter-toolkit): a verified client
/// certificate must also name one of the listed subject alternative names
/// (a DNS name or an IP address here); an edit of the list holds for the
/// next connection.
#[test]
fn client_allowed_sans_admit_only_certificates_that_name_one_of_them() {
    let tmp = temp_dir("https-sans");
    let ca = Authority::new("test CA");
    ca.server().write(tmp.path(), "server");
    let clients = Authority::new("clients CA");
    std::fs::write(tmp.path().join("clients.crt"), &clients.cert_pem).expect("write clients CA");
    let web_yml = |sans: &str| {
        format!(
            "{SERVER_TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n  \
             client_allowed_sans: [{sans}]\n"
        )
    };
    let (backup, deploy, by_ip) = (
        clients.client("backup-job"),
        clients.client("deploy-job"),
        clients.client("10.1.2.3"),
    );
    let s = start_https(
        tmp.path(),
        &web_yml("backup-job, 10.1.2.3"),
        &https_client(&ca.cert_pem, Some(&backup)),
    );
    let push = |who: Option<&Issued>, value: u32| {
        https_client(&ca.cert_pem, who)
            .put(https(&s, "/metrics/job/sans"))
            .body(format!("sans {value}\n"))
            .send()
            .map(|r| r.status().as_u16())
            .ok()
    };
    assert_eq!(
        push(Some(&backup), 1),
        Some(200),
        "a certificate naming an allowed DNS name"
    );
    assert_eq!(
        push(Some(&by_ip), 2),
        Some(200),
        "a certificate naming an allowed IP address"
    );
    assert_eq!(
        push(Some(&deploy), 3),
        None,
        "a verified certificate naming none of them"
    );
    assert_eq!(push(None, 4), None, "no certificate");
    let foreign = Authority::new("foreign CA").client("backup-job");
    assert_eq!(
        push(Some(&foreign), 5),
        None,
        "an allowed name from an unknown authority"
    );

    std::fs::write(tmp.path().join("web.yml"), web_yml("deploy-job")).expect("edit web.yml");
    assert_eq!(
        push(Some(&deploy), 6),
        Some(200),
        "the edited list, on the next connection"
    );
    assert_eq!(push(Some(&backup), 7), None, "a name no longer listed");
    let stored = https_client(&ca.cert_pem, Some(&deploy))
        .get(https(&s, "/metrics"))
        .send()
        .expect("GET")
        .text()
        .expect("body");
    assert!(stored.contains("sans{instance=\"\",job=\"sans\"} 6\n"), "{stored}");
    assert!(
        s.log_text().contains("none of client_allowed_sans"),
        "a refused handshake is logged with the reason:\n{}",
        s.log_text()
    );
}

#[test]
fn require_any_client_cert_takes_any_certificate_but_not_none() {
    let tmp = temp_dir("https-any-cert");
    let ca = Authority::new("test CA");
    ca.server().write(tmp.path(), "server");
    let web_yml = format!("{SERVER_TLS}  client_auth_type: RequireAnyClientCert\n");
    let anyone = Authority::new("anyone's CA").client("someone");
    let with_any = https_client(&ca.cert_pem, Some(&anyone));
    let s = start_https(tmp.path(), &web_yml, &with_any);
    let r = with_any
        .put(https(&s, "/metrics/job/any"))
        .body("any 1\n")
        .send()
        .expect("PUT with any certificate");
    assert_eq!(r.status(), 200);
    let without = https_client(&ca.cert_pem, None);
    assert!(without.get(https(&s, "/metrics")).send().is_err());
}

#[test]
fn min_version_tls13_refuses_tls12_clients() {
    let tmp = temp_dir("https-tls13");
    let ca = Authority::new("test CA");
    ca.server().write(tmp.path(), "server");
    let c = https_client(&ca.cert_pem, None);
    let s = start_https(tmp.path(), &format!("{SERVER_TLS}  min_version: TLS13\n"), &c);
    let tls12_only = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).expect("root"))
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .expect("client");
    assert!(tls12_only.get(https(&s, "/metrics")).send().is_err());
    assert_eq!(c.get(https(&s, "/metrics")).send().expect("GET").status(), 200);
}

#[test]
fn tls_settings_that_cannot_be_served_stop_the_start() {
    let tmp = temp_dir("https-bad");
    let ca = Authority::new("test CA");
    ca.server().write(tmp.path(), "server");
    std::fs::write(tmp.path().join("garbage.crt"), "not a certificate\n").expect("write");
    for (web_yml, says) in [
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n".to_string(),
            "failed to load X509KeyPair",
        ),
        (
            "tls_server_config:\n  cert_file: garbage.crt\n  key_file: server.key\n".to_string(),
            "failed to load X509KeyPair",
        ),
        (
            // A key that does not belong to the certificate.
            format!("tls_server_config:\n  cert_file: {}\n  key_file: server.key\n", {
                ca.server().write(tmp.path(), "other");
                "other.crt"
            }),
            "failed to load X509KeyPair",
        ),
        (
            format!("{SERVER_TLS}  client_ca_file: server.crt\n"),
            "without a Client Auth Policy",
        ),
        (format!("{SERVER_TLS}  max_version: TLS11\n"), "below TLS12"),
    ] {
        let stderr = refused_start_with_web_config(tmp.path(), &web_yml);
        assert!(stderr.contains(says), "{web_yml:?}: {stderr}");
    }
}
