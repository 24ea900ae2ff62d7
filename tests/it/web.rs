//! `--web.config.file`: TLS (with certificate rotation and client
//! certificates), basic auth and headers, against the real server; and a
//! real Prometheus scraping over https with basic auth.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use talkover_sim::Order;

use crate::support::*;

const A: &str = "campaigns/cmp-1/webhooks/wh-1";

/// A CA and what it signs, written as PEM files.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca"),
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes a leaf certificate for `names` and its key; returns their paths.
    pub(crate) fn issue(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let (c, k) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }
}

fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("web.yml");
    std::fs::write(&path, yaml).expect("write web config");
    path
}

fn client(ca_pem: &str, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca"))
        .timeout(Duration::from_secs(5));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).expect("cert");
        pem.extend(std::fs::read(key).expect("key"));
        b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
    }
    b.build().expect("client")
}

async fn start(web_config: PathBuf) -> (Sim, Exporter) {
    let s = start_sim(61, Order::NewestFirst, &[A], quiet_profile()).await;
    let e = start_exporter(
        &s.url,
        &[A],
        ExporterOptions {
            flags: vec![format!("--web.config.file={}", web_config.display())],
            ..ExporterOptions::default()
        },
    )
    .await;
    (s, e)
}

/// TLS scrapes work; basic auth right gives 200, wrong or missing 401 with
/// WWW-Authenticate; configured headers are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let web = write_config(
        dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            cert.display(),
            key.display()
        ),
    );
    let (_s, e) = start(web).await;
    let url = format!("https://127.0.0.1:{}/metrics", e.addr.port());
    let c = client(&ca.pem(), None);
    let ok = c
        .get(&url)
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .await
        .expect("tls request");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-frame-options"], "deny");
    assert!(ok
        .text()
        .await
        .expect("body")
        .contains("talkover_exporter_build_info"));
    for (user, pw) in [("prometheus", Some("wrong")), ("nobody", Some("s3cret"))] {
        let r = c
            .get(&url)
            .basic_auth(user, pw)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401, "{user}");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .expect("header")
            .starts_with("Basic"));
    }
    let r = c.get(&url).send().await.expect("request");
    assert_eq!(r.status(), 401);
    // Plain HTTP to the TLS port gets no metrics.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{}/metrics", e.addr.port()))
            .await
            .map_or(true, |r| r.status() != 200)
    );
    e.stop().await;
}

/// With RequireAndVerifyClientCert, a client without a certificate from the
/// client CA is refused at the handshake; one with it gets the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let (cert, key) = ca.issue(dir.path(), "server", &["127.0.0.1"]);
    let (ccert, ckey) = clients.issue(dir.path(), "client", &["prometheus"]);
    let client_ca = dir.path().join("clients.pem");
    std::fs::write(&client_ca, clients.pem()).expect("client ca");
    let web = write_config(
        dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS12\n",
            cert.display(),
            key.display(),
            client_ca.display()
        ),
    );
    let (_s, e) = start(web).await;
    let url = format!("https://127.0.0.1:{}/metrics", e.addr.port());
    assert!(
        client(&ca.pem(), None).get(&url).send().await.is_err(),
        "no client certificate must be refused"
    );
    let (other_cert, other_key) = ca.issue(dir.path(), "stranger", &["stranger"]);
    assert!(
        client(&ca.pem(), Some((&other_cert, &other_key)))
            .get(&url)
            .send()
            .await
            .is_err(),
        "a certificate from another CA must be refused"
    );
    let r = client(&ca.pem(), Some((&ccert, &ckey)))
        .get(&url)
        .send()
        .await
        .expect("mutual TLS");
    assert_eq!(r.status(), 200);
    e.stop().await;
}

/// Replacing the certificate files takes effect on the next handshake, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let (cert, key) = old_ca.issue(dir.path(), "server", &["127.0.0.1"]);
    let web = write_config(
        dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert.display(),
            key.display()
        ),
    );
    let (_s, e) = start(web).await;
    let url = format!("https://127.0.0.1:{}/-/healthy", e.addr.port());
    assert_eq!(
        client(&old_ca.pem(), None)
            .get(&url)
            .send()
            .await
            .expect("old")
            .status(),
        200
    );
    assert!(client(&new_ca.pem(), None).get(&url).send().await.is_err());
    // Rotate: write the new pair under temporary names, then move them in place.
    let (ncert, nkey) = new_ca.issue(dir.path(), "next", &["127.0.0.1"]);
    std::fs::rename(&nkey, &key).expect("rotate key");
    std::fs::rename(&ncert, &cert).expect("rotate cert");
    let r = client(&new_ca.pem(), None)
        .get(&url)
        .send()
        .await
        .expect("new certificate served");
    assert_eq!(r.status(), 200);
    e.stop().await;
}

/// Keys the exporter does not support are refused at start, naming them:
/// the binary exits 2 before it serves anything, as for a bad flag.
#[test]
fn unsupported_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web.yml");
    for (yaml, needle) in [
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "cipher_suites"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequestClientCert\n", "RequestClientCert"),
        ("http_server_config:\n  headers:\n    Server: x\n", "Server"),
        ("basic_auth_users:\n  alice: plaintext\n", "bcrypt"),
        ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n", "/nonexistent.crt"),
        ("rate_limit:\n  interval: 1s\n", "rate_limit"),
    ] {
        std::fs::write(&path, yaml).expect("write");
        let flag = format!("--web.config.file={}", path.display());
        let (code, err) = crate::binary::run(
            &["--demo", "--web.listen-address", "127.0.0.1:0", &flag],
            &[],
        );
        assert_eq!(code, 2, "{yaml}: {err}");
        assert!(err.contains("--web.config.file") && err.contains(needle), "{err}");
        assert!(!err.contains("listening") && !err.contains("panicked"), "{err}");
    }
}

/// A real Prometheus scrapes the exporter over https with basic auth and
/// shows the target up.
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs a real Prometheus: cargo test --features e2e"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_https_with_basic_auth() {
    let prometheus = crate::endpoints::which("prometheus")
        .expect("prometheus is required: install Debian's `prometheus` package (the README's test command does)");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(dir.path(), "server", &["localhost", "127.0.0.1"]);
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("ca");
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let web = write_config(
        dir.path(),
        &format!("tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: {hash}\n", cert.display(), key.display()),
    );
    let (_s, e) = start(web).await;
    let prom_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: talkover\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password: s3cret\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            dir.path().join("ca.pem").display(),
            e.addr.port()
        ),
    )
    .expect("config");
    let mut child = tokio::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let query =
        format!("http://127.0.0.1:{prom_port}/api/v1/query?query=up%7Bjob%3D%22talkover%22%7D");
    wait_for(
        "Prometheus sees the https target up",
        Duration::from_secs(60),
        || async {
            let Ok(r) = reqwest::get(&query).await else {
                return false;
            };
            let Ok(text) = r.text().await else {
                return false;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                return false;
            };
            v["data"]["result"][0]["value"][1] == "1"
        },
    )
    .await;
    let _ = child.kill().await;
    e.stop().await;
}
