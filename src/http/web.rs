//! `--web.config.file`: TLS, basic authentication and response headers for
//! the exporter's own HTTP server, in the Prometheus exporter-toolkit format
//! that node_exporter and blackbox_exporter read, so an operator's existing
//! file carries over. Keys this exporter cannot honour are refused at start,
//! never ignored.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tokio::net::TcpListener;

use super::auth::BasicAuth;
use super::{HttpMetrics, ServeLimits};
use tracing::{info, warn};

/// Why the web configuration file cannot be used: which file, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("invalid value '{path}' for '--web.config.file': {problem}")]
pub struct WebConfigError {
    path: PathBuf,
    #[source]
    problem: WebProblem,
}

/// A failure from below (a PEM parser, say), kept whole.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What is wrong with a web configuration file.
#[derive(Debug, thiserror::Error)]
pub enum WebProblem {
    /// The file cannot be read.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The file is not the YAML expected.
    #[error("{0}")]
    Yaml(#[source] serde_norway::Error),
    /// A key or value this exporter refuses, with what would do.
    #[error("{0}")]
    Invalid(String),
    /// A certificate, key or CA file that cannot be used.
    #[error("{what} {path}: {source}")]
    File {
        /// Which key of the file named it (`cert_file`, `key_file`, `client_ca_file`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: Cause,
    },
    /// rustls refused the settings.
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client certificates: {0}")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    http2: Option<bool>,
}

/// The validated web configuration; the default serves plain HTTP, open.
#[derive(Clone, Default)]
pub struct WebConfig {
    tls: Option<Arc<rustls::ServerConfig>>,
    users: Arc<BasicAuth>,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Password hashes stay out of Debug output.
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.hashes.keys().collect::<Vec<_>>())
            .field("headers", &self.headers.len())
            .finish()
    }
}

/// Headers exporter-toolkit lets the file set; others are refused.
const ALLOWED_HEADERS: &[&str] = &[
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

impl WebConfig {
    /// Reads and checks `path`, loading the certificates once so a broken
    /// file fails at start.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let at = |problem: WebProblem| WebConfigError {
            path: path.to_path_buf(),
            problem,
        };
        let bad = |detail: String| at(WebProblem::Invalid(detail));
        let text = std::fs::read_to_string(path).map_err(|e| at(WebProblem::Read(e)))?;
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| at(WebProblem::Yaml(e)))?
        };
        let tls = file
            .tls_server_config
            .map(|t| tls_config(t).map(Arc::new))
            .transpose()
            .map_err(at)?;
        let mut headers = Vec::new();
        if let Some(http) = file.http_server_config {
            if http.http2 == Some(false) {
                // Only HTTP/1.1 is served; asking for that is fine.
            } else if http.http2.is_some() {
                return Err(bad("http_server_config.http2: only HTTP/1.1 is served; remove the key or set it to false".into()));
            }
            for (name, value) in http.headers {
                let Some(allowed) = ALLOWED_HEADERS
                    .iter()
                    .find(|h| h.eq_ignore_ascii_case(&name))
                else {
                    return Err(bad(format!("http_server_config.headers: header {name:?} is not one of {ALLOWED_HEADERS:?}")));
                };
                let value = HeaderValue::from_str(&value).map_err(|_| {
                    bad(format!(
                        "http_server_config.headers: invalid value for {allowed}"
                    ))
                })?;
                headers.push((HeaderName::from_static_lower(allowed), value));
            }
        }
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.contains(':') {
                return Err(bad(format!(
                    "basic_auth_users: user name {user:?} must not contain ':'"
                )));
            }
            if !hash.starts_with("$2") {
                return Err(bad(format!(
                    "basic_auth_users: the password of {user:?} is not a bcrypt hash"
                )));
            }
        }
        Ok(WebConfig {
            tls,
            users: Arc::new(BasicAuth::new(users)),
            headers: Arc::new(headers),
        })
    }

    /// Adds basic authentication and the configured headers to `router`.
    pub fn wrap(&self, router: Router) -> Router {
        if self.users.hashes.is_empty() && self.headers.is_empty() {
            return router;
        }
        router.layer(axum::middleware::from_fn_with_state(self.clone(), guard))
    }

    /// Serves `router` on `listener` (with TLS if configured) until
    /// `shutdown`, within `limits`, counting in `metrics`.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        limits: ServeLimits,
        metrics: HttpMetrics,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        super::serve::serve(listener, router, self.tls, limits, metrics, shutdown).await
    }
}

trait FromStaticLower {
    fn from_static_lower(name: &str) -> HeaderName;
}

impl FromStaticLower for HeaderName {
    fn from_static_lower(name: &str) -> HeaderName {
        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap_or(header::SERVER)
    }
}

/// Basic authentication (when users are configured) and extra headers.
async fn guard(State(web): State<WebConfig>, req: Request, next: Next) -> Response {
    // Read before awaiting: a request (its body) is not Sync.
    let credentials = super::auth::credentials(&req);
    let allowed = web.users.hashes.is_empty() || web.users.authorized(credentials).await;
    if !allowed {
        let mut resp = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"talkover-exporter\""),
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    for (name, value) in web.headers.iter() {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// Builds the rustls server configuration from the file's `tls_server_config`.
fn tls_config(t: TlsFile) -> Result<rustls::ServerConfig, WebProblem> {
    let invalid = |text: &str| WebProblem::Invalid(text.to_string());
    let cert = t
        .cert_file
        .ok_or_else(|| invalid("tls_server_config.cert_file is required"))?;
    let key = t
        .key_file
        .ok_or_else(|| invalid("tls_server_config.key_file is required"))?;
    let version = |v: &Option<String>, default| match v.as_deref() {
        None => Ok(default),
        Some("TLS12") => Ok(&rustls::version::TLS12),
        Some("TLS13") => Ok(&rustls::version::TLS13),
        Some(other) => Err(WebProblem::Invalid(format!(
            "TLS version {other:?} is not supported (TLS12 or TLS13)"
        ))),
    };
    let min = version(&t.min_version, &rustls::version::TLS12)?;
    let max = version(&t.max_version, &rustls::version::TLS13)?;
    let rank = |v: &rustls::SupportedProtocolVersion| {
        u8::from(v.version == rustls::ProtocolVersion::TLSv1_3)
    };
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| rank(v) >= rank(min) && rank(v) <= rank(max))
            .collect();
    if versions.is_empty() {
        return Err(invalid("min_version is above max_version"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(WebProblem::Tls)?;
    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth_type {
        "NoClientCert" => builder.with_no_client_auth(),
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            let ca = t
                .client_ca_file
                .ok_or_else(|| WebProblem::Invalid(format!("client_auth_type {auth_type} needs tls_server_config.client_ca_file")))?;
            let unusable = |e: Cause| WebProblem::File {
                what: "client_ca_file",
                path: ca.clone(),
                source: e,
            };
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&ca).map_err(|e| unusable(e.into()))? {
                let c = c.map_err(|e| unusable(e.into()))?;
                roots.add(c).map_err(|e| unusable(e.into()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(WebProblem::ClientVerifier)?)
        }
        other => {
            return Err(WebProblem::Invalid(format!(
                "client_auth_type {other:?} is not supported (NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            )))
        }
    };
    // Certificates last, so a key this exporter does not support is named
    // before any file problem.
    let resolver = Arc::new(ReloadingCert::new(cert, key)?);
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The server certificate, read again from its files when they change, so
/// certificates rotate without a restart.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    /// A std lock: held for a clone or a swap during a handshake, never across an await.
    current: RwLock<(Stamp, Arc<CertifiedKey>)>,
}

type Stamp = Option<(SystemTime, SystemTime, u64)>;

impl ReloadingCert {
    fn new(cert: PathBuf, key: PathBuf) -> Result<ReloadingCert, WebProblem> {
        let stamp = Self::stamp(&cert, &key);
        let loaded = Self::load(&cert, &key)?;
        Ok(ReloadingCert {
            cert,
            key,
            current: RwLock::new((stamp, Arc::new(loaded))),
        })
    }

    fn stamp(cert: &Path, key: &Path) -> Stamp {
        let c = std::fs::metadata(cert).ok()?;
        let k = std::fs::metadata(key).ok()?;
        Some((
            c.modified().ok()?,
            k.modified().ok()?,
            c.len() ^ k.len().rotate_left(32),
        ))
    }

    fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, WebProblem> {
        let file = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source: Cause| WebProblem::File { what, path, source }
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| file("cert_file", cert)(e.into()))?;
        if chain.is_empty() {
            return Err(file("cert_file", cert)("no certificate in the file".into()));
        }
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| file("key_file", key)(e.into()))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| file("key_file", key)(e.into()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| {
            file("key_file", key)(
                format!("does not match cert_file {}: {e}", cert.display()).into(),
            )
        })?;
        Ok(certified)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamp = Self::stamp(&self.cert, &self.key);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == stamp {
                return Some(current.1.clone());
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        match Self::load(&self.cert, &self.key) {
            Ok(fresh) => {
                info!(cert = %self.cert.display(), "TLS certificate changed; serving the new one");
                *current = (stamp, Arc::new(fresh));
            }
            Err(e) => {
                // Half-written files during a rotation: keep serving the old pair.
                warn!(error = %e, "TLS certificate changed but cannot be loaded; keeping the previous one");
                current.0 = stamp;
            }
        }
        Some(current.1.clone())
    }
}
